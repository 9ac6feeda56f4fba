use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::registry::StateChange;
use crate::clock::{Clock, SystemClock};
use crate::handler::{JobError, JobErrorKind};
use crate::safety::key::KeyBy;
use crate::{Error, ErrorKind, Result};

/// Which calls the failure and slow-call rates are computed over while the breaker is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlidingWindow {
    /// The last `n` recorded calls.
    Count(u32),
    /// The calls recorded in the last `window`, kept in `buckets` buckets of `window / buckets`
    /// each (a call leaves the window when its whole bucket does). resilience4j uses 1 s
    /// buckets.
    Time {
        /// How far back calls count.
        window: Duration,
        /// How many buckets the window is cut into.
        buckets: u32,
    },
}

impl SlidingWindow {
    /// The last `n` recorded calls.
    #[must_use]
    pub fn count(n: u32) -> Self {
        Self::Count(n)
    }

    /// The calls of the last `window`, in ten buckets.
    #[must_use]
    pub fn time(window: Duration) -> Self {
        Self::Time {
            window,
            buckets: 10,
        }
    }
}

/// How a finished call counts for its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// A success (it may still be slow).
    Success,
    /// A failure (it may also be slow).
    Failure,
    /// Not counted at all, as if the call had not been made; a half-open probe permit is given
    /// back for another call.
    Ignored,
}

/// What a [`Permit`](super::Permit) dropped without an outcome (the call was cancelled: its
/// future dropped by an outer deadline, a shutdown, a hedged attempt that lost) counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DroppedCall {
    /// Not counted, like resilience4j's handling of a cancelled call (`releasePermission`):
    /// the cancellation says nothing about the downstream, and a half-open probe permit is
    /// given back. Counted in [`BreakerSnapshot::dropped`](super::BreakerSnapshot::dropped).
    #[default]
    Ignore,
    /// Counted as a failure (slow if it ran past the slow-call duration). Choose it when the
    /// only deadline is *outside* the breaker (a kind's timeout), so that a hung downstream
    /// still opens it.
    Failure,
}

/// The default judgement of a handler's error: retryable errors (timeouts and panics included)
/// are failures; permanent errors (bad input: the downstream answered), deferrals and
/// cancellations are ignored.
#[must_use]
pub fn default_error_classifier(error: &JobError) -> CallOutcome {
    match error.kind() {
        JobErrorKind::Retryable => CallOutcome::Failure,
        _ => CallOutcome::Ignored,
    }
}

/// The default judgement of a backend's error: [`ErrorKind::Backend`] and
/// [`ErrorKind::Timeout`] are failures; [`ErrorKind::ShuttingDown`] is ignored; any other
/// error (a lost compare-and-set, bad input, not found...) is an answer from a working backend
/// and counts as a success.
#[must_use]
pub fn default_backend_classifier(error: &Error) -> CallOutcome {
    match error.kind() {
        ErrorKind::Backend | ErrorKind::Timeout => CallOutcome::Failure,
        ErrorKind::ShuttingDown => CallOutcome::Ignored,
        _ => CallOutcome::Success,
    }
}

type ErrorClassifier = Arc<dyn Fn(&JobError) -> CallOutcome + Send + Sync>;
type BackendClassifier = Arc<dyn Fn(&Error) -> CallOutcome + Send + Sync>;
type Listener = Arc<dyn Fn(&StateChange) + Send + Sync>;

/// Settings of a circuit breaker (each key gets its own breaker with these settings).
///
/// The defaults are resilience4j's: a count window of 100 calls, at least 100 calls before
/// judging, open at a 50 % failure rate or a 100 % slow-call rate (slow: 60 s or more), 60 s
/// open, 10 probes in half-open; and the breaker is keyed per job kind.
///
/// ```
/// use std::time::Duration;
/// use jobforge::safety::{CircuitBreakerConfig, KeyBy, SlidingWindow};
///
/// let config = CircuitBreakerConfig::default()
///     .with_sliding_window(SlidingWindow::time(Duration::from_secs(30)))
///     .with_minimum_calls(20)
///     .with_failure_rate_threshold(50.0)
///     .with_slow_call_rate_threshold(80.0)
///     .with_slow_call_duration(Duration::from_secs(2))
///     .with_wait_in_open(Duration::from_secs(10))
///     .with_open_backoff(2.0, Duration::from_secs(300))
///     .with_permitted_calls_in_half_open(3)
///     .with_key(KeyBy::tenant());
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone)]
pub struct CircuitBreakerConfig {
    pub(crate) window: SlidingWindow,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate_threshold: f64,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) slow_call_duration: Duration,
    pub(crate) wait_in_open: Duration,
    pub(crate) open_backoff: Option<(f64, Duration)>,
    pub(crate) permitted_in_half_open: u32,
    pub(crate) max_wait_in_half_open: Option<Duration>,
    pub(crate) half_open_retry_after: Duration,
    pub(crate) dropped: DroppedCall,
    pub(crate) idle_eviction: Duration,
    pub(crate) key: KeyBy,
    pub(crate) classify: ErrorClassifier,
    pub(crate) classify_backend: BackendClassifier,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) on_state_change: Option<Listener>,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            window: SlidingWindow::Count(100),
            minimum_calls: 100,
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_secs(60),
            wait_in_open: Duration::from_secs(60),
            open_backoff: None,
            permitted_in_half_open: 10,
            max_wait_in_half_open: None,
            half_open_retry_after: Duration::from_secs(1),
            dropped: DroppedCall::Ignore,
            idle_eviction: Duration::from_secs(15 * 60),
            key: KeyBy::kind(),
            classify: Arc::new(default_error_classifier),
            classify_backend: Arc::new(default_backend_classifier),
            clock: Arc::new(SystemClock),
            on_state_change: None,
        }
    }
}

impl CircuitBreakerConfig {
    /// The window the rates are computed over while closed (default: the last 100 calls).
    #[must_use]
    pub fn with_sliding_window(mut self, window: SlidingWindow) -> Self {
        self.window = window;
        self
    }

    /// Calls the window must hold before the breaker judges (default 100). With a count
    /// window the effective minimum is at most the window's size.
    #[must_use]
    pub fn with_minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// Open when at least this percentage of the window's calls failed (default 50;
    /// `0 < p <= 100`).
    #[must_use]
    pub fn with_failure_rate_threshold(mut self, percent: f64) -> Self {
        self.failure_rate_threshold = percent;
        self
    }

    /// Open when at least this percentage of the window's calls were slow (default 100;
    /// `0 < p <= 100`).
    #[must_use]
    pub fn with_slow_call_rate_threshold(mut self, percent: f64) -> Self {
        self.slow_call_rate_threshold = percent;
        self
    }

    /// A call that takes this long or longer is slow, whether it succeeds or fails (default
    /// 60 s). Keep it below any timeout inside the breaker.
    #[must_use]
    pub fn with_slow_call_duration(mut self, duration: Duration) -> Self {
        self.slow_call_duration = duration;
        self
    }

    /// How long the breaker stays open before letting probes through (default 60 s).
    #[must_use]
    pub fn with_wait_in_open(mut self, wait: Duration) -> Self {
        self.wait_in_open = wait;
        self
    }

    /// Grow the open wait each time the breaker re-opens from half-open without having
    /// closed in between: the n-th consecutive opening waits
    /// `min(max, wait_in_open · multiplier^(n-1))`. Closing resets it. (Default: no growth.)
    #[must_use]
    pub fn with_open_backoff(mut self, multiplier: f64, max: Duration) -> Self {
        self.open_backoff = Some((multiplier, max));
        self
    }

    /// Calls let through in half-open; when all of them have finished, their rates decide
    /// between closing and re-opening (default 10).
    #[must_use]
    pub fn with_permitted_calls_in_half_open(mut self, calls: u32) -> Self {
        self.permitted_in_half_open = calls;
        self
    }

    /// Re-open a breaker that has been half-open this long without a decision (default: wait
    /// for the probes however long they take).
    #[must_use]
    pub fn with_max_wait_in_half_open(mut self, wait: Duration) -> Self {
        self.max_wait_in_half_open = Some(wait);
        self
    }

    /// How long a job is deferred when the breaker is half-open and every probe permit is
    /// taken (default 1 s).
    #[must_use]
    pub fn with_half_open_retry_after(mut self, after: Duration) -> Self {
        self.half_open_retry_after = after;
        self
    }

    /// What a permit dropped without an outcome counts as (default: ignored).
    #[must_use]
    pub fn with_dropped_calls(mut self, dropped: DroppedCall) -> Self {
        self.dropped = dropped;
        self
    }

    /// A closed breaker unused for this long, with no call in flight, may be forgotten once
    /// the registry holds more than 1,024 keys (default 15 min). Keeps memory bounded when
    /// keys are many (per tenant, say).
    #[must_use]
    pub fn with_idle_eviction(mut self, idle: Duration) -> Self {
        self.idle_eviction = idle;
        self
    }

    /// Which breaker a job uses (default: one per kind). Backends use the fixed keys
    /// `queue backend` and `state backend`.
    #[must_use]
    pub fn with_key(mut self, key: KeyBy) -> Self {
        self.key = key;
        self
    }

    /// How a handler's error counts (default [`default_error_classifier`]).
    #[must_use]
    pub fn with_error_classifier<F>(mut self, classify: F) -> Self
    where
        F: Fn(&JobError) -> CallOutcome + Send + Sync + 'static,
    {
        self.classify = Arc::new(classify);
        self
    }

    /// How a backend's error counts (default [`default_backend_classifier`]).
    #[must_use]
    pub fn with_backend_error_classifier<F>(mut self, classify: F) -> Self
    where
        F: Fn(&Error) -> CallOutcome + Send + Sync + 'static,
    {
        self.classify_backend = Arc::new(classify);
        self
    }

    /// Where time comes from (default [`SystemClock`]; [`ManualClock`](crate::safety::ManualClock)
    /// in tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Called on every state change, after it happened (besides the `tracing` event each
    /// change emits). Keep it quick: it runs on the caller's task.
    #[must_use]
    pub fn with_on_state_change<F>(mut self, listener: F) -> Self
    where
        F: Fn(&StateChange) + Send + Sync + 'static,
    {
        self.on_state_change = Some(Arc::new(listener));
        self
    }

    /// The key function.
    #[must_use]
    pub fn key(&self) -> &KeyBy {
        &self.key
    }

    /// Check the settings; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        fn percent(field: &'static str, value: f64) -> Result<()> {
            if value > 0.0 && value <= 100.0 {
                Ok(())
            } else {
                Err(Error::invalid_input(
                    field,
                    format!("{value} is not a percentage in (0, 100]"),
                ))
            }
        }
        match self.window {
            SlidingWindow::Count(0) => {
                return Err(Error::invalid_input(
                    "sliding_window",
                    "a count window must hold at least one call",
                ));
            }
            SlidingWindow::Time { window, buckets } => {
                if buckets == 0 {
                    return Err(Error::invalid_input(
                        "sliding_window",
                        "a time window needs at least one bucket",
                    ));
                }
                if window.as_nanos() < u128::from(buckets) {
                    return Err(Error::invalid_input(
                        "sliding_window",
                        format!("a {window:?} window cannot be cut into {buckets} buckets"),
                    ));
                }
            }
            SlidingWindow::Count(_) => {}
        }
        if self.minimum_calls == 0 {
            return Err(Error::invalid_input("minimum_calls", "must be at least 1"));
        }
        percent("failure_rate_threshold", self.failure_rate_threshold)?;
        percent("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        if self.permitted_in_half_open == 0 {
            return Err(Error::invalid_input(
                "permitted_calls_in_half_open",
                "must be at least 1",
            ));
        }
        if let Some((multiplier, max)) = self.open_backoff {
            if !(multiplier.is_finite() && multiplier >= 1.0) {
                return Err(Error::invalid_input(
                    "open_backoff",
                    format!("multiplier {multiplier} must be a finite number of at least 1"),
                ));
            }
            if max < self.wait_in_open {
                return Err(Error::invalid_input(
                    "open_backoff",
                    format!(
                        "max {max:?} is shorter than the wait in open {:?}",
                        self.wait_in_open
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Calls needed before the closed breaker judges.
    pub(crate) fn effective_minimum_calls(&self) -> u32 {
        match self.window {
            SlidingWindow::Count(n) => self.minimum_calls.min(n),
            SlidingWindow::Time { .. } => self.minimum_calls,
        }
    }

    /// The open wait of the `opens`-th consecutive opening (1 for the first).
    pub(crate) fn open_wait(&self, opens: u32) -> Duration {
        match self.open_backoff {
            None => self.wait_in_open,
            Some((multiplier, max)) => {
                let exponent = i32::try_from(opens.saturating_sub(1)).unwrap_or(i32::MAX);
                let secs = self.wait_in_open.as_secs_f64() * multiplier.powi(exponent);
                if secs.is_finite() && secs < max.as_secs_f64() {
                    Duration::from_secs_f64(secs)
                } else {
                    max
                }
            }
        }
    }
}

impl fmt::Debug for CircuitBreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerConfig")
            .field("window", &self.window)
            .field("minimum_calls", &self.minimum_calls)
            .field("failure_rate_threshold", &self.failure_rate_threshold)
            .field("slow_call_rate_threshold", &self.slow_call_rate_threshold)
            .field("slow_call_duration", &self.slow_call_duration)
            .field("wait_in_open", &self.wait_in_open)
            .field("open_backoff", &self.open_backoff)
            .field("permitted_in_half_open", &self.permitted_in_half_open)
            .field("max_wait_in_half_open", &self.max_wait_in_half_open)
            .field("half_open_retry_after", &self.half_open_retry_after)
            .field("dropped", &self.dropped)
            .field("idle_eviction", &self.idle_eviction)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let bad = [
            (
                CircuitBreakerConfig::default().with_sliding_window(SlidingWindow::count(0)),
                "sliding_window",
            ),
            (
                CircuitBreakerConfig::default().with_failure_rate_threshold(0.0),
                "failure_rate_threshold",
            ),
            (
                CircuitBreakerConfig::default().with_slow_call_rate_threshold(f64::NAN),
                "slow_call_rate_threshold",
            ),
            (
                CircuitBreakerConfig::default().with_minimum_calls(0),
                "minimum_calls",
            ),
            (
                CircuitBreakerConfig::default().with_permitted_calls_in_half_open(0),
                "permitted_calls_in_half_open",
            ),
            (
                CircuitBreakerConfig::default().with_open_backoff(0.5, Duration::from_secs(600)),
                "open_backoff",
            ),
            (
                CircuitBreakerConfig::default().with_open_backoff(2.0, Duration::from_secs(1)),
                "open_backoff",
            ),
        ];
        for (config, field) in bad {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
        }
        assert!(CircuitBreakerConfig::default().validate().is_ok());
    }

    #[test]
    fn open_wait_grows_to_its_cap() {
        let config = CircuitBreakerConfig::default()
            .with_wait_in_open(Duration::from_secs(1))
            .with_open_backoff(2.0, Duration::from_secs(5));
        let waits: Vec<u64> = (1..=5).map(|n| config.open_wait(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        assert_eq!(config.open_wait(u32::MAX), Duration::from_secs(5));
        let flat = CircuitBreakerConfig::default().with_wait_in_open(Duration::from_secs(3));
        assert_eq!(flat.open_wait(7), Duration::from_secs(3));
    }

    #[test]
    fn default_classifiers() {
        assert_eq!(
            default_error_classifier(&JobError::retryable("503")),
            CallOutcome::Failure
        );
        assert_eq!(
            default_error_classifier(&JobError::timeout(Duration::from_secs(1))),
            CallOutcome::Failure
        );
        assert_eq!(
            default_error_classifier(&JobError::permanent("bad input")),
            CallOutcome::Ignored
        );
        assert_eq!(
            default_error_classifier(&JobError::defer(Duration::from_secs(1), "later")),
            CallOutcome::Ignored
        );
        assert_eq!(
            default_error_classifier(&JobError::cancelled("stop")),
            CallOutcome::Ignored
        );
        assert_eq!(
            default_backend_classifier(&Error::new(ErrorKind::Backend, "down")),
            CallOutcome::Failure
        );
        assert_eq!(
            default_backend_classifier(&Error::new(ErrorKind::Conflict, "lost")),
            CallOutcome::Success
        );
    }
}
