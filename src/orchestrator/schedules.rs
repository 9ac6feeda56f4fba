//! [`Schedules`]: an orchestrator's schedules, declared, changed and inspected.

use std::sync::Arc;

use chrono::Utc;

use super::api::JobOrchestrator;
use super::engine::Orchestrator;
use crate::job::JobId;
use crate::schedule::{
    Fire, Schedule, ScheduleRecord, ScheduleStore, SchedulerCounts, Upserted, next_tick, tick_key,
};
use crate::{Error, ErrorKind, Result};

/// The schedules of an orchestrator's store, from [`Orchestrator::schedules`]. See
/// [`crate::schedule`] for what a schedule is and how its ticks fire.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> jobforge::Result<()> {
/// use std::time::Duration;
/// use jobforge::prelude::*;
/// use jobforge::schedule::{Schedule, ScheduledJob, Upserted};
///
/// let orchestrator = Orchestrator::builder()
///     .handler("cleanup", |_ctx: JobContext| async { Ok(serde_json::json!(null)) })
///     .build()?;
/// let every_minute = Schedule::cron("cleanup", "* * * * *", ScheduledJob::new("cleanup"));
/// let (record, what) = orchestrator.schedules()?.upsert(every_minute.clone()).await?;
/// assert_eq!(what, Upserted::Created);
/// assert!(record.next_run_at.is_some());
/// // The same definition again changes nothing.
/// let (_, what) = orchestrator.schedules()?.upsert(every_minute).await?;
/// assert_eq!(what, Upserted::Unchanged);
/// # Ok(())
/// # }
/// ```
///
/// Cheap to clone (it holds the orchestrator, itself a handle), and `'static`: keep one, or
/// hand it to the HTTP API ([`HttpConfig::with_schedules`](crate::http::HttpConfig)).
#[derive(Clone)]
pub struct Schedules {
    orchestrator: Orchestrator,
    store: Arc<dyn ScheduleStore>,
}

impl std::fmt::Debug for Schedules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedules").finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// The schedules kept by this orchestrator's store.
    ///
    /// # Errors
    ///
    /// `Configuration` when the store keeps no schedules.
    pub fn schedules(&self) -> Result<Schedules> {
        let store = self.engine().store.schedules().ok_or_else(|| {
            Error::new(
                ErrorKind::Configuration,
                "this orchestrator's store keeps no schedules: give a Split store its state's schedules with `Split::with_schedules`, or use the in-memory, PostgreSQL or Redis store itself",
            )
        })?;
        Ok(Schedules {
            orchestrator: self.clone(),
            store,
        })
    }
}

fn not_found(id: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("no schedule `{id}`"))
}

impl Schedules {
    /// Store `schedule`: a new one, a new definition of an existing one (its next tick is
    /// computed again; its counts and history stay), or the same definition (nothing
    /// changes), as [`Upserted`] says.
    ///
    /// # Errors
    ///
    /// `InvalidInput` naming the field (see [`Schedule::validate`]), and
    /// `schedule.job.kind` when this process has handlers and none for the kind.
    pub async fn upsert(&self, schedule: Schedule) -> Result<(ScheduleRecord, Upserted)> {
        let timetable = schedule.validate()?;
        if !self.knows_kind(&schedule.job.kind) {
            return Err(Error::invalid_input(
                "schedule.job.kind",
                format!(
                    "no handler for kind `{}` is registered here; register it, or check the name",
                    schedule.job.kind
                ),
            ));
        }
        let now = Utc::now();
        let anchor = self
            .store
            .get(&schedule.id)
            .await?
            .map_or(now, |r| r.created_at);
        let next = next_tick(&schedule, &timetable, anchor, now);
        self.store.upsert(schedule, next, now).await
    }

    /// One schedule.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn get(&self, id: &str) -> Result<Option<ScheduleRecord>> {
        self.store.get(id).await
    }

    /// Every schedule, by id.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn list(&self) -> Result<Vec<ScheduleRecord>> {
        self.store.list().await
    }

    /// Pause: no tick fires until [`resume`](Self::resume).
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such schedule.
    pub async fn pause(&self, id: &str) -> Result<ScheduleRecord> {
        self.store
            .set_paused(id, true, None, Utc::now())
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// Resume: the next tick after now fires; ticks that came due while paused do not.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such schedule.
    pub async fn resume(&self, id: &str) -> Result<ScheduleRecord> {
        let record = self.store.get(id).await?.ok_or_else(|| not_found(id))?;
        let timetable = record.schedule.validate()?;
        let now = Utc::now();
        let next = next_tick(&record.schedule, &timetable, record.created_at, now);
        self.store
            .set_paused(id, false, next, now)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// Remove a schedule (its jobs stay); `false` if there was none.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        self.store.delete(id).await
    }

    /// Submit the schedule's job now, outside its ticks (paused or not); its next tick is
    /// unchanged. Returns the job's id.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such schedule; the submit's errors.
    pub async fn trigger(&self, id: &str) -> Result<JobId> {
        let record = self.store.get(id).await?.ok_or_else(|| not_found(id))?;
        let now = Utc::now();
        let key = format!("{}#trigger-{}", tick_key(id, now), JobId::new());
        let submitted = self
            .orchestrator
            .submit(record.schedule.job.to_new_job(id, key))
            .await?;
        let fire = Fire {
            tick: now,
            job_id: submitted.id,
            triggered: true,
        };
        self.store.record_trigger(id, fire, now).await?;
        Ok(submitted.id)
    }

    /// The schedule's latest fires, oldest first (at most
    /// [`HISTORY`](crate::schedule::HISTORY)); read each job with
    /// [`JobOrchestrator::get`].
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such schedule.
    pub async fn history(&self, id: &str) -> Result<Vec<Fire>> {
        Ok(self
            .store
            .get(id)
            .await?
            .ok_or_else(|| not_found(id))?
            .history)
    }

    /// Fire what is due now, as a worker pool's scheduler does at each poll (useful in tests
    /// and in processes that run no worker pool). Returns how many jobs were submitted.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn fire_due(&self) -> Result<u64> {
        let report = crate::schedule::fire_due(
            &self.orchestrator,
            self.store.as_ref(),
            &crate::schedule::SchedulerConfig::default(),
            Utc::now(),
        )
        .await?;
        Ok(report.counts.fired)
    }

    /// What this process's schedulers did since it started (every worker pool's scheduler
    /// and every [`fire_due`](Self::fire_due) of this orchestrator and its clones). Each
    /// process counts its own; the fleet's totals per schedule are in its record
    /// ([`ScheduleRecord::fired`], [`ScheduleRecord::skipped`]).
    #[must_use]
    pub fn counts(&self) -> SchedulerCounts {
        self.orchestrator.engine().scheduler.snapshot()
    }

    /// Whether this process has a handler for `kind` (with no handlers, any kind goes: a
    /// worker elsewhere may have it).
    fn knows_kind(&self, kind: &str) -> bool {
        let kinds = &self.orchestrator.engine().kinds;
        kinds.is_empty() || kinds.contains_key(kind)
    }
}
