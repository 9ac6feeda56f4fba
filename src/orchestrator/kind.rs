//! [`KindConfig`]: how one kind of job runs.

use std::sync::Arc;
use std::time::Duration;

use crate::handler::Handler;
use crate::strategy::RetryPolicy;

/// How one kind of job runs: its handler, retries, timeout and strategy.
///
/// ```
/// use std::time::Duration;
/// use jobforge::{handler_fn, JobContext, KindConfig, RetryPolicy};
///
/// let config = KindConfig::new(handler_fn(|_ctx: JobContext| async { Ok(serde_json::Value::Null) }))
///     .retry(RetryPolicy::new(3).with_base(Duration::from_millis(50)))
///     .timeout(Duration::from_secs(30))
///     .idempotent(true);
/// # drop(config);
/// ```
#[derive(Clone)]
pub struct KindConfig {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) strategy: Option<String>,
    pub(crate) idempotent: bool,
}

impl KindConfig {
    /// A kind run by `handler`, with the orchestrator's default retries and strategy.
    pub fn new(handler: impl Handler) -> Self {
        Self {
            handler: Arc::new(handler),
            retry: None,
            timeout: None,
            strategy: None,
            idempotent: false,
        }
    }

    /// Retries for this kind.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Deadline of one attempt (a job's own timeout wins).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The strategy this kind runs with by default.
    #[must_use]
    pub fn strategy(mut self, name: impl Into<String>) -> Self {
        self.strategy = Some(name.into());
        self
    }

    /// Whether running a job of this kind twice at once is harmless (required for hedging).
    #[must_use]
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// The handler.
    #[must_use]
    pub fn handler(&self) -> &Arc<dyn Handler> {
        &self.handler
    }

    /// Whether the kind is marked idempotent.
    #[must_use]
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }
}

impl std::fmt::Debug for KindConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindConfig")
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("strategy", &self.strategy)
            .field("idempotent", &self.idempotent)
            .finish_non_exhaustive()
    }
}
