//! One handler call, optionally under a deadline: the building block the strategies share.

use std::time::Duration;

use crate::handler::{Handler, JobContext, JobError};

use super::Outcome;

/// Call `handler` once. With a `timeout`, the call runs on a child context whose token is
/// cancelled when the deadline passes (so work the handler spawned stops too), and ends as a
/// retryable [`JobError::timeout`].
pub(super) async fn attempt(
    ctx: &JobContext,
    handler: &dyn Handler,
    timeout: Option<Duration>,
) -> Outcome {
    match timeout {
        None => Outcome::from_result(handler.handle(ctx).await),
        Some(limit) => {
            let child = ctx.child();
            match tokio::time::timeout(limit, handler.handle(&child)).await {
                Ok(result) => Outcome::from_result(result),
                Err(_) => {
                    child.cancellation_token().cancel();
                    Outcome::from_result(Err(JobError::timeout(limit)))
                }
            }
        }
    }
}

/// A short description of an outcome for decisions: `succeeded`, `retryable error (class)`...
pub(super) fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Succeeded(_) => "succeeded".to_owned(),
        Outcome::Retry { error, .. } => format!("retryable error ({})", error.class()),
        Outcome::Failed(error) => format!("permanent error ({})", error.class()),
        Outcome::Deferred { after, .. } => format!("deferred {after:?}"),
        Outcome::Cancelled(_) => "cancelled".to_owned(),
    }
}

/// A duration for people: `850ms`, `1.20s`.
pub(super) fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}
