//! A flaky downstream behind a circuit breaker and a rate limit, run through the real
//! orchestrator (in-memory engine).
//!
//! The downstream answers 503 for a second; the breaker opens, jobs are deferred instead of
//! failing (their attempts are not spent), probes find the downstream back and the breaker
//! closes; every job succeeds.
//!
//! `cargo run --example safety_layers` (add `RUST_LOG=jobforge=info` to see the `tracing`
//! events too).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jobforge::prelude::*;
use jobforge::safety::{
    BreakerState, CircuitBreakerConfig, CircuitBreakerLayer, Layer, RateLimitConfig,
    RateLimitLayer, SlidingWindow, TimeoutLayer,
};
use parking_lot::Mutex;
use serde_json::{Value, json};

const JOBS: usize = 150;
const OUTAGE: std::ops::Range<Duration> = Duration::from_millis(300)..Duration::from_millis(1300);

/// The downstream: answers in about 2 ms, except during the outage, when it answers 503.
struct Downstream {
    started: Instant,
    calls: AtomicUsize,
}

#[async_trait]
impl Handler for Downstream {
    async fn handle(&self, _ctx: &JobContext) -> Result<Value, JobError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
        if OUTAGE.contains(&self.started.elapsed()) {
            Err(JobError::retryable("payments API answered 503").with_class("http_503"))
        } else {
            Ok(json!({"charged": true}))
        }
    }
}

/// A layer of our own: tallies what the layers inside it answered, by error class.
#[derive(Clone, Default)]
struct TallyLayer(Arc<Mutex<BTreeMap<String, usize>>>);

struct Tally<H> {
    inner: H,
    counts: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl<H> Layer<H> for TallyLayer {
    type Service = Tally<H>;
    fn layer(&self, inner: H) -> Tally<H> {
        Tally {
            inner,
            counts: Arc::clone(&self.0),
        }
    }
}

#[async_trait]
impl<H: Handler> Handler for Tally<H> {
    async fn handle(&self, ctx: &JobContext) -> Result<Value, JobError> {
        let result = self.inner.handle(ctx).await;
        let class = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.class().to_owned(),
        };
        *self.counts.lock().entry(class).or_default() += 1;
        result
    }
}

#[tokio::main]
async fn main() -> jobforge::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let started = Instant::now();
    let downstream = Arc::new(Downstream {
        started,
        calls: AtomicUsize::new(0),
    });

    let breaker = CircuitBreakerLayer::new(
        CircuitBreakerConfig::default()
            .with_sliding_window(SlidingWindow::count(10))
            .with_minimum_calls(5)
            .with_failure_rate_threshold(50.0)
            .with_slow_call_duration(Duration::from_millis(150))
            .with_wait_in_open(Duration::from_millis(300))
            .with_open_backoff(2.0, Duration::from_millis(800))
            .with_permitted_calls_in_half_open(2)
            .with_half_open_retry_after(Duration::from_millis(100))
            .with_on_state_change(move |change| {
                let at = started.elapsed().as_secs_f64();
                match change.to {
                    BreakerState::Open => println!(
                        "[{at:5.2}s] breaker `{}` {} -> OPEN: failure rate {:.0}% over {} calls; open for {:?}",
                        change.key,
                        change.from,
                        change.failure_rate.unwrap_or(0.0),
                        change.calls,
                        change.open_for.unwrap_or_default(),
                    ),
                    BreakerState::HalfOpen => {
                        println!("[{at:5.2}s] breaker `{}` -> half-open: probing", change.key)
                    }
                    BreakerState::Closed => println!(
                        "[{at:5.2}s] breaker `{}` {} -> CLOSED: the probes succeeded",
                        change.key, change.from
                    ),
                }
            }),
    )?;
    let tally = TallyLayer::default();
    // Innermost first: timeout, breaker, rate limit, then our tally of what came out.
    let downstream_handler: Arc<dyn Handler> = downstream.clone();
    let handler = downstream_handler
        .layer(TimeoutLayer::new(Duration::from_millis(200)))
        .layer(breaker.clone())
        .layer(RateLimitLayer::new(
            RateLimitConfig::per_second(150).with_burst(10),
        )?)
        .layer(tally.clone());

    let orchestrator = Orchestrator::builder()
        .kind(
            "charge",
            KindConfig::new(handler).retry(
                RetryPolicy::new(5)
                    .with_base(Duration::from_millis(50))
                    .with_cap(Duration::from_millis(400)),
            ),
        )
        .build()?;
    let workers = orchestrator.start_workers(
        WorkerConfig::default()
            .concurrency(16)
            .poll_wait(Duration::from_millis(50)),
    )?;

    // 150 charges over 1.5 s; the outage runs from 0.3 s to 1.3 s.
    let mut ids = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        ids.push(
            orchestrator
                .submit(NewJob::new("charge").payload(&json!({"order": i})))
                .await?
                .id,
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    orchestrator.wait_idle(Duration::from_secs(20)).await?;
    let elapsed = started.elapsed();
    workers.shutdown(Duration::from_secs(5)).await;

    let (mut succeeded, mut dead, mut deferrals, mut max_attempt) = (0, 0, 0, 0);
    let mut attempts: BTreeMap<u32, usize> = BTreeMap::new();
    for id in &ids {
        let Some(job) = orchestrator.get(*id).await? else {
            continue;
        };
        match job.state {
            JobState::Succeeded => succeeded += 1,
            _ => dead += 1,
        }
        *attempts.entry(job.attempt).or_default() += 1;
        max_attempt = max_attempt.max(job.attempt);
        deferrals += orchestrator
            .events(*id)
            .await?
            .iter()
            .filter(|e| {
                e.to == JobState::Queued
                    && e.reason.as_deref().is_some_and(|r| {
                        r.starts_with("circuit_open") || r.starts_with("rate_limited")
                    })
            })
            .count();
    }
    let counts = tally.0.lock().clone();
    let snap = breaker.registry().snapshot("charge");

    let row = |label: &str, value: String| println!("| {label:<44} | {value:>6} |");
    println!();
    println!("| {:<44} | {:>6} |", "figure", "value");
    println!("|{}|{}|", "-".repeat(46), "-".repeat(8));
    row("jobs submitted", JOBS.to_string());
    row("jobs succeeded", succeeded.to_string());
    row("jobs dead", dead.to_string());
    row(
        "downstream calls",
        downstream.calls.load(Ordering::Relaxed).to_string(),
    );
    for (class, n) in &counts {
        row(&format!("handler answers `{class}`"), n.to_string());
    }
    row(
        "deferral events in the jobs' histories",
        deferrals.to_string(),
    );
    for (attempt, n) in &attempts {
        row(
            &format!("jobs that finished on attempt {attempt}"),
            n.to_string(),
        );
    }
    if let Some(snap) = snap {
        row("breaker state at the end", snap.state.to_string());
        row(
            "calls refused by the breaker",
            snap.not_permitted.to_string(),
        );
    }
    row("wall time", format!("{:.1}s", elapsed.as_secs_f64()));

    assert_eq!(
        succeeded, JOBS,
        "every job succeeds once the downstream is back"
    );
    assert!(counts.get("circuit_open").copied().unwrap_or(0) > 0);
    assert!(max_attempt <= 5);
    Ok(())
}
