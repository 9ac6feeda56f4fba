//! Reflection: statistics over the execution history of one kind, and the recommendation
//! that the adaptive strategy acts on.
//!
//! Everything here is a pure function of the executions given, so every [`Memory`]
//! backend gives the same answers: [`InMemoryMemory`](super::InMemoryMemory) calls
//! [`reflect_on`] directly; a SQL backend computes the counts and percentiles in the
//! database (`percentile_cont`) and hands them to [`recommend`].
//!
//! # The numbers
//!
//! Over the executions given (one kind, already cut to the [`Window`](super::Window)):
//!
//! | number | definition |
//! |---|---|
//! | `count` | executions |
//! | `succeeded`, `retried`, `failed`, `deferred`, `cancelled` | executions by [`OutcomeClass`] |
//! | `success_rate` | `succeeded / (count − deferred − cancelled)`; `None` when that is 0 |
//! | `deferred_rate` | `deferred / count`; `None` when `count` is 0 |
//! | `p50`, `p95`, `p99` | percentiles of `duration` over executions that ran (every outcome but `Deferred`), by linear interpolation exactly as SQL's `percentile_cont`: on the ascending durations `d[0..n]`, position `x = p·(n−1)`, value `d[⌊x⌋] + (x − ⌊x⌋)·(d[⌈x⌉] − d[⌊x⌋])`, computed on nanoseconds and rounded to the nearest nanosecond; `None` with no such executions |
//! | `retry_rescue_rate` | among jobs (by `job_id`) that failed at least once — an execution that ended `Retried`, or any execution with `inline_retries > 0` — the fraction that also have a `Succeeded` execution; `None` when no job failed |
//! | `top_errors` | the most frequent `error_class` among failed executions (`Retried` or `Failed`), most frequent first, ties by class name, at most 5. `Deferred` and `Cancelled` executions are left out: their classes (`deferred`, `cancelled`) are not errors and are already counted |
//!
//! # The recommendation
//!
//! See [`recommend`] for the rules; the constants below are its thresholds.
//!
//! [`Memory`]: super::Memory

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use super::types::{
    ErrorClassCount, ExecutionRecord, OutcomeClass, Recommendation, Reflection, StrategyChoice,
};
use crate::job::JobId;

/// Below this many executions that ran to an end (`count − deferred − cancelled`), a
/// recommendation is not [`confident`](Recommendation::confident).
pub const MIN_SAMPLE: u64 = 20;

/// The recommended timeout is `p99` times this.
pub const TIMEOUT_TAIL_FACTOR: f64 = 1.5;

/// The recommended timeout is never shorter than this: a deadline under a second buys
/// little and risks killing healthy runs on a briefly stalled machine.
pub const TIMEOUT_FLOOR: Duration = Duration::from_secs(1);

/// The recommended timeout is never longer than this (a sanity bound).
pub const TIMEOUT_CEILING: Duration = Duration::from_secs(24 * 60 * 60);

/// The tail is long when `p99 ≥ LONG_TAIL_RATIO × p50`.
pub const LONG_TAIL_RATIO: f64 = 3.0;

/// Hedging needs at least this success rate: in a kind that fails more often than it
/// succeeds, a slow call is likelier a failure than a straggler, and a hedge doubles failing
/// work. (Above it, what hedges cost is bounded where they run, by a hedge budget.)
pub const HEDGE_MIN_SUCCESS_RATE: f64 = 0.5;

/// In-process retries need at least this retry rescue rate.
pub const INLINE_MIN_RESCUE_RATE: f64 = 0.5;

/// In-process retries need at least this share of failed executions to have been
/// transient: `retried / (retried + failed)`. With no failed executions at all (the inline
/// retries absorbed them) the condition holds.
pub const INLINE_MIN_TRANSIENT_SHARE: f64 = 0.5;

/// In-process retries recommended with [`StrategyChoice::InlineRetry`].
pub const INLINE_RETRIES: u32 = 2;

/// In-process retries recommended while no job of the kind has failed with a retryable
/// error: free while nothing fails, and when failures begin, the first ones are retried at
/// once (not after the queue's backoff) and their executions show at once whether a retry
/// rescues them.
pub const INLINE_PROBE_RETRIES: u32 = 1;

/// `max_attempts` when the history says nothing about retries (too few executions, or no
/// job ever failed with a retryable error).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// `max_attempts` by retry rescue rate: the first row whose bound the rate is under wins;
/// a rate at or above every bound gets [`MAX_ATTEMPTS_WHEN_RESCUED`].
pub const MAX_ATTEMPTS_LADDER: [(f64, u32); 3] = [(0.1, 1), (0.3, 2), (0.6, 3)];

/// `max_attempts` when retries rescue at least 60% of the jobs that failed.
pub const MAX_ATTEMPTS_WHEN_RESCUED: u32 = 5;

/// Jobs that must have failed with an error class, none of them rescued by a retry, before
/// the recommendation lists the class in
/// [`Recommendation::no_retry_classes`](crate::memory::Recommendation::no_retry_classes).
pub const NO_RETRY_MIN_JOBS: u64 = 5;

/// Latency percentiles of a set of executions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    /// Median.
    pub p50: Option<Duration>,
    /// 90th percentile.
    pub p90: Option<Duration>,
    /// 95th percentile.
    pub p95: Option<Duration>,
    /// 99th percentile.
    pub p99: Option<Duration>,
}

impl LatencySummary {
    /// The percentiles of `durations` (any order), as [`percentile_cont`] computes them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use jobforge::memory::LatencySummary;
    ///
    /// let ms = |n| Duration::from_millis(n);
    /// let summary = LatencySummary::of([ms(40), ms(10), ms(30), ms(20)]);
    /// assert_eq!(summary.p50, Some(ms(25)));
    /// ```
    #[must_use]
    pub fn of(durations: impl IntoIterator<Item = Duration>) -> Self {
        let mut nanos: Vec<u64> = durations.into_iter().map(duration_nanos).collect();
        nanos.sort_unstable();
        Self::of_sorted_nanos(&nanos)
    }

    fn of_sorted_nanos(sorted: &[u64]) -> Self {
        Self {
            p50: percentile_nanos(sorted, 0.50),
            p90: percentile_nanos(sorted, 0.90),
            p95: percentile_nanos(sorted, 0.95),
            p99: percentile_nanos(sorted, 0.99),
        }
    }

    /// The same numbers as sorting and calling `of_sorted_nanos`, by selection: a few
    /// linear passes instead of a full sort. Reorders `nanos`.
    fn of_unsorted_nanos(nanos: &mut [u64]) -> Self {
        Self {
            p50: select_percentile(nanos, 0.50),
            p90: select_percentile(nanos, 0.90),
            p95: select_percentile(nanos, 0.95),
            p99: select_percentile(nanos, 0.99),
        }
    }
}

/// `percentile_cont` without sorting: select the `⌈x⌉`-th smallest, and read the
/// `⌊x⌋`-th as the largest of the ones before it.
fn select_percentile(nanos: &mut [u64], p: f64) -> Option<Duration> {
    if nanos.is_empty() {
        return None;
    }
    let (lo, hi, frac) = interpolation_points(nanos.len(), p);
    let (below, at_hi, _) = nanos.select_nth_unstable(hi);
    let b = *at_hi;
    let a = if lo == hi {
        b
    } else {
        // lo = hi − 1, and `below` holds exactly the hi smallest values.
        below.iter().copied().max().unwrap_or(b)
    };
    Some(interpolate(a, b, frac))
}

/// The `p` percentile (0.0 to 1.0, clamped) of durations sorted ascending, by linear
/// interpolation exactly as SQL's `percentile_cont`: position `x = p·(n−1)`, value
/// `d[⌊x⌋] + (x − ⌊x⌋)·(d[⌈x⌉] − d[⌊x⌋])`, rounded to the nearest nanosecond. `None` when
/// empty.
///
/// ```
/// use std::time::Duration;
/// use jobforge::memory::percentile_cont;
///
/// let sorted: Vec<Duration> = (1..=10).map(|n| Duration::from_millis(n * 10)).collect();
/// // x = 0.95 × 9 = 8.55: 90 ms + 0.55 × (100 ms − 90 ms)
/// assert_eq!(percentile_cont(&sorted, 0.95), Some(Duration::from_micros(95_500)));
/// ```
#[must_use]
pub fn percentile_cont(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let (lo, hi, frac) = interpolation_points(sorted.len(), p);
    let a = duration_nanos(*sorted.get(lo)?);
    let b = duration_nanos(*sorted.get(hi)?);
    Some(interpolate(a, b, frac))
}

fn percentile_nanos(sorted: &[u64], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let (lo, hi, frac) = interpolation_points(sorted.len(), p);
    Some(interpolate(*sorted.get(lo)?, *sorted.get(hi)?, frac))
}

/// `⌊x⌋`, `⌈x⌉` and `x − ⌊x⌋` for `x = p·(n−1)`, as `percentile_cont` computes them.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn interpolation_points(n: usize, p: f64) -> (usize, usize, f64) {
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
    let x = p * (n.saturating_sub(1)) as f64;
    let lo = x.floor();
    let hi = x.ceil();
    (lo as usize, hi as usize, x - lo)
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub(crate) fn interpolate(a: u64, b: u64, frac: f64) -> Duration {
    // Sorted ascending, so b >= a; interpolating on the difference keeps `a` exact.
    let step = (b.saturating_sub(a) as f64 * frac).round() as u64;
    Duration::from_nanos(a.saturating_add(step))
}

/// `d × factor`, rounded to the nearest nanosecond, saturating.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn scale(d: Duration, factor: f64) -> Duration {
    // Float-to-int casts saturate (and NaN becomes 0): no panic whatever the input.
    Duration::from_nanos((duration_nanos(d) as f64 * factor).round() as u64)
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The facts about one execution that reflection reads; implemented by
/// [`ExecutionRecord`] and by backends' own compact stored forms.
pub(crate) trait RunFacts {
    fn job_id(&self) -> JobId;
    fn outcome(&self) -> OutcomeClass;
    fn duration(&self) -> Duration;
    fn inline_retries(&self) -> u32;
    fn error_class(&self) -> Option<&str>;
}

impl RunFacts for ExecutionRecord {
    fn job_id(&self) -> JobId {
        self.job_id
    }
    fn outcome(&self) -> OutcomeClass {
        self.outcome
    }
    fn duration(&self) -> Duration {
        self.duration
    }
    fn inline_retries(&self) -> u32 {
        self.inline_retries
    }
    fn error_class(&self) -> Option<&str> {
        self.error_class.as_deref()
    }
}

/// Reflect on the executions of `kind`: the numbers defined in the
/// [module docs](self) and the [`recommend`]ation they lead to.
///
/// `runs` are the executions to look at, already cut to the window; the caller selects
/// the kind's executions (`kind` only names the result). Nothing is cloned but durations,
/// from which the percentiles are selected (`select_nth_unstable`, no full sort).
///
/// ```
/// use std::time::Duration;
/// use jobforge::JobId;
/// use jobforge::memory::{reflect_on, ExecutionRecord, OutcomeClass};
///
/// let run = |ms: u64, outcome| ExecutionRecord {
///     job_id: JobId::new(),
///     kind: "email".into(),
///     strategy: "direct".into(),
///     outcome,
///     duration: Duration::from_millis(ms),
///     attempt: 1,
///     inline_retries: 0,
///     error_class: None,
///     at: chrono::Utc::now(),
///     decision: None,
/// };
/// let history = [run(10, OutcomeClass::Succeeded), run(30, OutcomeClass::Failed)];
/// let refs: Vec<&ExecutionRecord> = history.iter().collect();
/// let r = reflect_on("email", &refs);
/// assert_eq!(r.success_rate, Some(0.5));
/// assert_eq!(r.p50, Some(Duration::from_millis(20)));
/// assert!(!r.recommendation.confident); // 2 executions are too few
/// ```
#[must_use]
pub fn reflect_on(kind: &str, runs: &[&ExecutionRecord]) -> Reflection {
    reflect_runs(kind, runs.iter().copied())
}

/// [`reflect_on`] over any iterator of run facts (walked twice at most).
pub(crate) fn reflect_runs<'a, R, I>(kind: &str, runs: I) -> Reflection
where
    R: RunFacts + 'a,
    I: Iterator<Item = &'a R> + Clone,
{
    let (mut count, mut succeeded, mut retried, mut failed, mut deferred, mut cancelled) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut durations: Vec<u64> = Vec::with_capacity(runs.size_hint().0);
    // Jobs that failed at least once, and whether they also succeeded.
    let mut failed_jobs: HashMap<JobId, bool, foldhash::fast::RandomState> = HashMap::default();
    // Per error class: executions that failed with it, of those the ones that failed for
    // good, and the jobs they were of.
    let mut errors: HashMap<&'a str, (u64, u64, HashSet<JobId>)> = HashMap::new();
    let mut succeeded_jobs: HashSet<JobId> = HashSet::new();

    for run in runs.clone() {
        count += 1;
        let outcome = run.outcome();
        match outcome {
            OutcomeClass::Succeeded => succeeded += 1,
            OutcomeClass::Retried => retried += 1,
            OutcomeClass::Failed => failed += 1,
            OutcomeClass::Deferred => deferred += 1,
            OutcomeClass::Cancelled => cancelled += 1,
        }
        if outcome != OutcomeClass::Deferred {
            durations.push(duration_nanos(run.duration()));
        }
        if outcome == OutcomeClass::Retried || run.inline_retries() > 0 {
            failed_jobs.entry(run.job_id()).or_insert(false);
        }
        if matches!(outcome, OutcomeClass::Retried | OutcomeClass::Failed) {
            if let Some(class) = run.error_class() {
                let (n, failed, jobs) = errors.entry(class).or_default();
                *n += 1;
                if outcome == OutcomeClass::Failed {
                    *failed += 1;
                }
                jobs.insert(run.job_id());
            }
        }
        if outcome == OutcomeClass::Succeeded {
            succeeded_jobs.insert(run.job_id());
        }
    }

    let mut rescued = 0usize;
    if !failed_jobs.is_empty() {
        // Second pass, only when some job failed: which of those jobs also succeeded.
        for run in runs {
            if run.outcome() == OutcomeClass::Succeeded {
                if let Some(seen) = failed_jobs.get_mut(&run.job_id()) {
                    if !*seen {
                        *seen = true;
                        rescued += 1;
                    }
                }
            }
        }
    }
    let retry_rescue_rate = ratio(rescued as u64, failed_jobs.len() as u64);

    let latency = LatencySummary::of_unsorted_nanos(&mut durations);

    let mut top_errors: Vec<(ErrorClassCount, HashSet<JobId>)> = errors
        .into_iter()
        .map(|(class, (count, failed, jobs))| {
            (
                ErrorClassCount {
                    class: class.to_owned(),
                    count,
                    jobs: u64::try_from(jobs.len()).unwrap_or(u64::MAX),
                    rescued: u64::try_from(
                        jobs.iter().filter(|j| succeeded_jobs.contains(j)).count(),
                    )
                    .unwrap_or(u64::MAX),
                    failed,
                },
                jobs,
            )
        })
        .collect();
    top_errors.sort_by(|(a, _), (b, _)| b.count.cmp(&a.count).then_with(|| a.class.cmp(&b.class)));
    top_errors.truncate(5);
    // The rescue rate without the jobs of hopeless classes (never rescued, by definition,
    // so only the denominator shrinks).
    let hopeless_failed_jobs = top_errors
        .iter()
        .filter(|(class, _)| hopeless(class))
        .flat_map(|(_, jobs)| jobs.iter())
        .filter(|job| failed_jobs.contains_key(*job))
        .collect::<HashSet<_>>()
        .len();
    let transient_rescue_rate = ratio(
        rescued as u64,
        failed_jobs.len().saturating_sub(hopeless_failed_jobs) as u64,
    );
    let top_errors: Vec<ErrorClassCount> = top_errors.into_iter().map(|(c, _)| c).collect();

    let ended = count.saturating_sub(deferred + cancelled);
    let mut reflection = Reflection {
        kind: kind.to_owned(),
        count,
        succeeded,
        retried,
        failed,
        deferred,
        cancelled,
        success_rate: ratio(succeeded, ended),
        deferred_rate: ratio(deferred, count),
        p50: latency.p50,
        p90: latency.p90,
        p95: latency.p95,
        p99: latency.p99,
        retry_rescue_rate,
        transient_rescue_rate,
        top_errors,
        recommendation: placeholder(),
    };
    reflection.recommendation = recommend(&reflection);
    reflection
}

#[allow(clippy::cast_precision_loss)]
fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn placeholder() -> Recommendation {
    Recommendation {
        strategy: StrategyChoice::Direct,
        timeout: None,
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        inline_retries: 0,
        hedge_delay: None,
        confident: false,
        rationale: String::new(),
        no_retry_classes: Vec::new(),
    }
}

/// Whether retries have never rescued an error class, often enough to stop trying: at
/// least [`NO_RETRY_MIN_JOBS`] jobs failed with it and none of them succeeded later.
fn hopeless(class: &ErrorClassCount) -> bool {
    class.jobs >= NO_RETRY_MIN_JOBS && class.rescued == 0
}

/// What to do about a kind, from the numbers of a [`Reflection`] (its `recommendation`
/// field is ignored). [`reflect_on`] calls this; a backend that computes the numbers itself
/// calls it too, so every backend recommends alike.
///
/// Let `ended = count − deferred − cancelled` and `sr` the success rate. First the
/// **hopeless classes**: error classes among `top_errors` with at least
/// [`NO_RETRY_MIN_JOBS`] jobs, none rescued. They go to `no_retry_classes` (failed at
/// once), and the rules below judge retries on the *other* failures: `rescue` is the
/// [`transient_rescue_rate`](Reflection::transient_rescue_rate) and the retried and failed
/// counts leave out the hopeless classes' executions (unless every failed job was of a
/// hopeless class: then there is nothing else to judge, and the kind's own numbers are
/// read). Then, in order:
///
/// 1. **Too few to judge.** With `ended <` [`MIN_SAMPLE`] (or no latency): not confident;
///    [`Direct`](StrategyChoice::Direct), no timeout, no hedge, no inline retries,
///    `max_attempts` [`DEFAULT_MAX_ATTEMPTS`].
/// 2. **Timeout** from the tail: `p99 ×` [`TIMEOUT_TAIL_FACTOR`], clamped to
///    [`TIMEOUT_FLOOR`]..=[`TIMEOUT_CEILING`].
/// 3. **Attempts** from `rescue`: no job failed with a retryable error (`None`) →
///    [`DEFAULT_MAX_ATTEMPTS`]; under 0.1 → 1; under 0.3 → 2; under 0.6 → 3; otherwise
///    [`MAX_ATTEMPTS_WHEN_RESCUED`] (see [`MAX_ATTEMPTS_LADDER`]). Retries are spent only
///    where they have worked.
/// 4. **In-process retries**: [`INLINE_PROBE_RETRIES`] while no job has failed at all
///    (`rescue` is `None` and no execution failed); [`INLINE_RETRIES`] when failures are
///    mostly transient (`retried / (retried + failed) ≥` [`INLINE_MIN_TRANSIENT_SHARE`], or
///    no failed executions at all) and retries rescue them (`rescue ≥`
///    [`INLINE_MIN_RESCUE_RATE`]).
/// 5. **A hedge** with `hedge_delay = min(p95, 3 × p50)` when the tail is long (a call three
///    times slower than the median is already in the tail), `p99 ≥` [`LONG_TAIL_RATIO`]` ×
///    p50`, and `sr ≥` [`HEDGE_MIN_SUCCESS_RATE`]. The extra calls a hedge costs are bounded
///    where it runs, by [`Adaptive`](crate::strategy::Adaptive)'s hedge budget.
///
/// The strategy is [`Hedged`](StrategyChoice::Hedged) with a hedge (and `inline_retries`
/// as rule 4 says: each attempt hedged, failures retried in process),
/// [`InlineRetry`](StrategyChoice::InlineRetry) with rescued in-process retries alone, and
/// [`Direct`](StrategyChoice::Direct) otherwise (the probe retry leaves it `Direct`: a
/// precaution, not what the history calls for).
///
/// The rationale leads with the strategy and why, then the sample, the timeout and the
/// attempts, citing the numbers: for example "Hedged: p99 1.2 s is 8.0× p50 150 ms: tail is
/// long, hedge after p95 400 ms; 100 executions ran, success rate 100%; timeout 1.8 s =
/// 1.5× p99 1.2 s; no job failed with a retryable error: keep 3 attempts".
#[must_use]
pub fn recommend(r: &Reflection) -> Recommendation {
    let ended = r.count.saturating_sub(r.deferred + r.cancelled);
    let (Some(p50), Some(p95), Some(p99), Some(sr)) = (r.p50, r.p95, r.p99, r.success_rate) else {
        return not_confident(r, ended);
    };
    if ended < MIN_SAMPLE {
        return not_confident(r, ended);
    }
    let sample = format!("{ended} executions ran, success rate {}", percent(sr));

    // Error classes retries have never rescued: failed at once, per class; the other rules
    // judge retries on the remaining failures.
    let hopeless: Vec<&ErrorClassCount> = r.top_errors.iter().filter(|e| hopeless(e)).collect();
    // (When every failed job was of a hopeless class, there is nothing else to judge: the
    // rules read the kind's own numbers, so attempts still fall as rescues do.)
    let per_class = !hopeless.is_empty() && r.transient_rescue_rate.is_some();
    let (mut retried, mut failed, mut rescue_rate) = (r.retried, r.failed, r.retry_rescue_rate);
    if per_class {
        for class in &hopeless {
            failed = failed.saturating_sub(class.failed);
            retried = retried.saturating_sub(class.count.saturating_sub(class.failed));
        }
        rescue_rate = r.transient_rescue_rate;
    }

    // Timeout from the tail.
    let raw = scale(p99, TIMEOUT_TAIL_FACTOR);
    let timeout = raw.clamp(TIMEOUT_FLOOR, TIMEOUT_CEILING);
    let mut timeout_why = format!(
        "timeout {} = {TIMEOUT_TAIL_FACTOR}× p99 {}",
        human(timeout),
        human(p99)
    );
    if raw < TIMEOUT_FLOOR {
        let _ = write!(
            timeout_why,
            " (raised to the {} floor)",
            human(TIMEOUT_FLOOR)
        );
    } else if raw > TIMEOUT_CEILING {
        let _ = write!(
            timeout_why,
            " (cut to the {} ceiling)",
            human(TIMEOUT_CEILING)
        );
    }

    // Attempts from the rescue rate.
    let others = if !per_class {
        ""
    } else {
        " of the other classes"
    };
    let (max_attempts, attempts_why) = match rescue_rate {
        None => (
            DEFAULT_MAX_ATTEMPTS,
            format!(
                "no job failed with a retryable error{others}: keep {DEFAULT_MAX_ATTEMPTS} attempts"
            ),
        ),
        Some(rescue) => {
            let attempts = MAX_ATTEMPTS_LADDER
                .iter()
                .find(|(bound, _)| rescue < *bound)
                .map_or(MAX_ATTEMPTS_WHEN_RESCUED, |(_, attempts)| *attempts);
            let verdict = if attempts <= 2 {
                "retries rarely help"
            } else {
                "retries pay off"
            };
            (
                attempts,
                format!(
                    "retries rescued {} of the jobs that failed{others}: {verdict}, allow \
                     {attempts} attempt{}",
                    percent(rescue),
                    if attempts == 1 { "" } else { "s" }
                ),
            )
        }
    };

    let tail_ratio = tail_ratio(p50, p99);
    let long_tail = tail_ratio >= LONG_TAIL_RATIO;
    let transient_share = ratio(retried, retried + failed);
    let mostly_transient = transient_share.is_none_or(|t| t >= INLINE_MIN_TRANSIENT_SHARE);
    let tail = format!(
        "p99 {} is {}× p50 {}",
        human(p99),
        ratio_text(tail_ratio),
        human(p50)
    );
    let mut rec = Recommendation {
        strategy: StrategyChoice::Direct,
        timeout: Some(timeout),
        max_attempts,
        inline_retries: 0,
        hedge_delay: None,
        confident: true,
        rationale: String::new(),
        no_retry_classes: hopeless.iter().map(|e| e.class.clone()).collect(),
    };
    // In-process retries: none seen failing yet, one probe; else where they rescue.
    let probe = rescue_rate.is_none() && failed == 0;
    let inline_why = if probe {
        rec.inline_retries = INLINE_PROBE_RETRIES;
        Some(
            "no job has failed with a retryable error yet: one in-process retry as a probe, so \
             a first failure is retried at once and shows whether retries rescue"
                .to_owned(),
        )
    } else {
        rescue_rate
            .filter(|rescue| *rescue >= INLINE_MIN_RESCUE_RATE && mostly_transient)
            .map(|rescue| {
                rec.inline_retries = INLINE_RETRIES;
                let transient = transient_share.map_or_else(
                    || "in-process retries absorbed every failure".to_owned(),
                    |t| format!("{} of failed executions{others} were transient", percent(t)),
                );
                format!(
                    "{transient} and retries rescued {} of failed jobs{others}: retry in process \
                 up to {INLINE_RETRIES} times",
                    percent(rescue)
                )
            })
    };
    // A hedge.
    let hedge_why = if !long_tail {
        None
    } else if sr < HEDGE_MIN_SUCCESS_RATE {
        Some(Err(format!(
            "{tail}, but a success rate under {} rules out hedging: slow calls are likelier \
             failures than stragglers",
            percent(HEDGE_MIN_SUCCESS_RATE)
        )))
    } else {
        // Hedge where the slow calls begin: after p95 (at most ~5% extra calls), or sooner,
        // after LONG_TAIL_RATIO × p50, when the tail already starts below p95: a call three
        // times slower than the median is in the tail, and hedging at a p95 that lies inside
        // the tail would start the hedge too late to help.
        let body_edge = scale(p50, LONG_TAIL_RATIO);
        Some(Ok(if body_edge < p95 {
            rec.hedge_delay = Some(body_edge);
            format!(
                "{tail}: tail is long and starts below p95 {}: hedge after {LONG_TAIL_RATIO}× p50 = {}",
                human(p95),
                human(body_edge)
            )
        } else {
            rec.hedge_delay = Some(p95);
            format!("{tail}: tail is long, hedge after p95 {}", human(p95))
        }))
    };
    let strategy_why = match (hedge_why, inline_why) {
        (Some(Ok(hedge)), Some(inline)) => {
            rec.strategy = StrategyChoice::Hedged;
            format!("Hedged: {hedge}; and {inline}")
        }
        (Some(Ok(hedge)), None) => {
            rec.strategy = StrategyChoice::Hedged;
            format!("Hedged: {hedge}")
        }
        // A probe is a precaution, not what the history calls for: the strategy stays.
        (Some(Err(no_hedge)), Some(inline)) if probe => format!("Direct: {no_hedge}; {inline}"),
        (None, Some(inline)) if probe => format!("Direct: {tail}: tail is short; {inline}"),
        (Some(Err(no_hedge)), Some(inline)) => {
            rec.strategy = StrategyChoice::InlineRetry;
            format!("InlineRetry: {inline} ({no_hedge})")
        }
        (None, Some(inline)) => {
            rec.strategy = StrategyChoice::InlineRetry;
            format!("InlineRetry: {inline}")
        }
        (Some(Err(no_hedge)), None) => format!("Direct: {no_hedge}"),
        (None, None) => format!("Direct: {tail}: tail is short"),
    };
    let classes_why = if hopeless.is_empty() {
        String::new()
    } else {
        format!(
            "; retries never rescued {}: fail {} at once",
            hopeless
                .iter()
                .map(|e| format!("`{}` ({} jobs)", e.class, e.jobs))
                .collect::<Vec<_>>()
                .join(", "),
            if hopeless.len() == 1 { "it" } else { "them" }
        )
    };
    rec.rationale = format!("{strategy_why}; {sample}; {timeout_why}; {attempts_why}{classes_why}");
    rec
}

/// The executions the drift check compares with the longer window (see [`drift`]).
pub const DRIFT_WINDOW: usize = 50;

/// Ratio of medians between the recent and the longer window that counts as a change
/// (either way).
pub const DRIFT_LATENCY_RATIO: f64 = 2.0;

/// The smallest difference of success rates between the recent and the longer window that
/// counts as a change (see [`DRIFT_SIGMAS`] for the larger one noisy rates need).
pub const DRIFT_SUCCESS_GAP: f64 = 0.15;

/// A success rate counts as changed only when it moved by this many standard errors of the
/// recent window's rate (binomial, at the longer window's rate), and at least by
/// [`DRIFT_SUCCESS_GAP`]: 50 executions of a kind that succeeds two times in three swing by
/// ±7 points without any change.
pub const DRIFT_SIGMAS: f64 = 3.0;

/// Whether a kind's latest executions (`recent`, the latest [`DRIFT_WINDOW`]) behave unlike
/// its longer history (`long`): a windowed comparison, so a change shows within
/// [`DRIFT_WINDOW`] executions instead of being averaged away by hundreds of older ones.
///
/// `Some` with the reason, citing the numbers, when `recent` is confident on its own and its
/// median moved by [`DRIFT_LATENCY_RATIO`] or more either way, or its success rate moved by
/// more than chance allows (at least [`DRIFT_SUCCESS_GAP`], and [`DRIFT_SIGMAS`] standard
/// errors). Only numbers that 50 executions measure steadily are compared: their p99 is
/// decided by the slowest one or two and swings by more than 2× from window to window on a
/// kind with a steady long tail, and so would a recommendation drawn from it, steering such a
/// kind off its hedge for nothing. A change in the tail alone shows in the longer window.
///
/// ```
/// use std::time::Duration;
/// use jobforge::memory::{ExecutionRecord, OutcomeClass, reflect_on};
/// use jobforge::memory::reflection::drift;
/// use jobforge::JobId;
///
/// let run = |ms: u64| ExecutionRecord {
///     job_id: JobId::new(), kind: "sync".into(), strategy: "direct".into(),
///     outcome: OutcomeClass::Succeeded, duration: Duration::from_millis(ms), attempt: 1,
///     inline_retries: 0, error_class: None, at: chrono::Utc::now(), decision: None,
/// };
/// let before: Vec<ExecutionRecord> = (0..450).map(|_| run(10)).collect();
/// let after: Vec<ExecutionRecord> = (0..50).map(|_| run(40)).collect();
/// let all: Vec<&ExecutionRecord> = before.iter().chain(&after).collect();
/// let recent: Vec<&ExecutionRecord> = after.iter().collect();
/// let why = drift(&reflect_on("sync", &all), &reflect_on("sync", &recent)).unwrap();
/// assert!(why.contains("p50 10 ms → 40 ms"), "{why}");
/// // Before the change, the latest executions were like the rest: no drift.
/// let long: Vec<&ExecutionRecord> = before.iter().collect();
/// let steady: Vec<&ExecutionRecord> = before.iter().skip(400).collect();
/// assert_eq!(drift(&reflect_on("sync", &long), &reflect_on("sync", &steady)), None);
/// ```
#[must_use]
pub fn drift(long: &Reflection, recent: &Reflection) -> Option<String> {
    if !recent.recommendation.confident {
        return None;
    }
    let mut why = Vec::new();
    if let (Some(a), Some(b)) = (long.p50, recent.p50) {
        if !a.is_zero() && !b.is_zero() {
            let r = b.as_secs_f64() / a.as_secs_f64();
            if r >= DRIFT_LATENCY_RATIO || r <= 1.0 / DRIFT_LATENCY_RATIO {
                why.push(format!("p50 {} → {}", human(a), human(b)));
            }
        }
    }
    // Success rates without the classes the longer history already fails at once: the
    // latest executions of a burst are its retries, and a window full of a known hopeless
    // class is no news.
    let known = &long.recommendation.no_retry_classes;
    if let (Some((a, _)), Some((b, n))) =
        (success_without(long, known), success_without(recent, known))
    {
        #[allow(clippy::cast_precision_loss)]
        let noise = DRIFT_SIGMAS * (a * (1.0 - a) / n.max(1) as f64).sqrt();
        if n >= MIN_SAMPLE && (a - b).abs() >= DRIFT_SUCCESS_GAP.max(noise) {
            why.push(format!("success rate {} → {}", percent(a), percent(b)));
        }
    }
    (!why.is_empty()).then(|| {
        format!(
            "the latest {} executions differ from the {} before: {}",
            recent.count,
            long.count,
            why.join(", ")
        )
    })
}

/// What to steer a kind by: `long` (its reflection over the longer window), unless its
/// latest [`DRIFT_WINDOW`] executions (`recent`) drifted from it ([`drift`]). Then `recent`,
/// its rationale saying why (`drift: …`), and keeping the longer history's
/// `no_retry_classes`: 50 executions may hold too few of them to tell again (the exploring
/// jobs keep testing them, and the longer window drops a class once it is rescued).
/// Returns the reflection and, on a drift, the reason. This is what
/// [`Adaptive`](crate::strategy::Adaptive) steers by at each refresh.
#[must_use]
pub fn steer(long: Reflection, mut recent: Reflection) -> (Reflection, Option<String>) {
    let Some(why) = drift(&long, &recent) else {
        return (long, None);
    };
    let mut kept = Vec::new();
    for class in &long.recommendation.no_retry_classes {
        if !recent.recommendation.no_retry_classes.contains(class) {
            recent.recommendation.no_retry_classes.push(class.clone());
            kept.push(format!("`{class}`"));
        }
    }
    let kept = if kept.is_empty() {
        String::new()
    } else {
        format!(
            "; still failing at once, from the longer history: {}",
            kept.join(", ")
        )
    };
    recent.recommendation.rationale = format!(
        "drift: {why}; re-tuned from the latest {} executions: {}{kept}",
        recent.count, recent.recommendation.rationale
    );
    (recent, Some(why))
}

/// The success rate over executions that ran to an end, leaving out failures of `classes`,
/// and how many executions that is; `None` when none are left.
fn success_without(r: &Reflection, classes: &[String]) -> Option<(f64, u64)> {
    let left_out: u64 = r
        .top_errors
        .iter()
        .filter(|e| classes.contains(&e.class))
        .map(|e| e.count)
        .sum();
    let ended = r
        .count
        .saturating_sub(r.deferred + r.cancelled)
        .saturating_sub(left_out);
    ratio(r.succeeded, ended).map(|rate| (rate.min(1.0), ended))
}

fn not_confident(r: &Reflection, ended: u64) -> Recommendation {
    let rationale = if ended < MIN_SAMPLE {
        format!(
            "Direct, not confident: only {ended} executions ran to an end ({} recorded, {} \
             deferred, {} cancelled); at least {MIN_SAMPLE} are needed to judge, so run \
             Direct with the kind's own settings",
            r.count, r.deferred, r.cancelled
        )
    } else {
        // Enough runs but no latency or success rate: the numbers given are inconsistent.
        format!(
            "Direct, not confident: {ended} executions ran but no latency or success rate \
             was given; run Direct with the kind's own settings"
        )
    };
    Recommendation {
        rationale,
        ..placeholder()
    }
}

/// `p99 / p50`, with a zero median read as "no tail" when p99 is zero too.
fn tail_ratio(p50: Duration, p99: Duration) -> f64 {
    match (p50.is_zero(), p99.is_zero()) {
        (_, true) => 1.0,
        (true, false) => f64::INFINITY,
        (false, false) => p99.as_secs_f64() / p50.as_secs_f64(),
    }
}

fn ratio_text(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{ratio:.1}")
    } else {
        "∞".to_owned()
    }
}

fn percent(rate: f64) -> String {
    let pct = rate * 100.0;
    if (pct - pct.round()).abs() < 0.05 {
        format!("{pct:.0}%")
    } else {
        format!("{pct:.1}%")
    }
}

/// A duration for people: `850 µs`, `150 ms`, `1.2 s`, `2.5 min`, `3 h`.
pub(crate) fn human(d: Duration) -> String {
    let secs = d.as_secs_f64();
    let (value, unit) = if secs >= 3600.0 {
        (secs / 3600.0, "h")
    } else if secs >= 60.0 {
        (secs / 60.0, "min")
    } else if secs >= 1.0 {
        (secs, "s")
    } else if secs >= 1e-3 {
        (secs * 1e3, "ms")
    } else {
        (secs * 1e6, "µs")
    };
    let text = if value >= 100.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.1}");
        text.strip_suffix(".0").map_or(text.clone(), str::to_owned)
    };
    format!("{text} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_interpolate_like_percentile_cont() {
        let sorted: Vec<Duration> = (1..=10).map(|n| ms(n * 10)).collect();
        // x = p·(n−1) = p·9
        assert_eq!(percentile_cont(&sorted, 0.50), Some(ms(55))); // 4.5
        assert_eq!(
            percentile_cont(&sorted, 0.95),
            Some(Duration::from_micros(95_500))
        ); // 8.55
        assert_eq!(
            percentile_cont(&sorted, 0.99),
            Some(Duration::from_micros(99_100))
        ); // 8.91
        assert_eq!(percentile_cont(&sorted, 0.0), Some(ms(10)));
        assert_eq!(percentile_cont(&sorted, 1.0), Some(ms(100)));
        assert_eq!(percentile_cont(&sorted, 7.0), Some(ms(100)));
        assert_eq!(percentile_cont(&sorted, f64::NAN), Some(ms(10)));
        assert_eq!(percentile_cont(&[], 0.5), None);
        assert_eq!(percentile_cont(&[ms(7)], 0.99), Some(ms(7)));
        let summary = LatencySummary::of(sorted.iter().rev().copied());
        assert_eq!(summary.p50, Some(ms(55)));
        assert_eq!(summary.p99, Some(Duration::from_micros(99_100)));
        assert_eq!(LatencySummary::of([]), LatencySummary::default());
    }

    fn runs(n: usize, ms_each: u64, outcome: OutcomeClass) -> Vec<ExecutionRecord> {
        (0..n)
            .map(|_| ExecutionRecord {
                job_id: JobId::new(),
                kind: "k".into(),
                strategy: "direct".into(),
                outcome,
                duration: ms(ms_each),
                attempt: 1,
                inline_retries: 0,
                error_class: (outcome != OutcomeClass::Succeeded).then(|| "e".to_owned()),
                at: chrono::Utc::now(),
                decision: None,
            })
            .collect()
    }

    /// A job that failed once (retried) and then succeeded: a transient failure.
    fn rescued_failure() -> Vec<ExecutionRecord> {
        let mut pair = runs(1, 10, OutcomeClass::Retried);
        pair.extend(runs(1, 10, OutcomeClass::Succeeded));
        pair[1].job_id = pair[0].job_id;
        pair
    }

    fn reflect_all(parts: &[&[ExecutionRecord]]) -> Reflection {
        let all: Vec<&ExecutionRecord> = parts.iter().flat_map(|p| p.iter()).collect();
        reflect_on("k", &all)
    }

    #[test]
    fn drift_sees_a_fall_in_success_and_names_the_numbers() {
        let steady = runs(450, 10, OutcomeClass::Succeeded);
        let mut late = runs(20, 10, OutcomeClass::Succeeded);
        for _ in 0..15 {
            late.extend(rescued_failure());
        }
        let long = reflect_all(&[&steady, &late]);
        let recent = reflect_all(&[&late]);
        let why = drift(&long, &recent).expect("a drift");
        assert!(why.contains("success rate 97% → 70%"), "{why}");
        assert!(why.contains("the latest 50 executions"), "{why}");
    }

    #[test]
    fn drift_needs_a_confident_recent_window_and_a_real_change() {
        let steady = runs(500, 10, OutcomeClass::Succeeded);
        // Too few recent executions to judge: no drift, however different.
        let few = runs(5, 400, OutcomeClass::Succeeded);
        assert_eq!(drift(&reflect_all(&[&steady]), &reflect_all(&[&few])), None);
        // A 50% slower median is not a drift (the bound is 2×).
        let slower = runs(50, 15, OutcomeClass::Succeeded);
        assert_eq!(
            drift(&reflect_all(&[&steady, &slower]), &reflect_all(&[&slower])),
            None
        );
        // A steady long tail: one call in twelve is slow. Windows of 50 differ in their p99
        // and in whether they hedge, by chance; that is not a drift.
        let tail: Vec<ExecutionRecord> = (0..500)
            .flat_map(|i| {
                runs(
                    1,
                    if i % 12 == 0 { 400 } else { 10 },
                    OutcomeClass::Succeeded,
                )
            })
            .collect();
        for start in (0..=450).step_by(10) {
            let window = &tail[start..start + 50];
            assert_eq!(
                drift(&reflect_all(&[&tail]), &reflect_all(&[window])),
                None,
                "window at {start}"
            );
        }
        // A noisy success rate (two in three) moving by less than chance allows.
        let mut noisy = runs(330, 10, OutcomeClass::Succeeded);
        noisy.extend(runs(170, 10, OutcomeClass::Retried));
        let mut lucky = runs(40, 10, OutcomeClass::Succeeded);
        lucky.extend(runs(10, 10, OutcomeClass::Retried));
        assert_eq!(
            drift(&reflect_all(&[&noisy]), &reflect_all(&[&lucky])),
            None,
            "80% against 66% in 50 executions is within chance"
        );
    }

    #[test]
    fn a_window_of_a_known_hopeless_class_is_not_a_drift() {
        // The longer history: half the jobs fail with `e` every time (never rescued).
        let mut long = runs(300, 10, OutcomeClass::Succeeded);
        for _ in 0..100 {
            let job = JobId::new();
            let mut failed = runs(2, 10, OutcomeClass::Retried);
            failed.extend(runs(1, 10, OutcomeClass::Failed));
            for r in &mut failed {
                r.job_id = job;
            }
            long.extend(failed);
        }
        let all = reflect_all(&[&long]);
        assert_eq!(all.recommendation.no_retry_classes, vec!["e".to_owned()]);
        // The latest 50 are all retries of that class, as at the end of a burst.
        let tail = &long[long.len() - 50..];
        assert_eq!(drift(&all, &reflect_all(&[tail])), None);
    }

    #[test]
    fn drift_is_seen_within_the_window_after_a_change() {
        // 450 reliable executions, then a quarter of calls start failing: the detector, fed
        // the latest DRIFT_WINDOW after each new execution, fires within the window.
        let steady = runs(450, 10, OutcomeClass::Succeeded);
        let changed: Vec<ExecutionRecord> = (0..100)
            .flat_map(|i| {
                if i % 4 == 0 {
                    rescued_failure()
                } else {
                    runs(1, 10, OutcomeClass::Succeeded)
                }
            })
            .collect();
        let mut fired = None;
        for after in 1..=changed.len() {
            let all: Vec<&ExecutionRecord> = steady.iter().chain(&changed[..after]).collect();
            let start = all.len().saturating_sub(500);
            let long = reflect_on("k", &all[start..]);
            let recent = reflect_on("k", &all[all.len() - DRIFT_WINDOW..]);
            if drift(&long, &recent).is_some() {
                fired = Some(after);
                break;
            }
        }
        let fired = fired.expect("the change is seen");
        assert!(fired <= DRIFT_WINDOW, "seen after {fired} executions");
    }

    proptest::proptest! {
        #[test]
        fn selection_gives_the_sorted_percentiles(
            mut nanos in proptest::collection::vec(0u64..5_000_000_000, 0..300),
        ) {
            let mut sorted = nanos.clone();
            sorted.sort_unstable();
            let expected = LatencySummary::of_sorted_nanos(&sorted);
            proptest::prop_assert_eq!(LatencySummary::of_unsorted_nanos(&mut nanos), expected);
        }
    }

    #[test]
    fn durations_and_rates_read_well() {
        assert_eq!(human(Duration::from_micros(850)), "850 µs");
        assert_eq!(human(ms(150)), "150 ms");
        assert_eq!(human(Duration::from_micros(8_500)), "8.5 ms");
        assert_eq!(human(ms(1_200)), "1.2 s");
        assert_eq!(human(ms(1_000)), "1 s");
        assert_eq!(human(Duration::from_secs(90)), "1.5 min");
        assert_eq!(human(Duration::from_secs(24 * 3600)), "24 h");
        assert_eq!(percent(0.975), "97.5%");
        assert_eq!(percent(0.5), "50%");
    }

    /// A reflection with the given numbers (the recommendation left empty).
    fn stats(
        succeeded: u64,
        retried: u64,
        failed: u64,
        p: [u64; 3],
        rescue: Option<f64>,
    ) -> Reflection {
        let count = succeeded + retried + failed;
        Reflection {
            kind: "k".into(),
            count,
            succeeded,
            retried,
            failed,
            deferred: 0,
            cancelled: 0,
            success_rate: ratio(succeeded, count),
            deferred_rate: ratio(0, count),
            p50: Some(ms(p[0])),
            p90: None,
            p95: Some(ms(p[1])),
            p99: Some(ms(p[2])),
            retry_rescue_rate: rescue,
            transient_rescue_rate: rescue,
            top_errors: Vec::new(),
            recommendation: placeholder(),
        }
    }

    #[test]
    fn too_few_executions_are_not_trusted() {
        let rec = recommend(&stats(19, 0, 0, [10, 20, 900], None));
        assert!(!rec.confident);
        assert_eq!(rec.strategy, StrategyChoice::Direct);
        assert_eq!(rec.timeout, None);
        assert!(
            rec.rationale.contains("only 19 executions"),
            "{}",
            rec.rationale
        );
        let rec = recommend(&stats(20, 0, 0, [10, 20, 25], None));
        assert!(rec.confident);
    }

    #[test]
    fn long_tail_with_high_success_hedges_at_p95() {
        let rec = recommend(&stats(100, 0, 0, [150, 400, 1_200], None));
        assert_eq!(rec.strategy, StrategyChoice::Hedged);
        assert_eq!(rec.hedge_delay, Some(ms(400)));
        // Nothing has failed: one in-process retry, for free until something does.
        assert_eq!(rec.inline_retries, INLINE_PROBE_RETRIES);
        assert!(
            rec.rationale
                .contains("no job has failed with a retryable error yet"),
            "{}",
            rec.rationale
        );
        assert_eq!(rec.timeout, Some(ms(1_800)));
        assert!(
            rec.rationale
                .contains("p99 1.2 s is 8.0× p50 150 ms: tail is long, hedge after p95 400 ms"),
            "{}",
            rec.rationale
        );
        // The same tail in a kind that fails more often than it succeeds does not hedge.
        let rec = recommend(&stats(40, 0, 60, [150, 400, 1_200], None));
        assert_eq!(rec.strategy, StrategyChoice::Direct);
        assert!(
            rec.rationale.contains("rules out hedging"),
            "{}",
            rec.rationale
        );
    }

    #[test]
    fn a_long_tail_with_rescued_transient_failures_hedges_and_retries_in_process() {
        let rec = recommend(&stats(75, 25, 0, [10, 300, 400], Some(1.0)));
        assert_eq!(rec.strategy, StrategyChoice::Hedged);
        assert_eq!(rec.hedge_delay, Some(ms(30)));
        assert_eq!(rec.inline_retries, INLINE_RETRIES);
        assert!(
            rec.rationale.contains(
                "hedge after 3× p50 = 30 ms; and 100% of failed executions were transient"
            ),
            "{}",
            rec.rationale
        );
    }

    #[test]
    fn retries_are_judged_without_the_classes_they_never_rescued() {
        // 100 jobs: 15 with a bad payload failed every call (4 retried, then failed: never
        // rescued); 20 others failed once with a timeout and succeeded on retry.
        let mut r = stats(85, 15 * 4 + 20, 15, [10, 12, 15], Some(20.0 / 35.0));
        r.transient_rescue_rate = Some(1.0);
        r.top_errors = vec![
            ErrorClassCount {
                class: "bad_payload".into(),
                count: 75,
                jobs: 15,
                rescued: 0,
                failed: 15,
            },
            ErrorClassCount {
                class: "timeout".into(),
                count: 20,
                jobs: 20,
                rescued: 20,
                failed: 0,
            },
        ];
        let rec = recommend(&r);
        assert_eq!(rec.no_retry_classes, vec!["bad_payload".to_owned()]);
        // The timeouts alone: all transient, all rescued, so retry them in process and allow
        // every attempt; judged on every failure, the rescue rate (57%) would allow 3.
        assert_eq!(rec.strategy, StrategyChoice::InlineRetry);
        assert_eq!(rec.max_attempts, MAX_ATTEMPTS_WHEN_RESCUED);
        assert!(
            rec.rationale
                .contains("retries rescued 100% of failed jobs of the other classes"),
            "{}",
            rec.rationale
        );
        // The same numbers with the bad payloads failing fast (one execution each, failed):
        // still judged on the timeouts alone.
        let mut fast = stats(85, 20, 15, [10, 12, 15], Some(1.0));
        fast.transient_rescue_rate = Some(1.0);
        fast.top_errors = r.top_errors.clone();
        fast.top_errors[0].count = 15;
        let rec = recommend(&fast);
        assert_eq!(rec.strategy, StrategyChoice::InlineRetry);
        // Without the per-class view, 15 failed against 20 retried is a 57% transient share
        // and 20/35 rescued: no in-process retries.
        fast.top_errors.clear();
        fast.retry_rescue_rate = Some(20.0 / 35.0);
        fast.transient_rescue_rate = fast.retry_rescue_rate;
        fast.failed = 25;
        assert_eq!(recommend(&fast).strategy, StrategyChoice::Direct);
    }

    #[test]
    fn reflection_counts_the_rescue_rate_without_hopeless_jobs() {
        let record = |job: JobId, outcome, class: Option<&str>| ExecutionRecord {
            job_id: job,
            kind: "k".into(),
            strategy: "direct".into(),
            outcome,
            duration: ms(10),
            attempt: 1,
            inline_retries: 0,
            error_class: class.map(str::to_owned),
            at: chrono::Utc::now(),
            decision: None,
        };
        let mut history = Vec::new();
        for _ in 0..6 {
            let bad = JobId::new();
            history.push(record(bad, OutcomeClass::Retried, Some("bad_payload")));
            history.push(record(bad, OutcomeClass::Failed, Some("bad_payload")));
        }
        for _ in 0..4 {
            let flaky = JobId::new();
            history.push(record(flaky, OutcomeClass::Retried, Some("timeout")));
            history.push(record(flaky, OutcomeClass::Succeeded, None));
        }
        for _ in 0..20 {
            history.push(record(JobId::new(), OutcomeClass::Succeeded, None));
        }
        let refs: Vec<&ExecutionRecord> = history.iter().collect();
        let r = reflect_on("k", &refs);
        assert_eq!(r.retry_rescue_rate, Some(0.4));
        assert_eq!(r.transient_rescue_rate, Some(1.0));
        let bad = r
            .top_errors
            .iter()
            .find(|e| e.class == "bad_payload")
            .expect("class");
        assert_eq!(
            (bad.count, bad.failed, bad.jobs, bad.rescued),
            (12, 6, 6, 0)
        );
        assert_eq!(
            r.recommendation.no_retry_classes,
            vec!["bad_payload".to_owned()]
        );
        assert_eq!(r.recommendation.strategy, StrategyChoice::InlineRetry);
    }

    #[test]
    fn timeout_follows_the_tail_within_bounds() {
        let at = |p99| recommend(&stats(50, 0, 0, [p99 / 2, p99, p99], None)).timeout;
        assert_eq!(at(100), Some(TIMEOUT_FLOOR));
        assert_eq!(at(2_000), Some(ms(3_000)));
        assert_eq!(at(4_000), Some(ms(6_000)));
        assert_eq!(at(100 * 3600 * 1000), Some(TIMEOUT_CEILING));
    }

    #[test]
    fn attempts_follow_the_rescue_rate() {
        let attempts = |rescue| recommend(&stats(50, 10, 10, [10, 20, 25], rescue)).max_attempts;
        assert_eq!(attempts(None), DEFAULT_MAX_ATTEMPTS);
        assert_eq!(attempts(Some(0.0)), 1);
        assert_eq!(attempts(Some(0.2)), 2);
        assert_eq!(attempts(Some(0.5)), 3);
        assert_eq!(attempts(Some(0.9)), MAX_ATTEMPTS_WHEN_RESCUED);
    }

    #[test]
    fn transient_rescued_failures_retry_in_process() {
        let rec = recommend(&stats(80, 15, 5, [10, 20, 25], Some(0.9)));
        assert_eq!(rec.strategy, StrategyChoice::InlineRetry);
        assert_eq!(rec.inline_retries, INLINE_RETRIES);
        // Mostly permanent failures: retrying in process would not help.
        let rec = recommend(&stats(80, 5, 15, [10, 20, 25], Some(0.9)));
        assert_eq!(rec.strategy, StrategyChoice::Direct);
        // Failures fully absorbed by inline retries keep inline retrying.
        let rec = recommend(&stats(100, 0, 0, [10, 20, 25], Some(1.0)));
        assert_eq!(rec.strategy, StrategyChoice::InlineRetry);
        assert!(
            rec.rationale.contains("absorbed every failure"),
            "{}",
            rec.rationale
        );
    }

    #[test]
    fn zero_latency_is_no_tail() {
        assert!((tail_ratio(Duration::ZERO, Duration::ZERO) - 1.0).abs() < f64::EPSILON);
        assert!(tail_ratio(Duration::ZERO, ms(1)).is_infinite());
        assert_eq!(ratio_text(f64::INFINITY), "∞");
    }
}
