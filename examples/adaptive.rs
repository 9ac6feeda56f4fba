//! Adaptive execution, measured: the same workload run with a fixed strategy (`direct`) and with
//! `adaptive`, which tunes itself per kind from the execution history in memory.
//!
//! Two kinds with different troubles:
//! - `quote.fetch`: idempotent, usually 5–15 ms, but one call in twelve takes 300–600 ms (a
//!   long tail). Hedging where the tail begins should cut the p99.
//! - `ledger.sync`: fast, but a third of calls fail with a transient `conn_reset` that a retry
//!   fixes. Quick inline retries should finish jobs sooner than queue retries with the default
//!   backoff (1 s base, full jitter).
//!
//! The example warms up to build history, prints what reflection makes of each kind, then runs
//! the workload twice and prints completed jobs, p99 latency (submit → finish) and wasted
//! attempts (handler calls that did not produce the job's result: failures and losing hedges).
//!
//! ```text
//! cargo run --example adaptive
//! RUST_LOG=jobforge=debug cargo run --example adaptive   # with the engine's logs
//! ```
//!
//! Every number printed is measured in this run; nothing is hard-coded.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jobforge::memory::{Reflection, Window};
use jobforge::prelude::*;
use jobforge::strategy::{Adaptive, Outcome};
use jobforge::{Handler, Result, Strategy};
use parking_lot::Mutex;
use serde_json::json;

const QUOTE: &str = "quote.fetch";
const LEDGER: &str = "ledger.sync";
/// Jobs per kind in the warm-up and in each measured run.
const JOBS: u64 = 300;

/// Counts handler calls and gives each call of a job its own deterministic randomness, so both
/// runs see the same workload.
#[derive(Default)]
struct Calls {
    total: AtomicU64,
    per_job: Mutex<HashMap<JobId, u64>>,
}

impl Calls {
    /// A random generator for this call of this job: seeded by the job's payload and the
    /// call's number within the job.
    fn rng(&self, ctx: &JobContext) -> fastrand::Rng {
        self.total.fetch_add(1, Ordering::Relaxed);
        let call = {
            let mut per_job = self.per_job.lock();
            let n = per_job.entry(ctx.id()).or_default();
            *n += 1;
            *n
        };
        let seed: u64 = ctx.decode().unwrap_or_default();
        fastrand::Rng::with_seed(seed.wrapping_mul(1_000_003).wrapping_add(call))
    }
}

fn quote_handler(calls: Arc<Calls>) -> Arc<dyn Handler> {
    handler_fn(move |ctx: JobContext| {
        let calls = Arc::clone(&calls);
        async move {
            let mut rng = calls.rng(&ctx);
            let ms = if rng.u64(0..12) == 0 {
                rng.u64(300..=600)
            } else {
                rng.u64(5..=15)
            };
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!({"ms": ms})),
                () = ctx.cancelled() => Err(JobError::cancelled("hedge lost")),
            }
        }
    })
}

fn ledger_handler(calls: Arc<Calls>) -> Arc<dyn Handler> {
    handler_fn(move |ctx: JobContext| {
        let calls = Arc::clone(&calls);
        async move {
            let mut rng = calls.rng(&ctx);
            let fails = rng.f64() < 0.33;
            tokio::time::sleep(Duration::from_millis(rng.u64(5..=10))).await;
            if fails {
                Err(JobError::retryable("connection reset by peer").with_class("conn_reset"))
            } else {
                Ok(json!("synced"))
            }
        }
    })
}

struct RunStats {
    completed: usize,
    dead: usize,
    p50: Duration,
    p99: Duration,
    calls: u64,
}

/// Submit `JOBS` jobs of `kind` with `strategy`, wait for them all, and measure.
async fn run(
    orchestrator: &Orchestrator,
    calls: &Calls,
    kind: &str,
    strategy: &str,
    seed_base: u64,
) -> Result<RunStats> {
    let before = calls.total.load(Ordering::Relaxed);
    let jobs = (0..JOBS)
        .map(|i| {
            NewJob::new(kind)
                .payload(&(seed_base + i))
                .strategy(strategy)
        })
        .collect();
    let submitted = orchestrator.submit_batch(jobs).await?;
    orchestrator.wait_idle(Duration::from_secs(60)).await?;
    let mut latencies = Vec::with_capacity(submitted.len());
    let (mut completed, mut dead) = (0, 0);
    for s in &submitted {
        let Some(record) = orchestrator.get(s.id).await? else {
            continue;
        };
        match record.state {
            JobState::Succeeded => completed += 1,
            JobState::Dead => dead += 1,
            _ => {}
        }
        if let Some(finished) = record.finished_at {
            let ms = (finished - record.created_at)
                .num_microseconds()
                .unwrap_or(0);
            latencies.push(Duration::from_micros(u64::try_from(ms).unwrap_or(0)));
        }
    }
    latencies.sort_unstable();
    let pick = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
        latencies.get(i).copied().unwrap_or_default()
    };
    let after = calls.total.load(Ordering::Relaxed);
    Ok(RunStats {
        completed,
        dead,
        p50: pick(0.50),
        p99: pick(0.99),
        calls: after - before,
    })
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1}ms", d.as_secs_f64() * 1e3),
    )
}

fn print_reflection(r: &Reflection) {
    let rec = &r.recommendation;
    println!(
        "  {:<12} n={:<4} success={} p50={} p90={} p95={} p99={} retry_rescue={} top_errors={:?}",
        r.kind,
        r.count,
        r.success_rate
            .map_or("-".into(), |s| format!("{:.0}%", s * 100.0)),
        ms(r.p50),
        ms(r.p90),
        ms(r.p95),
        ms(r.p99),
        r.retry_rescue_rate
            .map_or("-".into(), |s| format!("{:.0}%", s * 100.0)),
        r.top_errors
            .iter()
            .map(|e| format!("{}×{}", e.class, e.count))
            .collect::<Vec<_>>(),
    );
    println!(
        "  {:<12} → {:?} timeout={} max_attempts={} inline_retries={} hedge_delay={} confident={}",
        "",
        rec.strategy,
        ms(rec.timeout),
        rec.max_attempts,
        rec.inline_retries,
        ms(rec.hedge_delay),
        rec.confident
    );
    if !rec.rationale.is_empty() {
        println!("  {:<12}   why: {}", "", rec.rationale);
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let quote_calls = Arc::new(Calls::default());
    let ledger_calls = Arc::new(Calls::default());
    // The library's default backoff (1 s base, full jitter, 5 min cap), 5 attempts.
    let retry = RetryPolicy::new(5);
    let orchestrator = Orchestrator::builder()
        .kind(
            QUOTE,
            KindConfig::new(quote_handler(Arc::clone(&quote_calls)))
                .retry(retry)
                .idempotent(true),
        )
        .kind(
            LEDGER,
            KindConfig::new(ledger_handler(Arc::clone(&ledger_calls))).retry(retry),
        )
        .strategy(Arc::new(Adaptive::new()))
        .build()?;
    let workers = orchestrator.start_workers(
        WorkerConfig::default()
            // Enough slots that every job starts at once: latency is execution, not queueing.
            .concurrency(1_024)
            .poll_wait(Duration::from_millis(20)),
    )?;
    let calls = [
        (QUOTE, quote_calls.as_ref()),
        (LEDGER, ledger_calls.as_ref()),
    ];

    println!("warming up: {JOBS} jobs of each kind with `direct` to build history...");
    for (kind, calls) in calls {
        run(&orchestrator, calls, kind, "direct", 1_000_000).await?;
    }
    // Execution records reach the memory in the background; give the recorder a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;

    println!("\nwhat reflection says (Window::Last(500)):");
    for (kind, _) in calls {
        let reflection = orchestrator
            .memory()
            .reflect(kind, Window::Last(500))
            .await?;
        print_reflection(&reflection);
    }

    println!(
        "\nthe same {JOBS} jobs per kind (same seeds), submitted at once, submit → finish:\n{:<12} {:<10} {:>9} {:>5} {:>9} {:>9} {:>13} {:>7}",
        "kind", "strategy", "completed", "dead", "p50", "p99", "handler calls", "wasted"
    );
    for (kind, calls) in calls {
        for strategy in ["direct", "adaptive"] {
            let stats = run(&orchestrator, calls, kind, strategy, 0).await?;
            println!(
                "{:<12} {:<10} {:>9} {:>5} {:>9} {:>9} {:>13} {:>7}",
                kind,
                strategy,
                stats.completed,
                stats.dead,
                ms(Some(stats.p50)),
                ms(Some(stats.p99)),
                stats.calls,
                stats.calls.saturating_sub(stats.completed as u64),
            );
        }
    }

    // One adaptive decision per kind, as recorded with the executions.
    println!("\nsample adaptive decisions:");
    for kind in [QUOTE, LEDGER] {
        let ctx = JobContext::new(
            JobRecord::from_job(NewJob::new(kind)),
            jobforge::WorkerId::new("example"),
            Arc::clone(orchestrator.memory()),
            tokio_util::sync::CancellationToken::new(),
        )
        .with_idempotent(kind == QUOTE);
        let handler: Arc<dyn Handler> = if kind == QUOTE {
            quote_handler(Arc::new(Calls::default()))
        } else {
            ledger_handler(Arc::new(Calls::default()))
        };
        let outcome = Adaptive::new().run(&ctx, handler.as_ref()).await;
        let ended = if matches!(outcome, Outcome::Succeeded(_)) {
            "ok"
        } else {
            "failed"
        };
        println!(
            "  {kind:<12} [{ended}] {}",
            ctx.decision().unwrap_or_default()
        );
    }

    workers.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
