//! The processes the suite starts from its own binary: `worker` (a worker pool on the store
//! the environment names, running the chaos kind) and `submitter` (submits a job mix, used
//! under a skewed clock). Everything comes from the environment; the names are here, for
//! both the suite that sets them and the roles that read them.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use jobforge::WorkerId;
use jobforge::prelude::*;
use serde_json::Value;
use sqlx::postgres::PgPool;
use tokio::signal::unix::{SignalKind, signal};

use crate::jobs::{self, ChaosPayload, KindSettings, Mix, Mode};
use crate::ledger;
use crate::store::{StoreKind, StoreSpec, WORKER_APP_PREFIX};

pub(crate) const ROLE: &str = "JOBFORGE_CHAOS_ROLE";
const STORE: &str = "JOBFORGE_CHAOS_STORE";
const STORE_URL: &str = "JOBFORGE_CHAOS_STORE_URL";
const STORE_NS: &str = "JOBFORGE_CHAOS_STORE_NS";
const LEDGER_URL: &str = "JOBFORGE_CHAOS_LEDGER_URL";
const LEDGER_SCHEMA: &str = "JOBFORGE_CHAOS_LEDGER_SCHEMA";
const MAX_ATTEMPTS: &str = "JOBFORGE_CHAOS_MAX_ATTEMPTS";
const TIMEOUT_MS: &str = "JOBFORGE_CHAOS_TIMEOUT_MS";
const WORKER_ID: &str = "JOBFORGE_CHAOS_WORKER_ID";
const CONCURRENCY: &str = "JOBFORGE_CHAOS_CONCURRENCY";
const LEASE_MS: &str = "JOBFORGE_CHAOS_LEASE_MS";
const POLL_MS: &str = "JOBFORGE_CHAOS_POLL_MS";
const GRACE_MS: &str = "JOBFORGE_CHAOS_GRACE_MS";
const BLOCK_MS: &str = "JOBFORGE_CHAOS_BLOCK_MS";
const MIX: &str = "JOBFORGE_CHAOS_MIX";
const SEED: &str = "JOBFORGE_CHAOS_SEED";
const PACE_MS: &str = "JOBFORGE_CHAOS_PACE_MS";
const NORMAL_ATTEMPTS: &str = "JOBFORGE_CHAOS_NORMAL_ATTEMPTS";

/// The line a worker writes to its log once its pool runs.
pub(crate) fn ready_line(worker: &str) -> String {
    format!("chaos worker {worker} ready")
}

/// What every process of a scenario shares: the store, the ledger, the kind's settings.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub(crate) store: StoreSpec,
    pub(crate) ledger_url: String,
    pub(crate) ledger_schema: String,
    pub(crate) kind: KindSettings,
}

/// A worker pool's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WorkerSettings {
    pub(crate) concurrency: usize,
    pub(crate) lease: Duration,
    pub(crate) poll: Duration,
    /// `WorkerPool::shutdown`'s grace on SIGTERM.
    pub(crate) grace: Duration,
    /// How long a `block` job blocks its thread.
    pub(crate) block: Duration,
}

/// What a submitter submits.
#[derive(Debug, Clone)]
pub(crate) struct SubmitterSettings {
    pub(crate) mix: Mix,
    pub(crate) seed: u64,
    pub(crate) pace: Duration,
    pub(crate) normal_attempts: Option<u32>,
}

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

impl Common {
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (STORE, self.store.kind.name().to_owned()),
            (STORE_URL, self.store.url.clone()),
            (STORE_NS, self.store.ns.clone()),
            (LEDGER_URL, self.ledger_url.clone()),
            (LEDGER_SCHEMA, self.ledger_schema.clone()),
            (MAX_ATTEMPTS, self.kind.max_attempts.to_string()),
        ];
        if let Some(t) = self.kind.timeout {
            env.push((TIMEOUT_MS, ms(t)));
        }
        env
    }

    fn from_env() -> Result<Self, String> {
        let kind = var(STORE)?;
        Ok(Self {
            store: StoreSpec {
                kind: StoreKind::parse(&kind).ok_or_else(|| format!("{STORE}={kind}?"))?,
                url: var(STORE_URL)?,
                ns: var(STORE_NS)?,
            },
            ledger_url: var(LEDGER_URL)?,
            ledger_schema: var(LEDGER_SCHEMA)?,
            kind: KindSettings {
                max_attempts: number(MAX_ATTEMPTS)?,
                timeout: std::env::var(TIMEOUT_MS)
                    .ok()
                    .map(|_| number(TIMEOUT_MS).map(Duration::from_millis))
                    .transpose()?,
            },
        })
    }
}

impl WorkerSettings {
    pub(crate) fn env(&self, worker_id: &str) -> Vec<(&'static str, String)> {
        vec![
            (ROLE, "worker".to_owned()),
            (WORKER_ID, worker_id.to_owned()),
            (CONCURRENCY, self.concurrency.to_string()),
            (LEASE_MS, ms(self.lease)),
            (POLL_MS, ms(self.poll)),
            (GRACE_MS, ms(self.grace)),
            (BLOCK_MS, ms(self.block)),
        ]
    }

    fn from_env() -> Result<Self, String> {
        Ok(Self {
            concurrency: number(CONCURRENCY)?,
            lease: Duration::from_millis(number(LEASE_MS)?),
            poll: Duration::from_millis(number(POLL_MS)?),
            grace: Duration::from_millis(number(GRACE_MS)?),
            block: Duration::from_millis(number(BLOCK_MS)?),
        })
    }
}

impl SubmitterSettings {
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (ROLE, "submitter".to_owned()),
            (MIX, self.mix.encode()),
            (SEED, self.seed.to_string()),
            (PACE_MS, ms(self.pace)),
        ];
        if let Some(n) = self.normal_attempts {
            env.push((NORMAL_ATTEMPTS, n.to_string()));
        }
        env
    }

    fn from_env() -> Result<Self, String> {
        Ok(Self {
            mix: Mix::decode(&var(MIX)?)?,
            seed: number(SEED)?,
            pace: Duration::from_millis(number(PACE_MS)?),
            normal_attempts: std::env::var(NORMAL_ATTEMPTS)
                .ok()
                .map(|_| number(NORMAL_ATTEMPTS))
                .transpose()?,
        })
    }
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

fn number<T: std::str::FromStr>(name: &str) -> Result<T, String> {
    let text = var(name)?;
    text.parse()
        .map_err(|_| format!("{name}={text} is not a number"))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

// ------------------------------------------------------------------------------ worker

/// What the chaos handler needs.
struct Handler {
    ledger: PgPool,
    worker: String,
    pid: u32,
    lease: Duration,
    block: Duration,
}

impl Handler {
    async fn run(&self, job: JobContext) -> Result<Value, JobError> {
        let p: ChaosPayload = job.decode()?;
        let pause = Duration::from_millis(p.ms);
        match p.mode {
            Mode::Hang => return std::future::pending().await,
            Mode::Block => {
                std::thread::sleep(self.block);
                return Err(JobError::permanent(format!(
                    "block: held its thread for {:?}",
                    self.block
                )));
            }
            Mode::Absurd if p.defer => {
                return Err(JobError::defer(
                    Duration::MAX,
                    "absurd: defer for Duration::MAX",
                ));
            }
            Mode::Absurd => {
                return Err(JobError::retryable("absurd: retry after Duration::MAX")
                    .retry_after(Duration::MAX));
            }
            Mode::FailOnce if job.attempt() <= 1 => {
                // At once, retried by the kind's policy after a delay drawn from 0 to 1 ms:
                // the job is back in the queue while its first attempt's heartbeats are in
                // flight.
                return Err(JobError::retryable("fail_once: the first attempt fails"));
            }
            Mode::Long => sleep_or_cancel(&job, self.lease * 3).await?,
            Mode::Normal | Mode::FailOnce => sleep_or_cancel(&job, pause).await?,
        }
        // A workflow step runs only once every step before it succeeded: check it from the
        // store, and end dead (which fails the scenario) when that is not so.
        if job.step().is_some_and(|s| !s.depends_on.is_empty()) {
            let deps = job.dependencies().await?;
            if let Some(early) = deps.iter().find(|d| d.state != Some(JobState::Succeeded)) {
                return Err(JobError::permanent(format!(
                    "ran before its dependency {} ({}) succeeded: it is {:?}",
                    early.name, early.id, early.state
                )));
            }
        }
        ledger::record(
            &self.ledger,
            job.id(),
            job.attempt(),
            &self.worker,
            self.pid,
        )
        .await
        .map_err(|e| JobError::retryable(format!("ledger insert failed: {e}")))?;
        Ok(Value::Null)
    }
}

async fn sleep_or_cancel(job: &JobContext, pause: Duration) -> Result<(), JobError> {
    tokio::select! {
        () = job.cancellation_token().cancelled() => {
            Err(JobError::cancelled("cancellation token fired while the handler slept"))
        }
        () = tokio::time::sleep(pause) => Ok(()),
    }
}

/// `JOBFORGE_CHAOS_ROLE=worker`: run a pool until SIGTERM (or SIGINT, or the suite going
/// away), then `shutdown(grace)` and exit 0.
pub(crate) fn run_worker() -> ExitCode {
    init_tracing();
    let outcome = runtime().and_then(|rt| rt.block_on(worker_main()));
    let _ = std::io::stderr().flush();
    match outcome {
        // Exit at once: a handler blocking its thread must not hold the exit.
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("chaos worker failed: {e}");
            std::process::exit(1)
        }
    }
}

async fn worker_main() -> Result<(), String> {
    let common = Common::from_env()?;
    let settings = WorkerSettings::from_env()?;
    let worker = var(WORKER_ID)?;
    let parent = std::os::unix::process::parent_id();
    // Signals first: a SIGTERM while the worker still connects must stop it cleanly too.
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let started = tokio::select! {
        started = start_pool(&common, &settings, &worker) => started?,
        _ = term.recv() => {
            eprintln!("chaos worker {worker}: SIGTERM before its pool started; exiting");
            return Ok(());
        }
        _ = int.recv() => return Ok(()),
    };
    let (_connected, pool) = started;
    eprintln!("{} (pid {})", ready_line(&worker), std::process::id());
    let why = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                // The suite died without stopping us (we were handed to init): stop too.
                if std::os::unix::process::parent_id() != parent {
                    break "the suite is gone";
                }
            }
        }
    };
    eprintln!(
        "chaos worker {worker}: {why}; shutting down with {:?} of grace",
        settings.grace
    );
    let report = pool.shutdown(settings.grace).await;
    eprintln!(
        "chaos worker {worker} stopped: drained {}, released {}",
        report.drained, report.released
    );
    Ok(())
}

/// Connect to the ledger and the store and start the pool.
async fn start_pool(
    common: &Common,
    settings: &WorkerSettings,
    worker: &str,
) -> Result<(crate::store::Connected, jobforge::WorkerPool), String> {
    let ledger = ledger::pool(
        &common.ledger_url,
        Some(&common.ledger_schema),
        8,
        "jfchaos_ledger",
    )
    .await?;
    let handler = Arc::new(Handler {
        ledger,
        worker: worker.to_owned(),
        pid: std::process::id(),
        lease: settings.lease,
        block: settings.block,
    });
    let kind = || {
        let h = Arc::clone(&handler);
        common.kind.config(move |job: JobContext| {
            let h = Arc::clone(&h);
            async move { h.run(job).await }
        })
    };
    let app = format!("{WORKER_APP_PREFIX}{worker}");
    let connected = common
        .store
        .connect_patiently(&app, kind, Duration::from_secs(30))
        .await?;
    let pool = connected
        .orch
        .start_workers(
            WorkerConfig::default()
                .concurrency(settings.concurrency)
                .lease(settings.lease)
                .poll_wait(settings.poll)
                .worker_id(WorkerId::new(worker)),
        )
        .map_err(|e| format!("start_workers: {e}"))?;
    Ok((connected, pool))
}

// --------------------------------------------------------------------------- submitter

/// `JOBFORGE_CHAOS_ROLE=submitter`: submit the mix through [`jobs::submit_jobs`], printing
/// each chunk's ids on a line of stdout as it lands (the suite stamps the line's arrival as
/// the jobs' due time, on its own clock), then exit 0.
pub(crate) fn run_submitter() -> ExitCode {
    init_tracing();
    let outcome = runtime().and_then(|rt| rt.block_on(submitter_main()));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaos submitter failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn submitter_main() -> Result<(), String> {
    let common = Common::from_env()?;
    let settings = SubmitterSettings::from_env()?;
    let connected = common
        .store
        .connect_patiently(
            "jfchaos_submitter",
            || common.kind.config(jobs::no_handler()),
            Duration::from_secs(30),
        )
        .await?;
    let jobs = settings.mix.jobs(settings.seed, settings.normal_attempts);
    let mut out = std::io::stdout().lock();
    let mut write_error = None;
    jobs::submit_jobs(&connected.orch, jobs, settings.pace, |ids| {
        let line: Vec<String> = ids.iter().map(ToString::to_string).collect();
        if let Err(e) = writeln!(out, "{}", line.join(" ")).and_then(|()| out.flush()) {
            write_error = Some(e);
        }
    })
    .await?;
    match write_error {
        Some(e) => Err(format!("writing ids to stdout: {e}")),
        None => Ok(()),
    }
}
