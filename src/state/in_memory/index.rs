//! The in-memory store's own delivery order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use crate::job::{JobId, JobState};
use crate::util::{ReadyKey, ReadyQueues};

use super::Slot;
use super::jobs::Jobs;

/// The store's own delivery order: due jobs by queue and priority, delayed jobs by `run_at`,
/// leases by expiry. Entries are checked against the slot when popped (lazy deletion).
#[derive(Default)]
pub(super) struct QueueIndex {
    pub(super) ready: ReadyQueues,
    /// (run_at, seq, id), earliest first.
    pub(super) delayed: BinaryHeap<Reverse<(i64, u64, JobId)>>,
    /// (lease expiry, id), earliest first; a heartbeat leaves an early entry behind, which is
    /// re-filed at its real expiry when popped.
    pub(super) leases: BinaryHeap<Reverse<(i64, JobId)>>,
    pub(super) seq: u64,
}

impl QueueIndex {
    pub(super) fn build(jobs: &mut Jobs, now: i64) -> Self {
        let mut index = Self::default();
        jobs.for_each_mut(|slot| match slot.state {
            JobState::Queued => index.file(slot, now),
            JobState::Running => {
                if let Some(expires) = slot.lease_expires_at {
                    index.leases.push(Reverse((expires, slot.id)));
                }
            }
            _ => {}
        });
        index
    }

    /// File a queued job as ready or delayed.
    pub(super) fn file(&mut self, slot: &mut Slot, now: i64) {
        self.seq += 1;
        slot.seq = self.seq;
        if slot.run_at <= now {
            self.push_ready(slot);
        } else {
            self.delayed.push(Reverse((slot.run_at, slot.seq, slot.id)));
        }
    }

    pub(super) fn push_ready(&mut self, slot: &Slot) {
        let key = ReadyKey {
            priority: slot.priority,
            run_at: slot.run_at,
            seq: slot.seq,
            id: slot.id,
        };
        match self.ready.get_mut(&slot.queue) {
            Some(heap) => heap.push(key),
            None => {
                self.ready
                    .entry(Arc::clone(&slot.queue))
                    .or_default()
                    .push(key);
            }
        }
    }

    pub(super) fn next_wakeup(&self) -> Option<i64> {
        let delayed = self.delayed.peek().map(|Reverse((at, _, _))| *at);
        let leases = self.leases.peek().map(|Reverse((at, _))| *at);
        match (delayed, leases) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
