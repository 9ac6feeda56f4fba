//! Firing due schedules: which ticks to submit ([`plan`]), and the loop every worker pool
//! runs ([`scheduler_loop`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{
    Advance, CatchUp, Fire, Overlap, ScheduleRecord, ScheduleStore, Timetable, next_tick, tick_key,
};
use crate::orchestrator::{JobOrchestrator, Orchestrator};
use crate::{Error, Result};

/// How a worker pool fires schedules ([`WorkerConfig::schedules`](crate::WorkerConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// How often the pool looks for due schedules (default 500 ms): a tick fires at most
    /// this late, when the pool is not busy firing others.
    pub poll: Duration,
    /// How late a tick may fire and still count as on time (default 2 s); an older one was
    /// missed, and the schedule's [`CatchUp`] policy decides.
    pub grace: Duration,
    /// Most schedules fired per look (default 256).
    pub batch: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            grace: Duration::from_secs(2),
            batch: 256,
        }
    }
}

impl SchedulerConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.poll.is_zero() {
            return Err(Error::invalid_input(
                "schedules.poll",
                "must be more than zero",
            ));
        }
        if self.batch == 0 {
            return Err(Error::invalid_input(
                "schedules.batch",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Most due ticks of one schedule looked at in one step; past it, the older ones are
/// counted as missed without being listed (a schedule every second, down for a day).
const MAX_TICKS: usize = 100_000;

/// What one step does with a due schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirePlan {
    /// The ticks to submit, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// Due ticks not submitted: missed, under the schedule's catch-up policy.
    pub skipped: u64,
    /// The schedule's next tick after this step (`None`: past its end).
    pub next_run_at: Option<DateTime<Utc>>,
}

/// The ticks of `record` due at `now` and which of them to submit: the ones on time
/// (at most `grace` late) always; of the missed ones, none, the latest, or the latest `max`,
/// by the schedule's [`CatchUp`].
#[must_use]
pub fn plan(
    record: &ScheduleRecord,
    timetable: &Timetable,
    now: DateTime<Utc>,
    grace: Duration,
) -> FirePlan {
    let schedule = &record.schedule;
    let anchor = record.created_at;
    let Some(first) = record.next_run_at else {
        return FirePlan {
            fire: Vec::new(),
            skipped: 0,
            next_run_at: None,
        };
    };
    let on_time_from = chrono::Duration::from_std(grace)
        .ok()
        .and_then(|g| now.checked_sub_signed(g))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let keep_missed = match schedule.catch_up {
        CatchUp::None => 0,
        CatchUp::Latest => 1,
        CatchUp::All { max } => usize::try_from(max).unwrap_or(usize::MAX),
    };
    let mut missed: VecDeque<DateTime<Utc>> = VecDeque::new();
    let mut missed_count: u64 = 0;
    let mut on_time = Vec::new();
    let mut tick = Some(first);
    let mut looked = 0;
    while let Some(t) = tick {
        if t > now || schedule.end_at.is_some_and(|end| t > end) {
            break;
        }
        looked += 1;
        if looked == MAX_TICKS {
            // A long outage: the missed ticks not yet looked at are counted as one, none of
            // them fires, and the look goes on from the on-time ones.
            missed_count = missed_count.saturating_add(1);
            missed.clear();
            tick = next_tick(
                schedule,
                timetable,
                anchor,
                on_time_from
                    .checked_sub_signed(chrono::Duration::microseconds(1))
                    .unwrap_or(on_time_from),
            );
            continue;
        }
        if t >= on_time_from {
            on_time.push(t);
        } else {
            missed_count = missed_count.saturating_add(1);
            if keep_missed > 0 {
                if missed.len() == keep_missed {
                    missed.pop_front();
                }
                missed.push_back(t);
            }
        }
        tick = next_tick(schedule, timetable, anchor, t);
    }
    let kept = u64::try_from(missed.len()).unwrap_or(u64::MAX);
    let mut fire: Vec<DateTime<Utc>> = missed.into_iter().collect();
    fire.extend(on_time);
    FirePlan {
        fire,
        skipped: missed_count.saturating_sub(kept),
        next_run_at: next_tick(schedule, timetable, anchor, now),
    }
}

/// What a process's schedulers did since it started: every worker pool's scheduler and
/// every [`Schedules::fire_due`](crate::orchestrator::Schedules::fire_due) of one
/// orchestrator (and its clones) add to the same counts. Read them with
/// [`Schedules::counts`](crate::orchestrator::Schedules::counts); the HTTP API's `/metrics`
/// shows them as `jobforge_schedule_*_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct SchedulerCounts {
    /// Due schedules found (one per schedule per look that found it due).
    pub due: u64,
    /// Ticks fired: jobs submitted for a tick, and the schedule advanced past it.
    pub fired: u64,
    /// Of the ticks fired, those fired late under the catch-up policy (more than the grace
    /// late: every process was down, or busy).
    pub caught_up: u64,
    /// Ticks skipped because the schedule's previous job was unfinished ([`Overlap::Skip`]).
    pub skipped_overlap: u64,
    /// Ticks skipped because they were missed and the catch-up policy drops them.
    pub skipped_missed: u64,
    /// Due schedules another process advanced first (its fire stands; this one's submit was
    /// the same idempotent job).
    pub raced: u64,
}

/// The counts behind [`SchedulerCounts`], shared by an orchestrator's clones.
#[derive(Debug, Default)]
pub(crate) struct SchedulerMetrics {
    due: AtomicU64,
    fired: AtomicU64,
    caught_up: AtomicU64,
    skipped_overlap: AtomicU64,
    skipped_missed: AtomicU64,
    raced: AtomicU64,
}

impl SchedulerMetrics {
    fn add(&self, report: &FireReport) {
        let r = &report.counts;
        self.due.fetch_add(r.due, Ordering::Relaxed);
        self.fired.fetch_add(r.fired, Ordering::Relaxed);
        self.caught_up.fetch_add(r.caught_up, Ordering::Relaxed);
        self.skipped_overlap
            .fetch_add(r.skipped_overlap, Ordering::Relaxed);
        self.skipped_missed
            .fetch_add(r.skipped_missed, Ordering::Relaxed);
        self.raced.fetch_add(r.raced, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SchedulerCounts {
        SchedulerCounts {
            due: self.due.load(Ordering::Relaxed),
            fired: self.fired.load(Ordering::Relaxed),
            caught_up: self.caught_up.load(Ordering::Relaxed),
            skipped_overlap: self.skipped_overlap.load(Ordering::Relaxed),
            skipped_missed: self.skipped_missed.load(Ordering::Relaxed),
            raced: self.raced.load(Ordering::Relaxed),
        }
    }
}

/// What one look for due schedules did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FireReport {
    pub(crate) counts: SchedulerCounts,
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Fire what is due at `now`: for each due schedule, submit its ticks' jobs under their
/// idempotency keys, then advance it with a compare-and-set.
pub(crate) async fn fire_due(
    orchestrator: &Orchestrator,
    store: &dyn ScheduleStore,
    config: &SchedulerConfig,
    now: DateTime<Utc>,
) -> Result<FireReport> {
    let report = fire_due_once(orchestrator, store, config, now).await?;
    orchestrator.engine().scheduler.add(&report);
    Ok(report)
}

async fn fire_due_once(
    orchestrator: &Orchestrator,
    store: &dyn ScheduleStore,
    config: &SchedulerConfig,
    now: DateTime<Utc>,
) -> Result<FireReport> {
    let mut report = FireReport::default();
    let due = store.due(now, config.batch).await?;
    report.counts.due = count(due.len());
    let on_time_from = chrono::Duration::from_std(config.grace)
        .ok()
        .and_then(|g| now.checked_sub_signed(g))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    // What each due schedule fires; then every job in one submit, and every advance in one
    // call.
    // (record, its plan, of the plan's skipped ticks those skipped by overlap)
    let mut plans: Vec<(&ScheduleRecord, FirePlan, u64)> = Vec::with_capacity(due.len());
    for record in &due {
        let id = &record.schedule.id;
        // (validated when stored: compiled only, not searched for a first tick again)
        let timetable = match Timetable::compile(&record.schedule.timing) {
            Ok(t) => t,
            Err(err) => {
                // Stored before a change of rules (a time zone gone from the database):
                // stopped, and said why, rather than looked at on every poll.
                tracing::error!(schedule = %id, error = %err, "schedule no longer valid; it stops until upserted again");
                plans.push((
                    record,
                    FirePlan {
                        fire: Vec::new(),
                        skipped: 0,
                        next_run_at: None,
                    },
                    0,
                ));
                continue;
            }
        };
        let mut plan = plan(record, &timetable, now, config.grace);
        let mut overlapped = 0;
        if record.schedule.overlap == Overlap::Skip && plan.fire.len() > 1 {
            // Never two at once: of the ticks due together, the latest fires.
            let extra = plan.fire.len() - 1;
            plan.fire.drain(..extra);
            overlapped = count(extra);
        }
        if record.schedule.overlap == Overlap::Skip && !plan.fire.is_empty() {
            if let Some(last) = record.last_job() {
                let unfinished = orchestrator
                    .get(last)
                    .await?
                    .is_some_and(|job| !job.state.is_terminal());
                if unfinished {
                    tracing::debug!(schedule = %id, job = %last, "tick skipped: the previous job is unfinished");
                    overlapped = overlapped.saturating_add(count(plan.fire.len()));
                    plan.fire.clear();
                }
            }
        }
        plan.skipped = plan.skipped.saturating_add(overlapped);
        plans.push((record, plan, overlapped));
    }
    let jobs = plans
        .iter()
        .flat_map(|(record, plan, _)| {
            let id = &record.schedule.id;
            plan.fire
                .iter()
                .map(move |tick| record.schedule.job.to_new_job(id, tick_key(id, *tick)))
        })
        .collect();
    let submitted = match orchestrator.submit_batch(jobs).await {
        Ok(s) => s,
        Err(err) => {
            // Left due: the next look submits again, under the same keys.
            tracing::warn!(error = %err, "could not submit the due schedules' jobs; they stay due");
            return Ok(report);
        }
    };
    let mut submitted = submitted.into_iter();
    let advances: Vec<Advance<'_>> = plans
        .iter()
        .map(|(record, plan, _)| Advance {
            record,
            next_run_at: plan.next_run_at,
            fires: plan
                .fire
                .iter()
                .zip(submitted.by_ref())
                .map(|(tick, s)| Fire {
                    tick: *tick,
                    job_id: s.id,
                    triggered: false,
                })
                .collect(),
            skipped: plan.skipped,
        })
        .collect();
    let advanced = store.advance_many(&advances, now).await?;
    let c = &mut report.counts;
    for ((item, won), (_, _, overlapped)) in advances.iter().zip(advanced).zip(&plans) {
        let id = &item.record.schedule.id;
        if !won {
            c.raced = c.raced.saturating_add(1);
            continue;
        }
        for fire in &item.fires {
            tracing::info!(schedule = %id, tick = %fire.tick, job = %fire.job_id, "schedule fired");
        }
        if item.skipped > 0 {
            tracing::info!(schedule = %id, skipped = item.skipped, "schedule skipped ticks");
        }
        c.fired = c.fired.saturating_add(count(item.fires.len()));
        c.caught_up = c.caught_up.saturating_add(count(
            item.fires.iter().filter(|f| f.tick < on_time_from).count(),
        ));
        c.skipped_overlap = c.skipped_overlap.saturating_add(*overlapped);
        c.skipped_missed = c
            .skipped_missed
            .saturating_add(item.skipped.saturating_sub(*overlapped));
    }
    Ok(report)
}

/// Fire due schedules every `config.poll` until `stop` fires.
pub(crate) async fn scheduler_loop(
    orchestrator: Orchestrator,
    store: Arc<dyn ScheduleStore>,
    config: SchedulerConfig,
    stop: CancellationToken,
) {
    loop {
        if let Err(err) = fire_due(&orchestrator, store.as_ref(), &config, Utc::now()).await {
            tracing::warn!(error = %err, "firing schedules failed; trying again at the next poll");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(config.poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Schedule, ScheduledJob, Timing};
    use super::*;

    fn record(catch_up: CatchUp, next: &str) -> (ScheduleRecord, Timetable) {
        let schedule = Schedule::interval("s", Duration::from_secs(1), ScheduledJob::new("k"))
            .catch_up(catch_up);
        let timetable = Timetable::new(&schedule.timing).expect("valid");
        let at = |s: &str| DateTime::parse_from_rfc3339(s).expect("time").to_utc();
        (
            ScheduleRecord {
                schedule,
                next_run_at: Some(at(next)),
                version: 1,
                created_at: at("2026-01-01T00:00:00Z"),
                updated_at: at("2026-01-01T00:00:00Z"),
                fired: 0,
                skipped: 0,
                history: Vec::new(),
            },
            timetable,
        )
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").to_utc()
    }

    #[test]
    fn on_time_ticks_fire_and_missed_ones_follow_the_policy() {
        let now = at("2026-01-01T00:00:10.500Z");
        let grace = Duration::from_secs(2);
        // Ticks due: 1 s .. 10 s; on time (within 2 s): 9 s and 10 s; missed: 1 s .. 8 s.
        let (r, t) = record(CatchUp::None, "2026-01-01T00:00:01Z");
        let p = plan(&r, &t, now, grace);
        assert_eq!(
            p.fire,
            [at("2026-01-01T00:00:09Z"), at("2026-01-01T00:00:10Z")]
        );
        assert_eq!(p.skipped, 8);
        assert_eq!(p.next_run_at, Some(at("2026-01-01T00:00:11Z")));

        let (r, t) = record(CatchUp::Latest, "2026-01-01T00:00:01Z");
        let p = plan(&r, &t, now, grace);
        assert_eq!(
            p.fire,
            [
                at("2026-01-01T00:00:08Z"),
                at("2026-01-01T00:00:09Z"),
                at("2026-01-01T00:00:10Z")
            ]
        );
        assert_eq!(p.skipped, 7);

        let (r, t) = record(CatchUp::All { max: 3 }, "2026-01-01T00:00:01Z");
        let p = plan(&r, &t, now, grace);
        assert_eq!(p.fire.len(), 5);
        assert_eq!(p.fire[0], at("2026-01-01T00:00:06Z"));
        assert_eq!(p.skipped, 5);

        let (r, t) = record(CatchUp::All { max: 100 }, "2026-01-01T00:00:01Z");
        let p = plan(&r, &t, now, grace);
        assert_eq!(p.fire.len(), 10);
        assert_eq!(p.skipped, 0);
    }

    #[test]
    fn a_tick_not_yet_due_fires_nothing_and_the_end_stops_it() {
        let (r, t) = record(CatchUp::None, "2026-01-01T00:00:05Z");
        let p = plan(&r, &t, at("2026-01-01T00:00:04Z"), Duration::from_secs(2));
        assert!(p.fire.is_empty());
        assert_eq!(p.next_run_at, Some(at("2026-01-01T00:00:05Z")));

        let (mut r, t) = record(CatchUp::None, "2026-01-01T00:00:05Z");
        r.schedule.end_at = Some(at("2026-01-01T00:00:05.500Z"));
        let p = plan(&r, &t, at("2026-01-01T00:00:06Z"), Duration::from_secs(2));
        assert_eq!(p.fire, [at("2026-01-01T00:00:05Z")]);
        assert_eq!(p.next_run_at, None, "past its end: no next tick");
    }

    #[test]
    fn a_long_outage_is_bounded() {
        let (r, t) = record(CatchUp::Latest, "2026-01-01T00:00:01Z");
        let p = plan(&r, &t, at("2026-01-03T00:00:00Z"), Duration::from_secs(2));
        assert_eq!(
            p.fire.len(),
            3,
            "the three on time; past the bound no missed tick fires"
        );
        assert!(p.skipped >= MAX_TICKS as u64 - 1, "{}", p.skipped);
        assert_eq!(p.next_run_at, Some(at("2026-01-03T00:00:01Z")));
        assert!(matches!(r.schedule.timing, Timing::Interval { .. }));
    }
}
