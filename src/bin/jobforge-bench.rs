//! `jobforge-bench`: how fast jobforge runs jobs on a store, measured the way users run it.
//!
//! ```text
//! cargo run --release --features full --bin jobforge-bench -- --help
//! cargo run --release --features full --bin jobforge-bench -- --jobs 20000 --concurrency 32
//! cargo run --release --features full --bin jobforge-bench -- --store postgres://postgres@127.0.0.1/test
//! cargo run --release --features full --bin jobforge-bench -- --store redis://127.0.0.1:6379 --mode streaming
//! cargo run --release --features full --bin jobforge-bench -- --mode continuous --rate 5000 --duration 10
//! ```
//!
//! One process submits and runs the jobs (or, with `--processes N`, submits them for N worker
//! processes of its own that share the store). It prints jobs per second, submit-to-start and
//! submit-to-finish percentiles, the store's round trips per job, and the process's CPU time
//! and peak memory; `--json` writes the same as JSON, and `--plots DIR` draws throughput and
//! latency over the run as SVG. Jobs live in a schema (PostgreSQL) or
//! namespace (Redis) of their own, removed at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use jobforge::postgres::{PostgresBackend, PostgresConfig};
use jobforge::prelude::*;
use jobforge::redis::{RedisBackend, RedisConfig};
use jobforge::state::{JobFilter, Page};
use jobforge::{JobOrchestrator, JobState, OrchestratorBuilder, WorkerPool};
use serde::Serialize;

/// mimalloc for the binary (feature `mimalloc`): see Cargo.toml for why.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How the jobs arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    /// Queue every job first, then start the workers and time the drain.
    BurnDown,
    /// Start the workers, then submit chunk after chunk as fast as the store takes them.
    Streaming,
    /// Start the workers, then submit at `--rate` jobs per second for `--duration` seconds,
    /// paced on real elapsed time.
    Continuous,
    /// Queue the jobs as one workflow (a root, `--jobs` minus 2 steps after it, a join after
    /// all of those), then start the workers and time the run: a burn-down of the same jobs
    /// is the plain baseline.
    Workflow,
}

/// Measure jobforge on a store: burn-down, streaming or a fixed offered rate.
#[derive(Debug, Parser)]
#[command(name = "jobforge-bench", version)]
struct Args {
    /// The store: a `postgres://` or `redis://` URL; none is the embedded in-memory store.
    #[arg(long, env = "JOBFORGE_BENCH_STORE")]
    store: Option<String>,
    /// How the jobs arrive.
    #[arg(long, value_enum, default_value = "burn-down")]
    mode: Mode,
    /// Jobs to run (burn-down and streaming).
    #[arg(long, default_value_t = 20_000)]
    jobs: u64,
    /// Jobs per submit call.
    #[arg(long, default_value_t = 1_000)]
    chunk: usize,
    /// Jobs run at once by the worker pool.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Most jobs claimed or finished in one round trip (the worker's default: 256).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Jobs claimed ahead of free slots (default: the worker's, as many as the concurrency).
    #[arg(long)]
    prefetch: Option<usize>,
    /// Offered rate, jobs per second (continuous).
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Seconds to offer the rate for (continuous).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Milliseconds each job works (sleeps) before it succeeds.
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
    /// Bytes of payload per job (a JSON string of that length; 0 is `null`).
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Record every execution in the memory (the engine's default; off measures the store).
    #[arg(long)]
    record_executions: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Worker processes sharing the store, each with `--concurrency` slots (more than one
    /// needs `--store`; this process then only submits and measures).
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Connections in the store's pool, per process (PostgreSQL `max_connections`, Redis pool
    /// size; default: the backend's, 10 and 16).
    #[arg(long)]
    pool_size: Option<u32>,
    /// Run as one worker process of a multi-process run, on this schema (PostgreSQL) or
    /// namespace (Redis): started by `--processes`, not by hand.
    #[arg(long, hide = true)]
    worker_of: Option<String>,
    /// Write plots of throughput and latency over the run into this folder
    /// (`throughput.svg`, `latency.svg`, and the same as PNG).
    #[arg(long)]
    plots: Option<std::path::PathBuf>,
}

/// What one run measured.
#[derive(Debug, Serialize)]
struct Report {
    store: String,
    mode: Mode,
    jobs: u64,
    processes: usize,
    concurrency: usize,
    batch: usize,
    seconds: f64,
    jobs_per_s: f64,
    start_latency_ms: Percentiles,
    finish_latency_ms: Percentiles,
    round_trips_per_job: Option<f64>,
    cpu_seconds: Option<f64>,
    peak_rss_mib: Option<f64>,
}

/// p50, p95, p99 and max, in milliseconds.
#[derive(Debug, Default, Serialize)]
struct Percentiles {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// The store under test and how to clean it up.
enum Store {
    Memory,
    Postgres(PostgresBackend, String, String),
    Redis(RedisBackend, String),
}

impl Store {
    /// Connect to the store at `url` (none: in-memory), in a schema or namespace of its own,
    /// or in `existing` (a worker process of a multi-process run).
    async fn connect(
        url: Option<&str>,
        pool_size: Option<u32>,
        existing: Option<&str>,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let tag = uuid::Uuid::now_v7().simple().to_string();
        match url {
            None => Ok(Self::Memory),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                let schema = existing.map_or_else(
                    || format!("jobforge_bench_{}", &tag[16..]),
                    str::to_owned,
                );
                let mut config = PostgresConfig::default()
                    .with_schema(&schema)
                    .with_purge_interval(None);
                if let Some(n) = pool_size {
                    config = config.with_max_connections(n);
                }
                let pg = PostgresBackend::connect_with(u, config).await?;
                Ok(Self::Postgres(pg, u.to_owned(), schema))
            }
            Some(u) if u.starts_with("redis://") || u.starts_with("rediss://") => {
                let namespace =
                    existing.map_or_else(|| format!("jobforge-bench-{tag}"), str::to_owned);
                let mut config = RedisConfig::new().with_namespace(&namespace);
                if let Some(n) = pool_size {
                    config = config.with_pool_size(usize::try_from(n).unwrap_or(usize::MAX));
                }
                let redis = RedisBackend::connect_with(u, config).await?;
                Ok(Self::Redis(redis, namespace))
            }
            Some(u) => Err(format!(
                "--store: `{u}` is neither a postgres:// nor a redis:// URL (leave it out for the in-memory store)"
            )
            .into()),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Memory => "in-memory",
            Self::Postgres(..) => "postgres",
            Self::Redis(..) => "redis",
        }
    }

    fn builder(&self) -> OrchestratorBuilder {
        match self {
            Self::Memory => Orchestrator::builder(),
            Self::Postgres(pg, ..) => Orchestrator::builder().store(pg.store()),
            Self::Redis(redis, _) => Orchestrator::builder().store(redis.store()),
        }
    }

    /// The schema or namespace the jobs live in.
    fn tag(&self) -> Option<&str> {
        match self {
            Self::Memory => None,
            Self::Postgres(_, _, schema) => Some(schema),
            Self::Redis(_, namespace) => Some(namespace),
        }
    }

    fn round_trips(&self) -> Option<u64> {
        match self {
            Self::Memory => None,
            Self::Postgres(pg, ..) => Some(pg.statements()),
            Self::Redis(redis, _) => Some(redis.round_trips()),
        }
    }

    async fn cleanup(self) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Self::Memory => {}
            Self::Postgres(pg, url, schema) => {
                drop(pg);
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                )))
                .execute(&mut conn)
                .await?;
            }
            Self::Redis(redis, namespace) => {
                let mut conn = redis.pool().get().await?;
                let mut cursor: u64 = 0;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{{{namespace}*"))
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut *conn)
                        .await?;
                    if !keys.is_empty() {
                        let _: usize = redis::cmd("UNLINK")
                            .arg(&keys)
                            .query_async(&mut *conn)
                            .await?;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        Ok(())
    }
}

/// CPU seconds (user + system) and peak resident memory of this process, from `/proc`.
fn process_usage() -> (Option<f64>, Option<f64>) {
    // Clock ticks: Linux reports them at USER_HZ, 100 on every mainstream architecture.
    const TICKS: f64 = 100.0;
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which is in parentheses and may hold spaces).
            let rest = &s[s.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / TICKS)
        });
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib / 1024.0)
        });
    (cpu, rss)
}

/// What a worker process reports when it stops (one JSON line on its stdout).
#[derive(Debug, Default, Serialize, serde::Deserialize)]
struct WorkerUsage {
    cpu_seconds: Option<f64>,
    peak_rss_mib: Option<f64>,
    round_trips: Option<u64>,
}

/// A worker process of a multi-process run: connect to the run's schema or namespace, say
/// `ready`, start the pool on `go`, stop when stdin closes, and report its usage.
async fn worker_process(args: &Args, tag: &str) -> Result<(), Box<dyn std::error::Error>> {
    use tokio::io::AsyncBufReadExt;
    let store = Store::connect(args.store.as_deref(), args.pool_size, Some(tag)).await?;
    let orch = store
        .builder()
        .handler("bench", handler(Duration::from_millis(args.work_ms), None))
        .build()?;
    println!("ready");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let _go = lines.next_line().await?;
    let before = store.round_trips();
    let workers = orch.start_workers(worker_config(args))?;
    while lines.next_line().await?.is_some() {}
    workers.shutdown(Duration::from_secs(10)).await;
    let (cpu_seconds, peak_rss_mib) = process_usage();
    let usage = WorkerUsage {
        cpu_seconds,
        peak_rss_mib,
        round_trips: store
            .round_trips()
            .zip(before)
            .map(|(after, before)| after.saturating_sub(before)),
    };
    println!("{}", serde_json::to_string(&usage)?);
    Ok(())
}

/// The worker processes of a multi-process run, started and `ready`.
struct Processes(
    Vec<(
        tokio::process::Child,
        tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    )>,
);

impl Processes {
    async fn start(args: &Args, tag: &str) -> Result<Self, Box<dyn std::error::Error>> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe()?;
        let mut children = Vec::with_capacity(args.processes);
        for _ in 0..args.processes {
            let mut cmd = tokio::process::Command::new(&exe);
            cmd.arg("--worker-of")
                .arg(tag)
                .arg("--store")
                .arg(args.store.as_deref().unwrap_or_default())
                .arg("--concurrency")
                .arg(args.concurrency.to_string())
                .arg("--batch")
                .arg(args.batch.to_string())
                .arg("--work-ms")
                .arg(args.work_ms.to_string());
            if let Some(p) = args.prefetch {
                cmd.arg("--prefetch").arg(p.to_string());
            }
            if let Some(n) = args.pool_size {
                cmd.arg("--pool-size").arg(n.to_string());
            }
            if args.record_executions {
                cmd.arg("--record-executions");
            }
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdout = child
                .stdout
                .take()
                .ok_or("a worker process has no stdout")?;
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            match lines.next_line().await? {
                Some(line) if line == "ready" => {}
                other => return Err(format!("a worker process did not start: {other:?}").into()),
            }
            children.push((child, lines));
        }
        Ok(Self(children))
    }

    /// Start every pool at once.
    async fn go(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        use tokio::io::AsyncWriteExt;
        for (child, _) in &mut self.0 {
            if let Some(stdin) = child.stdin.as_mut() {
                stdin.write_all(b"go\n").await?;
                stdin.flush().await?;
            }
        }
        Ok(())
    }

    /// Stop every pool; their usage, summed (CPU, round trips) or the largest (RSS).
    async fn stop(self) -> Result<WorkerUsage, Box<dyn std::error::Error>> {
        let mut total = WorkerUsage::default();
        for (mut child, mut lines) in self.0 {
            drop(child.stdin.take());
            let line = lines.next_line().await?.unwrap_or_default();
            let usage: WorkerUsage = serde_json::from_str(&line)
                .map_err(|e| format!("a worker process reported `{line}`: {e}"))?;
            child.wait().await?;
            total.cpu_seconds = usage
                .cpu_seconds
                .map(|b| total.cpu_seconds.unwrap_or(0.0) + b);
            total.peak_rss_mib = match (total.peak_rss_mib, usage.peak_rss_mib) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            total.round_trips =
                Some(total.round_trips.unwrap_or(0) + usage.round_trips.unwrap_or(0));
        }
        Ok(total)
    }
}

/// Jobs done so far, and a wake-up for the waiter when they reach the run's target: the end
/// of a run is seen when it happens, not at the next tick of a poll (a 20,000-job in-memory
/// drain lasts about 35 ms, and a 1 ms poll on Tokio's timer overshoots by 1-2 ms).
#[derive(Default)]
struct Tally {
    done: AtomicU64,
    target: AtomicU64,
    reached: tokio::sync::Notify,
}

impl Tally {
    /// One more job done (a handler of this process).
    fn count_one(&self) {
        // (SeqCst with `wait_for`'s store of the target and load of the count: one of the
        // two sees the other's write, so the wake-up is never missed)
        let now = self.done.fetch_add(1, Ordering::SeqCst).saturating_add(1);
        self.wake_at(now);
    }

    /// The jobs done are now `n` (as the store counts them, for worker processes).
    fn set(&self, n: u64) {
        self.done.store(n, Ordering::SeqCst);
        self.wake_at(n);
    }

    fn wake_at(&self, now: u64) {
        let target = self.target.load(Ordering::SeqCst);
        if target > 0 && now >= target {
            self.reached.notify_one();
        }
    }

    fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }
}

/// The bench job: works `work`, then counts itself in `done` (if given).
fn handler(
    work: Duration,
    done: Option<Arc<Tally>>,
) -> impl Fn(
    JobContext,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<serde_json::Value, JobError>> + Send>,
> + Send
+ Sync
+ 'static {
    move |_ctx: JobContext| {
        let done = done.clone();
        Box::pin(async move {
            if !work.is_zero() {
                tokio::time::sleep(work).await;
            }
            if let Some(d) = done {
                d.count_one();
            }
            Ok(serde_json::Value::Null)
        })
    }
}

/// The pool's settings from the flags.
fn worker_config(args: &Args) -> WorkerConfig {
    let mut config = WorkerConfig::default()
        .concurrency(args.concurrency)
        .batch_size(args.batch.max(1))
        .record_executions(args.record_executions);
    if let Some(prefetch) = args.prefetch {
        config = config.prefetch(prefetch);
    }
    config
}

/// Microseconds from 1 µs to an hour, to 3 significant digits.
fn new_histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
}

async fn submit_chunk(
    orch: &Orchestrator,
    n: usize,
    payload: &serde_json::Value,
) -> jobforge::Result<()> {
    let jobs = (0..n)
        .map(|_| NewJob::new("bench").payload(payload))
        .collect::<Vec<_>>();
    orch.submit_batch(jobs).await.map(|_| ())
}

/// One workflow of `steps` bench jobs: a root, `steps - 2` after it, a join after all of
/// those.
async fn submit_diamond(
    orch: &Orchestrator,
    steps: u64,
    payload: &serde_json::Value,
) -> Result<(), Box<dyn std::error::Error>> {
    use jobforge::workflow::Workflow;
    if steps < 3 {
        return Err("--mode workflow needs --jobs of at least 3 (a root, a step, a join)".into());
    }
    let wf = Workflow::new("bench");
    let root = wf.add(NewJob::new("bench").payload(payload));
    let parts = wf
        .add_many((2..steps).map(|_| NewJob::new("bench").payload(payload)))
        .after(&root);
    wf.add(NewJob::new("bench").payload(payload)).after(&parts);
    orch.submit_workflow(wf).await?;
    Ok(())
}

async fn wait_for(done: &Tally, target: u64, orch: &Orchestrator) -> jobforge::Result<()> {
    done.target.store(target, Ordering::SeqCst);
    while done.done() < target {
        // (the timeout only guards against a target set after the last job counted)
        let _ = tokio::time::timeout(Duration::from_millis(20), done.reached.notified()).await;
    }
    // Every handler ran; the last finishes are being written.
    orch.wait_idle(Duration::from_secs(120)).await
}

/// The run over time, in buckets of `Series::BUCKET` from its start: jobs finished, and the
/// submit-to-start latencies (µs) of the jobs that started, per bucket.
#[derive(Default)]
struct Series {
    finished: Vec<u64>,
    started: Vec<Vec<u32>>,
}

impl Series {
    const BUCKET_MS: i64 = 100;

    fn bucket(since_start: chrono::TimeDelta) -> Option<usize> {
        usize::try_from(since_start.num_milliseconds() / Self::BUCKET_MS).ok()
    }

    fn add(&mut self, run_start: chrono::DateTime<chrono::Utc>, r: &jobforge::JobRecord) {
        if let Some(b) = r.finished_at.and_then(|at| Self::bucket(at - run_start)) {
            if self.finished.len() <= b {
                self.finished.resize(b + 1, 0);
            }
            self.finished[b] += 1;
        }
        if let Some(at) = r.started_at {
            if let Some(b) = Self::bucket(at - run_start) {
                if self.started.len() <= b {
                    self.started.resize_with(b + 1, Vec::new);
                }
                let us = (at - r.created_at).num_microseconds().unwrap_or(0).max(0);
                self.started[b].push(u32::try_from(us).unwrap_or(u32::MAX));
            }
        }
    }
}

/// Submit-to-start and submit-to-finish of every succeeded job, read back from the records
/// (so both are on the store's clock), and the run over time.
async fn latencies(
    orch: &Orchestrator,
    run_start: chrono::DateTime<chrono::Utc>,
    mut starts: Histogram<u64>,
    mut finishes: Histogram<u64>,
) -> jobforge::Result<(Histogram<u64>, Histogram<u64>, Series)> {
    let mut series = Series::default();
    let micros = |d: chrono::TimeDelta| {
        u64::try_from(d.num_microseconds().unwrap_or(0).max(1)).unwrap_or(u64::MAX)
    };
    let filter = JobFilter {
        state: Some(JobState::Succeeded),
        ..JobFilter::default()
    };
    let mut page = Page::first(1_000);
    loop {
        let listed = orch.list(&filter, &page).await?;
        for r in &listed.items {
            series.add(run_start, r);
            if let Some(at) = r.started_at {
                starts.saturating_record(micros(at - r.created_at));
            }
            if let Some(at) = r.finished_at {
                finishes.saturating_record(micros(at - r.created_at));
            }
        }
        match listed.next {
            Some(cursor) => page = Page::first(1_000).after(cursor),
            None => return Ok((starts, finishes, series)),
        }
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
    let args = Args::parse();
    if args.concurrency == 0 || args.chunk == 0 {
        return Err("--concurrency and --chunk must be at least 1".into());
    }
    if let Some(tag) = &args.worker_of {
        return worker_process(&args, tag).await;
    }
    if args.processes == 0 {
        return Err("--processes must be at least 1".into());
    }
    if args.processes > 1 && args.store.is_none() {
        return Err(
            "--processes above 1 needs --store: the in-memory store lives in one process".into(),
        );
    }
    let store = Store::connect(args.store.as_deref(), args.pool_size, None).await?;
    let batch = args.batch.max(1);
    let payload = if args.payload_bytes == 0 {
        serde_json::Value::Null
    } else {
        serde_json::Value::String("x".repeat(args.payload_bytes))
    };

    let done = Arc::new(Tally::default());
    let orch = store
        .builder()
        .handler(
            "bench",
            handler(Duration::from_millis(args.work_ms), Some(Arc::clone(&done))),
        )
        .build()?;
    let config = worker_config(&args);
    let mut processes = match store.tag() {
        Some(tag) if args.processes > 1 => Some(Processes::start(&args, tag).await?),
        _ => None,
    };
    let counter = processes.as_ref().map(|_| {
        // Jobs run in other processes: count them from the store.
        let orch = orch.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            loop {
                if let Ok(stats) = orch.stats().await {
                    done.set(stats.jobs.total.succeeded);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    });

    let trips_before = store.round_trips();
    // The run's start on the wall clock, for the plots: moved to the workers' start in a
    // burn-down, below.
    let mut run_start = chrono::Utc::now();
    let progress = Progress::start(Arc::clone(&done), args.mode, &args);
    let (jobs, started, workers) = match args.mode {
        // A backlog first (plain jobs, or one workflow of them), then the workers, timed
        // from their start.
        Mode::BurnDown | Mode::Workflow => {
            let clock = Instant::now();
            let what = if args.mode == Mode::Workflow {
                submit_diamond(&orch, args.jobs, &payload).await?;
                "a workflow of"
            } else {
                let mut left = args.jobs;
                while left > 0 {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(args.chunk);
                    submit_chunk(&orch, n, &payload).await?;
                    left -= n as u64;
                }
                "plain"
            };
            eprintln!(
                "submitted {what} {} jobs in {:.1} ms",
                args.jobs,
                clock.elapsed().as_secs_f64() * 1e3
            );
            let started = Instant::now();
            run_start = chrono::Utc::now();
            (
                args.jobs,
                started,
                start(&orch, config, &mut processes).await?,
            )
        }
        Mode::Streaming => {
            let workers = start(&orch, config, &mut processes).await?;
            let started = Instant::now();
            let mut left = args.jobs;
            while left > 0 {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(args.chunk);
                submit_chunk(&orch, n, &payload).await?;
                left -= n as u64;
            }
            (args.jobs, started, workers)
        }
        Mode::Continuous => {
            let workers = start(&orch, config, &mut processes).await?;
            let started = Instant::now();
            let total = args.rate.saturating_mul(args.duration);
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while sent < total {
                tick.tick().await;
                let due = (started.elapsed().as_secs_f64() * args.rate as f64) as u64;
                let mut owed = due.min(total).saturating_sub(sent);
                while owed > 0 {
                    let n = usize::try_from(owed).unwrap_or(usize::MAX).min(args.chunk);
                    submit_chunk(&orch, n, &payload).await?;
                    owed -= n as u64;
                    sent += n as u64;
                }
            }
            (total, started, workers)
        }
    };
    wait_for(&done, jobs, &orch).await?;
    let seconds = started.elapsed().as_secs_f64();
    progress.finish();
    let trips = match (trips_before, store.round_trips()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / jobs.max(1) as f64),
        _ => None,
    };
    if let Some(workers) = workers {
        workers.shutdown(Duration::from_secs(10)).await;
    }
    if let Some(counter) = counter {
        counter.abort();
    }
    let (mut cpu_seconds, mut peak_rss_mib) = process_usage();
    let mut trips = trips;
    if let Some(processes) = processes {
        // The workers' usage, not the submitter's.
        let usage = processes.stop().await?;
        cpu_seconds = usage.cpu_seconds;
        peak_rss_mib = usage.peak_rss_mib;
        trips = match (trips, usage.round_trips) {
            (Some(own), Some(theirs)) => Some(own + theirs as f64 / jobs.max(1) as f64),
            _ => None,
        };
    }
    let (starts, finishes, series) =
        latencies(&orch, run_start, new_histogram()?, new_histogram()?).await?;
    let report = Report {
        store: store.name().to_owned(),
        mode: args.mode,
        jobs,
        processes: args.processes,
        concurrency: args.concurrency,
        batch,
        seconds,
        jobs_per_s: jobs as f64 / seconds.max(f64::EPSILON),
        start_latency_ms: Percentiles::of(&starts),
        finish_latency_ms: Percentiles::of(&finishes),
        round_trips_per_job: trips,
        cpu_seconds,
        peak_rss_mib,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        let written = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(path, serde_json::to_vec_pretty(&report)?));
        written.map_err(|e| format!("--json: could not write {}: {e}", path.display()))?;
    }
    if let Some(dir) = &args.plots {
        plot(dir, &report, &series)
            .map_err(|e| format!("--plots: could not draw into {}: {e}", dir.display()))?;
        println!("plots: {}", dir.display());
    }
    drop(orch);
    store.cleanup().await?;
    Ok(())
}

/// A progress bar of jobs done on stderr (hidden when stderr is not a terminal).
struct Progress(Option<(indicatif::ProgressBar, tokio::task::JoinHandle<()>)>);

impl Progress {
    fn start(done: Arc<Tally>, mode: Mode, args: &Args) -> Self {
        let total = match mode {
            Mode::Continuous => args.rate.saturating_mul(args.duration),
            _ => args.jobs,
        };
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} jobs done ({per_sec})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                b.set_position(done.done());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self(Some((bar, task)))
    }

    fn finish(mut self) {
        if let Some((bar, task)) = self.0.take() {
            task.abort();
            bar.finish_and_clear();
        }
    }
}

/// Start the workers: this process's pool, or the worker processes' (`None` returned).
async fn start(
    orch: &Orchestrator,
    config: WorkerConfig,
    processes: &mut Option<Processes>,
) -> Result<Option<WorkerPool>, Box<dyn std::error::Error>> {
    match processes {
        Some(p) => {
            p.go().await?;
            Ok(None)
        }
        None => Ok(Some(orch.start_workers(config)?)),
    }
}

/// `throughput.svg` and `.png` (jobs finished per second) and `latency.svg` and `.png`
/// (submit-to-start p50 and p99 of the jobs that started) over the run, in `dir`.
fn plot(dir: &std::path::Path, r: &Report, s: &Series) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    std::fs::create_dir_all(dir)?;
    let secs = |b: usize| b as f64 * Series::BUCKET_MS as f64 / 1000.0;
    let per_s = 1000.0 / Series::BUCKET_MS as f64;
    let title = format!(
        "{} {}, {} jobs, concurrency {}",
        r.store,
        mode_name(r.mode),
        r.jobs,
        r.concurrency
    );

    let rate: Vec<(f64, f64)> = s
        .finished
        .iter()
        .enumerate()
        .map(|(b, n)| (secs(b), *n as f64 * per_s))
        .collect();
    let quantiles: Vec<(f64, f64, f64)> = s
        .started
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_empty())
        .map(|(b, v)| {
            let mut v = v.clone();
            v.sort_unstable();
            let at = |q: f64| f64::from(v[((v.len() - 1) as f64 * q) as usize]) / 1000.0;
            (secs(b), at(0.5), at(0.99))
        })
        .collect();
    let end = secs(s.finished.len().max(s.started.len()).max(1));

    for ext in ["svg", "png"] {
        let throughput = dir.join(format!("throughput.{ext}"));
        let latency = dir.join(format!("latency.{ext}"));
        if ext == "svg" {
            draw_throughput(
                SVGBackend::new(&throughput, SIZE).into_drawing_area(),
                &title,
                end,
                &rate,
            )?;
            draw_latency(
                SVGBackend::new(&latency, SIZE).into_drawing_area(),
                &title,
                end,
                &quantiles,
            )?;
        } else {
            draw_throughput(
                BitMapBackend::new(&throughput, SIZE).into_drawing_area(),
                &title,
                end,
                &rate,
            )?;
            draw_latency(
                BitMapBackend::new(&latency, SIZE).into_drawing_area(),
                &title,
                end,
                &quantiles,
            )?;
        }
    }
    Ok(())
}

/// The plots' size in pixels.
const SIZE: (u32, u32) = (960, 480);

/// The font the PNG plots' text is drawn in, embedded so a machine without fonts draws it
/// too (DejaVu Sans; its license is beside it).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Register [`FONT`] as plotters' `sans-serif`, once.
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, FONT)
            .is_err()
        {
            eprintln!(
                "jobforge-bench: the embedded font could not be read; PNG plots have no text"
            );
        }
    });
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn draw_throughput<DB: plotters::prelude::DrawingBackend>(
    root: plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    end: f64,
    rate: &[(f64, f64)],
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    register_font();
    root.fill(&WHITE)?;
    let top = rate.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("jobs finished per second: {title}"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("jobs/s")
        .draw()?;
    chart.draw_series(LineSeries::new(rate.iter().copied(), &BLUE))?;
    root.present()?;
    Ok(())
}

fn draw_latency<DB: plotters::prelude::DrawingBackend>(
    root: plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    end: f64,
    quantiles: &[(f64, f64, f64)],
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    register_font();
    root.fill(&WHITE)?;
    let top = quantiles.iter().map(|p| p.2).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("submit to start, ms: {title}"), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ms")
        .draw()?;
    chart
        .draw_series(LineSeries::new(quantiles.iter().map(|q| (q.0, q.1)), &BLUE))?
        .label("p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(quantiles.iter().map(|q| (q.0, q.2)), &RED))?
        .label("p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn mode_name(mode: Mode) -> String {
    mode.to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
}

fn print_report(r: &Report) {
    let opt = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:.digits$}"),
        None => "-".to_owned(),
    };
    println!(
        "jobforge-bench: {} {}, {} jobs, {} process(es) of concurrency {}, batch {}",
        r.store,
        mode_name(r.mode),
        r.jobs,
        r.processes,
        r.concurrency,
        r.batch
    );
    println!(
        "| jobs/s | seconds | start p50 / p95 / p99 ms | finish p50 / p95 / p99 ms | round trips/job | CPU s | peak RSS MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {:.0} | {:.2} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {} | {} | {} |",
        r.jobs_per_s,
        r.seconds,
        r.start_latency_ms.p50,
        r.start_latency_ms.p95,
        r.start_latency_ms.p99,
        r.finish_latency_ms.p50,
        r.finish_latency_ms.p95,
        r.finish_latency_ms.p99,
        opt(r.round_trips_per_job, 4),
        opt(r.cpu_seconds, 2),
        opt(r.peak_rss_mib, 1),
    );
}
