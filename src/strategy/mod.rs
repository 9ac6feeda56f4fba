//! How one delivery of a job runs: the [`Strategy`] trait, its [`Outcome`], the built-in
//! strategies, and retry backoff.

mod backoff;
mod direct;

pub use backoff::RetryPolicy;
pub use direct::Direct;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::handler::{Handler, JobContext, JobError, JobErrorKind};

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It succeeded with this result.
    Succeeded(Value),
    /// It failed and may be retried; `after` overrides the kind's backoff.
    Retry {
        /// What went wrong.
        error: JobError,
        /// When to retry, if the strategy or handler decided.
        after: Option<Duration>,
    },
    /// It failed for good.
    Failed(JobError),
    /// It was put back without spending an attempt.
    Deferred {
        /// How long to wait.
        after: Duration,
        /// Why.
        reason: String,
    },
    /// It was cancelled.
    Cancelled(String),
}

impl Outcome {
    /// The outcome of one handler call.
    #[must_use]
    pub fn from_result(result: Result<Value, JobError>) -> Self {
        match result {
            Ok(value) => Outcome::Succeeded(value),
            Err(error) => match error.kind() {
                JobErrorKind::Retryable => Outcome::Retry {
                    after: error.requested_retry_after(),
                    error,
                },
                JobErrorKind::Defer(after) => Outcome::Deferred {
                    after,
                    reason: error.to_string(),
                },
                JobErrorKind::Cancelled => Outcome::Cancelled(error.message().to_owned()),
                _ => Outcome::Failed(error),
            },
        }
    }

    /// Whether it succeeded.
    #[must_use]
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded(_))
    }

    /// The error class, when it did not succeed.
    #[must_use]
    pub fn error_class(&self) -> Option<&str> {
        match self {
            Outcome::Succeeded(_) => None,
            Outcome::Retry { error, .. } | Outcome::Failed(error) => Some(error.class()),
            Outcome::Deferred { .. } => Some("deferred"),
            Outcome::Cancelled(_) => Some("cancelled"),
        }
    }
}

/// Decides how one delivery of a job runs, around the kind's [`Handler`].
///
/// ```
/// use async_trait::async_trait;
/// use jobforge::strategy::{Outcome, Strategy};
/// use jobforge::{Handler, JobContext};
///
/// /// Runs the handler once and logs how long it took.
/// struct Timed;
///
/// #[async_trait]
/// impl Strategy for Timed {
///     fn name(&self) -> &str { "timed" }
///     async fn run(&self, ctx: &JobContext, handler: &dyn Handler) -> Outcome {
///         let started = std::time::Instant::now();
///         let outcome = Outcome::from_result(handler.handle(ctx).await);
///         ctx.set_decision(format!("ran once in {:?}", started.elapsed()));
///         outcome
///     }
/// }
///
/// let s: std::sync::Arc<dyn Strategy> = std::sync::Arc::new(Timed);
/// assert_eq!(s.name(), "timed");
/// ```
#[async_trait]
pub trait Strategy: Send + Sync + 'static {
    /// The name jobs and kinds select it by.
    fn name(&self) -> &str;

    /// Run one delivery of the job.
    async fn run(&self, ctx: &JobContext, handler: &dyn Handler) -> Outcome;
}
