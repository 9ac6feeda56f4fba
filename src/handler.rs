//! The user's code: [`Handler`], the [`JobContext`] it receives, and the [`JobError`] it
//! returns.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::job::{JobId, JobRecord, Payload, WorkerId};
use crate::memory::Memory;

/// How a handler's failure should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobErrorKind {
    /// Transient: try again with backoff (or after `retry_after`, if set), while attempts last.
    Retryable,
    /// Will fail again: dead-letter now.
    Permanent,
    /// Not now: put the job back after the delay *without* spending an attempt.
    Defer(Duration),
    /// The job saw its cancellation token and stopped.
    Cancelled,
}

/// A handler's failure: how to treat it, a message, and a short class name used to group
/// errors in [reflection](crate::memory::Reflection) (`timeout`, `panic`, `decode`, or yours).
///
/// ```
/// use std::time::Duration;
/// use jobforge::JobError;
///
/// let e = JobError::retryable("upstream returned 503").with_class("http_503");
/// assert!(e.is_retryable());
/// assert_eq!(e.class(), "http_503");
/// let p = JobError::permanent("no such user");
/// assert!(!p.is_retryable());
/// let d = JobError::defer(Duration::from_secs(5), "quota reached");
/// assert_eq!(d.defer_for(), Some(Duration::from_secs(5)));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct JobError {
    kind: JobErrorKind,
    message: String,
    class: Cow<'static, str>,
    retry_after: Option<Duration>,
}

impl JobError {
    /// A transient failure.
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self::new(JobErrorKind::Retryable, message, "error")
    }

    /// A failure that will not go away by retrying.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self::new(JobErrorKind::Permanent, message, "error")
    }

    /// Put the job back for `after` without spending an attempt.
    pub fn defer(after: Duration, message: impl fmt::Display) -> Self {
        Self::new(JobErrorKind::Defer(after), message, "deferred")
    }

    /// The job stopped because it was cancelled.
    pub fn cancelled(message: impl fmt::Display) -> Self {
        Self::new(JobErrorKind::Cancelled, message, "cancelled")
    }

    /// An attempt that ran past its deadline (retryable, class `timeout`).
    #[must_use]
    pub fn timeout(after: Duration) -> Self {
        Self::new(
            JobErrorKind::Retryable,
            format!("attempt timed out after {after:?}"),
            "timeout",
        )
    }

    fn new(kind: JobErrorKind, message: impl fmt::Display, class: &'static str) -> Self {
        Self {
            kind,
            message: message.to_string(),
            class: Cow::Borrowed(class),
            retry_after: None,
        }
    }

    /// Set the error class (a short, low-cardinality name such as `http_503`).
    #[must_use]
    pub fn with_class(mut self, class: impl Into<Cow<'static, str>>) -> Self {
        self.class = class.into();
        self
    }

    /// For a retryable error: retry after this delay instead of the backoff policy's.
    #[must_use]
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// How to treat it.
    #[must_use]
    pub fn kind(&self) -> JobErrorKind {
        self.kind
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The class.
    #[must_use]
    pub fn class(&self) -> &str {
        &self.class
    }

    /// The retry delay the handler asked for, if any.
    #[must_use]
    pub fn requested_retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether another attempt may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.kind == JobErrorKind::Retryable
    }

    /// For a deferral, how long to wait.
    #[must_use]
    pub fn defer_for(&self) -> Option<Duration> {
        match self.kind {
            JobErrorKind::Defer(after) => Some(after),
            _ => None,
        }
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobError")
            .field("kind", &self.kind)
            .field("class", &self.class)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.message)
    }
}

impl std::error::Error for JobError {}

impl From<crate::Error> for JobError {
    /// Library errors inside a handler: retryable when the library says so.
    fn from(err: crate::Error) -> Self {
        let class = err.kind().as_str();
        if err.is_retryable() {
            JobError::retryable(err).with_class(class)
        } else {
            JobError::permanent(err).with_class(class)
        }
    }
}

struct Shared {
    record: JobRecord,
    worker: WorkerId,
    memory: Arc<dyn Memory>,
    decision: parking_lot::Mutex<Option<String>>,
    inline_retries: std::sync::atomic::AtomicU32,
    /// Where a workflow step reads its dependencies' results, and progress reports go (the
    /// engine sets it).
    store: Option<Arc<dyn crate::state::StateManager>>,
    /// When the last progress report was written (µs since 1970; 0: never), for the
    /// throttle.
    progress_at: std::sync::atomic::AtomicI64,
}

/// A job's record as its context holds it, without the context's token: what the worker
/// keeps of a running job for its watchdog (a reference count, no copy).
#[derive(Clone)]
pub(crate) struct SharedRecord(Arc<Shared>);

impl SharedRecord {
    pub(crate) fn get(&self) -> &JobRecord {
        &self.0.record
    }
}

/// What a handler sees: the job, its attempt, a cancellation token, and the
/// [`Memory`]. Cheap to clone.
#[derive(Clone)]
pub struct JobContext {
    shared: Arc<Shared>,
    token: CancellationToken,
    idempotent: bool,
}

impl JobContext {
    /// A context for `record`, as the engine makes one (also useful to test handlers).
    pub fn new(
        record: JobRecord,
        worker: WorkerId,
        memory: Arc<dyn Memory>,
        token: CancellationToken,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                record,
                worker,
                memory,
                decision: parking_lot::Mutex::new(None),
                inline_retries: std::sync::atomic::AtomicU32::new(0),
                store: None,
                progress_at: std::sync::atomic::AtomicI64::new(0),
            }),
            token,
            idempotent: false,
        }
    }

    /// Let the handler read its dependencies' results ([`dependency`](Self::dependency)) and
    /// keep progress reports ([`progress`](Self::progress)) in `store`. The engine sets it;
    /// a test of a handler passes the store it filled.
    #[must_use]
    pub fn with_store(mut self, store: Arc<dyn crate::state::StateManager>) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.store = Some(store),
            None => {
                let old = Arc::clone(&self.shared);
                self.shared = Arc::new(Shared {
                    record: old.record.clone(),
                    worker: old.worker.clone(),
                    memory: Arc::clone(&old.memory),
                    decision: parking_lot::Mutex::new(old.decision.lock().clone()),
                    inline_retries: std::sync::atomic::AtomicU32::new(
                        old.inline_retries
                            .load(std::sync::atomic::Ordering::Relaxed),
                    ),
                    store: Some(store),
                    progress_at: std::sync::atomic::AtomicI64::new(
                        old.progress_at.load(std::sync::atomic::Ordering::Relaxed),
                    ),
                });
            }
        }
        self
    }

    /// Least time between two progress reports written for one attempt.
    pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

    /// Report how far the job has got: `fraction` done (clamped to 0..=1) and what it is
    /// doing (`""` for nothing), kept on its record while this attempt holds the job, and
    /// shown by `get` and `GET /v1/jobs/{id}`. At most one report per
    /// [`PROGRESS_EVERY`](Self::PROGRESS_EVERY) is written (the first always); the ones in
    /// between are skipped, so a handler may report as often as it likes. A report of an
    /// attempt that lost its claim is dropped. Errors (retryable) only when the store could
    /// not be reached; a context without a store (a test's) keeps nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> jobforge::Result<()> {
    /// use std::time::Duration;
    /// use jobforge::prelude::*;
    ///
    /// let orchestrator = Orchestrator::builder()
    ///     .handler("import", |ctx: JobContext| async move {
    ///         ctx.progress(0.5, "half of the rows imported").await?;
    ///         Ok(serde_json::Value::Null)
    ///     })
    ///     .build()?;
    /// let id = orchestrator.submit(NewJob::new("import")).await?.id;
    /// let workers = orchestrator.start_workers(WorkerConfig::default())?;
    /// let done = orchestrator.wait_for(id, Duration::from_secs(10)).await?;
    /// let progress = done.progress.expect("reported");
    /// assert_eq!((progress.fraction, progress.message.as_deref()), (0.5, Some("half of the rows imported")));
    /// workers.shutdown(Duration::from_secs(5)).await;
    /// # Ok(()) }
    /// ```
    pub async fn progress(&self, fraction: f64, message: &str) -> Result<(), JobError> {
        use std::sync::atomic::Ordering;
        let Some(store) = &self.shared.store else {
            return Ok(());
        };
        let now = crate::util::micros(chrono::Utc::now());
        let last = self.shared.progress_at.load(Ordering::Relaxed);
        let every = i64::try_from(Self::PROGRESS_EVERY.as_micros()).unwrap_or(i64::MAX);
        if last != 0 && now.saturating_sub(last) < every {
            return Ok(());
        }
        if self
            .shared
            .progress_at
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            // Another report of this attempt (a hedged copy) took this turn.
            return Ok(());
        }
        let report = crate::job::Progress::new(fraction, (!message.is_empty()).then_some(message));
        let held = crate::state::Held::of(&self.shared.record);
        store
            .report_progress(held, &report)
            .await
            .map(|_| ())
            .map_err(|e| JobError::retryable(format!("keeping a progress report: {e}")))
    }

    /// Where this job stands in its workflow, if it is a step.
    #[must_use]
    pub fn step(&self) -> Option<&crate::workflow::StepLink> {
        self.shared.record.step.as_deref()
    }

    /// The result of the dependency named `name` (a step this one runs after), decoded:
    /// `None` when it has none (a skipped step, or a handler that returned nothing).
    ///
    /// An error (permanent, of class `workflow`) when this job is not a workflow step, has
    /// no dependency of that name, the dependency is no longer kept (past the store's
    /// retention), or the result does not decode as `T`; retryable when the store could not
    /// be read.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> jobforge::Result<()> {
    /// use std::time::Duration;
    /// use jobforge::prelude::*;
    /// use jobforge::workflow::Workflow;
    ///
    /// let orchestrator = Orchestrator::builder()
    ///     .handler("price", |_ctx: JobContext| async { Ok(serde_json::json!(42)) })
    ///     .handler("invoice", |ctx: JobContext| async move {
    ///         let price: u32 = ctx.dependency("price").await?.unwrap_or(0);
    ///         Ok(serde_json::json!(price * 2))
    ///     })
    ///     .build()?;
    /// let wf = Workflow::new("order");
    /// let price = wf.add(NewJob::new("price"));
    /// let invoice = wf.add(NewJob::new("invoice")).after(&price);
    /// let invoice_id = invoice.id();
    /// orchestrator.submit_workflow(wf).await?;
    /// let workers = orchestrator.start_workers(WorkerConfig::default())?;
    /// let done = orchestrator.wait_for(invoice_id, Duration::from_secs(10)).await?;
    /// assert_eq!(done.result.map(|r| r.as_str().to_owned()).as_deref(), Some("84"));
    /// workers.shutdown(Duration::from_secs(5)).await;
    /// # Ok(()) }
    /// ```
    pub async fn dependency<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, JobError> {
        let found = self
            .dependencies()
            .await?
            .into_iter()
            .find(|d| d.name == name);
        let Some(dep) = found else {
            let names: Vec<String> = self
                .dependencies()
                .await
                .map(|d| d.into_iter().map(|d| d.name).collect())
                .unwrap_or_default();
            return Err(JobError::permanent(format!(
                "this step has no dependency named `{name}` (its dependencies: {})",
                names.join(", ")
            ))
            .with_class("workflow"));
        };
        if dep.state.is_none() {
            return Err(JobError::permanent(format!(
                "the dependency `{name}` ({}) is no longer kept (it finished longer ago than the store's retention), so its result is gone",
                dep.id
            ))
            .with_class("workflow"));
        }
        match dep.result {
            None => Ok(None),
            Some(payload) => payload.decode().map(Some).map_err(|e| {
                JobError::permanent(format!("the result of `{name}`: {}", e.message()))
                    .with_class("workflow")
            }),
        }
    }

    /// Every dependency of this step as it ended: its name, state (`Succeeded`, or `Dead`
    /// or `Cancelled` for a step whose policy runs it anyway), result and last error. A
    /// batch's callback counts outcomes with it.
    pub async fn dependencies(&self) -> Result<Vec<crate::workflow::Dependency>, JobError> {
        let Some(link) = self.step() else {
            return Err(
                JobError::permanent("this job is not a workflow step").with_class("workflow")
            );
        };
        let Some(store) = &self.shared.store else {
            return Err(JobError::permanent(
                "this context has no store to read dependencies from; the engine sets one for workflow steps (tests: JobContext::with_store)",
            )
            .with_class("workflow"));
        };
        crate::workflow::read_dependencies(store.as_ref(), link)
            .await
            .map_err(|e| JobError::retryable(format!("reading this step's dependencies: {e}")))
    }

    /// Mark the job's kind as idempotent (running it twice at once is harmless), which
    /// strategies such as hedging require. The engine sets this from the kind's configuration.
    #[must_use]
    pub fn with_idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// Whether the job's kind is marked idempotent.
    #[must_use]
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// A context for the same job with its own token, cancelled when this one is (used to run
    /// hedged attempts that can be stopped one by one).
    #[must_use]
    pub fn child(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            token: self.token.child_token(),
            idempotent: self.idempotent,
        }
    }

    /// The job's id.
    #[must_use]
    pub fn id(&self) -> JobId {
        self.shared.record.id
    }

    /// The job's kind.
    #[must_use]
    pub fn kind(&self) -> &str {
        &self.shared.record.kind
    }

    /// The raw payload.
    #[must_use]
    pub fn payload(&self) -> &Payload {
        &self.shared.record.payload
    }

    /// Decode the payload. A payload that does not fit is a *permanent* error of class
    /// `decode`, since retrying will not change it.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        self.shared
            .record
            .payload
            .decode()
            .map_err(|e| JobError::permanent(e.message()).with_class("decode"))
    }

    /// This attempt's number (1 for the first).
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.shared.record.attempt
    }

    /// Attempts allowed in all.
    #[must_use]
    pub fn max_attempts(&self) -> u32 {
        self.shared.record.max_attempts
    }

    /// The whole stored record (tags, tenant, timestamps...).
    #[must_use]
    pub fn record(&self) -> &JobRecord {
        &self.shared.record
    }

    /// The record, shared (see [`SharedRecord`]).
    pub(crate) fn shared_record(&self) -> SharedRecord {
        SharedRecord(Arc::clone(&self.shared))
    }

    /// The worker running the job.
    #[must_use]
    pub fn worker(&self) -> &WorkerId {
        &self.shared.worker
    }

    /// The engine's memory: keep and read context across jobs.
    #[must_use]
    pub fn memory(&self) -> &dyn Memory {
        self.shared.memory.as_ref()
    }

    /// Whether the job was cancelled (or the attempt abandoned). Check it in long loops.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when the job is cancelled; `select!` on it around long awaits.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// The cancellation token itself.
    #[must_use]
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.token
    }

    /// Record why this execution ran the way it did (strategies call this; it is stored
    /// with the execution record).
    pub fn set_decision(&self, decision: impl Into<String>) {
        *self.shared.decision.lock() = Some(decision.into());
    }

    /// Count one in-process retry (strategies that retry inside a delivery call this; the
    /// count is stored with the execution record and feeds reflection).
    pub fn add_inline_retry(&self) {
        self.shared
            .inline_retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// In-process retries made in this execution so far.
    #[must_use]
    pub fn inline_retries(&self) -> u32 {
        self.shared
            .inline_retries
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The decision recorded for this execution, if any.
    #[must_use]
    pub fn decision(&self) -> Option<String> {
        self.shared.decision.lock().clone()
    }
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.id())
            .field("kind", &self.kind())
            .field("attempt", &self.attempt())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// The user's code for one kind of job.
///
/// Implement it on a type, or pass an async closure `|ctx: JobContext| async move { ... }`
/// returning `Result<serde_json::Value, JobError>` (see [`handler_fn`]).
///
/// ```
/// use async_trait::async_trait;
/// use jobforge::{Handler, JobContext, JobError};
/// use serde_json::{json, Value};
///
/// struct Resize;
///
/// #[async_trait]
/// impl Handler for Resize {
///     async fn handle(&self, ctx: &JobContext) -> Result<Value, JobError> {
///         #[derive(serde::Deserialize)]
///         struct Args { width: u32 }
///         let args: Args = ctx.decode()?;
///         Ok(json!({"width": args.width}))
///     }
/// }
///
/// let handler: std::sync::Arc<dyn Handler> = std::sync::Arc::new(Resize);
/// # drop(handler);
/// ```
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Run one attempt of the job.
    async fn handle(&self, ctx: &JobContext) -> Result<Value, JobError>;
}

#[async_trait]
impl<F, Fut> Handler for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, JobError>> + Send + 'static,
{
    async fn handle(&self, ctx: &JobContext) -> Result<Value, JobError> {
        (self)(ctx.clone()).await
    }
}

#[async_trait]
impl Handler for Arc<dyn Handler> {
    async fn handle(&self, ctx: &JobContext) -> Result<Value, JobError> {
        self.as_ref().handle(ctx).await
    }
}

/// Turn an async closure into a shareable handler.
///
/// ```
/// use jobforge::{handler_fn, JobContext, JobError};
///
/// let echo = handler_fn(|ctx: JobContext| async move {
///     ctx.payload().to_value().map_err(JobError::from)
/// });
/// # drop(echo);
/// ```
pub fn handler_fn<F, Fut>(f: F) -> Arc<dyn Handler>
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, JobError>> + Send + 'static,
{
    Arc::new(f)
}
