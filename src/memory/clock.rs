//! Where a memory reads the time: entry expiry and [`Window::Since`](super::Window::Since)
//! depend on it, and tests move it by hand instead of sleeping.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

/// A source of the current time.
///
/// [`SystemClock`] is the real one; [`ManualClock`] only moves when told to. Any
/// `Fn() -> DateTime<Utc>` closure is a clock too.
///
/// ```
/// use std::sync::Arc;
/// use chrono::{TimeZone, Utc};
/// use jobforge::memory::Clock;
///
/// let fixed: Arc<dyn Clock> = Arc::new(|| Utc.timestamp_opt(1_700_000_000, 0).unwrap());
/// assert_eq!(fixed.now().timestamp(), 1_700_000_000);
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

impl<F> Clock for F
where
    F: Fn() -> DateTime<Utc> + Send + Sync + 'static,
{
    fn now(&self) -> DateTime<Utc> {
        self()
    }
}

/// The system's wall clock ([`Utc::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until moved; clones share the same time. For tests of expiry
/// and time windows without sleeping.
///
/// ```
/// use std::time::Duration;
/// use jobforge::memory::{Clock, ManualClock};
///
/// let clock = ManualClock::new(chrono::Utc::now());
/// let before = clock.now();
/// clock.advance(Duration::from_secs(90));
/// assert_eq!((clock.now() - before).num_seconds(), 90);
/// ```
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    #[must_use]
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Move the clock forward by `by` (saturating at the latest representable time).
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        let step = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        *now = now
            .checked_add_signed(step)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
    }

    /// Put the clock at `at` (it may go backwards).
    pub fn set(&self, at: DateTime<Utc>) {
        *self.now.lock() = at;
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
        *self.now.lock()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &*self.now.lock())
            .finish()
    }
}
