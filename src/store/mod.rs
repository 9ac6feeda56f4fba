//! The one seam between the engine and storage: the [`JobStore`] trait, and [`Split`], the
//! store made of a queue that delivers and a state kept elsewhere.

mod reconciler;
mod split;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use crate::Result;
use crate::job::{JobId, JobState};
use crate::queue::{QueueDepth, QueueStats, Reserve};
use crate::schedule::ScheduleStore;
use crate::state::{Claim, StateManager, Transition, TransitionResult};

pub use reconciler::{ReconcileReport, Reconciler, ReconcilerConfig};
pub use split::Split;

/// Storage the engine drives: job records, the state machine and history
/// ([`StateManager`]), delivered with leases from the records themselves. The orchestrator
/// and its worker pools hold one `Arc<dyn JobStore>` and nothing else.
///
/// [`InMemoryState`](crate::state::InMemoryState) (the embedded default),
/// [`PostgresState`](crate::postgres::PostgresState) and
/// [`RedisState`](crate::redis::RedisState) are stores; a queue that delivers beside a state
/// kept elsewhere (Redis Streams beside PostgreSQL) becomes one through [`Split`]. The safety
/// wrappers ([`Timeout`](crate::safety::Timeout),
/// [`CircuitBreaker`](crate::safety::CircuitBreaker)) are stores whenever what they wrap is.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use jobforge::queue::Reserve;
/// use jobforge::state::{Claim, InMemoryState, StateManager};
/// use jobforge::store::JobStore;
/// use jobforge::{JobRecord, NewJob, WorkerId};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> jobforge::Result<()> {
/// let store: Arc<dyn JobStore> = Arc::new(InMemoryState::new());
/// let mut job = JobRecord::from_job(NewJob::new("resize"));
/// (job.state, job.attempt, job.started_at) = (jobforge::JobState::Queued, 0, None);
/// store.create(vec![job]).await?;
/// let worker = WorkerId::new("w");
/// let queues = vec!["default".to_owned()];
/// let claims = store
///     .claim_due(&Reserve {
///         worker: &worker,
///         queues: &queues,
///         max: 10,
///         lease: Duration::from_secs(30),
///         wait: Duration::ZERO,
///     })
///     .await?;
/// assert!(matches!(claims[..], [Claim::Claimed(_)]));
/// assert_eq!(store.stats().await?.in_flight, 1);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait JobStore: StateManager {
    /// Claim up to `req.max` jobs of `req.queues` for `req.worker` with a lease of
    /// `req.lease`: `Queued` jobs that are due, highest priority first, then earliest
    /// `run_at`, then oldest (`RedisState`: within a priority, in the order they became
    /// due); and `Running` jobs whose lease expired (a takeover, or
    /// [`Claim::Exhausted`] when their attempts are spent, [`Claim::Cancelled`] when a cancel
    /// was asked for). Waits up to `req.wait` for a first one. Answers only
    /// [`Claim::Claimed`], [`Claim::Exhausted`] and [`Claim::Cancelled`].
    ///
    /// Cancel-safe: a caller that stops waiting (drops the future) strands nothing. Jobs a
    /// claim took for a caller that is gone are handed back, due now, attempt not spent.
    async fn claim_due(&self, req: &Reserve<'_>) -> Result<Vec<Claim>>;

    /// The store's schedules ([`crate::schedule`]), kept beside its jobs; `None` for a
    /// store that keeps none (the default).
    fn schedules(&self) -> Option<Arc<dyn ScheduleStore>> {
        None
    }

    /// Delivery counts: ready, delayed, in flight, and dead jobs kept.
    async fn stats(&self) -> Result<QueueStats>;

    /// Whether this store keeps workflow steps ([`crate::workflow`]): `Pending` records with
    /// their links, made `Queued` (or ended, by their policy) in the same step that ends
    /// their last dependency, and listed by [`JobFilter::workflow`](crate::state::JobFilter::workflow).
    /// `false` by default; a store that answers `false` refuses workflows at submit.
    fn supports_workflows(&self) -> bool {
        false
    }

    /// The queues no worker pool claims from until they are resumed, fleet-wide: every pool
    /// on this store reads them about once a second. None by default (a store that cannot
    /// pause has nothing paused).
    async fn paused_queues(&self) -> Result<BTreeSet<String>> {
        Ok(BTreeSet::new())
    }

    /// Pause (`paused: true`) or resume a queue; answers whether that changed anything.
    /// Jobs can still be submitted to a paused queue, and jobs already claimed run to their
    /// end. By default a store cannot pause queues (a configuration error says so).
    async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<bool> {
        let _ = (queue, paused);
        Err(crate::Error::new(
            crate::ErrorKind::Configuration,
            "this store cannot pause queues (the in-memory, PostgreSQL and Redis stores can; \
             a Split store cannot)",
        ))
    }

    /// Jobs waiting per queue, due ones per priority, in queue order: what an operator reads
    /// to see which queue and which priority backs up. A bounded read (a store may stop
    /// counting at a budget and say so, [`QueueDepth::at_least`]). None by default (a store
    /// that cannot tell answers an empty list).
    async fn queue_depths(&self) -> Result<Vec<QueueDepth>> {
        Ok(Vec::new())
    }

    /// Delete a finished job (succeeded, dead or cancelled) now, with its history, instead of
    /// when its retention ends: it leaves the counts and listings, and its idempotency key is
    /// free again. Only a finished job that is not a workflow step goes (a step stays while
    /// its workflow is kept); see [`Deleted`] for the other answers. By default a store
    /// cannot delete jobs (a configuration error says so).
    async fn delete_finished(&self, id: JobId) -> Result<Deleted> {
        let _ = id;
        Err(crate::Error::new(
            crate::ErrorKind::Configuration,
            "this store cannot delete jobs before their retention ends (the in-memory, \
             PostgreSQL and Redis stores can; a Split store cannot)",
        ))
    }

    /// Finish `transitions` (as [`StateManager::finish`]) and claim up to `req.max` due jobs
    /// (as [`JobStore::claim_due`], without waiting: `req.wait` is ignored) in one step: a
    /// worker settles what its slots finished and takes their next jobs in one round trip.
    /// PostgreSQL does it in one statement and Redis in one script; this default (which the
    /// in-memory store keeps: it has no round trip to save) does the finish, then the claim.
    ///
    /// An `Err` means no finish is known to have been applied (try the finishes again: they
    /// are fenced, so one that was applied answers a conflict). A claim that fails after the
    /// finishes were applied is not an error: [`FinishAndClaim::claim_error`] says why no
    /// job was claimed.
    async fn finish_and_claim(
        &self,
        transitions: Vec<Transition>,
        req: &Reserve<'_>,
    ) -> Result<FinishAndClaim> {
        finish_then_claim(self, transitions, req).await
    }
}

/// What [`JobStore::delete_finished`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The job and its history are gone.
    Deleted,
    /// The job is not finished (it is in this state): cancel it first, or let it end.
    NotFinished(JobState),
    /// The job is a workflow step: it is kept as long as its workflow.
    Step,
    /// No such job (never submitted, already deleted, or past retention).
    NotFound,
}

/// What [`JobStore::finish_and_claim`] did: the answer to each finish, in order, and the jobs
/// claimed.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct FinishAndClaim {
    /// One answer per transition, in the order given.
    pub results: Vec<TransitionResult>,
    /// The jobs claimed ([`Claim::Claimed`], [`Claim::Exhausted`] or [`Claim::Cancelled`]).
    pub claims: Vec<Claim>,
    /// Why the claim failed after the finishes were applied, if it did.
    pub claim_error: Option<crate::Error>,
}

impl FinishAndClaim {
    /// An answer of finishes and claims that both went through.
    #[must_use]
    pub fn new(results: Vec<TransitionResult>, claims: Vec<Claim>) -> Self {
        Self {
            results,
            claims,
            claim_error: None,
        }
    }
}

/// A store behind an `Arc` is a store, so it can be wrapped while it is shared:
/// `TimeoutLayer::new(d).layer(pg.store())`.
#[async_trait]
impl<S: JobStore> JobStore for Arc<S> {
    async fn claim_due(&self, req: &Reserve<'_>) -> Result<Vec<Claim>> {
        (**self).claim_due(req).await
    }
    async fn stats(&self) -> Result<QueueStats> {
        (**self).stats().await
    }
    fn schedules(&self) -> Option<Arc<dyn ScheduleStore>> {
        (**self).schedules()
    }
    fn supports_workflows(&self) -> bool {
        (**self).supports_workflows()
    }
    async fn paused_queues(&self) -> Result<BTreeSet<String>> {
        (**self).paused_queues().await
    }
    async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<bool> {
        (**self).set_queue_paused(queue, paused).await
    }
    async fn delete_finished(&self, id: JobId) -> Result<Deleted> {
        (**self).delete_finished(id).await
    }
    async fn queue_depths(&self) -> Result<Vec<QueueDepth>> {
        (**self).queue_depths().await
    }
    async fn finish_and_claim(
        &self,
        transitions: Vec<Transition>,
        req: &Reserve<'_>,
    ) -> Result<FinishAndClaim> {
        (**self).finish_and_claim(transitions, req).await
    }
}

/// What [`OrchestratorBuilder::store`](crate::OrchestratorBuilder::store) takes: a store
/// behind an `Arc`, of its own type (`pg.store()`, `Arc::new(redis_state)`,
/// `Arc::clone(&state)`) or already a `dyn JobStore`.
pub trait IntoJobStore {
    /// The store, as the engine holds it.
    fn into_job_store(self) -> Arc<dyn JobStore>;
}

impl<S: JobStore> IntoJobStore for Arc<S> {
    fn into_job_store(self) -> Arc<dyn JobStore> {
        self
    }
}

impl IntoJobStore for Arc<dyn JobStore> {
    fn into_job_store(self) -> Arc<dyn JobStore> {
        self
    }
}

/// [`JobStore::finish_and_claim`] in two steps: the finish, then the claim (the trait's
/// default, and a store's path for batches it cannot fuse).
pub(crate) async fn finish_then_claim<S: JobStore + ?Sized>(
    store: &S,
    transitions: Vec<Transition>,
    req: &Reserve<'_>,
) -> Result<FinishAndClaim> {
    let results = if transitions.is_empty() {
        Vec::new()
    } else {
        store.finish(transitions).await?
    };
    if req.max == 0 {
        return Ok(FinishAndClaim::new(results, Vec::new()));
    }
    let now = Reserve {
        wait: std::time::Duration::ZERO,
        ..*req
    };
    Ok(match store.claim_due(&now).await {
        Ok(claims) => FinishAndClaim::new(results, claims),
        Err(err) => FinishAndClaim {
            results,
            claims: Vec::new(),
            claim_error: Some(err),
        },
    })
}

/// The finishes that give back what a claim took for a caller that stopped waiting (a claim
/// cut short): each claimed job due now, its attempt not spent. Other answers need nothing.
pub(crate) fn hand_back_transitions(
    worker: &crate::job::WorkerId,
    claims: Vec<Claim>,
) -> Vec<crate::state::Transition> {
    claims
        .into_iter()
        .filter_map(|claim| match claim {
            Claim::Claimed(record) => Some(crate::state::Transition {
                id: record.id,
                worker: worker.clone(),
                token: record.version,
                finish: crate::job::Finish::Release {
                    reason: "claimed for a caller that stopped waiting; handed back".to_owned(),
                },
            }),
            _ => None,
        })
        .collect()
}
