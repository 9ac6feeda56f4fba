use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use super::api::{JobOrchestrator, Stats, Submitted};
use super::builder::OrchestratorBuilder;
use super::kind::KindConfig;
use super::running::RunningJobs;
use crate::job::{JobEvent, JobId, JobRecord, JobState, Limits, NewJob};
use crate::memory::Memory;
use crate::state::{CancelOutcome, Created, JobFilter, Page, Paged};
use crate::store::JobStore;
use crate::strategy::{RetryPolicy, Strategy};
use crate::workflow::{Workflow, WorkflowId, WorkflowStatus};
use crate::{Error, ErrorKind, Result};

/// Maps looked up by kind or strategy name on every job: a fast hasher (names are few and set
/// by the host's code, not by submitters).
pub(crate) type NameMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

pub(crate) struct Engine {
    /// Records, the state machine, history and delivery: the one storage seam.
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) memory: Arc<dyn Memory>,
    pub(crate) kinds: NameMap<KindConfig>,
    pub(crate) strategies: NameMap<Arc<dyn Strategy>>,
    pub(crate) default_strategy: String,
    /// The default strategy itself (checked to be registered at build).
    pub(crate) default: Arc<dyn Strategy>,
    pub(crate) default_retry: RetryPolicy,
    pub(crate) limits: Limits,
    /// What the worker pools of this process run, so a cancel reaches a running job at
    /// once; and their names, so no two of them share one.
    pub(crate) running: RunningJobs,
    /// What this process's schedulers did (every pool's, and `Schedules::fire_due`).
    pub(crate) scheduler: crate::schedule::SchedulerMetrics,
    /// Bumped when this process pauses or resumes a queue: its own pools read the paused
    /// queues at once instead of at their next second.
    pub(crate) queues_changed: tokio::sync::watch::Sender<u64>,
}

impl Engine {
    pub(crate) fn retry_for(&self, kind: &str) -> RetryPolicy {
        self.retry_of(self.kinds.get(kind))
    }

    /// The retry policy of a kind already looked up (`None`: not registered here).
    pub(crate) fn retry_of(&self, kind: Option<&KindConfig>) -> RetryPolicy {
        kind.and_then(|k| k.retry).unwrap_or(self.default_retry)
    }

    /// The strategy for a job of `kind` (looked up by the caller): its own, else its
    /// kind's, else the default.
    pub(crate) fn strategy_for(
        &self,
        record: &JobRecord,
        kind: Option<&KindConfig>,
    ) -> &Arc<dyn Strategy> {
        let named = record
            .strategy
            .as_deref()
            .or_else(|| kind.and_then(|k| k.strategy.as_deref()));
        if let Some(strategy) = named.and_then(|n| self.strategies.get(n)) {
            return strategy;
        }
        if let Some(name) = named {
            tracing::warn!(job_id = %record.id, strategy = name, "strategy not registered on this worker; using the default");
        }
        &self.default
    }
}

/// The orchestrator: submit, inspect and cancel jobs, and run worker pools. Cheap to clone;
/// clones share everything.
///
/// Build it with [`Orchestrator::builder`]; every backend defaults to the in-memory one.
#[derive(Clone)]
pub struct Orchestrator {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kinds: Vec<&String> = self.engine.kinds.keys().collect();
        kinds.sort();
        f.debug_struct("Orchestrator")
            .field("kinds", &kinds)
            .field("default_strategy", &self.engine.default_strategy)
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// Start building.
    #[must_use]
    pub fn builder() -> OrchestratorBuilder {
        OrchestratorBuilder::default()
    }

    pub(crate) fn from_engine(engine: Engine) -> Self {
        Self {
            engine: Arc::new(engine),
        }
    }

    pub(crate) fn from_shared(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The store: records, the state machine, history and delivery.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.engine.store
    }

    /// The memory.
    #[must_use]
    pub fn memory(&self) -> &Arc<dyn Memory> {
        &self.engine.memory
    }

    /// The kinds this orchestrator has handlers for, sorted.
    #[must_use]
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.engine.kinds.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds
    }

    /// The registered strategy names, sorted.
    #[must_use]
    pub fn strategies(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.engine.strategies.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Wait until job `id` reaches a terminal state, up to `timeout`
    /// ([`ErrorKind::Timeout`] after that; [`ErrorKind::NotFound`] if there is no such job).
    pub async fn wait_for(&self, id: JobId, timeout: Duration) -> Result<JobRecord> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            match self.engine.store.get(id).await? {
                Some(record) if record.is_terminal() => return Ok(record),
                Some(record) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "job {id} is still {} after {timeout:?}; wait longer or check that workers serve queue `{}`",
                                record.state, record.queue
                            ),
                        ));
                    }
                }
                None => return Err(Error::new(ErrorKind::NotFound, format!("no job {id}"))),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Wait until no job is queued or running, up to `timeout` ([`ErrorKind::Timeout`]
    /// after that).
    pub async fn wait_idle(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        // The first looks again only yield: the last finishes of a drain land within
        // microseconds on the embedded store, and Tokio's timer sleeps a millisecond at least.
        let mut quick_looks = 8u32;
        loop {
            let counts = self.engine.store.counts().await?;
            if counts.total.active() == 0 {
                return Ok(());
            }
            if quick_looks > 0 {
                quick_looks -= 1;
                tokio::task::yield_now().await;
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{} jobs queued and {} running after {timeout:?}",
                        counts.total.queued, counts.total.running
                    ),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    fn prepare(&self, job: NewJob, now: chrono::DateTime<Utc>) -> Result<JobRecord> {
        let engine = &self.engine;
        job.validate(&engine.limits)?;
        if let Some(name) = job.strategy_name() {
            if !engine.strategies.contains_key(name) {
                let mut names: Vec<&str> = engine.strategies.keys().map(String::as_str).collect();
                names.sort_unstable();
                return Err(Error::invalid_input(
                    "strategy",
                    format!(
                        "`{name}` is not a registered strategy (registered: {})",
                        names.join(", ")
                    ),
                ));
            }
        }
        let max_attempts = engine.retry_for(job.kind()).max_attempts;
        Ok(JobRecord::from_new(job, max_attempts, now))
    }

    /// Store validated records in one round trip; answers per record, in order.
    async fn store_records(&self, records: Vec<JobRecord>) -> Result<Vec<Submitted>> {
        let n = records.len();
        let created = self.engine.store.create(records).await?;
        if created.len() != n {
            return Err(Error::new(
                ErrorKind::Backend,
                format!("the store answered {} results for {n} jobs", created.len()),
            ));
        }
        Ok(created
            .into_iter()
            .map(|c| Submitted {
                id: c.id(),
                created: matches!(c, Created::New(_)),
            })
            .collect())
    }

    /// Submit many jobs in one round trip, each on its own: a job that fails validation is
    /// answered with its error (which names the job and the field) and is not stored, while
    /// the others are. [`submit_batch`](JobOrchestrator::submit_batch) is all or nothing
    /// instead. The outer error is the store's: then nothing is known to be stored.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> jobforge::Result<()> {
    /// use jobforge::prelude::*;
    /// use jobforge::Payload;
    ///
    /// let orchestrator = Orchestrator::builder().build()?;
    /// let deep = Payload::from_json(format!("{}{}", "[".repeat(500), "]".repeat(500)))?;
    /// let answers = orchestrator
    ///     .submit_each(vec![NewJob::new("a"), NewJob::new("b").raw_payload(deep)])
    ///     .await?;
    /// assert!(answers[0].is_ok());
    /// assert_eq!(answers[1].as_ref().err().and_then(|e| e.field()), Some("payload"));
    /// # Ok(()) }
    /// ```
    pub async fn submit_each(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<Submitted>>> {
        let now = Utc::now();
        let mut answers: Vec<Option<Result<Submitted>>> = Vec::with_capacity(jobs.len());
        let mut records = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.into_iter().enumerate() {
            let id = job.id();
            match self.prepare(job, now) {
                Ok(record) => {
                    records.push(record);
                    answers.push(None);
                }
                Err(e) => answers.push(Some(Err(e.about(format_args!("job {i} ({id})"))))),
            }
        }
        let mut stored = if records.is_empty() {
            Vec::new()
        } else {
            self.store_records(records).await?
        }
        .into_iter();
        answers
            .into_iter()
            .map(|a| match a {
                Some(rejected) => Ok(rejected),
                None => stored.next().map(Ok).ok_or_else(|| {
                    Error::new(ErrorKind::Backend, "the store answered too few jobs")
                }),
            })
            .collect()
    }
}

#[async_trait]
impl JobOrchestrator for Orchestrator {
    async fn submit(&self, job: NewJob) -> Result<Submitted> {
        let mut out = self.submit_batch(vec![job]).await?;
        out.pop().ok_or_else(|| {
            Error::new(
                ErrorKind::Backend,
                "state store answered no result for one job",
            )
        })
    }

    async fn submit_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<Submitted>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let records = jobs
            .into_iter()
            .enumerate()
            .map(|(i, job)| {
                let id = job.id();
                self.prepare(job, now)
                    .map_err(|e| e.about(format_args!("job {i} of the batch ({id})")))
            })
            .collect::<Result<Vec<_>>>()?;
        self.store_records(records).await
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>> {
        self.engine.store.get(id).await
    }

    async fn list(&self, filter: &JobFilter, page: &Page) -> Result<Paged<JobRecord>> {
        self.engine.store.list(filter, page).await
    }

    async fn events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        self.engine.store.events(id).await
    }

    async fn cancel(&self, id: JobId) -> Result<CancelOutcome> {
        let outcome = self.engine.store.cancel(id, "cancelled by request").await?;
        if outcome == CancelOutcome::Requested {
            // Fast path: if a pool of this process runs the job, fire its token now; remote
            // workers learn it at their next heartbeat.
            self.engine.running.cancel(id);
        }
        tracing::info!(job_id = %id, ?outcome, "cancel");
        Ok(outcome)
    }

    async fn stats(&self) -> Result<Stats> {
        let (queue, jobs) = tokio::join!(self.engine.store.stats(), self.engine.store.counts());
        Ok(Stats {
            queue: queue?,
            jobs: jobs?,
        })
    }

    async fn submit_workflow(&self, workflow: Workflow) -> Result<WorkflowId> {
        if !self.engine.store.supports_workflows() {
            return Err(Error::new(
                ErrorKind::Configuration,
                "this store does not keep workflows yet; use the in-memory, PostgreSQL or Redis store",
            ));
        }
        let now = Utc::now();
        let (id, records) = workflow.to_records(|job| self.prepare(job, now))?;
        let n = records.len();
        let created = self.engine.store.create(records).await?;
        let stored = created
            .iter()
            .filter(|c| matches!(c, Created::New(_)))
            .count();
        if stored != n {
            // Step ids are fresh and steps carry no idempotency keys: only a store that
            // broke its contract gets here.
            return Err(Error::new(
                ErrorKind::Backend,
                format!("the store kept {stored} of the workflow's {n} steps"),
            ));
        }
        workflow.mark_submitted();
        tracing::info!(workflow_id = %id, steps = n, "workflow submitted");
        Ok(id)
    }

    async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowStatus>> {
        let steps = self.workflow_steps(id).await?;
        Ok(WorkflowStatus::of(id, &steps))
    }

    async fn cancel_workflow(&self, id: WorkflowId) -> Result<u64> {
        let steps = self.workflow_steps(id).await?;
        if steps.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no workflow {id} (it may have finished longer ago than the retention)"),
            ));
        }
        // Waiting steps first, each before the steps it waits for (the reverse of the
        // graph's order), so none is settled by a dependency's cancel: a step that skips
        // would end `Succeeded`, one that runs anyway would be queued and could start.
        let depth = crate::workflow::depths(&steps);
        let mut order: Vec<(usize, &JobRecord)> = steps
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_terminal())
            .collect();
        order.sort_by_key(|(i, r)| (r.state != JobState::Pending, std::cmp::Reverse(depth[*i])));
        let order: Vec<&JobRecord> = order.into_iter().map(|(_, r)| r).collect();
        let mut n = 0;
        for record in order {
            match self
                .engine
                .store
                .cancel(record.id, "workflow cancelled")
                .await?
            {
                CancelOutcome::Cancelled => n += 1,
                CancelOutcome::Requested => {
                    self.engine.running.cancel(record.id);
                    n += 1;
                }
                CancelOutcome::AlreadyFinished(_) => {}
            }
        }
        tracing::info!(workflow_id = %id, steps = n, "workflow cancelled");
        Ok(n)
    }

    async fn delete(&self, id: JobId) -> Result<()> {
        use crate::store::Deleted;
        match self.engine.store.delete_finished(id).await? {
            Deleted::Deleted => {
                tracing::info!(job_id = %id, "job deleted");
                Ok(())
            }
            Deleted::NotFinished(state) => Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "job {id} is {state}; only a finished job (succeeded, dead or cancelled) \
                     can be deleted: cancel it first, or wait for it to end"
                ),
            )),
            Deleted::Step => Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "job {id} is a workflow step; steps are kept as long as their workflow \
                     (their retention deletes them)"
                ),
            )),
            Deleted::NotFound => Err(Error::new(
                ErrorKind::NotFound,
                format!("no job {id}; it may have been deleted already, or have left retention"),
            )),
        }
    }

    async fn pause_queue(&self, queue: &str) -> Result<bool> {
        self.set_queue_paused(queue, true).await
    }

    async fn resume_queue(&self, queue: &str) -> Result<bool> {
        self.set_queue_paused(queue, false).await
    }

    async fn paused_queues(&self) -> Result<std::collections::BTreeSet<String>> {
        self.engine.store.paused_queues().await
    }

    async fn queue_depths(&self) -> Result<Vec<crate::queue::QueueDepth>> {
        self.engine.store.queue_depths().await
    }
}

impl Orchestrator {
    /// Pause or resume `queue` in the store; when that changed anything, this process's pools
    /// look again at once (others within their next read, about a second).
    async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<bool> {
        crate::job::check_queue_name(queue, &self.engine.limits)?;
        let changed = self.engine.store.set_queue_paused(queue, paused).await?;
        if changed {
            self.engine
                .queues_changed
                .send_modify(|g| *g = g.wrapping_add(1));
            tracing::info!(queue, paused, "queue paused or resumed");
        }
        Ok(changed)
    }

    /// Every step of workflow `id`, in id order (the order they were added).
    async fn workflow_steps(&self, id: WorkflowId) -> Result<Vec<JobRecord>> {
        let filter = JobFilter {
            workflow: Some(id),
            ..JobFilter::default()
        };
        let mut page = Page::first(Page::MAX_LIMIT);
        let mut steps = Vec::new();
        loop {
            let listed = self.engine.store.list(&filter, &page).await?;
            steps.extend(listed.items);
            match listed.next {
                Some(next) => page = page.after(next),
                None => return Ok(steps),
            }
        }
    }
}
