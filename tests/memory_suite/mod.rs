//! The contract every `Memory` must keep. Each backend's test file runs [`run_all`] (or the
//! single functions) against fresh instances; a backend passes when all of them pass.
//!
//! The suite assumes a backend with the default limits or looser ones than the sizes it
//! uses as "clearly too big" (a 2 MiB value, 10,000 tags), and the system clock: its one
//! timing test sleeps 1.1 s past a 1 s TTL.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobforge::memory::{
    EntryQuery, ExecutionRecord, NewEntry, OutcomeClass, StrategyChoice, Window,
};
use jobforge::{ErrorKind, JobId, Memory};
use serde_json::json;

/// Run every test of the suite, each on a fresh memory from `make`.
pub async fn run_all(make: &dyn Fn() -> Arc<dyn Memory>) {
    put_then_get_round_trips(make()).await;
    put_replaces_and_bumps_the_version(make()).await;
    get_of_a_missing_entry_is_none(make()).await;
    update_replaces_the_value_and_keeps_tags_and_expiry(make()).await;
    update_with_a_stale_version_conflicts(make()).await;
    update_of_a_missing_entry_is_not_found(make()).await;
    concurrent_updates_at_one_version_have_one_winner(make()).await;
    delete_says_whether_it_existed(make()).await;
    namespaces_are_separate(make()).await;
    search_filters_by_prefix_and_tags_in_key_order(make()).await;
    search_limit_must_be_1_to_1000(make()).await;
    bad_input_is_rejected_naming_the_field(make()).await;
    entries_expire_after_their_ttl(make()).await;
    record_and_reflect_count_by_outcome(make()).await;
    reflect_honours_the_window(make()).await;
    reflect_of_an_unknown_kind_is_empty_and_not_confident(make()).await;
    reflect_recommends_from_history(make()).await;
    reflect_names_the_error_classes_retries_never_rescue(make()).await;
}

/// One execution of `job`.
pub fn run(job: JobId, kind: &str, outcome: OutcomeClass, ms: u64) -> ExecutionRecord {
    ExecutionRecord {
        job_id: job,
        kind: kind.to_owned(),
        strategy: "direct".to_owned(),
        outcome,
        duration: Duration::from_millis(ms),
        attempt: 1,
        inline_retries: 0,
        error_class: match outcome {
            OutcomeClass::Succeeded => None,
            OutcomeClass::Retried | OutcomeClass::Failed => Some("boom".to_owned()),
            OutcomeClass::Deferred => Some("deferred".to_owned()),
            OutcomeClass::Cancelled => Some("cancelled".to_owned()),
        },
        at: Utc::now(),
        decision: None,
    }
}

/// One execution of a fresh job.
pub fn fresh(kind: &str, outcome: OutcomeClass, ms: u64) -> ExecutionRecord {
    run(JobId::new(), kind, outcome, ms)
}

/// The same execution finished at `at`.
pub fn at(mut record: ExecutionRecord, at: DateTime<Utc>) -> ExecutionRecord {
    record.at = at;
    record
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------- entries

pub async fn put_then_get_round_trips(m: Arc<dyn Memory>) {
    let value = json!({"name": "Ada", "visits": [1, 2, 3], "vip": true});
    let put = m
        .put(
            NewEntry::new("users", "u:1", value.clone())
                .tag("a")
                .tag("b"),
        )
        .await
        .unwrap();
    assert_eq!(put.namespace, "users");
    assert_eq!(put.key, "u:1");
    assert_eq!(put.value, value);
    assert_eq!(put.tags, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(put.version, 1);
    assert_eq!(put.created_at, put.updated_at);
    assert_eq!(put.expires_at, None);

    let got = m.get("users", "u:1").await.unwrap().expect("stored");
    assert_eq!(got, put);
}

pub async fn put_replaces_and_bumps_the_version(m: Arc<dyn Memory>) {
    let first = m
        .put(NewEntry::new("ns", "k", json!(1)).tag("old"))
        .await
        .unwrap();
    let second = m
        .put(NewEntry::new("ns", "k", json!(2)).tag("new"))
        .await
        .unwrap();
    assert_eq!(second.version, first.version + 1);
    assert_eq!(second.value, json!(2));
    assert_eq!(second.tags, vec!["new".to_owned()]);
    assert_eq!(second.created_at, first.created_at);
    assert!(second.updated_at >= first.updated_at);
    assert_eq!(m.get("ns", "k").await.unwrap().unwrap(), second);
    // Replacing drops the old tags from search.
    let old = m
        .search(&EntryQuery::namespace("ns").tag("old"))
        .await
        .unwrap();
    assert!(old.is_empty());
}

pub async fn get_of_a_missing_entry_is_none(m: Arc<dyn Memory>) {
    assert_eq!(m.get("ns", "nothing").await.unwrap(), None);
    m.put(NewEntry::new("ns", "k", json!(1))).await.unwrap();
    assert_eq!(m.get("other", "k").await.unwrap(), None);
}

pub async fn update_replaces_the_value_and_keeps_tags_and_expiry(m: Arc<dyn Memory>) {
    let put = m
        .put(
            NewEntry::new("ns", "k", json!({"n": 1}))
                .tag("t")
                .ttl(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let updated = m.update("ns", "k", json!({"n": 2}), None).await.unwrap();
    assert_eq!(updated.value, json!({"n": 2}));
    assert_eq!(updated.version, put.version + 1);
    assert_eq!(updated.tags, put.tags);
    assert_eq!(updated.expires_at, put.expires_at);
    assert_eq!(updated.created_at, put.created_at);
    let again = m
        .update("ns", "k", json!({"n": 3}), Some(updated.version))
        .await
        .unwrap();
    assert_eq!(again.version, updated.version + 1);
    assert_eq!(m.get("ns", "k").await.unwrap().unwrap(), again);
}

pub async fn update_with_a_stale_version_conflicts(m: Arc<dyn Memory>) {
    let put = m.put(NewEntry::new("ns", "k", json!("a"))).await.unwrap();
    m.update("ns", "k", json!("b"), Some(put.version))
        .await
        .unwrap();
    let err = m
        .update("ns", "k", json!("c"), Some(put.version))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.is_retryable());
    assert!(err.message().contains("version"), "{err}");
    // The losing write changed nothing.
    assert_eq!(m.get("ns", "k").await.unwrap().unwrap().value, json!("b"));
}

pub async fn update_of_a_missing_entry_is_not_found(m: Arc<dyn Memory>) {
    for expected in [None, Some(1)] {
        let err = m
            .update("ns", "missing", json!(1), expected)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
    // Update never creates.
    assert_eq!(m.get("ns", "missing").await.unwrap(), None);
}

pub async fn concurrent_updates_at_one_version_have_one_winner(m: Arc<dyn Memory>) {
    let put = m
        .put(NewEntry::new("ns", "counter", json!(0)))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let m = Arc::clone(&m);
            tokio::spawn(
                async move { m.update("ns", "counter", json!(i), Some(put.version)).await },
            )
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(entry) => {
                won += 1;
                assert_eq!(entry.version, put.version + 1);
            }
            Err(err) => assert_eq!(err.kind(), ErrorKind::Conflict),
        }
    }
    assert_eq!(won, 1);
    let entry = m.get("ns", "counter").await.unwrap().unwrap();
    assert_eq!(entry.version, put.version + 1);
}

pub async fn delete_says_whether_it_existed(m: Arc<dyn Memory>) {
    m.put(NewEntry::new("ns", "k", json!(1))).await.unwrap();
    assert!(m.delete("ns", "k").await.unwrap());
    assert!(!m.delete("ns", "k").await.unwrap());
    assert_eq!(m.get("ns", "k").await.unwrap(), None);
    // Written again after a delete, it starts over.
    let again = m.put(NewEntry::new("ns", "k", json!(2))).await.unwrap();
    assert_eq!(again.version, 1);
}

pub async fn namespaces_are_separate(m: Arc<dyn Memory>) {
    m.put(NewEntry::new("a", "k", json!("in a"))).await.unwrap();
    m.put(NewEntry::new("b", "k", json!("in b"))).await.unwrap();
    assert_eq!(m.get("a", "k").await.unwrap().unwrap().value, json!("in a"));
    assert_eq!(m.get("b", "k").await.unwrap().unwrap().value, json!("in b"));
    assert!(m.delete("a", "k").await.unwrap());
    assert!(m.get("b", "k").await.unwrap().is_some());
    let in_b = m.search(&EntryQuery::namespace("b")).await.unwrap();
    assert_eq!(in_b.len(), 1);
}

pub async fn search_filters_by_prefix_and_tags_in_key_order(m: Arc<dyn Memory>) {
    // Written out of order on purpose.
    for (key, tags) in [
        ("user:3", vec!["vip", "eu"]),
        ("user:1", vec!["eu"]),
        ("order:1", vec!["vip", "eu"]),
        ("user:2", vec!["vip", "eu", "new"]),
        ("user:10", vec!["vip"]),
    ] {
        let mut entry = NewEntry::new("shop", key, json!(key));
        for tag in tags {
            entry = entry.tag(tag);
        }
        m.put(entry).await.unwrap();
    }
    m.put(NewEntry::new("elsewhere", "user:1", json!(0)).tag("vip"))
        .await
        .unwrap();

    let keys = |entries: Vec<jobforge::memory::Entry>| -> Vec<String> {
        entries.into_iter().map(|e| e.key).collect()
    };
    let all = m.search(&EntryQuery::namespace("shop")).await.unwrap();
    assert_eq!(
        keys(all),
        ["order:1", "user:1", "user:10", "user:2", "user:3"]
    );
    let users = m
        .search(&EntryQuery::namespace("shop").prefix("user:"))
        .await
        .unwrap();
    assert_eq!(keys(users), ["user:1", "user:10", "user:2", "user:3"]);
    let vip_eu_users = m
        .search(
            &EntryQuery::namespace("shop")
                .prefix("user:")
                .tag("vip")
                .tag("eu"),
        )
        .await
        .unwrap();
    assert_eq!(keys(vip_eu_users), ["user:2", "user:3"]);
    let limited = m
        .search(&EntryQuery::namespace("shop").tag("vip").limit(2))
        .await
        .unwrap();
    assert_eq!(keys(limited), ["order:1", "user:10"]);
    let none = m
        .search(&EntryQuery::namespace("shop").tag("missing"))
        .await
        .unwrap();
    assert!(none.is_empty());
    let unknown = m.search(&EntryQuery::namespace("nobody")).await.unwrap();
    assert!(unknown.is_empty());
    // A prefix is a plain prefix, not a pattern.
    let pattern = m
        .search(&EntryQuery::namespace("shop").prefix("user%"))
        .await
        .unwrap();
    assert!(pattern.is_empty());
}

pub async fn search_limit_must_be_1_to_1000(m: Arc<dyn Memory>) {
    for limit in [0, 1_001, usize::MAX] {
        let err = m
            .search(&EntryQuery::namespace("ns").limit(limit))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(err.field(), Some("limit"));
        assert!(err.to_string().contains("limit"), "{err}");
    }
    for limit in [1, 1_000] {
        m.search(&EntryQuery::namespace("ns").limit(limit))
            .await
            .unwrap();
    }
}

pub async fn bad_input_is_rejected_naming_the_field(m: Arc<dyn Memory>) {
    let ok = || NewEntry::new("ns", "k", json!(1));
    let mut too_many_tags = ok();
    too_many_tags.tags = (0..10_000).map(|i| format!("t{i}")).collect();
    let cases: Vec<(NewEntry, &str)> = vec![
        (NewEntry::new("", "k", json!(1)), "namespace"),
        (NewEntry::new("n".repeat(129), "k", json!(1)), "namespace"),
        (NewEntry::new("bad\nns", "k", json!(1)), "namespace"),
        (NewEntry::new("ns", "", json!(1)), "key"),
        (NewEntry::new("ns", "k".repeat(257), json!(1)), "key"),
        (NewEntry::new("ns", "bad\u{0}key", json!(1)), "key"),
        (
            NewEntry::new("ns", "k", json!("x".repeat(2 << 20))),
            "value",
        ),
        (too_many_tags, "tags"),
        (ok().tag(""), "tags"),
        (ok().tag("bad\ttag"), "tags"),
        (ok().ttl(Duration::ZERO), "ttl"),
    ];
    for (entry, field) in cases {
        let err = m.put(entry).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert_eq!(err.field(), Some(field), "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
    // Nothing was stored by the failed writes.
    assert!(
        m.search(&EntryQuery::namespace("ns"))
            .await
            .unwrap()
            .is_empty()
    );

    // Limits are inclusive: exactly 128 and 256 bytes are fine.
    m.put(NewEntry::new("n".repeat(128), "k".repeat(256), json!(1)))
        .await
        .unwrap();

    // Reads, updates, deletes and searches check their input too.
    let err = m.get("", "k").await.unwrap_err();
    assert_eq!(err.field(), Some("namespace"));
    let err = m.get("ns", "k".repeat(257).as_str()).await.unwrap_err();
    assert_eq!(err.field(), Some("key"));
    let err = m.delete("ns", "").await.unwrap_err();
    assert_eq!(err.field(), Some("key"));
    m.put(ok()).await.unwrap();
    let err = m
        .update("ns", "k", json!("x".repeat(2 << 20)), None)
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("value"));
    assert_eq!(m.get("ns", "k").await.unwrap().unwrap().value, json!(1));
    let err = m
        .search(&EntryQuery::namespace("ns").prefix("a\u{1b}"))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("key_prefix"));
    let err = m.reflect("", Window::All).await.unwrap_err();
    assert_eq!(err.field(), Some("kind"));
}

/// The one timing test: a 1 s TTL on the backend's own clock.
pub async fn entries_expire_after_their_ttl(m: Arc<dyn Memory>) {
    let put = m
        .put(
            NewEntry::new("ns", "short", json!(1))
                .tag("t")
                .ttl(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let expires_at = put.expires_at.expect("a TTL sets expires_at");
    let lifetime = expires_at - put.updated_at;
    assert_eq!(lifetime.num_milliseconds(), 1_000);
    m.put(NewEntry::new("ns", "long", json!(2)).tag("t"))
        .await
        .unwrap();
    assert!(m.get("ns", "short").await.unwrap().is_some());

    tokio::time::sleep(Duration::from_millis(1_100)).await;

    assert_eq!(m.get("ns", "short").await.unwrap(), None);
    let found = m
        .search(&EntryQuery::namespace("ns").tag("t"))
        .await
        .unwrap();
    assert_eq!(
        found.into_iter().map(|e| e.key).collect::<Vec<_>>(),
        ["long"]
    );
    let err = m.update("ns", "short", json!(3), None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(!m.delete("ns", "short").await.unwrap());
    // Written again, an expired key is a new entry.
    let again = m.put(NewEntry::new("ns", "short", json!(4))).await.unwrap();
    assert_eq!(again.version, 1);
    assert_eq!(again.expires_at, None);
}

// ---------------------------------------------------------------- executions

pub async fn record_and_reflect_count_by_outcome(m: Arc<dyn Memory>) {
    use OutcomeClass::*;
    let mut batch = Vec::new();
    // 10 durations 10..=100 ms that ran: 6 succeeded, 2 retried, 1 failed, 1 cancelled.
    let outcomes = [
        Succeeded, Succeeded, Retried, Succeeded, Failed, Succeeded, Retried, Succeeded, Cancelled,
        Succeeded,
    ];
    for (i, outcome) in outcomes.into_iter().enumerate() {
        batch.push(fresh("resize", outcome, (i as u64 + 1) * 10));
    }
    // Two deferrals: counted, but no latency.
    batch.push(fresh("resize", Deferred, 60_000));
    batch.push(fresh("resize", Deferred, 60_000));
    // Another kind in the same batch stays apart.
    batch.push(fresh("email", Succeeded, 5));
    m.record(&batch[..5]).await.unwrap();
    m.record(&batch[5..]).await.unwrap();
    m.record(&[]).await.unwrap();

    let r = m.reflect("resize", Window::All).await.unwrap();
    assert_eq!(r.kind, "resize");
    assert_eq!(r.count, 12);
    assert_eq!(
        (r.succeeded, r.retried, r.failed, r.deferred, r.cancelled),
        (6, 2, 1, 2, 1)
    );
    // 6 / (12 − 2 − 1)
    assert_eq!(r.success_rate, Some(6.0 / 9.0));
    assert_eq!(r.deferred_rate, Some(2.0 / 12.0));
    // percentile_cont over 10..=100 ms.
    assert_eq!(r.p50, Some(ms(55)));
    assert_eq!(r.p95, Some(Duration::from_micros(95_500)));
    assert_eq!(r.p99, Some(Duration::from_micros(99_100)));
    assert_eq!(r.top_errors.len(), 1);
    assert_eq!(r.top_errors[0].class, "boom");
    assert_eq!(r.top_errors[0].count, 3);

    let email = m.reflect("email", Window::All).await.unwrap();
    assert_eq!((email.count, email.succeeded), (1, 1));
    assert_eq!(email.p50, Some(ms(5)));
}

pub async fn reflect_honours_the_window(m: Arc<dyn Memory>) {
    let now = Utc::now();
    let hours_ago = |h: i64| now - chrono::Duration::hours(h);
    // Recorded oldest first: 3 failures two days ago, then 4 successes in the last hour.
    let mut batch: Vec<ExecutionRecord> = (0..3)
        .map(|_| at(fresh("k", OutcomeClass::Failed, 100), hours_ago(48)))
        .collect();
    batch.extend((0..4).map(|i| at(fresh("k", OutcomeClass::Succeeded, 10 + i), hours_ago(0))));
    m.record(&batch).await.unwrap();

    let all = m.reflect("k", Window::All).await.unwrap();
    assert_eq!(all.count, 7);
    let last = m.reflect("k", Window::Last(5)).await.unwrap();
    assert_eq!((last.count, last.failed, last.succeeded), (5, 1, 4));
    let more_than_kept = m.reflect("k", Window::Last(1_000)).await.unwrap();
    assert_eq!(more_than_kept.count, 7);
    let none = m.reflect("k", Window::Last(0)).await.unwrap();
    assert_eq!(none.count, 0);
    let recent = m
        .reflect("k", Window::Since(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!((recent.count, recent.succeeded), (4, 4));
    assert_eq!(recent.success_rate, Some(1.0));
    let week = m
        .reflect("k", Window::Since(Duration::from_secs(7 * 24 * 3600)))
        .await
        .unwrap();
    assert_eq!(week.count, 7);
}

pub async fn reflect_of_an_unknown_kind_is_empty_and_not_confident(m: Arc<dyn Memory>) {
    let r = m.reflect("never-ran", Window::All).await.unwrap();
    assert_eq!(r.kind, "never-ran");
    assert_eq!(r.count, 0);
    assert_eq!(r.success_rate, None);
    assert_eq!(r.deferred_rate, None);
    assert_eq!((r.p50, r.p95, r.p99), (None, None, None));
    assert_eq!(r.retry_rescue_rate, None);
    assert!(r.top_errors.is_empty());
    assert!(!r.recommendation.confident);
    assert_eq!(r.recommendation.strategy, StrategyChoice::Direct);
    assert!(!r.recommendation.rationale.is_empty());
}

pub async fn reflect_recommends_from_history(m: Arc<dyn Memory>) {
    // 100 successes: 90 at 100 ms, 6 at 400 ms, 4 at 2 s. A long tail and a high success
    // rate: p50 100 ms, p95 400 ms, p99 2 s.
    let mut batch: Vec<ExecutionRecord> = (0..90)
        .map(|_| fresh("slow-tail", OutcomeClass::Succeeded, 100))
        .collect();
    batch.extend((0..6).map(|_| fresh("slow-tail", OutcomeClass::Succeeded, 400)));
    batch.extend((0..4).map(|_| fresh("slow-tail", OutcomeClass::Succeeded, 2_000)));
    m.record(&batch).await.unwrap();
    let r = m.reflect("slow-tail", Window::All).await.unwrap();
    let rec = &r.recommendation;
    assert!(rec.confident);
    assert_eq!(rec.strategy, StrategyChoice::Hedged);
    assert_eq!(
        (r.p50, r.p95, r.p99),
        (Some(ms(100)), Some(ms(400)), Some(ms(2_000)))
    );
    // p90 (x = 89.1) = 100 + 0.1·300 = 130 ms. The tail starts below p95 400 ms: the hedge
    // starts at 3 × p50 = 300 ms.
    assert_eq!(r.p90, Some(ms(130)));
    assert_eq!(rec.hedge_delay, Some(ms(300)));
    assert_eq!(rec.timeout, Some(ms(3_000)));
    assert!(rec.rationale.contains("tail is long"), "{}", rec.rationale);
}

/// Per error class: the jobs that failed with it and how many succeeded later; a class with
/// at least `NO_RETRY_MIN_JOBS` jobs and none rescued is named in `no_retry_classes`, the
/// kind's other classes keep their retries.
pub async fn reflect_names_the_error_classes_retries_never_rescue(m: Arc<dyn Memory>) {
    let class = |mut r: ExecutionRecord, c: &str| {
        r.error_class = Some(c.to_owned());
        r
    };
    let mut batch: Vec<ExecutionRecord> = (0..30)
        .map(|_| fresh("parse", OutcomeClass::Succeeded, 10))
        .collect();
    // Six jobs with a bad payload: retried, then dead; never rescued.
    for _ in 0..6 {
        let job = JobId::new();
        batch.push(class(
            run(job, "parse", OutcomeClass::Retried, 10),
            "bad_payload",
        ));
        batch.push(class(
            run(job, "parse", OutcomeClass::Failed, 10),
            "bad_payload",
        ));
    }
    // Eight jobs that timed out once and then succeeded.
    for _ in 0..8 {
        let job = JobId::new();
        batch.push(class(
            run(job, "parse", OutcomeClass::Retried, 10),
            "timeout",
        ));
        batch.push(run(job, "parse", OutcomeClass::Succeeded, 10));
    }
    m.record(&batch).await.unwrap();
    let r = m.reflect("parse", Window::All).await.unwrap();
    let by_class: Vec<(String, u64, u64, u64, u64)> = r
        .top_errors
        .iter()
        .map(|e| (e.class.clone(), e.count, e.jobs, e.rescued, e.failed))
        .collect();
    assert_eq!(
        by_class,
        [
            ("bad_payload".to_owned(), 12, 6, 0, 6),
            ("timeout".to_owned(), 8, 8, 8, 0)
        ]
    );
    // 8 of the 14 failed jobs were rescued; without the 6 bad payloads, all 8 were.
    assert_eq!(r.retry_rescue_rate, Some(8.0 / 14.0));
    assert_eq!(r.transient_rescue_rate, Some(1.0));
    let rec = &r.recommendation;
    assert!(rec.confident);
    assert_eq!(rec.no_retry_classes, ["bad_payload"]);
    // Judged without the bad payloads, the timeouts are retried in process.
    assert_eq!(
        rec.strategy,
        StrategyChoice::InlineRetry,
        "{}",
        rec.rationale
    );
    assert_eq!(rec.max_attempts, 5, "{}", rec.rationale);
    assert!(
        rec.rationale
            .contains("retries never rescued `bad_payload` (6 jobs)"),
        "{}",
        rec.rationale
    );
}
