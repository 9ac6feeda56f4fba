use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::job::{JobEvent, JobId, JobRecord, NewJob};
use crate::queue::QueueStats;
use crate::state::{CancelOutcome, JobFilter, Page, Paged, StateCounts};

/// The answer to one submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// The job holding the submission.
    pub id: JobId,
    /// `false` when an existing job with the same idempotency key was returned instead.
    pub created: bool,
}

/// What the engine holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Delivery: ready, delayed, in flight, dead; per kind.
    pub queue: QueueStats,
    /// Records by state; per kind (finished ones while retained).
    pub jobs: StateCounts,
}

/// Submit, inspect and cancel jobs. Implemented by [`Orchestrator`](crate::Orchestrator);
/// usable as `Arc<dyn JobOrchestrator>` (the HTTP layer serves any implementation).
#[async_trait]
pub trait JobOrchestrator: Send + Sync + 'static {
    /// Validate and submit one job. With an idempotency key already used, the existing job is
    /// returned (`created: false`).
    async fn submit(&self, job: NewJob) -> Result<Submitted>;

    /// Submit many jobs in one round trip, all or nothing: all are validated first, and one
    /// invalid job rejects the batch with an error naming the job and the field.
    /// [`Orchestrator::submit_each`](crate::Orchestrator::submit_each) stores the valid jobs of
    /// a batch and answers each invalid one with its own error instead.
    async fn submit_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<Submitted>>;

    /// One job.
    async fn get(&self, id: JobId) -> Result<Option<JobRecord>>;

    /// Jobs matching `filter`, a page at a time.
    async fn list(&self, filter: &JobFilter, page: &Page) -> Result<Paged<JobRecord>>;

    /// A job's history.
    async fn events(&self, id: JobId) -> Result<Vec<JobEvent>>;

    /// Cancel a job: queued jobs at once; running ones through their cancellation token.
    async fn cancel(&self, id: JobId) -> Result<CancelOutcome>;

    /// Queue and state counts.
    async fn stats(&self) -> Result<Stats>;
}
