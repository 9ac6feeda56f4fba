//! The in-memory reference store: records in a `BTreeMap` behind one mutex, its delivery
//! index (`index`) and trait impls (`store`).

use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use thin_vec::ThinVec;

use crate::Result;
use crate::job::{JobId, JobRecord, JobState, Payload, WorkerId};
use crate::queue::{KindQueueStats, QueueStats, Reserve};
use crate::state::types::{Claim, JobFilter, StateTally, Transition};
use crate::util::{Names, best_ready, from_micros, micros, micros_after};
use crate::workflow::{Settle, StepLink, ended_reason, settle};

mod index;
mod jobs;
mod store;

use index::QueueIndex;
use jobs::Jobs;

/// Settings of an [`InMemoryState`].
#[derive(Debug, Clone)]
pub struct InMemoryStateConfig {
    /// How long finished jobs (and their idempotency keys) are kept. Default 24 h.
    pub retention: Duration,
    /// At most this many finished jobs are kept; the oldest go first. Default 100,000.
    pub max_finished: usize,
    /// At most this many events are kept per job (the first is always kept). Default 64.
    pub max_events_per_job: usize,
}

impl Default for InMemoryStateConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(24 * 3600),
            max_finished: 100_000,
            max_events_per_job: 64,
        }
    }
}

impl InMemoryStateConfig {
    /// Keep finished jobs for `retention`.
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Keep at most `max` finished jobs.
    #[must_use]
    pub fn with_max_finished(mut self, max: usize) -> Self {
        self.max_finished = max;
        self
    }
}

/// The embedded state store: records in a B-tree by id (creation order, so keyset pagination
/// is a range scan), idempotency keys in a hash map, counts kept as it goes. Finished jobs
/// are dropped after the configured retention, so memory stays bounded.
pub struct InMemoryState {
    inner: Mutex<Inner>,
    config: InMemoryStateConfig,
    /// Wakes `claim_due` callers waiting for work.
    notify: tokio::sync::Notify,
    /// The schedules kept beside the jobs.
    schedules: Arc<crate::schedule::InMemorySchedules>,
    /// Queues no worker pool claims from until resumed.
    paused: parking_lot::Mutex<std::collections::BTreeSet<String>>,
}

/// A history entry without the repeated job id.
#[derive(Clone)]
struct Event {
    at: DateTime<Utc>,
    from: JobState,
    to: JobState,
    attempt: u32,
    worker: Option<WorkerId>,
    reason: Option<Box<str>>,
}

/// Fields most jobs never set (or only set once finished), kept out of line.
#[derive(Default)]
struct Extra {
    idempotency_key: Option<String>,
    tags: Vec<String>,
    tenant: Option<String>,
    strategy: Option<String>,
    traceparent: Option<String>,
    result: Option<Payload>,
    last_error: Option<String>,
    /// Its place in a workflow, if it is a step.
    step: Option<Box<StepLink>>,
    /// What its handler last reported.
    progress: Option<crate::job::Progress>,
}

/// A job as this store keeps it: shared names, timestamps as microseconds, rare fields boxed.
/// About a third of a `JobRecord`'s size; converted to a `JobRecord` when read.
struct Slot {
    id: JobId,
    kind: Arc<str>,
    queue: Arc<str>,
    payload: Payload,
    state: JobState,
    cancel_requested: bool,
    priority: i16,
    attempt: u32,
    max_attempts: u32,
    timeout: Option<Duration>,
    run_at: i64,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    lease_expires_at: Option<i64>,
    lease_owner: Option<WorkerId>,
    version: u64,
    /// The token of the latest claim (the version it made): heartbeats and finishes are
    /// fenced on it.
    claim: u64,
    /// Position stamp in the store's own delivery order (see `QueueIndex`).
    seq: u64,
    extra: Option<Box<Extra>>,
    /// Transitions after creation (creation is derived from the record).
    events: ThinVec<Event>,
}

impl Slot {
    /// The slot of a record being created, by this store's clock `now` (us).
    fn from_record(r: JobRecord, kind: Arc<str>, queue: Arc<str>, now: i64) -> Self {
        let needs_extra = r.idempotency_key.is_some()
            || !r.tags.is_empty()
            || r.tenant.is_some()
            || r.strategy.is_some()
            || r.traceparent.is_some()
            || r.result.is_some()
            || r.last_error.is_some()
            || r.step.is_some()
            || r.progress.is_some();
        let extra = needs_extra.then(|| {
            Box::new(Extra {
                idempotency_key: r.idempotency_key,
                tags: r.tags,
                tenant: r.tenant,
                strategy: r.strategy,
                traceparent: r.traceparent,
                result: r.result,
                last_error: r.last_error,
                step: r.step,
                progress: r.progress,
            })
        });
        let state = r.state;
        Slot {
            id: r.id,
            kind,
            queue,
            payload: r.payload,
            state,
            cancel_requested: r.cancel_requested,
            priority: r.priority,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            timeout: r.timeout,
            // By this store's clock, `run_at` as far from it as from the submitter's
            // `created_at` (see `StateManager::create`).
            run_at: now.saturating_add(micros(r.run_at).saturating_sub(micros(r.created_at))),
            created_at: now,
            updated_at: now,
            started_at: r.started_at.map(micros),
            finished_at: r.finished_at.map(micros),
            lease_expires_at: r.lease_expires_at.map(micros),
            lease_owner: r.lease_owner,
            version: r.version,
            claim: if state == JobState::Running {
                r.version
            } else {
                0
            },
            seq: 0,
            extra,
            events: ThinVec::new(),
        }
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    fn idempotency_key(&self) -> Option<&str> {
        self.extra
            .as_ref()
            .and_then(|e| e.idempotency_key.as_deref())
    }

    fn to_record(&self) -> JobRecord {
        self.record_by(from_micros)
    }

    /// The record, its times (us) read by `time`.
    fn record_by(&self, time: impl Fn(i64) -> DateTime<Utc>) -> JobRecord {
        let extra = self.extra.as_deref();
        JobRecord {
            id: self.id,
            kind: String::from(&*self.kind),
            queue: String::from(&*self.queue),
            payload: self.payload.clone(),
            state: self.state,
            priority: self.priority,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            timeout: self.timeout,
            idempotency_key: extra.and_then(|e| e.idempotency_key.clone()),
            tags: extra.map(|e| e.tags.clone()).unwrap_or_default(),
            tenant: extra.and_then(|e| e.tenant.clone()),
            strategy: extra.and_then(|e| e.strategy.clone()),
            traceparent: extra.and_then(|e| e.traceparent.clone()),
            run_at: time(self.run_at),
            created_at: time(self.created_at),
            updated_at: time(self.updated_at),
            started_at: self.started_at.map(&time),
            finished_at: self.finished_at.map(&time),
            result: extra.and_then(|e| e.result.clone()),
            last_error: extra.and_then(|e| e.last_error.clone()),
            lease_owner: self.lease_owner.clone(),
            lease_expires_at: self.lease_expires_at.map(&time),
            cancel_requested: self.cancel_requested,
            version: self.version,
            step: extra.and_then(|e| e.step.clone()),
            progress: extra.and_then(|e| e.progress.clone()),
        }
    }

    /// Whether `filter` matches, without building a record.
    fn matches(&self, filter: &JobFilter) -> bool {
        filter.state.is_none_or(|s| s == self.state)
            && filter.kind.as_deref().is_none_or(|k| k == &*self.kind)
            && filter.queue.as_deref().is_none_or(|q| q == &*self.queue)
            && filter
                .tenant
                .as_deref()
                .is_none_or(|t| self.extra.as_ref().and_then(|e| e.tenant.as_deref()) == Some(t))
            && filter.workflow.is_none_or(|w| {
                self.extra
                    .as_ref()
                    .and_then(|e| e.step.as_ref())
                    .is_some_and(|s| s.workflow == w)
            })
            && filter.tag.as_deref().is_none_or(|t| {
                self.extra
                    .as_ref()
                    .is_some_and(|e| e.tags.iter().any(|x| x == t))
            })
    }
}

/// A claim batch's clock: now and the lease's end, in microseconds and as times, each
/// converted once per batch instead of once per job.
#[derive(Clone, Copy)]
struct ClaimClock {
    now: i64,
    now_at: DateTime<Utc>,
    until: i64,
    until_at: DateTime<Utc>,
}

impl ClaimClock {
    fn new(now_at: DateTime<Utc>, lease: Duration) -> Self {
        let now = micros(now_at);
        let until = micros_after(now, lease);
        Self {
            now,
            // (to the microsecond, as the store keeps times)
            now_at: from_micros(now),
            until,
            until_at: from_micros(until),
        }
    }

    /// The time `us`, converted only when it is neither now nor the lease's end.
    fn time(&self, us: i64) -> DateTime<Utc> {
        if us == self.now {
            self.now_at
        } else if us == self.until {
            self.until_at
        } else {
            from_micros(us)
        }
    }
}

#[derive(Default)]
struct Inner {
    jobs: Jobs,
    keys: HashMap<String, JobId>,
    /// Finished jobs in the order they finished, for retention.
    finished: VecDeque<(DateTime<Utc>, JobId)>,
    total: StateTally,
    /// Attempts that failed and were queued again (see `StateCounts::retried`).
    retried: u64,
    per_kind: HashMap<Arc<str>, StateTally, foldhash::fast::RandomState>,
    names: Names,
    /// Delivery order, built on the first `claim_due` (when the store is its own queue) and
    /// kept from then on; `None` while a separate queue delivers.
    index: Option<QueueIndex>,
}

impl Inner {
    /// Claim one job for `worker` (see [`StateManager::claim`](crate::state::StateManager::claim)); the flag says whether the job
    /// reached a terminal state (a dead worker's last attempt).
    fn claim_one(
        &mut self,
        id: JobId,
        worker: &WorkerId,
        clock: &ClaimClock,
        max_events: usize,
    ) -> (Claim, bool) {
        let ClaimClock {
            now, now_at, until, ..
        } = *clock;
        let Some(slot) = self.jobs.get_mut(&id) else {
            return (Claim::Skipped { id, state: None }, false);
        };
        let (reason, exhausted) = match slot.state {
            JobState::Queued if slot.run_at > now => {
                let run_at = from_micros(slot.run_at);
                return (Claim::NotDue { id, run_at }, false);
            }
            JobState::Queued => (None, false),
            JobState::Running if slot.lease_expires_at.is_some_and(|t| t <= now) => {
                let owner = owner_name(slot.lease_owner.as_ref());
                if slot.cancel_requested {
                    // Asked to stop while its worker died: end it as asked, never run it again.
                    let reason = format!(
                        "cancelled by request; the lease of {owner} expired during attempt {}",
                        slot.attempt
                    );
                    let kind = Arc::clone(&slot.kind);
                    slot.end(
                        JobState::Cancelled,
                        now_at,
                        worker,
                        reason.clone(),
                        max_events,
                    );
                    self.tally(&kind, Some(JobState::Running), Some(JobState::Cancelled));
                    self.finished.push_back((now_at, id));
                    self.settle_dependents(id, now_at, max_events);
                    return (Claim::Cancelled { id, reason }, true);
                }
                let exhausted = slot.attempt >= slot.max_attempts;
                let reason = if exhausted {
                    format!(
                        "worker_lost: lease of {owner} expired during attempt {} of {}; no attempts left",
                        slot.attempt, slot.max_attempts
                    )
                } else {
                    format!(
                        "lease of {owner} expired during attempt {}; taken over",
                        slot.attempt
                    )
                };
                (Some(reason), exhausted)
            }
            state => {
                return (
                    Claim::Skipped {
                        id,
                        state: Some(state),
                    },
                    false,
                );
            }
        };
        let from = slot.state;
        let kind = Arc::clone(&slot.kind);
        if exhausted {
            let reason = reason.unwrap_or_default();
            slot.extra().last_error = Some(reason.clone());
            slot.end(JobState::Dead, now_at, worker, reason.clone(), max_events);
            self.tally(&kind, Some(from), Some(JobState::Dead));
            self.finished.push_back((now_at, id));
            self.settle_dependents(id, now_at, max_events);
            return (Claim::Exhausted { id, reason }, true);
        }
        slot.state = JobState::Running;
        slot.attempt += 1;
        slot.lease_owner = Some(worker.clone());
        slot.lease_expires_at = Some(until);
        slot.started_at = Some(now);
        slot.updated_at = now;
        slot.version += 1;
        slot.claim = slot.version;
        let attempt = slot.attempt;
        slot.push(
            Event {
                at: now_at,
                from,
                to: JobState::Running,
                attempt,
                worker: Some(worker.clone()),
                reason: reason.map(String::into_boxed_str),
            },
            max_events,
        );
        let record = slot.record_by(|us| clock.time(us));
        if let Some(index) = &mut self.index {
            index.leases.push(Reverse((until, id)));
        }
        if from != JobState::Running {
            self.tally(&kind, Some(from), Some(JobState::Running));
        }
        (Claim::Claimed(record), false)
    }

    fn tally(&mut self, kind: &Arc<str>, from: Option<JobState>, to: Option<JobState>) {
        let apply = |t: &mut StateTally| {
            if let Some(from) = from {
                let c = t.get_mut(from);
                *c = c.saturating_sub(1);
            }
            if let Some(to) = to {
                *t.get_mut(to) += 1;
            }
        };
        apply(&mut self.total);
        // Looked up by name first: the entry API would clone (and drop) the Arc every time.
        match self.per_kind.get_mut(&**kind) {
            Some(t) => apply(t),
            None => apply(self.per_kind.entry(Arc::clone(kind)).or_default()),
        }
    }

    /// The workflow steps after `done`, which just ended: each counts it down (and is
    /// queued when it was the last it waited for), or ends as its policy says, and then the
    /// steps after it in turn. Answers whether a step became queued. A job without
    /// dependents costs one look at its out-of-line fields.
    fn settle_dependents(&mut self, done: JobId, now_at: DateTime<Utc>, max_events: usize) -> bool {
        // Most jobs are no workflow's step: answered without the walk's allocation.
        let has_dependents = self
            .jobs
            .get(&done)
            .and_then(|slot| slot.extra.as_ref()?.step.as_ref())
            .is_some_and(|link| !link.dependents.is_empty());
        if !has_dependents {
            return false;
        }
        let now = micros(now_at);
        let mut readied = false;
        let mut ended = vec![done];
        while let Some(done) = ended.pop() {
            let Some((state, dependents)) = self.jobs.get(&done).and_then(|slot| {
                let link = slot.extra.as_ref()?.step.as_ref()?;
                (!link.dependents.is_empty()).then(|| (slot.state, link.dependents.clone()))
            }) else {
                continue;
            };
            for id in dependents {
                let Some(slot) = self.jobs.get_mut(&id) else {
                    continue;
                };
                if slot.state != JobState::Pending {
                    continue;
                }
                let Some(link) = slot.extra.as_mut().and_then(|e| e.step.as_mut()) else {
                    continue;
                };
                let (to, reason) = match settle(link.on_dependency_failure, state) {
                    Settle::CountDown => {
                        link.waiting_on = link.waiting_on.saturating_sub(1);
                        if link.waiting_on > 0 {
                            continue;
                        }
                        // Its own delay counts from now, when it became ready.
                        slot.run_at =
                            now.saturating_add(slot.run_at.saturating_sub(slot.created_at));
                        (JobState::Queued, "dependencies succeeded".to_owned())
                    }
                    Settle::End(to) => (to, ended_reason(to, done, state)),
                };
                slot.state = to;
                slot.updated_at = now;
                slot.version += 1;
                if to.is_terminal() {
                    slot.finished_at = Some(now);
                }
                let (attempt, kind) = (slot.attempt, Arc::clone(&slot.kind));
                slot.push(
                    Event {
                        at: now_at,
                        from: JobState::Pending,
                        to,
                        attempt,
                        worker: None,
                        reason: Some(reason.into_boxed_str()),
                    },
                    max_events,
                );
                self.tally(&kind, Some(JobState::Pending), Some(to));
                if to.is_terminal() {
                    self.finished.push_back((now_at, id));
                    ended.push(id);
                } else {
                    let fields = &mut *self;
                    if let (Some(index), Some(slot)) = (&mut fields.index, fields.jobs.get_mut(&id))
                    {
                        index.file(slot, now);
                    }
                    readied = true;
                }
            }
        }
        readied
    }

    fn sweep(&mut self, now: DateTime<Utc>, config: &InMemoryStateConfig) {
        let horizon =
            now - chrono::Duration::from_std(config.retention).unwrap_or(chrono::Duration::MAX);
        while let Some((at, id)) = self.finished.front().copied() {
            if at > horizon && self.finished.len() <= config.max_finished {
                break;
            }
            self.finished.pop_front();
            // (a job deleted before its retention ended is gone already)
            self.forget(&id);
        }
    }

    /// Drop a record: its idempotency key (while it names it) and its count go with it.
    fn forget(&mut self, id: &JobId) {
        if let Some(slot) = self.jobs.remove(id) {
            if let Some(key) = slot.idempotency_key() {
                if self.keys.get(key) == Some(id) {
                    self.keys.remove(key);
                }
            }
            self.tally(&slot.kind, Some(slot.state), None);
            if self
                .per_kind
                .get(&slot.kind)
                .is_some_and(|t| t.total() == 0)
            {
                self.per_kind.remove(&slot.kind);
            }
        }
    }

    /// [`JobStore::delete_finished`](crate::store::JobStore::delete_finished) (its entry in
    /// `finished` is skipped when its turn comes).
    fn delete_finished(&mut self, id: &JobId) -> crate::store::Deleted {
        use crate::store::Deleted;
        let Some(slot) = self.jobs.get(id) else {
            return Deleted::NotFound;
        };
        if !slot.state.is_terminal() {
            return Deleted::NotFinished(slot.state);
        }
        if slot.extra.as_ref().is_some_and(|e| e.step.is_some()) {
            return Deleted::Step;
        }
        self.forget(id);
        Deleted::Deleted
    }
}

impl Slot {
    /// A running job whose lease expired ends in `to` (dead, or cancelled as asked) at a
    /// claim: the record and its history; the caller counts it and files it as finished.
    fn end(
        &mut self,
        to: JobState,
        now_at: DateTime<Utc>,
        worker: &WorkerId,
        reason: String,
        max_events: usize,
    ) {
        let now = micros(now_at);
        let from = self.state;
        self.state = to;
        self.finished_at = Some(now);
        self.updated_at = now;
        self.lease_owner = None;
        self.lease_expires_at = None;
        self.version += 1;
        let attempt = self.attempt;
        self.push(
            Event {
                at: now_at,
                from,
                to,
                attempt,
                worker: Some(worker.clone()),
                reason: Some(reason.into_boxed_str()),
            },
            max_events,
        );
    }

    fn push(&mut self, event: Event, max: usize) {
        if self.events.len() + 1 >= max.max(2) {
            // Keep the first transition and the latest ones.
            self.events
                .remove(1.min(self.events.len().saturating_sub(1)));
        }
        self.events.push(event);
    }
}

impl InMemoryState {
    /// An empty store with default settings.
    #[must_use]
    pub fn new() -> Self {
        Self::with_config(InMemoryStateConfig::default())
    }

    /// An empty store with `config`.
    #[must_use]
    pub fn with_config(config: InMemoryStateConfig) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            config,
            notify: tokio::sync::Notify::new(),
            schedules: Arc::default(),
            paused: parking_lot::Mutex::default(),
        }
    }

    /// Jobs held (finished ones only while retained).
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.lock().jobs.len()
    }

    /// Whether no job is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Claim up to `req.max` due jobs of `req.queues` straight from the records — the store as
    /// its own queue: `Queued` jobs that are due (highest priority, then earliest `run_at`,
    /// then first filed) and `Running` jobs whose lease expired (taken over, or
    /// [`Claim::Exhausted`] when their attempts are spent). Waits up to `req.wait` for a first
    /// one. The delivery index is built on the first call and kept from then on.
    pub async fn claim_due(&self, req: &Reserve<'_>) -> Result<Vec<Claim>> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + req.wait;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now_at = Utc::now();
            let (claims, next) = self.take_due(req, now_at);
            if !claims.is_empty() {
                return Ok(claims);
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Ok(claims);
            }
            let until_next = next
                .map(|at| Duration::from_micros(u64::try_from(at - micros(now_at)).unwrap_or(0)))
                .unwrap_or(remaining);
            let nap = remaining.min(until_next.max(Duration::from_millis(1)));
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    fn take_due(&self, req: &Reserve<'_>, now_at: DateTime<Utc>) -> (Vec<Claim>, Option<i64>) {
        let max_events = self.config.max_events_per_job;
        let mut guard = self.inner.lock();
        // The clock is read again under the lock: a writer that held it meanwhile may have
        // filed a job as ready by a later reading than the caller's.
        let clock = ClaimClock::new(now_at.max(Utc::now()), req.lease);
        let ClaimClock { now, until, .. } = clock;
        let inner = &mut *guard;
        let mut index = match inner.index.take() {
            Some(index) => index,
            None => QueueIndex::build(&mut inner.jobs, now),
        };
        // Delayed jobs that came due join their ready queues.
        while let Some(Reverse((run_at, seq, id))) = index.delayed.peek().copied() {
            if run_at > now {
                break;
            }
            index.delayed.pop();
            if let Some(slot) = inner.jobs.get(&id) {
                if slot.state == JobState::Queued && slot.seq == seq {
                    index.push_ready(slot);
                }
            }
        }
        let mut out = Vec::with_capacity(req.max.min(1024));
        let mut finished_any = false;
        // Jobs whose worker stopped heartbeating first, so they are not starved.
        while out.len() < req.max {
            let Some(Reverse((expires, id))) = index.leases.peek().copied() else {
                break;
            };
            if expires > now {
                break;
            }
            index.leases.pop();
            let Some(slot) = inner.jobs.get(&id) else {
                continue;
            };
            match (slot.state, slot.lease_expires_at) {
                (JobState::Running, Some(actual)) if actual <= now => {
                    if !req.queues.iter().any(|q| *q.as_str() == *slot.queue) {
                        // Another pool's queue: keep the entry for it.
                        index.leases.push(Reverse((now.saturating_add(1_000), id)));
                        continue;
                    }
                    let (claim, finished) = inner.claim_one(id, req.worker, &clock, max_events);
                    finished_any |= finished;
                    if let Claim::Claimed(_) = claim {
                        index.leases.push(Reverse((until, id)));
                    }
                    out.push(claim);
                }
                // Extended by a heartbeat: file it again at its real expiry.
                (JobState::Running, Some(actual)) => index.leases.push(Reverse((actual, id))),
                _ => {}
            }
        }
        // Then due jobs, best first.
        while out.len() < req.max {
            let Some(key) = best_ready(&mut index.ready, req.queues) else {
                break;
            };
            let valid = inner
                .jobs
                .get(&key.id)
                .is_some_and(|slot| slot.state == JobState::Queued && slot.seq == key.seq);
            if !valid {
                continue;
            }
            let (claim, finished) = inner.claim_one(key.id, req.worker, &clock, max_events);
            finished_any |= finished;
            match claim {
                Claim::Claimed(_) => index.leases.push(Reverse((until, key.id))),
                // Not due after all (filed as ready by a clock read ahead of this one): keep
                // it, as delayed; dropping the entry would strand the job queued for good.
                Claim::NotDue { .. } => {
                    if let Some(slot) = inner.jobs.get(&key.id) {
                        index.delayed.push(Reverse((slot.run_at, slot.seq, key.id)));
                    }
                    continue;
                }
                _ => {}
            }
            out.push(claim);
        }
        let next = index.next_wakeup();
        inner.index = Some(index);
        if finished_any {
            inner.sweep(clock.now_at, &self.config);
            drop(guard);
            // A job that ended here may have readied workflow steps after it.
            self.notify.notify_waiters();
        }
        (out, next)
    }

    /// Delivery counts read from the records (the store as its own queue): ready and delayed
    /// (queued, due or not), in flight (running), dead (kept by retention).
    #[must_use]
    pub fn queue_stats_now(&self) -> QueueStats {
        let now = micros(Utc::now());
        let inner = self.inner.lock();
        let mut delayed: HashMap<&str, u64> = HashMap::new();
        match &inner.index {
            // Serving as the queue, every queued job with a future run_at is filed in the
            // delayed heap under its current seq: walk that (a scrape of /metrics holds the
            // lock for the delayed jobs only, not for every job kept). Entries left behind by
            // a cancel or a re-file have another seq or state and are skipped.
            Some(index) => {
                for Reverse((run_at, seq, id)) in &index.delayed {
                    if *run_at <= now {
                        continue;
                    }
                    if let Some(slot) = inner.jobs.get(id) {
                        if slot.state == JobState::Queued && slot.seq == *seq && slot.run_at > now {
                            *delayed.entry(&slot.kind).or_default() += 1;
                        }
                    }
                }
            }
            None => {
                for slot in inner.jobs.values() {
                    if slot.state == JobState::Queued && slot.run_at > now {
                        *delayed.entry(&slot.kind).or_default() += 1;
                    }
                }
            }
        }
        let mut stats = QueueStats::default();
        for (kind, tally) in &inner.per_kind {
            let late = delayed.get(&**kind).copied().unwrap_or(0);
            let k = KindQueueStats {
                ready: tally.queued.saturating_sub(late),
                delayed: late,
                in_flight: tally.running,
                dead: tally.dead,
            };
            if k == KindQueueStats::default() {
                continue;
            }
            stats.ready += k.ready;
            stats.delayed += k.delayed;
            stats.in_flight += k.in_flight;
            stats.dead += k.dead;
            stats.per_kind.insert(String::from(&**kind), k);
        }
        stats
    }

    /// Queued jobs per queue, due ones per priority (see
    /// [`JobStore::queue_depths`](crate::store::JobStore::queue_depths)): one pass over the
    /// records, exact.
    #[must_use]
    pub fn queue_depths_now(&self) -> Vec<crate::queue::QueueDepth> {
        use std::collections::BTreeMap;
        let now = micros(Utc::now());
        let inner = self.inner.lock();
        let mut by_queue: BTreeMap<&str, (BTreeMap<Reverse<i16>, u64>, u64)> = BTreeMap::new();
        for slot in inner.jobs.values() {
            if slot.state != JobState::Queued {
                continue;
            }
            let (ready, delayed) = by_queue.entry(&slot.queue).or_default();
            if slot.run_at > now {
                *delayed += 1;
            } else {
                *ready.entry(Reverse(slot.priority)).or_default() += 1;
            }
        }
        by_queue
            .into_iter()
            .map(|(queue, (ready, delayed))| crate::queue::QueueDepth {
                queue: queue.to_owned(),
                ready: ready
                    .into_iter()
                    .map(|(Reverse(priority), ready)| crate::queue::PriorityDepth {
                        priority,
                        ready,
                    })
                    .collect(),
                delayed,
                at_least: false,
            })
            .collect()
    }

    /// Drop finished jobs past retention now (it also happens as jobs finish).
    pub fn sweep(&self) {
        self.inner.lock().sweep(Utc::now(), &self.config);
    }
}

impl Default for InMemoryState {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for InMemoryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryState")
            .field("len", &self.len())
            .finish()
    }
}

fn owner_name(owner: Option<&WorkerId>) -> String {
    owner.map_or_else(|| "none".to_owned(), ToString::to_string)
}

/// Why a finish was refused: the job is no longer held by the transition's claim.
pub(crate) fn not_held(
    t: &Transition,
    state: JobState,
    claim: u64,
    owner: Option<&WorkerId>,
) -> String {
    format!(
        "not held by {}'s claim {} (state {state}, latest claim {claim}, owner {})",
        t.worker,
        t.token,
        owner_name(owner)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewJob;
    use crate::state::StateManager;

    /// Every event is stamped to the microsecond, as claims are. A finish stamped to the
    /// nanosecond could sort after the next claim, read later but truncated to the same
    /// microsecond: the store contract's history-order check failed now and then on that.
    #[tokio::test]
    async fn events_are_stamped_to_the_microsecond() {
        let state = InMemoryState::new();
        let worker = WorkerId::new("w");
        let queued = |_| {
            let mut record = JobRecord::from_job(NewJob::new("k"));
            record.state = JobState::Queued;
            record.attempt = 0;
            record.started_at = None;
            record
        };
        let ids = state.create((0..20).map(queued).collect()).await.unwrap();
        for created in &ids {
            let id = created.id();
            let claims = state
                .claim(&[id], &worker, Duration::from_secs(30))
                .await
                .unwrap();
            let Some(Claim::Claimed(record)) = claims.first() else {
                panic!("not claimed: {claims:?}");
            };
            let finish = crate::state::Transition {
                id,
                worker: worker.clone(),
                token: record.version,
                finish: crate::state::Finish::Defer {
                    delay: Duration::ZERO,
                    reason: "again".into(),
                },
            };
            state.finish(vec![finish]).await.unwrap();
            for event in state.events(id).await.unwrap() {
                assert_eq!(event.at.timestamp_subsec_nanos() % 1_000, 0, "{event:?}");
            }
        }
    }

    /// A job filed as ready by a writer whose clock read ahead of the claimer's (its run_at
    /// lies between the two readings) must not be lost: it waits as delayed and is claimed
    /// once due. Before the fix the claim popped it, answered NotDue and dropped it, and the
    /// job stayed queued for good.
    #[tokio::test]
    async fn a_ready_entry_not_yet_due_is_kept_not_dropped() {
        let state = InMemoryState::new();
        let mut record = JobRecord::from_job(NewJob::new("k"));
        record.state = JobState::Queued;
        record.attempt = 0;
        record.started_at = None;
        record.run_at = Utc::now() + chrono::Duration::milliseconds(150);
        let id = record.id;
        state.create(vec![record]).await.unwrap();
        {
            // File it as the finish of a later clock reading would: ready, though not due.
            let mut guard = state.inner.lock();
            let inner = &mut *guard;
            let mut index = QueueIndex::default();
            let slot = inner.jobs.get_mut(&id).unwrap();
            index.seq += 1;
            slot.seq = index.seq;
            index.push_ready(slot);
            inner.index = Some(index);
        }
        let worker = WorkerId::new("w");
        let queues = vec!["default".to_owned()];
        let req = Reserve {
            worker: &worker,
            queues: &queues,
            max: 8,
            lease: Duration::from_secs(30),
            wait: Duration::ZERO,
        };
        assert!(state.claim_due(&req).await.unwrap().is_empty());
        assert_eq!(state.queue_stats_now().delayed, 1, "kept, as delayed");
        let req = Reserve {
            wait: Duration::from_secs(5),
            ..req
        };
        let claims = state.claim_due(&req).await.unwrap();
        assert!(
            matches!(claims.as_slice(), [Claim::Claimed(r)] if r.id == id),
            "{claims:?}"
        );
    }
}
