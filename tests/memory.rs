//! The in-memory Memory: the shared contract, plus what only an in-memory store with a
//! manual clock can show (expiry without sleeping, bounds), and reflection numbers checked
//! by hand on fixed histories.

mod memory_suite;

use std::sync::Arc;
use std::time::Duration;

use jobforge::memory::{
    ExecutionRecord, InMemoryMemory, InMemoryMemoryConfig, ManualClock, NewEntry, OutcomeClass,
    Reflection, StrategyChoice, Window, reflect_on,
};
use jobforge::{ErrorKind, JobId, Memory};
use memory_suite::{at, fresh, run};
use serde_json::json;

use OutcomeClass::{Cancelled, Deferred, Failed, Retried, Succeeded};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn with_clock(config: InMemoryMemoryConfig) -> (InMemoryMemory, ManualClock) {
    let clock = ManualClock::default();
    (
        InMemoryMemory::with_config(config.with_clock(clock.clone())),
        clock,
    )
}

async fn reflect(history: &[ExecutionRecord]) -> Reflection {
    let memory = InMemoryMemory::new();
    memory.record(history).await.unwrap();
    memory.reflect(&history[0].kind, Window::All).await.unwrap()
}

#[tokio::test]
async fn in_memory_memory_keeps_the_memory_contract() {
    memory_suite::run_all(&|| Arc::new(InMemoryMemory::new()) as Arc<dyn Memory>).await;
}

// ---------------------------------------------------------------- expiry, with a manual clock

#[tokio::test]
async fn entries_expire_exactly_at_their_ttl() {
    let (memory, clock) = with_clock(InMemoryMemoryConfig::default());
    let put = memory
        .put(NewEntry::new("ns", "k", json!(1)).ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        put.expires_at,
        Some(put.updated_at + chrono::Duration::seconds(60))
    );
    clock.advance(Duration::from_secs(59));
    assert!(memory.get("ns", "k").await.unwrap().is_some());
    // An update keeps the expiry: it does not restart the TTL.
    memory.update("ns", "k", json!(2), None).await.unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(memory.get("ns", "k").await.unwrap(), None);
    assert_eq!(
        memory
            .update("ns", "k", json!(3), None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    // A put, however, does restart it.
    memory
        .put(NewEntry::new("ns", "k", json!(4)).ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(30));
    memory
        .put(NewEntry::new("ns", "k", json!(5)).ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(45));
    assert_eq!(
        memory.get("ns", "k").await.unwrap().unwrap().value,
        json!(5)
    );
}

#[tokio::test]
async fn expired_entries_are_swept_so_memory_stays_bounded() {
    let (memory, clock) = with_clock(InMemoryMemoryConfig::default());
    for i in 0..1_000 {
        memory
            .put(NewEntry::new("cache", format!("k{i:04}"), json!(i)).ttl(Duration::from_secs(10)))
            .await
            .unwrap();
    }
    memory
        .put(NewEntry::new("cache", "forever", json!(0)))
        .await
        .unwrap();
    assert_eq!(memory.stored_entries(), 1_001);
    clock.advance(Duration::from_secs(11));
    // No one reads the expired keys; ordinary traffic sweeps them a few at a time.
    for _ in 0..40 {
        memory.get("cache", "forever").await.unwrap();
    }
    assert_eq!(memory.stored_entries(), 1);
}

#[tokio::test]
async fn a_full_store_sweeps_expired_entries_before_refusing() {
    let (memory, clock) = with_clock(InMemoryMemoryConfig::default().with_max_entries(3));
    for key in ["a", "b"] {
        memory
            .put(NewEntry::new("ns", key, json!(1)).ttl(Duration::from_secs(5)))
            .await
            .unwrap();
    }
    memory
        .put(NewEntry::new("ns", "c", json!(1)))
        .await
        .unwrap();
    let err = memory
        .put(NewEntry::new("ns", "d", json!(1)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LimitExceeded);
    assert!(err.message().contains("limit of 3 entries"), "{err}");
    assert!(err.message().contains("with_max_entries"), "{err}");
    // Replacing an existing key is not growth.
    memory
        .put(NewEntry::new("ns", "c", json!(2)))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(5));
    memory
        .put(NewEntry::new("ns", "d", json!(1)))
        .await
        .unwrap();
    memory
        .put(NewEntry::new("ns", "e", json!(1)))
        .await
        .unwrap();
    assert_eq!(memory.stored_entries(), 3);
}

#[tokio::test]
async fn total_value_bytes_are_bounded() {
    // Each value "xxxxxxxx" is 10 bytes of JSON.
    let memory =
        InMemoryMemory::with_config(InMemoryMemoryConfig::default().with_max_total_value_bytes(25));
    let value = || json!("xxxxxxxx");
    memory.put(NewEntry::new("ns", "a", value())).await.unwrap();
    memory.put(NewEntry::new("ns", "b", value())).await.unwrap();
    let err = memory
        .put(NewEntry::new("ns", "c", value()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LimitExceeded);
    assert!(
        err.message().contains("with_max_total_value_bytes"),
        "{err}"
    );
    let err = memory
        .update("ns", "a", json!("xxxxxxxxxxxxxxx"), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LimitExceeded);
    // Shrinking and deleting give the room back.
    memory.update("ns", "a", json!(1), None).await.unwrap();
    memory
        .put(NewEntry::new("ns", "c", json!(2)))
        .await
        .unwrap();
    assert!(memory.delete("ns", "b").await.unwrap());
    memory.put(NewEntry::new("ns", "d", value())).await.unwrap();
}

#[tokio::test]
async fn value_size_limit_is_configurable() {
    let memory =
        InMemoryMemory::with_config(InMemoryMemoryConfig::default().with_max_value_bytes(10));
    memory
        .put(NewEntry::new("ns", "k", json!("12345678")))
        .await
        .unwrap();
    let err = memory
        .put(NewEntry::new("ns", "k", json!("123456789")))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("value"));
    assert!(err.message().contains("10 bytes"), "{err}");
}

#[tokio::test]
async fn since_window_reads_the_memory_clock() {
    let (memory, clock) = with_clock(InMemoryMemoryConfig::default());
    let start = jobforge::memory::Clock::now(&clock);
    memory
        .record(&[
            at(
                fresh("k", Failed, 10),
                start - chrono::Duration::minutes(30),
            ),
            at(fresh("k", Succeeded, 10), start),
        ])
        .await
        .unwrap();
    let hour = Window::Since(Duration::from_secs(3600));
    assert_eq!(memory.reflect("k", hour).await.unwrap().count, 2);
    clock.advance(Duration::from_secs(45 * 60));
    let r = memory.reflect("k", hour).await.unwrap();
    assert_eq!((r.count, r.succeeded), (1, 1));
    clock.advance(Duration::from_secs(3600));
    assert_eq!(memory.reflect("k", hour).await.unwrap().count, 0);
    assert_eq!(memory.reflect("k", Window::All).await.unwrap().count, 2);
}

// ---------------------------------------------------------------- execution bounds

#[tokio::test]
async fn the_ring_buffer_keeps_only_the_newest_executions() {
    let memory = InMemoryMemory::with_config(
        InMemoryMemoryConfig::default().with_max_executions_per_kind(5),
    );
    let runs: Vec<ExecutionRecord> = (1..=12).map(|i| fresh("k", Succeeded, i)).collect();
    memory.record(&runs[..7]).await.unwrap();
    memory.record(&runs[7..]).await.unwrap();
    assert_eq!(memory.stored_executions("k"), 5);
    let kept: Vec<Duration> = memory
        .executions("k")
        .into_iter()
        .map(|r| r.duration)
        .collect();
    assert_eq!(kept, [ms(8), ms(9), ms(10), ms(11), ms(12)]);
    assert_eq!(memory.executions("k"), runs[7..].to_vec());
    let r = memory.reflect("k", Window::All).await.unwrap();
    assert_eq!(r.count, 5);
    assert_eq!(r.p50, Some(ms(10)));
}

#[tokio::test]
async fn the_number_of_kinds_is_bounded_dropping_the_least_recently_recorded() {
    let memory = InMemoryMemory::with_config(InMemoryMemoryConfig::default().with_max_kinds(2));
    memory.record(&[fresh("a", Succeeded, 1)]).await.unwrap();
    memory.record(&[fresh("b", Succeeded, 1)]).await.unwrap();
    memory.record(&[fresh("a", Succeeded, 1)]).await.unwrap();
    memory.record(&[fresh("c", Succeeded, 1)]).await.unwrap();
    assert_eq!(memory.stored_executions("a"), 2);
    assert_eq!(memory.stored_executions("b"), 0);
    assert_eq!(memory.stored_executions("c"), 1);
    // Within one batch too.
    memory
        .record(&[fresh("d", Succeeded, 1), fresh("e", Succeeded, 1)])
        .await
        .unwrap();
    let held: Vec<usize> = ["a", "c", "d", "e"]
        .iter()
        .map(|k| memory.stored_executions(k))
        .collect();
    assert_eq!(held.iter().filter(|n| **n > 0).count(), 2);
    assert!(held[3] > 0, "the kind recorded last is kept");
}

#[tokio::test]
async fn zero_bounds_keep_nothing_and_fail_nothing() {
    let memory = InMemoryMemory::with_config(
        InMemoryMemoryConfig::default()
            .with_max_executions_per_kind(0)
            .with_max_kinds(0),
    );
    memory.record(&[fresh("a", Succeeded, 1)]).await.unwrap();
    assert_eq!(memory.reflect("a", Window::All).await.unwrap().count, 0);
}

// ---------------------------------------------------------------- reflection numbers

#[tokio::test]
async fn percentiles_match_percentile_cont_and_ignore_deferrals() {
    // 10 durations that ran, given out of order: 30, 10, 100, 20, 90, 40, 80, 50, 70, 60 ms.
    let mut history: Vec<ExecutionRecord> = [30, 10, 100, 20, 90, 40, 80, 50, 70, 60]
        .into_iter()
        .map(|d| fresh("k", Succeeded, d))
        .collect();
    history.push(fresh("k", Deferred, 1_000_000));
    let r = reflect(&history).await;
    // Sorted d[0..10] = 10..100 ms. p50: x = 4.5 → 50 + 0.5·10 = 55 ms.
    assert_eq!(r.p50, Some(ms(55)));
    // p95: x = 8.55 → 90 + 0.55·10 = 95.5 ms. p99: x = 8.91 → 90 + 0.91·10 = 99.1 ms.
    assert_eq!(r.p95, Some(Duration::from_micros(95_500)));
    assert_eq!(r.p99, Some(Duration::from_micros(99_100)));
    assert_eq!(r.count, 11);
    assert_eq!(r.deferred_rate, Some(1.0 / 11.0));
    assert_eq!(r.success_rate, Some(1.0));

    // Uneven gaps: 1, 2, 4, 8, 1000 ms. p50: x = 2 → 4 ms exactly; p95: x = 3.8 →
    // 8 + 0.8·992 = 801.6 ms; p99: x = 3.96 → 8 + 0.96·992 = 960.32 ms.
    let history: Vec<ExecutionRecord> = [1000, 8, 4, 2, 1]
        .into_iter()
        .map(|d| fresh("k", Succeeded, d))
        .collect();
    let r = reflect(&history).await;
    assert_eq!(r.p50, Some(ms(4)));
    assert_eq!(r.p95, Some(Duration::from_micros(801_600)));
    assert_eq!(r.p99, Some(Duration::from_micros(960_320)));
}

#[tokio::test]
async fn rates_follow_their_definitions() {
    let mut history = Vec::new();
    history.extend((0..6).map(|_| fresh("k", Succeeded, 10)));
    history.extend((0..2).map(|_| fresh("k", Retried, 10)));
    history.extend((0..1).map(|_| fresh("k", Failed, 10)));
    history.extend((0..3).map(|_| fresh("k", Deferred, 10)));
    history.extend((0..2).map(|_| fresh("k", Cancelled, 10)));
    let r = reflect(&history).await;
    assert_eq!(r.count, 14);
    // succeeded / (count − deferred − cancelled) = 6 / 9
    assert_eq!(r.success_rate, Some(6.0 / 9.0));
    // deferred / count = 3 / 14
    assert_eq!(r.deferred_rate, Some(3.0 / 14.0));
    // Only deferred executions: no success rate, no latency.
    let r = reflect(&[fresh("k", Deferred, 10), fresh("k", Cancelled, 10)]).await;
    assert_eq!(r.success_rate, None);
    assert_eq!(r.p50, Some(ms(10)), "cancelled executions ran");
    let r = reflect(&[fresh("k", Deferred, 10)]).await;
    assert_eq!((r.success_rate, r.p50), (None, None));
    assert_eq!(r.deferred_rate, Some(1.0));
}

#[tokio::test]
async fn retry_rescue_rate_counts_jobs_not_executions() {
    let [a, b, c, d, e, f] = [(); 6].map(|()| JobId::new());
    let inline = |job, outcome, retries| ExecutionRecord {
        inline_retries: retries,
        ..run(job, "k", outcome, 10)
    };
    let history = vec![
        // a: retried, then succeeded → rescued.
        run(a, "k", Retried, 10),
        run(a, "k", Succeeded, 10),
        // b: retried twice, then failed for good → failed, not rescued.
        run(b, "k", Retried, 10),
        run(b, "k", Retried, 10),
        run(b, "k", Failed, 10),
        // c: succeeded after two in-process retries → rescued.
        inline(c, Succeeded, 2),
        // d: a permanent failure, never retried → not among the failed-and-retried.
        run(d, "k", Failed, 10),
        // e: clean success → not counted.
        run(e, "k", Succeeded, 10),
        // f: in-process retries that did not help, then deferred → failed, not rescued.
        inline(f, Deferred, 1),
    ];
    let r = reflect(&history).await;
    // Jobs that failed: a, b, c, f; of them a and c succeeded.
    assert_eq!(r.retry_rescue_rate, Some(0.5));
    let r = reflect(&[run(e, "k", Succeeded, 1), run(d, "k", Failed, 1)]).await;
    assert_eq!(r.retry_rescue_rate, None);
}

#[tokio::test]
async fn top_errors_rank_failed_executions_by_count_then_name() {
    let failure = |outcome, class: &str| ExecutionRecord {
        error_class: Some(class.to_owned()),
        ..fresh("k", outcome, 10)
    };
    let mut history = Vec::new();
    for (class, n) in [
        ("timeout", 4),
        ("db", 3),
        ("http", 3),
        ("panic", 2),
        ("decode", 1),
        ("zeta", 1),
        ("alpha", 1),
    ] {
        history.extend((0..n).map(|i| failure(if i % 2 == 0 { Retried } else { Failed }, class)));
    }
    // Deferrals and cancellations are not errors, however many.
    history.extend((0..10).map(|_| fresh("k", Deferred, 10)));
    history.extend((0..10).map(|_| fresh("k", Cancelled, 10)));
    history.push(fresh("k", Succeeded, 10));
    let r = reflect(&history).await;
    let top: Vec<(&str, u64)> = r
        .top_errors
        .iter()
        .map(|e| (e.class.as_str(), e.count))
        .collect();
    assert_eq!(
        top,
        [
            ("timeout", 4),
            ("db", 3),
            ("http", 3),
            ("panic", 2),
            ("alpha", 1)
        ]
    );
}

#[tokio::test]
async fn every_window_gives_what_reflect_on_gives() {
    let memory = InMemoryMemory::new();
    let mut history = Vec::new();
    for i in 0..200u64 {
        let job = JobId::new();
        let outcome = [Succeeded, Retried, Failed, Deferred, Cancelled][(i % 7 % 5) as usize];
        history.push(ExecutionRecord {
            inline_retries: (i % 3) as u32,
            ..run(job, "k", outcome, (i * 37) % 1_000)
        });
        if outcome == Retried && i % 2 == 0 {
            history.push(run(job, "k", Succeeded, 5));
        }
    }
    memory.record(&history).await.unwrap();
    let refs: Vec<&ExecutionRecord> = history.iter().collect();
    assert_eq!(
        memory.reflect("k", Window::All).await.unwrap(),
        reflect_on("k", &refs)
    );
    assert_eq!(
        memory.reflect("k", Window::Last(50)).await.unwrap(),
        reflect_on("k", &refs[refs.len() - 50..])
    );
}

// ---------------------------------------------------------------- recommendation direction

/// `n` jobs: `fail` of them fail once and, of those, `rescued` then succeed; the rest
/// succeed at once. Durations `ms`.
fn history(kind: &str, n: usize, fail: usize, rescued: usize, ms: u64) -> Vec<ExecutionRecord> {
    let mut runs = Vec::new();
    for i in 0..n {
        let job = JobId::new();
        if i < fail {
            runs.push(run(job, kind, Retried, ms));
            runs.push(run(
                job,
                kind,
                if i < rescued { Succeeded } else { Failed },
                ms,
            ));
        } else {
            runs.push(run(job, kind, Succeeded, ms));
        }
    }
    runs
}

#[tokio::test]
async fn too_few_executions_are_not_confident() {
    let r = reflect(&history("k", 10, 5, 5, 100)).await;
    assert_eq!(r.count, 15);
    let rec = &r.recommendation;
    assert!(!rec.confident);
    assert_eq!(rec.strategy, StrategyChoice::Direct);
    assert_eq!(
        (rec.inline_retries, rec.hedge_delay, rec.timeout),
        (0, None, None)
    );
    assert!(
        rec.rationale.contains("only 15 executions"),
        "{}",
        rec.rationale
    );
    assert!(rec.rationale.contains("at least 20"), "{}", rec.rationale);
    // More history of the same kind makes it confident.
    let r = reflect(&history("k", 20, 5, 5, 100)).await;
    assert!(r.recommendation.confident);
}

#[tokio::test]
async fn a_tail_that_starts_below_p95_is_hedged_at_three_times_the_median() {
    // 92 fast calls and 8 slow ones: p90 (x = 89.1) is still fast, p95 (x = 94.05) is slow.
    let mut runs = Vec::new();
    runs.extend((0..92).map(|_| fresh("k", Succeeded, 10)));
    runs.extend((0..8).map(|_| fresh("k", Succeeded, 500)));
    let r = reflect(&runs).await;
    assert_eq!(
        (r.p50, r.p90, r.p95),
        (Some(ms(10)), Some(ms(10)), Some(ms(500)))
    );
    let rec = &r.recommendation;
    assert_eq!(rec.strategy, StrategyChoice::Hedged);
    assert_eq!(
        rec.hedge_delay,
        Some(ms(30)),
        "hedging at p95 would start inside the tail"
    );
    assert!(
        rec.rationale.contains("hedge after 3× p50 = 30 ms"),
        "{}",
        rec.rationale
    );
}

#[tokio::test]
async fn a_long_tail_with_high_success_is_hedged_at_p95() {
    // p50 150 ms, p95 400 ms, p99 1.2 s.
    let mut runs = Vec::new();
    runs.extend((0..90).map(|_| fresh("k", Succeeded, 150)));
    runs.extend((0..6).map(|_| fresh("k", Succeeded, 400)));
    runs.extend((0..4).map(|_| fresh("k", Succeeded, 1_200)));
    let r = reflect(&runs).await;
    assert_eq!(
        (r.p50, r.p95, r.p99),
        (Some(ms(150)), Some(ms(400)), Some(ms(1_200)))
    );
    let rec = &r.recommendation;
    assert_eq!(rec.strategy, StrategyChoice::Hedged);
    assert_eq!(rec.hedge_delay, Some(ms(400)));
    assert_eq!(rec.timeout, Some(ms(1_800)));
    assert!(
        rec.rationale
            .contains("p99 1.2 s is 8.0× p50 150 ms: tail is long, hedge after p95 400 ms"),
        "{}",
        rec.rationale
    );

    // The same durations all alike: no tail, no hedge.
    let flat: Vec<ExecutionRecord> = (0..100).map(|_| fresh("k", Succeeded, 150)).collect();
    let rec = reflect(&flat).await.recommendation;
    assert_eq!(rec.strategy, StrategyChoice::Direct);
    assert_eq!(rec.hedge_delay, None);
    assert!(rec.rationale.contains("tail is short"), "{}", rec.rationale);
}

#[tokio::test]
async fn timeout_grows_with_the_tail() {
    let timeout = |slow_ms| async move {
        let mut runs: Vec<ExecutionRecord> = (0..95).map(|_| fresh("k", Succeeded, 800)).collect();
        runs.extend((0..5).map(|_| fresh("k", Succeeded, slow_ms)));
        reflect(&runs).await.recommendation.timeout.unwrap()
    };
    let short = timeout(1_000).await;
    let long = timeout(10_000).await;
    assert_eq!(short, ms(1_500));
    assert_eq!(long, ms(15_000));
    // A fast kind still gets the floor.
    let fast: Vec<ExecutionRecord> = (0..100).map(|_| fresh("k", Succeeded, 20)).collect();
    assert_eq!(
        reflect(&fast).await.recommendation.timeout,
        Some(Duration::from_secs(1))
    );
}

#[tokio::test]
async fn retries_that_rescue_are_spent_and_ones_that_do_not_are_not() {
    // 30 of 100 jobs fail once; all 30 then succeed.
    let rec = reflect(&history("k", 100, 30, 30, 50)).await.recommendation;
    assert!(rec.confident);
    assert_eq!(rec.strategy, StrategyChoice::InlineRetry);
    assert!(rec.inline_retries > 0);
    assert!(rec.max_attempts >= 3, "{rec:?}");
    assert!(
        rec.rationale.contains("retries rescued 100%"),
        "{}",
        rec.rationale
    );

    // 30 fail once and none is rescued: retries are not worth it.
    let rec = reflect(&history("k", 100, 30, 0, 50)).await.recommendation;
    assert_eq!(rec.strategy, StrategyChoice::Direct);
    assert_eq!(rec.inline_retries, 0);
    assert!((1..=2).contains(&rec.max_attempts), "{rec:?}");
    assert!(
        rec.rationale.contains("retries rarely help"),
        "{}",
        rec.rationale
    );

    // As rescues rise, attempts never fall.
    let mut last = 0;
    for rescued in [0, 5, 10, 15, 20, 25, 30] {
        let attempts = reflect(&history("k", 100, 30, rescued, 50))
            .await
            .recommendation
            .max_attempts;
        assert!(attempts >= last, "{rescued} rescued: {attempts} < {last}");
        last = attempts;
    }
    assert_eq!(last, 5);
}

#[tokio::test]
async fn no_failures_keep_the_default_attempts() {
    let rec = reflect(&history("k", 50, 0, 0, 50)).await.recommendation;
    assert!(rec.confident);
    assert_eq!(rec.strategy, StrategyChoice::Direct);
    assert_eq!(
        rec.max_attempts,
        jobforge::memory::reflection::DEFAULT_MAX_ATTEMPTS
    );
}

#[test]
fn reflections_serialize_with_millisecond_durations() {
    let refs: Vec<ExecutionRecord> = history("k", 30, 3, 3, 250);
    let refs: Vec<&ExecutionRecord> = refs.iter().collect();
    let r = reflect_on("k", &refs);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["p50"], json!(250.0));
    assert_eq!(json["recommendation"]["strategy"], json!("inline_retry"));
    assert_eq!(json["recommendation"]["timeout"], json!(1000.0));
    let back: Reflection = serde_json::from_value(json).unwrap();
    assert_eq!(back, r);
}

#[tokio::test]
async fn the_recommendation_follows_the_recent_history() {
    let memory = InMemoryMemory::new();
    let recent = Window::Last(100);
    // A calm start: all fast, all fine.
    let calm: Vec<ExecutionRecord> = (0..100).map(|_| fresh("k", Succeeded, 100)).collect();
    memory.record(&calm).await.unwrap();
    let rec = memory.reflect("k", recent).await.unwrap().recommendation;
    assert_eq!(rec.strategy, StrategyChoice::Direct);
    assert_eq!(rec.timeout, Some(Duration::from_secs(1)));

    // Then a slow dependency: a tenth of the runs take 3 s.
    let slow: Vec<ExecutionRecord> = (0..100)
        .map(|i| fresh("k", Succeeded, if i % 10 == 0 { 3_000 } else { 100 }))
        .collect();
    memory.record(&slow).await.unwrap();
    let rec = memory.reflect("k", recent).await.unwrap().recommendation;
    assert_eq!(rec.strategy, StrategyChoice::Hedged);
    assert_eq!(rec.timeout, Some(Duration::from_millis(4_500)));

    // Then the dependency starts failing transiently, and retries rescue the jobs.
    memory.record(&history("k", 70, 30, 30, 100)).await.unwrap();
    let rec = memory.reflect("k", recent).await.unwrap().recommendation;
    assert_eq!(rec.strategy, StrategyChoice::InlineRetry);
    assert_eq!(rec.max_attempts, 5);
}
