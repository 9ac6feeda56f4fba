use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::types::{
    CancelOutcome, Claim, Created, Finish, Heartbeat, JobFilter, Order, Page, Paged, StateCounts,
    StateManager, StateTally, Transition, TransitionResult,
};
use crate::job::{JobEvent, JobId, JobRecord, JobState, WorkerId};
use crate::{Error, ErrorKind, Result};

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

struct Slot {
    record: JobRecord,
    /// Transitions after creation (creation is derived from the record).
    events: Vec<Event>,
}

#[derive(Default)]
struct Inner {
    jobs: BTreeMap<JobId, Slot>,
    keys: HashMap<String, JobId>,
    /// Finished jobs in the order they finished, for retention.
    finished: VecDeque<(DateTime<Utc>, JobId)>,
    counts: StateCounts,
}

impl Inner {
    fn tally(&mut self, kind: &str, from: Option<JobState>, to: Option<JobState>) {
        let apply = |t: &mut StateTally| {
            if let Some(from) = from {
                let c = t.get_mut(from);
                *c = c.saturating_sub(1);
            }
            if let Some(to) = to {
                *t.get_mut(to) += 1;
            }
        };
        apply(&mut self.counts.total);
        match self.counts.per_kind.get_mut(kind) {
            Some(t) => apply(t),
            None => {
                let mut t = StateTally::default();
                apply(&mut t);
                self.counts.per_kind.insert(kind.to_owned(), t);
            }
        }
    }

    fn sweep(&mut self, now: DateTime<Utc>, config: &InMemoryStateConfig) {
        let horizon =
            now - chrono::Duration::from_std(config.retention).unwrap_or(chrono::Duration::MAX);
        while let Some((at, id)) = self.finished.front().copied() {
            if at > horizon && self.finished.len() <= config.max_finished {
                break;
            }
            self.finished.pop_front();
            if let Some(slot) = self.jobs.remove(&id) {
                if let Some(key) = &slot.record.idempotency_key {
                    if self.keys.get(key) == Some(&id) {
                        self.keys.remove(key);
                    }
                }
                self.tally(&slot.record.kind, Some(slot.record.state), None);
                if self
                    .counts
                    .per_kind
                    .get(&slot.record.kind)
                    .is_some_and(|t| t.total() == 0)
                {
                    self.counts.per_kind.remove(&slot.record.kind);
                }
            }
        }
    }
}

impl Slot {
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

fn lease_until(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

#[async_trait]
impl StateManager for InMemoryState {
    async fn create(&self, jobs: Vec<JobRecord>) -> Result<Vec<Created>> {
        let mut inner = self.inner.lock();
        let mut out = Vec::with_capacity(jobs.len());
        for record in jobs {
            if let Some(key) = &record.idempotency_key {
                if let Some(existing) = inner.keys.get(key) {
                    out.push(Created::Existing(*existing));
                    continue;
                }
                inner.keys.insert(key.clone(), record.id);
            }
            if inner.jobs.contains_key(&record.id) {
                out.push(Created::Existing(record.id));
                continue;
            }
            let id = record.id;
            inner.tally(&record.kind, None, Some(record.state));
            inner.jobs.insert(
                id,
                Slot {
                    record,
                    events: Vec::new(),
                },
            );
            out.push(Created::New(id));
        }
        Ok(out)
    }

    async fn claim(&self, ids: &[JobId], worker: &WorkerId, lease: Duration) -> Result<Vec<Claim>> {
        let now = Utc::now();
        let until = lease_until(now, lease);
        let max_events = self.config.max_events_per_job;
        let mut inner = self.inner.lock();
        let mut out = Vec::with_capacity(ids.len());
        let mut finished_any = false;
        for id in ids {
            let Some(slot) = inner.jobs.get_mut(id) else {
                out.push(Claim::Skipped {
                    id: *id,
                    state: None,
                });
                continue;
            };
            let r = &mut slot.record;
            let (reason, exhausted) = match r.state {
                JobState::Queued if r.run_at > now => {
                    out.push(Claim::NotDue {
                        id: *id,
                        run_at: r.run_at,
                    });
                    continue;
                }
                JobState::Queued => (None, false),
                JobState::Running if r.lease_expires_at.is_some_and(|at| at <= now) => {
                    let owner = r
                        .lease_owner
                        .as_ref()
                        .map_or_else(|| "unknown".to_owned(), ToString::to_string);
                    let exhausted = r.attempt >= r.max_attempts;
                    let reason = if exhausted {
                        format!(
                            "worker_lost: lease of {owner} expired during attempt {} of {}; no attempts left",
                            r.attempt, r.max_attempts
                        )
                    } else {
                        format!(
                            "lease of {owner} expired during attempt {}; taken over",
                            r.attempt
                        )
                    };
                    (Some(reason), exhausted)
                }
                state => {
                    out.push(Claim::Skipped {
                        id: *id,
                        state: Some(state),
                    });
                    continue;
                }
            };
            let from = r.state;
            let kind = r.kind.clone();
            if exhausted {
                let reason = reason.unwrap_or_default();
                r.state = JobState::Dead;
                r.finished_at = Some(now);
                r.updated_at = now;
                r.last_error = Some(reason.clone());
                r.lease_owner = None;
                r.lease_expires_at = None;
                r.version += 1;
                let attempt = r.attempt;
                slot.push(
                    Event {
                        at: now,
                        from,
                        to: JobState::Dead,
                        attempt,
                        worker: Some(worker.clone()),
                        reason: Some(reason.clone().into_boxed_str()),
                    },
                    max_events,
                );
                inner.tally(&kind, Some(from), Some(JobState::Dead));
                inner.finished.push_back((now, *id));
                finished_any = true;
                out.push(Claim::Exhausted { id: *id, reason });
                continue;
            }
            r.state = JobState::Running;
            r.attempt += 1;
            r.lease_owner = Some(worker.clone());
            r.lease_expires_at = Some(until);
            r.started_at = Some(now);
            r.updated_at = now;
            r.version += 1;
            let record = r.clone();
            slot.push(
                Event {
                    at: now,
                    from,
                    to: JobState::Running,
                    attempt: record.attempt,
                    worker: Some(worker.clone()),
                    reason: reason.map(String::into_boxed_str),
                },
                max_events,
            );
            if from != JobState::Running {
                inner.tally(&kind, Some(from), Some(JobState::Running));
            }
            out.push(Claim::Claimed(record));
        }
        if finished_any {
            inner.sweep(now, &self.config);
        }
        Ok(out)
    }

    async fn heartbeat(
        &self,
        ids: &[JobId],
        worker: &WorkerId,
        lease: Duration,
    ) -> Result<Vec<Heartbeat>> {
        let now = Utc::now();
        let until = lease_until(now, lease);
        let mut inner = self.inner.lock();
        Ok(ids
            .iter()
            .map(|id| match inner.jobs.get_mut(id) {
                Some(slot)
                    if slot.record.state == JobState::Running
                        && slot.record.lease_owner.as_ref() == Some(worker) =>
                {
                    slot.record.lease_expires_at = Some(until);
                    Heartbeat::Held {
                        cancel_requested: slot.record.cancel_requested,
                    }
                }
                _ => Heartbeat::Lost,
            })
            .collect())
    }

    async fn finish(&self, transitions: Vec<Transition>) -> Result<Vec<TransitionResult>> {
        let now = Utc::now();
        let max_events = self.config.max_events_per_job;
        let mut inner = self.inner.lock();
        let mut out = Vec::with_capacity(transitions.len());
        let mut finished_any = false;
        for t in transitions {
            let Some(slot) = inner.jobs.get_mut(&t.id) else {
                out.push(TransitionResult::Conflict {
                    current: None,
                    reason: "no such job".to_owned(),
                });
                continue;
            };
            let r = &mut slot.record;
            if r.state != JobState::Running
                || r.lease_owner.as_ref() != Some(&t.worker)
                || r.attempt != t.attempt
            {
                out.push(TransitionResult::Conflict {
                    current: Some(r.state),
                    reason: format!(
                        "not held by {} at attempt {} (state {}, attempt {}, owner {})",
                        t.worker,
                        t.attempt,
                        r.state,
                        r.attempt,
                        r.lease_owner
                            .as_ref()
                            .map_or_else(|| "none".to_owned(), ToString::to_string)
                    ),
                });
                continue;
            }
            let mut finish = t.finish;
            // A cancel asked for while the job ran wins over putting it back in the queue.
            if r.cancel_requested && finish.target() == JobState::Queued {
                finish = Finish::Cancelled {
                    reason: "cancelled by request".to_owned(),
                };
            }
            let to = finish.target();
            let from = r.state;
            debug_assert!(from.can_transition_to(to));
            let reason: Option<String> = match finish {
                Finish::Succeeded { result } => {
                    r.result = result;
                    None
                }
                Finish::Retry { run_at, error } => {
                    r.run_at = run_at;
                    r.last_error = Some(error.clone());
                    Some(error)
                }
                Finish::Defer { run_at, reason } => {
                    r.run_at = run_at;
                    r.attempt = r.attempt.saturating_sub(1);
                    Some(reason)
                }
                Finish::Release { reason } => {
                    r.run_at = now;
                    r.attempt = r.attempt.saturating_sub(1);
                    Some(reason)
                }
                Finish::Dead { error } => {
                    r.last_error = Some(error.clone());
                    Some(error)
                }
                Finish::Cancelled { reason } => Some(reason),
            };
            r.state = to;
            r.updated_at = now;
            r.lease_owner = None;
            r.lease_expires_at = None;
            r.version += 1;
            if to.is_terminal() {
                r.finished_at = Some(now);
            }
            let (attempt, version) = (r.attempt, r.version);
            let kind = r.kind.clone();
            slot.push(
                Event {
                    at: now,
                    from,
                    to,
                    attempt,
                    worker: Some(t.worker),
                    reason: reason.map(String::into_boxed_str),
                },
                max_events,
            );
            inner.tally(&kind, Some(from), Some(to));
            if to.is_terminal() {
                inner.finished.push_back((now, t.id));
                finished_any = true;
            }
            out.push(TransitionResult::Applied { state: to, version });
        }
        if finished_any {
            inner.sweep(now, &self.config);
        }
        Ok(out)
    }

    async fn cancel(&self, id: JobId, reason: &str) -> Result<CancelOutcome> {
        let now = Utc::now();
        let max_events = self.config.max_events_per_job;
        let mut inner = self.inner.lock();
        let Some(slot) = inner.jobs.get_mut(&id) else {
            return Err(Error::new(ErrorKind::NotFound, format!("no job {id}")));
        };
        let r = &mut slot.record;
        match r.state {
            JobState::Queued => {
                r.state = JobState::Cancelled;
                r.updated_at = now;
                r.finished_at = Some(now);
                r.version += 1;
                let (attempt, kind) = (r.attempt, r.kind.clone());
                slot.push(
                    Event {
                        at: now,
                        from: JobState::Queued,
                        to: JobState::Cancelled,
                        attempt,
                        worker: None,
                        reason: Some(reason.into()),
                    },
                    max_events,
                );
                inner.tally(&kind, Some(JobState::Queued), Some(JobState::Cancelled));
                inner.finished.push_back((now, id));
                inner.sweep(now, &self.config);
                Ok(CancelOutcome::Cancelled)
            }
            JobState::Running => {
                r.cancel_requested = true;
                r.updated_at = now;
                r.version += 1;
                Ok(CancelOutcome::Requested)
            }
            state => Ok(CancelOutcome::AlreadyFinished(state)),
        }
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>> {
        Ok(self.inner.lock().jobs.get(&id).map(|s| s.record.clone()))
    }

    async fn list(&self, filter: &JobFilter, page: &Page) -> Result<Paged<JobRecord>> {
        page.validate()?;
        let inner = self.inner.lock();
        let mut items = Vec::with_capacity(page.limit.min(128));
        let mut next = None;
        let mut take = |slot: &Slot| -> bool {
            if !filter.matches(&slot.record) {
                return true;
            }
            if items.len() == page.limit {
                next = items.last().map(|r: &JobRecord| r.id);
                return false;
            }
            items.push(slot.record.clone());
            true
        };
        match (page.order, page.after) {
            (Order::Asc, None) => {
                for slot in inner.jobs.values() {
                    if !take(slot) {
                        break;
                    }
                }
            }
            (Order::Asc, Some(after)) => {
                for (_, slot) in inner.jobs.range((Bound::Excluded(after), Bound::Unbounded)) {
                    if !take(slot) {
                        break;
                    }
                }
            }
            (Order::Desc, None) => {
                for slot in inner.jobs.values().rev() {
                    if !take(slot) {
                        break;
                    }
                }
            }
            (Order::Desc, Some(after)) => {
                for (_, slot) in inner.jobs.range(..after).rev() {
                    if !take(slot) {
                        break;
                    }
                }
            }
        }
        Ok(Paged { items, next })
    }

    async fn events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        let inner = self.inner.lock();
        let Some(slot) = inner.jobs.get(&id) else {
            return Ok(Vec::new());
        };
        let mut events = Vec::with_capacity(slot.events.len() + 1);
        events.push(JobEvent {
            job_id: id,
            at: slot.record.created_at,
            from: None,
            to: JobState::Queued,
            attempt: 0,
            worker: None,
            reason: Some("submitted".to_owned()),
        });
        events.extend(slot.events.iter().map(|e| JobEvent {
            job_id: id,
            at: e.at,
            from: Some(e.from),
            to: e.to,
            attempt: e.attempt,
            worker: e.worker.clone(),
            reason: e.reason.as_deref().map(str::to_owned),
        }));
        Ok(events)
    }

    async fn counts(&self) -> Result<StateCounts> {
        let mut inner = self.inner.lock();
        inner.sweep(Utc::now(), &self.config);
        Ok(inner.counts.clone())
    }
}
