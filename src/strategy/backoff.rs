use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Retries for one kind: how many attempts, and exponential backoff with full jitter between
/// them (the delay before retry *n* is uniform in `[0, min(cap, base · 2^(n-1))]`, which
/// spreads a burst of failures instead of retrying them in lockstep).
///
/// ```
/// use std::time::Duration;
/// use jobforge::RetryPolicy;
///
/// let policy = RetryPolicy::new(5)
///     .with_base(Duration::from_millis(100))
///     .with_cap(Duration::from_secs(10));
/// for attempt in 1..=10 {
///     assert!(policy.delay(attempt) <= policy.ceiling(attempt));
/// }
/// assert_eq!(policy.ceiling(3), Duration::from_millis(400));
/// assert_eq!(policy.ceiling(20), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all (1: no retries).
    pub max_attempts: u32,
    /// The first retry's ceiling.
    pub base: Duration,
    /// No delay is longer than this.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, base 1 s, cap 5 min.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// `max_attempts` attempts with the default delays.
    #[must_use]
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            ..Self::default()
        }
    }

    /// Set the base delay.
    #[must_use]
    pub fn with_base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Set the longest delay.
    #[must_use]
    pub fn with_cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// Check the policy: at least one attempt, and `base <= cap`.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::invalid_input(
                "max_attempts",
                "must be at least 1 (1 means no retries)",
            ));
        }
        if self.base > self.cap {
            return Err(Error::invalid_input(
                "base",
                format!("{:?} is longer than the cap {:?}", self.base, self.cap),
            ));
        }
        Ok(())
    }

    /// The ceiling of the delay after failed attempt `attempt` (1-based):
    /// `min(cap, base · 2^(attempt-1))`.
    #[must_use]
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(63);
        let factor = 1u64 << exp;
        let nanos = (self.base.as_nanos()).saturating_mul(u128::from(factor));
        let cap = self.cap.as_nanos();
        Duration::from_nanos(u64::try_from(nanos.min(cap)).unwrap_or(u64::MAX))
    }

    /// A random delay in `[0, ceiling(attempt)]` (full jitter).
    #[must_use]
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_then_cap() {
        let p = RetryPolicy::new(10)
            .with_base(Duration::from_millis(10))
            .with_cap(Duration::from_millis(100));
        assert_eq!(p.ceiling(1), Duration::from_millis(10));
        assert_eq!(p.ceiling(2), Duration::from_millis(20));
        assert_eq!(p.ceiling(4), Duration::from_millis(80));
        assert_eq!(p.ceiling(5), Duration::from_millis(100));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_millis(100));
        // attempt 0 is treated like the first.
        assert_eq!(p.ceiling(0), Duration::from_millis(10));
    }

    #[test]
    fn delays_stay_in_bounds_and_spread() {
        let p = RetryPolicy::new(10)
            .with_base(Duration::from_millis(100))
            .with_cap(Duration::from_secs(1));
        let delays: Vec<Duration> = (0..2_000).map(|_| p.delay(3)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        // Full jitter: both halves of the range are used.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(100)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(300)));
    }

    #[test]
    fn zero_base_means_no_delay_and_validation() {
        let p = RetryPolicy::new(3).with_base(Duration::ZERO);
        assert_eq!(p.delay(5), Duration::ZERO);
        assert!(p.validate().is_ok());
        assert_eq!(
            RetryPolicy::new(0).validate().err().and_then(|e| e.field()),
            Some("max_attempts")
        );
        let inverted = RetryPolicy::new(3)
            .with_base(Duration::from_secs(10))
            .with_cap(Duration::from_secs(1));
        assert_eq!(
            inverted.validate().err().and_then(|e| e.field()),
            Some("base")
        );
    }
}
