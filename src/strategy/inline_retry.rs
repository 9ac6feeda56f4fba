use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;

use super::attempt::{attempt, describe};
use super::{Outcome, Strategy};
use crate::handler::{Handler, JobContext};

/// Fast in-process retries of *transient* failures before the job goes back to the queue.
///
/// On a retryable error the handler is called again after a short pause (`delay` plus a
/// random `0..=jitter`, 10–50 ms by default), up to `retries` more times within the same
/// delivery. Each retry is counted with [`JobContext::add_inline_retry`], so reflection can
/// learn whether retries rescue this kind. When the retries are spent, the last
/// [`Outcome::Retry`] is returned and the queue takes over (backoff, attempts, dead letter).
///
/// What is *not* retried in process:
/// - permanent errors, deferrals and cancellations: returned as they are;
/// - retryable errors that carry [`JobError::retry_after`](crate::JobError::retry_after): the
///   handler said when to try again, so the job goes back to the queue at once;
/// - anything once the job is cancelled ([`JobContext::is_cancelled`]): the last outcome is
///   returned without waiting.
///
/// The kind's timeout (set on the kind or job) covers the whole delivery, retries included.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use jobforge::strategy::InlineRetry;
/// use jobforge::{Orchestrator, Strategy};
///
/// // Up to 3 fast retries, 20-70 ms apart; and a second variant under another name.
/// let quick = InlineRetry::new(3)
///     .with_delay(Duration::from_millis(20))
///     .with_jitter(Duration::from_millis(50));
/// let once = InlineRetry::new(1).with_name("inline_retry_once");
/// assert_eq!((quick.name(), once.name()), ("inline_retry", "inline_retry_once"));
///
/// let orchestrator = Orchestrator::builder()
///     .strategy(Arc::new(quick))
///     .strategy(Arc::new(once))
///     .build()?;
/// assert!(orchestrator.strategies().contains(&"inline_retry_once"));
/// # Ok::<(), jobforge::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineRetry {
    name: String,
    retries: u32,
    pause: Pause,
}

impl Default for InlineRetry {
    /// 2 retries, 10 ms + up to 40 ms of jitter apart, named `inline_retry`.
    fn default() -> Self {
        Self {
            name: Self::NAME.to_owned(),
            retries: 2,
            pause: Pause::default(),
        }
    }
}

impl InlineRetry {
    /// The name it is registered under unless renamed with [`InlineRetry::with_name`].
    pub const NAME: &'static str = "inline_retry";

    /// Up to `retries` in-process retries (0 behaves like [`Direct`](super::Direct)), with
    /// the default pause.
    #[must_use]
    pub fn new(retries: u32) -> Self {
        Self {
            retries,
            ..Self::default()
        }
    }

    /// Register under another name (to offer several variants).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The fixed part of the pause before each retry (default 10 ms).
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.pause.delay = delay;
        self
    }

    /// The random part of the pause: uniform in `0..=jitter` (default 40 ms).
    #[must_use]
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.pause.jitter = jitter;
        self
    }

    /// The most in-process retries per delivery.
    #[must_use]
    pub fn retries(&self) -> u32 {
        self.retries
    }
}

#[async_trait]
impl Strategy for InlineRetry {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, ctx: &JobContext, handler: &dyn Handler) -> Outcome {
        let (outcome, used) = retry_inline(
            ctx,
            self.retries,
            self.pause,
            |_| true,
            || attempt(ctx, handler, None),
        )
        .await;
        ctx.set_decision(format!(
            "{}: {used} of {} inline retries used; {}",
            self.name,
            self.retries,
            describe(&outcome)
        ));
        outcome
    }
}

/// The pause between in-process retries: `delay` plus a uniform `0..=jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pause {
    pub(super) delay: Duration,
    pub(super) jitter: Duration,
}

impl Default for Pause {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(40),
        }
    }
}

impl Pause {
    fn next(self) -> Duration {
        let jitter = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
        let extra = if jitter == 0 {
            0
        } else {
            fastrand::u64(0..=jitter)
        };
        self.delay.saturating_add(Duration::from_nanos(extra))
    }
}

/// Whether an outcome may be retried in process (see [`InlineRetry`]).
fn retry_in_process(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Retry { after: None, .. })
}

/// Run `attempt`, then again while it fails retryably (and `worth` says the failure is
/// worth retrying in process), up to `retries` more times. Returns the last outcome and the
/// retries made (each one counted on `ctx`).
pub(super) async fn retry_inline<F, Fut>(
    ctx: &JobContext,
    retries: u32,
    pause: Pause,
    worth: impl Fn(&Outcome) -> bool,
    mut attempt: F,
) -> (Outcome, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Outcome>,
{
    let mut used = 0;
    loop {
        let outcome = attempt().await;
        if used >= retries || !retry_in_process(&outcome) || !worth(&outcome) || ctx.is_cancelled()
        {
            return (outcome, used);
        }
        tokio::select! {
            () = ctx.cancelled() => return (outcome, used),
            () = tokio::time::sleep(pause.next()) => {}
        }
        used += 1;
        ctx.add_inline_retry();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_stays_in_bounds() {
        let pause = Pause::default();
        for _ in 0..1_000 {
            let d = pause.next();
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(50));
        }
        let fixed = Pause {
            delay: Duration::from_millis(5),
            jitter: Duration::ZERO,
        };
        assert_eq!(fixed.next(), Duration::from_millis(5));
    }

    #[test]
    fn only_plain_retryable_errors_are_retried_in_process() {
        use crate::JobError;
        let retry = Outcome::from_result(Err(JobError::retryable("503")));
        assert!(retry_in_process(&retry));
        let asked = Outcome::from_result(Err(
            JobError::retryable("429").retry_after(Duration::from_secs(30))
        ));
        assert!(!retry_in_process(&asked));
        assert!(!retry_in_process(&Outcome::from_result(Err(
            JobError::permanent("no")
        ))));
        assert!(!retry_in_process(&Outcome::from_result(Err(
            JobError::defer(Duration::from_secs(1), "later")
        ))));
        assert!(!retry_in_process(&Outcome::Succeeded(
            serde_json::Value::Null
        )));
    }
}
