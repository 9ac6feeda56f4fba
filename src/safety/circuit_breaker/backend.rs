//! Breakers around the queue and state backends: a failing backend fails fast.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;

use super::config::CallOutcome;
use super::handler::CircuitBreaker;
use crate::job::{JobEvent, JobId, JobRecord, WorkerId};
use crate::queue::{DeadLetter, Envelope, Lease, QueueManager, QueueStats, Requeue, Reserve};
use crate::state::{
    CancelOutcome, Claim, Created, Heartbeat, Held, JobFilter, Page, Paged, StateCounts,
    StateManager, Transition, TransitionResult,
};
use crate::store::{FinishAndClaim, JobStore};
use crate::{Error, ErrorKind, Result};

/// The breaker key of a wrapped [`QueueManager`].
pub(crate) const QUEUE_KEY: &str = "queue backend";
/// The breaker key of a wrapped [`StateManager`].
pub(crate) const STATE_KEY: &str = "state backend";

impl<S> CircuitBreaker<S> {
    /// Run `call` through the breaker of `key`. `wait` is a deliberate wait inside the call
    /// (a long poll), not counted towards the slow-call duration.
    async fn guard<T>(
        &self,
        key: &'static str,
        wait: Duration,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let registry = self.registry();
        let breaker = self.breaker(key);
        let permit = Self::acquire(&breaker).map_err(|refused| {
            Error::new(
                ErrorKind::Backend,
                format!(
                    "{}, retry after {:?}",
                    refused.message(key),
                    refused.retry_after
                ),
            )
        })?;
        let result = call.await;
        let outcome = match &result {
            Ok(_) => CallOutcome::Success,
            Err(error) => (registry.config().classify_backend)(error),
        };
        let took = permit.elapsed().saturating_sub(wait);
        permit.record(outcome, Some(took));
        result
    }
}

#[async_trait]
impl<Q: QueueManager> QueueManager for CircuitBreaker<Q> {
    async fn enqueue(&self, jobs: &[Envelope]) -> Result<()> {
        self.guard(QUEUE_KEY, Duration::ZERO, self.inner().enqueue(jobs))
            .await
    }

    async fn reserve(&self, req: &Reserve<'_>) -> Result<Vec<Lease>> {
        self.guard(QUEUE_KEY, req.wait, self.inner().reserve(req))
            .await
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>> {
        self.guard(
            QUEUE_KEY,
            Duration::ZERO,
            self.inner().extend(leases, lease),
        )
        .await
    }

    async fn ack(&self, leases: &[Lease]) -> Result<()> {
        self.guard(QUEUE_KEY, Duration::ZERO, self.inner().ack(leases))
            .await
    }

    async fn requeue(&self, items: &[Requeue]) -> Result<()> {
        self.guard(QUEUE_KEY, Duration::ZERO, self.inner().requeue(items))
            .await
    }

    async fn discard(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        self.guard(QUEUE_KEY, Duration::ZERO, self.inner().discard(queue, ids))
            .await
    }

    async fn dead_letter(&self, items: &[DeadLetter]) -> Result<()> {
        self.guard(QUEUE_KEY, Duration::ZERO, self.inner().dead_letter(items))
            .await
    }

    async fn stats(&self) -> Result<QueueStats> {
        self.guard(QUEUE_KEY, Duration::ZERO, self.inner().stats())
            .await
    }

    async fn ping(&self) -> Result<()> {
        self.guard(QUEUE_KEY, Duration::ZERO, self.inner().ping())
            .await
    }
}

#[async_trait]
impl<S: StateManager> StateManager for CircuitBreaker<S> {
    async fn create(&self, jobs: Vec<JobRecord>) -> Result<Vec<Created>> {
        self.guard(STATE_KEY, Duration::ZERO, self.inner().create(jobs))
            .await
    }

    async fn claim(&self, ids: &[JobId], worker: &WorkerId, lease: Duration) -> Result<Vec<Claim>> {
        self.guard(
            STATE_KEY,
            Duration::ZERO,
            self.inner().claim(ids, worker, lease),
        )
        .await
    }

    async fn heartbeat(&self, held: &[Held], lease: Duration) -> Result<Vec<Heartbeat>> {
        self.guard(
            STATE_KEY,
            Duration::ZERO,
            self.inner().heartbeat(held, lease),
        )
        .await
    }

    async fn report_progress(&self, held: Held, progress: &crate::job::Progress) -> Result<bool> {
        self.guard(
            STATE_KEY,
            Duration::ZERO,
            self.inner().report_progress(held, progress),
        )
        .await
    }

    async fn finish(&self, transitions: Vec<Transition>) -> Result<Vec<TransitionResult>> {
        self.guard(STATE_KEY, Duration::ZERO, self.inner().finish(transitions))
            .await
    }

    async fn cancel(&self, id: JobId, reason: &str) -> Result<CancelOutcome> {
        self.guard(STATE_KEY, Duration::ZERO, self.inner().cancel(id, reason))
            .await
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>> {
        self.guard(STATE_KEY, Duration::ZERO, self.inner().get(id))
            .await
    }

    async fn list(&self, filter: &JobFilter, page: &Page) -> Result<Paged<JobRecord>> {
        self.guard(STATE_KEY, Duration::ZERO, self.inner().list(filter, page))
            .await
    }

    async fn events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        self.guard(STATE_KEY, Duration::ZERO, self.inner().events(id))
            .await
    }

    async fn counts(&self) -> Result<StateCounts> {
        self.guard(STATE_KEY, Duration::ZERO, self.inner().counts())
            .await
    }

    async fn ping(&self) -> Result<()> {
        self.guard(STATE_KEY, Duration::ZERO, self.inner().ping())
            .await
    }
}

/// A store behind a breaker is a store: its claims and counts go through the state's breaker.
#[async_trait]
impl<S: JobStore> JobStore for CircuitBreaker<S> {
    async fn claim_due(&self, req: &Reserve<'_>) -> Result<Vec<Claim>> {
        self.guard(STATE_KEY, req.wait, self.inner().claim_due(req))
            .await
    }

    async fn stats(&self) -> Result<QueueStats> {
        self.guard(STATE_KEY, Duration::ZERO, self.inner().stats())
            .await
    }

    fn schedules(&self) -> Option<std::sync::Arc<dyn crate::schedule::ScheduleStore>> {
        self.inner().schedules()
    }

    fn supports_workflows(&self) -> bool {
        self.inner().supports_workflows()
    }

    async fn paused_queues(&self) -> Result<std::collections::BTreeSet<String>> {
        self.guard(STATE_KEY, Duration::ZERO, self.inner().paused_queues())
            .await
    }

    async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<bool> {
        self.guard(
            STATE_KEY,
            Duration::ZERO,
            self.inner().set_queue_paused(queue, paused),
        )
        .await
    }

    async fn queue_depths(&self) -> Result<Vec<crate::queue::QueueDepth>> {
        self.guard(STATE_KEY, Duration::ZERO, self.inner().queue_depths())
            .await
    }

    async fn delete_finished(&self, id: crate::job::JobId) -> Result<crate::store::Deleted> {
        self.guard(STATE_KEY, Duration::ZERO, self.inner().delete_finished(id))
            .await
    }

    async fn finish_and_claim(
        &self,
        transitions: Vec<Transition>,
        req: &Reserve<'_>,
    ) -> Result<FinishAndClaim> {
        self.guard(
            STATE_KEY,
            Duration::ZERO,
            self.inner().finish_and_claim(transitions, req),
        )
        .await
    }
}
