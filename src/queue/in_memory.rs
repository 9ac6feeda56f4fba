use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::types::{
    DeadLetter, Envelope, KindQueueStats, Lease, QueueManager, QueueStats, Requeue, Reserve,
};
use crate::Result;
use crate::job::{JobId, WorkerId};
use crate::util::{Names, ReadyKey, ReadyQueues, best_ready, from_micros, micros, micros_after};

/// Settings of an [`InMemoryQueue`].
#[derive(Debug, Clone)]
pub struct InMemoryQueueConfig {
    /// Dead-lettered jobs kept for inspection; the oldest are dropped past this. Default 10,000.
    pub dead_letter_capacity: usize,
}

impl Default for InMemoryQueueConfig {
    fn default() -> Self {
        Self {
            dead_letter_capacity: 10_000,
        }
    }
}

impl InMemoryQueueConfig {
    /// Set how many dead-lettered jobs are kept.
    #[must_use]
    pub fn with_dead_letter_capacity(mut self, capacity: usize) -> Self {
        self.dead_letter_capacity = capacity;
        self
    }
}

/// The embedded queue: one process, no server. Ordered by priority, then `run_at`, then
/// arrival; delayed jobs wait in a timer heap; leases expire and are delivered again.
///
/// Every operation takes one short lock for the whole batch. Memory is bounded by what is
/// queued plus the dead-letter capacity.
pub struct InMemoryQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    config: InMemoryQueueConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Ready,
    Delayed,
    Leased { token: u64, expires: i64 },
}

struct Entry {
    envelope: Envelope,
    seq: u64,
    place: Place,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Default)]
struct Inner {
    entries: FastMap<JobId, Entry>,
    ready: ReadyQueues,
    names: Names,
    /// (run_at, seq, id), earliest first.
    delayed: BinaryHeap<Reverse<(i64, u64, JobId)>>,
    /// (expires, token, id), earliest first; stale keys are skipped.
    leased: BinaryHeap<Reverse<(i64, u64, JobId)>>,
    dead: VecDeque<(Envelope, String)>,
    kinds: FastMap<Arc<str>, KindQueueStats>,
    seq: u64,
    token: u64,
}

impl Inner {
    fn with_kind(&mut self, kind: &str, f: impl FnOnce(&mut KindQueueStats)) {
        match self.kinds.get_mut(kind) {
            Some(stats) => f(stats),
            None => {
                let mut stats = KindQueueStats::default();
                f(&mut stats);
                let name = self.names.intern(kind);
                self.kinds.insert(name, stats);
            }
        }
    }

    fn count(&mut self, kind: &str, place: Place, delta: i64) {
        self.with_kind(kind, |stats| {
            let slot = match place {
                Place::Ready => &mut stats.ready,
                Place::Delayed => &mut stats.delayed,
                Place::Leased { .. } => &mut stats.in_flight,
            };
            *slot = slot.saturating_add_signed(delta);
        });
    }

    /// Place a job (new or given back) as ready or delayed.
    fn place(&mut self, id: JobId, now: i64) {
        self.seq += 1;
        let seq = self.seq;
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        entry.seq = seq;
        let run_at = micros(entry.envelope.run_at);
        let place = if run_at <= now {
            Place::Ready
        } else {
            Place::Delayed
        };
        entry.place = place;
        let kind = entry.envelope.kind.clone();
        if place == Place::Ready {
            let key = ReadyKey {
                priority: entry.envelope.priority,
                run_at,
                seq,
                id,
            };
            match self.ready.get_mut(&*entry.envelope.queue) {
                Some(heap) => heap.push(key),
                None => {
                    let queue = Arc::clone(&entry.envelope.queue);
                    self.ready.entry(queue).or_default().push(key);
                }
            }
        } else {
            self.delayed.push(Reverse((run_at, seq, id)));
        }
        self.count(&kind, place, 1);
    }

    /// Move due delayed jobs to ready, and expired leases back to ready.
    fn promote(&mut self, now: i64) {
        while let Some(Reverse((run_at, seq, id))) = self.delayed.peek().copied() {
            if run_at > now {
                break;
            }
            self.delayed.pop();
            let Some(entry) = self.entries.get(&id) else {
                continue;
            };
            if entry.seq != seq || entry.place != Place::Delayed {
                continue;
            }
            let kind = entry.envelope.kind.clone();
            self.count(&kind, Place::Delayed, -1);
            self.place(id, now);
        }
        while let Some(Reverse((expires, token, id))) = self.leased.peek().copied() {
            if expires > now {
                break;
            }
            self.leased.pop();
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            if entry.place != (Place::Leased { token, expires }) {
                continue;
            }
            // The holder stopped heartbeating: deliver again, due now.
            entry.envelope.run_at = from_micros(now);
            let kind = entry.envelope.kind.clone();
            tracing::debug!(job_id = %id, "lease expired; delivering again");
            self.count(&kind, Place::Leased { token, expires }, -1);
            self.place(id, now);
        }
    }

    /// The next due micros of anything that changes without a call (a delayed job or a lease).
    fn next_wakeup(&self) -> Option<i64> {
        let delayed = self.delayed.peek().map(|Reverse((at, _, _))| *at);
        let leased = self.leased.peek().map(|Reverse((at, _, _))| *at);
        match (delayed, leased) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn pop_ready(&mut self, queues: &[String]) -> Option<JobId> {
        loop {
            let key = best_ready(&mut self.ready, queues)?;
            if let Some(entry) = self.entries.get(&key.id) {
                if entry.seq == key.seq && entry.place == Place::Ready {
                    return Some(key.id);
                }
            }
        }
    }

    /// Remove a leased entry if `lease` still holds it.
    fn take_leased(&mut self, lease: &Lease) -> Option<Entry> {
        let entry = self.entries.get(&lease.envelope.id)?;
        match entry.place {
            Place::Leased { token, .. } if token == lease.token => {
                let entry = self.entries.remove(&lease.envelope.id)?;
                self.count(&entry.envelope.kind, entry.place, -1);
                Some(entry)
            }
            _ => None,
        }
    }
}

impl InMemoryQueue {
    /// An empty queue with default settings.
    #[must_use]
    pub fn new() -> Self {
        Self::with_config(InMemoryQueueConfig::default())
    }

    /// An empty queue with `config`.
    #[must_use]
    pub fn with_config(config: InMemoryQueueConfig) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            config,
        }
    }

    /// The dead-lettered jobs kept, oldest first, with their reasons (at most `limit`).
    #[must_use]
    pub fn dead_letters(&self, limit: usize) -> Vec<(Envelope, String)> {
        self.inner.lock().dead.iter().take(limit).cloned().collect()
    }

    /// Jobs held (ready, delayed or leased).
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// Whether no job is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn try_reserve(&self, req: &Reserve<'_>, now: i64) -> (Vec<Lease>, Option<i64>) {
        let mut inner = self.inner.lock();
        inner.promote(now);
        let lease_us = i64::try_from(req.lease.as_micros()).unwrap_or(i64::MAX);
        let expires = now.saturating_add(lease_us);
        let mut out = Vec::with_capacity(req.max.min(1024));
        while out.len() < req.max {
            let Some(id) = inner.pop_ready(req.queues) else {
                break;
            };
            inner.token += 1;
            let token = inner.token;
            let Some(entry) = inner.entries.get_mut(&id) else {
                continue;
            };
            entry.place = Place::Leased { token, expires };
            let envelope = entry.envelope.clone();
            inner.count(&envelope.kind, Place::Ready, -1);
            inner.count(&envelope.kind, Place::Leased { token, expires }, 1);
            inner.leased.push(Reverse((expires, token, id)));
            out.push(Lease {
                envelope,
                worker: WorkerId::clone(req.worker),
                token,
                receipt: None,
                expires_at: from_micros(expires),
            });
        }
        (out, inner.next_wakeup())
    }
}

impl Default for InMemoryQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for InMemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryQueue")
            .field("len", &self.len())
            .finish()
    }
}

#[async_trait]
impl QueueManager for InMemoryQueue {
    async fn enqueue(&self, jobs: &[Envelope]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let now = micros(Utc::now());
        {
            let mut inner = self.inner.lock();
            inner.entries.reserve(jobs.len());
            for job in jobs {
                if inner.entries.contains_key(&job.id) {
                    continue;
                }
                let mut envelope = job.clone();
                envelope.kind = inner.names.intern(&job.kind);
                envelope.queue = inner.names.intern(&job.queue);
                inner.entries.insert(
                    job.id,
                    Entry {
                        envelope,
                        seq: 0,
                        place: Place::Ready,
                    },
                );
                inner.place(job.id, now);
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn reserve(&self, req: &Reserve<'_>) -> Result<Vec<Lease>> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + req.wait;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Utc::now();
            let (leases, next) = self.try_reserve(req, micros(now));
            if !leases.is_empty() {
                return Ok(leases);
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Ok(leases);
            }
            // Sleep until something is enqueued, the next delayed job or lease comes due, or
            // the wait ends.
            let until_next = next
                .map(|at| Duration::from_micros(u64::try_from(at - micros(now)).unwrap_or(0)))
                .unwrap_or(remaining);
            let nap = remaining.min(until_next.max(Duration::from_millis(1)));
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>> {
        let expires = micros_after(micros(Utc::now()), lease);
        let mut inner = self.inner.lock();
        let mut held = Vec::with_capacity(leases.len());
        for l in leases {
            let ok = match inner.entries.get_mut(&l.envelope.id) {
                Some(entry) => match entry.place {
                    Place::Leased { token, .. } if token == l.token => {
                        entry.place = Place::Leased { token, expires };
                        true
                    }
                    _ => false,
                },
                None => false,
            };
            if ok {
                inner
                    .leased
                    .push(Reverse((expires, l.token, l.envelope.id)));
            }
            held.push(ok);
        }
        Ok(held)
    }

    async fn ack(&self, leases: &[Lease]) -> Result<()> {
        let mut inner = self.inner.lock();
        for lease in leases {
            inner.take_leased(lease);
        }
        Ok(())
    }

    async fn requeue(&self, items: &[Requeue]) -> Result<()> {
        let now = micros(Utc::now());
        {
            let mut inner = self.inner.lock();
            for item in items {
                let Some(mut entry) = inner.take_leased(&item.lease) else {
                    continue;
                };
                entry.envelope.run_at = item.run_at;
                entry.envelope.attempt = item.attempt;
                let id = entry.envelope.id;
                inner.entries.insert(id, entry);
                inner.place(id, now);
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn dead_letter(&self, items: &[DeadLetter]) -> Result<()> {
        let mut inner = self.inner.lock();
        for item in items {
            let Some(entry) = inner.take_leased(&item.lease) else {
                continue;
            };
            inner.with_kind(&entry.envelope.kind, |s| s.dead += 1);
            inner.dead.push_back((entry.envelope, item.reason.clone()));
            while inner.dead.len() > self.config.dead_letter_capacity {
                if let Some((old, _)) = inner.dead.pop_front() {
                    inner.with_kind(&old.kind, |s| s.dead = s.dead.saturating_sub(1));
                }
            }
        }
        Ok(())
    }

    async fn discard(&self, _queue: &str, ids: &[JobId]) -> Result<usize> {
        let mut inner = self.inner.lock();
        let mut dropped = 0;
        for id in ids {
            // Heap keys left behind are skipped when popped (lazy deletion).
            let waiting = inner
                .entries
                .get(id)
                .is_some_and(|e| matches!(e.place, Place::Ready | Place::Delayed));
            if let Some(entry) = waiting.then(|| inner.entries.remove(id)).flatten() {
                inner.count(&entry.envelope.kind, entry.place, -1);
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    async fn stats(&self) -> Result<QueueStats> {
        let mut inner = self.inner.lock();
        inner.promote(micros(Utc::now()));
        let mut stats = QueueStats::default();
        for (kind, k) in &inner.kinds {
            if *k == KindQueueStats::default() {
                continue;
            }
            stats.ready += k.ready;
            stats.delayed += k.delayed;
            stats.in_flight += k.in_flight;
            stats.dead += k.dead;
            stats.per_kind.insert(String::from(&**kind), *k);
        }
        Ok(stats)
    }
}
