//! Small crate-private helpers shared by the backends.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::job::JobId;

/// Microseconds since the Unix epoch.
pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// The time `us` microseconds after the Unix epoch (saturating at the latest representable).
pub(crate) fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `d` in whole microseconds, saturating at `i64::MAX` (what the stores add to their clock).
pub(crate) fn dur_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `d` in whole milliseconds, saturating at `u64::MAX` (leases and TTLs sent to Redis, and
/// timeouts shown over HTTP).
#[cfg(any(feature = "redis", feature = "http"))]
pub(crate) fn dur_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `now + d`, in microseconds, saturating.
pub(crate) fn micros_after(now: i64, d: Duration) -> i64 {
    now.saturating_add(dur_micros(d))
}

/// One shared copy of each kind and queue name, so a million jobs of one kind hold one string.
#[derive(Default)]
pub(crate) struct Names(HashSet<Arc<str>, foldhash::fast::RandomState>);

impl Names {
    pub(crate) fn intern(&mut self, name: &str) -> Arc<str> {
        match self.0.get(name) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared: Arc<str> = Arc::from(name);
                self.0.insert(Arc::clone(&shared));
                shared
            }
        }
    }
}

/// A due job's place in a ready heap: higher priority first, then earlier `run_at`, then
/// earlier arrival (`seq`). Entries are invalidated lazily: the owner checks `seq` on pop.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ReadyKey {
    pub(crate) priority: i16,
    pub(crate) run_at: i64,
    pub(crate) seq: u64,
    pub(crate) id: JobId,
}

impl Ord for ReadyKey {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher priority, then earlier run_at, then lower seq first.
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.run_at.cmp(&self.run_at))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ReadyKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Ready heaps by queue name.
pub(crate) type ReadyHeaps = HashMap<Arc<str>, BinaryHeap<ReadyKey>, foldhash::fast::RandomState>;

/// Pop the best head among the heaps of `queues` (possibly a stale entry: the caller checks).
pub(crate) fn best_ready(ready: &mut ReadyHeaps, queues: &[String]) -> Option<ReadyKey> {
    let mut best: Option<(usize, &ReadyKey)> = None;
    for (i, queue) in queues.iter().enumerate() {
        if let Some(key) = ready.get(queue.as_str()).and_then(BinaryHeap::peek) {
            if best.is_none_or(|(_, b)| key > b) {
                best = Some((i, key));
            }
        }
    }
    let (i, _) = best?;
    ready.get_mut(queues[i].as_str())?.pop()
}
