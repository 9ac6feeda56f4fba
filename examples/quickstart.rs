//! The embedded default, no servers: three kinds of job (one fast, one that fails
//! transiently, one that fails permanently on bad input), 1,000 jobs, a worker pool, and a
//! table of where every job ended.
//!
//! Run with `cargo run --example quickstart`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jobforge::prelude::*;
use jobforge::state::StateTally;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Email {
    to: String,
}

#[derive(Deserialize)]
struct Charge {
    cents: i64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "jobforge=error".into()),
        )
        .init();

    let quick_retries = RetryPolicy::new(5)
        .with_base(Duration::from_millis(5))
        .with_cap(Duration::from_millis(50));

    let orchestrator = Orchestrator::builder()
        // Fast: always succeeds.
        .handler("email.send", |ctx: JobContext| async move {
            let email: Email = ctx.decode()?;
            Ok(json!({ "sent_to": email.to }))
        })
        // Transient failures: the first attempt of every third job fails; a retry rescues it.
        .kind(
            "report.render",
            KindConfig::new(|ctx: JobContext| async move {
                let n: u64 = ctx.decode()?;
                // Jobs get n = 1, 4, 7, ...: every third of them fails its first attempt.
                if (n / 3) % 3 == 0 && ctx.attempt() == 1 {
                    return Err(JobError::retryable("renderer busy").with_class("busy"));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(json!({ "pages": n % 7 + 1 }))
            })
            .retry(quick_retries),
        )
        // Permanent failures: negative amounts are bad input and are never retried.
        .kind(
            "payment.charge",
            KindConfig::new(|ctx: JobContext| async move {
                let charge: Charge = ctx.decode()?;
                if charge.cents < 0 {
                    return Err(
                        JobError::permanent(format!("invalid amount {}", charge.cents))
                            .with_class("invalid_amount"),
                    );
                }
                Ok(json!({ "charged": charge.cents }))
            })
            .retry(quick_retries),
        )
        .build()?;

    let workers = orchestrator.start_workers(WorkerConfig::default().concurrency(64))?;

    let started = Instant::now();
    let jobs: Vec<NewJob> = (0..1_000u64)
        .map(|i| match i % 3 {
            0 => {
                NewJob::new("email.send").payload(&json!({ "to": format!("user{i}@example.com") }))
            }
            1 => NewJob::new("report.render").payload(&i),
            _ => {
                let cents = if i % 10 == 2 { -100 } else { 1_000 + i as i64 };
                NewJob::new("payment.charge").payload(&json!({ "cents": cents }))
            }
        })
        .collect();
    let submitted = orchestrator.submit_batch(jobs).await?;
    orchestrator.wait_idle(Duration::from_secs(60)).await?;
    let elapsed = started.elapsed();

    let stats = orchestrator.stats().await?;
    println!(
        "jobforge quickstart: {} jobs submitted, all finished in {:.1?}\n",
        submitted.len(),
        elapsed
    );
    let mut rows: BTreeMap<&str, StateTally> = BTreeMap::new();
    for (kind, tally) in &stats.jobs.per_kind {
        rows.insert(kind.as_str(), *tally);
    }
    println!(
        "{:<16} {:>9} {:>6} {:>10} {:>7} {:>8}",
        "kind", "succeeded", "dead", "cancelled", "queued", "running"
    );
    println!("{}", "-".repeat(61));
    for (kind, t) in rows
        .iter()
        .chain([("total", &stats.jobs.total)].iter().map(|(k, t)| (k, *t)))
    {
        println!(
            "{:<16} {:>9} {:>6} {:>10} {:>7} {:>8}",
            kind, t.succeeded, t.dead, t.cancelled, t.queued, t.running
        );
    }

    let retried = orchestrator
        .memory()
        .reflect("report.render", jobforge::memory::Window::All)
        .await?;
    println!(
        "\nreport.render: {} executions, {} failed and were retried; retries rescued {:.0}% of the jobs that failed",
        retried.count,
        retried.retried,
        retried.retry_rescue_rate.unwrap_or(0.0) * 100.0
    );
    println!(
        "dead letters kept by the queue: {} (payment.charge with invalid amounts)",
        stats.queue.dead
    );

    let report = workers.shutdown(Duration::from_secs(5)).await;
    println!("workers stopped (drained: {})", report.drained);

    let total = stats.jobs.total;
    if total.active() != 0 || total.succeeded + total.dead != 1_000 {
        return Err("not every job reached a terminal state".into());
    }
    Ok(())
}
