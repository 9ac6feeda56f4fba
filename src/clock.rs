//! Where jobforge reads the time: one [`Clock`] for the memory (entry expiry, time windows)
//! and the circuit breaker (open periods, failure windows), so tests move it by hand instead
//! of sleeping.
//!
//! A clock answers two questions: the wall-clock time ([`Clock::now`], what records and
//! expiry are stamped with) and a monotonic instant ([`Clock::instant`], what durations are
//! measured with, never going backwards).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

/// A source of the current time.
///
/// [`SystemClock`] is the real one; [`ManualClock`] only moves when told to. Any
/// `Fn() -> DateTime<Utc>` closure is a clock too (its instants are the real monotonic ones).
///
/// ```
/// use std::sync::Arc;
/// use chrono::{TimeZone, Utc};
/// use jobforge::clock::Clock;
///
/// let fixed: Arc<dyn Clock> = Arc::new(|| Utc.timestamp_opt(1_700_000_000, 0).unwrap());
/// assert_eq!(fixed.now().timestamp(), 1_700_000_000);
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> DateTime<Utc>;

    /// The current monotonic instant; must never go backwards. The default is
    /// [`Instant::now`].
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

impl<F> Clock for F
where
    F: Fn() -> DateTime<Utc> + Send + Sync + 'static,
{
    fn now(&self) -> DateTime<Utc> {
        self()
    }
}

/// The system's clocks: [`Utc::now`] and [`Instant::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    #[inline]
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that stands still until moved; clones share the same time. For tests of expiry,
/// time windows and breaker periods without sleeping.
///
/// ```
/// use std::time::Duration;
/// use jobforge::clock::{Clock, ManualClock};
///
/// let clock = ManualClock::new(chrono::Utc::now());
/// let (before, start) = (clock.now(), clock.instant());
/// clock.advance(Duration::from_secs(90));
/// assert_eq!((clock.now() - before).num_seconds(), 90);
/// assert_eq!(clock.instant() - start, Duration::from_secs(90));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<Manual>>,
}

struct Manual {
    wall: DateTime<Utc>,
    base: Instant,
    /// How far the monotonic clock has moved since the clock was made.
    elapsed: Duration,
}

impl ManualClock {
    /// A clock standing at `start`.
    #[must_use]
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Manual {
                wall: start,
                base: Instant::now(),
                elapsed: Duration::ZERO,
            })),
        }
    }

    /// Move the clock forward by `by` (saturating at the latest representable time).
    pub fn advance(&self, by: Duration) {
        let mut m = self.inner.lock();
        let step = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        m.wall = m
            .wall
            .checked_add_signed(step)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        m.elapsed = m.elapsed.saturating_add(by);
    }

    /// Put the wall clock at `at` (it may go backwards). The monotonic clock moves forward by
    /// as much as the wall clock did, and stands still when the wall clock goes back.
    pub fn set(&self, at: DateTime<Utc>) {
        let mut m = self.inner.lock();
        if let Ok(forward) = (at - m.wall).to_std() {
            m.elapsed = m.elapsed.saturating_add(forward);
        }
        m.wall = at;
    }

    /// How far the monotonic clock has been moved since the clock was made.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.inner.lock().elapsed
    }
}

impl Default for ManualClock {
    /// A clock standing at the current system time.
    fn default() -> Self {
        Self::new(Utc::now())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.inner.lock().wall
    }

    fn instant(&self) -> Instant {
        let m = self.inner.lock();
        m.base.checked_add(m.elapsed).unwrap_or(m.base)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.inner.lock();
        f.debug_struct("ManualClock")
            .field("now", &m.wall)
            .field("elapsed", &m.elapsed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_the_wall_clock_back_never_moves_the_instant_back() {
        let clock = ManualClock::default();
        let start = clock.instant();
        clock.set(clock.now() + chrono::Duration::seconds(5));
        assert_eq!(clock.instant() - start, Duration::from_secs(5));
        clock.set(clock.now() - chrono::Duration::seconds(60));
        assert_eq!(clock.instant() - start, Duration::from_secs(5));
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.elapsed(), Duration::from_secs(6));
    }
}
