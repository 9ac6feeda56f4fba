use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::layer::Layer;
use crate::handler::{Handler, JobContext, JobError};
use crate::job::{JobEvent, JobId, JobRecord, WorkerId};
use crate::queue::{DeadLetter, Envelope, Lease, QueueManager, QueueStats, Requeue, Reserve};
use crate::state::{
    CancelOutcome, Claim, Created, Heartbeat, Held, JobFilter, Page, Paged, StateCounts,
    StateManager, Transition, TransitionResult,
};
use crate::store::{FinishAndClaim, JobStore};
use crate::{Error, ErrorKind, Result};

/// Builds a [`Timeout`]: a deadline on every call.
///
/// ```
/// use std::time::Duration;
/// use jobforge::safety::{HandlerExt, TimeoutLayer};
/// use jobforge::{handler_fn, JobContext, KindConfig};
///
/// let handler = handler_fn(|_ctx: JobContext| async { Ok(serde_json::Value::Null) })
///     .layer(TimeoutLayer::new(Duration::from_secs(10)));
/// let config = KindConfig::new(handler);
/// # drop(config);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    after: Duration,
}

impl TimeoutLayer {
    /// Calls that run longer than `after` are stopped (their future is dropped).
    #[must_use]
    pub fn new(after: Duration) -> Self {
        Self { after }
    }

    /// The deadline.
    #[must_use]
    pub fn duration(&self) -> Duration {
        self.after
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            after: self.after,
        }
    }
}

/// A deadline on every call of the wrapped handler or backend.
///
/// - Around a [`Handler`]: a call past the deadline ends with [`JobError::timeout`]
///   (retryable, class `timeout`), which a [`CircuitBreaker`](super::CircuitBreaker) outside
///   it counts as a failure.
/// - Around a [`QueueManager`] or [`StateManager`]: a call past the deadline is an
///   [`ErrorKind::Timeout`] error. The deadline of [`QueueManager::reserve`] is extended by
///   the request's own `wait` (its long poll). The deadline is the client's: the backend may
///   still complete the operation, which the engine's compare-and-set and at-least-once
///   delivery tolerate.
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    after: Duration,
}

impl<S> Timeout<S> {
    /// The wrapped value.
    #[must_use]
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The deadline.
    #[must_use]
    pub fn duration(&self) -> Duration {
        self.after
    }

    async fn backend<T>(
        &self,
        what: &'static str,
        extra: Duration,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let limit = self.after.saturating_add(extra);
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("{what} did not finish within {limit:?}"),
            )),
        }
    }
}

#[async_trait]
impl<H: Handler> Handler for Timeout<H> {
    async fn handle(&self, ctx: &JobContext) -> Result<Value, JobError> {
        match tokio::time::timeout(self.after, self.inner.handle(ctx)).await {
            Ok(result) => result,
            Err(_) => Err(JobError::timeout(self.after)),
        }
    }
}

#[async_trait]
impl<Q: QueueManager> QueueManager for Timeout<Q> {
    async fn enqueue(&self, jobs: &[Envelope]) -> Result<()> {
        self.backend("queue enqueue", Duration::ZERO, self.inner.enqueue(jobs))
            .await
    }

    async fn reserve(&self, req: &Reserve<'_>) -> Result<Vec<Lease>> {
        self.backend("queue reserve", req.wait, self.inner.reserve(req))
            .await
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>> {
        self.backend(
            "queue extend",
            Duration::ZERO,
            self.inner.extend(leases, lease),
        )
        .await
    }

    async fn ack(&self, leases: &[Lease]) -> Result<()> {
        self.backend("queue ack", Duration::ZERO, self.inner.ack(leases))
            .await
    }

    async fn requeue(&self, items: &[Requeue]) -> Result<()> {
        self.backend("queue requeue", Duration::ZERO, self.inner.requeue(items))
            .await
    }

    async fn discard(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        self.backend(
            "queue discard",
            Duration::ZERO,
            self.inner.discard(queue, ids),
        )
        .await
    }

    async fn dead_letter(&self, items: &[DeadLetter]) -> Result<()> {
        self.backend(
            "queue dead_letter",
            Duration::ZERO,
            self.inner.dead_letter(items),
        )
        .await
    }

    async fn stats(&self) -> Result<QueueStats> {
        self.backend("queue stats", Duration::ZERO, self.inner.stats())
            .await
    }

    async fn ping(&self) -> Result<()> {
        self.backend("queue ping", Duration::ZERO, self.inner.ping())
            .await
    }
}

#[async_trait]
impl<S: StateManager> StateManager for Timeout<S> {
    async fn create(&self, jobs: Vec<JobRecord>) -> Result<Vec<Created>> {
        self.backend("state create", Duration::ZERO, self.inner.create(jobs))
            .await
    }

    async fn claim(&self, ids: &[JobId], worker: &WorkerId, lease: Duration) -> Result<Vec<Claim>> {
        self.backend(
            "state claim",
            Duration::ZERO,
            self.inner.claim(ids, worker, lease),
        )
        .await
    }

    async fn heartbeat(&self, held: &[Held], lease: Duration) -> Result<Vec<Heartbeat>> {
        self.backend(
            "state heartbeat",
            Duration::ZERO,
            self.inner.heartbeat(held, lease),
        )
        .await
    }

    async fn report_progress(&self, held: Held, progress: &crate::job::Progress) -> Result<bool> {
        self.backend(
            "state progress",
            Duration::ZERO,
            self.inner.report_progress(held, progress),
        )
        .await
    }

    async fn finish(&self, transitions: Vec<Transition>) -> Result<Vec<TransitionResult>> {
        self.backend(
            "state finish",
            Duration::ZERO,
            self.inner.finish(transitions),
        )
        .await
    }

    async fn cancel(&self, id: JobId, reason: &str) -> Result<CancelOutcome> {
        self.backend(
            "state cancel",
            Duration::ZERO,
            self.inner.cancel(id, reason),
        )
        .await
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>> {
        self.backend("state get", Duration::ZERO, self.inner.get(id))
            .await
    }

    async fn list(&self, filter: &JobFilter, page: &Page) -> Result<Paged<JobRecord>> {
        self.backend("state list", Duration::ZERO, self.inner.list(filter, page))
            .await
    }

    async fn events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        self.backend("state events", Duration::ZERO, self.inner.events(id))
            .await
    }

    async fn counts(&self) -> Result<StateCounts> {
        self.backend("state counts", Duration::ZERO, self.inner.counts())
            .await
    }

    async fn ping(&self) -> Result<()> {
        self.backend("state ping", Duration::ZERO, self.inner.ping())
            .await
    }
}

/// A store behind a deadline is a store: claims wait their `wait` on top of the deadline.
#[async_trait]
impl<S: JobStore> JobStore for Timeout<S> {
    async fn claim_due(&self, req: &Reserve<'_>) -> Result<Vec<Claim>> {
        self.backend("store claim_due", req.wait, self.inner.claim_due(req))
            .await
    }

    async fn stats(&self) -> Result<QueueStats> {
        self.backend("store stats", Duration::ZERO, self.inner.stats())
            .await
    }

    fn schedules(&self) -> Option<std::sync::Arc<dyn crate::schedule::ScheduleStore>> {
        self.inner.schedules()
    }

    fn supports_workflows(&self) -> bool {
        self.inner.supports_workflows()
    }

    async fn paused_queues(&self) -> Result<std::collections::BTreeSet<String>> {
        self.backend("paused queues", Duration::ZERO, self.inner.paused_queues())
            .await
    }

    async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<bool> {
        self.backend(
            "pause a queue",
            Duration::ZERO,
            self.inner.set_queue_paused(queue, paused),
        )
        .await
    }

    async fn queue_depths(&self) -> Result<Vec<crate::queue::QueueDepth>> {
        self.backend("queue depths", Duration::ZERO, self.inner.queue_depths())
            .await
    }

    async fn delete_finished(&self, id: crate::job::JobId) -> Result<crate::store::Deleted> {
        self.backend(
            "delete a job",
            Duration::ZERO,
            self.inner.delete_finished(id),
        )
        .await
    }

    async fn finish_and_claim(
        &self,
        transitions: Vec<Transition>,
        req: &Reserve<'_>,
    ) -> Result<FinishAndClaim> {
        self.backend(
            "store finish_and_claim",
            Duration::ZERO,
            self.inner.finish_and_claim(transitions, req),
        )
        .await
    }
}
