//! Load test of the Redis backends: no-op jobs through the Redis state as its own queue (the
//! Redis-only deployment; `MODE=streams` puts the Redis Streams queue beside it instead),
//! run by one worker process.
//!
//! Two phases: (1) a backlog of `BACKLOG` jobs (default 20,000) submitted before the workers
//! start, drained; (2) `STREAM` jobs (default 100,000) submitted in batches while the workers
//! run. For each it prints jobs/s, p50/p99 submit-to-start latency, and Redis round trips
//! per job (every request the queue and the state sent, a script call counting once).
//! `RETENTION_MS` keeps finished records only that long, so the retention sweep's work is
//! measured too; `CONCURRENCY` and `BATCH` set the worker pool.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --features redis --example redis_throughput
//! ```
//!
//! It works under a namespace of its own and deletes its keys at the end. The server must
//! be on this host for the figures to mean anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use jobforge::prelude::*;
use jobforge::redis::{RedisBackend, RedisConfig, RedisStateConfig};
use parking_lot::Mutex;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

struct Latencies(Mutex<Vec<u32>>);

impl Latencies {
    fn take(&self) -> Vec<u32> {
        let mut v = std::mem::take(&mut *self.0.lock());
        v.sort_unstable();
        v
    }
}

fn percentile(sorted: &[u32], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_micros(u64::from(sorted[i.min(sorted.len() - 1)]))
}

async fn submit_all(orch: &Orchestrator, n: usize, batch: usize) -> jobforge::Result<()> {
    let mut left = n;
    while left > 0 {
        let take = left.min(batch);
        let jobs: Vec<NewJob> = (0..take).map(|_| NewJob::new("noop")).collect();
        orch.submit_batch(jobs).await?;
        left -= take;
    }
    Ok(())
}

async fn wait_done(done: &AtomicU64, target: u64, orch: &Orchestrator) -> jobforge::Result<()> {
    while done.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Every handler ran; wait for the last finish batch to be written.
    orch.wait_idle(Duration::from_secs(60)).await
}

struct Phase {
    name: &'static str,
    jobs: usize,
    elapsed: Duration,
    round_trips: u64,
    latencies: Vec<u32>,
}

impl Phase {
    fn print(&self) {
        let secs = self.elapsed.as_secs_f64();
        println!(
            "{:<28} {:>8} jobs  {:>7.2} s  {:>9.0} jobs/s  p50 {:>8.2?}  p99 {:>8.2?}  {:.4} round trips/job",
            self.name,
            self.jobs,
            secs,
            self.jobs as f64 / secs,
            percentile(&self.latencies, 0.50),
            percentile(&self.latencies, 0.99),
            self.round_trips as f64 / self.jobs as f64,
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "jobforge=error".into()),
        )
        .init();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let backlog = env_usize("BACKLOG", 20_000);
    let stream = env_usize("STREAM", 100_000);
    let concurrency = env_usize("CONCURRENCY", 2_048);
    let batch = env_usize("BATCH", 1_000);
    let namespace = format!("jobforge-bench-{}", uuid::Uuid::now_v7().simple());

    // `MODE=streams` runs the Streams queue beside the state (as with a Postgres state);
    // by default the Redis state is its own queue, the Redis-only deployment.
    let streams = std::env::var("MODE").is_ok_and(|m| m == "streams");
    // `RETENTION_MS` keeps finished records only that long, so the sweep's work is in the
    // figures too (by default they outlive the run).
    let mut state_config = RedisStateConfig::default();
    if let Ok(ms) = std::env::var("RETENTION_MS") {
        let ms: u64 = ms.parse()?;
        state_config = state_config
            .with_retention(Duration::from_millis(ms))
            .with_dead_retention(Duration::from_millis(ms));
    }
    // One connection for the state and the queue.
    let redis = RedisBackend::connect_with(
        &url,
        RedisConfig::new()
            .with_namespace(&namespace)
            .with_state(state_config),
    )
    .await?;
    let state = redis.store();
    let queue = streams.then(|| redis.queue());
    let done = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Latencies(Mutex::new(Vec::with_capacity(
        stream.max(backlog),
    ))));
    let (d, l) = (Arc::clone(&done), Arc::clone(&latencies));
    let builder = match &queue {
        Some(queue) => Orchestrator::builder()
            .queue(queue.clone())
            .state(state.clone()),
        None => Orchestrator::builder().store(state.clone()),
    };
    let orch = builder
        .handler("noop", move |ctx: JobContext| {
            let (d, l) = (Arc::clone(&d), Arc::clone(&l));
            async move {
                let waited = (Utc::now() - ctx.record().created_at)
                    .num_microseconds()
                    .unwrap_or(0);
                l.0.lock()
                    .push(u32::try_from(waited.max(0)).unwrap_or(u32::MAX));
                d.fetch_add(1, Ordering::Relaxed);
                Ok(serde_json::Value::Null)
            }
        })
        .build()?;
    let config = WorkerConfig::default()
        .concurrency(concurrency)
        .batch_size(batch)
        .poll_wait(Duration::from_millis(200))
        .record_executions(false);
    let trips = || redis.round_trips();
    println!(
        "redis_throughput ({}): {url} namespace {namespace}: backlog {backlog}, streamed {stream}, concurrency {concurrency}, batch {batch}",
        if streams {
            "Streams queue + Redis state"
        } else {
            "Redis state as its own queue"
        }
    );

    // Phase 1: a backlog, then the workers.
    submit_all(&orch, backlog, batch).await?;
    let rt0 = trips();
    let started = Instant::now();
    let workers = orch.start_workers(config.clone())?;
    wait_done(&done, backlog as u64, &orch).await?;
    let phase1 = Phase {
        name: "drain a backlog",
        jobs: backlog,
        elapsed: started.elapsed(),
        round_trips: trips() - rt0,
        latencies: latencies.take(),
    };
    phase1.print();

    // Phase 2: jobs streaming in while the workers run (submission is counted too).
    let rt0 = trips();
    let started = Instant::now();
    submit_all(&orch, stream, batch).await?;
    wait_done(&done, (backlog + stream) as u64, &orch).await?;
    let phase2 = Phase {
        name: "submit and run, streaming",
        jobs: stream,
        elapsed: started.elapsed(),
        round_trips: trips() - rt0,
        latencies: latencies.take(),
    };
    phase2.print();

    let report = workers.shutdown(Duration::from_secs(10)).await;
    let stats = orch.stats().await?;
    println!(
        "succeeded {}, queue ready {} in flight {} ; shutdown drained: {}",
        stats.jobs.total.succeeded, stats.queue.ready, stats.queue.in_flight, report.drained
    );

    // Leave nothing behind.
    let client = redis::Client::open(url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    let mut deleted = 0usize;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{namespace}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            deleted += redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<usize>(&mut conn)
                .await?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    println!("cleaned up {deleted} keys");
    Ok(())
}
