//! A store made of two: a queue that delivers with leases, and a state kept elsewhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use super::JobStore;
use super::reconciler::{Reconciler, ReconcilerConfig};
use crate::job::{JobEvent, JobId, JobRecord, JobState, WorkerId};
use crate::queue::{
    DeadLetter, Envelope, Lease, QueueInspect, QueueManager, QueueStats, Requeue, Reserve,
};
use crate::schedule::ScheduleStore;
use crate::state::{
    CancelOutcome, Claim, Created, Finish, Heartbeat, Held, JobFilter, Page, Paged, StateCounts,
    StateManager, Transition, TransitionResult,
};
use crate::{Error, ErrorKind, Result};

/// A [`JobStore`] made of a [`QueueManager`] that delivers and a [`StateManager`] that keeps
/// the records, for deployments whose delivery and state live apart (Redis Streams beside
/// PostgreSQL). The state is the source of truth; the queue holds envelopes only.
///
/// - `create` stores the records, then enqueues the new ones;
/// - `claim_due` reserves deliveries, claims them in the state (compare-and-set), and
///   settles those it cannot: a not-yet-due job is released to its `run_at`, a finished or
///   unknown one acknowledged, a dead worker's job whose attempts are spent dead-lettered;
///   one still held by a live lease in the state is left to its delivery's lease, so it is
///   delivered again (and taken over if its worker died) when that runs out;
/// - `heartbeat` extends the state's lease and the queue's;
/// - `finish` applies the state's transitions, then acknowledges, releases or dead-letters
///   each delivery as its job now stands.
///
/// A queue that loses entries (a Redis restart without persistence, a crash between the
/// two writes of a submit) is made whole by the [`Reconciler`]
/// ([`start_reconciler`](Self::start_reconciler)). Build one with
/// [`OrchestratorBuilder::queue`](crate::OrchestratorBuilder::queue) and
/// [`state`](crate::OrchestratorBuilder::state), or with [`Split::new`].
///
/// ```
/// use std::sync::Arc;
/// use jobforge::queue::InMemoryQueue;
/// use jobforge::state::InMemoryState;
/// use jobforge::store::{JobStore, Split};
///
/// let store: Arc<dyn JobStore> = Arc::new(Split::new(
///     Arc::new(InMemoryQueue::new()),
///     Arc::new(InMemoryState::new()),
/// ));
/// # drop(store);
/// ```
pub struct Split {
    inner: Arc<Inner>,
    schedules: Option<Arc<dyn ScheduleStore>>,
}

struct Inner {
    queue: Arc<dyn QueueManager>,
    state: Arc<dyn StateManager>,
    /// The queue's delivery of each claim held through this store, and its attempt, for its
    /// heartbeats and its finish. Entries go with the claim's finish, or when a heartbeat
    /// finds the claim lost.
    deliveries: parking_lot::Mutex<HashMap<Held, Delivery, foldhash::fast::RandomState>>,
}

#[derive(Clone)]
struct Delivery {
    lease: Lease,
    attempt: u32,
}

impl std::fmt::Debug for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Split")
            .field("held", &self.inner.deliveries.lock().len())
            .finish_non_exhaustive()
    }
}

impl Split {
    /// Deliveries from `queue`, records in `state`.
    #[must_use]
    pub fn new(queue: Arc<dyn QueueManager>, state: Arc<dyn StateManager>) -> Self {
        Self {
            inner: Arc::new(Inner {
                queue,
                state,
                deliveries: parking_lot::Mutex::new(HashMap::default()),
            }),
            schedules: None,
        }
    }

    /// Keep schedules ([`crate::schedule`]) in `schedules`, usually the state's own store's:
    /// `Split::new(queue, pg.store()).with_schedules(pg.schedules())`. A schedule's tick
    /// submits through this store (its idempotency key is kept by the state) and advances in
    /// `schedules`, as on the store that keeps both. Without it the split store keeps no
    /// schedules and [`Orchestrator::schedules`](crate::Orchestrator::schedules) says so.
    #[must_use]
    pub fn with_schedules(mut self, schedules: Arc<dyn ScheduleStore>) -> Self {
        self.schedules = Some(schedules);
        self
    }

    /// The queue.
    #[must_use]
    pub fn queue(&self) -> &Arc<dyn QueueManager> {
        &self.inner.queue
    }

    /// The state.
    #[must_use]
    pub fn state(&self) -> &Arc<dyn StateManager> {
        &self.inner.state
    }

    /// Start a [`Reconciler`] over this store's state and queue, on the current Tokio
    /// runtime: it enqueues again the jobs the state has as `Queued` (or `Running` with a
    /// long-expired lease) that the queue no longer holds. `inspect` is the queue's
    /// [`QueueInspect`] side (pass the same queue).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use jobforge::store::{ReconcilerConfig, Split};
    /// # #[cfg(feature = "redis")]
    /// use jobforge::redis::{RedisQueueConfig, RedisStreamsQueue};
    /// use jobforge::state::InMemoryState;
    ///
    /// # #[cfg(feature = "redis")]
    /// # async fn run() -> jobforge::Result<()> {
    /// let queue = Arc::new(RedisStreamsQueue::connect(RedisQueueConfig::default()).await?);
    /// let store = Split::new(queue.clone(), Arc::new(InMemoryState::new()));
    /// let reconciler = store.start_reconciler(queue, ReconcilerConfig::default())?;
    /// // ...
    /// reconciler.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start_reconciler(
        &self,
        inspect: Arc<dyn QueueInspect>,
        config: ReconcilerConfig,
    ) -> Result<Reconciler> {
        Reconciler::start(
            Arc::clone(&self.inner.state),
            Arc::clone(&self.inner.queue),
            inspect,
            config,
        )
    }
}

impl Inner {
    /// Reserve and claim (see [`JobStore::claim_due`]), waiting up to `req.wait` for a claim
    /// to land: deliveries the state turns down (not due by its clock, already finished) are
    /// handed back and the wait goes on, so a caller is not woken with nothing.
    async fn claim_due(&self, req: &Reserve<'_>) -> Result<Vec<Claim>> {
        let deadline = tokio::time::Instant::now() + req.wait;
        let mut wait = req.wait;
        loop {
            let round = Reserve {
                wait,
                ..req.clone()
            };
            let claims = self.claim_once(&round).await?;
            wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !claims.is_empty() || wait.is_zero() {
                return Ok(claims);
            }
        }
    }

    /// One reserve and the claims of what it delivered.
    async fn claim_once(&self, req: &Reserve<'_>) -> Result<Vec<Claim>> {
        let leases = self.queue.reserve(req).await?;
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<JobId> = leases.iter().map(Lease::id).collect();
        let claims = self.state.claim(&ids, req.worker, req.lease).await?;
        if claims.len() != leases.len() {
            return Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "the state answered {} claims for {} deliveries; they will be delivered again",
                    claims.len(),
                    leases.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(claims.len());
        let mut acks = Vec::new();
        let mut releases = Vec::new();
        let mut dead = Vec::new();
        for (lease, claim) in leases.into_iter().zip(claims) {
            match claim {
                Claim::Claimed(record) => {
                    self.deliveries.lock().insert(
                        Held::of(&record),
                        Delivery {
                            lease,
                            attempt: record.attempt,
                        },
                    );
                    out.push(Claim::Claimed(record));
                }
                Claim::NotDue { run_at, .. } => releases.push(Requeue {
                    attempt: lease.envelope.attempt,
                    lease,
                    run_at,
                }),
                Claim::Exhausted { id, reason } => {
                    dead.push(DeadLetter {
                        lease,
                        reason: reason.clone(),
                    });
                    out.push(Claim::Exhausted { id, reason });
                }
                Claim::Cancelled { id, reason } => {
                    acks.push(lease);
                    out.push(Claim::Cancelled { id, reason });
                }
                // Held by a live lease in the state: a worker that died holding it may be
                // found out only when the state's lease runs out, a moment after the queue's
                // (the queue's lease starts before the claim's), so the delivery is kept:
                // it comes back when this lease runs out, to be taken over then. Acknowledged,
                // the job would stay `Running` with no delivery until a reconciler found it.
                Claim::Skipped {
                    state: Some(JobState::Running),
                    ..
                } => {}
                Claim::Skipped { .. } => acks.push(lease),
            }
        }
        self.answer_queue(
            &acks,
            &releases,
            &dead,
            "deliveries that could not be claimed; they will be delivered again and dropped then",
        )
        .await;
        Ok(out)
    }

    /// Give back what a claim took for a caller that stopped waiting: due now, attempt not
    /// spent.
    async fn hand_back(&self, worker: &WorkerId, claims: Vec<Claim>) {
        let transitions = crate::store::hand_back_transitions(worker, claims);
        if transitions.is_empty() {
            return;
        }
        if let Err(err) = self.finish(transitions).await {
            tracing::warn!(error = %err, "could not hand back jobs claimed for a caller that stopped waiting; they run again when their leases expire");
        }
    }

    async fn finish(&self, transitions: Vec<Transition>) -> Result<Vec<TransitionResult>> {
        let results = self.state.finish(transitions.clone()).await?;
        let mut acks = Vec::new();
        let mut releases = Vec::new();
        let mut dead = Vec::new();
        {
            let mut deliveries = self.deliveries.lock();
            for (t, result) in transitions.iter().zip(&results) {
                let Some(Delivery { lease, attempt }) = deliveries.remove(&t.held()) else {
                    continue;
                };
                match result {
                    TransitionResult::Applied {
                        state: JobState::Queued,
                        ..
                    } => releases.push(match &t.finish {
                        Finish::Retry { delay, .. } => Requeue {
                            run_at: crate::job::after(Utc::now(), *delay),
                            attempt,
                            lease,
                        },
                        Finish::Defer { delay, .. } => Requeue {
                            run_at: crate::job::after(Utc::now(), *delay),
                            attempt: attempt.saturating_sub(1),
                            lease,
                        },
                        _ => Requeue {
                            run_at: Utc::now(),
                            attempt: attempt.saturating_sub(1),
                            lease,
                        },
                    }),
                    TransitionResult::Applied {
                        state: JobState::Dead,
                        ..
                    } => dead.push(DeadLetter {
                        lease,
                        reason: match &t.finish {
                            Finish::Dead { error } => error.clone(),
                            _ => "dead".to_owned(),
                        },
                    }),
                    TransitionResult::Applied { .. } => acks.push(lease),
                    TransitionResult::Conflict { current, .. } => {
                        // Another claim holds the job now (its own delivery), or it finished.
                        if current.is_some_and(JobState::is_terminal) {
                            acks.push(lease);
                        }
                    }
                }
            }
        }
        self.answer_queue(
            &acks,
            &releases,
            &dead,
            "finished jobs; the deliveries will expire, be delivered again and be dropped by the claim",
        )
        .await;
        Ok(results)
    }

    /// Apply a batch's queue operations; failures are logged (the deliveries expire and come
    /// back, and the state's compare-and-set drops them).
    async fn answer_queue(
        &self,
        acks: &[Lease],
        releases: &[Requeue],
        dead: &[DeadLetter],
        what: &str,
    ) {
        if !acks.is_empty() {
            if let Err(err) = self.queue.ack(acks).await {
                tracing::warn!(error = %err, "queue ack failed for {what}");
            }
        }
        if !releases.is_empty() {
            if let Err(err) = self.queue.requeue(releases).await {
                tracing::warn!(error = %err, "queue release failed for {what}");
            }
        }
        if !dead.is_empty() {
            if let Err(err) = self.queue.dead_letter(dead).await {
                tracing::warn!(error = %err, "queue dead-letter failed for {what}");
            }
        }
    }
}

#[async_trait]
impl StateManager for Split {
    /// Store the records, then enqueue the new ones. When the enqueue fails the error is
    /// returned: the jobs are `Queued` in the state, and the reconciler enqueues them.
    async fn create(&self, jobs: Vec<JobRecord>) -> Result<Vec<Created>> {
        let envelopes: Vec<Envelope> = jobs.iter().map(Envelope::from_record).collect();
        let created = self.inner.state.create(jobs).await?;
        let fresh: Vec<Envelope> = envelopes
            .into_iter()
            .zip(&created)
            .filter_map(|(env, c)| matches!(c, Created::New(_)).then_some(env))
            .collect();
        if !fresh.is_empty() {
            self.inner.queue.enqueue(&fresh).await?;
        }
        Ok(created)
    }

    async fn claim(&self, ids: &[JobId], worker: &WorkerId, lease: Duration) -> Result<Vec<Claim>> {
        self.inner.state.claim(ids, worker, lease).await
    }

    async fn heartbeat(&self, held: &[Held], lease: Duration) -> Result<Vec<Heartbeat>> {
        let leases: Vec<Lease> = {
            let deliveries = self.inner.deliveries.lock();
            held.iter()
                .filter_map(|h| deliveries.get(h).map(|d| d.lease.clone()))
                .collect()
        };
        let (queue, state) = tokio::join!(
            async {
                if leases.is_empty() {
                    Ok(Vec::new())
                } else {
                    self.inner.queue.extend(&leases, lease).await
                }
            },
            self.inner.state.heartbeat(held, lease)
        );
        if let Err(err) = queue {
            tracing::warn!(error = %err, "queue heartbeat failed; the state's leases hold the jobs");
        }
        let beats = state?;
        let mut deliveries = self.inner.deliveries.lock();
        for (h, beat) in held.iter().zip(&beats) {
            if *beat == Heartbeat::Lost {
                deliveries.remove(h);
            }
        }
        Ok(beats)
    }

    async fn finish(&self, transitions: Vec<Transition>) -> Result<Vec<TransitionResult>> {
        self.inner.finish(transitions).await
    }

    async fn cancel(&self, id: JobId, reason: &str) -> Result<CancelOutcome> {
        let outcome = self.inner.state.cancel(id, reason).await?;
        if outcome == CancelOutcome::Cancelled {
            // The job will never run: drop its waiting delivery, so the queue's counts do
            // not hold it until it comes due. Should this fail, the delivery is dropped when
            // it is handed out (its claim finds the job cancelled).
            let dropped = match self.inner.state.get(id).await {
                Ok(Some(record)) => self.inner.queue.discard(&record.queue, &[id]).await,
                Ok(None) => Ok(0),
                Err(err) => Err(err),
            };
            if let Err(err) = dropped {
                tracing::warn!(job_id = %id, error = %err, "could not drop a cancelled job's delivery; it is dropped when handed out");
            }
        }
        Ok(outcome)
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>> {
        self.inner.state.get(id).await
    }

    async fn report_progress(&self, held: Held, progress: &crate::job::Progress) -> Result<bool> {
        self.inner.state.report_progress(held, progress).await
    }

    async fn list(&self, filter: &JobFilter, page: &Page) -> Result<Paged<JobRecord>> {
        self.inner.state.list(filter, page).await
    }

    async fn events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        self.inner.state.events(id).await
    }

    async fn counts(&self) -> Result<StateCounts> {
        self.inner.state.counts().await
    }

    async fn ping(&self) -> Result<()> {
        let (queue, state) = tokio::join!(self.inner.queue.ping(), self.inner.state.ping());
        queue.and(state)
    }
}

#[async_trait]
impl JobStore for Split {
    fn schedules(&self) -> Option<Arc<dyn ScheduleStore>> {
        self.schedules.clone()
    }

    /// Reserve deliveries, then claim them in the state. The two run in a task of their own,
    /// so a caller that stops waiting strands nothing: what was claimed for it is handed
    /// back.
    async fn claim_due(&self, req: &Reserve<'_>) -> Result<Vec<Claim>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let inner = Arc::clone(&self.inner);
        let worker = req.worker.clone();
        let queues = req.queues.to_vec();
        let (max, lease, wait) = (req.max, req.lease, req.wait);
        tokio::spawn(async move {
            let req = Reserve {
                worker: &worker,
                queues: &queues,
                max,
                lease,
                wait,
            };
            let claims = inner.claim_due(&req).await;
            if let Err(Ok(claims)) = tx.send(claims) {
                inner.hand_back(&worker, claims).await;
            }
        });
        rx.await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Backend,
                "the claim task ended without an answer; try again",
            ))
        })
    }

    async fn stats(&self) -> Result<QueueStats> {
        self.inner.queue.stats().await
    }
}
