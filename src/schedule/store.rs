//! Where schedules are kept: the [`ScheduleStore`] seam, and the in-memory store.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Fire, HISTORY, Schedule, ScheduleRecord};
use crate::Result;

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    /// A new schedule.
    Created,
    /// A new definition for an existing schedule: its next tick was computed again.
    Updated,
    /// The same definition as stored: nothing changed.
    Unchanged,
}

/// Storage of schedules. Every method is one atomic step on the store; the scheduler keeps
/// its exactly-once promise through [`advance`](ScheduleStore::advance)'s compare-and-set and
/// the idempotency keys of the jobs it submits (see the [module documentation](super)).
#[async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// Store `schedule` (validated by the caller) with its first tick `next_run_at`. The
    /// same definition as stored changes nothing; a new one replaces it, takes the new
    /// `next_run_at` and keeps the schedule's counts and history.
    async fn upsert(
        &self,
        schedule: Schedule,
        next_run_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(ScheduleRecord, Upserted)>;

    /// One schedule.
    async fn get(&self, id: &str) -> Result<Option<ScheduleRecord>>;

    /// Every schedule, by id.
    async fn list(&self) -> Result<Vec<ScheduleRecord>>;

    /// Remove a schedule; `false` if there was none. Its jobs stay.
    async fn delete(&self, id: &str) -> Result<bool>;

    /// Pause (`next_run_at` `None`) or resume (with the given next tick). `None` if there is
    /// no such schedule.
    async fn set_paused(
        &self,
        id: &str,
        paused: bool,
        next_run_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<ScheduleRecord>>;

    /// Up to `limit` active schedules whose next tick is at or before `now`, earliest first.
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<ScheduleRecord>>;

    /// Compare-and-set: if schedule `id` is still at `version`, record `fires` (appended
    /// to its history, counted), `skipped` ticks, and its new `next_run_at`; bump its
    /// version. `false` when another process got there first (or it was changed, paused or
    /// deleted): nothing is written.
    async fn advance(
        &self,
        id: &str,
        version: u64,
        next_run_at: Option<DateTime<Utc>>,
        fires: &[Fire],
        skipped: u64,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    /// Append a fire outside the ticks (a trigger), whatever the version.
    async fn record_trigger(&self, id: &str, fire: Fire, now: DateTime<Utc>) -> Result<bool>;

    /// [`advance`](Self::advance) each of `items` (each from the record as read by
    /// [`due`](Self::due)), answered in order. This default advances them one by one; the
    /// PostgreSQL and Redis stores do all in one round trip.
    async fn advance_many(&self, items: &[Advance<'_>], now: DateTime<Utc>) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(
                self.advance(
                    &item.record.schedule.id,
                    item.record.version,
                    item.next_run_at,
                    &item.fires,
                    item.skipped,
                    now,
                )
                .await?,
            );
        }
        Ok(out)
    }
}

/// One schedule to advance: see [`ScheduleStore::advance_many`].
#[derive(Debug, Clone)]
pub struct Advance<'a> {
    /// The schedule as read (its version is the compare-and-set's).
    pub record: &'a ScheduleRecord,
    /// Its next tick.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The fires to record.
    pub fires: Vec<Fire>,
    /// Ticks skipped.
    pub skipped: u64,
}

impl<'a> Advance<'a> {
    /// A trigger's fire on `record`, its next tick unchanged.
    #[must_use]
    pub fn trigger(record: &'a ScheduleRecord, fire: Fire) -> Self {
        Self {
            record,
            next_run_at: record.next_run_at,
            fires: vec![fire],
            skipped: 0,
        }
    }

    /// The record once advanced.
    #[must_use]
    pub fn advanced(&self, now: DateTime<Utc>) -> ScheduleRecord {
        let mut record = self.record.clone();
        record.next_run_at = self.next_run_at;
        record.fired = record
            .fired
            .saturating_add(u64::try_from(self.fires.len()).unwrap_or(u64::MAX));
        record.skipped = record.skipped.saturating_add(self.skipped);
        push_history(&mut record.history, &self.fires);
        record.version = record.version.saturating_add(1);
        record.updated_at = now;
        record
    }
}

/// Append `fires` to `history`, keeping the latest [`HISTORY`].
fn push_history(history: &mut Vec<Fire>, fires: &[Fire]) {
    history.extend_from_slice(fires);
    let extra = history.len().saturating_sub(HISTORY);
    if extra > 0 {
        history.drain(..extra);
    }
}

/// The record an upsert leaves, and what it did, from the stored one (if any).
pub(crate) fn upserted(
    stored: Option<&ScheduleRecord>,
    schedule: Schedule,
    next_run_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (ScheduleRecord, Upserted) {
    match stored {
        Some(old) if old.schedule == schedule => (old.clone(), Upserted::Unchanged),
        Some(old) => (
            ScheduleRecord {
                next_run_at: if schedule.paused { None } else { next_run_at },
                schedule,
                version: old.version.saturating_add(1),
                updated_at: now,
                ..old.clone()
            },
            Upserted::Updated,
        ),
        None => (
            ScheduleRecord {
                next_run_at: if schedule.paused { None } else { next_run_at },
                schedule,
                version: 1,
                created_at: now,
                updated_at: now,
                fired: 0,
                skipped: 0,
                history: Vec::new(),
            },
            Upserted::Created,
        ),
    }
}

/// The in-memory schedule store, the embedded default's (kept by
/// [`InMemoryState`](crate::state::InMemoryState)).
#[derive(Default)]
pub struct InMemorySchedules {
    inner: parking_lot::Mutex<BTreeMap<String, ScheduleRecord>>,
}

impl InMemorySchedules {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ScheduleStore for InMemorySchedules {
    async fn upsert(
        &self,
        schedule: Schedule,
        next_run_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(ScheduleRecord, Upserted)> {
        let mut map = self.inner.lock();
        let (record, what) = upserted(map.get(&schedule.id), schedule, next_run_at, now);
        if what != Upserted::Unchanged {
            map.insert(record.schedule.id.clone(), record.clone());
        }
        Ok((record, what))
    }

    async fn get(&self, id: &str) -> Result<Option<ScheduleRecord>> {
        Ok(self.inner.lock().get(id).cloned())
    }

    async fn list(&self) -> Result<Vec<ScheduleRecord>> {
        Ok(self.inner.lock().values().cloned().collect())
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        Ok(self.inner.lock().remove(id).is_some())
    }

    async fn set_paused(
        &self,
        id: &str,
        paused: bool,
        next_run_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<ScheduleRecord>> {
        let mut map = self.inner.lock();
        let Some(record) = map.get_mut(id) else {
            return Ok(None);
        };
        record.schedule.paused = paused;
        record.next_run_at = if paused { None } else { next_run_at };
        record.version = record.version.saturating_add(1);
        record.updated_at = now;
        Ok(Some(record.clone()))
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<ScheduleRecord>> {
        let map = self.inner.lock();
        let mut due: Vec<&ScheduleRecord> = map
            .values()
            .filter(|r| !r.schedule.paused && r.next_run_at.is_some_and(|t| t <= now))
            .collect();
        due.sort_by_key(|r| r.next_run_at);
        Ok(due.into_iter().take(limit).cloned().collect())
    }

    async fn advance(
        &self,
        id: &str,
        version: u64,
        next_run_at: Option<DateTime<Utc>>,
        fires: &[Fire],
        skipped: u64,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut map = self.inner.lock();
        let Some(record) = map.get_mut(id) else {
            return Ok(false);
        };
        if record.version != version || record.schedule.paused {
            return Ok(false);
        }
        let advanced = Advance {
            record,
            next_run_at,
            fires: fires.to_vec(),
            skipped,
        }
        .advanced(now);
        *record = advanced;
        Ok(true)
    }

    async fn record_trigger(&self, id: &str, fire: Fire, now: DateTime<Utc>) -> Result<bool> {
        let mut map = self.inner.lock();
        let Some(record) = map.get_mut(id) else {
            return Ok(false);
        };
        *record = Advance::trigger(record, fire).advanced(now);
        Ok(true)
    }
}
