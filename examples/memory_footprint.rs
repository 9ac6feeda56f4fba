//! How much memory queued jobs take in the embedded engine: submits 1,000,000 no-op jobs (no
//! workers) and prints resident memory per job, measured from /proc/self/statm (Linux).
//!
//! `cargo run --release --example memory_footprint [-- JOBS]`

use std::time::Instant;

use jobforge::JobOrchestrator;
use jobforge::prelude::*;

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let orchestrator = Orchestrator::builder().build()?;
    let before = resident_bytes().ok_or("cannot read /proc/self/statm (Linux only)")?;
    let started = Instant::now();
    for _ in 0..jobs / 10_000 {
        let batch = (0..10_000).map(|_| NewJob::new("noop")).collect();
        orchestrator.submit_batch(batch).await?;
    }
    let elapsed = started.elapsed();
    let after = resident_bytes().ok_or("cannot read /proc/self/statm")?;
    let stats = orchestrator.stats().await?;
    let per_job = (after.saturating_sub(before)) as f64 / jobs as f64;
    println!("queued jobs:        {}", stats.queue.ready);
    println!(
        "submit time:        {elapsed:.2?} ({:.0} jobs/s)",
        jobs as f64 / elapsed.as_secs_f64()
    );
    println!("resident before:    {:.1} MiB", before as f64 / 1048576.0);
    println!("resident after:     {:.1} MiB", after as f64 / 1048576.0);
    println!("bytes per queued job (state + queue): {per_job:.0}");
    if stats.queue.ready != jobs as u64 {
        return Err("not every job was queued".into());
    }
    Ok(())
}
