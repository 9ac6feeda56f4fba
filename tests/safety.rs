//! Safety layers: breaker transitions on a manual clock, limits under concurrent load,
//! backends behind breakers and timeouts, and deferrals through the real orchestrator.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use jobforge::memory::InMemoryMemory;
use jobforge::queue::{
    DeadLetter, Envelope, InMemoryQueue, Lease, QueueManager, QueueStats, Requeue, Reserve,
};
use jobforge::safety::{
    BreakerRegistry, BreakerState, BulkheadConfig, BulkheadLayer, CallOutcome,
    CircuitBreakerConfig, CircuitBreakerLayer, DroppedCall, HandlerExt, KeyBy, Layer, ManualClock,
    RateLimitConfig, RateLimitLayer, RateLimiter, SlidingWindow, StateChange, TimeoutLayer,
};
use jobforge::{
    ErrorKind, Handler, JobContext, JobError, JobId, JobOrchestrator, JobRecord, JobState,
    KindConfig, NewJob, Orchestrator, Payload, RetryPolicy, WorkerConfig, WorkerId, handler_fn,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// helpers

fn record(kind: &str, tenant: Option<&str>) -> JobRecord {
    let now = Utc::now();
    JobRecord {
        id: JobId::new(),
        kind: kind.to_owned(),
        queue: "default".to_owned(),
        payload: Payload::null(),
        state: JobState::Running,
        priority: 0,
        attempt: 1,
        max_attempts: 3,
        timeout: None,
        idempotency_key: None,
        tags: Vec::new(),
        tenant: tenant.map(str::to_owned),
        strategy: None,
        traceparent: None,
        run_at: now,
        created_at: now,
        updated_at: now,
        started_at: Some(now),
        finished_at: None,
        result: None,
        last_error: None,
        lease_owner: None,
        lease_expires_at: None,
        cancel_requested: false,
        version: 1,
        step: None,
        progress: None,
    }
}

fn ctx(kind: &str, tenant: Option<&str>) -> JobContext {
    JobContext::new(
        record(kind, tenant),
        WorkerId::new("test-worker"),
        Arc::new(InMemoryMemory::new()),
        CancellationToken::new(),
    )
}

/// A breaker on a manual clock that judges after `min` calls in a window of `min`.
fn breaker_config(clock: &Arc<ManualClock>, min: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig::default()
        .with_clock(clock.clone())
        .with_sliding_window(SlidingWindow::count(min))
        .with_minimum_calls(min)
        .with_failure_rate_threshold(50.0)
        .with_wait_in_open(Duration::from_secs(10))
        .with_permitted_calls_in_half_open(2)
}

fn fail_n(registry: &BreakerRegistry, key: &str, n: usize) {
    for _ in 0..n {
        registry.try_acquire(key).expect("let through").failure();
    }
}

/// A handler that counts its calls and fails while `failing` is set.
fn flaky(calls: Arc<AtomicUsize>, failing: Arc<AtomicBool>) -> Arc<dyn Handler> {
    handler_fn(move |_ctx: JobContext| {
        let calls = calls.clone();
        let failing = failing.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            if failing.load(Ordering::SeqCst) {
                Err(JobError::retryable("downstream answered 503").with_class("http_503"))
            } else {
                Ok(json!("ok"))
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// circuit breaker: transitions

#[test]
fn opens_on_failure_rate_only_after_minimum_calls() {
    let clock = Arc::new(ManualClock::default());
    let registry = BreakerRegistry::new(
        breaker_config(&clock, 4).with_sliding_window(SlidingWindow::count(10)),
    )
    .unwrap();
    // Three failures out of three: 100 %, but fewer than the minimum of four calls.
    fail_n(&registry, "k", 3);
    assert_eq!(registry.state("k"), BreakerState::Closed);
    let snap = registry.snapshot("k").unwrap();
    assert_eq!((snap.calls, snap.failures), (3, 3));
    // The fourth call, a success, makes 3 of 4 = 75 % ≥ 50 %: open.
    registry.try_acquire("k").unwrap().success();
    assert_eq!(registry.state("k"), BreakerState::Open);
    let snap = registry.snapshot("k").unwrap();
    assert_eq!(snap.failure_rate, Some(75.0));
    assert_eq!(snap.retry_after, Some(Duration::from_secs(10)));
    assert_eq!(snap.consecutive_opens, 1);
}

#[test]
fn stays_closed_under_the_threshold() {
    let clock = Arc::new(ManualClock::default());
    let registry = BreakerRegistry::new(breaker_config(&clock, 4)).unwrap();
    for i in 0..40 {
        let permit = registry.try_acquire("k").unwrap();
        // One failure in four: 25 %.
        if i % 4 == 0 {
            permit.failure();
        } else {
            permit.success();
        }
    }
    assert_eq!(registry.state("k"), BreakerState::Closed);
}

#[test]
fn opens_on_slow_call_rate() {
    let clock = Arc::new(ManualClock::default());
    let changes = Arc::new(parking_lot::Mutex::new(Vec::<StateChange>::new()));
    let seen = changes.clone();
    let registry = BreakerRegistry::new(
        breaker_config(&clock, 4)
            .with_slow_call_duration(Duration::from_secs(1))
            .with_slow_call_rate_threshold(50.0)
            .with_on_state_change(move |c| seen.lock().push(c.clone())),
    )
    .unwrap();
    for slow in [false, true, false] {
        let permit = registry.try_acquire("k").unwrap();
        if slow {
            clock.advance(Duration::from_secs(2));
        }
        permit.success();
    }
    assert_eq!(registry.state("k"), BreakerState::Closed);
    let permit = registry.try_acquire("k").unwrap();
    clock.advance(Duration::from_secs(1)); // exactly the slow-call duration counts as slow
    permit.success();
    assert_eq!(registry.state("k"), BreakerState::Open);
    let changes = changes.lock();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].to, BreakerState::Open);
    assert_eq!(changes[0].failure_rate, Some(0.0));
    assert_eq!(changes[0].slow_call_rate, Some(50.0));
}

#[test]
fn open_refuses_then_half_open_after_the_wait() {
    let clock = Arc::new(ManualClock::default());
    let registry = BreakerRegistry::new(breaker_config(&clock, 2)).unwrap();
    fail_n(&registry, "k", 2);
    clock.advance(Duration::from_secs(4));
    let refused = registry.try_acquire("k").unwrap_err();
    assert_eq!(refused.state, BreakerState::Open);
    assert_eq!(refused.retry_after, Duration::from_secs(6));
    clock.advance(Duration::from_secs(6));
    assert_eq!(registry.state("k"), BreakerState::HalfOpen);
    assert_eq!(registry.snapshot("k").unwrap().not_permitted, 1);
}

#[test]
fn half_open_probes_close_it() {
    let clock = Arc::new(ManualClock::default());
    let registry = BreakerRegistry::new(breaker_config(&clock, 2)).unwrap();
    fail_n(&registry, "k", 2);
    clock.advance(Duration::from_secs(10));
    let a = registry.try_acquire("k").unwrap();
    let b = registry.try_acquire("k").unwrap();
    assert!(a.is_probe() && b.is_probe());
    // Both permits are out: a third call is refused, with the half-open retry delay.
    let refused = registry.try_acquire("k").unwrap_err();
    assert_eq!(refused.state, BreakerState::HalfOpen);
    assert_eq!(refused.retry_after, Duration::from_secs(1));
    a.success();
    assert_eq!(
        registry.state("k"),
        BreakerState::HalfOpen,
        "waits for every probe"
    );
    b.success();
    assert_eq!(registry.state("k"), BreakerState::Closed);
    // Closed with a fresh window.
    let snap = registry.snapshot("k").unwrap();
    assert_eq!((snap.calls, snap.consecutive_opens), (0, 0));
}

#[test]
fn half_open_probe_failures_reopen_with_a_growing_wait() {
    let clock = Arc::new(ManualClock::default());
    let registry = BreakerRegistry::new(
        breaker_config(&clock, 2)
            .with_wait_in_open(Duration::from_secs(1))
            .with_open_backoff(2.0, Duration::from_secs(5))
            .with_permitted_calls_in_half_open(1),
    )
    .unwrap();
    fail_n(&registry, "k", 2);
    let mut waits = Vec::new();
    for _ in 0..5 {
        let snap = registry.snapshot("k").unwrap();
        assert_eq!(snap.state, BreakerState::Open);
        let wait = snap.retry_after.unwrap();
        waits.push(wait.as_secs());
        clock.advance(wait);
        registry.try_acquire("k").unwrap().failure();
    }
    assert_eq!(waits, [1, 2, 4, 5, 5]);
    // A successful probe closes it and resets the growth.
    clock.advance(Duration::from_secs(5));
    registry.try_acquire("k").unwrap().success();
    assert_eq!(registry.state("k"), BreakerState::Closed);
    fail_n(&registry, "k", 2);
    assert_eq!(
        registry.snapshot("k").unwrap().retry_after,
        Some(Duration::from_secs(1))
    );
}

#[test]
fn max_wait_in_half_open_reopens_when_probes_hang() {
    let clock = Arc::new(ManualClock::default());
    let registry = BreakerRegistry::new(
        breaker_config(&clock, 2)
            .with_permitted_calls_in_half_open(1)
            .with_max_wait_in_half_open(Duration::from_secs(30)),
    )
    .unwrap();
    fail_n(&registry, "k", 2);
    clock.advance(Duration::from_secs(10));
    let stuck = registry.try_acquire("k").unwrap();
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        registry.try_acquire("k").unwrap_err().state,
        BreakerState::HalfOpen
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        registry.try_acquire("k").unwrap_err().state,
        BreakerState::Open
    );
    // The stuck probe's late outcome belongs to the old half-open period: not counted.
    stuck.success();
    assert_eq!(registry.state("k"), BreakerState::Open);
}

#[test]
fn dropped_permit_is_recorded_as_ignored_by_default() {
    let clock = Arc::new(ManualClock::default());
    let registry = BreakerRegistry::new(breaker_config(&clock, 2)).unwrap();
    // Closed: a dropped permit is counted as dropped, not as a call.
    drop(registry.try_acquire("k").unwrap());
    let snap = registry.snapshot("k").unwrap();
    assert_eq!((snap.calls, snap.dropped), (0, 1));
    // Half-open: a dropped probe gives its permit back.
    fail_n(&registry, "k", 2);
    clock.advance(Duration::from_secs(10));
    let a = registry.try_acquire("k").unwrap();
    let b = registry.try_acquire("k").unwrap();
    assert!(registry.try_acquire("k").is_err());
    drop(a);
    let snap = registry.snapshot("k").unwrap();
    assert_eq!((snap.dropped, snap.probes_in_flight), (2, 1));
    let c = registry
        .try_acquire("k")
        .expect("the dropped probe's permit is free again");
    b.success();
    c.success();
    assert_eq!(registry.state("k"), BreakerState::Closed);
}

#[test]
fn dropped_permit_can_count_as_a_failure() {
    let clock = Arc::new(ManualClock::default());
    let registry =
        BreakerRegistry::new(breaker_config(&clock, 2).with_dropped_calls(DroppedCall::Failure))
            .unwrap();
    drop(registry.try_acquire("k").unwrap());
    drop(registry.try_acquire("k").unwrap());
    assert_eq!(registry.state("k"), BreakerState::Open);
    assert_eq!(registry.snapshot("k").unwrap().dropped, 2);
}

#[test]
fn outcome_of_a_call_let_through_before_opening_is_not_counted_after() {
    let clock = Arc::new(ManualClock::default());
    let registry = BreakerRegistry::new(breaker_config(&clock, 2)).unwrap();
    let late = registry.try_acquire("k").unwrap();
    fail_n(&registry, "k", 2);
    assert_eq!(registry.state("k"), BreakerState::Open);
    clock.advance(Duration::from_secs(10));
    assert_eq!(registry.state("k"), BreakerState::HalfOpen);
    // A success from the closed era must not count as a half-open probe.
    late.success();
    let snap = registry.snapshot("k").unwrap();
    assert_eq!((snap.state, snap.calls), (BreakerState::HalfOpen, 0));
}

#[test]
fn time_window_forgets_old_failures() {
    let clock = Arc::new(ManualClock::default());
    let registry = BreakerRegistry::new(breaker_config(&clock, 3).with_sliding_window(
        SlidingWindow::Time {
            window: Duration::from_secs(10),
            buckets: 10,
        },
    ))
    .unwrap();
    fail_n(&registry, "k", 2);
    clock.advance(Duration::from_secs(11));
    // The two old failures have left the window: one more is 1 of 1 call, under the minimum.
    fail_n(&registry, "k", 1);
    assert_eq!(registry.state("k"), BreakerState::Closed);
    fail_n(&registry, "k", 2);
    assert_eq!(registry.state("k"), BreakerState::Open);
}

#[test]
fn breakers_are_isolated_per_key_and_can_be_reset() {
    let clock = Arc::new(ManualClock::default());
    let registry = BreakerRegistry::new(breaker_config(&clock, 2)).unwrap();
    fail_n(&registry, "a", 2);
    registry.try_acquire("b").unwrap().success();
    assert_eq!(registry.state("a"), BreakerState::Open);
    assert_eq!(registry.state("b"), BreakerState::Closed);
    assert_eq!(registry.state("never-seen"), BreakerState::Closed);
    let all = registry.snapshot_all();
    let keys: Vec<&str> = all.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    assert!(registry.reset("a"));
    assert_eq!(registry.state("a"), BreakerState::Closed);
    assert!(!registry.reset("never-seen"));
}

// ---------------------------------------------------------------------------------------------
// circuit breaker around a handler

#[tokio::test]
async fn open_breaker_defers_without_calling_the_handler() {
    let clock = Arc::new(ManualClock::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(true));
    let layer = CircuitBreakerLayer::new(breaker_config(&clock, 3)).unwrap();
    let handler = flaky(calls.clone(), failing.clone()).layer(layer.clone());
    let job = ctx("email", None);
    for _ in 0..3 {
        let err = handler.handle(&job).await.unwrap_err();
        assert_eq!(err.class(), "http_503");
    }
    assert_eq!(layer.registry().state("email"), BreakerState::Open);
    clock.advance(Duration::from_secs(3));
    let err = handler.handle(&job).await.unwrap_err();
    assert_eq!(err.class(), "circuit_open");
    assert_eq!(err.defer_for(), Some(Duration::from_secs(7)));
    assert!(err.message().contains("circuit open for email"), "{err}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "the handler was not called"
    );
    // After the wait, probes run the handler again and close the breaker.
    failing.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(7));
    for _ in 0..2 {
        assert_eq!(handler.handle(&job).await.unwrap(), json!("ok"));
    }
    assert_eq!(layer.registry().state("email"), BreakerState::Closed);
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn only_retryable_errors_and_timeouts_count_by_default() {
    let clock = Arc::new(ManualClock::default());
    let layer = CircuitBreakerLayer::new(breaker_config(&clock, 2)).unwrap();
    let answers = Arc::new(parking_lot::Mutex::new(vec![
        JobError::permanent("no such user"),
        JobError::defer(Duration::from_secs(1), "not now"),
        JobError::cancelled("stop"),
        JobError::permanent("bad payload").with_class("decode"),
    ]));
    let given = answers.clone();
    let handler = handler_fn(move |_ctx: JobContext| {
        let next = given.lock().pop();
        async move { Err::<Value, _>(next.unwrap_or_else(|| JobError::retryable("503"))) }
    })
    .layer(layer.clone());
    let job = ctx("k", None);
    for _ in 0..4 {
        handler.handle(&job).await.unwrap_err();
    }
    assert_eq!(layer.registry().state("k"), BreakerState::Closed);
    assert_eq!(layer.registry().snapshot("k").unwrap().calls, 0);
    // A classifier of your own: permanent errors count too.
    let strict = CircuitBreakerLayer::new(breaker_config(&clock, 2).with_error_classifier(
        |e: &JobError| match e.kind() {
            jobforge::JobErrorKind::Permanent | jobforge::JobErrorKind::Retryable => {
                CallOutcome::Failure
            }
            _ => CallOutcome::Ignored,
        },
    ))
    .unwrap();
    let handler = handler_fn(|_ctx: JobContext| async {
        Err::<Value, _>(JobError::permanent("no such user"))
    })
    .layer(strict.clone());
    for _ in 0..2 {
        handler.handle(&job).await.unwrap_err();
    }
    assert_eq!(strict.registry().state("k"), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_inside_the_breaker_counts_as_a_failure() {
    let clock = Arc::new(ManualClock::default());
    let layer = CircuitBreakerLayer::new(breaker_config(&clock, 2)).unwrap();
    let handler = handler_fn(|_ctx: JobContext| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(Value::Null)
    })
    .layer(TimeoutLayer::new(Duration::from_millis(100)))
    .layer(layer.clone());
    let job = ctx("slow", None);
    for _ in 0..2 {
        let err = handler.handle(&job).await.unwrap_err();
        assert_eq!(err.class(), "timeout");
        assert!(err.is_retryable());
    }
    assert_eq!(layer.registry().state("slow"), BreakerState::Open);
}

#[tokio::test]
async fn a_cancelled_call_drops_its_permit_and_is_recorded() {
    let clock = Arc::new(ManualClock::default());
    let layer = CircuitBreakerLayer::new(breaker_config(&clock, 2)).unwrap();
    let handler = Arc::new(
        handler_fn(|_ctx: JobContext| async {
            std::future::pending::<()>().await;
            Ok(Value::Null)
        })
        .layer(layer.clone()),
    );
    let job = ctx("hang", None);
    let task = {
        let handler = handler.clone();
        tokio::spawn(async move { handler.handle(&job).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    task.abort();
    let _ = task.await;
    let snap = layer.registry().snapshot("hang").unwrap();
    assert_eq!((snap.dropped, snap.calls), (1, 0));
    assert_eq!(snap.state, BreakerState::Closed);
}

#[tokio::test]
async fn breakers_keyed_per_tenant_are_isolated() {
    let clock = Arc::new(ManualClock::default());
    let layer =
        CircuitBreakerLayer::new(breaker_config(&clock, 2).with_key(KeyBy::tenant())).unwrap();
    let handler = handler_fn(|ctx: JobContext| async move {
        if ctx.record().tenant.as_deref() == Some("acme") {
            Err(JobError::retryable("acme's endpoint is down"))
        } else {
            Ok(json!("ok"))
        }
    })
    .layer(layer.clone());
    let acme = ctx("webhook", Some("acme"));
    let globex = ctx("webhook", Some("globex"));
    for _ in 0..2 {
        handler.handle(&acme).await.unwrap_err();
    }
    assert_eq!(
        handler.handle(&acme).await.unwrap_err().class(),
        "circuit_open"
    );
    assert_eq!(handler.handle(&globex).await.unwrap(), json!("ok"));
    assert_eq!(layer.registry().state("acme"), BreakerState::Open);
    assert_eq!(layer.registry().state("globex"), BreakerState::Closed);
    // Keys of your own, borrowed from the job.
    let by_queue = KeyBy::custom(|ctx| Cow::Borrowed(ctx.record().queue.as_str()));
    assert_eq!(by_queue.key(&acme), "default");
    assert_eq!(KeyBy::kind_and_tenant().key(&acme), "webhook/acme");
    assert_eq!(KeyBy::tenant().key(&ctx("x", None)), KeyBy::NO_TENANT);
}

mod half_open_proptest {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Acquire,
        Finish(usize, u8),
        Advance(u64),
        Trip,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Acquire),
            4 => (any::<usize>(), 0u8..4).prop_map(|(i, how)| Op::Finish(i, how)),
            1 => (0u64..3_000).prop_map(Op::Advance),
            1 => Just(Op::Trip),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// However acquisitions and outcomes interleave, a half-open breaker never has more
        /// than the permitted probes out, nor lets more through in one half-open period than
        /// the permitted count plus the probes given back (ignored or dropped).
        #[test]
        fn half_open_never_lets_more_than_the_permitted_calls_through(
            permitted in 1u32..5,
            ops in prop::collection::vec(op(), 1..200),
        ) {
            let clock = Arc::new(ManualClock::default());
            let registry = BreakerRegistry::new(
                CircuitBreakerConfig::default()
                    .with_clock(clock.clone())
                    .with_sliding_window(SlidingWindow::count(2))
                    .with_minimum_calls(2)
                    .with_wait_in_open(Duration::from_secs(1))
                    .with_permitted_calls_in_half_open(permitted),
            ).unwrap();
            let mut permits: Vec<(u64, jobforge::safety::Permit)> = Vec::new();
            let mut period = 0u64;
            let mut granted = 0u32;
            let mut given_back = 0u32;
            let mut last = BreakerState::Closed;
            for op in ops {
                let state = registry.state("k");
                if state == BreakerState::HalfOpen && last != BreakerState::HalfOpen {
                    period += 1;
                    granted = 0;
                    given_back = 0;
                }
                last = state;
                match op {
                    Op::Acquire => {
                        if let Ok(permit) = registry.try_acquire("k") {
                            if permit.is_probe() {
                                prop_assert_eq!(state, BreakerState::HalfOpen);
                                granted += 1;
                            }
                            permits.push((period, permit));
                        }
                    }
                    Op::Finish(i, how) => {
                        if !permits.is_empty() {
                            let (p, permit) = permits.swap_remove(i % permits.len());
                            let probe_now = permit.is_probe() && p == period;
                            match how {
                                0 => permit.success(),
                                1 => permit.failure(),
                                2 => { if probe_now { given_back += 1; } permit.ignore() }
                                _ => { if probe_now { given_back += 1; } drop(permit) }
                            }
                        }
                    }
                    Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                    Op::Trip => {
                        if state == BreakerState::Closed {
                            for _ in 0..2 {
                                if let Ok(p) = registry.try_acquire("k") { p.failure() }
                            }
                        }
                    }
                }
                let Some(snap) = registry.snapshot("k") else { continue };
                if snap.state == BreakerState::HalfOpen && last == BreakerState::HalfOpen {
                    let out = permits.iter().filter(|(p, permit)| *p == period && permit.is_probe()).count();
                    prop_assert!(out <= permitted as usize, "{out} probes out of {permitted}");
                    prop_assert!(snap.probes_in_flight <= permitted);
                    prop_assert!(granted - given_back <= permitted,
                        "{granted} granted, {given_back} given back, {permitted} permitted");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// rate limit and bulkhead under concurrent load

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_under_concurrent_load() {
    let calls = Arc::new(AtomicUsize::new(0));
    let deferred = Arc::new(AtomicUsize::new(0));
    let layer = RateLimitLayer::new(RateLimitConfig::per_second(20).with_burst(5)).unwrap();
    let counted = calls.clone();
    let handler = Arc::new(
        handler_fn(move |_ctx: JobContext| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(Value::Null)
            }
        })
        .layer(layer.clone()),
    );
    let window = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let handler = handler.clone();
        let deferred = deferred.clone();
        tasks.push(tokio::spawn(async move {
            let job = ctx("sms", None);
            while started.elapsed() < window {
                match handler.handle(&job).await {
                    Ok(_) => {}
                    Err(err) => {
                        assert_eq!(err.class(), "rate_limited");
                        assert!(err.defer_for().unwrap() > Duration::ZERO);
                        deferred.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let allowed = calls.load(Ordering::SeqCst);
    // GCRA: the burst, then one call every 50 ms.
    let ceiling = 5 + (elapsed.as_secs_f64() * 20.0).ceil() as usize + 1;
    assert!(allowed >= 5, "the burst goes through: {allowed}");
    assert!(
        allowed <= ceiling,
        "{allowed} calls in {elapsed:?}, limit {ceiling}"
    );
    assert!(deferred.load(Ordering::Relaxed) > 0);
    // Another key has its own allowance.
    let per_tenant =
        RateLimitLayer::new(RateLimitConfig::per_minute(1).with_key(KeyBy::tenant())).unwrap();
    let handler = handler_fn(|_ctx: JobContext| async { Ok(Value::Null) }).layer(per_tenant);
    assert!(handler.handle(&ctx("sms", Some("a"))).await.is_ok());
    assert!(handler.handle(&ctx("sms", Some("b"))).await.is_ok());
    let err = handler.handle(&ctx("sms", Some("a"))).await.unwrap_err();
    assert_eq!(err.class(), "rate_limited");
    assert!(err.defer_for().unwrap() > Duration::from_secs(50));
}

#[test]
fn refused_calls_get_successive_slots_and_stale_keys_are_dropped() {
    let limiter = RateLimiter::new(RateLimitConfig::per_second(10).with_burst(1)).unwrap();
    assert!(limiter.check("a").is_ok());
    let waits: Vec<Duration> = (0..5).map(|_| limiter.check("a").unwrap_err()).collect();
    // The first refusal waits for the next cell (100 ms); each next one a cell later, so the
    // refused callers come back one by one instead of all together.
    // (Bounds leave room for a busy machine pausing the test between two calls.)
    assert!(waits[0] <= Duration::from_millis(100), "{waits:?}");
    assert!(waits[0] >= Duration::from_millis(50), "{waits:?}");
    for pair in waits.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(50) && gap <= Duration::from_millis(100),
            "{waits:?}"
        );
    }
    assert!(
        limiter.check("b").is_ok(),
        "another key has its own allowance"
    );
    assert_eq!(limiter.len(), 2);
    // Keys indistinguishable from fresh ones are dropped: memory follows the keys in use.
    let fast = RateLimiter::new(RateLimitConfig::per_second(1000).with_burst(1)).unwrap();
    for i in 0..100 {
        let _ = fast.check(&format!("tenant-{i}"));
    }
    assert_eq!(fast.len(), 100);
    std::thread::sleep(Duration::from_millis(20));
    fast.retain_recent();
    assert!(fast.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulkhead_caps_concurrency_under_load() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let layer =
        BulkheadLayer::new(BulkheadConfig::new(3).with_max_wait(Duration::from_secs(10))).unwrap();
    let (r, p, d) = (running.clone(), peak.clone(), done.clone());
    let handler = Arc::new(
        handler_fn(move |_ctx: JobContext| {
            let (running, peak, done) = (r.clone(), p.clone(), d.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                Ok(Value::Null)
            }
        })
        .layer(layer.clone()),
    );
    let tasks: Vec<_> = (0..60)
        .map(|_| {
            let handler = handler.clone();
            tokio::spawn(async move { handler.handle(&ctx("resize", None)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 60, "all waited for a place");
    let peak = peak.load(Ordering::SeqCst);
    assert!((1..=3).contains(&peak), "peak concurrency {peak}");
    assert_eq!(layer.registry().in_flight("resize"), 0);

    // Without waiting, a full bulkhead defers.
    let layer =
        BulkheadLayer::new(BulkheadConfig::new(2).with_retry_after(Duration::from_millis(300)))
            .unwrap();
    let gate = Arc::new(tokio::sync::Notify::new());
    let wait_on = gate.clone();
    let handler = Arc::new(
        handler_fn(move |_ctx: JobContext| {
            let gate = wait_on.clone();
            async move {
                gate.notified().await;
                Ok(Value::Null)
            }
        })
        .layer(layer.clone()),
    );
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let handler = handler.clone();
            tokio::spawn(async move { handler.handle(&ctx("resize", None)).await })
        })
        .collect();
    while layer.registry().in_flight("resize") < 2 {
        tokio::task::yield_now().await;
    }
    let err = handler.handle(&ctx("resize", None)).await.unwrap_err();
    assert_eq!(err.class(), "bulkhead_full");
    assert_eq!(err.defer_for(), Some(Duration::from_millis(300)));
    // Another key is not affected.
    assert_eq!(layer.registry().in_flight("other"), 0);
    gate.notify_waiters();
    for h in holders {
        h.await.unwrap().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// backends

/// A queue that fails (or hangs) on demand and counts the calls that reach it.
struct FlakyQueue {
    inner: InMemoryQueue,
    down: AtomicBool,
    hang: AtomicBool,
    calls: AtomicUsize,
}

impl FlakyQueue {
    fn new() -> Self {
        Self {
            inner: InMemoryQueue::new(),
            down: AtomicBool::new(false),
            hang: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
        }
    }

    async fn gate(&self) -> jobforge::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(jobforge::Error::backend(
                "queue unreachable",
                std::io::Error::other("connection refused"),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl QueueManager for FlakyQueue {
    async fn enqueue(&self, jobs: &[Envelope]) -> jobforge::Result<()> {
        self.gate().await?;
        self.inner.enqueue(jobs).await
    }
    async fn reserve(&self, req: &Reserve<'_>) -> jobforge::Result<Vec<Lease>> {
        self.gate().await?;
        self.inner.reserve(req).await
    }
    async fn extend(&self, leases: &[Lease], lease: Duration) -> jobforge::Result<Vec<bool>> {
        self.gate().await?;
        self.inner.extend(leases, lease).await
    }
    async fn ack(&self, leases: &[Lease]) -> jobforge::Result<()> {
        self.gate().await?;
        self.inner.ack(leases).await
    }
    async fn requeue(&self, items: &[Requeue]) -> jobforge::Result<()> {
        self.gate().await?;
        self.inner.requeue(items).await
    }
    async fn dead_letter(&self, items: &[DeadLetter]) -> jobforge::Result<()> {
        self.gate().await?;
        self.inner.dead_letter(items).await
    }
    async fn stats(&self) -> jobforge::Result<QueueStats> {
        self.gate().await?;
        self.inner.stats().await
    }
}

#[tokio::test]
async fn a_failing_backend_fails_fast_behind_a_breaker() {
    let clock = Arc::new(ManualClock::default());
    let layer = CircuitBreakerLayer::new(breaker_config(&clock, 3)).unwrap();
    let flaky = Arc::new(FlakyQueue::new());
    let queue = layer.layer(ArcQueue(flaky.clone()));
    flaky.down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(queue.stats().await.unwrap_err().kind(), ErrorKind::Backend);
    }
    assert_eq!(layer.registry().state("queue backend"), BreakerState::Open);
    let err = queue.stats().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.is_retryable());
    assert!(
        err.message()
            .contains("circuit open for queue backend, retry after"),
        "{err}"
    );
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3, "failed fast");
    // Back up: after the wait, probes go through and close it.
    flaky.down.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(10));
    queue.stats().await.unwrap();
    queue.ping().await.unwrap();
    assert_eq!(
        layer.registry().state("queue backend"),
        BreakerState::Closed
    );
}

#[tokio::test(start_paused = true)]
async fn backend_timeouts_are_timeout_errors_and_reserve_keeps_its_long_poll() {
    let flaky = Arc::new(FlakyQueue::new());
    let queue = TimeoutLayer::new(Duration::from_millis(100)).layer(ArcQueue(flaky.clone()));
    // An empty reserve waiting 500 ms is a long poll, not a timeout.
    let worker = WorkerId::new("w");
    let queues = vec!["default".to_owned()];
    let req = Reserve {
        worker: &worker,
        queues: &queues,
        max: 10,
        lease: Duration::from_secs(30),
        wait: Duration::from_millis(500),
    };
    assert!(queue.reserve(&req).await.unwrap().is_empty());
    flaky.hang.store(true, Ordering::SeqCst);
    let err = queue.stats().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.message().contains("queue stats"), "{err}");
}

/// `Arc<FlakyQueue>` as a queue, so the test keeps a handle on the switches.
struct ArcQueue(Arc<FlakyQueue>);

#[async_trait]
impl QueueManager for ArcQueue {
    async fn enqueue(&self, jobs: &[Envelope]) -> jobforge::Result<()> {
        self.0.enqueue(jobs).await
    }
    async fn reserve(&self, req: &Reserve<'_>) -> jobforge::Result<Vec<Lease>> {
        self.0.reserve(req).await
    }
    async fn extend(&self, leases: &[Lease], lease: Duration) -> jobforge::Result<Vec<bool>> {
        self.0.extend(leases, lease).await
    }
    async fn ack(&self, leases: &[Lease]) -> jobforge::Result<()> {
        self.0.ack(leases).await
    }
    async fn requeue(&self, items: &[Requeue]) -> jobforge::Result<()> {
        self.0.requeue(items).await
    }
    async fn dead_letter(&self, items: &[DeadLetter]) -> jobforge::Result<()> {
        self.0.dead_letter(items).await
    }
    async fn stats(&self) -> jobforge::Result<QueueStats> {
        self.0.stats().await
    }
}

// ---------------------------------------------------------------------------------------------
// end to end through the orchestrator

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_breaker_defers_jobs_without_spending_attempts() {
    let calls = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(true));
    let breaker = CircuitBreakerLayer::new(
        CircuitBreakerConfig::default()
            .with_sliding_window(SlidingWindow::count(4))
            .with_minimum_calls(4)
            .with_wait_in_open(Duration::from_millis(800))
            .with_permitted_calls_in_half_open(1),
    )
    .unwrap();
    let handler = flaky(calls.clone(), failing.clone()).layer(breaker.clone());
    let orchestrator = Orchestrator::builder()
        .kind(
            "k",
            KindConfig::new(handler)
                .retry(RetryPolicy::new(3).with_base(Duration::from_millis(10))),
        )
        .build()
        .unwrap();
    let workers = orchestrator
        .start_workers(WorkerConfig::default().poll_wait(Duration::from_millis(50)))
        .unwrap();
    // Four failing jobs with one attempt each trip the breaker.
    let mut trips = Vec::new();
    for _ in 0..4 {
        trips.push(
            orchestrator
                .submit(NewJob::new("k").max_attempts(1))
                .await
                .unwrap()
                .id,
        );
    }
    for id in trips {
        let done = orchestrator
            .wait_for(id, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(done.state, JobState::Dead);
    }
    assert_eq!(breaker.registry().state("k"), BreakerState::Open);
    // The downstream recovers; a job submitted while the breaker is open is deferred, not
    // failed, and succeeds once a probe has closed the breaker.
    failing.store(false, Ordering::SeqCst);
    let id = orchestrator.submit(NewJob::new("k")).await.unwrap().id;
    let done = orchestrator
        .wait_for(id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.attempt, 1, "deferrals spend no attempt");
    let events = orchestrator.events(id).await.unwrap();
    let deferrals: Vec<_> = events
        .iter()
        .filter(|e| {
            e.to == JobState::Queued
                && e.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("circuit_open"))
        })
        .collect();
    assert!(!deferrals.is_empty(), "deferred while open: {events:#?}");
    assert!(deferrals.iter().all(|e| e.attempt == 0));
    assert!(
        events
            .iter()
            .filter(|e| e.to == JobState::Running)
            .all(|e| e.attempt == 1)
    );
    assert_eq!(breaker.registry().state("k"), BreakerState::Closed);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "deferred runs never reached the handler"
    );
    workers.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_jobs_are_deferred_without_spending_attempts() {
    let calls = Arc::new(AtomicUsize::new(0));
    let limit = RateLimitLayer::new(RateLimitConfig::per_second(4).with_burst(1)).unwrap();
    let handler = flaky(calls.clone(), Arc::new(AtomicBool::new(false))).layer(limit);
    let orchestrator = Orchestrator::builder()
        .kind("sms", KindConfig::new(handler))
        .build()
        .unwrap();
    let workers = orchestrator
        .start_workers(WorkerConfig::default().poll_wait(Duration::from_millis(50)))
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(orchestrator.submit(NewJob::new("sms")).await.unwrap().id);
    }
    let mut limited = 0;
    for id in ids {
        let done = orchestrator
            .wait_for(id, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(done.state, JobState::Succeeded);
        assert_eq!(done.attempt, 1);
        limited += orchestrator
            .events(id)
            .await
            .unwrap()
            .iter()
            .filter(|e| {
                e.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("rate_limited"))
            })
            .count();
    }
    assert!(
        limited >= 3,
        "most were rate limited at least once: {limited}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    workers.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_recover_when_a_broken_backend_returns() {
    let flaky = Arc::new(FlakyQueue::new());
    let breaker = CircuitBreakerLayer::new(
        CircuitBreakerConfig::default()
            .with_sliding_window(SlidingWindow::count(3))
            .with_minimum_calls(3)
            .with_wait_in_open(Duration::from_millis(300))
            .with_permitted_calls_in_half_open(1),
    )
    .unwrap();
    let deadline = TimeoutLayer::new(Duration::from_secs(2));
    let queue = breaker.layer(deadline.layer(ArcQueue(flaky.clone())));
    // The state store goes through the same layers (its own breaker key); it stays healthy.
    let state = breaker.layer(deadline.layer(jobforge::state::InMemoryState::new()));
    let orchestrator = Orchestrator::builder()
        .queue(Arc::new(queue))
        .state(Arc::new(state))
        .handler("k", |_ctx: JobContext| async { Ok(json!("done")) })
        .build()
        .unwrap();
    flaky.down.store(true, Ordering::SeqCst);
    let workers = orchestrator
        .start_workers(WorkerConfig::default().poll_wait(Duration::from_millis(50)))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_ne!(
        breaker.registry().state("queue backend"),
        BreakerState::Closed
    );
    let reached = flaky.calls.load(Ordering::SeqCst);
    assert!(
        reached < 20,
        "the open breaker spared the backend: {reached} calls"
    );
    flaky.down.store(false, Ordering::SeqCst);
    // Submitting may meet the open breaker; retry like a client would.
    let id = loop {
        match orchestrator.submit(NewJob::new("k")).await {
            Ok(s) => break s.id,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Backend);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let done = orchestrator
        .wait_for(id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(
        breaker.registry().state("queue backend"),
        BreakerState::Closed
    );
    assert_eq!(
        breaker.registry().state("state backend"),
        BreakerState::Closed
    );
    assert!(breaker.registry().snapshot("state backend").unwrap().calls > 0);
    workers.shutdown(Duration::from_secs(5)).await;
}
