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

/// Now, to the microsecond, as the stores keep times: its microseconds and the time itself.
/// Every event of a job is stamped this way, so a finish read a few hundred nanoseconds before
/// the next claim's (truncated) reading never sorts after it.
pub(crate) fn now_to_micros() -> (i64, DateTime<Utc>) {
    let us = micros(Utc::now());
    (us, from_micros(us))
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

/// A due job's place in a ready queue: higher priority first, then earlier `run_at`, then
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

/// Due jobs of one queue, best first (the order of [`ReadyKey`]).
///
/// A binary heap alone costs a pop of O(log n) comparisons and moves, which made about a
/// tenth of a no-op job's instructions in a backlog of thousands (callgrind). But jobs
/// nearly always become due in order: submitted now, one after the other, they come with a
/// rising `run_at` and `seq`. So each priority has a FIFO lane that takes every key not
/// better than its last one (O(1) push and pop), and a heap beside it for the few that
/// arrive out of order (a delayed job or a retry coming due with an earlier `run_at`). A pop
/// takes the better of the two heads. Lanes are kept highest priority first; there are as
/// many as priorities in use, usually one or two.
#[derive(Debug, Default)]
pub(crate) struct ReadyQueue {
    lanes: Vec<Lane>,
}

#[derive(Debug)]
struct Lane {
    priority: i16,
    fifo: std::collections::VecDeque<ReadyKey>,
    late: BinaryHeap<ReadyKey>,
}

impl Lane {
    /// Whether the best key is the heap's rather than the FIFO's.
    fn late_first(&self) -> bool {
        match (self.fifo.front(), self.late.peek()) {
            (Some(a), Some(b)) => b > a,
            (a, b) => a.is_none() && b.is_some(),
        }
    }

    fn head(&self) -> Option<&ReadyKey> {
        if self.late_first() {
            self.late.peek()
        } else {
            self.fifo.front()
        }
    }

    fn pop(&mut self) -> Option<ReadyKey> {
        if self.late_first() {
            self.late.pop()
        } else {
            self.fifo.pop_front()
        }
    }

    fn is_empty(&self) -> bool {
        self.fifo.is_empty() && self.late.is_empty()
    }
}

impl ReadyQueue {
    /// File a due job.
    pub(crate) fn push(&mut self, key: ReadyKey) {
        // Lanes are sorted by priority, highest first.
        let at = match self
            .lanes
            .binary_search_by(|lane| key.priority.cmp(&lane.priority))
        {
            Ok(at) => at,
            Err(at) => {
                self.lanes.insert(
                    at,
                    Lane {
                        priority: key.priority,
                        fifo: std::collections::VecDeque::new(),
                        late: BinaryHeap::new(),
                    },
                );
                at
            }
        };
        let lane = &mut self.lanes[at];
        // In the FIFO only when not better than its last key, so it stays in order.
        if lane.fifo.back().is_none_or(|last| key <= *last) {
            lane.fifo.push_back(key);
        } else {
            lane.late.push(key);
        }
    }

    /// The best due job, without taking it.
    pub(crate) fn peek(&self) -> Option<&ReadyKey> {
        self.lanes.first().and_then(Lane::head)
    }

    /// Take the best due job.
    pub(crate) fn pop(&mut self) -> Option<ReadyKey> {
        let lane = self.lanes.first_mut()?;
        let key = lane.pop();
        if lane.is_empty() {
            self.lanes.remove(0);
        }
        key
    }
}

/// Ready queues by queue name.
pub(crate) type ReadyQueues = HashMap<Arc<str>, ReadyQueue, foldhash::fast::RandomState>;

/// Pop the best head among the ready queues of `queues` (possibly a stale entry: the caller checks).
pub(crate) fn best_ready(ready: &mut ReadyQueues, queues: &[String]) -> Option<ReadyKey> {
    let mut best: Option<(usize, &ReadyKey)> = None;
    for (i, queue) in queues.iter().enumerate() {
        if let Some(key) = ready.get(queue.as_str()).and_then(ReadyQueue::peek) {
            if best.is_none_or(|(_, b)| key > b) {
                best = Some((i, key));
            }
        }
    }
    let (i, _) = best?;
    ready.get_mut(queues[i].as_str())?.pop()
}

#[cfg(test)]
mod tests {
    use std::collections::BinaryHeap;

    use proptest::prelude::*;

    use super::{ReadyKey, ReadyQueue};
    use crate::job::JobId;

    fn key(priority: i16, run_at: i64, seq: u64) -> ReadyKey {
        ReadyKey {
            priority,
            run_at,
            seq,
            id: JobId::new(),
        }
    }

    proptest! {
        /// The lanes give the same order as one binary heap, whatever the order of pushes
        /// (in order, late, mixed priorities) and pops.
        #[test]
        fn ready_queue_pops_in_heap_order(
            ops in proptest::collection::vec((any::<bool>(), -2i16..=2, 0i64..50), 1..300)
        ) {
            let mut queue = ReadyQueue::default();
            let mut heap = BinaryHeap::new();
            for (seq, (pop, priority, run_at)) in ops.into_iter().enumerate() {
                if pop {
                    let (a, b) = (queue.pop(), heap.pop());
                    prop_assert_eq!(a.map(|k| k.seq), b.map(|k: ReadyKey| k.seq));
                } else {
                    queue.push(key(priority, run_at, seq as u64));
                    heap.push(key(priority, run_at, seq as u64));
                }
                prop_assert_eq!(queue.peek().map(|k| k.seq), heap.peek().map(|k| k.seq));
            }
            while let Some(b) = heap.pop() {
                prop_assert_eq!(queue.pop().map(|k| k.seq), Some(b.seq));
            }
            prop_assert!(queue.pop().is_none());
        }
    }

    #[test]
    fn jobs_due_in_order_take_the_fifo_and_a_late_one_still_comes_first() {
        let mut queue = ReadyQueue::default();
        for seq in 0..5 {
            queue.push(key(0, 100 + seq as i64, seq));
        }
        // A retry coming due with an earlier run_at, and a higher priority.
        queue.push(key(0, 10, 5));
        queue.push(key(3, 500, 6));
        let order: Vec<u64> = std::iter::from_fn(|| queue.pop()).map(|k| k.seq).collect();
        assert_eq!(order, [6, 5, 0, 1, 2, 3, 4]);
        assert!(queue.lanes.is_empty(), "empty lanes are dropped");
    }
}
