//! jobforge on one PostgreSQL: the job rows are the queue and the state, and the memory
//! lives beside them.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --features postgres --example postgres
//! ```
//!
//! It works in a schema of its own (`jobforge_example`) and drops it at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use jobforge::memory::Window;
use jobforge::postgres::{PostgresBackend, PostgresConfig};
use jobforge::prelude::*;
use jobforge::{JobOrchestrator, Memory};
use serde_json::json;

#[tokio::main]
async fn main() -> jobforge::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    // Connecting runs the migrations (once, under an advisory lock) and starts LISTEN.
    let pg = PostgresBackend::connect_with(
        &url,
        PostgresConfig::default().with_schema("jobforge_example"),
    )
    .await?;

    let flaky_calls = Arc::new(AtomicU32::new(0));
    let calls = Arc::clone(&flaky_calls);
    let orchestrator = Orchestrator::builder()
        // One store as queue and state: a worker claims a batch in one statement and
        // finishes a batch in one statement.
        .store(pg.store())
        .memory(pg.memory())
        .handler("email.send", |ctx: JobContext| async move {
            let to: String = ctx.decode()?;
            Ok(json!({ "sent_to": to }))
        })
        .kind(
            "report.build",
            KindConfig::new(move |ctx: JobContext| {
                let calls = Arc::clone(&calls);
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    if ctx.attempt() < 2 {
                        Err(JobError::retryable("warehouse busy").with_class("busy"))
                    } else {
                        Ok(json!("report ready"))
                    }
                }
            })
            .retry(RetryPolicy::new(3).with_base(Duration::from_millis(50))),
        )
        .build()?;
    let workers = orchestrator.start_workers(WorkerConfig::default().concurrency(16))?;

    let emails: Vec<NewJob> = ["ada", "grace", "edsger"]
        .iter()
        .map(|name| NewJob::new("email.send").payload(&format!("{name}@example.com")))
        .collect();
    let submitted = orchestrator.submit_batch(emails).await?;
    let report = orchestrator
        .submit(NewJob::new("report.build").idempotency_key("report-2026-11"))
        .await?;
    // The same key again returns the job already submitted.
    let again = orchestrator
        .submit(NewJob::new("report.build").idempotency_key("report-2026-11"))
        .await?;
    assert_eq!((again.id, again.created), (report.id, false));

    for s in &submitted {
        let done = orchestrator.wait_for(s.id, Duration::from_secs(10)).await?;
        println!(
            "{} {}: {}",
            done.kind,
            done.state,
            done.result
                .map(|r| r.as_str().to_owned())
                .unwrap_or_default()
        );
    }
    let done = orchestrator
        .wait_for(report.id, Duration::from_secs(10))
        .await?;
    println!(
        "report.build {} after {} attempts ({} calls)",
        done.state,
        done.attempt,
        flaky_calls.load(Ordering::SeqCst)
    );
    println!("history of the report job:");
    for event in orchestrator.events(report.id).await? {
        println!(
            "  {:>9} -> {:<9} attempt {} {}",
            event.from.map(|s| s.to_string()).unwrap_or_default(),
            event.to.to_string(),
            event.attempt,
            event.reason.unwrap_or_default()
        );
    }
    let stats = orchestrator.stats().await?;
    println!(
        "jobs: {} succeeded, {} queued, {} running",
        stats.jobs.total.succeeded, stats.jobs.total.queued, stats.jobs.total.running
    );
    workers.shutdown(Duration::from_secs(10)).await;

    // What the memory learned from the executions (computed in SQL).
    let reflection = pg.memory().reflect("report.build", Window::All).await?;
    println!(
        "reflection on report.build: {} executions, rescue rate {:?}: {}",
        reflection.count, reflection.retry_rescue_rate, reflection.recommendation.rationale
    );

    sqlx::query("DROP SCHEMA jobforge_example CASCADE")
        .execute(pg.pool())
        .await
        .map_err(|e| jobforge::Error::backend("drop the example schema", e))?;
    Ok(())
}
