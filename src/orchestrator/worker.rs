use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
use crate::job::{DEFAULT_QUEUE, JobId, JobRecord, JobState, Payload, WorkerId};
use crate::memory::{ExecutionRecord, OutcomeClass};
use crate::queue::{DeadLetter, Envelope, Lease, Release, Reserve};
use crate::state::{Claim, Finish, Heartbeat, Transition, TransitionResult};
use crate::strategy::Outcome;
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
///     .lease(Duration::from_secs(60));
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
}

impl Default for WorkerConfig {
    /// Queue `default`, 64 jobs at once, batches of up to 256, 30 s leases, 1 s reserve wait.
    fn default() -> Self {
        Self {
            queues: vec![DEFAULT_QUEUE.to_owned()],
            concurrency: 64,
            batch_size: 256,
            lease: Duration::from_secs(30),
            poll_wait: Duration::from_secs(1),
            worker_id: None,
            record_executions: true,
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

    /// Name the pool (default: a unique `worker-<uuid>`).
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
    /// Execution records dropped because the recorder fell behind.
    pub records_dropped: u64,
}

struct Running {
    lease: Lease,
    attempt: u32,
    token: CancellationToken,
}

/// A claimed job on its way to an executor, holding its concurrency slot. The record is
/// already inside the context's `Arc`: it is moved once, not at every hand-off.
struct Assigned {
    ctx: JobContext,
    lease: Lease,
    permit: OwnedSemaphorePermit,
}

struct Done {
    lease: Lease,
    transition: Transition,
    record: Option<ExecutionRecord>,
}

pub(crate) struct PoolShared {
    engine: Arc<Engine>,
    worker: WorkerId,
    config: WorkerConfig,
    stop: CancellationToken,
    slots: Arc<Semaphore>,
    /// Jobs held by this pool: running, or finished and awaiting the finisher (heartbeats go
    /// on for both). Added a claim batch at a time, removed a finish batch at a time.
    running: parking_lot::Mutex<HashMap<JobId, Running, foldhash::fast::RandomState>>,
    /// Claimed jobs for the executors (bounded by the concurrency; a slot is taken first).
    jobs_tx: async_channel::Sender<Assigned>,
    jobs_rx: async_channel::Receiver<Assigned>,
    /// What each executor runs now: the jobs to hand back if a shutdown's grace runs out.
    busy: Box<[parking_lot::Mutex<Option<JobId>>]>,
    records_dropped: AtomicU64,
}

impl PoolShared {
    pub(crate) fn cancel_local(&self, id: JobId) {
        if let Some(running) = self.running.lock().get(&id) {
            running.token.cancel();
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
    recorder: Option<JoinHandle<()>>,
    executors: Vec<JoinHandle<()>>,
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
        let shared = Arc::new(PoolShared {
            engine: Arc::clone(&engine),
            worker,
            slots: Arc::new(Semaphore::new(config.concurrency)),
            busy: (0..config.concurrency)
                .map(|_| parking_lot::Mutex::new(None))
                .collect(),
            config,
            stop: CancellationToken::new(),
            running: parking_lot::Mutex::new(HashMap::default()),
            jobs_tx,
            jobs_rx,
            records_dropped: AtomicU64::new(0),
        });
        engine.pools.lock().push(Arc::downgrade(&shared));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (record_tx, record_rx) = mpsc::channel::<Vec<ExecutionRecord>>(256);
        let recorder = runtime.spawn(record_loop(Arc::clone(&engine), record_rx));
        let finisher = runtime.spawn(finish_loop(Arc::clone(&shared), done_rx, record_tx));
        let heartbeat = runtime.spawn(heartbeat_loop(Arc::clone(&shared)));
        // Long-lived executors, one per concurrency slot: a job costs a channel hand-off
        // instead of a task spawn.
        let executors = (0..shared.config.concurrency)
            .map(|slot| runtime.spawn(executor_loop(Arc::clone(&shared), slot, done_tx.clone())))
            .collect();
        drop(done_tx);
        let fetcher = runtime.spawn(fetch_loop(Arc::clone(&shared)));
        tracing::info!(worker = %shared.worker, queues = ?shared.config.queues, concurrency = shared.config.concurrency, "worker pool started");
        Ok(Self {
            shared,
            fetcher: Some(fetcher),
            finisher: Some(finisher),
            heartbeat: Some(heartbeat),
            recorder: Some(recorder),
            executors,
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
            // Jobs still waiting for an executor never started; jobs an executor runs are
            // abandoned. Both go back.
            let mut ids: Vec<JobId> = Vec::new();
            while let Ok(waiting) = shared.jobs_rx.try_recv() {
                ids.push(waiting.ctx.id());
            }
            let busy: Vec<(usize, JobId)> = shared
                .busy
                .iter()
                .enumerate()
                .filter_map(|(slot, job)| job.lock().map(|id| (slot, id)))
                .collect();
            ids.extend(busy.iter().map(|(_, id)| *id));
            let abandoned: Vec<(JobId, Running)> = {
                let mut running = shared.running.lock();
                ids.into_iter()
                    .filter_map(|id| running.remove(&id).map(|r| (id, r)))
                    .collect()
            };
            let mut transitions = Vec::with_capacity(abandoned.len());
            let mut leases = Vec::with_capacity(abandoned.len());
            // Hand the jobs back first: once released, a late result from their executor is
            // refused by the fence, whatever the handler does when it sees its token.
            let mut tokens = Vec::with_capacity(abandoned.len());
            for (id, running) in abandoned {
                transitions.push(Transition {
                    id,
                    worker: shared.worker.clone(),
                    attempt: running.attempt,
                    finish: Finish::Release {
                        reason: "worker shutting down; handed back unfinished".to_owned(),
                    },
                });
                leases.push(running.lease);
                tokens.push(running.token);
            }
            match shared.engine.state.finish(transitions).await {
                Ok(results) => {
                    for r in &results {
                        if let TransitionResult::Conflict { reason, .. } = r {
                            tracing::debug!(%reason, "a job could not be released at shutdown: it is no longer this worker's");
                        }
                    }
                    let now = Utc::now();
                    let items: Vec<Release> = leases
                        .into_iter()
                        .zip(results)
                        .filter(|(_, r)| r.is_applied())
                        .map(|(lease, _)| Release {
                            attempt: lease.envelope.attempt,
                            lease,
                            run_at: now,
                        })
                        .collect();
                    released = items.len();
                    if let Err(err) = shared.engine.queue.release(&items).await {
                        tracing::warn!(error = %err, "could not hand jobs back to the queue at shutdown; their leases will expire and they will be delivered again");
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not release jobs at shutdown; their leases will expire and they will be delivered again");
                }
            }
            // Tell the handlers to stop; give them a moment to clean up, then drop them.
            for token in &tokens {
                token.cancel();
            }
            let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
            let still_busy =
                |slot: &usize| shared.busy.get(*slot).is_some_and(|b| b.lock().is_some());
            while busy.iter().any(|(slot, _)| still_busy(slot))
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for (slot, _) in &busy {
                if still_busy(slot) {
                    if let Some(executor) = self.executors.get(*slot) {
                        executor.abort();
                    }
                }
            }
        }
        // Executors end when the channel closes; the finisher when every executor is gone.
        shared.jobs_tx.close();
        for executor in self.executors.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), executor).await;
        }
        if let Some(finisher) = self.finisher.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), finisher).await;
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
    }
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
        if let Some(direct) = &engine.direct {
            // The state store is the queue: reserve and claim in one step.
            let claims = tokio::select! {
                biased;
                () = shared.stop.cancelled() => break,
                r = direct.claim_due(&req) => r,
            };
            match claims {
                Ok(claims) => {
                    if failures > 0 {
                        tracing::info!(worker = %shared.worker, "state backend reachable again");
                    }
                    failures = 0;
                    start_direct_claims(&shared, claims, permits);
                    continue;
                }
                Err(err) => {
                    failures += 1;
                    let pause = backend_backoff(failures);
                    tracing::warn!(worker = %shared.worker, error = %err, ?pause, "claim failed; backing off");
                    tokio::select! {
                        () = shared.stop.cancelled() => break,
                        () = tokio::time::sleep(pause) => continue,
                    }
                }
            }
        }
        let leases = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            r = engine.queue.reserve(&req) => r,
        };
        let leases = match leases {
            Ok(leases) => {
                if failures > 0 {
                    tracing::info!(worker = %shared.worker, "queue backend reachable again");
                }
                failures = 0;
                leases
            }
            Err(err) => {
                failures += 1;
                let pause = backend_backoff(failures);
                tracing::warn!(worker = %shared.worker, error = %err, ?pause, "reserve failed; backing off");
                tokio::select! {
                    () = shared.stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        if leases.is_empty() {
            continue;
        }
        let ids: Vec<JobId> = leases.iter().map(Lease::id).collect();
        let claims = match engine
            .state
            .claim(&ids, &shared.worker, shared.config.lease)
            .await
        {
            Ok(claims) if claims.len() == leases.len() => claims,
            Ok(claims) => {
                tracing::error!(
                    expected = leases.len(),
                    got = claims.len(),
                    "state store answered a claim batch with the wrong count; leaving the deliveries to expire"
                );
                continue;
            }
            Err(err) => {
                failures += 1;
                let pause = backend_backoff(failures);
                tracing::warn!(worker = %shared.worker, error = %err, ?pause, "claim failed; deliveries will be retried when their leases expire");
                tokio::select! {
                    () = shared.stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let mut acks = Vec::new();
        let mut releases = Vec::new();
        let mut dead = Vec::new();
        let mut claimed = Vec::with_capacity(leases.len());
        for (lease, claim) in leases.into_iter().zip(claims) {
            match claim {
                Claim::Claimed(record) => {
                    let Some(permit) = permits.pop() else {
                        // More leases than permits cannot happen (max = permits); give it back.
                        releases.push(Release {
                            run_at: Utc::now(),
                            attempt: lease.envelope.attempt,
                            lease,
                        });
                        continue;
                    };
                    claimed.push((record, lease, permit));
                }
                Claim::NotDue { run_at, .. } => releases.push(Release {
                    attempt: lease.envelope.attempt,
                    lease,
                    run_at,
                }),
                Claim::Exhausted { reason, .. } => {
                    tracing::warn!(job_id = %lease.id(), %reason, "dead: worker lost with no attempts left");
                    dead.push(DeadLetter { lease, reason });
                }
                Claim::Skipped { .. } => acks.push(lease),
            }
        }
        dispatch_jobs(&shared, claimed);
        settle(
            engine.queue.as_ref(),
            &acks,
            &releases,
            &dead,
            "unclaimable deliveries; they will be delivered again and dropped then",
        )
        .await;
    }
}

/// Apply a batch's queue operations; failures are logged (the deliveries expire and come back).
async fn settle(
    queue: &dyn crate::queue::QueueManager,
    acks: &[Lease],
    releases: &[Release],
    dead: &[DeadLetter],
    what: &str,
) {
    if !acks.is_empty() {
        if let Err(err) = queue.ack(acks).await {
            tracing::warn!(error = %err, "queue ack failed for {what}");
        }
    }
    if !releases.is_empty() {
        if let Err(err) = queue.release(releases).await {
            tracing::warn!(error = %err, "queue release failed for {what}");
        }
    }
    if !dead.is_empty() {
        if let Err(err) = queue.dead_letter(dead).await {
            tracing::warn!(error = %err, "queue dead-letter failed for {what}");
        }
    }
}

/// Start the jobs a [`QueuingState`](crate::state::QueuingState) claimed. There are no
/// deliveries to settle: each lease is made from its record, and the engine's queue ignores it.
fn start_direct_claims(
    shared: &Arc<PoolShared>,
    claims: Vec<Claim>,
    mut permits: Vec<OwnedSemaphorePermit>,
) {
    let mut claimed = Vec::with_capacity(claims.len());
    for claim in claims {
        match claim {
            Claim::Claimed(record) => {
                let Some(permit) = permits.pop() else {
                    // claim_due answers at most `max` (= permits); the lease will expire and
                    // the job will be taken over.
                    tracing::error!(job_id = %record.id, "more claims than asked for; leaving the job to its lease");
                    continue;
                };
                let lease = Lease {
                    envelope: Envelope::from_record(&record),
                    worker: shared.worker.clone(),
                    token: record.version,
                    receipt: None,
                    expires_at: record.lease_expires_at.unwrap_or_else(Utc::now),
                };
                claimed.push((record, lease, permit));
            }
            Claim::Exhausted { id, reason } => {
                tracing::warn!(job_id = %id, %reason, "dead: worker lost with no attempts left");
            }
            Claim::NotDue { .. } | Claim::Skipped { .. } => {}
        }
    }
    dispatch_jobs(shared, claimed);
}

/// Register a claimed batch and hand it to the executors.
fn dispatch_jobs(shared: &Arc<PoolShared>, claimed: Vec<(JobRecord, Lease, OwnedSemaphorePermit)>) {
    if claimed.is_empty() {
        return;
    }
    let mut assigned = Vec::with_capacity(claimed.len());
    {
        let mut running = shared.running.lock();
        running.reserve(claimed.len());
        for (record, lease, permit) in claimed {
            let token = CancellationToken::new();
            running.insert(
                record.id,
                Running {
                    lease: lease.clone(),
                    attempt: record.attempt,
                    token: token.clone(),
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
                token,
            )
            .with_idempotent(idempotent);
            assigned.push(Assigned { ctx, lease, permit });
        }
    }
    for job in assigned {
        // Never full: every job holds one of `concurrency` slots, and the channel has room
        // for as many. Closed only at shutdown, after the fetcher stopped.
        if let Err(err) = shared.jobs_tx.try_send(job) {
            let job = err.into_inner();
            tracing::error!(job_id = %job.ctx.id(), "no executor took the job; its lease will expire and it will be delivered again");
            shared.running.lock().remove(&job.ctx.id());
        }
    }
}

/// One executor: runs claimed jobs one at a time until the pool closes its channel.
async fn executor_loop(shared: Arc<PoolShared>, slot: usize, done_tx: mpsc::UnboundedSender<Done>) {
    while let Ok(job) = shared.jobs_rx.recv().await {
        let Assigned { ctx, lease, permit } = job;
        if let Some(busy) = shared.busy.get(slot) {
            *busy.lock() = Some(ctx.id());
        }
        let span =
            tracing::info_span!("job", id = %ctx.id(), kind = %ctx.kind(), attempt = ctx.attempt());
        let done = run_job(&shared, ctx, lease).instrument(span).await;
        if let Some(busy) = shared.busy.get(slot) {
            *busy.lock() = None;
        }
        let _ = done_tx.send(done);
        drop(permit);
    }
}

async fn run_job(shared: &PoolShared, ctx: JobContext, lease: Lease) -> Done {
    let engine = &shared.engine;
    let record = ctx.record();
    let id = record.id;
    let attempt = record.attempt;
    let max_attempts = record.max_attempts;
    let kind_name = record.kind.clone();
    let kind = engine.kinds.get(&record.kind);
    let strategy = engine.strategy_for(record);
    let strategy_name = strategy.name().to_owned();
    let timeout = record.timeout.or_else(|| kind.and_then(|k| k.timeout));
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
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "handler panicked".to_owned());
                    Outcome::Retry {
                        error: JobError::retryable(format!("handler panicked: {message}"))
                            .with_class("panic"),
                        after: None,
                    }
                }
            }
        }
    };
    let duration = started.elapsed();
    let now = Utc::now();
    let (finish, class) = match &outcome {
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
                let delay = after.unwrap_or_else(|| engine.retry_for(&kind_name).delay(attempt));
                (
                    Finish::Retry {
                        run_at: now
                            + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX),
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
                run_at: now + chrono::Duration::from_std(*after).unwrap_or(chrono::Duration::MAX),
                reason: reason.clone(),
            },
            OutcomeClass::Deferred,
        ),
        Outcome::Cancelled(reason) => (
            Finish::Cancelled {
                reason: reason.clone(),
            },
            OutcomeClass::Cancelled,
        ),
    };
    let record = shared.config.record_executions.then(|| ExecutionRecord {
        job_id: id,
        kind: kind_name,
        strategy: strategy_name,
        outcome: class,
        duration,
        attempt,
        inline_retries: ctx.inline_retries(),
        error_class: outcome.error_class().map(str::to_owned),
        at: now,
        decision: ctx.decision(),
    });
    Done {
        lease,
        transition: Transition {
            id,
            worker: shared.worker.clone(),
            attempt,
            finish,
        },
        record,
    }
}

async fn finish_loop(
    shared: Arc<PoolShared>,
    mut rx: mpsc::UnboundedReceiver<Done>,
    record_tx: mpsc::Sender<Vec<ExecutionRecord>>,
) {
    let engine = Arc::clone(&shared.engine);
    let max = shared.config.batch_size.max(1);
    let mut batch: Vec<Done> = Vec::with_capacity(max);
    loop {
        batch.clear();
        match rx.recv().await {
            Some(done) => batch.push(done),
            None => break,
        }
        while batch.len() < max {
            match rx.try_recv() {
                Ok(done) => batch.push(done),
                Err(_) => break,
            }
        }
        let mut failures = 0u32;
        let results = loop {
            let transitions: Vec<Transition> = batch.iter().map(|d| d.transition.clone()).collect();
            match engine.state.finish(transitions).await {
                Ok(results) if results.len() == batch.len() => break Some(results),
                Ok(_) => {
                    tracing::error!("state store answered a finish batch with the wrong count");
                    break None;
                }
                Err(err) if failures < 5 => {
                    failures += 1;
                    let pause = backend_backoff(failures);
                    tracing::warn!(error = %err, ?pause, "finish failed; retrying");
                    tokio::time::sleep(pause).await;
                }
                Err(err) => {
                    tracing::error!(error = %err, jobs = batch.len(), "finish failed for good; the jobs' leases will expire and they will run again");
                    break None;
                }
            }
        };
        {
            let mut running = shared.running.lock();
            for done in &batch {
                running.remove(&done.transition.id);
            }
        }
        let Some(results) = results else { continue };
        let mut acks = Vec::new();
        let mut releases = Vec::new();
        let mut dead = Vec::new();
        let mut records = Vec::with_capacity(batch.len());
        for (done, result) in batch.drain(..).zip(results) {
            let Done {
                lease,
                transition,
                record,
            } = done;
            match result {
                TransitionResult::Applied { state, .. } => {
                    log_transition(&transition, state);
                    match (state, &transition.finish) {
                        (
                            JobState::Queued,
                            Finish::Retry { run_at, .. } | Finish::Defer { run_at, .. },
                        ) => {
                            releases.push(Release {
                                run_at: *run_at,
                                attempt: if matches!(transition.finish, Finish::Defer { .. }) {
                                    transition.attempt.saturating_sub(1)
                                } else {
                                    transition.attempt
                                },
                                lease,
                            });
                        }
                        (JobState::Queued, _) => releases.push(Release {
                            run_at: Utc::now(),
                            attempt: transition.attempt.saturating_sub(1),
                            lease,
                        }),
                        (JobState::Dead, Finish::Dead { error }) => dead.push(DeadLetter {
                            lease,
                            reason: error.clone(),
                        }),
                        _ => acks.push(lease),
                    }
                    if let Some(mut record) = record {
                        if state == JobState::Cancelled {
                            record.outcome = OutcomeClass::Cancelled;
                        }
                        records.push(record);
                    }
                }
                TransitionResult::Conflict { current, reason } => {
                    tracing::debug!(job_id = %transition.id, ?current, %reason, "finish refused (lease taken over or job released); result discarded");
                    if current.is_some_and(JobState::is_terminal) {
                        acks.push(lease);
                    }
                }
            }
        }
        settle(
            engine.queue.as_ref(),
            &acks,
            &releases,
            &dead,
            "finished jobs; the deliveries will expire, be delivered again and be dropped by the claim",
        )
        .await;
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

fn log_transition(transition: &Transition, state: JobState) {
    match &transition.finish {
        Finish::Dead { error } => {
            tracing::warn!(job_id = %transition.id, attempt = transition.attempt, %error, "job dead");
        }
        Finish::Retry { error, run_at } => {
            tracing::debug!(job_id = %transition.id, attempt = transition.attempt, %error, %run_at, "job will retry");
        }
        _ => {
            tracing::debug!(job_id = %transition.id, attempt = transition.attempt, to = %state, "job finished")
        }
    }
}

async fn record_loop(engine: Arc<Engine>, mut rx: mpsc::Receiver<Vec<ExecutionRecord>>) {
    while let Some(mut batch) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
            if batch.len() >= 4096 {
                break;
            }
        }
        if let Err(err) = engine.memory.record(&batch).await {
            tracing::warn!(error = %err, records = batch.len(), "could not record executions");
        }
    }
}

async fn heartbeat_loop(shared: Arc<PoolShared>) {
    let every = shared.config.lease / 3;
    let engine = Arc::clone(&shared.engine);
    loop {
        tokio::time::sleep(every).await;
        let (ids, leases): (Vec<JobId>, Vec<Lease>) = shared
            .running
            .lock()
            .iter()
            .map(|(id, r)| (*id, r.lease.clone()))
            .unzip();
        if ids.is_empty() {
            continue;
        }
        let (queue, state) = tokio::join!(
            engine.queue.extend(&leases, shared.config.lease),
            engine
                .state
                .heartbeat(&ids, &shared.worker, shared.config.lease)
        );
        if let Err(err) = &queue {
            tracing::warn!(error = %err, "queue heartbeat failed");
        }
        let state = match state {
            Ok(state) => state,
            Err(err) => {
                tracing::warn!(error = %err, "state heartbeat failed");
                continue;
            }
        };
        let running = shared.running.lock();
        for (id, beat) in ids.iter().zip(state) {
            let Some(job) = running.get(id) else { continue };
            match beat {
                Heartbeat::Held {
                    cancel_requested: true,
                } => {
                    tracing::info!(job_id = %id, "cancel requested; signalling the handler");
                    job.token.cancel();
                }
                Heartbeat::Held { .. } => {}
                Heartbeat::Lost => {
                    tracing::warn!(job_id = %id, "lease lost; abandoning the attempt");
                    job.token.cancel();
                }
            }
        }
    }
}
