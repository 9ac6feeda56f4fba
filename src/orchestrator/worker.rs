use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::builder::KindConfig;
use super::engine::Engine;
use crate::handler::{JobContext, JobError};
use crate::job::{DEFAULT_QUEUE, JobId, JobRecord, JobState, Payload, WorkerId, clamp_delay};
use crate::memory::{ExecutionRecord, OutcomeClass};
use crate::queue::Reserve;
use crate::state::{Claim, Finish, Heartbeat, Held, Transition, TransitionResult};
use crate::strategy::{Outcome, RetryPolicy};
use crate::{Error, ErrorKind, Result};

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
    queues: Vec<String>,
    concurrency: usize,
    batch_size: usize,
    lease: Duration,
    poll_wait: Duration,
    worker_id: Option<WorkerId>,
    record_executions: bool,
    default_timeout: Option<Duration>,
    timeout_grace: Duration,
    stall_threshold: Duration,
}

impl Default for WorkerConfig {
    /// Queue `default`, 64 jobs at once, batches of up to 256, 30 s leases, 1 s reserve wait,
    /// attempts limited to 30 minutes unless the job or its kind says otherwise.
    fn default() -> Self {
        Self {
            queues: vec![DEFAULT_QUEUE.to_owned()],
            concurrency: 64,
            batch_size: 256,
            lease: Duration::from_secs(30),
            poll_wait: Duration::from_secs(1),
            worker_id: None,
            record_executions: true,
            default_timeout: Some(Duration::from_secs(30 * 60)),
            timeout_grace: Duration::from_secs(10),
            stall_threshold: Duration::from_secs(2),
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

    /// The concurrency limit.
    #[must_use]
    pub fn concurrency_limit(&self) -> usize {
        self.concurrency
    }

    fn validate(&self) -> Result<()> {
        if self.queues.is_empty() {
            return Err(Error::invalid_input(
                "queues",
                "name at least one queue to serve",
            ));
        }
        if self.concurrency == 0 {
            return Err(Error::invalid_input("concurrency", "must be at least 1"));
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

/// What a shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Whether every running job finished within the grace period.
    pub drained: bool,
    /// Jobs still running at the deadline, handed back to the queue (attempt not spent).
    pub released: usize,
    /// Execution records the memory never got: the recorder fell behind, or the memory's
    /// store refused them for longer than they could be held.
    pub records_dropped: u64,
}

/// A claim: the job and the token its claim returned (see [`Held`]). A pool may hold two
/// claims of one job at once (the finish of an attempt whose lease expired, and a new
/// attempt), so running jobs are keyed by claim, not by job.
type Key = (JobId, u64);

/// Why a running job's cancellation token fired, so its outcome is read rightly: only a
/// cancel request ends a job `cancelled`.
mod stop {
    /// Not fired (a handler that reports itself cancelled decided so on its own).
    pub(super) const NONE: u8 = 0;
    /// Someone asked to cancel the job.
    pub(super) const CANCEL_REQUESTED: u8 = 1;
    /// The claim no longer holds the job: its result is not this worker's to report.
    pub(super) const LEASE_LOST: u8 = 2;
    /// The pool shut down and handed the job back.
    pub(super) const SHUTDOWN: u8 = 3;
}

/// The handle on a running job its token's firing goes through: the token and why it fired.
#[derive(Clone)]
struct StopSignal {
    token: CancellationToken,
    why: Arc<AtomicU8>,
}

impl StopSignal {
    fn new() -> Self {
        Self {
            token: CancellationToken::new(),
            why: Arc::new(AtomicU8::new(stop::NONE)),
        }
    }

    /// Fire with `why`; the first reason given is kept.
    fn fire(&self, why: u8) {
        let _ = self
            .why
            .compare_exchange(stop::NONE, why, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    fn why(&self) -> u8 {
        self.why.load(Ordering::Acquire)
    }
}

struct Running {
    attempt: u32,
    stop: StopSignal,
}

/// A claimed job on its way to an executor, holding its concurrency slot. The record is
/// already inside the context's `Arc`: it is moved once, not at every hand-off.
struct Assigned {
    ctx: JobContext,
    permit: OwnedSemaphorePermit,
    stop: StopSignal,
}

struct Done {
    key: Key,
    /// `None`: nothing to report (the claim was lost, or the job handed back at shutdown).
    transition: Option<Transition>,
    attempt: u32,
    record: Option<ExecutionRecord>,
}

/// What an executor runs now, for the shutdown's hand-back and the watchdog.
struct Busy {
    key: Key,
    kind: String,
    started: Instant,
    /// When the slot is given to a new executor if this one has not returned: the attempt's
    /// deadline plus the grace.
    recover_at: Option<Instant>,
    /// What to report for the job then.
    attempt: u32,
    max_attempts: u32,
    timeout: Option<Duration>,
}

/// One executor slot: what it runs, and which executor owns it (a new one after recovery).
struct Slot {
    busy: parking_lot::Mutex<Option<Busy>>,
    generation: AtomicU64,
}

pub(crate) struct PoolShared {
    engine: Arc<Engine>,
    worker: WorkerId,
    config: WorkerConfig,
    stop: CancellationToken,
    slots: Arc<Semaphore>,
    /// Claims held by this pool: running, or finished and awaiting the finisher (heartbeats
    /// go on for both). Added a claim batch at a time, removed a finish batch at a time.
    running: parking_lot::Mutex<HashMap<Key, Running, foldhash::fast::RandomState>>,
    /// Claimed jobs for the executors (bounded by the concurrency; a slot is taken first).
    jobs_tx: async_channel::Sender<Assigned>,
    jobs_rx: async_channel::Receiver<Assigned>,
    /// The executor slots.
    executor_slots: Box<[Slot]>,
    /// The executors' tasks, by slot (the watchdog replaces a stuck one).
    executors: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    /// The finisher's inbox, for the executors the watchdog starts; taken at shutdown.
    done_tx: parking_lot::Mutex<Option<mpsc::UnboundedSender<Done>>>,
    runtime: tokio::runtime::Handle,
    records_dropped: AtomicU64,
    /// Set by a shutdown: past it, the finisher stops retrying a store that refuses.
    give_up_at: parking_lot::Mutex<Option<Instant>>,
}

impl PoolShared {
    /// Fire the tokens of this pool's attempts of job `id`: someone asked to cancel it.
    pub(crate) fn cancel_local(&self, id: JobId) {
        for ((job, _), running) in self.running.lock().iter() {
            if *job == id {
                running.stop.fire(stop::CANCEL_REQUESTED);
            }
        }
    }

    /// The deadline of an attempt: the job's, else its kind's, else the pool's default.
    fn timeout_for(&self, record: &JobRecord) -> Option<Duration> {
        record
            .timeout
            .or_else(|| self.engine.kinds.get(&record.kind).and_then(|k| k.timeout))
            .or(self.config.default_timeout)
    }

    fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }
}

/// A running pool of workers. Stop it with [`WorkerPool::shutdown`]; dropping it stops
/// reserving new jobs but does not wait.
pub struct WorkerPool {
    shared: Arc<PoolShared>,
    fetcher: Option<JoinHandle<()>>,
    finisher: Option<JoinHandle<()>>,
    heartbeat: Option<JoinHandle<()>>,
    recorder: Option<JoinHandle<()>>,
    watchdog: Option<Watchdog>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("worker", &self.shared.worker)
            .field("running", &self.shared.running.lock().len())
            .finish_non_exhaustive()
    }
}

impl WorkerPool {
    pub(crate) fn start(engine: Arc<Engine>, config: WorkerConfig) -> Result<Self> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::new(
                ErrorKind::Configuration,
                "start_workers must be called inside a Tokio runtime (for example from #[tokio::main])",
            )
        })?;
        let worker = config
            .worker_id
            .clone()
            .unwrap_or_else(|| WorkerId::unique("worker"));
        let (jobs_tx, jobs_rx) = async_channel::bounded(config.concurrency);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(PoolShared {
            engine: Arc::clone(&engine),
            worker,
            slots: Arc::new(Semaphore::new(config.concurrency)),
            executor_slots: (0..config.concurrency)
                .map(|_| Slot {
                    busy: parking_lot::Mutex::new(None),
                    generation: AtomicU64::new(0),
                })
                .collect(),
            executors: parking_lot::Mutex::new(Vec::with_capacity(config.concurrency)),
            config,
            stop: CancellationToken::new(),
            running: parking_lot::Mutex::new(HashMap::default()),
            jobs_tx,
            jobs_rx,
            done_tx: parking_lot::Mutex::new(Some(done_tx.clone())),
            runtime: runtime.clone(),
            records_dropped: AtomicU64::new(0),
            give_up_at: parking_lot::Mutex::new(None),
        });
        {
            // One name, one pool: two pools of this process under one worker id would read
            // as one worker in every job's history.
            let mut pools = engine.pools.lock();
            pools.retain(|p| p.strong_count() > 0);
            if pools
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .any(|p| p.worker == shared.worker && !p.is_stopping())
            {
                return Err(Error::invalid_input(
                    "worker_id",
                    format!(
                        "a worker pool named `{}` already runs in this process; give each pool its own id (or leave it unset for a unique one)",
                        shared.worker
                    ),
                ));
            }
            pools.push(Arc::downgrade(&shared));
        }
        let (record_tx, record_rx) = mpsc::channel::<Vec<ExecutionRecord>>(256);
        let recorder = runtime.spawn(record_loop(Arc::clone(&shared), record_rx));
        let finisher = runtime.spawn(finish_loop(Arc::clone(&shared), done_rx, record_tx));
        let heartbeat = runtime.spawn(heartbeat_loop(Arc::clone(&shared)));
        // Long-lived executors, one per concurrency slot: a job costs a channel hand-off
        // instead of a task spawn.
        {
            let mut executors = shared.executors.lock();
            for slot in 0..shared.config.concurrency {
                executors.push(runtime.spawn(executor_loop(
                    Arc::clone(&shared),
                    slot,
                    0,
                    done_tx.clone(),
                )));
            }
        }
        drop(done_tx);
        let fetcher = runtime.spawn(fetch_loop(Arc::clone(&shared)));
        let watchdog = Watchdog::start(&shared);
        tracing::info!(worker = %shared.worker, queues = ?shared.config.queues, concurrency = shared.config.concurrency, "worker pool started");
        Ok(Self {
            shared,
            fetcher: Some(fetcher),
            finisher: Some(finisher),
            heartbeat: Some(heartbeat),
            recorder: Some(recorder),
            watchdog,
        })
    }

    /// This pool's worker id.
    #[must_use]
    pub fn worker_id(&self) -> &WorkerId {
        &self.shared.worker
    }

    /// Jobs this pool holds now (running, or finished and being recorded).
    #[must_use]
    pub fn running(&self) -> usize {
        self.shared.running.lock().len()
    }

    /// Stop gracefully: reserve nothing more, let running jobs finish for up to `grace`, then
    /// cancel the rest and hand them back to the queue (their attempt is not spent), so
    /// another worker takes them. Nothing is lost.
    pub async fn shutdown(mut self, grace: Duration) -> ShutdownReport {
        let shared = Arc::clone(&self.shared);
        shared.stop.cancel();
        if let Some(fetcher) = self.fetcher.take() {
            let _ = fetcher.await;
        }
        let concurrency = u32::try_from(shared.config.concurrency).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(grace, shared.slots.acquire_many(concurrency))
            .await
            .is_ok_and(|permit| permit.is_ok());
        let mut released = 0;
        if !drained {
            released = hand_back_unfinished(&shared).await;
        }
        // Executors end when the channel closes; the finisher when every executor and the
        // watchdog let go of its inbox.
        shared.jobs_tx.close();
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.stop();
        }
        shared.done_tx.lock().take();
        let executors: Vec<JoinHandle<()>> = shared.executors.lock().drain(..).collect();
        for executor in executors {
            let _ = tokio::time::timeout(Duration::from_secs(10), executor).await;
        }
        if let Some(finisher) = self.finisher.take() {
            // A store still refusing finishes gets 10 s more; then their jobs are left to
            // their leases (they run again), and the finisher ends.
            *shared.give_up_at.lock() = Instant::now().checked_add(SHUTDOWN_FINISH_GRACE);
            let _ = finisher.await;
        }
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
        if let Some(recorder) = self.recorder.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), recorder).await;
        }
        let report = ShutdownReport {
            drained,
            released,
            records_dropped: shared.records_dropped.load(Ordering::Relaxed),
        };
        tracing::info!(worker = %shared.worker, ?report, "worker pool stopped");
        report
    }
}

impl Drop for WorkerPool {
    /// Stop reserving and let the executors finish what they run, then end; nothing waits.
    fn drop(&mut self) {
        self.shared.stop.cancel();
        self.shared.jobs_tx.close();
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.stop();
        }
        self.shared.done_tx.lock().take();
    }
}

/// The grace of a shutdown ran out: hand back the jobs that never started and those still
/// running (attempt not spent), then stop their handlers. Returns how many went back.
async fn hand_back_unfinished(shared: &Arc<PoolShared>) -> usize {
    let mut keys: Vec<Key> = Vec::new();
    while let Ok(waiting) = shared.jobs_rx.try_recv() {
        keys.push((waiting.ctx.id(), waiting.ctx.record().version));
    }
    let busy: Vec<(usize, Key)> = shared
        .executor_slots
        .iter()
        .enumerate()
        .filter_map(|(slot, s)| s.busy.lock().as_ref().map(|b| (slot, b.key)))
        .collect();
    keys.extend(busy.iter().map(|(_, key)| *key));
    let abandoned: Vec<(Key, Running)> = {
        let mut running = shared.running.lock();
        keys.into_iter()
            .filter_map(|key| running.remove(&key).map(|r| (key, r)))
            .collect()
    };
    // Hand the jobs back first: once released, a late result from their executor is refused
    // by the fence, whatever the handler does when it sees its token.
    let mut transitions = Vec::with_capacity(abandoned.len());
    let mut stops = Vec::with_capacity(abandoned.len());
    for ((id, token), running) in abandoned {
        transitions.push(Transition {
            id,
            worker: shared.worker.clone(),
            token,
            finish: Finish::Release {
                reason: "worker shutting down; handed back unfinished".to_owned(),
            },
        });
        stops.push(running.stop);
    }
    let mut released = 0;
    match shared.engine.store.finish(transitions).await {
        Ok(results) => {
            for r in &results {
                match r {
                    TransitionResult::Applied { .. } => released += 1,
                    TransitionResult::Conflict { reason, .. } => {
                        tracing::debug!(%reason, "a job could not be released at shutdown: it is no longer this worker's");
                    }
                }
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not release jobs at shutdown; their leases will expire and they will be delivered again");
        }
    }
    // Tell the handlers to stop; give them a moment to clean up, then drop them.
    for stop in &stops {
        stop.fire(stop::SHUTDOWN);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    let still_busy = |slot: usize, key: Key| {
        shared
            .executor_slots
            .get(slot)
            .is_some_and(|s| s.busy.lock().as_ref().is_some_and(|b| b.key == key))
    };
    while busy.iter().any(|(slot, key)| still_busy(*slot, *key))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let executors = shared.executors.lock();
    for (slot, key) in &busy {
        if still_busy(*slot, *key) {
            if let Some(executor) = executors.get(*slot) {
                executor.abort();
            }
        }
    }
    released
}

/// Back-off for a failing backend: 50 ms doubling to 5 s, with jitter.
fn backend_backoff(failures: u32) -> Duration {
    let ceiling = Duration::from_millis(50).saturating_mul(1 << failures.min(7));
    let ceiling = ceiling.min(Duration::from_secs(5));
    ceiling / 2 + Duration::from_micros(fastrand::u64(0..=(ceiling.as_micros() as u64 / 2)))
}

async fn fetch_loop(shared: Arc<PoolShared>) {
    let engine = Arc::clone(&shared.engine);
    let mut failures = 0u32;
    let batch = shared.config.batch_size;
    loop {
        let first = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            permit = Arc::clone(&shared.slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let mut permits = vec![first];
        while permits.len() < batch {
            match Arc::clone(&shared.slots).try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let req = Reserve {
            worker: &shared.worker,
            queues: &shared.config.queues,
            max: permits.len(),
            lease: shared.config.lease,
            wait: shared.config.poll_wait,
        };
        // Reserve and claim in one step. A shutdown lets a claim under way land (a store's
        // claim waits for work at most the poll wait) and starts what it took like any
        // claim, so the shutdown's own hand-back covers it: nothing is left to a store's
        // hand-back racing the process's exit.
        let claim = engine.store.claim_due(&req);
        tokio::pin!(claim);
        let claims = tokio::select! {
            biased;
            r = &mut claim => r,
            () = shared.stop.cancelled() => {
                let landing = shared.config.poll_wait.saturating_add(Duration::from_secs(5));
                if let Ok(Ok(claims)) = tokio::time::timeout(landing, &mut claim).await {
                    start_claims(&shared, claims, permits);
                }
                break;
            }
        };
        match claims {
            Ok(claims) => {
                if failures > 0 {
                    tracing::info!(worker = %shared.worker, "store reachable again");
                }
                failures = 0;
                start_claims(&shared, claims, permits);
            }
            Err(err) => {
                failures += 1;
                let pause = backend_backoff(failures);
                tracing::warn!(worker = %shared.worker, error = %err, ?pause, "claim failed; backing off");
                tokio::select! {
                    () = shared.stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// Register what a claim took and hand it to the executors, each job with one of `permits`.
/// Each claim is keyed by its token, the record's version as the claim returned it.
fn start_claims(
    shared: &Arc<PoolShared>,
    claims: Vec<Claim>,
    mut permits: Vec<OwnedSemaphorePermit>,
) {
    let mut assigned = Vec::with_capacity(claims.len());
    {
        let mut running = shared.running.lock();
        for claim in claims {
            let record = match claim {
                Claim::Claimed(record) => record,
                Claim::Exhausted { id, reason } => {
                    tracing::warn!(job_id = %id, %reason, "dead: worker lost with no attempts left");
                    continue;
                }
                Claim::Cancelled { id, reason } => {
                    tracing::info!(job_id = %id, %reason, "cancelled: its worker was lost after a cancel request");
                    continue;
                }
                Claim::NotDue { .. } | Claim::Skipped { .. } => continue,
            };
            let Some(permit) = permits.pop() else {
                // claim_due answers at most `max` (= permits); the lease will expire and the
                // job will be taken over.
                tracing::error!(job_id = %record.id, "more claims than asked for; leaving the job to its lease");
                continue;
            };
            let stop = StopSignal::new();
            running.insert(
                (record.id, record.version),
                Running {
                    attempt: record.attempt,
                    stop: stop.clone(),
                },
            );
            let idempotent = shared
                .engine
                .kinds
                .get(&record.kind)
                .is_some_and(KindConfig::is_idempotent);
            let ctx = JobContext::new(
                record,
                shared.worker.clone(),
                Arc::clone(&shared.engine.memory),
                stop.token.clone(),
            )
            .with_idempotent(idempotent);
            assigned.push(Assigned { ctx, permit, stop });
        }
    }
    for job in assigned {
        // Never full: every job holds one of `concurrency` slots, and the channel has room
        // for as many. Closed only at shutdown, after the fetcher stopped.
        if let Err(err) = shared.jobs_tx.try_send(job) {
            let job = err.into_inner();
            tracing::error!(job_id = %job.ctx.id(), "no executor took the job; its lease will expire and it will be delivered again");
            shared
                .running
                .lock()
                .remove(&(job.ctx.id(), job.ctx.record().version));
        }
    }
}

/// One executor: runs claimed jobs one at a time until the pool closes its channel, or until
/// the watchdog gives its slot to a new executor (this one was stuck in a handler).
async fn executor_loop(
    shared: Arc<PoolShared>,
    slot: usize,
    generation: u64,
    done_tx: mpsc::UnboundedSender<Done>,
) {
    let Some(me) = shared.executor_slots.get(slot) else {
        return;
    };
    while let Ok(job) = shared.jobs_rx.recv().await {
        let Assigned { ctx, permit, stop } = job;
        let record = ctx.record();
        let timeout = shared.timeout_for(record);
        let started = Instant::now();
        let key = (record.id, record.version);
        *me.busy.lock() = Some(Busy {
            key,
            kind: record.kind.clone(),
            started,
            recover_at: timeout
                .and_then(|t| started.checked_add(t.saturating_add(shared.config.timeout_grace))),
            attempt: record.attempt,
            max_attempts: record.max_attempts,
            timeout,
        });
        let span =
            tracing::info_span!("job", id = %ctx.id(), kind = %ctx.kind(), attempt = ctx.attempt());
        let (id, kind, attempt, max_attempts) = (
            record.id,
            record.kind.clone(),
            record.attempt,
            record.max_attempts,
        );
        let done = AssertUnwindSafe(run_job(&shared, ctx, stop, timeout))
            .catch_unwind()
            .instrument(span)
            .await
            .unwrap_or_else(|panic| {
                // A fault of the engine's own after the handler ran: the attempt fails like a
                // panicking handler's would, and the executor lives on.
                let message = panic_message(&*panic);
                tracing::error!(job_id = %id, %message, "the worker failed running a job; the attempt fails");
                let outcome = Outcome::Retry {
                    error: JobError::retryable(format!("the worker failed running the job: {message}"))
                        .with_class("panic"),
                    after: None,
                };
                let finish = finish_for(
                    &outcome,
                    stop::NONE,
                    attempt,
                    max_attempts,
                    shared.engine.retry_for(&kind),
                )
                .map(|(finish, _)| finish);
                Done {
                    key,
                    transition: finish.map(|finish| Transition {
                        id,
                        worker: shared.worker.clone(),
                        token: key.1,
                        finish,
                    }),
                    attempt,
                    record: None,
                }
            });
        {
            let mut busy = me.busy.lock();
            if me.generation.load(Ordering::Acquire) != generation {
                // The watchdog failed this job and gave the slot to a new executor while this
                // one was stuck: its result is not wanted, and its permit is the new one's.
                drop(busy);
                permit.forget();
                return;
            }
            *busy = None;
        }
        let _ = done_tx.send(done);
        drop(permit);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".to_owned())
}

async fn run_job(
    shared: &PoolShared,
    ctx: JobContext,
    stop: StopSignal,
    timeout: Option<Duration>,
) -> Done {
    let engine = &shared.engine;
    let record = ctx.record();
    let id = record.id;
    let token = record.version;
    let attempt = record.attempt;
    let max_attempts = record.max_attempts;
    let kind_name = record.kind.clone();
    let kind = engine.kinds.get(&record.kind);
    let strategy = engine.strategy_for(record);
    let strategy_name = strategy.name().to_owned();
    let started = Instant::now();
    let outcome = match kind {
        None => Outcome::Retry {
            error: JobError::retryable(format!(
                "no handler for kind `{kind_name}` on worker {}; it will be retried in case a worker that has one takes it",
                shared.worker
            ))
            .with_class("unknown_kind"),
            after: None,
        },
        Some(kind) => {
            let run = AssertUnwindSafe(strategy.run(&ctx, kind.handler.as_ref())).catch_unwind();
            let result = match timeout {
                Some(limit) => match tokio::time::timeout(limit, run).await {
                    Ok(r) => r,
                    Err(_) => Ok(Outcome::from_result(Err(JobError::timeout(limit)))),
                },
                None => run.await,
            };
            match result {
                Ok(outcome) => outcome,
                Err(panic) => Outcome::Retry {
                    error: JobError::retryable(format!(
                        "handler panicked: {}",
                        panic_message(&*panic)
                    ))
                    .with_class("panic"),
                    after: None,
                },
            }
        }
    };
    let duration = started.elapsed();
    let why = stop.why();
    let mapped = finish_for(
        &outcome,
        why,
        attempt,
        max_attempts,
        engine.retry_for(&kind_name),
    );
    let record = shared.config.record_executions.then(|| ExecutionRecord {
        job_id: id,
        kind: kind_name,
        strategy: strategy_name,
        outcome: mapped
            .as_ref()
            .map_or(OutcomeClass::Cancelled, |(_, class)| *class),
        duration,
        attempt,
        inline_retries: ctx.inline_retries(),
        error_class: outcome.error_class().map(str::to_owned),
        at: Utc::now(),
        decision: ctx.decision(),
    });
    Done {
        key: (id, token),
        transition: mapped.map(|(finish, _)| Transition {
            id,
            worker: shared.worker.clone(),
            token,
            finish,
        }),
        attempt,
        record,
    }
}

/// Where an attempt's outcome takes its job, and how the execution is recorded; `None`
/// when there is nothing to report: the handler stopped because the claim was lost or the
/// pool handed the job back at shutdown (`why` says why its token fired, see [`stop`]).
///
/// A retry after the attempts are spent is dead; delays asked for (a retry's `after`, a
/// deferral) are clamped to [`MAX_DELAY`](crate::job::MAX_DELAY).
fn finish_for(
    outcome: &Outcome,
    why: u8,
    attempt: u32,
    max_attempts: u32,
    retry: RetryPolicy,
) -> Option<(Finish, OutcomeClass)> {
    Some(match outcome {
        Outcome::Succeeded(value) => {
            let result = if value.is_null() {
                None
            } else {
                Payload::from_value(value).ok()
            };
            (Finish::Succeeded { result }, OutcomeClass::Succeeded)
        }
        Outcome::Retry { error, after } => {
            if attempt >= max_attempts {
                (
                    Finish::Dead {
                        error: format!("{error} (attempts exhausted: {attempt} of {max_attempts})"),
                    },
                    OutcomeClass::Failed,
                )
            } else {
                (
                    Finish::Retry {
                        delay: clamp_delay(after.unwrap_or_else(|| retry.delay(attempt))),
                        error: error.to_string(),
                    },
                    OutcomeClass::Retried,
                )
            }
        }
        Outcome::Failed(error) => (
            Finish::Dead {
                error: error.to_string(),
            },
            OutcomeClass::Failed,
        ),
        Outcome::Deferred { after, reason, .. } => (
            Finish::Defer {
                delay: clamp_delay(*after),
                reason: reason.clone(),
            },
            OutcomeClass::Deferred,
        ),
        // Only a cancel request (or the handler's own decision) ends a job cancelled: a
        // handler stopped by a lost lease or a shutdown reports nothing.
        Outcome::Cancelled(_) if why == stop::LEASE_LOST || why == stop::SHUTDOWN => return None,
        Outcome::Cancelled(reason) => (
            Finish::Cancelled {
                reason: reason.clone(),
            },
            OutcomeClass::Cancelled,
        ),
    })
}

/// Settle finished attempts in batches. A batch the store cannot take now is kept and tried
/// again (with later results added) until the store answers: the jobs stay in the running
/// set meanwhile, so their heartbeats go on and their leases hold. A result is given up only
/// when the store says the claim no longer holds its job.
async fn finish_loop(
    shared: Arc<PoolShared>,
    mut rx: mpsc::UnboundedReceiver<Done>,
    record_tx: mpsc::Sender<Vec<ExecutionRecord>>,
) {
    let engine = Arc::clone(&shared.engine);
    let max = shared.config.batch_size.max(1);
    let mut pending: Vec<Done> = Vec::with_capacity(max);
    let mut failures = 0u32;
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(done) => pending.push(done),
                None => break,
            }
        }
        while pending.len() < max {
            match rx.try_recv() {
                Ok(done) => pending.push(done),
                Err(_) => break,
            }
        }
        // Results with nothing to report, and those of claims this pool gave up (handed back
        // at shutdown, or failed by the watchdog), leave without a round trip.
        let mut records = Vec::new();
        let mut batch: Vec<Done> = Vec::with_capacity(pending.len());
        {
            let mut running = shared.running.lock();
            for done in pending.drain(..) {
                let held = running.contains_key(&done.key);
                if done.transition.is_none() || !held {
                    running.remove(&done.key);
                    records.extend(done.record);
                } else {
                    batch.push(done);
                }
            }
        }
        if !batch.is_empty() {
            let transitions: Vec<Transition> =
                batch.iter().filter_map(|d| d.transition.clone()).collect();
            match engine.store.finish(transitions).await {
                Ok(results) if results.len() == batch.len() => {
                    if failures > 0 {
                        tracing::info!(worker = %shared.worker, "finished jobs accepted again");
                        failures = 0;
                    }
                    apply_finishes(&shared, batch, results, &mut records);
                }
                Ok(results) => {
                    tracing::error!(
                        expected = batch.len(),
                        got = results.len(),
                        "state store answered a finish batch with the wrong count; trying again"
                    );
                    pending = batch;
                    failures += 1;
                    tokio::time::sleep(backend_backoff(failures)).await;
                }
                Err(err) => {
                    failures += 1;
                    if shared
                        .give_up_at
                        .lock()
                        .is_some_and(|at| Instant::now() >= at)
                    {
                        tracing::error!(error = %err, jobs = batch.len(), "the pool stopped and the store still refuses finishes: the jobs' leases will expire and they will run again");
                        let lost = batch.iter().filter(|d| d.record.is_some()).count();
                        shared
                            .records_dropped
                            .fetch_add(lost as u64, Ordering::Relaxed);
                        break;
                    }
                    let pause = backend_backoff(failures).min(Duration::from_secs(1));
                    tracing::warn!(error = %err, jobs = batch.len(), ?pause, "finish failed; keeping the results and their leases, and trying again");
                    pending = batch;
                    tokio::time::sleep(pause).await;
                }
            }
        }
        if !records.is_empty() {
            if let Err(full) = record_tx.try_send(records) {
                let lost = match full {
                    mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => {
                        r.len()
                    }
                };
                shared
                    .records_dropped
                    .fetch_add(lost as u64, Ordering::Relaxed);
            }
        }
    }
}

/// The store's answers to a finish batch: the running set, and the execution records.
fn apply_finishes(
    shared: &PoolShared,
    batch: Vec<Done>,
    results: Vec<TransitionResult>,
    records: &mut Vec<ExecutionRecord>,
) {
    {
        let mut running = shared.running.lock();
        for done in &batch {
            running.remove(&done.key);
        }
    }
    for (done, result) in batch.into_iter().zip(results) {
        let Done {
            transition,
            attempt,
            record,
            ..
        } = done;
        let Some(transition) = transition else {
            continue;
        };
        match result {
            TransitionResult::Applied { state, .. } => {
                log_transition(&transition, attempt, state);
                if let Some(mut record) = record {
                    if state == JobState::Cancelled {
                        record.outcome = OutcomeClass::Cancelled;
                    }
                    records.push(record);
                }
            }
            TransitionResult::Conflict { current, reason } => {
                tracing::debug!(job_id = %transition.id, ?current, %reason, "finish refused (lease taken over or job released); result discarded");
                // The handler ran all the same: its execution is part of the history.
                records.extend(record);
            }
        }
    }
}

fn log_transition(transition: &Transition, attempt: u32, state: JobState) {
    match &transition.finish {
        Finish::Dead { error } => {
            tracing::warn!(job_id = %transition.id, attempt, %error, "job dead");
        }
        Finish::Retry { error, delay } => {
            tracing::debug!(job_id = %transition.id, attempt, %error, ?delay, "job will retry");
        }
        _ => {
            tracing::debug!(job_id = %transition.id, attempt, to = %state, "job finished")
        }
    }
}

/// How long a stopping pool keeps trying to finish the jobs it ran.
const SHUTDOWN_FINISH_GRACE: Duration = Duration::from_secs(10);

/// Most execution records held while the memory's store refuses them; past it the oldest
/// go, counted in [`ShutdownReport::records_dropped`].
const MAX_HELD_RECORDS: usize = 100_000;

/// How long a stopping pool keeps trying to write the execution records it holds.
const RECORD_GRACE: Duration = Duration::from_secs(3);

/// Write execution records to the memory in batches. A batch the store refuses is kept and
/// tried again with backoff (later records join it, up to [`MAX_HELD_RECORDS`]); what has to
/// go is counted, never dropped quietly. Once the pool stops sending, what is held is tried
/// for [`RECORD_GRACE`] more.
async fn record_loop(shared: Arc<PoolShared>, mut rx: mpsc::Receiver<Vec<ExecutionRecord>>) {
    let memory = Arc::clone(&shared.engine.memory);
    let mut held: Vec<ExecutionRecord> = Vec::new();
    let mut failures = 0u32;
    let mut closed_at: Option<Instant> = None;
    let mut open = true;
    loop {
        if held.is_empty() {
            match rx.recv().await {
                Some(batch) => held = batch,
                None => return,
            }
        }
        while open && held.len() < 4096 {
            match rx.try_recv() {
                Ok(more) => held.extend(more),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let err = match memory.record(&held).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(records = held.len(), "execution records written again");
                }
                failures = 0;
                held.clear();
                continue;
            }
            Err(err) => err,
        };
        failures += 1;
        if held.len() > MAX_HELD_RECORDS {
            let excess = held.len() - MAX_HELD_RECORDS;
            held.drain(..excess);
            shared
                .records_dropped
                .fetch_add(excess as u64, Ordering::Relaxed);
        }
        if !open {
            if closed_at.get_or_insert_with(Instant::now).elapsed() >= RECORD_GRACE {
                tracing::error!(error = %err, records = held.len(), "could not record executions before the pool stopped; they are lost");
                shared
                    .records_dropped
                    .fetch_add(held.len() as u64, Ordering::Relaxed);
                return;
            }
            tokio::time::sleep(backend_backoff(failures).min(Duration::from_millis(500))).await;
            continue;
        }
        let pause = backend_backoff(failures);
        tracing::warn!(error = %err, records = held.len(), ?pause, "could not record executions; keeping them and trying again");
        // Wait out the pause, still taking what comes (and noticing the pool stop).
        let wake = tokio::time::sleep(pause);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                () = &mut wake => break,
                more = rx.recv() => match more {
                    Some(more) => held.extend(more),
                    None => {
                        open = false;
                        break;
                    }
                },
            }
        }
    }
}

/// Extend the leases of every claim held, every third of a lease; a heartbeat that fails is
/// tried again soon, not a third of a lease later. Each answer is applied to the claim it is
/// about, so an answer about an earlier attempt never reaches a later one.
async fn heartbeat_loop(shared: Arc<PoolShared>) {
    let every = shared.config.lease / 3;
    let engine = Arc::clone(&shared.engine);
    let mut failures = 0u32;
    loop {
        let pause = if failures == 0 {
            every
        } else {
            backend_backoff(failures).min(every / 2)
        };
        tokio::time::sleep(pause).await;
        let held: Vec<Held> = shared
            .running
            .lock()
            .keys()
            .map(|&(id, token)| Held { id, token })
            .collect();
        if held.is_empty() {
            failures = 0;
            continue;
        }
        let state = match engine.store.heartbeat(&held, shared.config.lease).await {
            Ok(state) if state.len() == held.len() => state,
            Ok(_) => {
                tracing::error!(
                    "the store answered a heartbeat with the wrong count; trying again"
                );
                failures += 1;
                continue;
            }
            Err(err) => {
                failures += 1;
                tracing::warn!(error = %err, jobs = held.len(), "heartbeat failed; trying again soon");
                continue;
            }
        };
        failures = 0;
        let running = shared.running.lock();
        for (h, beat) in held.iter().zip(state) {
            let Some(job) = running.get(&(h.id, h.token)) else {
                continue;
            };
            match beat {
                Heartbeat::Held {
                    cancel_requested: true,
                } => {
                    if !job.stop.token.is_cancelled() {
                        tracing::info!(job_id = %h.id, "cancel requested; signalling the handler");
                    }
                    job.stop.fire(stop::CANCEL_REQUESTED);
                }
                Heartbeat::Held { .. } => {}
                Heartbeat::Lost => {
                    if !job.stop.token.is_cancelled() {
                        tracing::warn!(job_id = %h.id, attempt = job.attempt, "lease lost; abandoning the attempt");
                    }
                    job.stop.fire(stop::LEASE_LOST);
                }
            }
        }
    }
}

/// A thread of the pool's own that watches what its tasks cannot: an executor stuck in a
/// handler past its deadline (its slot is recovered), and a runtime that stopped running
/// tasks (a handler blocks the thread; logged with the jobs running longest).
struct Watchdog {
    stop_tx: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    fn start(shared: &Arc<PoolShared>) -> Option<Self> {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let weak = Arc::downgrade(shared);
        let spawned = std::thread::Builder::new()
            .name(format!("jobforge-watchdog-{}", shared.worker))
            .spawn(move || watch(&weak, &stop_rx));
        match spawned {
            Ok(_) => Some(Self { stop_tx }),
            Err(err) => {
                tracing::warn!(error = %err, "could not start the worker pool's watchdog thread; stuck handlers will not be detected");
                None
            }
        }
    }

    fn stop(self) {
        let _ = self.stop_tx.send(());
    }
}

fn watch(weak: &std::sync::Weak<PoolShared>, stop_rx: &std::sync::mpsc::Receiver<()>) {
    let tick = Duration::from_millis(250);
    // A task posted to the runtime each tick; while one has not run, the runtime is stalled.
    let ran = Arc::new(AtomicBool::new(true));
    let mut posted_at = Instant::now();
    let mut warned = false;
    loop {
        match stop_rx.recv_timeout(tick) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let Some(shared) = weak.upgrade() else { return };
        if shared.is_stopping() && shared.jobs_tx.is_closed() {
            return;
        }
        recover_stuck(&shared);
        if ran.load(Ordering::Acquire) {
            if warned {
                tracing::info!(worker = %shared.worker, stalled = ?posted_at.elapsed(), "the runtime runs tasks again");
                warned = false;
            }
            ran.store(false, Ordering::Release);
            posted_at = Instant::now();
            let flag = Arc::clone(&ran);
            drop(shared.runtime.spawn(async move {
                flag.store(true, Ordering::Release);
            }));
        } else if !warned && posted_at.elapsed() >= shared.config.stall_threshold {
            warned = true;
            let mut longest: Vec<(Duration, JobId, String)> = shared
                .executor_slots
                .iter()
                .filter_map(|s| {
                    s.busy
                        .lock()
                        .as_ref()
                        .map(|b| (b.started.elapsed(), b.key.0, b.kind.clone()))
                })
                .collect();
            longest.sort_by_key(|b| std::cmp::Reverse(b.0));
            longest.truncate(3);
            let jobs: Vec<String> = longest
                .iter()
                .map(|(d, id, kind)| format!("{id} ({kind}, running {d:?})"))
                .collect();
            tracing::error!(
                worker = %shared.worker,
                stalled = ?posted_at.elapsed(),
                running_longest = %jobs.join(", "),
                "the runtime has not run a task for a while: a handler is blocking its thread (use spawn_blocking for synchronous work)"
            );
        }
    }
}

/// Fail the attempts whose handlers are still running past their deadline and grace, and
/// give their slots to new executors, so the pool keeps its concurrency.
fn recover_stuck(shared: &Arc<PoolShared>) {
    let now = Instant::now();
    for (slot, s) in shared.executor_slots.iter().enumerate() {
        let stuck = {
            let mut busy = s.busy.lock();
            let overdue = busy
                .as_ref()
                .is_some_and(|b| b.recover_at.is_some_and(|at| at <= now));
            if !overdue {
                continue;
            }
            s.generation.fetch_add(1, Ordering::AcqRel);
            busy.take()
        };
        let Some(stuck) = stuck else { continue };
        let Some(done_tx) = shared.done_tx.lock().clone() else {
            return;
        };
        let held = shared.running.lock().contains_key(&stuck.key);
        let grace = shared.config.timeout_grace;
        let timeout = stuck.timeout.unwrap_or_default();
        tracing::error!(
            job_id = %stuck.key.0,
            kind = %stuck.kind,
            ?timeout,
            ?grace,
            "a handler did not stop after its deadline (it blocks its thread or ignores cancellation); failing the attempt and replacing its executor"
        );
        if held {
            let outcome = Outcome::Retry {
                error: JobError::retryable(format!(
                    "attempt timed out after {timeout:?} and its handler did not stop within {grace:?} more (it blocks its thread or ignores cancellation)"
                ))
                .with_class("timeout"),
                after: None,
            };
            let finish = finish_for(
                &outcome,
                stop::NONE,
                stuck.attempt,
                stuck.max_attempts,
                shared.engine.retry_for(&stuck.kind),
            )
            .map(|(finish, _)| finish);
            let _ = done_tx.send(Done {
                key: stuck.key,
                transition: finish.map(|finish| Transition {
                    id: stuck.key.0,
                    worker: shared.worker.clone(),
                    token: stuck.key.1,
                    finish,
                }),
                attempt: stuck.attempt,
                record: None,
            });
        }
        if let Some(r) = shared.running.lock().get(&stuck.key) {
            r.stop.fire(stop::LEASE_LOST);
        }
        // The stuck executor keeps its permit until it returns (then forgets it): this one
        // is the new executor's.
        shared.slots.add_permits(1);
        let generation = s.generation.load(Ordering::Acquire);
        let handle =
            shared
                .runtime
                .spawn(executor_loop(Arc::clone(shared), slot, generation, done_tx));
        if let Some(old) = shared.executors.lock().get_mut(slot) {
            *old = handle;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(3).with_base(Duration::from_millis(10))
    }

    #[test]
    fn a_handler_stopped_by_a_lost_lease_or_a_shutdown_reports_nothing() {
        let cancelled = Outcome::Cancelled("stopped".to_owned());
        assert!(finish_for(&cancelled, stop::LEASE_LOST, 1, 3, policy()).is_none());
        assert!(finish_for(&cancelled, stop::SHUTDOWN, 1, 3, policy()).is_none());
        for why in [stop::CANCEL_REQUESTED, stop::NONE] {
            assert!(matches!(
                finish_for(&cancelled, why, 1, 3, policy()),
                Some((Finish::Cancelled { .. }, OutcomeClass::Cancelled))
            ));
        }
    }

    #[test]
    fn absurd_delays_are_clamped() {
        let retry = Outcome::Retry {
            error: JobError::retryable("later"),
            after: Some(Duration::MAX),
        };
        let Some((Finish::Retry { delay, .. }, _)) = finish_for(&retry, stop::NONE, 1, 3, policy())
        else {
            panic!("a retry");
        };
        assert_eq!(delay, crate::job::MAX_DELAY);
        let defer = Outcome::Deferred {
            after: Duration::MAX,
            reason: "breaker open".to_owned(),
            class: "circuit_open".into(),
        };
        let Some((Finish::Defer { delay, .. }, _)) = finish_for(&defer, stop::NONE, 1, 3, policy())
        else {
            panic!("a deferral");
        };
        assert_eq!(delay, crate::job::MAX_DELAY);
    }

    #[test]
    fn a_retry_on_the_last_attempt_is_dead() {
        let retry = Outcome::Retry {
            error: JobError::retryable("boom"),
            after: None,
        };
        assert!(matches!(
            finish_for(&retry, stop::NONE, 3, 3, policy()),
            Some((Finish::Dead { .. }, OutcomeClass::Failed))
        ));
        assert!(matches!(
            finish_for(&retry, stop::NONE, 2, 3, policy()),
            Some((Finish::Retry { .. }, OutcomeClass::Retried))
        ));
    }
}
