//! What happened, read back through the public API (`list`, `events`) and the ledger, and
//! the verdict.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use jobforge::state::{JobFilter, Page};
use jobforge::{JobEvent, JobId, JobOrchestrator, JobRecord, JobState};

use crate::jobs::{ChaosPayload, Mode};
use crate::scenarios::Scenario;

/// A history event that says a lease ran out and another claim took the job (or ended it
/// dead, its attempts spent): `lease of <worker> expired during attempt <n>; taken over`.
fn is_takeover(event: &JobEvent) -> bool {
    event
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("expired during attempt") || r.contains("taken over"))
}

/// A queued job due more than a day from now (an absurd delay, clamped): "parked".
const PARKED_AFTER: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The counts of one scenario run, and what broke the rules.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    pub(crate) jobs: usize,
    pub(crate) succeeded: usize,
    pub(crate) dead: usize,
    pub(crate) cancelled: usize,
    /// Missing from the store, or queued at the end (and not parked).
    pub(crate) lost: usize,
    /// Running at the end.
    pub(crate) stuck: usize,
    /// Queued with a due time more than a day away (absurd delays; `bad_handlers` only).
    pub(crate) parked: usize,
    /// Jobs with two terminal events in their history.
    pub(crate) double_finished: usize,
    /// Jobs with two or more ledger rows.
    pub(crate) duplicates: usize,
    /// History events saying a lease ran out.
    pub(crate) takeovers: usize,
    /// Succeeded jobs without a ledger row.
    pub(crate) unrecorded: usize,
    /// Workflow joins (diamond scenarios), and those run twice (a worker killed while it ran
    /// one: its lease ran out and another ran it again).
    pub(crate) joins: usize,
    pub(crate) joins_twice: usize,
    /// Due-to-start lag (clock_skew): p99 and max, in seconds.
    pub(crate) p99_lag: Option<f64>,
    pub(crate) max_lag: Option<f64>,
    /// Rule breaks (empty: the scenario passed).
    pub(crate) failures: Vec<String>,
    /// Extra facts for the report.
    pub(crate) notes: Vec<String>,
}

/// Every record of the scenario's store, a page of 1,000 at a time.
async fn all_records(orch: &dyn JobOrchestrator) -> Result<Vec<JobRecord>, String> {
    let mut out = Vec::new();
    let mut page = Page::first(Page::MAX_LIMIT);
    loop {
        let mut tries = 0;
        let paged = loop {
            match orch.list(&JobFilter::default(), &page).await {
                Ok(p) => break p,
                Err(e) if tries < 10 => {
                    tries += 1;
                    eprintln!("  list failed ({e}); trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(format!("list: {e}")),
            }
        };
        out.extend(paged.items);
        match paged.next {
            Some(next) => page = Page::first(Page::MAX_LIMIT).after(next),
            None => return Ok(out),
        }
    }
}

/// Every history, 32 calls at a time.
async fn all_events(
    orch: &dyn JobOrchestrator,
    ids: Vec<JobId>,
) -> Result<HashMap<JobId, Vec<JobEvent>>, String> {
    let results: Vec<(JobId, Result<Vec<JobEvent>, String>)> =
        futures_util::stream::iter(ids.into_iter().map(|id| async move {
            let mut tries = 0;
            loop {
                match orch.events(id).await {
                    Ok(events) => return (id, Ok(events)),
                    Err(e) if tries < 10 => {
                        tries += 1;
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return (id, Err(format!("events({id}): {e}"))),
                }
            }
        }))
        .buffer_unordered(32)
        .collect()
        .await;
    let mut out = HashMap::with_capacity(results.len());
    for (id, events) in results {
        out.insert(id, events?);
    }
    Ok(out)
}

fn p99(mut samples: Vec<f64>) -> Option<(f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let idx = ((samples.len() as f64) * 0.99).ceil() as usize;
    let p = samples[idx.saturating_sub(1).min(samples.len() - 1)];
    Some((p, samples[samples.len() - 1]))
}

/// Start lags in seconds: each job's first start after the time it was submitted (as the
/// suite's clock saw the submission land; so the lag is if anything under-counted), and
/// each later start after the retry or hand-back that put it back (the store's clock, plus
/// the 1 ms the retry asked for).
fn start_lags(events: &[JobEvent], submitted: DateTime<Utc>, out: &mut Vec<f64>) {
    let mut due = Some(submitted);
    for e in events {
        match e.to {
            JobState::Running => {
                if let Some(due) = due.take() {
                    let lag = (e.at - due).num_milliseconds().max(0) as f64 / 1000.0;
                    out.push(lag);
                }
            }
            JobState::Queued if e.from == Some(JobState::Running) => {
                due = Some(e.at + chrono::TimeDelta::milliseconds(1));
            }
            _ => {}
        }
    }
}

/// Read everything back and judge. `submitted` has every job the suite made, with the time
/// its chunk landed; `ledger` the ledger rows per job.
pub(crate) async fn verify(
    sc: &Scenario,
    orch: &dyn JobOrchestrator,
    submitted: &[(JobId, DateTime<Utc>)],
    ledger: &HashMap<JobId, u32>,
) -> Result<Tally, String> {
    let records = all_records(orch).await?;
    let by_id: HashMap<JobId, &JobRecord> = records.iter().map(|r| (r.id, r)).collect();
    let submitted_ids: HashSet<JobId> = submitted.iter().map(|(id, _)| *id).collect();
    let present: Vec<JobId> = submitted
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| by_id.contains_key(id))
        .collect();
    let events = all_events(orch, present).await?;
    let now = Utc::now();
    let mut t = Tally {
        jobs: submitted.len(),
        ..Tally::default()
    };
    let strangers = records
        .iter()
        .filter(|r| !submitted_ids.contains(&r.id))
        .count();
    if strangers > 0 {
        t.failures.push(format!(
            "{strangers} jobs in the store that nobody submitted"
        ));
    }
    let mut lags = Vec::new();
    // Per mode: (jobs, how they ended).
    let mut modes: HashMap<Mode, HashMap<&'static str, usize>> = HashMap::new();
    let mut examples: Vec<String> = Vec::new();
    let mut missing = 0;
    let (mut took_over_examples, mut ran_twice_examples) = (0, 0);
    for (id, at) in submitted {
        let Some(record) = by_id.get(id) else {
            missing += 1;
            continue;
        };
        let mode = record
            .payload
            .decode::<ChaosPayload>()
            .map(|p| p.mode)
            .unwrap_or(Mode::Normal);
        let history = events.get(id).map(Vec::as_slice).unwrap_or_default();
        let ending: &'static str = match record.state {
            JobState::Succeeded => {
                t.succeeded += 1;
                if ledger.get(id).copied().unwrap_or(0) == 0 {
                    t.unrecorded += 1;
                }
                "succeeded"
            }
            JobState::Dead => {
                t.dead += 1;
                let timed_out = record
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("timed out"));
                if timed_out { "dead (timeout)" } else { "dead" }
            }
            JobState::Cancelled => {
                t.cancelled += 1;
                if examples.len() < 3 {
                    examples.push(format!(
                        "cancelled {id}: {}",
                        record.last_error.as_deref().unwrap_or("?")
                    ));
                }
                "cancelled"
            }
            JobState::Queued if sc.expect.bad_handlers && record.run_at - now > PARKED_AFTER => {
                t.parked += 1;
                "parked"
            }
            JobState::Queued => {
                t.lost += 1;
                "queued"
            }
            JobState::Running => {
                t.stuck += 1;
                "running"
            }
            // A workflow step still waiting for its dependencies at the end: stranded.
            JobState::Pending => {
                t.lost += 1;
                "pending"
            }
        };
        *modes.entry(mode).or_default().entry(ending).or_default() += 1;
        let terminal = history.iter().filter(|e| e.to.is_terminal()).count();
        if terminal >= 2 {
            t.double_finished += 1;
            if examples.len() < 6 {
                examples.push(format!("finished twice {id}: {:?}", summary(history)));
            }
        }
        let takeovers = history.iter().filter(|e| is_takeover(e)).count();
        if takeovers > 0 && took_over_examples < 2 {
            took_over_examples += 1;
            examples.push(format!("taken over {id}: {:?}", summary(history)));
        }
        t.takeovers += takeovers;
        if sc.expect.max_p99_lag.is_some() {
            start_lags(history, *at, &mut lags);
        }
        if let Some(link) = record.step.as_deref() {
            if link.name == "join" {
                t.joins += 1;
                if ledger.get(id).copied().unwrap_or(0) >= 2 {
                    t.joins_twice += 1;
                }
            }
        }
        if ledger.get(id).copied().unwrap_or(0) >= 2 {
            t.duplicates += 1;
            if ran_twice_examples < 2 {
                ran_twice_examples += 1;
                examples.push(format!("ran twice {id}: {:?}", summary(history)));
            }
        }
    }
    if t.joins > 0 {
        t.notes.push(format!(
            "{} workflow joins, each run after all its dependencies succeeded; {} run twice (their worker killed while running them)",
            t.joins, t.joins_twice
        ));
    }
    t.lost += missing;
    if missing > 0 {
        t.notes
            .push(format!("{missing} jobs missing from the store"));
    }
    if let Some((p, max)) = p99(lags) {
        t.p99_lag = Some(p);
        t.max_lag = Some(max);
    }
    judge(sc, &mut t, &modes);
    let mut per_mode: Vec<String> = modes
        .iter()
        .map(|(mode, ends)| {
            let mut ends: Vec<String> = ends.iter().map(|(e, n)| format!("{n} {e}")).collect();
            ends.sort();
            format!("{}: {}", mode.name(), ends.join(", "))
        })
        .collect();
    per_mode.sort();
    if modes.len() > 1 || t.failures.iter().any(|f| f.contains("mode")) {
        t.notes.push(per_mode.join("; "));
    }
    t.notes.extend(examples);
    Ok(t)
}

/// The rules every scenario keeps, and each scenario's own.
fn judge(sc: &Scenario, t: &mut Tally, modes: &HashMap<Mode, HashMap<&'static str, usize>>) {
    let count = |mode: Mode, ending: &str| {
        modes
            .get(&mode)
            .and_then(|e| e.get(ending))
            .copied()
            .unwrap_or(0)
    };
    let total = |mode: Mode| modes.get(&mode).map_or(0, |e| e.values().sum::<usize>());
    let f = &mut t.failures;
    if t.lost > 0 {
        f.push(format!(
            "{} jobs lost (queued or missing at the end)",
            t.lost
        ));
    }
    if t.stuck > 0 {
        f.push(format!("{} jobs stuck running", t.stuck));
    }
    if t.cancelled > 0 {
        f.push(format!(
            "{} jobs cancelled though nobody asked",
            t.cancelled
        ));
    }
    if t.double_finished > 0 {
        f.push(format!(
            "{} jobs with two terminal transitions",
            t.double_finished
        ));
    }
    if t.unrecorded > 0 {
        f.push(format!(
            "{} succeeded jobs never wrote their ledger row",
            t.unrecorded
        ));
    }
    if t.duplicates > 0 && !sc.expect.duplicates_allowed {
        f.push(format!("{} jobs ran twice (ledger)", t.duplicates));
    }
    if t.takeovers > 0 && sc.expect.no_takeovers {
        f.push(format!("{} leases ran out (takeovers)", t.takeovers));
    }
    // Jobs that should succeed must; only bad handlers may die, and absurd ones park.
    let unsucceeded: usize = Mode::ALL
        .into_iter()
        .filter(|m| m.should_succeed())
        .map(|m| total(m) - count(m, "succeeded"))
        .sum();
    if unsucceeded > 0 {
        f.push(format!(
            "{unsucceeded} normal/fail_once/long jobs did not succeed"
        ));
    }
    if t.parked > 0 && !sc.expect.bad_handlers {
        f.push(format!("{} jobs parked", t.parked));
    }
    if sc.expect.bad_handlers {
        let hang = total(Mode::Hang);
        let hang_ok = count(Mode::Hang, "dead (timeout)");
        if hang_ok < hang {
            f.push(format!(
                "{} of {hang} hanging jobs did not end dead by timeout",
                hang - hang_ok
            ));
        }
        let absurd = total(Mode::Absurd);
        let absurd_ok = count(Mode::Absurd, "dead")
            + count(Mode::Absurd, "dead (timeout)")
            + count(Mode::Absurd, "parked");
        if absurd_ok < absurd {
            f.push(format!(
                "{} of {absurd} absurd-delay jobs neither dead nor parked",
                absurd - absurd_ok
            ));
        }
    }
    if let (Some(limit), Some(p99)) = (sc.expect.max_p99_lag, t.p99_lag) {
        if p99 > limit.as_secs_f64() {
            f.push(format!(
                "p99 start lag {p99:.1} s is over {} s",
                limit.as_secs()
            ));
        }
    }
}

/// A history in short: `queued->running(w0g1) running->succeeded ...`.
fn summary(events: &[JobEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{}->{} a{} {} {}",
                e.from.map_or("-".to_owned(), |s| s.to_string()),
                e.to,
                e.attempt,
                e.worker.as_ref().map_or("", |w| w.as_str()),
                e.reason.as_deref().unwrap_or("")
            )
        })
        .collect()
}
