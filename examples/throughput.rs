//! End-to-end throughput of the embedded engine: submit N no-op jobs in batches while a
//! worker pool runs them, and print jobs per second.
//!
//! `cargo run --release --example throughput [-- JOBS [--no-record]]`
//!
//! `--no-record` turns off execution recording in the memory, to measure what it costs.

use std::time::{Duration, Instant};

use jobforge::JobOrchestrator;
use jobforge::prelude::*;
use serde_json::Value;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(500_000);
    let record = !std::env::args().any(|a| a == "--no-record");
    let orchestrator = Orchestrator::builder()
        .handler("noop", |_ctx: JobContext| async { Ok(Value::Null) })
        .build()?;
    let pool = orchestrator.start_workers(
        WorkerConfig::default()
            .concurrency(512)
            .batch_size(512)
            .record_executions(record),
    )?;
    let started = Instant::now();
    for _ in 0..jobs / 1_000 {
        let batch = (0..1_000).map(|_| NewJob::new("noop")).collect();
        orchestrator.submit_batch(batch).await?;
    }
    let submitted = started.elapsed();
    orchestrator.wait_idle(Duration::from_secs(300)).await?;
    let elapsed = started.elapsed();
    let stats = orchestrator.stats().await?;
    pool.shutdown(Duration::from_secs(5)).await;
    println!(
        "jobs:           {jobs} (execution recording {})",
        if record { "on" } else { "off" }
    );
    println!("submitted in:   {submitted:.2?}");
    println!("all done in:    {elapsed:.2?}");
    println!(
        "throughput:     {:.0} jobs/s end to end",
        jobs as f64 / elapsed.as_secs_f64()
    );
    println!("succeeded:      {}", stats.jobs.total.succeeded);
    Ok(())
}
