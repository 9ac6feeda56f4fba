//! Durable schedules: cron expressions and fixed intervals that submit a job at every tick,
//! once per tick across a fleet of processes, with nothing kept only in memory.
//!
//! A [`Schedule`] says when (a [`Timing`]: cron in an IANA time zone, or a fixed interval),
//! what to submit (a [`ScheduledJob`]), what to do about ticks missed while nothing ran
//! ([`CatchUp`]) and whether a tick may start while the previous job still runs
//! ([`Overlap`]). The store keeps it as a [`ScheduleRecord`] with its next tick and a
//! version.
//!
//! Any process that runs workers may fire a due schedule; no leader is elected. Firing
//! submits the tick's job under the idempotency key `<schedule id>@<tick>` and then
//! advances the schedule with a compare-and-set on its version. Two processes racing on one
//! tick submit one job (the key) and advance once (the version). A process that dies
//! between the two leaves the tick due; the next one to fire it finds the job already
//! submitted under its key and only advances. So every tick is submitted once, however
//! the processes race or die (while the tick's job is kept: its key is freed with it, after
//! the store's retention).
//!
//! ```
//! use std::time::Duration;
//! use jobforge::schedule::{CatchUp, Schedule, ScheduledJob};
//!
//! let nightly = Schedule::cron("nightly-report", "0 3 * * *", ScheduledJob::new("report"))
//!     .time_zone("Europe/Paris")
//!     .catch_up(CatchUp::Latest);
//! assert!(nightly.validate().is_ok());
//!
//! let heartbeat = Schedule::interval("ping", Duration::from_secs(30), ScheduledJob::new("ping"));
//! assert!(heartbeat.validate().is_ok());
//! ```

mod fire;
mod store;
mod timetable;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::{JobId, NewJob, Payload, Priority};
use crate::{Error, Result};

pub(crate) use fire::SchedulerMetrics;
pub use fire::{FirePlan, SchedulerConfig, SchedulerCounts, plan};
pub(crate) use fire::{fire_due, scheduler_loop};
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) use store::upserted;
pub use store::{Advance, InMemorySchedules, ScheduleStore, Upserted};
pub use timetable::{MIN_INTERVAL_MILLIS, Timetable};

/// The longest schedule id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// How many fires a schedule's record remembers (its history).
pub const HISTORY: usize = 32;

/// When a schedule ticks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timing {
    /// A cron expression: five fields (minute to day of week) or six (seconds first), or a
    /// shortcut (`@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`), read in an IANA
    /// time zone. A local time skipped by a daylight-saving change fires just after the
    /// change; a fixed local time that occurs twice fires once, at its first occurrence,
    /// while an expression with a wildcard or step in its hours fires in both passes, as
    /// Vixie cron does.
    Cron {
        /// The expression.
        expression: String,
        /// The IANA time zone it is read in (`UTC` by default).
        time_zone: String,
    },
    /// Every `millis` milliseconds, counted from the schedule's `start_at` (or from when it
    /// was first stored).
    Interval {
        /// The period, in milliseconds (at least [`MIN_INTERVAL_MILLIS`], one second).
        millis: u64,
    },
}

/// What to do about ticks that came due while nothing fired them (every process down,
/// or the schedule's firing late by more than the scheduler's grace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum CatchUp {
    /// Skip them: fire only ticks that are on time.
    #[default]
    None,
    /// Fire the latest one only.
    Latest,
    /// Fire each, up to the latest `max` of them.
    All {
        /// The most missed ticks fired at once.
        max: u32,
    },
}

/// Whether a tick may submit while the schedule's previous job is unfinished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Submit at every tick.
    #[default]
    Allow,
    /// Skip a tick while the previous job of the schedule is queued or running.
    Skip,
}

/// The job a schedule submits at each tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledJob {
    /// The job's kind.
    pub kind: String,
    /// Its payload (`null` by default).
    #[serde(default = "Payload::null")]
    pub payload: Payload,
    /// Its queue (the default queue when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Its priority (higher runs first).
    #[serde(default)]
    pub priority: Priority,
    /// Its attempts (the kind's or the engine's default when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Its tags (the scheduler adds `schedule:<id>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl ScheduledJob {
    /// A job of `kind` with a `null` payload on the default queue.
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            payload: Payload::null(),
            queue: None,
            priority: 0,
            max_attempts: None,
            tags: Vec::new(),
        }
    }

    /// Set the payload.
    #[must_use]
    pub fn payload(mut self, payload: Payload) -> Self {
        self.payload = payload;
        self
    }

    /// Set the queue.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Set the priority.
    #[must_use]
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Set the attempts.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Add a tag.
    #[must_use]
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// The job submitted for a tick of schedule `id` (`key` is its idempotency key).
    pub(crate) fn to_new_job(&self, id: &str, key: String) -> NewJob {
        let mut job = NewJob::new(self.kind.clone())
            .raw_payload(self.payload.clone())
            .priority(self.priority)
            .idempotency_key(key)
            .tag(format!("schedule:{id}"));
        if let Some(queue) = &self.queue {
            job = job.queue(queue.clone());
        }
        if let Some(attempts) = self.max_attempts {
            job = job.max_attempts(attempts);
        }
        for tag in &self.tags {
            job = job.tag(tag.clone());
        }
        job
    }
}

/// A schedule as declared: see the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Its id: names it in the API, in its jobs' idempotency keys and tags.
    pub id: String,
    /// When it ticks.
    pub timing: Timing,
    /// What it submits.
    pub job: ScheduledJob,
    /// Missed ticks.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// A tick while the previous job runs.
    #[serde(default)]
    pub overlap: Overlap,
    /// No tick before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
    /// No tick after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<DateTime<Utc>>,
    /// Declared paused (no tick fires until resumed).
    #[serde(default)]
    pub paused: bool,
}

impl Schedule {
    /// A schedule on a cron expression, read in UTC (see [`Timing::Cron`]).
    pub fn cron(id: impl Into<String>, expression: impl Into<String>, job: ScheduledJob) -> Self {
        Self::new(
            id,
            Timing::Cron {
                expression: expression.into(),
                time_zone: "UTC".to_owned(),
            },
            job,
        )
    }

    /// A schedule that ticks every `every` (to the millisecond).
    pub fn interval(id: impl Into<String>, every: Duration, job: ScheduledJob) -> Self {
        Self::new(
            id,
            Timing::Interval {
                millis: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            },
            job,
        )
    }

    fn new(id: impl Into<String>, timing: Timing, job: ScheduledJob) -> Self {
        Self {
            id: id.into(),
            timing,
            job,
            catch_up: CatchUp::None,
            overlap: Overlap::Allow,
            start_at: None,
            end_at: None,
            paused: false,
        }
    }

    /// Read the cron expression in this IANA time zone (no effect on an interval).
    #[must_use]
    pub fn time_zone(mut self, zone: impl Into<String>) -> Self {
        if let Timing::Cron { time_zone, .. } = &mut self.timing {
            *time_zone = zone.into();
        }
        self
    }

    /// Set the catch-up policy.
    #[must_use]
    pub fn catch_up(mut self, policy: CatchUp) -> Self {
        self.catch_up = policy;
        self
    }

    /// Set the overlap policy.
    #[must_use]
    pub fn overlap(mut self, policy: Overlap) -> Self {
        self.overlap = policy;
        self
    }

    /// No tick before `at`.
    #[must_use]
    pub fn start_at(mut self, at: DateTime<Utc>) -> Self {
        self.start_at = Some(at);
        self
    }

    /// No tick after `at`.
    #[must_use]
    pub fn end_at(mut self, at: DateTime<Utc>) -> Self {
        self.end_at = Some(at);
        self
    }

    /// Declare it paused.
    #[must_use]
    pub fn paused(mut self, paused: bool) -> Self {
        self.paused = paused;
        self
    }

    /// Check it, and compile its timing.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) naming the field: an
    /// empty or over-long id, or one with whitespace; a cron expression that does not parse
    /// or never fires; an unknown time zone; an interval of zero; `end_at` not after
    /// `start_at`; `catch_up.max` of zero; a job the engine would refuse.
    pub fn validate(&self) -> Result<Timetable> {
        check_id(&self.id)?;
        if let (Some(start), Some(end)) = (self.start_at, self.end_at) {
            if end <= start {
                return Err(Error::invalid_input(
                    "schedule.end_at",
                    format!("{end} is not after start_at {start}"),
                ));
            }
        }
        if self.catch_up == (CatchUp::All { max: 0 }) {
            return Err(Error::invalid_input(
                "schedule.catch_up.max",
                "must be at least 1 (use `none` to skip missed ticks)",
            ));
        }
        // The job as the scheduler would submit it, checked by the same rules as any job.
        self.job
            .to_new_job(&self.id, tick_key(&self.id, Utc::now()))
            .validate(&crate::job::Limits::default())
            .map_err(|e| {
                let field = match e.field() {
                    Some("kind") => "schedule.job.kind",
                    Some("queue") => "schedule.job.queue",
                    Some("payload") => "schedule.job.payload",
                    Some("max_attempts") => "schedule.job.max_attempts",
                    Some("tags") => "schedule.job.tags",
                    Some("priority") => "schedule.job.priority",
                    _ => "schedule.job",
                };
                e.about("schedule.job").in_field(field)
            })?;
        Timetable::new(&self.timing)
    }
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid_input("schedule.id", "must not be empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Error::invalid_input(
            "schedule.id",
            format!("is {} bytes; at most {MAX_ID_BYTES}", id.len()),
        ));
    }
    if id
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '@')
    {
        return Err(Error::invalid_input(
            "schedule.id",
            format!("`{id}` holds whitespace, a control character or `@`"),
        ));
    }
    Ok(())
}

/// The idempotency key of a schedule's tick: `<id>@<tick, RFC 3339 to the microsecond>`.
#[must_use]
pub fn tick_key(id: &str, tick: DateTime<Utc>) -> String {
    format!(
        "{id}@{}",
        tick.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

/// One job a schedule submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fire {
    /// The tick it was for (for a trigger, when it was triggered).
    pub tick: DateTime<Utc>,
    /// The job.
    pub job_id: JobId,
    /// Submitted by [`Schedules::trigger`](crate::orchestrator::Schedules::trigger), not by
    /// a tick.
    #[serde(default)]
    pub triggered: bool,
}

/// A schedule as stored: its definition and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The definition.
    pub schedule: Schedule,
    /// Its next tick; `None` once past `end_at`, or while paused.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Bumped by every change (compare-and-set).
    pub version: u64,
    /// When it was first stored.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Ticks it fired.
    pub fired: u64,
    /// Ticks it skipped (overlap, or missed under its catch-up policy).
    pub skipped: u64,
    /// Its latest fires, newest last (at most [`HISTORY`]).
    pub history: Vec<Fire>,
}

impl ScheduleRecord {
    /// Whether it is paused.
    #[must_use]
    pub fn paused(&self) -> bool {
        self.schedule.paused
    }

    /// The job of its latest fire.
    #[must_use]
    pub fn last_job(&self) -> Option<JobId> {
        self.history.last().map(|f| f.job_id)
    }
}

/// The first tick of `schedule` after `after` (within its start and end), or `None`.
pub(crate) fn next_tick(
    schedule: &Schedule,
    timetable: &Timetable,
    anchor: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let after = match schedule.start_at {
        // (the start itself may be a tick)
        Some(start) if start > after => start
            .checked_sub_signed(chrono::Duration::microseconds(1))
            .unwrap_or(start),
        _ => after,
    };
    let next = timetable.next_after(schedule.start_at.unwrap_or(anchor), after)?;
    match schedule.end_at {
        Some(end) if next > end => None,
        _ => Some(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let job = ScheduledJob::new("k");
        let cases = [
            (Schedule::cron("", "* * * * *", job.clone()), "schedule.id"),
            (
                Schedule::cron("a b", "* * * * *", job.clone()),
                "schedule.id",
            ),
            (
                Schedule::cron("a@b", "* * * * *", job.clone()),
                "schedule.id",
            ),
            (
                Schedule::cron("x", "61 * * * *", job.clone()),
                "schedule.cron",
            ),
            (
                Schedule::cron("x", "not cron", job.clone()),
                "schedule.cron",
            ),
            (
                Schedule::cron("x", "0 0 30 2 *", job.clone()),
                "schedule.cron",
            ),
            (
                Schedule::cron("x", "* * * * *", job.clone()).time_zone("Mars/Olympus"),
                "schedule.time_zone",
            ),
            (
                Schedule::interval("x", Duration::ZERO, job.clone()),
                "schedule.interval",
            ),
            (
                Schedule::interval("x", Duration::from_millis(999), job.clone()),
                "schedule.interval",
            ),
            (
                Schedule::interval("x", Duration::from_secs(1), job.clone())
                    .start_at(Utc::now())
                    .end_at(Utc::now() - chrono::Duration::seconds(1)),
                "schedule.end_at",
            ),
            (
                Schedule::interval("x", Duration::from_secs(1), job.clone())
                    .catch_up(CatchUp::All { max: 0 }),
                "schedule.catch_up.max",
            ),
            (
                Schedule::interval("x", Duration::from_secs(1), ScheduledJob::new("")),
                "schedule.job.kind",
            ),
            (
                Schedule::interval("x", Duration::from_secs(1), job.clone().queue("")),
                "schedule.job.queue",
            ),
        ];
        for (schedule, field) in cases {
            let err = schedule.validate().expect_err(field);
            assert_eq!(
                err.field(),
                Some(field),
                "{field}: got `{err}` for {schedule:?}"
            );
        }
        Schedule::cron("ok", "@hourly", job.clone())
            .time_zone("America/New_York")
            .validate()
            .expect("valid");
        Schedule::cron("ok", "*/5 * * * * *", job)
            .validate()
            .expect("six fields");
    }

    #[test]
    fn a_schedule_round_trips_through_json() {
        let s = Schedule::cron("nightly", "0 3 * * *", ScheduledJob::new("report").tag("t"))
            .time_zone("Europe/Paris")
            .catch_up(CatchUp::All { max: 3 })
            .overlap(Overlap::Skip);
        let json = serde_json::to_value(&s).expect("serializes");
        assert_eq!(json["timing"]["cron"]["time_zone"], "Europe/Paris");
        assert_eq!(
            json["catch_up"],
            serde_json::json!({"policy": "all", "max": 3})
        );
        let back: Schedule = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, s);
    }

    #[test]
    fn the_tick_key_is_stable_and_microsecond_exact() {
        let tick = DateTime::parse_from_rfc3339("2026-03-08T07:00:00.000001Z")
            .expect("time")
            .to_utc();
        assert_eq!(tick_key("s", tick), "s@2026-03-08T07:00:00.000001Z");
    }
}
