//! How fast one PostgreSQL runs no-op jobs, Postgres-only (queue + state in the `jobs` table).
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release --features postgres --example postgres_throughput
//! ```
//!
//! Options (environment): `JOBS` (backlog size, default 100000), `POOLS` (worker pools, as
//! separate processes would be, default 2), `CONCURRENCY` (jobs at once per pool, default
//! 256), `BATCH` (claim/finish batch, default 256), `RECORD` (1: record every execution in
//! the PostgreSQL memory, one more insert per batch; default 0).
//!
//! It measures, in a fresh schema it drops at the end:
//! 1. batch insert: `submit_batch` of 10,000 jobs (one `UNNEST` statement);
//! 2. backlog: all jobs queued first, then workers start; jobs/s until all have succeeded;
//! 3. streaming: a producer submits while the workers run; jobs/s end to end;
//!
//! and for each, the statements sent per job and the server's commits per job.

use std::time::{Duration, Instant};

use jobforge::JobOrchestrator;
use jobforge::postgres::{PostgresBackend, PostgresConfig};
use jobforge::prelude::*;
use serde_json::Value;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Meter {
    pg: PostgresBackend,
    statements: u64,
    commits: i64,
    started: Instant,
}

async fn commits(pg: &PostgresBackend) -> jobforge::Result<i64> {
    sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pg.pool())
    .await
    .map_err(|e| jobforge::Error::backend("read pg_stat_database", e))
}

impl Meter {
    async fn start(pg: &PostgresBackend) -> jobforge::Result<Self> {
        // Statistics are sent to the collector at most every 500 ms; let them settle.
        tokio::time::sleep(Duration::from_millis(600)).await;
        Ok(Self {
            pg: pg.clone(),
            statements: pg.statements(),
            commits: commits(pg).await?,
            started: Instant::now(),
        })
    }

    async fn report(self, what: &str, jobs: usize) -> jobforge::Result<()> {
        let elapsed = self.started.elapsed();
        let statements = self.pg.statements() - self.statements;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let commits = commits(&self.pg).await? - self.commits;
        println!(
            "{what}: {jobs} jobs in {:.2} s = {:.0} jobs/s; {:.4} statements/job ({statements}), {:.4} commits/job (whole server)",
            elapsed.as_secs_f64(),
            jobs as f64 / elapsed.as_secs_f64(),
            statements as f64 / jobs as f64,
            commits as f64 / jobs as f64,
        );
        Ok(())
    }
}

async fn wait_done(orch: &Orchestrator, total: u64) -> jobforge::Result<()> {
    loop {
        let counts = orch.store().counts().await?;
        if counts.total.succeeded >= total {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() -> jobforge::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let jobs = env_or("JOBS", 100_000);
    let pools = env_or("POOLS", 2);
    let concurrency = env_or("CONCURRENCY", 256);
    let batch = env_or("BATCH", 256);
    let record = env_or("RECORD", 0) == 1;
    let schema = "jobforge_throughput";

    let config = PostgresConfig::default()
        .with_schema(schema)
        .with_max_connections(16)
        .with_purge_interval(None);
    // Start from an empty schema.
    {
        let pg = PostgresBackend::connect_with(&url, config.clone()).await?;
        sqlx::query("DROP SCHEMA IF EXISTS jobforge_throughput CASCADE")
            .execute(pg.pool())
            .await
            .map_err(|e| jobforge::Error::backend("drop the schema", e))?;
    }
    let pg = PostgresBackend::connect_with(&url, config).await?;
    let orch = Orchestrator::builder()
        .store(pg.store())
        .memory(pg.memory())
        .handler("noop", |_ctx: JobContext| async { Ok(Value::Null) })
        .build()?;
    println!(
        "{jobs} no-op jobs; {pools} pools x {concurrency} at once, batches of {batch}; recording executions: {record}"
    );

    // 1. Batch insert.
    let mut inserts = Vec::new();
    let meter = Meter::start(&pg).await?;
    let mut submitted = 0;
    while submitted < jobs {
        let n = (jobs - submitted).min(10_000);
        let batch_jobs: Vec<NewJob> = (0..n).map(|_| NewJob::new("noop")).collect();
        let t = Instant::now();
        orch.submit_batch(batch_jobs).await?;
        inserts.push(t.elapsed());
        submitted += n;
    }
    meter.report("submit (backlog)", jobs).await?;
    inserts.sort();
    println!(
        "batch insert of 10,000 jobs: median {:.1} ms, best {:.1} ms, worst {:.1} ms ({} batches)",
        inserts[inserts.len() / 2].as_secs_f64() * 1000.0,
        inserts[0].as_secs_f64() * 1000.0,
        inserts[inserts.len() - 1].as_secs_f64() * 1000.0,
        inserts.len()
    );

    // 2. Drain the backlog.
    let worker_config = WorkerConfig::default()
        .concurrency(concurrency)
        .batch_size(batch)
        .record_executions(record);
    let meter = Meter::start(&pg).await?;
    let mut running = Vec::new();
    for _ in 0..pools {
        running.push(orch.start_workers(worker_config.clone())?);
    }
    wait_done(&orch, jobs as u64).await?;
    meter.report("backlog", jobs).await?;

    // 3. Jobs streaming in while the workers run.
    let meter = Meter::start(&pg).await?;
    let producer = {
        let orch = orch.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            while sent < jobs {
                let n = (jobs - sent).min(1_000);
                orch.submit_batch((0..n).map(|_| NewJob::new("noop")).collect())
                    .await?;
                sent += n;
            }
            Ok::<_, jobforge::Error>(())
        })
    };
    wait_done(&orch, 2 * jobs as u64).await?;
    producer
        .await
        .map_err(|e| jobforge::Error::new(jobforge::ErrorKind::Backend, e.to_string()))??;
    meter
        .report(
            "streaming (submit + run, with the backlog's rows kept)",
            jobs,
        )
        .await?;

    for pool in running {
        pool.shutdown(Duration::from_secs(10)).await;
    }
    let stats = orch.stats().await?;
    println!(
        "kept: {} succeeded jobs; queue ready {} in flight {}",
        stats.jobs.total.succeeded, stats.queue.ready, stats.queue.in_flight
    );
    sqlx::query("DROP SCHEMA IF EXISTS jobforge_throughput CASCADE")
        .execute(pg.pool())
        .await
        .map_err(|e| jobforge::Error::backend("drop the schema", e))?;
    Ok(())
}
