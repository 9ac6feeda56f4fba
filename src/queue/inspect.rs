use std::time::Duration;

use async_trait::async_trait;

use super::types::Envelope;
use crate::Result;

/// An optional capability of a queue: answer whether it holds given jobs, and hold a named
/// lock. The [reconciler](crate::store::Reconciler) needs it to find jobs that the
/// state store has as `Queued` but the queue lost (a Redis restart without persistence, a
/// crash between the two writes of a submit), and to run in one worker at a time.
///
/// Batch-first and bounded: callers pass at most a page of jobs (up to 1,000) per call.
///
/// ```
/// use std::collections::HashSet;
/// use std::time::Duration;
/// use async_trait::async_trait;
/// use jobforge::queue::{Envelope, QueueInspect};
/// use jobforge::{JobId, Result};
///
/// struct Fixed(HashSet<JobId>);
///
/// #[async_trait]
/// impl QueueInspect for Fixed {
///     async fn contains(&self, jobs: &[Envelope]) -> Result<Vec<bool>> {
///         Ok(jobs.iter().map(|j| self.0.contains(&j.id)).collect())
///     }
///     async fn try_lock(&self, _name: &str, _holder: &str, _ttl: Duration) -> Result<bool> {
///         Ok(true) // one process: always the leader
///     }
/// }
///
/// let inspect: std::sync::Arc<dyn QueueInspect> = std::sync::Arc::new(Fixed(HashSet::new()));
/// # drop(inspect);
/// ```
#[async_trait]
pub trait QueueInspect: Send + Sync + 'static {
    /// Per job, in input order: whether the queue holds it (ready, delayed or leased).
    async fn contains(&self, jobs: &[Envelope]) -> Result<Vec<bool>>;

    /// Take the lock `name` for `holder` for `ttl`, or renew it if `holder` has it. Returns
    /// whether `holder` holds it now. A holder that stops renewing loses it after `ttl`.
    async fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool>;
}
