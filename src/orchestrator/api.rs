use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::job::{JobEvent, JobId, JobRecord, NewJob};
use crate::queue::QueueStats;
use crate::state::{CancelOutcome, JobFilter, Page, Paged, StateCounts};
use crate::workflow::{Workflow, WorkflowId, WorkflowStatus};
use crate::{Error, ErrorKind};

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

    /// Submit a workflow ([`crate::workflow`]): every step is stored, or none is. Answers
    /// the workflow's id.
    async fn submit_workflow(&self, workflow: Workflow) -> Result<WorkflowId> {
        let _ = workflow;
        Err(Error::new(
            ErrorKind::Configuration,
            "this orchestrator does not run workflows",
        ))
    }

    /// A workflow's steps with their states and edges, and its progress; `None` for a
    /// workflow this store does not know (or no longer keeps).
    async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowStatus>> {
        let _ = id;
        Ok(None)
    }

    /// Run a dead job again, as a new job: the same kind, payload, queue, priority, attempts,
    /// timeout, tags, tenant and strategy, tagged `retry-of:<id>`. The dead job and its
    /// history stay as they are (a finished job never changes state again). Asking twice
    /// answers the first copy (`created: false`): the copy's idempotency key is
    /// `jobforge:retry:<id>`.
    ///
    /// A job that is not dead is a [`ErrorKind::Conflict`] error, as is a workflow step (its
    /// dependents were settled when it died; resubmit the workflow instead); a job not found
    /// is [`ErrorKind::NotFound`].
    ///
    /// ```
    /// use jobforge::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> jobforge::Result<()> {
    /// let orchestrator = Orchestrator::builder().build()?;
    /// let id = orchestrator.submit(NewJob::new("report")).await?.id;
    /// let err = orchestrator.retry(id).await.err().map(|e| e.kind());
    /// assert_eq!(err, Some(jobforge::ErrorKind::Conflict), "a queued job is not retried");
    /// # Ok(())
    /// # }
    /// ```
    async fn retry(&self, id: JobId) -> Result<Submitted> {
        let Some(dead) = self.get(id).await? else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no job {id}; it may never have existed, or have left retention"),
            ));
        };
        if dead.state != crate::JobState::Dead {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "job {id} is {}; only a dead job can be retried (cancel a running one first, \
                     or wait for it to end)",
                    dead.state
                ),
            ));
        }
        if let Some(step) = &dead.step {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "job {id} is step `{}` of workflow {}; its dependents were settled when it \
                     died, so it cannot run again alone: submit the workflow again",
                    step.name, step.workflow
                ),
            ));
        }
        let mut job = NewJob::new(dead.kind)
            .raw_payload(dead.payload)
            .queue(dead.queue)
            .priority(dead.priority)
            .max_attempts(dead.max_attempts)
            .idempotency_key(format!("jobforge:retry:{id}"));
        for tag in dead
            .tags
            .into_iter()
            .filter(|t| !t.starts_with("retry-of:"))
        {
            job = job.tag(tag);
        }
        job = job.tag(format!("retry-of:{id}"));
        if let Some(timeout) = dead.timeout {
            job = job.timeout(timeout);
        }
        if let Some(tenant) = dead.tenant {
            job = job.tenant(tenant);
        }
        if let Some(strategy) = dead.strategy {
            job = job.strategy(strategy);
        }
        self.submit(job).await
    }

    /// Delete a finished job (succeeded, dead or cancelled) now, with its history, instead
    /// of when its retention ends; its idempotency key is free again.
    ///
    /// A job that is not finished is a [`ErrorKind::Conflict`] error (cancel it first), as
    /// is a workflow step (it is kept as long as its workflow); a job not found is
    /// [`ErrorKind::NotFound`]; a store that cannot delete jobs answers a configuration
    /// error.
    ///
    /// ```
    /// use jobforge::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> jobforge::Result<()> {
    /// let orchestrator = Orchestrator::builder().build()?;
    /// let id = orchestrator.submit(NewJob::new("report")).await?.id;
    /// let err = orchestrator.delete(id).await.err().map(|e| e.kind());
    /// assert_eq!(err, Some(jobforge::ErrorKind::Conflict), "a queued job is not deleted");
    /// orchestrator.cancel(id).await?;
    /// orchestrator.delete(id).await?;
    /// assert!(orchestrator.get(id).await?.is_none());
    /// # Ok(())
    /// # }
    /// ```
    async fn delete(&self, id: JobId) -> Result<()> {
        let _ = id;
        Err(Error::new(
            ErrorKind::Configuration,
            "this orchestrator cannot delete jobs",
        ))
    }

    /// Pause a queue, fleet-wide: no worker pool on this store claims its jobs until it is
    /// resumed (each pool reads the paused queues about once a second). Jobs can still be
    /// submitted to it, and jobs already claimed run to their end. Answers whether it was
    /// running before. A store that cannot pause queues answers a configuration error.
    async fn pause_queue(&self, queue: &str) -> Result<bool> {
        let _ = queue;
        Err(Error::new(
            ErrorKind::Configuration,
            "this orchestrator cannot pause queues",
        ))
    }

    /// Resume a paused queue; answers whether it was paused.
    async fn resume_queue(&self, queue: &str) -> Result<bool> {
        let _ = queue;
        Err(Error::new(
            ErrorKind::Configuration,
            "this orchestrator cannot pause queues",
        ))
    }

    /// The queues paused now.
    async fn paused_queues(&self) -> Result<std::collections::BTreeSet<String>> {
        Ok(std::collections::BTreeSet::new())
    }

    /// Jobs waiting per queue, due ones per priority, as the store counts them
    /// ([`JobStore::queue_depths`](crate::store::JobStore::queue_depths)): empty where the
    /// store cannot tell.
    async fn queue_depths(&self) -> Result<Vec<crate::queue::QueueDepth>> {
        Ok(Vec::new())
    }

    /// Cancel every unfinished step of a workflow: pending and queued steps at once, running
    /// ones through their cancellation token. Answers how many steps it cancelled or asked
    /// to stop. An unknown workflow is a [`ErrorKind::NotFound`] error.
    async fn cancel_workflow(&self, id: WorkflowId) -> Result<u64> {
        Err(Error::new(ErrorKind::NotFound, format!("no workflow {id}")))
    }
}
