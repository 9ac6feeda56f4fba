//! End to end: the engine with the adaptive strategy as its default, on a mixed workload,
//! with the real in-memory memory. Every job finishes, and the executions the memory recorded
//! match what ran (one record per attempt, by kind and outcome).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jobforge::memory::Window;
use jobforge::prelude::*;
use jobforge::strategy::Adaptive;
use jobforge::{JobOrchestrator, JobState};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_finishes_a_mixed_workload_and_records_what_ran() {
    let calls = Arc::new(AtomicU64::new(0));
    let (c1, c2, c3) = (Arc::clone(&calls), Arc::clone(&calls), Arc::clone(&calls));
    let quick = RetryPolicy::new(4)
        .with_base(Duration::from_millis(1))
        .with_cap(Duration::from_millis(5));
    let orchestrator = Orchestrator::builder()
        .strategy(Arc::new(Adaptive::new()))
        .default_strategy("adaptive")
        .kind(
            "fast",
            KindConfig::new(move |_ctx: JobContext| {
                let c = Arc::clone(&c1);
                async move {
                    c.fetch_add(1, Ordering::Relaxed);
                    Ok(json!("ok"))
                }
            })
            .retry(quick),
        )
        .kind(
            "flaky",
            KindConfig::new(move |ctx: JobContext| {
                let c = Arc::clone(&c2);
                async move {
                    c.fetch_add(1, Ordering::Relaxed);
                    let n: u64 = ctx.decode()?;
                    if n % 2 == 0 && ctx.attempt() == 1 {
                        return Err(JobError::retryable("reset").with_class("conn_reset"));
                    }
                    Ok(json!(n))
                }
            })
            .retry(quick),
        )
        .kind(
            "tail",
            KindConfig::new(move |ctx: JobContext| {
                let c = Arc::clone(&c3);
                async move {
                    c.fetch_add(1, Ordering::Relaxed);
                    let n: u64 = ctx.decode()?;
                    let ms = if n % 10 == 0 { 40 } else { 2 };
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!(ms)),
                        () = ctx.cancelled() => Err(JobError::cancelled("hedge lost")),
                    }
                }
            })
            .retry(quick)
            .idempotent(true),
        )
        .build()
        .unwrap();
    let pool = orchestrator
        .start_workers(
            WorkerConfig::default()
                .concurrency(128)
                .poll_wait(Duration::from_millis(20)),
        )
        .unwrap();

    let mut ids: HashMap<JobId, &str> = HashMap::new();
    // Two rounds: the first builds history, the second runs on confident recommendations.
    for round in 0..2u64 {
        let mut jobs = Vec::new();
        let mut kinds = Vec::new();
        for i in 0..60u64 {
            for kind in ["fast", "flaky", "tail"] {
                jobs.push(NewJob::new(kind).payload(&(round * 1_000 + i)));
                kinds.push(kind);
            }
        }
        let submitted = orchestrator.submit_batch(jobs).await.unwrap();
        for (s, kind) in submitted.iter().zip(kinds) {
            ids.insert(s.id, kind);
        }
        orchestrator
            .wait_idle(Duration::from_secs(30))
            .await
            .unwrap();
    }
    // Shutting down flushes the execution recorder.
    let report = pool.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.records_dropped, 0);

    // Every job finished, and succeeded.
    let mut attempts: HashMap<&str, u64> = HashMap::new();
    let mut failed_attempts: HashMap<&str, u64> = HashMap::new();
    for (id, kind) in &ids {
        let record = orchestrator.get(*id).await.unwrap().unwrap();
        assert_eq!(record.state, JobState::Succeeded, "{kind} job {id}");
        *attempts.entry(kind).or_default() += u64::from(record.attempt);
        *failed_attempts.entry(kind).or_default() += u64::from(record.attempt - 1);
    }

    // The memory recorded one execution per attempt that ran, per kind.
    for kind in ["fast", "flaky", "tail"] {
        let r = orchestrator
            .memory()
            .reflect(kind, Window::All)
            .await
            .unwrap();
        assert_eq!(
            r.count, attempts[kind],
            "{kind}: executions recorded = attempts run"
        );
        assert_eq!(r.succeeded, 120, "{kind}: one success per job");
        assert_eq!(r.retried, failed_attempts[kind], "{kind}: failed attempts");
        assert_eq!(r.failed + r.deferred + r.cancelled, 0, "{kind}");
    }
    // Flaky jobs failed once each (first attempt, even payloads) unless the adaptive
    // strategy rescued them in process, which the reflection then counts as rescued.
    let flaky = orchestrator
        .memory()
        .reflect("flaky", Window::All)
        .await
        .unwrap();
    assert_eq!(flaky.retry_rescue_rate, Some(1.0));
    // The handler ran at least once per attempt (more with inline retries and hedges).
    let total_attempts: u64 = attempts.values().sum();
    assert!(calls.load(Ordering::Relaxed) >= total_attempts);
}
