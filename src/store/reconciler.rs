//! The reconciler: state is the source of truth. Jobs that the state store has as `Queued`
//! (or `Running` with a lease long expired) but the queue does not hold are enqueued again.
//!
//! That happens when queue and state are different stores and one lost something: a Redis
//! restart without persistence, a crash between the state write and the queue write of a
//! submit, a stream trimmed by hand. Duplicates are harmless (the claim's compare-and-set
//! drops them), so the reconciler errs on the side of enqueueing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::job::{JobRecord, JobState, WorkerId};
use crate::queue::{Envelope, QueueInspect, QueueManager};
use crate::state::{JobFilter, Page, StateManager};
use crate::{Error, ErrorKind, Result};

/// Settings of a [`Reconciler`].
///
/// ```
/// use std::time::Duration;
/// use jobforge::store::ReconcilerConfig;
///
/// let config = ReconcilerConfig::default()
///     .every(Duration::from_secs(10))
///     .grace(Duration::from_secs(5));
/// assert_eq!(config.interval(), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    every: Duration,
    grace: Duration,
    page: usize,
    lock: String,
}

impl Default for ReconcilerConfig {
    /// A pass every 30 s, jobs untouched for 30 s, pages of 500, lock `reconciler`.
    fn default() -> Self {
        Self {
            every: Duration::from_secs(30),
            grace: Duration::from_secs(30),
            page: 500,
            lock: "reconciler".to_owned(),
        }
    }
}

impl ReconcilerConfig {
    /// Time between passes (default 30 s).
    #[must_use]
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// Only jobs unchanged for this long are checked (default 30 s), so a submit whose queue
    /// write is in flight is not enqueued twice for nothing; running jobs are checked once
    /// their lease has been expired this long.
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Jobs listed and checked per call (default 500; 1 to 1,000).
    #[must_use]
    pub fn page(mut self, page: usize) -> Self {
        self.page = page;
        self
    }

    /// The name of the lock that makes one reconciler run at a time (default `reconciler`).
    #[must_use]
    pub fn lock_name(mut self, name: impl Into<String>) -> Self {
        self.lock = name.into();
        self
    }

    /// Time between passes.
    #[must_use]
    pub fn interval(&self) -> Duration {
        self.every
    }

    fn validate(&self) -> Result<()> {
        if self.every.is_zero() {
            return Err(Error::invalid_input("every", "must be greater than zero"));
        }
        if self.page == 0 || self.page > Page::MAX_LIMIT {
            return Err(Error::invalid_input(
                "page",
                format!(
                    "{} is out of range; use 1 to {}",
                    self.page,
                    Page::MAX_LIMIT
                ),
            ));
        }
        Ok(())
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Whether this reconciler held the lock (only the holder works).
    pub leader: bool,
    /// Jobs checked against the queue.
    pub checked: u64,
    /// Jobs the queue did not hold, enqueued again.
    pub enqueued: u64,
}

struct Shared {
    state: Arc<dyn StateManager>,
    queue: Arc<dyn QueueManager>,
    inspect: Arc<dyn QueueInspect>,
    config: ReconcilerConfig,
    holder: WorkerId,
    enqueued: AtomicU64,
    passes: AtomicU64,
}

/// A running reconciler: re-enqueues jobs that state has as `Queued` (or `Running` with a long
/// expired lease) but the queue lost. Any number may run, in any number of
/// processes: a lock held through [`QueueInspect::try_lock`] lets one work at a time.
/// Stop it with [`Reconciler::shutdown`]; dropping it stops it too.
pub struct Reconciler {
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("holder", &self.shared.holder)
            .field("config", &self.shared.config)
            .field("enqueued", &self.enqueued())
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    /// Start one over `state` and `queue` (with `inspect` its queue's inspection side).
    pub fn start(
        state: Arc<dyn StateManager>,
        queue: Arc<dyn QueueManager>,
        inspect: Arc<dyn QueueInspect>,
        config: ReconcilerConfig,
    ) -> Result<Self> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::new(
                ErrorKind::Configuration,
                "a reconciler must be started inside a Tokio runtime",
            )
        })?;
        let shared = Arc::new(Shared {
            state,
            queue,
            inspect,
            config,
            holder: WorkerId::unique("reconciler"),
            enqueued: AtomicU64::new(0),
            passes: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let task = runtime.spawn(run(Arc::clone(&shared), stop.clone()));
        Ok(Self {
            shared,
            stop,
            task: Some(task),
        })
    }

    /// Run one pass now (whether or not the background loop runs), if this reconciler gets
    /// the lock.
    pub async fn run_once(&self) -> Result<ReconcileReport> {
        pass(&self.shared).await
    }

    /// Jobs enqueued again so far.
    #[must_use]
    pub fn enqueued(&self) -> u64 {
        self.shared.enqueued.load(Ordering::Relaxed)
    }

    /// Passes completed so far.
    #[must_use]
    pub fn passes(&self) -> u64 {
        self.shared.passes.load(Ordering::Relaxed)
    }

    /// Stop and wait for the current pass to end.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(shared.config.every) => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            result = pass(&shared) => match result {
                Ok(report) if report.enqueued > 0 => {
                    tracing::warn!(checked = report.checked, enqueued = report.enqueued, "reconciler: enqueued jobs the queue had lost");
                }
                Ok(report) => tracing::debug!(?report, "reconciler pass"),
                Err(err) => tracing::warn!(error = %err, "reconciler pass failed; trying again next time"),
            },
        }
    }
}

/// One pass: every `Queued` job, then every `Running` one, a page at a time.
async fn pass(shared: &Shared) -> Result<ReconcileReport> {
    let config = &shared.config;
    // The lock lives for three intervals (at least 5 s) and is renewed every page, so a
    // stalled holder hands over after that and a live one keeps it.
    let ttl = config.every.saturating_mul(3).max(Duration::from_secs(5));
    let mut report = ReconcileReport::default();
    if !shared
        .inspect
        .try_lock(&config.lock, shared.holder.as_str(), ttl)
        .await?
    {
        return Ok(report);
    }
    report.leader = true;
    let grace = chrono::Duration::from_std(config.grace).unwrap_or(chrono::Duration::MAX);
    for state in [JobState::Queued, JobState::Running] {
        let filter = JobFilter {
            state: Some(state),
            ..JobFilter::default()
        };
        let mut page = Page::first(config.page);
        loop {
            let listed = shared.state.list(&filter, &page).await?;
            let horizon = Utc::now() - grace;
            let candidates: Vec<Envelope> = listed
                .items
                .iter()
                .filter(|r| stale(r, state, horizon))
                .map(Envelope::from_record)
                .collect();
            if !candidates.is_empty() {
                report.checked += u64::try_from(candidates.len()).unwrap_or(0);
                let held = shared.inspect.contains(&candidates).await?;
                let missing: Vec<Envelope> = candidates
                    .into_iter()
                    .zip(held)
                    .filter(|(_, held)| !held)
                    .map(|(mut env, _)| {
                        if state == JobState::Running {
                            // Due now: the claim takes the expired lease over.
                            env.run_at = Utc::now();
                        }
                        env
                    })
                    .collect();
                if !missing.is_empty() {
                    for env in &missing {
                        tracing::info!(job_id = %env.id, queue = %env.queue, %state, "reconciler: not in the queue; enqueueing it again");
                    }
                    shared.queue.enqueue(&missing).await?;
                    let n = u64::try_from(missing.len()).unwrap_or(0);
                    report.enqueued += n;
                    shared.enqueued.fetch_add(n, Ordering::Relaxed);
                }
            }
            match listed.next {
                Some(cursor) => page = Page::first(config.page).after(cursor),
                None => break,
            }
            if !shared
                .inspect
                .try_lock(&config.lock, shared.holder.as_str(), ttl)
                .await?
            {
                return Ok(report);
            }
        }
    }
    shared.passes.fetch_add(1, Ordering::Relaxed);
    Ok(report)
}

fn stale(record: &JobRecord, state: JobState, horizon: chrono::DateTime<Utc>) -> bool {
    match state {
        JobState::Queued => record.updated_at <= horizon,
        JobState::Running => record.lease_expires_at.is_some_and(|at| at <= horizon),
        _ => false,
    }
}
