//! `StateManager` and `JobStore` for [`InMemoryState`].

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use crate::job::{JobEvent, JobId, JobRecord, JobState, WorkerId};
use crate::queue::{QueueStats, Reserve};
use crate::state::types::{
    CancelOutcome, Claim, Created, Heartbeat, Held, JobFilter, Order, Page, Paged, StateCounts,
    StateManager, Transition, TransitionResult,
};
use crate::store::JobStore;
use crate::util::{from_micros, micros, micros_after};
use crate::{Error, ErrorKind, Result};

use super::*;

#[async_trait]
impl StateManager for InMemoryState {
    async fn create(&self, jobs: Vec<JobRecord>) -> Result<Vec<Created>> {
        let now = micros(Utc::now());
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if !inner.jobs.has_room(jobs.len()) {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "the in-memory store keeps {} jobs, its most; shorten its retention or use a database store",
                    inner.jobs.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(jobs.len());
        let mut last_kind: Option<Arc<str>> = None;
        let mut last_queue: Option<Arc<str>> = None;
        for r in jobs {
            if let Some(key) = &r.idempotency_key {
                if let Some(existing) = inner.keys.get(key) {
                    out.push(Created::Existing(*existing));
                    continue;
                }
            }
            // Jobs of a batch mostly share kind and queue: reuse the last shared names.
            let kind = match &last_kind {
                Some(k) if **k == *r.kind => Arc::clone(k),
                _ => {
                    let k = inner.names.intern(&r.kind);
                    last_kind = Some(Arc::clone(&k));
                    k
                }
            };
            let queue = match &last_queue {
                Some(q) if **q == *r.queue => Arc::clone(q),
                _ => {
                    let q = inner.names.intern(&r.queue);
                    last_queue = Some(Arc::clone(&q));
                    q
                }
            };
            let id = r.id;
            let state = r.state;
            let Some(vacant) = inner.jobs.vacant(id) else {
                out.push(Created::Existing(id));
                continue;
            };
            let key = r.idempotency_key.clone();
            let slot = vacant.insert(Slot::from_record(r, Arc::clone(&kind), queue, now));
            if let Some(index) = &mut inner.index {
                if state == JobState::Queued {
                    index.file(slot, now);
                }
            }
            if let Some(key) = key {
                inner.keys.insert(key, id);
            }
            inner.tally(&kind, None, Some(state));
            out.push(Created::New(id));
        }
        let created_any = out.iter().any(|c| matches!(c, Created::New(_)));
        drop(guard);
        if created_any {
            self.notify.notify_waiters();
        }
        Ok(out)
    }

    async fn claim(&self, ids: &[JobId], worker: &WorkerId, lease: Duration) -> Result<Vec<Claim>> {
        let clock = ClaimClock::new(Utc::now(), lease);
        let max_events = self.config.max_events_per_job;
        let mut inner = self.inner.lock();
        let mut out = Vec::with_capacity(ids.len());
        let mut finished_any = false;
        for id in ids {
            let (claim, finished) = inner.claim_one(*id, worker, &clock, max_events);
            finished_any |= finished;
            out.push(claim);
        }
        if finished_any {
            inner.sweep(clock.now_at, &self.config);
            drop(inner);
            // A job that ended here may have readied workflow steps after it.
            self.notify.notify_waiters();
        }
        Ok(out)
    }

    async fn heartbeat(&self, held: &[Held], lease: Duration) -> Result<Vec<Heartbeat>> {
        let until = micros_after(micros(Utc::now()), lease);
        let mut inner = self.inner.lock();
        Ok(held
            .iter()
            .map(|h| match inner.jobs.get_mut(&h.id) {
                Some(slot) if slot.state == JobState::Running && slot.claim == h.token => {
                    slot.lease_expires_at = Some(until);
                    Heartbeat::Held {
                        cancel_requested: slot.cancel_requested,
                    }
                }
                _ => Heartbeat::Lost,
            })
            .collect())
    }

    async fn finish(&self, transitions: Vec<Transition>) -> Result<Vec<TransitionResult>> {
        let (now, now_at) = crate::util::now_to_micros();
        let max_events = self.config.max_events_per_job;
        let mut inner = self.inner.lock();
        let mut out = Vec::with_capacity(transitions.len());
        let mut finished_any = false;
        let mut requeued_any = false;
        for t in transitions {
            let Some(slot) = inner.jobs.get_mut(&t.id) else {
                out.push(TransitionResult::Conflict {
                    current: None,
                    reason: "no such job".to_owned(),
                });
                continue;
            };
            if slot.state != JobState::Running || slot.claim != t.token {
                out.push(TransitionResult::Conflict {
                    current: Some(slot.state),
                    reason: not_held(&t, slot.state, slot.claim, slot.lease_owner.as_ref()),
                });
                continue;
            }
            let from = slot.state;
            let effect = t.finish.effect(slot.attempt, slot.cancel_requested, now_at);
            let to = effect.to;
            debug_assert!(from.can_transition_to(to));
            let retried =
                to == JobState::Queued && matches!(t.finish, crate::job::Finish::Retry { .. });
            slot.attempt = effect.attempt;
            if let Some(run_at) = effect.run_at {
                slot.run_at = micros(run_at);
            }
            if let Some(error) = effect.last_error {
                slot.extra().last_error = Some(error.to_owned());
            }
            if let Some(result) = effect.result {
                slot.extra().result = Some(result.clone());
            }
            let reason = effect.reason.map(Box::<str>::from);
            slot.state = to;
            slot.updated_at = now;
            slot.lease_owner = None;
            slot.lease_expires_at = None;
            slot.version += 1;
            if to.is_terminal() {
                slot.finished_at = Some(now);
            }
            let (attempt, version) = (slot.attempt, slot.version);
            let kind = Arc::clone(&slot.kind);
            slot.push(
                Event {
                    at: now_at,
                    from,
                    to,
                    attempt,
                    worker: Some(t.worker.clone()),
                    reason,
                },
                max_events,
            );
            inner.tally(&kind, Some(from), Some(to));
            inner.retried += u64::from(retried);
            if to.is_terminal() {
                inner.finished.push_back((now_at, t.id));
                finished_any = true;
                requeued_any |= inner.settle_dependents(t.id, now_at, max_events);
            } else {
                let fields = &mut *inner;
                if let (Some(index), Some(slot)) = (&mut fields.index, fields.jobs.get_mut(&t.id)) {
                    index.file(slot, now);
                    requeued_any = true;
                }
            }
            out.push(TransitionResult::Applied { state: to, version });
        }
        if finished_any {
            inner.sweep(now_at, &self.config);
        }
        drop(inner);
        if requeued_any {
            self.notify.notify_waiters();
        }
        Ok(out)
    }

    async fn cancel(&self, id: JobId, reason: &str) -> Result<CancelOutcome> {
        let (now, now_at) = crate::util::now_to_micros();
        let max_events = self.config.max_events_per_job;
        let mut inner = self.inner.lock();
        let Some(slot) = inner.jobs.get_mut(&id) else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no job {id} (it may have finished longer ago than the retention)"),
            ));
        };
        match slot.state {
            from @ (JobState::Queued | JobState::Pending) => {
                slot.state = JobState::Cancelled;
                slot.updated_at = now;
                slot.finished_at = Some(now);
                slot.version += 1;
                let (attempt, kind) = (slot.attempt, Arc::clone(&slot.kind));
                slot.push(
                    Event {
                        at: now_at,
                        from,
                        to: JobState::Cancelled,
                        attempt,
                        worker: None,
                        reason: Some(reason.into()),
                    },
                    max_events,
                );
                inner.tally(&kind, Some(from), Some(JobState::Cancelled));
                inner.finished.push_back((now_at, id));
                let readied = inner.settle_dependents(id, now_at, max_events);
                inner.sweep(now_at, &self.config);
                drop(inner);
                if readied {
                    self.notify.notify_waiters();
                }
                Ok(CancelOutcome::Cancelled)
            }
            JobState::Running => {
                slot.cancel_requested = true;
                slot.updated_at = now;
                slot.version += 1;
                Ok(CancelOutcome::Requested)
            }
            state => Ok(CancelOutcome::AlreadyFinished(state)),
        }
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>> {
        Ok(self.inner.lock().jobs.get(&id).map(Slot::to_record))
    }

    async fn report_progress(&self, held: Held, progress: &crate::job::Progress) -> Result<bool> {
        let mut inner = self.inner.lock();
        Ok(match inner.jobs.get_mut(&held.id) {
            Some(slot) if slot.state == JobState::Running && slot.claim == held.token => {
                slot.extra().progress = Some(progress.clone());
                true
            }
            _ => false,
        })
    }

    async fn list(&self, filter: &JobFilter, page: &Page) -> Result<Paged<JobRecord>> {
        page.validate()?;
        let inner = self.inner.lock();
        let mut items = Vec::with_capacity(page.limit.min(128));
        let mut next = None;
        let mut take = |slot: &Slot| -> bool {
            if !slot.matches(filter) {
                return true;
            }
            if items.len() == page.limit {
                next = items.last().map(|r: &JobRecord| r.id);
                return false;
            }
            items.push(slot.to_record());
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
                for slot in inner.jobs.range((Bound::Excluded(after), Bound::Unbounded)) {
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
                for slot in inner.jobs.range(..after).rev() {
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
        // A workflow step with dependencies was created waiting for them.
        let waited = slot
            .extra
            .as_ref()
            .and_then(|e| e.step.as_ref())
            .is_some_and(|s| !s.depends_on.is_empty());
        events.push(JobEvent {
            job_id: id,
            at: from_micros(slot.created_at),
            from: None,
            to: if waited {
                JobState::Pending
            } else {
                JobState::Queued
            },
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
        Ok(StateCounts {
            total: inner.total,
            retried: inner.retried,
            per_kind: inner
                .per_kind
                .iter()
                .filter(|(_, t)| t.total() > 0)
                .map(|(k, t)| (String::from(&**k), *t))
                .collect(),
        })
    }
}

/// The embedded store is its own queue: the default engine claims through this.
#[async_trait]
impl JobStore for InMemoryState {
    async fn claim_due(&self, req: &Reserve<'_>) -> Result<Vec<Claim>> {
        InMemoryState::claim_due(self, req).await
    }

    fn schedules(&self) -> Option<Arc<dyn crate::schedule::ScheduleStore>> {
        Some(Arc::clone(&self.schedules) as Arc<dyn crate::schedule::ScheduleStore>)
    }

    async fn stats(&self) -> Result<QueueStats> {
        Ok(self.queue_stats_now())
    }

    fn supports_workflows(&self) -> bool {
        true
    }

    async fn paused_queues(&self) -> Result<std::collections::BTreeSet<String>> {
        Ok(self.paused.lock().clone())
    }

    async fn queue_depths(&self) -> Result<Vec<crate::queue::QueueDepth>> {
        Ok(self.queue_depths_now())
    }

    async fn delete_finished(&self, id: JobId) -> Result<crate::store::Deleted> {
        Ok(self.inner.lock().delete_finished(&id))
    }

    async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<bool> {
        let mut set = self.paused.lock();
        let changed = if paused {
            set.insert(queue.to_owned())
        } else {
            set.remove(queue)
        };
        drop(set);
        if changed && !paused {
            // Pools waiting on this store look again.
            self.notify.notify_waiters();
        }
        Ok(changed)
    }
}
