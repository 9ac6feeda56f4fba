//! The sliding windows a closed breaker computes its rates over.

use std::time::Instant;

use super::config::SlidingWindow;

/// Calls, failures and slow calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    pub(crate) slow: u32,
}

impl Totals {
    fn add(&mut self, failure: bool, slow: bool) {
        self.calls = self.calls.saturating_add(1);
        self.failures = self.failures.saturating_add(u32::from(failure));
        self.slow = self.slow.saturating_add(u32::from(slow));
    }

    fn sub(&mut self, failure: bool, slow: bool) {
        self.calls = self.calls.saturating_sub(1);
        self.failures = self.failures.saturating_sub(u32::from(failure));
        self.slow = self.slow.saturating_sub(u32::from(slow));
    }

    fn merge(&mut self, other: Totals) {
        self.calls = self.calls.saturating_add(other.calls);
        self.failures = self.failures.saturating_add(other.failures);
        self.slow = self.slow.saturating_add(other.slow);
    }

    /// Failures as a percentage of calls (`None` without calls).
    pub(crate) fn failure_rate(&self) -> Option<f64> {
        rate(self.failures, self.calls)
    }

    /// Slow calls as a percentage of calls (`None` without calls).
    pub(crate) fn slow_rate(&self) -> Option<f64> {
        rate(self.slow, self.calls)
    }
}

pub(crate) fn rate(part: u32, calls: u32) -> Option<f64> {
    (calls > 0).then(|| f64::from(part) * 100.0 / f64::from(calls))
}

const FAILURE: u8 = 1;
const SLOW: u8 = 2;

pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn new(spec: SlidingWindow, now: Instant) -> Self {
        match spec {
            SlidingWindow::Count(n) => Window::Count(CountWindow::new(n)),
            SlidingWindow::Time { window, buckets } => {
                Window::Time(TimeWindow::new(window, buckets, now))
            }
        }
    }

    /// Record one call and return the window's totals after it.
    pub(crate) fn record(&mut self, now: Instant, failure: bool, slow: bool) -> Totals {
        match self {
            Window::Count(w) => w.record(failure, slow),
            Window::Time(w) => w.record(now, failure, slow),
        }
    }

    /// The totals of the calls still in the window.
    pub(crate) fn totals(&self, now: Instant) -> Totals {
        match self {
            Window::Count(w) => w.totals,
            Window::Time(w) => w.totals(now),
        }
    }

    /// Forget every call.
    pub(crate) fn reset(&mut self, now: Instant) {
        match self {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(now),
        }
    }
}

/// The last `n` calls, in a ring of flags.
pub(crate) struct CountWindow {
    ring: Box<[u8]>,
    next: usize,
    len: usize,
    totals: Totals,
}

impl CountWindow {
    fn new(n: u32) -> Self {
        let size = usize::try_from(n.max(1)).unwrap_or(1);
        Self {
            ring: vec![0; size].into_boxed_slice(),
            next: 0,
            len: 0,
            totals: Totals::default(),
        }
    }

    fn record(&mut self, failure: bool, slow: bool) -> Totals {
        let cap = self.ring.len();
        if self.len == cap {
            let old = self.ring[self.next];
            self.totals.sub(old & FAILURE != 0, old & SLOW != 0);
        } else {
            self.len += 1;
        }
        self.ring[self.next] = (u8::from(failure) * FAILURE) | (u8::from(slow) * SLOW);
        self.totals.add(failure, slow);
        self.next += 1;
        if self.next == cap {
            self.next = 0;
        }
        self.totals
    }

    fn reset(&mut self) {
        self.next = 0;
        self.len = 0;
        self.totals = Totals::default();
    }
}

/// The calls of the last `window`, in buckets; a bucket is reused when its time comes round.
pub(crate) struct TimeWindow {
    /// Per bucket: the absolute bucket number it holds plus one (0: never used), and totals.
    buckets: Box<[(u64, Totals)]>,
    width_nanos: u64,
    origin: Instant,
}

impl TimeWindow {
    fn new(window: std::time::Duration, buckets: u32, now: Instant) -> Self {
        let count = u64::from(buckets.max(1));
        let width = u64::try_from(window.as_nanos() / u128::from(count)).unwrap_or(u64::MAX);
        Self {
            buckets: vec![(0, Totals::default()); usize::try_from(count).unwrap_or(1)]
                .into_boxed_slice(),
            width_nanos: width.max(1),
            origin: now,
        }
    }

    fn index(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / u128::from(self.width_nanos)).unwrap_or(u64::MAX - 1)
    }

    fn record(&mut self, now: Instant, failure: bool, slow: bool) -> Totals {
        let index = self.index(now);
        let n = self.buckets.len() as u64;
        let slot = usize::try_from(index % n).unwrap_or(0);
        let bucket = &mut self.buckets[slot];
        if bucket.0 != index + 1 {
            *bucket = (index + 1, Totals::default());
        }
        bucket.1.add(failure, slow);
        self.totals_at(index)
    }

    fn totals(&self, now: Instant) -> Totals {
        self.totals_at(self.index(now))
    }

    fn totals_at(&self, index: u64) -> Totals {
        let n = self.buckets.len() as u64;
        let mut totals = Totals::default();
        for &(tag, bucket) in self.buckets.iter() {
            // Bucket number `tag - 1` is in the window when it is one of the last n.
            if tag != 0 && tag <= index + 1 && tag + n > index + 1 {
                totals.merge(bucket);
            }
        }
        totals
    }

    fn reset(&mut self, now: Instant) {
        self.buckets.fill((0, Totals::default()));
        self.origin = now;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn count_window_keeps_the_last_n() {
        let now = Instant::now();
        let mut w = Window::new(SlidingWindow::count(3), now);
        w.record(now, true, false);
        w.record(now, true, true);
        let t = w.record(now, false, false);
        assert_eq!((t.calls, t.failures, t.slow), (3, 2, 1));
        // The oldest failure leaves.
        let t = w.record(now, false, false);
        assert_eq!((t.calls, t.failures, t.slow), (3, 1, 1));
        let t = w.record(now, false, false);
        assert_eq!((t.calls, t.failures, t.slow), (3, 0, 0));
        assert_eq!(t.failure_rate(), Some(0.0));
        w.reset(now);
        assert_eq!(w.totals(now), Totals::default());
        assert_eq!(w.totals(now).failure_rate(), None);
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let start = Instant::now();
        let mut w = Window::new(
            SlidingWindow::Time {
                window: Duration::from_secs(10),
                buckets: 10,
            },
            start,
        );
        w.record(start, true, false);
        w.record(start + Duration::from_millis(500), true, false);
        w.record(start + Duration::from_secs(5), false, true);
        let t = w.totals(start + Duration::from_secs(9));
        assert_eq!((t.calls, t.failures, t.slow), (3, 2, 1));
        // At 10 s the first bucket (0–1 s) has left the window.
        let t = w.totals(start + Duration::from_secs(10));
        assert_eq!((t.calls, t.failures, t.slow), (1, 0, 1));
        // A bucket reused after a full turn starts empty.
        let t = w.record(start + Duration::from_secs(20), false, false);
        assert_eq!((t.calls, t.failures, t.slow), (1, 0, 0));
        let t = w.totals(start + Duration::from_secs(100));
        assert_eq!(t.calls, 0);
    }
}
