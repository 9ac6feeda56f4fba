//! Adaptive against every fixed strategy a careful user would configure, and against the best
//! of them per kind chosen in hindsight (the oracle), on one seeded mixed workload (issue 19).
//!
//! Four kinds, the same jobs (same seeds) for every contender, in two halves:
//! - `tail`: idempotent; 5–15 ms, but one call in twelve takes 300–600 ms.
//! - `transient`: 5–10 ms; a third of calls fail with a retryable `conn_reset`.
//! - `mixed`: 5–10 ms; 15% of jobs carry a bad payload that fails every call (class
//!   `bad_payload`, marked retryable by a careless handler: retries are waste), and 20% of the
//!   other calls fail with a transient `timeout`.
//! - `drift`: idempotent; 5–10 ms and reliable in the first half; in the second half one call
//!   in eight takes 200–400 ms and a quarter fail with a transient `unavailable`.
//!
//! Contenders: `direct`; a fixed hedge after the first half's p95 of `direct`; fixed inline
//! retries (2); a fixed per-attempt timeout of 1.5× the first half's p99; the oracle (per
//! kind, the fixed contender that completed the most jobs with the lowest p99); `adaptive`,
//! starting from the history the fixed settings were chosen from (the calibration run's
//! executions in its memory: what a careful user knew), and learning from its own run. Queue retries use the library's
//! default backoff (1 s base, full jitter), 5 attempts.
//!
//! Reported per kind and in total: completed, p50 and p99 submit → finish, handler calls,
//! wasted calls (calls − completed: failures, losing hedges, retries of jobs that never
//! succeed), and for `adaptive`, how many executions of `drift` after the change it took
//! before its recommendation for the kind changed, what it steered each kind by at the end
//! of each half, and the issue's bar checked line by line on the totals.
//!
//! ```text
//! cargo run --release --example adaptive_vs_fixed                # seed 1, about 3.5 min
//! SEED=7 JOBS=100 cargo run --release --example adaptive_vs_fixed
//! SEEDS=1,2,3,4,5 cargo run --release --example adaptive_vs_fixed  # and the medians
//! CONTENDERS=inline×2,adaptive cargo run --release --example adaptive_vs_fixed
//! ```
//!
//! Every figure is measured in the run; nothing is hard-coded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jobforge::memory::reflection::{DRIFT_WINDOW, steer};
use jobforge::memory::{Recommendation, Window};
use jobforge::prelude::*;
use jobforge::strategy::{Adaptive, Hedged, InlineRetry};
use jobforge::{Handler, Result};
use parking_lot::Mutex;
use serde_json::json;

const KINDS: [&str; 4] = ["tail", "transient", "mixed", "drift"];

/// Counts handler calls per kind, and gives each call of a job its own deterministic
/// randomness (seeded by the job's payload and the call's number), so every contender sees
/// the same workload.
#[derive(Default)]
struct Calls {
    per_kind: Mutex<HashMap<String, u64>>,
    per_job: Mutex<HashMap<JobId, u64>>,
    /// The second half: `drift` changes.
    drifted: AtomicBool,
}

impl Calls {
    fn rng(&self, ctx: &JobContext) -> (fastrand::Rng, u64) {
        *self
            .per_kind
            .lock()
            .entry(ctx.kind().to_owned())
            .or_default() += 1;
        let call = {
            let mut per_job = self.per_job.lock();
            let n = per_job.entry(ctx.id()).or_default();
            *n += 1;
            *n
        };
        let seed: u64 = ctx.decode().unwrap_or_default();
        (
            fastrand::Rng::with_seed(seed.wrapping_mul(1_000_003).wrapping_add(call)),
            seed,
        )
    }

    fn calls(&self, kind: &str) -> u64 {
        self.per_kind.lock().get(kind).copied().unwrap_or(0)
    }
}

/// Sleep `ms`, or stop early when the attempt is cancelled (a hedge lost, a timeout).
async fn work(ctx: &JobContext, ms: u64) -> bool {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => true,
        () = ctx.cancelled() => false,
    }
}

fn handler(calls: Arc<Calls>) -> Arc<dyn Handler> {
    handler_fn(move |ctx: JobContext| {
        let calls = Arc::clone(&calls);
        async move {
            let (mut rng, seed) = calls.rng(&ctx);
            let lost = || JobError::cancelled("attempt cancelled");
            match ctx.kind() {
                "tail" => {
                    let ms = if rng.u64(0..12) == 0 {
                        rng.u64(300..=600)
                    } else {
                        rng.u64(5..=15)
                    };
                    if work(&ctx, ms).await {
                        Ok(json!(ms))
                    } else {
                        Err(lost())
                    }
                }
                "transient" => {
                    let fails = rng.f64() < 0.33;
                    if !work(&ctx, rng.u64(5..=10)).await {
                        return Err(lost());
                    }
                    if fails {
                        Err(JobError::retryable("connection reset").with_class("conn_reset"))
                    } else {
                        Ok(json!("ok"))
                    }
                }
                "mixed" => {
                    // The job's own seed decides whether its payload is bad: every call fails.
                    let bad = fastrand::Rng::with_seed(seed).f64() < 0.15;
                    let flaky = rng.f64() < 0.20;
                    if !work(&ctx, rng.u64(5..=10)).await {
                        return Err(lost());
                    }
                    if bad {
                        Err(JobError::retryable("payload does not parse").with_class("bad_payload"))
                    } else if flaky {
                        Err(JobError::retryable("upstream timed out").with_class("timeout"))
                    } else {
                        Ok(json!("ok"))
                    }
                }
                _ => {
                    let (ms, fails) = if calls.drifted.load(Ordering::Relaxed) {
                        let slow = rng.u64(0..8) == 0;
                        (
                            if slow {
                                rng.u64(200..=400)
                            } else {
                                rng.u64(5..=10)
                            },
                            rng.f64() < 0.25,
                        )
                    } else {
                        (rng.u64(5..=10), false)
                    };
                    if !work(&ctx, ms).await {
                        return Err(lost());
                    }
                    if fails {
                        Err(JobError::retryable("service unavailable").with_class("unavailable"))
                    } else {
                        Ok(json!(ms))
                    }
                }
            }
        }
    })
}

/// One contender: how its orchestrator is set up.
#[derive(Clone)]
enum Setup {
    Direct,
    Hedge(BTreeMap<String, Duration>),
    Inline(u32),
    Timeout(BTreeMap<String, Duration>),
    Adaptive,
}

/// What a contender did with one kind.
#[derive(Clone, Default)]
struct KindResult {
    completed: usize,
    latencies: Vec<Duration>,
    calls: u64,
}

impl KindResult {
    fn pick(&self, q: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((l.len() as f64 * q).ceil() as usize).saturating_sub(1);
        l.get(i).copied().unwrap_or_default()
    }
    fn wasted(&self) -> u64 {
        self.calls.saturating_sub(self.completed as u64)
    }
    fn add(&mut self, other: &KindResult) {
        self.completed += other.completed;
        self.latencies.extend_from_slice(&other.latencies);
        self.calls += other.calls;
    }
}

struct Run {
    per_kind: BTreeMap<String, KindResult>,
    /// The run's memory: its execution history.
    memory: Option<Arc<dyn jobforge::Memory>>,
    /// `adaptive` only: executions of `drift` after the change until its recommendation
    /// changed (`None`: it did not within the run).
    adapted_after: Option<u64>,
    /// `adaptive` only: per kind, what it steered by at the end of each half.
    steering: Vec<(u64, String, String)>,
}

async fn run(
    setup: &Setup,
    jobs: u64,
    seed: u64,
    halves: u64,
    history: Option<Arc<dyn jobforge::Memory>>,
) -> Result<Run> {
    let calls = Arc::new(Calls::default());
    let retry = RetryPolicy::new(5);
    let mut builder = Orchestrator::builder();
    if let Some(history) = history {
        builder = builder.memory(history);
    }
    for kind in KINDS {
        let mut config = KindConfig::new(handler(Arc::clone(&calls)))
            .retry(retry)
            .idempotent(kind == "tail" || kind == "drift");
        if let Setup::Timeout(t) = setup {
            if let Some(t) = t.get(kind) {
                config = config.timeout(*t);
            }
        }
        builder = builder.kind(kind, config);
    }
    builder = match setup {
        Setup::Direct | Setup::Timeout(_) => builder,
        Setup::Hedge(delays) => {
            // One hedged strategy per kind, each with its own fixed delay.
            for (kind, delay) in delays {
                builder = builder.strategy(Arc::new(
                    Hedged::new()
                        .with_name(format!("hedge-{kind}"))
                        .with_delay(*delay),
                ));
            }
            builder
        }
        Setup::Inline(n) => builder
            .strategy(Arc::new(InlineRetry::new(*n)))
            .default_strategy("inline_retry"),
        Setup::Adaptive => builder
            .strategy(Arc::new(Adaptive::new().with_refresh_after_runs(25)))
            .default_strategy("adaptive"),
    };
    let orchestrator = builder.build()?;
    let workers = orchestrator.start_workers(
        WorkerConfig::default()
            .concurrency(1_024)
            .poll_wait(Duration::from_millis(20)),
    )?;
    let mut per_kind: BTreeMap<String, KindResult> = BTreeMap::new();
    let mut adapted_after = None;
    let mut steering_log = Vec::new();
    for half in 0..halves {
        calls.drifted.store(half == 1, Ordering::Relaxed);
        let before: HashMap<&str, u64> = KINDS.iter().map(|k| (*k, calls.calls(k))).collect();
        let recommended_before = if matches!(setup, Setup::Adaptive) && half == 1 {
            Some(shape(&steering(&orchestrator, "drift").await?))
        } else {
            None
        };
        // The drift kind in waves of 25, so the change can be seen taking hold.
        let mut submitted: Vec<(String, JobId)> = Vec::new();
        for kind in KINDS.iter().filter(|k| **k != "drift") {
            let batch = (0..jobs)
                .map(|i| {
                    let mut job =
                        NewJob::new(*kind).payload(&(seed * 1_000_000 + half * 100_000 + i));
                    if let Setup::Hedge(_) = setup {
                        job = job.strategy(format!("hedge-{kind}"));
                    }
                    job
                })
                .collect();
            for s in orchestrator.submit_batch(batch).await? {
                submitted.push(((*kind).to_owned(), s.id));
            }
        }
        let mut drift_seen = 0_u64;
        for wave in 0..jobs.div_ceil(25) {
            let n = 25.min(jobs - wave * 25);
            let batch = (0..n)
                .map(|i| {
                    let mut job = NewJob::new("drift")
                        .payload(&(seed * 1_000_000 + half * 100_000 + 50_000 + wave * 25 + i));
                    if let Setup::Hedge(_) = setup {
                        job = job.strategy("hedge-drift");
                    }
                    job
                })
                .collect();
            for s in orchestrator.submit_batch(batch).await? {
                submitted.push(("drift".to_owned(), s.id));
            }
            orchestrator.wait_idle(Duration::from_secs(120)).await?;
            drift_seen += n;
            if let Some(before) = &recommended_before {
                if adapted_after.is_none() {
                    // (the recorder writes executions in the background)
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let now = shape(&steering(&orchestrator, "drift").await?);
                    if now != *before {
                        adapted_after = Some(drift_seen);
                    }
                }
            }
        }
        orchestrator.wait_idle(Duration::from_secs(120)).await?;
        if matches!(setup, Setup::Adaptive) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            for kind in KINDS {
                let rec = steering(&orchestrator, kind).await?;
                steering_log.push((half, kind.to_owned(), rec.rationale));
            }
        }
        for (kind, id) in &submitted {
            let Some(record) = orchestrator.get(*id).await? else {
                continue;
            };
            let entry = per_kind.entry(kind.clone()).or_default();
            if record.state == JobState::Succeeded {
                entry.completed += 1;
                if let Some(finished) = record.finished_at {
                    let us = (finished - record.created_at)
                        .num_microseconds()
                        .unwrap_or(0);
                    entry
                        .latencies
                        .push(Duration::from_micros(u64::try_from(us).unwrap_or(0)));
                }
            }
        }
        for kind in KINDS {
            per_kind.entry(kind.to_owned()).or_default().calls +=
                calls.calls(kind) - before.get(kind).copied().unwrap_or(0);
        }
    }
    workers.shutdown(Duration::from_secs(10)).await;
    Ok(Run {
        per_kind,
        memory: Some(Arc::clone(orchestrator.memory())),
        adapted_after,
        steering: steering_log,
    })
}

/// What `adaptive` steers `kind` by now: its recommendation over the latest 500 executions,
/// or over the latest `DRIFT_WINDOW` when those drifted (as `Adaptive` does).
async fn steering(orchestrator: &Orchestrator, kind: &str) -> Result<Recommendation> {
    let long = orchestrator
        .memory()
        .reflect(kind, Window::Last(500))
        .await?;
    let recent = orchestrator
        .memory()
        .reflect(kind, Window::Last(DRIFT_WINDOW))
        .await?;
    Ok(steer(long, recent).0.recommendation)
}

/// The part of a recommendation that changes what runs.
fn shape(r: &Recommendation) -> (jobforge::memory::StrategyChoice, u32, bool) {
    (r.strategy, r.inline_retries, r.hedge_delay.is_some())
}

fn print_row(contender: &str, kind: &str, k: &KindResult) {
    println!(
        "{:<16} {:<10} {:>9} {:>7} {:>7} {:>7} {:>7}",
        contender,
        kind,
        k.completed,
        ms(k.pick(0.5)),
        ms(k.pick(0.99)),
        k.calls,
        k.wasted()
    );
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> Result<()> {
    // `SEEDS=1,2,3,4,5` runs each seed in turn and ends with the medians; `SEED=7` one seed.
    let seeds: Vec<u64> = std::env::var("SEEDS")
        .or_else(|_| std::env::var("SEED"))
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|s: &Vec<u64>| !s.is_empty())
        .unwrap_or_else(|| vec![1]);
    let jobs: u64 = std::env::var("JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut summaries = Vec::new();
    for seed in &seeds {
        summaries.extend(one_seed(*seed, jobs).await?);
    }
    if summaries.len() > 1 {
        let median = |f: &dyn Fn(&Summary) -> f64| {
            let mut v: Vec<f64> = summaries.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        println!(
            "\nmedians over {} seeds ({seeds:?}): adaptive p99 {:.0} ms, oracle p99 {:.0} ms, best fixed p99 {:.0} ms, adaptive/oracle {:.3}×, wasted {:.0} (least fixed completing as many: {:.0}), re-tuned `drift` within {:.0} executions",
            summaries.len(),
            median(&|s| s.adaptive_p99_ms),
            median(&|s| s.oracle_p99_ms),
            median(&|s| s.best_fixed_p99_ms),
            median(&|s| s.oracle_ratio),
            median(&|s| s.adaptive_wasted),
            median(&|s| s.least_fixed_wasted),
            median(&|s| s.adapted_after),
        );
    }
    Ok(())
}

/// One seed's figures for the medians.
struct Summary {
    adaptive_p99_ms: f64,
    oracle_p99_ms: f64,
    best_fixed_p99_ms: f64,
    oracle_ratio: f64,
    adaptive_wasted: f64,
    least_fixed_wasted: f64,
    adapted_after: f64,
}

async fn one_seed(seed: u64, jobs: u64) -> Result<Option<Summary>> {
    println!(
        "seed {seed}, {jobs} jobs per kind per half; calibrating the fixed settings on `direct`'s first half..."
    );

    // What a careful user measures first: `direct`'s numbers in the first half (before the
    // drift), per kind, on other jobs of the same kinds; the fixed settings come from them.
    let calibration = run(&Setup::Direct, jobs, seed + 1_000, 1, None).await?;
    let mut hedge = BTreeMap::new();
    let mut timeout = BTreeMap::new();
    for kind in KINDS {
        let r = &calibration.per_kind[kind];
        hedge.insert(kind.to_owned(), r.pick(0.95).max(Duration::from_millis(5)));
        timeout.insert(
            kind.to_owned(),
            r.pick(0.99).mul_f64(1.5).max(Duration::from_millis(20)),
        );
    }

    let contenders: Vec<(&str, Setup)> = vec![
        ("direct", Setup::Direct),
        ("hedge@p95", Setup::Hedge(hedge)),
        ("inline×2", Setup::Inline(2)),
        ("timeout@1.5p99", Setup::Timeout(timeout)),
        ("adaptive", Setup::Adaptive),
    ];
    // `CONTENDERS=adaptive,inline×2` runs only those.
    let only: Option<Vec<String>> = std::env::var("CONTENDERS")
        .ok()
        .map(|s| s.split(',').map(|c| c.trim().to_owned()).collect());
    let mut results: Vec<(String, Run)> = Vec::new();
    for (name, setup) in contenders
        .iter()
        .filter(|(name, _)| only.as_ref().is_none_or(|o| o.iter().any(|c| c == name)))
    {
        println!("  running {name}...");
        // Adaptive starts from the history the fixed settings were chosen from (the
        // calibration run's executions): the same knowledge a careful user had.
        let history = match setup {
            Setup::Adaptive => calibration.memory.clone(),
            _ => None,
        };
        results.push((
            (*name).to_owned(),
            run(setup, jobs, seed, 2, history).await?,
        ));
    }
    // The oracle: per kind, the fixed contender (not adaptive) that completed the most jobs,
    // then had the lowest p99.
    let mut oracle = BTreeMap::new();
    let mut oracle_pick = BTreeMap::new();
    for kind in KINDS {
        let best = results
            .iter()
            .filter(|(name, _)| name != "adaptive")
            .max_by(|(_, a), (_, b)| {
                let (a, b) = (&a.per_kind[kind], &b.per_kind[kind]);
                a.completed
                    .cmp(&b.completed)
                    .then_with(|| b.pick(0.99).cmp(&a.pick(0.99)))
            });
        if let Some((name, r)) = best {
            oracle.insert(kind.to_owned(), r.per_kind[kind].clone());
            oracle_pick.insert(kind, name.clone());
        }
    }
    if oracle.len() == KINDS.len() {
        results.push((
            "oracle".to_owned(),
            Run {
                per_kind: oracle,
                memory: None,
                adapted_after: None,
                steering: Vec::new(),
            },
        ));
    }

    println!(
        "\n{:<16} {:<10} {:>9} {:>7} {:>7} {:>7} {:>7}",
        "contender", "kind", "completed", "p50 ms", "p99 ms", "calls", "wasted"
    );
    for (name, r) in &results {
        let mut total = KindResult::default();
        for kind in KINDS {
            let k = &r.per_kind[kind];
            total.add(k);
            print_row(name, kind, k);
        }
        print_row(name, "TOTAL", &total);
    }
    println!(
        "\noracle picks: {}",
        oracle_pick
            .iter()
            .map(|(k, n)| format!("{k} → {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some((_, r)) = results.iter().find(|(n, _)| n == "adaptive") {
        for (half, kind, why) in &r.steering {
            println!("adaptive, end of half {}, {kind}: {why}", half + 1);
        }
        match r.adapted_after {
            Some(n) => println!("adaptive re-tuned `drift` within {n} executions after the change"),
            None => {
                println!("adaptive did not change its recommendation for `drift` within the run")
            }
        }
    }
    Ok(verdict(&results))
}

/// The issue's bar, checked on this run's totals: adaptive completes no fewer jobs than any
/// contender; has a lower total p99 than every fixed strategy; wastes fewer calls than every
/// fixed strategy that completes as many jobs; is within 10% of the oracle's p99; re-tuned
/// the drifting kind within 200 of its executions. One line each, and a `SUMMARY` line for
/// scripts that run several seeds.
#[allow(clippy::cast_precision_loss)]
fn verdict(results: &[(String, Run)]) -> Option<Summary> {
    let total = |r: &Run| {
        let mut t = KindResult::default();
        for k in r.per_kind.values() {
            t.add(k);
        }
        t
    };
    let (_, adaptive) = results.iter().find(|(n, _)| n == "adaptive")?;
    let a = total(adaptive);
    let fixed: Vec<(&str, KindResult)> = results
        .iter()
        .filter(|(n, _)| n != "adaptive" && n != "oracle")
        .map(|(n, r)| (n.as_str(), total(r)))
        .collect();
    let oracle = results
        .iter()
        .find(|(n, _)| n == "oracle")
        .map(|(_, r)| total(r));
    let most = results
        .iter()
        .map(|(_, r)| total(r).completed)
        .max()
        .unwrap_or(0);
    let best_fixed_p99 = fixed.iter().map(|(_, t)| t.pick(0.99)).min();
    let least_waste = fixed
        .iter()
        .filter(|(_, t)| t.completed >= a.completed)
        .map(|(_, t)| t.wasted())
        .min();
    let yes = |ok: bool| if ok { "yes" } else { "NO" };
    println!("\nthe bar:");
    println!(
        "  completes no fewer jobs than any contender: {} ({} of {most})",
        yes(a.completed >= most),
        a.completed
    );
    if let Some(best) = best_fixed_p99 {
        println!(
            "  lower total p99 than every fixed strategy: {} ({} ms against {} ms)",
            yes(a.pick(0.99) < best),
            ms(a.pick(0.99)),
            ms(best)
        );
    }
    if let Some(least) = least_waste {
        println!(
            "  wastes fewer calls than every fixed strategy completing as many: {} ({} against {least})",
            yes(a.wasted() < least),
            a.wasted()
        );
    }
    let ratio = oracle
        .as_ref()
        .map(|o| a.pick(0.99).as_secs_f64() / o.pick(0.99).as_secs_f64().max(1e-9));
    if let Some(ratio) = ratio {
        println!(
            "  p99 within 10% of the oracle's: {} ({ratio:.3}×)",
            yes(ratio <= 1.10)
        );
    }
    let adapted = adaptive.adapted_after;
    println!(
        "  re-tuned `drift` within 200 executions: {} ({})",
        yes(adapted.is_some_and(|n| n <= 200)),
        adapted.map_or_else(|| "not within the run".to_owned(), |n| n.to_string())
    );
    println!(
        "SUMMARY adaptive_p99_ms={} oracle_p99_ms={} best_fixed_p99_ms={} oracle_ratio={:.3} adaptive_wasted={} least_fixed_wasted={} adaptive_completed={} most_completed={most} adapted_after={}",
        ms(a.pick(0.99)),
        oracle
            .as_ref()
            .map_or_else(|| "-".to_owned(), |o| ms(o.pick(0.99))),
        best_fixed_p99.map_or_else(|| "-".to_owned(), ms),
        ratio.unwrap_or(f64::NAN),
        a.wasted(),
        least_waste.map_or_else(|| "-".to_owned(), |w| w.to_string()),
        a.completed,
        adapted.map_or_else(|| "-".to_owned(), |n| n.to_string()),
    );
    let msf = |d: Duration| d.as_secs_f64() * 1e3;
    Some(Summary {
        adaptive_p99_ms: msf(a.pick(0.99)),
        oracle_p99_ms: oracle.as_ref().map_or(f64::NAN, |o| msf(o.pick(0.99))),
        best_fixed_p99_ms: best_fixed_p99.map_or(f64::NAN, msf),
        oracle_ratio: ratio.unwrap_or(f64::NAN),
        adaptive_wasted: a.wasted() as f64,
        least_fixed_wasted: least_waste.map_or(f64::NAN, |w| w as f64),
        adapted_after: adapted.map_or(f64::NAN, |n| n as f64),
    })
}
