//! The built-in strategies: unit behaviour through `Strategy::run` with a fake `Memory`, and
//! end to end through the `Orchestrator` (selection per job, per kind, by default).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use jobforge::memory::{
    Entry, EntryQuery, ExecutionRecord, Memory, NewEntry, Recommendation, Reflection,
    StrategyChoice, Window,
};
use jobforge::strategy::{Adaptive, AdaptivePlan, Direct, Fallback, Hedged, InlineRetry, Outcome};
use jobforge::{
    Error, ErrorKind, Handler, JobContext, JobError, JobId, JobOrchestrator, JobRecord, JobState,
    KindConfig, NewJob, Orchestrator, RetryPolicy, Strategy, WorkerConfig, WorkerId, handler_fn,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// A fake memory: fixed reflections, counted `reflect` calls, kept execution records.

#[derive(Default)]
struct FakeMemory {
    reflections: Mutex<HashMap<String, Reflection>>,
    reflects: AtomicUsize,
    records: Mutex<Vec<ExecutionRecord>>,
    /// Entries are kept for real (adaptive records its decision changes there).
    entries: jobforge::memory::InMemoryMemory,
}

impl FakeMemory {
    fn with(reflection: Reflection) -> Arc<Self> {
        let memory = Self::default();
        memory
            .reflections
            .lock()
            .insert(reflection.kind.clone(), reflection);
        Arc::new(memory)
    }

    fn reflects(&self) -> usize {
        self.reflects.load(Ordering::SeqCst)
    }
}

fn unsupported() -> Error {
    Error::new(ErrorKind::Configuration, "fake memory keeps no entries")
}

#[async_trait]
impl Memory for FakeMemory {
    async fn put(&self, entry: NewEntry) -> jobforge::Result<Entry> {
        self.entries.put(entry).await
    }
    async fn get(&self, ns: &str, key: &str) -> jobforge::Result<Option<Entry>> {
        self.entries.get(ns, key).await
    }
    async fn update(
        &self,
        _ns: &str,
        _key: &str,
        _value: Value,
        _expected: Option<u64>,
    ) -> jobforge::Result<Entry> {
        Err(unsupported())
    }
    async fn delete(&self, _ns: &str, _key: &str) -> jobforge::Result<bool> {
        Ok(false)
    }
    async fn search(&self, _query: &EntryQuery) -> jobforge::Result<Vec<Entry>> {
        Ok(Vec::new())
    }
    async fn record(&self, runs: &[ExecutionRecord]) -> jobforge::Result<()> {
        self.records.lock().extend_from_slice(runs);
        Ok(())
    }
    async fn reflect(&self, kind: &str, _window: Window) -> jobforge::Result<Reflection> {
        self.reflects.fetch_add(1, Ordering::SeqCst);
        Ok(self
            .reflections
            .lock()
            .get(kind)
            .cloned()
            .unwrap_or_else(|| reflection(kind, 0, recommend(StrategyChoice::Direct, false))))
    }
}

fn recommend(strategy: StrategyChoice, confident: bool) -> Recommendation {
    Recommendation {
        strategy,
        timeout: None,
        max_attempts: 3,
        inline_retries: 0,
        hedge_delay: None,
        confident,
        rationale: "fixed by the test".to_owned(),
        no_retry_classes: Vec::new(),
    }
}

fn reflection(kind: &str, count: u64, recommendation: Recommendation) -> Reflection {
    Reflection {
        kind: kind.to_owned(),
        count,
        succeeded: count,
        retried: 0,
        failed: 0,
        deferred: 0,
        cancelled: 0,
        success_rate: (count > 0).then_some(1.0),
        deferred_rate: (count > 0).then_some(0.0),
        p50: None,
        p90: None,
        p95: None,
        p99: None,
        retry_rescue_rate: None,
        transient_rescue_rate: None,
        top_errors: Vec::new(),
        recommendation,
    }
}

fn ctx_with(kind: &str, memory: Arc<dyn Memory>, idempotent: bool) -> JobContext {
    JobContext::new(
        JobRecord::from_job(NewJob::new(kind)),
        WorkerId::new("w"),
        memory,
        CancellationToken::new(),
    )
    .with_idempotent(idempotent)
}

fn ctx(kind: &str) -> JobContext {
    ctx_with(kind, Arc::new(FakeMemory::default()), false)
}

/// A handler whose n-th call (1-based) does what `script(n, ctx)` says; counts calls.
struct Scripted<F> {
    calls: Arc<AtomicUsize>,
    script: F,
}

fn scripted<F, Fut>(script: F) -> (Arc<dyn Handler>, Arc<AtomicUsize>)
where
    F: Fn(usize, JobContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, JobError>> + Send + 'static,
{
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = Scripted {
        calls: Arc::clone(&calls),
        script,
    };
    (Arc::new(handler), calls)
}

#[async_trait]
impl<F, Fut> Handler for Scripted<F>
where
    F: Fn(usize, JobContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, JobError>> + Send + 'static,
{
    async fn handle(&self, ctx: &JobContext) -> Result<Value, JobError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        (self.script)(n, ctx.clone()).await
    }
}

fn decision(ctx: &JobContext) -> String {
    ctx.decision().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// InlineRetry

#[tokio::test]
async fn inline_retry_retries_retryable_errors_until_success() {
    let (handler, calls) = scripted(|n, _| async move {
        if n < 3 {
            Err(JobError::retryable(format!("blip {n}")))
        } else {
            Ok(json!("ok"))
        }
    });
    let strategy = InlineRetry::new(5)
        .with_delay(Duration::from_millis(1))
        .with_jitter(Duration::ZERO);
    let ctx = ctx("k");
    let outcome = strategy.run(&ctx, handler.as_ref()).await;
    assert_eq!(outcome, Outcome::Succeeded(json!("ok")));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(ctx.inline_retries(), 2);
    assert!(
        decision(&ctx).contains("2 of 5 inline retries used"),
        "{}",
        decision(&ctx)
    );
}

#[tokio::test]
async fn inline_retry_hands_the_last_retry_to_the_queue_after_n_retries() {
    let (handler, calls) =
        scripted(
            |n, _| async move { Err(JobError::retryable(format!("blip {n}")).with_class("blip")) },
        );
    let ctx = ctx("k");
    let strategy = InlineRetry::new(2)
        .with_delay(Duration::ZERO)
        .with_jitter(Duration::ZERO);
    let outcome = strategy.run(&ctx, handler.as_ref()).await;
    match outcome {
        Outcome::Retry { error, after } => {
            assert_eq!(error.message(), "blip 3");
            assert_eq!(error.class(), "blip");
            assert_eq!(after, None);
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "1 call + 2 retries");
    assert_eq!(ctx.inline_retries(), 2);
}

#[tokio::test]
async fn inline_retry_does_not_retry_other_outcomes() {
    for (error, expect_class) in [
        (JobError::permanent("bad input"), "error"),
        (JobError::defer(Duration::from_secs(1), "later"), "deferred"),
        (JobError::cancelled("stop"), "cancelled"),
        (
            JobError::retryable("rate limited").retry_after(Duration::from_secs(30)),
            "error",
        ),
    ] {
        let (handler, calls) = scripted(move |_, _| {
            let error = error.clone();
            async move { Err(error) }
        });
        let ctx = ctx("k");
        let outcome = InlineRetry::new(3).run(&ctx, handler.as_ref()).await;
        assert_eq!(outcome.error_class(), Some(expect_class));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "{outcome:?} is not retried inline"
        );
        assert_eq!(ctx.inline_retries(), 0);
    }
}

#[tokio::test]
async fn inline_retry_stops_when_the_job_is_cancelled() {
    let (handler, calls) = scripted(|_, ctx: JobContext| async move {
        ctx.cancellation_token().cancel();
        Err(JobError::retryable("blip"))
    });
    let ctx = ctx("k");
    let outcome = InlineRetry::new(5).run(&ctx, handler.as_ref()).await;
    assert!(matches!(outcome, Outcome::Retry { .. }));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(ctx.inline_retries(), 0);
}

#[tokio::test(start_paused = true)]
async fn inline_retry_cancellation_interrupts_the_pause() {
    let (handler, calls) = scripted(|_, _| async { Err(JobError::retryable("blip")) });
    let strategy = InlineRetry::new(5).with_delay(Duration::from_secs(60));
    let ctx = ctx("k");
    let token = ctx.cancellation_token().clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        token.cancel();
    });
    let started = tokio::time::Instant::now();
    let outcome = strategy.run(&ctx, handler.as_ref()).await;
    assert!(matches!(outcome, Outcome::Retry { .. }));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// Fallback

fn logging(
    log: &Arc<Mutex<Vec<&'static str>>>,
    name: &'static str,
    result: Result<Value, JobError>,
) -> Arc<dyn Handler> {
    let log = Arc::clone(log);
    handler_fn(move |_ctx: JobContext| {
        log.lock().push(name);
        let result = result.clone();
        async move { result }
    })
}

#[tokio::test]
async fn fallback_tries_primary_then_alternates_in_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let primary = logging(&log, "primary", Err(JobError::retryable("A down")));
    let alt1 = logging(&log, "alt1", Err(JobError::permanent("B refuses")));
    let alt2 = logging(&log, "alt2", Ok(json!("C")));
    let alt3 = logging(&log, "alt3", Ok(json!("D")));
    let strategy = Fallback::new().alternates("k", vec![alt1, alt2, alt3]);
    let ctx = ctx("k");
    let outcome = strategy.run(&ctx, primary.as_ref()).await;
    assert_eq!(outcome, Outcome::Succeeded(json!("C")));
    assert_eq!(
        *log.lock(),
        vec!["primary", "alt1", "alt2"],
        "stops at the first success"
    );
    let d = decision(&ctx);
    assert!(d.contains("alternate 2 succeeded"), "{d}");
    assert!(d.contains("primary failed: retryable error"), "{d}");
}

#[tokio::test]
async fn fallback_stops_at_a_successful_primary_and_ignores_other_kinds() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let primary = logging(&log, "primary", Ok(json!(1)));
    let alt = logging(&log, "alt", Ok(json!(2)));
    let strategy = Fallback::new().alternates("k", vec![alt]);
    let ctx = ctx("k");
    assert_eq!(
        strategy.run(&ctx, primary.as_ref()).await,
        Outcome::Succeeded(json!(1))
    );
    assert!(decision(&ctx).contains("primary succeeded"));
    // A kind without alternates runs once.
    let failing = logging(&log, "other", Err(JobError::permanent("no")));
    let other = ctx_with("other", Arc::new(FakeMemory::default()), false);
    assert!(matches!(
        strategy.run(&other, failing.as_ref()).await,
        Outcome::Failed(_)
    ));
    assert_eq!(*log.lock(), vec!["primary", "other"]);
    assert!(decision(&other).contains("no alternates"));
}

#[tokio::test]
async fn fallback_when_everything_fails_prefers_a_retry() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let primary = logging(
        &log,
        "primary",
        Err(JobError::retryable("A down").with_class("a")),
    );
    let alt = logging(
        &log,
        "alt",
        Err(JobError::permanent("B refuses").with_class("b")),
    );
    let strategy = Fallback::new().alternates("k", vec![alt]);
    let outcome = strategy.run(&ctx("k"), primary.as_ref()).await;
    assert!(
        matches!(&outcome, Outcome::Retry { error, .. } if error.class() == "a"),
        "{outcome:?}"
    );

    // All permanent: the last permanent failure.
    let primary = logging(
        &log,
        "primary",
        Err(JobError::permanent("x").with_class("a")),
    );
    let alt = logging(&log, "alt", Err(JobError::permanent("y").with_class("b")));
    let strategy = Fallback::new().alternates("k", vec![alt]);
    let outcome = strategy.run(&ctx("k"), primary.as_ref()).await;
    assert!(
        matches!(&outcome, Outcome::Failed(e) if e.class() == "b"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn fallback_returns_deferrals_as_is_and_can_skip_permanent_failures() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let alt = logging(&log, "alt", Ok(json!("alt")));
    let deferring = logging(
        &log,
        "primary",
        Err(JobError::defer(Duration::from_secs(5), "quota")),
    );
    let strategy = Fallback::new().alternates("k", vec![Arc::clone(&alt)]);
    let outcome = strategy.run(&ctx("k"), deferring.as_ref()).await;
    assert!(matches!(outcome, Outcome::Deferred { .. }));
    assert_eq!(*log.lock(), vec!["primary"]);

    log.lock().clear();
    let permanent = logging(&log, "primary", Err(JobError::permanent("bad")));
    let strategy = Fallback::new()
        .alternates("k", vec![alt])
        .only_on_retryable();
    let outcome = strategy.run(&ctx("k"), permanent.as_ref()).await;
    assert!(matches!(outcome, Outcome::Failed(_)));
    assert_eq!(*log.lock(), vec!["primary"]);
}

// ---------------------------------------------------------------------------------------------
// Hedged

/// Sets its flag when dropped: observes that a losing attempt's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn hedged_first_success_wins_and_the_loser_is_cancelled_and_dropped() {
    let tokens: Arc<Mutex<Vec<CancellationToken>>> = Arc::default();
    let dropped = Arc::new(AtomicBool::new(false));
    let (t, d) = (Arc::clone(&tokens), Arc::clone(&dropped));
    let (handler, calls) = scripted(move |n, ctx: JobContext| {
        t.lock().push(ctx.cancellation_token().clone());
        let flag = DropFlag(Arc::clone(&d));
        async move {
            if n == 1 {
                let _flag = flag;
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(json!("slow"))
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(json!("fast"))
            }
        }
    });
    let ctx = ctx_with("k", Arc::new(FakeMemory::default()), true);
    let strategy = Hedged::new().with_delay(Duration::from_millis(50));
    let started = tokio::time::Instant::now();
    let outcome = strategy.run(&ctx, handler.as_ref()).await;
    assert_eq!(outcome, Outcome::Succeeded(json!("fast")));
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let tokens = tokens.lock();
    assert!(
        tokens[0].is_cancelled(),
        "the losing attempt's token is cancelled"
    );
    assert!(!tokens[1].is_cancelled());
    assert!(!ctx.is_cancelled(), "the job itself is not cancelled");
    assert!(
        dropped.load(Ordering::SeqCst),
        "the losing attempt's future is dropped"
    );
    assert!(decision(&ctx).contains("hedge won"), "{}", decision(&ctx));
}

#[tokio::test(start_paused = true)]
async fn hedged_does_not_hedge_a_fast_job() {
    let (handler, calls) = scripted(|_, _| async { Ok(json!(1)) });
    let ctx = ctx_with("k", Arc::new(FakeMemory::default()), true);
    let outcome = Hedged::new()
        .with_delay(Duration::from_millis(50))
        .run(&ctx, handler.as_ref())
        .await;
    assert!(outcome.is_success());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(decision(&ctx).contains("before the delay"));
}

#[tokio::test(start_paused = true)]
async fn hedged_waits_for_the_other_attempt_when_the_first_finisher_fails() {
    let (handler, calls) = scripted(|n, _| async move {
        if n == 1 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(json!("first"))
        } else {
            Err(JobError::retryable("hedge failed"))
        }
    });
    let ctx = ctx_with("k", Arc::new(FakeMemory::default()), true);
    let outcome = Hedged::new()
        .with_delay(Duration::from_millis(20))
        .run(&ctx, handler.as_ref())
        .await;
    assert_eq!(outcome, Outcome::Succeeded(json!("first")));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(decision(&ctx).contains("first attempt won"));

    // Both fail: the first attempt's outcome.
    let (handler, _) = scripted(|n, _| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Err(JobError::retryable(format!("attempt {n}")))
    });
    let ctx = ctx_with("k", Arc::new(FakeMemory::default()), true);
    let outcome = Hedged::new()
        .with_delay(Duration::from_millis(20))
        .run(&ctx, handler.as_ref())
        .await;
    assert!(matches!(&outcome, Outcome::Retry { error, .. } if error.message() == "attempt 1"));
    assert!(decision(&ctx).contains("both failed"));
}

#[tokio::test(start_paused = true)]
async fn hedged_refuses_non_idempotent_kinds_and_runs_once() {
    let (handler, calls) = scripted(|_, _| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(json!("once"))
    });
    let memory = Arc::new(FakeMemory::default());
    let strategy = Hedged::new().with_delay(Duration::from_millis(1));
    for _ in 0..3 {
        let ctx = ctx_with("charge", memory.clone(), false);
        let outcome = strategy.run(&ctx, handler.as_ref()).await;
        assert_eq!(outcome, Outcome::Succeeded(json!("once")));
        assert!(decision(&ctx).contains("hedging refused: kind not idempotent"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "exactly once per job");
    assert_eq!(memory.reflects(), 0, "a refused kind needs no history");
}

#[tokio::test(start_paused = true)]
async fn hedged_delay_defaults_to_the_observed_p95_cached_per_kind() {
    let mut refl = reflection("k", 100, recommend(StrategyChoice::Direct, true));
    refl.p95 = Some(Duration::from_millis(30));
    let memory = FakeMemory::with(refl);
    let starts: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
    let s = Arc::clone(&starts);
    let (handler, _) = scripted(move |n, _| {
        s.lock().push(tokio::time::Instant::now());
        async move {
            if n % 2 == 1 {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Ok(json!(n))
        }
    });
    let strategy = Hedged::new().with_fallback_delay(Duration::from_secs(1));
    for _ in 0..10 {
        let ctx = ctx_with("k", memory.clone(), true);
        assert!(strategy.run(&ctx, handler.as_ref()).await.is_success());
        assert!(
            decision(&ctx).contains("30ms (observed p95)"),
            "{}",
            decision(&ctx)
        );
    }
    let starts = starts.lock().clone();
    assert_eq!(starts.len(), 20);
    assert_eq!(starts[1] - starts[0], Duration::from_millis(30));
    assert_eq!(memory.reflects(), 1, "reflected once, not per job");

    // Without enough history: the fallback delay.
    let thin = FakeMemory::with(reflection("k", 3, recommend(StrategyChoice::Direct, false)));
    let ctx = ctx_with("k", thin, true);
    let (quick, _) = scripted(|_, _| async { Ok(json!(0)) });
    // (A fresh strategy: each instance caches reflections per kind.)
    let strategy = Hedged::new().with_fallback_delay(Duration::from_secs(1));
    strategy.run(&ctx, quick.as_ref()).await;
    assert!(
        decision(&ctx).contains("1.00s (fallback"),
        "{}",
        decision(&ctx)
    );
}

// ---------------------------------------------------------------------------------------------
// Adaptive

fn confident(kind: &str, strategy: StrategyChoice) -> Reflection {
    reflection(kind, 500, recommend(strategy, true))
}

#[tokio::test]
async fn adaptive_runs_the_base_strategy_until_confident() {
    let memory = FakeMemory::with(reflection("k", 4, recommend(StrategyChoice::Hedged, false)));
    let (handler, calls) = scripted(|_, _| async { Err(JobError::retryable("blip")) });
    let ctx = ctx_with("k", memory.clone(), true);
    let outcome = Adaptive::new().run(&ctx, handler.as_ref()).await;
    assert!(matches!(outcome, Outcome::Retry { .. }));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "Direct: one call");
    let d = decision(&ctx);
    assert!(
        d.contains("base strategy `direct`") && d.contains("not confident (4 executions"),
        "{d}"
    );

    // A configured base strategy, whose own decision is kept.
    let (handler, calls) = scripted(|_, _| async { Err(JobError::retryable("blip")) });
    let ctx = ctx_with("k", memory, true);
    let adaptive = Adaptive::new().with_base(Arc::new(
        InlineRetry::new(2)
            .with_delay(Duration::ZERO)
            .with_jitter(Duration::ZERO),
    ));
    adaptive.run(&ctx, handler.as_ref()).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let d = decision(&ctx);
    assert!(
        d.contains("base strategy `inline_retry`") && d.contains("2 of 2 inline retries"),
        "{d}"
    );
}

#[tokio::test(start_paused = true)]
async fn adaptive_hedges_a_long_tail_only_for_idempotent_kinds() {
    let mut refl = confident("k", StrategyChoice::Hedged);
    refl.p95 = Some(Duration::from_millis(40));
    refl.p99 = Some(Duration::from_secs(3));
    refl.recommendation.hedge_delay = Some(Duration::from_millis(40));
    refl.recommendation.rationale = "p99 is 75x p50: long tail".to_owned();
    let memory = FakeMemory::with(refl);
    let slow_first = || {
        scripted(|n, _| async move {
            if n == 1 {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            Ok(json!(n))
        })
    };

    let (handler, calls) = slow_first();
    let ctx = ctx_with("k", memory.clone(), true);
    let started = tokio::time::Instant::now();
    let outcome = Adaptive::new().run(&ctx, handler.as_ref()).await;
    assert_eq!(outcome, Outcome::Succeeded(json!(2)));
    assert_eq!(started.elapsed(), Duration::from_millis(40));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let d = decision(&ctx);
    assert!(
        d.contains("hedge after 40ms") && d.contains("hedge won"),
        "{d}"
    );
    assert!(d.contains("why: p99 is 75x p50: long tail"), "{d}");

    let (handler, calls) = slow_first();
    let ctx = ctx_with("k", memory, false);
    let outcome = Adaptive::new().run(&ctx, handler.as_ref()).await;
    assert_eq!(outcome, Outcome::Succeeded(json!(1)));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "not idempotent: never twice"
    );
    assert!(decision(&ctx).contains("hedging refused"));
}

#[tokio::test]
async fn adaptive_spends_inline_retries_where_they_rescue() {
    let mut refl = confident("k", StrategyChoice::InlineRetry);
    refl.recommendation.inline_retries = 2;
    refl.retry_rescue_rate = Some(0.9);
    let memory = FakeMemory::with(refl);
    let (handler, calls) = scripted(|n, _| async move {
        if n <= 2 {
            Err(JobError::retryable("blip"))
        } else {
            Ok(json!("rescued"))
        }
    });
    let ctx = ctx_with("k", memory.clone(), false);
    let adaptive = Adaptive::new().with_inline_pause(Duration::ZERO, Duration::ZERO);
    assert_eq!(
        adaptive.run(&ctx, handler.as_ref()).await,
        Outcome::Succeeded(json!("rescued"))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(ctx.inline_retries(), 2);
    assert!(decision(&ctx).contains("2 inline retries used"));

    // Where retries have not rescued anything, none are spent.
    let mut refl = confident("k", StrategyChoice::Direct);
    refl.retry_rescue_rate = Some(0.0);
    let memory = FakeMemory::with(refl);
    let (handler, calls) = scripted(|_, _| async { Err(JobError::retryable("blip")) });
    let ctx = ctx_with("k", memory, false);
    let adaptive = Adaptive::new().with_inline_pause(Duration::ZERO, Duration::ZERO);
    assert!(matches!(
        adaptive.run(&ctx, handler.as_ref()).await,
        Outcome::Retry { .. }
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(ctx.inline_retries(), 0);
}

/// A context for a job whose id puts it in (or out of) the one job in ten that keeps
/// retrying hopeless classes.
fn ctx_exploring(kind: &str, memory: Arc<dyn Memory>, exploring: bool) -> JobContext {
    loop {
        let job = NewJob::new(kind);
        if (job.id().as_uuid().as_u128() % 10 == 0) == exploring {
            return JobContext::new(
                JobRecord::from_job(job),
                WorkerId::new("w"),
                memory,
                CancellationToken::new(),
            );
        }
    }
}

#[tokio::test]
async fn adaptive_fails_at_once_the_classes_retries_never_rescued() {
    let mut refl = confident("k", StrategyChoice::InlineRetry);
    refl.recommendation.inline_retries = 2;
    refl.recommendation.no_retry_classes = vec!["bad_payload".to_owned()];
    let memory = FakeMemory::with(refl);
    let adaptive = Adaptive::new().with_inline_pause(Duration::ZERO, Duration::ZERO);
    let failing = |class: &'static str| {
        scripted(move |_, _| async move { Err(JobError::retryable("nope").with_class(class)) })
    };

    // The hopeless class: failed for good at the first call, no inline retry, no queue retry.
    let (handler, calls) = failing("bad_payload");
    let ctx = ctx_exploring("k", memory.clone(), false);
    let outcome = adaptive.run(&ctx, handler.as_ref()).await;
    let Outcome::Failed(error) = outcome else {
        panic!("expected a permanent failure, got {outcome:?}")
    };
    assert_eq!(error.class(), "bad_payload");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        decision(&ctx).contains("no retry of bad_payload"),
        "{}",
        decision(&ctx)
    );

    // Another class of the same kind keeps its retries.
    let (handler, calls) = failing("timeout");
    let ctx = ctx_exploring("k", memory.clone(), false);
    assert!(matches!(
        adaptive.run(&ctx, handler.as_ref()).await,
        Outcome::Retry { .. }
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two inline retries");

    // One job in ten still retries the hopeless class, so history can show it rescued:
    // through the queue, not in process.
    let (handler, calls) = failing("bad_payload");
    let ctx = ctx_exploring("k", memory.clone(), true);
    assert!(matches!(
        adaptive.run(&ctx, handler.as_ref()).await,
        Outcome::Retry { .. }
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Switched off, the class is retried like any other.
    let (handler, calls) = failing("bad_payload");
    let ctx = ctx_exploring("k", memory, false);
    let off = Adaptive::new()
        .with_inline_pause(Duration::ZERO, Duration::ZERO)
        .class_fail_fast(false);
    assert!(matches!(
        off.run(&ctx, handler.as_ref()).await,
        Outcome::Retry { .. }
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn adaptive_applies_the_recommended_timeout_per_attempt() {
    let mut refl = confident("k", StrategyChoice::InlineRetry);
    refl.recommendation.timeout = Some(Duration::from_millis(50));
    refl.recommendation.inline_retries = 1;
    let memory = FakeMemory::with(refl);
    let tokens: Arc<Mutex<Vec<CancellationToken>>> = Arc::default();
    let t = Arc::clone(&tokens);
    let (handler, calls) = scripted(move |_, ctx: JobContext| {
        t.lock().push(ctx.cancellation_token().clone());
        async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(json!("late"))
        }
    });
    let ctx = ctx_with("k", memory, false);
    let adaptive = Adaptive::new().with_inline_pause(Duration::ZERO, Duration::ZERO);
    let started = tokio::time::Instant::now();
    let outcome = adaptive.run(&ctx, handler.as_ref()).await;
    assert_eq!(outcome.error_class(), Some("timeout"));
    assert!(matches!(outcome, Outcome::Retry { .. }));
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(100),
        "two attempts of 50 ms"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(
        tokens.lock().iter().all(CancellationToken::is_cancelled),
        "timed-out attempts are cancelled"
    );
    assert!(!ctx.is_cancelled());
    assert!(decision(&ctx).contains("timeout 50ms/attempt"));
}

#[tokio::test(start_paused = true)]
async fn adaptive_reflects_once_per_refresh_not_per_job() {
    let memory = FakeMemory::with(confident("k", StrategyChoice::Direct));
    let adaptive = Adaptive::new().with_refresh_interval(Duration::from_secs(10));
    let (handler, calls) = scripted(|_, _| async { Ok(json!(0)) });
    for _ in 0..100 {
        let ctx = ctx_with("k", memory.clone(), false);
        adaptive.run(&ctx, handler.as_ref()).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 100);
    // One load: two reflections, the window and the latest executions (the drift check).
    assert_eq!(memory.reflects(), 2);

    // After the interval, one background refresh, however many jobs notice.
    tokio::time::advance(Duration::from_secs(11)).await;
    for _ in 0..50 {
        let ctx = ctx_with("k", memory.clone(), false);
        adaptive.run(&ctx, handler.as_ref()).await;
    }
    tokio::task::yield_now().await;
    assert_eq!(memory.reflects(), 4);

    // A second kind has its own entry.
    let ctx = ctx_with("other", memory.clone(), false);
    adaptive.run(&ctx, handler.as_ref()).await;
    assert_eq!(memory.reflects(), 6);
}

#[tokio::test]
async fn adaptive_can_refresh_by_execution_count() {
    let memory = FakeMemory::with(confident("k", StrategyChoice::Direct));
    let adaptive = Adaptive::new().with_refresh_after_runs(10);
    let (handler, _) = scripted(|_, _| async { Ok(json!(0)) });
    for _ in 0..30 {
        let ctx = ctx_with("k", memory.clone(), false);
        adaptive.run(&ctx, handler.as_ref()).await;
        tokio::task::yield_now().await;
    }
    // Three or four refreshes of two reflections each (the window, and the latest
    // executions for the drift check).
    let reflects = memory.reflects();
    assert!(
        (6..=8).contains(&reflects),
        "{reflects} reflects for 30 jobs"
    );
}

#[tokio::test]
async fn adaptive_picks_up_a_new_recommendation_after_refresh() {
    let memory = FakeMemory::with(reflection("k", 5, recommend(StrategyChoice::Direct, false)));
    let adaptive = Adaptive::new().with_refresh_after_runs(1);
    let (handler, _) = scripted(|_, _| async { Ok(json!(0)) });
    let ctx = ctx_with("k", memory.clone(), false);
    adaptive.run(&ctx, handler.as_ref()).await;
    assert!(decision(&ctx).contains("base strategy"));
    memory
        .reflections
        .lock()
        .insert("k".to_owned(), confident("k", StrategyChoice::Direct));
    // Let the background refresh land.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let ctx = ctx_with("k", memory.clone(), false);
    adaptive.run(&ctx, handler.as_ref()).await;
    assert!(decision(&ctx).contains("no hedge"), "{}", decision(&ctx));
}

#[tokio::test]
async fn adaptive_records_when_its_decision_changes_and_why() {
    let memory = FakeMemory::with(reflection("k", 5, recommend(StrategyChoice::Direct, false)));
    let adaptive = Adaptive::new().with_refresh_after_runs(1);
    let (handler, _) = scripted(|_, _| async { Ok(json!(0)) });
    let run = |memory: Arc<FakeMemory>| {
        let ctx = ctx_with("k", memory, false);
        let (adaptive, handler) = (&adaptive, Arc::clone(&handler));
        async move { adaptive.run(&ctx, handler.as_ref()).await }
    };
    run(memory.clone()).await;
    run(memory.clone()).await;
    assert_eq!(
        Adaptive::last_change(memory.as_ref(), "k").await.unwrap(),
        None,
        "no change yet"
    );
    let mut now = confident("k", StrategyChoice::InlineRetry);
    now.recommendation.inline_retries = 2;
    now.recommendation.rationale = "InlineRetry: retries rescued 90% of failed jobs".to_owned();
    memory.reflections.lock().insert("k".to_owned(), now);
    let mut change = None;
    for _ in 0..20 {
        run(memory.clone()).await;
        tokio::task::yield_now().await;
        change = Adaptive::last_change(memory.as_ref(), "k").await.unwrap();
        if change.is_some() {
            break;
        }
    }
    let change = change.expect("the change is recorded");
    assert_eq!(change.from, "base strategy `direct`");
    assert_eq!(change.to, "no hedge; 2 inline retries");
    assert_eq!(
        change.why,
        "InlineRetry: retries rescued 90% of failed jobs"
    );
    assert_eq!(change.executions, 500);
    // Running on under the same decision records nothing new.
    for _ in 0..5 {
        run(memory.clone()).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(
        Adaptive::last_change(memory.as_ref(), "k").await.unwrap(),
        Some(change)
    );
}

#[tokio::test(start_paused = true)]
async fn adaptive_hedges_within_its_budget() {
    let mut refl = confident("k", StrategyChoice::Hedged);
    refl.recommendation.hedge_delay = Some(Duration::from_millis(10));
    let memory = FakeMemory::with(refl);
    // Every job's first call is slow; a hedge is fast.
    let seen: Arc<Mutex<HashMap<JobId, usize>>> = Arc::default();
    let (handler, calls) = scripted(move |_, ctx: JobContext| {
        let first = {
            let mut seen = seen.lock();
            let n = seen.entry(ctx.id()).or_default();
            *n += 1;
            *n == 1
        };
        async move {
            if first {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(json!(0))
        }
    });
    // No budget beyond the reserve: the first HEDGE_RESERVE slow jobs are hedged, no more.
    let adaptive = Adaptive::new().with_hedge_budget(0.0);
    let mut hedged = 0;
    for _ in 0..15 {
        let ctx = ctx_with("k", memory.clone(), true);
        let started = tokio::time::Instant::now();
        adaptive.run(&ctx, handler.as_ref()).await;
        let d = decision(&ctx);
        if started.elapsed() < Duration::from_secs(1) {
            hedged += 1;
            assert!(d.contains("hedge won"), "{d}");
        } else {
            assert!(d.contains("hedge budget spent; not hedged"), "{d}");
        }
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let burst = jobforge::strategy::HEDGE_RESERVE as usize;
    assert_eq!(hedged, burst);
    assert_eq!(calls.load(Ordering::SeqCst), 15 + burst);
    // A budget of one hedge per attempt hedges them all.
    let adaptive = Adaptive::new().with_hedge_budget(1.0);
    for _ in 0..15 {
        let ctx = ctx_with("k", memory.clone(), true);
        let started = tokio::time::Instant::now();
        adaptive.run(&ctx, handler.as_ref()).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{}",
            decision(&ctx)
        );
        assert!(decision(&ctx).contains("hedge budget 100% extra calls"));
    }
}

#[tokio::test]
async fn adaptive_fail_fast_is_opt_in_and_needs_evidence() {
    let mut refl = confident("k", StrategyChoice::Direct);
    refl.recommendation.max_attempts = 1;
    refl.retry_rescue_rate = Some(0.0);
    let memory = FakeMemory::with(refl.clone());
    let (handler, _) =
        scripted(|_, _| async { Err(JobError::retryable("upstream 500").with_class("http_500")) });

    let ctx = ctx_with("k", memory.clone(), false);
    let outcome = Adaptive::new().run(&ctx, handler.as_ref()).await;
    assert!(
        matches!(outcome, Outcome::Retry { .. }),
        "default: the queue still retries"
    );

    let ctx = ctx_with("k", memory, false);
    let outcome = Adaptive::new()
        .fail_fast(true)
        .run(&ctx, handler.as_ref())
        .await;
    match outcome {
        Outcome::Failed(error) => {
            assert_eq!(error.class(), "http_500");
            assert!(error.message().contains("fail-fast"));
        }
        other => panic!("expected Failed, got {other:?}"),
    }

    // No failures ever seen (no rescue rate): nothing to go on, so no fail fast.
    refl.retry_rescue_rate = None;
    let AdaptivePlan::Tuned(tuning) = Adaptive::new().fail_fast(true).plan(Some(&refl), false)
    else {
        panic!("confident reflection must be tuned");
    };
    assert!(!tuning.fail_fast);
}

#[test]
fn adaptive_plan_follows_the_recommendation() {
    let adaptive = Adaptive::new();
    let mut refl = confident("k", StrategyChoice::Hedged);
    refl.p95 = Some(Duration::from_millis(80));
    refl.recommendation.timeout = Some(Duration::from_millis(1));
    refl.recommendation.inline_retries = 9;
    let AdaptivePlan::Tuned(t) = adaptive.plan(Some(&refl), true) else {
        panic!("tuned")
    };
    assert_eq!(
        t.hedge_delay,
        Some(Duration::from_millis(80)),
        "p95 when no hedge_delay"
    );
    assert_eq!(t.timeout, Some(Duration::from_millis(10)), "floored");
    assert_eq!(t.inline_retries, 3, "capped");
    assert!(!t.hedge_refused);
    let AdaptivePlan::Tuned(t) = adaptive.plan(Some(&refl), false) else {
        panic!("tuned")
    };
    assert_eq!(t.hedge_delay, None);
    assert!(t.hedge_refused);
    assert!(matches!(
        adaptive.plan(None, true),
        AdaptivePlan::Base { .. }
    ));
}

#[test]
fn strategies_are_usable_as_dyn_with_their_names() {
    let all: Vec<Arc<dyn Strategy>> = vec![
        Arc::new(Direct),
        Arc::new(InlineRetry::default()),
        Arc::new(Fallback::new()),
        Arc::new(Hedged::new()),
        Arc::new(Adaptive::new()),
        Arc::new(InlineRetry::new(1).with_name("inline_retry_once")),
    ];
    let names: Vec<&str> = all.iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "direct",
            "inline_retry",
            "fallback",
            "hedged",
            "adaptive",
            "inline_retry_once"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// End to end through the Orchestrator

/// Fails the first call of every job, succeeds after.
fn fails_once_per_job() -> Arc<dyn Handler> {
    let seen: Arc<Mutex<HashMap<JobId, u32>>> = Arc::default();
    handler_fn(move |ctx: JobContext| {
        let seen = Arc::clone(&seen);
        async move {
            let calls = {
                let mut seen = seen.lock();
                let calls = seen.entry(ctx.id()).or_default();
                *calls += 1;
                *calls
            };
            if calls == 1 {
                Err(JobError::retryable("first call fails"))
            } else {
                Ok(json!(calls))
            }
        }
    })
}

/// The first call of every job is slow, the others quick.
fn slow_first_per_job() -> Arc<dyn Handler> {
    let seen: Arc<Mutex<HashMap<JobId, u32>>> = Arc::default();
    handler_fn(move |ctx: JobContext| {
        let seen = Arc::clone(&seen);
        async move {
            let calls = {
                let mut seen = seen.lock();
                let calls = seen.entry(ctx.id()).or_default();
                *calls += 1;
                *calls
            };
            if calls == 1 {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
            }
            Ok(json!(calls))
        }
    })
}

async fn strategy_recorded(memory: &FakeMemory, id: JobId) -> (String, Option<String>) {
    for _ in 0..200 {
        if let Some(r) = memory.records.lock().iter().find(|r| r.job_id == id) {
            return (r.strategy.clone(), r.decision.clone());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no execution record for {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_selects_strategies_per_job_then_kind_then_default() {
    let memory = Arc::new(FakeMemory::default());
    let orchestrator = Orchestrator::builder()
        .memory(memory.clone())
        .kind(
            "flaky",
            KindConfig::new(fails_once_per_job())
                .retry(RetryPolicy::new(1))
                .strategy("inline_retry"),
        )
        .kind(
            "slow",
            KindConfig::new(slow_first_per_job())
                .idempotent(true)
                .strategy("hedged"),
        )
        .kind(
            "slow_unsafe",
            KindConfig::new(slow_first_per_job()).strategy("hedged"),
        )
        .kind(
            "plain",
            KindConfig::new(fails_once_per_job()).retry(RetryPolicy::new(1)),
        )
        .strategy(Arc::new(
            InlineRetry::new(2).with_delay(Duration::from_millis(1)),
        ))
        .strategy(Arc::new(
            Hedged::new().with_delay(Duration::from_millis(30)),
        ))
        .strategy(Arc::new(Fallback::new()))
        .default_strategy("fallback")
        .build()
        .unwrap();
    let workers = orchestrator
        .start_workers(WorkerConfig::default().poll_wait(Duration::from_millis(20)))
        .unwrap();
    let wait = Duration::from_secs(10);

    // Kind strategy: inline retry rescues the first failure within the single attempt.
    let by_kind = orchestrator.submit(NewJob::new("flaky")).await.unwrap();
    // Job strategy beats the kind's: direct, so the single attempt fails and the job is dead.
    let by_job = orchestrator
        .submit(NewJob::new("flaky").strategy("direct"))
        .await
        .unwrap();
    // Kind `hedged`, idempotent: the hedge wins long before the 1.5 s first call.
    let hedged = orchestrator.submit(NewJob::new("slow")).await.unwrap();
    // Default strategy (fallback, no alternates): like direct.
    let default = orchestrator.submit(NewJob::new("plain")).await.unwrap();

    let done = orchestrator.wait_for(by_kind.id, wait).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    let (strategy, decision) = strategy_recorded(&memory, by_kind.id).await;
    assert_eq!(strategy, "inline_retry");
    assert!(
        decision
            .unwrap_or_default()
            .contains("1 of 2 inline retries used")
    );

    let done = orchestrator.wait_for(by_job.id, wait).await.unwrap();
    assert_eq!(done.state, JobState::Dead);
    assert_eq!(strategy_recorded(&memory, by_job.id).await.0, "direct");

    let done = orchestrator.wait_for(hedged.id, wait).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    let started = done.started_at.unwrap();
    let finished = done.finished_at.unwrap();
    assert!(
        (finished - started).num_milliseconds() < 1_000,
        "the hedge won"
    );
    let (strategy, decision) = strategy_recorded(&memory, hedged.id).await;
    assert_eq!(strategy, "hedged");
    assert!(decision.unwrap_or_default().contains("hedge won"));

    let done = orchestrator.wait_for(default.id, wait).await.unwrap();
    assert_eq!(done.state, JobState::Dead);
    assert_eq!(strategy_recorded(&memory, default.id).await.0, "fallback");

    // Not idempotent: the worker tells the strategy, which runs the job once (1.5 s).
    let unsafe_job = orchestrator
        .submit(NewJob::new("slow_unsafe"))
        .await
        .unwrap();
    let done = orchestrator.wait_for(unsafe_job.id, wait).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(
        done.result.map(|r| r.as_str().to_owned()).as_deref(),
        Some("1")
    );
    let (_, decision) = strategy_recorded(&memory, unsafe_job.id).await;
    assert!(decision.unwrap_or_default().contains("hedging refused"));

    workers.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn unknown_strategy_is_rejected_at_submit_and_build() {
    let orchestrator = Orchestrator::builder()
        .handler("k", |_ctx: JobContext| async { Ok(Value::Null) })
        .strategy(Arc::new(Adaptive::new()))
        .build()
        .unwrap();
    let err = orchestrator
        .submit(NewJob::new("k").strategy("hedgehog"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.field(), Some("strategy"));
    assert!(err.to_string().contains("strategy") && err.to_string().contains("hedgehog"));
    assert!(
        err.to_string().contains("adaptive"),
        "lists the registered ones: {err}"
    );
    // Registered ones are accepted.
    assert!(
        orchestrator
            .submit(NewJob::new("k").strategy("adaptive"))
            .await
            .is_ok()
    );

    let err = Orchestrator::builder()
        .kind(
            "k",
            KindConfig::new(|_ctx: JobContext| async { Ok(Value::Null) }).strategy("hedged"),
        )
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains("strategy `hedged`"));
}
