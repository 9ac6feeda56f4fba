use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the circuit breaker reads the time: [`SystemClock`] in production, a
/// [`ManualClock`] in tests.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
/// use jobforge::safety::{Clock, ManualClock};
///
/// /// A clock that runs ten times faster than the real one.
/// struct Fast(Instant);
///
/// impl Clock for Fast {
///     fn now(&self) -> Instant {
///         self.0 + self.0.elapsed() * 10
///     }
/// }
///
/// let clock: Arc<dyn Clock> = Arc::new(Fast(Instant::now()));
/// # drop(clock);
/// let manual = ManualClock::new();
/// let start = manual.now();
/// manual.advance(Duration::from_secs(3));
/// assert_eq!(manual.now() - start, Duration::from_secs(3));
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current instant. Must never go backwards.
    fn now(&self) -> Instant;
}

/// The real monotonic clock ([`Instant::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to, for deterministic tests.
pub struct ManualClock {
    base: Instant,
    offset_nanos: AtomicU64,
}

impl ManualClock {
    /// A clock standing at the moment it was made.
    #[must_use]
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            offset_nanos: AtomicU64::new(0),
        }
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
    }

    /// How far the clock has been moved since it was made.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.elapsed()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}
