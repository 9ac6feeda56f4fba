//! [`WorkerConfig`]: the settings of a worker pool, and their checks.

use std::time::Duration;

use crate::job::{DEFAULT_QUEUE, WorkerId};
use crate::schedule::SchedulerConfig;
use crate::{Error, Result};

/// Settings of a worker pool.
///
/// ```
/// use std::time::Duration;
/// use jobforge::WorkerConfig;
///
/// let config = WorkerConfig::default()
///     .queues(["default", "emails"])
///     .concurrency(32)
///     .lease(Duration::from_secs(60))
///     .default_timeout(Some(Duration::from_secs(300)));
/// assert_eq!(config.concurrency_limit(), 32);
/// ```
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub(super) queues: Vec<String>,
    pub(super) concurrency: usize,
    pub(super) batch_size: usize,
    pub(super) prefetch: Option<usize>,
    pub(super) lease: Duration,
    pub(super) poll_wait: Duration,
    pub(super) worker_id: Option<WorkerId>,
    pub(super) record_executions: bool,
    pub(super) default_timeout: Option<Duration>,
    pub(super) timeout_grace: Duration,
    pub(super) stall_threshold: Duration,
    pub(super) schedules: Option<SchedulerConfig>,
}

impl Default for WorkerConfig {
    /// Queue `default`, 64 jobs at once, batches of up to 256, up to 256 jobs claimed ahead
    /// (fewer for long jobs), 30 s leases, 1 s reserve wait, attempts limited to 30 minutes unless the
    /// job or its kind says otherwise.
    fn default() -> Self {
        Self {
            queues: vec![DEFAULT_QUEUE.to_owned()],
            concurrency: 64,
            batch_size: 256,
            prefetch: None,
            lease: Duration::from_secs(30),
            poll_wait: Duration::from_secs(1),
            worker_id: None,
            record_executions: true,
            default_timeout: Some(Duration::from_secs(30 * 60)),
            timeout_grace: Duration::from_secs(10),
            stall_threshold: Duration::from_secs(2),
            schedules: Some(SchedulerConfig::default()),
        }
    }
}

impl WorkerConfig {
    /// Serve these queues (default `["default"]`).
    #[must_use]
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Run at most this many jobs at once (default 64).
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Reserve, claim and finish up to this many jobs per round trip (default 256).
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Claim at most this many jobs ahead of the free slots (default: the batch size, 256;
    /// 0 claims only for free slots). Claimed-but-not-started jobs wait in a local buffer
    /// under the pool's leases (heartbeats extend them; a shutdown hands them back, attempt
    /// not spent), so a slot that frees starts its next job at once instead of after a round
    /// trip to the store, and each round trip carries more jobs.
    ///
    /// This is a bound, not a target: the pool keeps buffered about as many jobs as its
    /// slots finish in two round trips (measured as it runs), so short jobs get a deep buffer
    /// and long ones nearly none, and a job is not kept waiting in one pool's buffer while
    /// another pool sits idle.
    #[must_use]
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = Some(prefetch);
        self
    }

    /// The most jobs buffered ahead of the slots.
    pub(super) fn max_prefetch(&self) -> usize {
        self.prefetch.unwrap_or(self.batch_size)
    }

    /// How many jobs a pool may hold claimed at once: running plus buffered.
    pub(super) fn capacity(&self) -> usize {
        self.concurrency.saturating_add(self.max_prefetch())
    }

    /// How long a lease lasts without a heartbeat (default 30 s). Heartbeats run every third
    /// of it, so a job is only taken over when its worker has stopped.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long one reserve call waits for work when none is due (default 1 s).
    #[must_use]
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.poll_wait = wait;
        self
    }

    /// Name the pool (default: a unique `worker-<uuid>`). Two pools of one process may not
    /// share a name; pools of different processes should not either (their claims stay
    /// fenced apart, but their history reads as one worker's).
    #[must_use]
    pub fn worker_id(mut self, id: WorkerId) -> Self {
        self.worker_id = Some(id);
        self
    }

    /// Whether to record every execution in the memory (default true; the adaptive strategy
    /// and reflection need it).
    #[must_use]
    pub fn record_executions(mut self, record: bool) -> Self {
        self.record_executions = record;
        self
    }

    /// The deadline of an attempt whose job and kind set none (default 30 minutes; `None`:
    /// no deadline). A handler that never returns would otherwise hold its job and its slot
    /// for the life of the process.
    #[must_use]
    pub fn default_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// How long a handler may go on after its deadline (default 10 s). A handler that has
    /// not stopped by then blocks its thread or ignores its future being dropped: its
    /// attempt is failed as timed out, and its slot is given to a new executor, so the pool
    /// keeps its concurrency.
    #[must_use]
    pub fn timeout_grace(mut self, grace: Duration) -> Self {
        self.timeout_grace = grace;
        self
    }

    /// How long the runtime may go without running a task of this pool before a warning is
    /// logged (default 2 s): a handler that blocks the thread (synchronous I/O, a long
    /// computation without `spawn_blocking`) starves every task on it.
    #[must_use]
    pub fn stall_threshold(mut self, threshold: Duration) -> Self {
        self.stall_threshold = threshold;
        self
    }

    /// How this pool fires due schedules (see [`crate::schedule`]), or `None` for a pool
    /// that fires none. Default: on, looking every 500 ms, when the store keeps schedules.
    /// Any number of pools may fire the same schedules: each tick is submitted once.
    #[must_use]
    pub fn schedules(mut self, schedules: Option<SchedulerConfig>) -> Self {
        self.schedules = schedules;
        self
    }

    /// The concurrency limit.
    #[must_use]
    pub fn concurrency_limit(&self) -> usize {
        self.concurrency
    }

    pub(super) fn validate(&self) -> Result<()> {
        if let Some(schedules) = &self.schedules {
            schedules.validate()?;
        }
        if self.queues.is_empty() {
            return Err(Error::invalid_input(
                "queues",
                "name at least one queue to serve",
            ));
        }
        if self.concurrency == 0 {
            return Err(Error::invalid_input("concurrency", "must be at least 1"));
        }
        if self.prefetch.is_some_and(|p| p > 100_000) {
            return Err(Error::invalid_input(
                "prefetch",
                "must be at most 100000 (claimed jobs wait in memory under leases)",
            ));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid_input("batch_size", "must be at least 1"));
        }
        if self.lease < Duration::from_millis(30) {
            return Err(Error::invalid_input(
                "lease",
                format!(
                    "{:?} is too short; use at least 30 ms (heartbeats run every third of it)",
                    self.lease
                ),
            ));
        }
        if self.default_timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid_input(
                "default_timeout",
                "must be greater than zero; use None for no deadline",
            ));
        }
        if self.stall_threshold < Duration::from_millis(100) {
            return Err(Error::invalid_input(
                "stall_threshold",
                "must be at least 100 ms",
            ));
        }
        Ok(())
    }
}
