//! How one delivery of a job runs: the [`Strategy`] trait, its [`Outcome`], the built-in
//! strategies, and retry backoff.
//!
//! | strategy | name | what one delivery does | use it for |
//! |---|---|---|---|
//! | [`Direct`] | `direct` | calls the handler once; retries go back through the queue with backoff | the default; most kinds |
//! | [`InlineRetry`] | `inline_retry` | retries *retryable* errors in process, a few times, 10–50 ms apart, then hands the last failure to the queue | flaky dependencies whose blips pass in milliseconds |
//! | [`Fallback`] | `fallback` | the kind's handler, then its alternates in order, until one succeeds | kinds with a second way to do the work (another provider, a degraded path) |
//! | [`Hedged`] | `hedged` | starts a second attempt if the first is slower than the p95 (or a set delay); the first success wins, the other is cancelled | **idempotent** kinds with a long latency tail |
//! | [`Adaptive`] | `adaptive` | picks and tunes the above per kind from [`Memory::reflect`](crate::Memory::reflect): per-attempt timeout, inline retries, hedging | kinds whose history should decide |
//!
//! A job runs with the strategy it names ([`NewJob::strategy`](crate::NewJob::strategy)),
//! else its kind's ([`KindConfig::strategy`](crate::KindConfig::strategy)), else the
//! orchestrator's default ([`default_strategy`](crate::OrchestratorBuilder::default_strategy),
//! `direct` unless set). Every strategy but `direct` must be registered with
//! [`OrchestratorBuilder::strategy`](crate::OrchestratorBuilder::strategy); an unknown name is
//! rejected at build and at submit. The strategies that retry in process or hedge run inside the
//! kind's timeout, which bounds the whole delivery. See `docs/strategies.md` for a guide.

mod adaptive;
mod attempt;
mod backoff;
mod cache;
mod direct;
mod fallback;
mod hedged;
mod inline_retry;

pub use adaptive::{
    Adaptive, AdaptivePlan, DecisionChange, HEDGE_BUDGET_WINDOW, HEDGE_RESERVE, Tuning,
};
pub use backoff::RetryPolicy;
pub use direct::Direct;
pub use fallback::Fallback;
pub use hedged::Hedged;
pub use inline_retry::InlineRetry;

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
        /// Who deferred it, as an error class (`circuit_open`, `rate_limited`, `deferred`...).
        class: std::borrow::Cow<'static, str>,
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
                    class: std::borrow::Cow::Owned(error.class().to_owned()),
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
            Outcome::Deferred { class, .. } => Some(class),
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
