//! The worker pool: [`WorkerPool`] and the state its tasks share, the claims it holds and
//! how a shutdown hands back what it could not finish. The tasks themselves live in the
//! submodules: the fetcher ([`fetch`]), the executors ([`execute`]), the finisher
//! ([`finish`]), the recorder ([`record`]), the heartbeat ([`heartbeat`]) and the watchdog
//! ([`watchdog`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, RwLock, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, Orchestrator};
use super::kind::KindConfig;
use super::running::{StopSignal, stop};
use crate::handler::JobContext;
use crate::job::{JobId, JobRecord, WorkerId};
use crate::memory::ExecutionRecord;
use crate::state::{Finish, Transition, TransitionResult};
use crate::{Error, ErrorKind, Result};

mod config;
mod execute;
mod fetch;
mod finish;
mod heartbeat;
mod paused;
mod record;
mod watchdog;

pub use config::WorkerConfig;
use execute::executor_loop;
use fetch::fetch_loop;
use finish::{SHUTDOWN_FINISH_GRACE, finish_loop};
use heartbeat::heartbeat_loop;
use paused::paused_loop;
use record::record_loop;
use watchdog::Watchdog;

/// What a shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Whether every running job finished within the grace period.
    pub drained: bool,
    /// Jobs handed back to the queue (attempt not spent): claimed ahead and not started yet
    /// (see [`WorkerConfig::prefetch`]), or still running at the deadline.
    pub released: usize,
    /// Execution records the memory never got: the recorder fell behind, or the memory's
    /// store refused them for longer than they could be held.
    pub records_dropped: u64,
}

/// A claim: the job and the token its claim returned (see
/// [`Held`](crate::state::Held)). A pool may hold two claims of one job at once (the finish
/// of an attempt whose lease expired, and a new attempt), so running jobs are keyed by
/// claim, not by job.
type Key = (JobId, u64);

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
    /// The job's record (its kind, for the watchdog's report and retry policy).
    job: crate::handler::SharedRecord,
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

struct PoolShared {
    engine: Arc<Engine>,
    worker: WorkerId,
    config: WorkerConfig,
    stop: CancellationToken,
    /// One permit per claim the pool may hold unfinished: running or buffered
    /// ([`WorkerConfig::capacity`]). A claim takes one per job; an executor gives it back
    /// when the job is done.
    slots: Arc<Semaphore>,
    /// Woken when the executors may run short of jobs (the finisher has nothing to settle
    /// and so claims nothing): the fetcher looks again.
    kick: Notify,
    /// The finisher waits for results: it holds nothing to settle and claims nothing.
    finisher_idle: AtomicBool,
    /// Results sent to the finisher that it has not taken yet.
    unsettled: AtomicUsize,
    /// How long a job runs, microseconds (a moving average; 0 until one ran).
    job_micros: AtomicU64,
    /// How long a finish-and-claim round trip takes, microseconds (a moving average).
    trip_micros: AtomicU64,
    /// Held (shared) by the finisher while a claim of its own is under way; a shutdown takes
    /// it to let such a claim land before handing back the buffer.
    claiming: RwLock<()>,
    /// Claims held by this pool: running, or finished and awaiting the finisher (heartbeats
    /// go on for both). Added a claim batch at a time, removed a finish batch at a time.
    running: parking_lot::Mutex<HashMap<Key, Running, foldhash::fast::RandomState>>,
    /// Claimed jobs for the executors: the local buffer (bounded by the capacity; a slot is
    /// taken first).
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
    /// The configured queues that are not paused (see `paused.rs`).
    active_queues: parking_lot::RwLock<Arc<[String]>>,
    /// Whether the paused queues were read once: the fetcher's first claim waits for it.
    queues_known: AtomicBool,
    /// Bumped when `active_queues` changes: a claim waiting for work with the old queues
    /// stops waiting.
    queues_epoch: tokio::sync::watch::Sender<u64>,
}

impl PoolShared {
    /// The attempt's deadline: the job's own, else its kind's (`kind`, looked up by the
    /// caller once per job), else the pool's default.
    fn timeout_for(&self, record: &JobRecord, kind: Option<&KindConfig>) -> Option<Duration> {
        record
            .timeout
            .or_else(|| kind.and_then(|k| k.timeout))
            .or(self.config.default_timeout)
    }

    fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// What the fetcher should do now, holding the slot it would claim with (it counts in
    /// what the pool holds). It claims when the executors may run short with no claim on
    /// its way to them: the pool holds no more jobs than it means to, the finisher (whose
    /// round trips claim for the slots its results free) has no result to settle, and
    /// nothing waits in the buffer. When only jobs in the buffer stand in the way, the pool
    /// is filling up and it looks again soon; otherwise when kicked.
    fn fetcher_step(&self) -> FetcherStep {
        let (held, target) = self.held_and_target();
        if held > target
            || self.unsettled.load(Ordering::Acquire) != 0
            || !self.finisher_idle.load(Ordering::Acquire)
        {
            FetcherStep::Wait
        } else if self.jobs_rx.is_empty() {
            FetcherStep::Claim
        } else {
            FetcherStep::Filling
        }
    }

    /// How many jobs to keep buffered ahead of the slots: as many as the slots finish in two
    /// round trips, at most the configured bound; none until a job has run.
    fn target_prefetch(&self) -> usize {
        let job = self.job_micros.load(Ordering::Relaxed);
        if job == 0 {
            return 0;
        }
        let trip = self.trip_micros.load(Ordering::Relaxed).max(1);
        let jobs = (self.config.concurrency as u128).saturating_mul(2 * u128::from(trip))
            / u128::from(job);
        usize::try_from(jobs)
            .unwrap_or(usize::MAX)
            .min(self.config.max_prefetch())
    }

    /// How many jobs the pool holds (running and buffered: the slots taken), and how many it
    /// means to: the concurrency plus the buffer's target.
    fn held_and_target(&self) -> (usize, usize) {
        let held = self
            .config
            .capacity()
            .saturating_sub(self.slots.available_permits());
        let target = self
            .config
            .concurrency
            .saturating_add(self.target_prefetch());
        (held, target)
    }

    /// How many more jobs to claim now, at most `max`.
    fn claim_size(&self, max: usize) -> usize {
        let (held, target) = self.held_and_target();
        target.saturating_sub(held).min(max)
    }

    /// Hand an attempt's result to the finisher.
    fn send_done(&self, tx: &mpsc::UnboundedSender<Done>, done: Done) {
        self.unsettled.fetch_add(1, Ordering::AcqRel);
        if tx.send(done).is_err() {
            self.unsettled.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// See [`PoolShared::fetcher_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetcherStep {
    /// Claim now, waiting for work if there is none.
    Claim,
    /// The pool is filling up: look again in a moment.
    Filling,
    /// Look again when kicked (or after the poll wait).
    Wait,
}

/// Fold `sample` into the moving average `avg` (one eighth of the way; races between
/// writers lose a sample, which an average can afford).
fn note(avg: &AtomicU64, sample: Duration) {
    let sample = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX).max(1);
    let old = avg.load(Ordering::Relaxed);
    let new = if old == 0 {
        sample
    } else {
        (old - old / 8).saturating_add(sample / 8)
    };
    avg.store(new.max(1), Ordering::Relaxed);
}

impl Drop for PoolShared {
    /// A pool gone for good lets go of its name, and takes what claims it still holds out
    /// of the engine's registry (a finisher that gave up on the store leaves some; so does
    /// a runtime shut down under a running pool).
    fn drop(&mut self) {
        self.stop.cancel();
        let running = self.running.get_mut();
        if !running.is_empty() {
            self.engine.running.remove(running.keys().copied());
        }
    }
}

/// A running pool of workers. Stop it with [`WorkerPool::shutdown`]; dropping it stops
/// reserving new jobs but does not wait.
pub struct WorkerPool {
    shared: Arc<PoolShared>,
    fetcher: Option<JoinHandle<()>>,
    finisher: Option<JoinHandle<()>>,
    heartbeat: Option<JoinHandle<()>>,
    paused: Option<JoinHandle<()>>,
    recorder: Option<JoinHandle<()>>,
    scheduler: Option<JoinHandle<()>>,
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

impl Orchestrator {
    /// Start a worker pool on the current Tokio runtime. Several pools (in this process or
    /// others) can share the same backends.
    pub fn start_workers(&self, config: WorkerConfig) -> Result<WorkerPool> {
        WorkerPool::start(Arc::clone(self.engine()), config)
    }
}

impl WorkerPool {
    fn start(engine: Arc<Engine>, config: WorkerConfig) -> Result<Self> {
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
        let capacity = config.capacity();
        let (jobs_tx, jobs_rx) = async_channel::bounded(capacity);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(PoolShared {
            engine: Arc::clone(&engine),
            worker,
            slots: Arc::new(Semaphore::new(capacity)),
            kick: Notify::new(),
            finisher_idle: AtomicBool::new(true),
            unsettled: AtomicUsize::new(0),
            job_micros: AtomicU64::new(0),
            trip_micros: AtomicU64::new(0),
            claiming: RwLock::new(()),
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
            active_queues: parking_lot::RwLock::new(Arc::from(Vec::new())),
            queues_known: AtomicBool::new(false),
            queues_epoch: tokio::sync::watch::Sender::new(0),
        });
        *shared.active_queues.write() = shared.config.queues.clone().into();
        // One name, one pool: two pools of this process under one worker id would read
        // as one worker in every job's history.
        if !engine.running.add_pool(&shared.worker, &shared.stop) {
            return Err(Error::invalid_input(
                "worker_id",
                format!(
                    "a worker pool named `{}` already runs in this process; give each pool its own id (or leave it unset for a unique one)",
                    shared.worker
                ),
            ));
        }
        let (record_tx, record_rx) = mpsc::channel::<Vec<ExecutionRecord>>(256);
        let recorder = runtime.spawn(record_loop(Arc::clone(&shared), record_rx));
        let finisher = runtime.spawn(finish_loop(Arc::clone(&shared), done_rx, record_tx));
        let heartbeat = runtime.spawn(heartbeat_loop(Arc::clone(&shared)));
        let paused = runtime.spawn(paused_loop(Arc::clone(&shared)));
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
        let scheduler = shared.config.schedules.and_then(|config| {
            let store = engine.store.schedules()?;
            Some(runtime.spawn(crate::schedule::scheduler_loop(
                Orchestrator::from_shared(Arc::clone(&engine)),
                store,
                config,
                shared.stop.clone(),
            )))
        });
        let watchdog = Watchdog::start(&shared);
        tracing::info!(worker = %shared.worker, queues = ?shared.config.queues, concurrency = shared.config.concurrency, "worker pool started");
        Ok(Self {
            shared,
            fetcher: Some(fetcher),
            finisher: Some(finisher),
            heartbeat: Some(heartbeat),
            paused: Some(paused),
            recorder: Some(recorder),
            scheduler,
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
        if let Some(scheduler) = self.scheduler.take() {
            // (a fire under way lands; a store that hangs gets 10 s)
            let _ = tokio::time::timeout(Duration::from_secs(10), scheduler).await;
        }
        if let Some(fetcher) = self.fetcher.take() {
            let _ = fetcher.await;
        }
        // A claim of the finisher's under way lands first (a store that hangs gets 10 s),
        // and none starts after: then the jobs claimed ahead and not started go back.
        let _no_more_claims =
            tokio::time::timeout(Duration::from_secs(10), shared.claiming.write()).await;
        let mut released = hand_back_buffered(&shared).await;
        let capacity = u32::try_from(shared.config.capacity()).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(grace, shared.slots.acquire_many(capacity))
            .await
            .is_ok_and(|permit| permit.is_ok());
        if !drained {
            released += hand_back_unfinished(&shared).await;
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
        if let Some(paused) = self.paused.take() {
            paused.abort();
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

/// A shutdown began: the jobs claimed ahead that no executor started go back (attempt not
/// spent), their slots free. Returns how many went back.
async fn hand_back_buffered(shared: &Arc<PoolShared>) -> usize {
    let mut waiting = Vec::new();
    while let Ok(job) = shared.jobs_rx.try_recv() {
        waiting.push(job);
    }
    if waiting.is_empty() {
        return 0;
    }
    let keys = waiting
        .iter()
        .map(|job| (job.ctx.id(), job.ctx.record().version))
        .collect();
    let (released, _) = release(
        shared,
        keys,
        "worker shutting down; handed back before it started",
    )
    .await;
    drop(waiting);
    released
}

/// Let go of the claims `keys` this pool still holds and hand their jobs back to the store,
/// due now, attempt not spent. Returns how many went back, and the stop signals of the jobs.
async fn release(shared: &PoolShared, keys: Vec<Key>, reason: &str) -> (usize, Vec<StopSignal>) {
    let abandoned: Vec<(Key, Running)> = {
        let mut running = shared.running.lock();
        let abandoned: Vec<(Key, Running)> = keys
            .into_iter()
            .filter_map(|key| running.remove(&key).map(|r| (key, r)))
            .collect();
        shared
            .engine
            .running
            .remove(abandoned.iter().map(|(key, _)| *key));
        abandoned
    };
    let mut transitions = Vec::with_capacity(abandoned.len());
    let mut stops = Vec::with_capacity(abandoned.len());
    for ((id, token), running) in abandoned {
        transitions.push(Transition {
            id,
            worker: shared.worker.clone(),
            token,
            finish: Finish::Release {
                reason: reason.to_owned(),
            },
        });
        stops.push(running.stop);
    }
    if transitions.is_empty() {
        return (0, stops);
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
    (released, stops)
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
    // Hand the jobs back first: once released, a late result from their executor is refused
    // by the fence, whatever the handler does when it sees its token.
    let (released, stops) =
        release(shared, keys, "worker shutting down; handed back unfinished").await;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use serde_json::Value;

    use crate::prelude::*;
    use crate::state::CancelOutcome;

    const WAIT: Duration = Duration::from_secs(10);

    /// A pool registers every attempt it runs in the engine's registry, a cancel reaches
    /// the attempt through it (the lease is long: no heartbeat comes in time), and nothing
    /// is left in it once the pool stopped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attempts_are_registered_while_they_run_and_gone_once_the_pool_stopped() {
        let orch = Orchestrator::builder()
            .handler("ok", |_ctx: JobContext| async { Ok(Value::Null) })
            .handler("wait", |ctx: JobContext| async move {
                ctx.cancelled().await;
                Err::<Value, _>(JobError::cancelled("stopped as asked"))
            })
            .build()
            .unwrap();
        let pool = orch
            .start_workers(
                WorkerConfig::default()
                    .poll_wait(Duration::from_millis(20))
                    .lease(Duration::from_secs(60)),
            )
            .unwrap();
        let registry = &orch.engine().running;

        let waiting = orch.submit(NewJob::new("wait")).await.unwrap().id;
        let deadline = tokio::time::Instant::now() + WAIT;
        while registry.len() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never registered");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ok = orch
            .submit_batch((0..200).map(|_| NewJob::new("ok")).collect())
            .await
            .unwrap();
        assert_eq!(
            orch.cancel(waiting).await.unwrap(),
            CancelOutcome::Requested
        );
        let cancelled = orch
            .wait_for(waiting, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(cancelled.state, JobState::Cancelled);
        for job in ok {
            let done = orch.wait_for(job.id, WAIT).await.unwrap();
            assert_eq!(done.state, JobState::Succeeded);
        }

        // Every finish settled: the pool lets go of its claims, and so does the registry
        // (while the pool lives: its drop would clear it anyway).
        let deadline = tokio::time::Instant::now() + WAIT;
        while pool.running() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "claims never let go"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(registry.len(), 0, "the registry leaks attempts that ended");

        let report = pool.shutdown(WAIT).await;
        assert!(report.drained);
        assert_eq!(registry.len(), 0);
    }

    /// A handler that runs until `gate` is notified or its job is cancelled.
    fn blocked_until(
        gate: &std::sync::Arc<tokio::sync::Notify>,
    ) -> impl Fn(
        JobContext,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Value, JobError>> + Send>,
    > + Send
    + Sync
    + 'static {
        let gate = std::sync::Arc::clone(gate);
        move |ctx: JobContext| {
            let gate = std::sync::Arc::clone(&gate);
            Box::pin(async move {
                tokio::select! {
                    () = gate.notified() => Ok(Value::Null),
                    () = ctx.cancelled() => Err(JobError::cancelled("stopped")),
                }
            })
        }
    }

    /// A pool fills every slot by claim after claim while nothing has finished yet (no
    /// result for the finisher to claim with): the fetcher does not sit out its poll wait
    /// because the last claim's jobs were still in the buffer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pool_fills_its_slots_without_waiting_out_its_poll_wait() {
        let gate = std::sync::Arc::new(tokio::sync::Notify::new());
        let orch = Orchestrator::builder()
            .handler("block", blocked_until(&gate))
            .build()
            .unwrap();
        orch.submit_batch((0..64).map(|_| NewJob::new("block")).collect())
            .await
            .unwrap();
        let poll_wait = Duration::from_secs(20);
        let pool = orch
            .start_workers(
                WorkerConfig::default()
                    .concurrency(64)
                    .batch_size(8)
                    .poll_wait(poll_wait),
            )
            .unwrap();
        let started = tokio::time::Instant::now();
        while pool.running() < 64 {
            assert!(
                started.elapsed() < poll_wait / 2,
                "{} of 64 slots filled after {:?}",
                pool.running(),
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pool.shutdown(Duration::from_millis(50)).await;
        drop(gate);
    }

    /// Short jobs give the pool a buffer of jobs claimed ahead; a shutdown hands the buffer
    /// back at once (attempts not spent) with the job still running, and counts them all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_claimed_ahead_are_handed_back_at_shutdown() {
        let gate = std::sync::Arc::new(tokio::sync::Notify::new());
        let orch = Orchestrator::builder()
            .handler("quick", |_ctx: JobContext| async { Ok(Value::Null) })
            .handler("block", blocked_until(&gate))
            .build()
            .unwrap();
        let pool = orch
            .start_workers(
                WorkerConfig::default()
                    .concurrency(1)
                    .prefetch(3)
                    .poll_wait(Duration::from_millis(20))
                    .record_executions(false),
            )
            .unwrap();
        // Short jobs: the pool has measured job and round-trip times.
        let quick = orch
            .submit_batch((0..200).map(|_| NewJob::new("quick")).collect())
            .await
            .unwrap();
        for job in &quick {
            orch.wait_for(job.id, WAIT).await.unwrap();
        }
        let block = orch.submit(NewJob::new("block")).await.unwrap().id;
        let deadline = tokio::time::Instant::now() + WAIT;
        while orch.get(block).await.unwrap().unwrap().state != JobState::Running {
            assert!(tokio::time::Instant::now() < deadline, "never started");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The buffer's target follows measured job and round-trip times, which a loaded
        // machine blurs (CI saw a target of 2): pin them to a job far shorter than a round
        // trip, so the target is the bound. Nothing finishes while `block` runs, so nothing
        // moves them again before the shutdown.
        pool.shared.job_micros.store(1, Ordering::Relaxed);
        pool.shared.trip_micros.store(1_000_000, Ordering::Relaxed);
        // A claim already waiting for work (up to the poll wait) took its size from the
        // measures before the pin, and would take fewer: the buffer is then topped up only as
        // the executor takes jobs, which it never does here (CI saw 3 held). Let that claim
        // end empty first, so the next one is sized by the pinned measures.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let waiting = orch
            .submit_batch((0..6).map(|_| NewJob::new("quick")).collect())
            .await
            .unwrap();
        // One slot, busy: the pool holds the running job and up to 3 claimed ahead.
        let deadline = tokio::time::Instant::now() + WAIT;
        while pool.running() < 4 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} held, not 4",
                pool.running()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(pool.running(), 4, "the buffer is bounded");
        let report = pool.shutdown(Duration::from_millis(100)).await;
        assert!(!report.drained);
        assert_eq!(report.released, 4, "{report:?}");
        let counts = orch.stats().await.unwrap().jobs.total;
        assert_eq!((counts.queued, counts.running), (7, 0), "{counts:?}");
        for id in waiting.iter().map(|j| j.id).chain([block]) {
            assert_eq!(orch.get(id).await.unwrap().unwrap().attempt, 0);
        }
        drop(gate);
    }
}
