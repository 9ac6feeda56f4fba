use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::job::Finish;
use crate::job::{JobEvent, JobId, JobRecord, JobState, WorkerId};
use crate::{Error, Result};

/// The answer to creating one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A new job was stored.
    New(JobId),
    /// A job with the same idempotency key already exists; this is its id. Nothing was stored.
    Existing(JobId),
}

impl Created {
    /// The id of the job that holds the submission (new or existing).
    #[must_use]
    pub fn id(&self) -> JobId {
        match self {
            Created::New(id) | Created::Existing(id) => *id,
        }
    }
}

/// The answer to claiming one job.
// `Claimed` carries the whole record inline: it is the common answer, and boxing it would add
// an allocation per claimed job for the rare variants' sake.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The caller now holds the job (state `Running`, attempt counted, lease set).
    Claimed(JobRecord),
    /// The job is queued but not due until `run_at` (a duplicate or early delivery).
    NotDue {
        /// The job.
        id: JobId,
        /// When it is due.
        run_at: DateTime<Utc>,
    },
    /// A worker died holding the job and its attempts are spent: the claim moved it to `Dead`.
    Exhausted {
        /// The job.
        id: JobId,
        /// The reason recorded.
        reason: String,
    },
    /// A worker died holding the job after someone asked to cancel it: the claim moved it to
    /// `Cancelled` instead of running it again.
    Cancelled {
        /// The job.
        id: JobId,
        /// The reason recorded.
        reason: String,
    },
    /// The job cannot be claimed: unknown, finished, or held by a live lease. Drop the delivery.
    Skipped {
        /// The job.
        id: JobId,
        /// Its state, if it exists.
        state: Option<JobState>,
    },
}

/// A claim its worker holds: the job, and the claim's token, which is the record's
/// [`version`](JobRecord::version) as [`Claim::Claimed`] returned it.
///
/// Every claim makes a new version, and versions only grow, so the token names one claim of
/// one job for good: heartbeats and finishes are fenced on it. A worker whose lease was taken
/// over, or a second process that happens to use the same worker id, holds a token that no
/// longer matches, and is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Held {
    /// The job.
    pub id: JobId,
    /// The claim's token.
    pub token: u64,
}

impl Held {
    /// The claim a [`Claim::Claimed`] record stands for.
    #[must_use]
    pub fn of(record: &JobRecord) -> Self {
        Self {
            id: record.id,
            token: record.version,
        }
    }
}

/// What a heartbeat learned about one held job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Still held; the lease was extended. `cancel_requested` says a cancel was asked for.
    Held {
        /// Whether someone asked to cancel the job.
        cancel_requested: bool,
    },
    /// This claim no longer holds the job (taken over, finished, or cancelled while queued).
    Lost,
}

/// Finish one running job, fenced: it applies only while the claim with `token` still holds
/// the job (see [`Held`]): a worker whose lease was taken over cannot overwrite the new
/// owner's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The job.
    pub id: JobId,
    /// The worker that ran the attempt (recorded in the job's history).
    pub worker: WorkerId,
    /// The claim's token: the record's version as the claim returned it.
    pub token: u64,
    /// Where it goes.
    pub finish: Finish,
}

impl Transition {
    /// The claim this transition finishes.
    #[must_use]
    pub fn held(&self) -> Held {
        Held {
            id: self.id,
            token: self.token,
        }
    }
}

/// The answer to one [`Transition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionResult {
    /// Applied; the job is now in `state` at `version`.
    Applied {
        /// The new state.
        state: JobState,
        /// The new version.
        version: u64,
    },
    /// Refused: the job is gone, no longer held by that claim, or the state machine forbids
    /// the move.
    Conflict {
        /// The job's current state, if it exists.
        current: Option<JobState>,
        /// Why it was refused.
        reason: String,
    },
}

impl TransitionResult {
    /// Whether the transition was applied.
    #[must_use]
    pub fn is_applied(&self) -> bool {
        matches!(self, TransitionResult::Applied { .. })
    }
}

/// The answer to a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The job was queued and is now `Cancelled`.
    Cancelled,
    /// The job is running; its handler's cancellation token fires and the job ends
    /// `Cancelled` unless it finishes first.
    Requested,
    /// The job had already finished in this state; nothing changed.
    AlreadyFinished(JobState),
}

/// Which jobs to list. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs on this queue.
    pub queue: Option<String>,
    /// Only jobs of this tenant.
    pub tenant: Option<String>,
    /// Only the steps of this workflow ([`crate::workflow`]).
    #[serde(default)]
    pub workflow: Option<JobId>,
    /// Only jobs carrying this tag.
    #[serde(default)]
    pub tag: Option<String>,
}

impl JobFilter {
    /// Whether `record` matches.
    #[must_use]
    pub fn matches(&self, record: &JobRecord) -> bool {
        self.state.is_none_or(|s| s == record.state)
            && self.kind.as_deref().is_none_or(|k| k == record.kind)
            && self.queue.as_deref().is_none_or(|q| q == record.queue)
            && self
                .tenant
                .as_deref()
                .is_none_or(|t| record.tenant.as_deref() == Some(t))
            && self
                .workflow
                .is_none_or(|w| record.step.as_ref().is_some_and(|s| s.workflow == w))
            && self
                .tag
                .as_deref()
                .is_none_or(|t| record.tags.iter().any(|x| x == t))
    }
}

/// Listing order, by job id (which is creation order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// Keyset pagination: `after` is the `next` cursor of the previous page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Start after this job (exclusive); `None` for the first page.
    pub after: Option<JobId>,
    /// Most items per page (1 to 1,000).
    pub limit: usize,
    /// Order of the walk.
    pub order: Order,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            after: None,
            limit: 100,
            order: Order::Asc,
        }
    }
}

impl Page {
    /// Largest accepted page.
    pub const MAX_LIMIT: usize = 1_000;

    /// The first page of `limit` items.
    #[must_use]
    pub fn first(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// The page after `cursor`.
    #[must_use]
    pub fn after(mut self, cursor: JobId) -> Self {
        self.after = Some(cursor);
        self
    }

    /// Walk newest first.
    #[must_use]
    pub fn descending(mut self) -> Self {
        self.order = Order::Desc;
        self
    }

    /// Check the limit.
    pub fn validate(&self) -> Result<()> {
        if self.limit == 0 || self.limit > Self::MAX_LIMIT {
            return Err(Error::invalid_input(
                "limit",
                format!(
                    "{} is out of range; use 1 to {}",
                    self.limit,
                    Self::MAX_LIMIT
                ),
            ));
        }
        Ok(())
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paged<T> {
    /// The items.
    pub items: Vec<T>,
    /// The cursor for the next page; `None` when this was the last.
    pub next: Option<JobId>,
}

/// Job counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateTally {
    /// Workflow steps waiting for their dependencies.
    #[serde(default)]
    pub pending: u64,
    /// Waiting to run.
    pub queued: u64,
    /// Held by a worker.
    pub running: u64,
    /// Finished with a result.
    pub succeeded: u64,
    /// Failed for good.
    pub dead: u64,
    /// Cancelled.
    pub cancelled: u64,
}

impl StateTally {
    /// The count for one state.
    #[must_use]
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Pending => self.pending,
            JobState::Queued => self.queued,
            JobState::Running => self.running,
            JobState::Succeeded => self.succeeded,
            JobState::Dead => self.dead,
            JobState::Cancelled => self.cancelled,
        }
    }

    /// Mutable count for one state.
    pub fn get_mut(&mut self, state: JobState) -> &mut u64 {
        match state {
            JobState::Pending => &mut self.pending,
            JobState::Queued => &mut self.queued,
            JobState::Running => &mut self.running,
            JobState::Succeeded => &mut self.succeeded,
            JobState::Dead => &mut self.dead,
            JobState::Cancelled => &mut self.cancelled,
        }
    }

    /// Jobs not yet finished.
    #[must_use]
    pub fn active(&self) -> u64 {
        self.pending + self.queued + self.running
    }

    /// All counted jobs.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.pending + self.queued + self.running + self.succeeded + self.dead + self.cancelled
    }
}

/// Counts of the jobs a state store holds (finished jobs only while retained).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    /// All jobs.
    pub total: StateTally,
    /// Per kind.
    pub per_kind: BTreeMap<String, StateTally>,
    /// Attempts that failed and were queued for another ([`Finish::Retry`] applied and not
    /// turned into a cancel), all kinds, since the store was made: a running total that only
    /// grows, so the difference of two readings is the retries between them (the console's
    /// "retried per second"). Deferrals and hand-backs at shutdown are not retries.
    #[serde(default)]
    pub retried: u64,
}

/// Durable job records, the state machine and history.
///
/// Every state change is a compare-and-set: two workers can never both finish a job, and a
/// worker whose lease was taken over cannot overwrite the new owner's result. Batch methods
/// answer per item, in input order.
///
/// Implementations must be usable as `Arc<dyn StateManager>`; see
/// [`InMemoryState`](crate::state::InMemoryState) for the reference implementation.
#[async_trait]
pub trait StateManager: Send + Sync + 'static {
    /// Store new `Queued` jobs. A job whose idempotency key is already taken is not stored:
    /// its answer is [`Created::Existing`] with the holder's id.
    ///
    /// A record's `run_at` is read relative to its `created_at`, which is the submitter's
    /// clock: a store whose clock is not the submitter's keeps `run_at - created_at` and
    /// counts it from its own clock, so a submitter whose clock is off neither delays nor
    /// hastens its jobs.
    async fn create(&self, jobs: Vec<JobRecord>) -> Result<Vec<Created>>;

    /// Claim jobs for `worker` with a lease of `lease`: `Queued` and due, or `Running` with an
    /// expired lease (a takeover; [`Claim::Exhausted`] when its attempts are spent,
    /// [`Claim::Cancelled`] when a cancel was asked for). Each claim counts an attempt, and
    /// its record's version is the claim's token ([`Held`]).
    async fn claim(&self, ids: &[JobId], worker: &WorkerId, lease: Duration) -> Result<Vec<Claim>>;

    /// Extend the leases of the claims in `held` to `lease` from now, and report cancel
    /// requests. A claim that no longer holds its job is answered [`Heartbeat::Lost`].
    async fn heartbeat(&self, held: &[Held], lease: Duration) -> Result<Vec<Heartbeat>>;

    /// Finish attempts, each fenced by its claim's token.
    async fn finish(&self, transitions: Vec<Transition>) -> Result<Vec<TransitionResult>>;

    /// Cancel a job: queued jobs at once, running jobs cooperatively.
    /// A job that does not exist is an [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) error.
    async fn cancel(&self, id: JobId, reason: &str) -> Result<CancelOutcome>;

    /// One job.
    async fn get(&self, id: JobId) -> Result<Option<JobRecord>>;

    /// Jobs matching `filter`, one page at a time, by id.
    async fn list(&self, filter: &JobFilter, page: &Page) -> Result<Paged<JobRecord>>;

    /// A job's history, oldest first. Empty for an unknown job.
    async fn events(&self, id: JobId) -> Result<Vec<JobEvent>>;

    /// Counts by state, in all and per kind.
    async fn counts(&self) -> Result<StateCounts>;

    /// Whether the backend is reachable (used by readiness checks).
    async fn ping(&self) -> Result<()> {
        self.counts().await.map(|_| ())
    }

    /// Keep `progress` on the record of the claim `held`, fenced like a heartbeat: `false`
    /// (nothing written) when the claim no longer holds the job. The default keeps nothing
    /// (`false`): the crate's stores keep reports; a store of a host's own may choose not to.
    async fn report_progress(&self, held: Held, progress: &crate::job::Progress) -> Result<bool> {
        let _ = (held, progress);
        Ok(false)
    }
}

/// A store behind an `Arc` is a store, so it can be wrapped (`Timeout`, `CircuitBreaker`)
/// while it is shared.
#[async_trait]
impl<S: StateManager> StateManager for std::sync::Arc<S> {
    async fn create(&self, jobs: Vec<JobRecord>) -> Result<Vec<Created>> {
        (**self).create(jobs).await
    }
    async fn claim(&self, ids: &[JobId], worker: &WorkerId, lease: Duration) -> Result<Vec<Claim>> {
        (**self).claim(ids, worker, lease).await
    }
    async fn heartbeat(&self, held: &[Held], lease: Duration) -> Result<Vec<Heartbeat>> {
        (**self).heartbeat(held, lease).await
    }
    async fn finish(&self, transitions: Vec<Transition>) -> Result<Vec<TransitionResult>> {
        (**self).finish(transitions).await
    }
    async fn cancel(&self, id: JobId, reason: &str) -> Result<CancelOutcome> {
        (**self).cancel(id, reason).await
    }
    async fn get(&self, id: JobId) -> Result<Option<JobRecord>> {
        (**self).get(id).await
    }
    async fn list(&self, filter: &JobFilter, page: &Page) -> Result<Paged<JobRecord>> {
        (**self).list(filter, page).await
    }
    async fn events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        (**self).events(id).await
    }
    async fn counts(&self) -> Result<StateCounts> {
        (**self).counts().await
    }
    async fn ping(&self) -> Result<()> {
        (**self).ping().await
    }
    async fn report_progress(&self, held: Held, progress: &crate::job::Progress) -> Result<bool> {
        (**self).report_progress(held, progress).await
    }
}
