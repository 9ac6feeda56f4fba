//! The contract every `QueueManager`, `StateManager` and `JobStore` must keep, one function
//! per clause. `tests/store_contract.rs` runs each clause as its own test on a fresh
//! instance of every store and queue; a backend passes when all of them pass.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use jobforge::queue::{DeadLetter, Envelope, Lease, QueueManager, Requeue, Reserve};
use jobforge::state::{
    CancelOutcome, Claim, Created, Finish, Heartbeat, Held, JobFilter, Page, StateManager,
    Transition, TransitionResult,
};
use jobforge::{ErrorKind, JobId, JobRecord, JobState, NewJob, Payload, WorkerId};

pub fn envelope(kind: &str, priority: i16, delay_ms: i64) -> Envelope {
    Envelope {
        id: JobId::new(),
        kind: kind.into(),
        queue: "default".into(),
        priority,
        run_at: Utc::now() + chrono::Duration::milliseconds(delay_ms),
        attempt: 0,
    }
}

fn queues() -> Vec<String> {
    vec!["default".to_owned()]
}

pub async fn reserve(
    q: &dyn QueueManager,
    worker: &WorkerId,
    max: usize,
    lease: Duration,
    wait: Duration,
) -> Vec<Lease> {
    let queues = queues();
    q.reserve(&Reserve {
        worker,
        queues: &queues,
        max,
        lease,
        wait,
    })
    .await
    .expect("reserve")
}

const LONG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- queue contract

pub async fn queue_orders_by_priority_then_run_at_then_fifo(q: Arc<dyn QueueManager>) {
    let w = WorkerId::new("w");
    let low_old = envelope("k", 0, -50);
    let low_new = envelope("k", 0, -10);
    let high = envelope("k", 5, -1);
    let low_same_a = envelope("k", 0, 0);
    let mut low_same_b = envelope("k", 0, 0);
    low_same_b.run_at = low_same_a.run_at;
    q.enqueue(&[
        low_new.clone(),
        low_same_a.clone(),
        low_same_b.clone(),
        high.clone(),
        low_old.clone(),
    ])
    .await
    .unwrap();
    let got: Vec<JobId> = reserve(q.as_ref(), &w, 10, LONG, Duration::ZERO)
        .await
        .iter()
        .map(Lease::id)
        .collect();
    assert_eq!(
        got,
        vec![
            high.id,
            low_old.id,
            low_new.id,
            low_same_a.id,
            low_same_b.id
        ]
    );
}

pub async fn queue_holds_delayed_jobs_until_due(q: Arc<dyn QueueManager>) {
    let w = WorkerId::new("w");
    let later = envelope("k", 10, 300);
    q.enqueue(std::slice::from_ref(&later)).await.unwrap();
    assert!(
        reserve(q.as_ref(), &w, 10, LONG, Duration::ZERO)
            .await
            .is_empty()
    );
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.ready, stats.delayed), (0, 1));
    // A reserve that waits long enough sees it come due.
    let got = reserve(q.as_ref(), &w, 10, LONG, Duration::from_secs(2)).await;
    assert_eq!(
        got.iter().map(Lease::id).collect::<Vec<_>>(),
        vec![later.id]
    );
}

pub async fn queue_redelivers_after_lease_expiry(q: Arc<dyn QueueManager>) {
    let a = WorkerId::new("a");
    let b = WorkerId::new("b");
    let e = envelope("k", 0, 0);
    q.enqueue(std::slice::from_ref(&e)).await.unwrap();
    let first = reserve(
        q.as_ref(),
        &a,
        1,
        Duration::from_millis(100),
        Duration::ZERO,
    )
    .await;
    assert_eq!(first.len(), 1);
    assert!(
        reserve(q.as_ref(), &b, 1, LONG, Duration::ZERO)
            .await
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = reserve(q.as_ref(), &b, 1, LONG, Duration::from_millis(500)).await;
    assert_eq!(second.iter().map(Lease::id).collect::<Vec<_>>(), vec![e.id]);
    // The stale holder can no longer extend or ack the new delivery away.
    assert_eq!(q.extend(&first, LONG).await.unwrap(), vec![false]);
    q.ack(&first).await.unwrap();
    assert_eq!(q.stats().await.unwrap().in_flight, 1);
    q.ack(&second).await.unwrap();
    assert_eq!(q.stats().await.unwrap().in_flight, 0);
}

pub async fn queue_heartbeat_keeps_lease(q: Arc<dyn QueueManager>) {
    let a = WorkerId::new("a");
    let b = WorkerId::new("b");
    q.enqueue(&[envelope("k", 0, 0)]).await.unwrap();
    let held = reserve(
        q.as_ref(),
        &a,
        1,
        Duration::from_millis(200),
        Duration::ZERO,
    )
    .await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            q.extend(&held, Duration::from_millis(200)).await.unwrap(),
            vec![true]
        );
    }
    assert!(
        reserve(q.as_ref(), &b, 1, LONG, Duration::ZERO)
            .await
            .is_empty()
    );
}

pub async fn queue_batch_reserve_and_ack(q: Arc<dyn QueueManager>) {
    let w = WorkerId::new("w");
    let jobs: Vec<Envelope> = (0..250).map(|_| envelope("k", 0, 0)).collect();
    q.enqueue(&jobs).await.unwrap();
    // Enqueueing an id twice does not duplicate it.
    q.enqueue(&jobs[..10]).await.unwrap();
    let first = reserve(q.as_ref(), &w, 100, LONG, Duration::ZERO).await;
    let second = reserve(q.as_ref(), &w, 1000, LONG, Duration::ZERO).await;
    assert_eq!((first.len(), second.len()), (100, 150));
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.ready, stats.in_flight), (0, 250));
    q.ack(&first).await.unwrap();
    q.ack(&second).await.unwrap();
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.ready, stats.in_flight, stats.delayed), (0, 0, 0));
}

pub async fn queue_requeue_and_dead_letter(q: Arc<dyn QueueManager>) {
    let w = WorkerId::new("w");
    let a = envelope("alpha", 0, 0);
    let b = envelope("beta", 0, 0);
    q.enqueue(&[a.clone(), b.clone()]).await.unwrap();
    let leases = reserve(q.as_ref(), &w, 2, LONG, Duration::ZERO).await;
    let (la, lb): (Vec<_>, Vec<_>) = leases.into_iter().partition(|l| l.id() == a.id);
    q.requeue(&[Requeue {
        lease: la[0].clone(),
        run_at: Utc::now() + chrono::Duration::seconds(60),
        attempt: 1,
    }])
    .await
    .unwrap();
    q.dead_letter(&[DeadLetter {
        lease: lb[0].clone(),
        reason: "boom".into(),
    }])
    .await
    .unwrap();
    let stats = q.stats().await.unwrap();
    assert_eq!(
        (stats.ready, stats.delayed, stats.in_flight, stats.dead),
        (0, 1, 0, 1)
    );
    assert_eq!(stats.per_kind["alpha"].delayed, 1);
    assert_eq!(stats.per_kind["beta"].dead, 1);
    // Released with an immediate run_at: delivered again.
    let q2 = envelope("gamma", 0, 0);
    q.enqueue(std::slice::from_ref(&q2)).await.unwrap();
    let l = reserve(q.as_ref(), &w, 1, LONG, Duration::ZERO).await;
    q.requeue(&[Requeue {
        lease: l[0].clone(),
        run_at: Utc::now(),
        attempt: 1,
    }])
    .await
    .unwrap();
    let again = reserve(q.as_ref(), &w, 1, LONG, Duration::ZERO).await;
    assert_eq!(again[0].id(), q2.id);
    assert_eq!(again[0].envelope.attempt, 1);
}

/// `discard` drops waiting deliveries (ready, delayed, given back) and leaves held ones to
/// their holder.
pub async fn queue_discard_drops_only_waiting_deliveries(q: Arc<dyn QueueManager>) {
    let w = WorkerId::new("w");
    let held = envelope("k", 5, 0);
    let ready = envelope("k", 0, 0);
    let delayed = envelope("k", 0, 60_000);
    let given_back = envelope("k", 0, 0);
    q.enqueue(&[held.clone(), given_back.clone()])
        .await
        .unwrap();
    let leases = reserve(q.as_ref(), &w, 2, LONG, Duration::ZERO).await;
    assert_eq!(leases.len(), 2);
    let back = leases.iter().find(|l| l.id() == given_back.id).unwrap();
    q.requeue(&[Requeue {
        lease: back.clone(),
        run_at: Utc::now() + chrono::Duration::seconds(60),
        attempt: 1,
    }])
    .await
    .unwrap();
    q.enqueue(&[ready.clone(), delayed.clone()]).await.unwrap();
    let ids = [held.id, ready.id, delayed.id, given_back.id, JobId::new()];
    assert_eq!(q.discard("default", &ids).await.unwrap(), 3);
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.ready, stats.delayed, stats.in_flight), (0, 0, 1));
    assert_eq!(stats.per_kind.get("k").map(|k| k.in_flight), Some(1));
    // Nothing more is delivered, and the held one is still its holder's to settle.
    assert!(
        reserve(q.as_ref(), &w, 10, LONG, Duration::ZERO)
            .await
            .is_empty()
    );
    let held_lease = leases.iter().find(|l| l.id() == held.id).unwrap();
    assert_eq!(
        q.extend(std::slice::from_ref(held_lease), LONG)
            .await
            .unwrap(),
        vec![true]
    );
    q.ack(std::slice::from_ref(held_lease)).await.unwrap();
    assert_eq!(q.discard("default", &ids).await.unwrap(), 0);
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.ready, stats.delayed, stats.in_flight), (0, 0, 0));
}

pub async fn queue_serves_only_named_queues(q: Arc<dyn QueueManager>) {
    let w = WorkerId::new("w");
    let mut mail = envelope("k", 0, 0);
    mail.queue = "mail".into();
    q.enqueue(&[mail.clone(), envelope("k", 0, 0)])
        .await
        .unwrap();
    let only_mail = vec!["mail".to_owned()];
    let got = q
        .reserve(&Reserve {
            worker: &w,
            queues: &only_mail,
            max: 10,
            lease: LONG,
            wait: Duration::ZERO,
        })
        .await
        .unwrap();
    assert_eq!(got.iter().map(Lease::id).collect::<Vec<_>>(), vec![mail.id]);
}

pub async fn queue_wakes_a_waiting_reserve(q: Arc<dyn QueueManager>) {
    let w = WorkerId::new("w");
    let q2 = Arc::clone(&q);
    let waiter = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let got = reserve(q2.as_ref(), &w, 1, LONG, Duration::from_secs(5)).await;
        (got.len(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    q.enqueue(&[envelope("k", 0, 0)]).await.unwrap();
    let (n, waited) = waiter.await.unwrap();
    assert_eq!(n, 1);
    assert!(
        waited < Duration::from_secs(4),
        "woken by the enqueue, not the timeout"
    );
}

// ---------------------------------------------------------------- state contract

pub fn record(job: NewJob) -> JobRecord {
    // Records are made by the orchestrator; tests build them from serde to stay on the
    // public API.
    let now = Utc::now();
    serde_json::from_value(serde_json::json!({
        "id": job.id(),
        "kind": job.kind(),
        "queue": job.queue_name(),
        "payload": {"n": 1},
        "state": "queued",
        "priority": 0,
        "attempt": 0,
        "max_attempts": 3,
        "timeout": null,
        "idempotency_key": job.key(),
        "tags": [],
        "tenant": null,
        "strategy": null,
        "run_at": now,
        "created_at": now,
        "updated_at": now,
        "started_at": null,
        "finished_at": null,
        "result": null,
        "last_error": null,
        "lease_owner": null,
        "lease_expires_at": null,
        "cancel_requested": false,
        "version": 1
    }))
    .unwrap()
}

async fn create_one(s: &dyn StateManager, job: NewJob) -> JobId {
    match s.create(vec![record(job)]).await.unwrap()[0] {
        Created::New(id) => id,
        Created::Existing(id) => panic!("expected new, got existing {id}"),
    }
}

async fn claim_one(s: &dyn StateManager, id: JobId, w: &WorkerId, lease: Duration) -> Claim {
    s.claim(&[id], w, lease).await.unwrap().remove(0)
}

fn claimed(c: Claim) -> JobRecord {
    match c {
        Claim::Claimed(r) => r,
        other => panic!("expected Claimed, got {other:?}"),
    }
}

/// Finish the claim `r` (a record as its claim returned it) by `w`.
pub fn finish(r: &JobRecord, w: &WorkerId, f: Finish) -> Transition {
    Transition {
        id: r.id,
        worker: w.clone(),
        token: r.version,
        finish: f,
    }
}

pub async fn state_claim_is_exclusive_and_counts_attempts(s: Arc<dyn StateManager>) {
    let a = WorkerId::new("a");
    let b = WorkerId::new("b");
    let id = create_one(s.as_ref(), NewJob::new("k")).await;
    let r = claimed(claim_one(s.as_ref(), id, &a, LONG).await);
    assert_eq!(
        (r.state, r.attempt, r.lease_owner.clone()),
        (JobState::Running, 1, Some(a.clone()))
    );
    assert_eq!(r.payload, Payload::from_json(r#"{"n":1}"#).unwrap());
    // A second claim while the lease lives is skipped.
    assert_eq!(
        claim_one(s.as_ref(), id, &b, LONG).await,
        Claim::Skipped {
            id,
            state: Some(JobState::Running)
        }
    );
    // Unknown ids are skipped too.
    let ghost = JobId::new();
    assert_eq!(
        claim_one(s.as_ref(), ghost, &b, LONG).await,
        Claim::Skipped {
            id: ghost,
            state: None
        }
    );
}

pub async fn state_finish_is_fenced(s: Arc<dyn StateManager>) {
    let a = WorkerId::new("a");
    let b = WorkerId::new("b");
    let id = create_one(s.as_ref(), NewJob::new("k")).await;
    let first = claimed(claim_one(s.as_ref(), id, &a, Duration::from_millis(50)).await);
    tokio::time::sleep(Duration::from_millis(80)).await;
    // b takes over the expired lease: attempt 2.
    let r = claimed(claim_one(s.as_ref(), id, &b, LONG).await);
    assert_eq!((r.attempt, r.lease_owner.clone()), (2, Some(b.clone())));
    // a's late finish is refused; b's is applied; a second finish by b is refused.
    let res = s
        .finish(vec![finish(&first, &a, Finish::Succeeded { result: None })])
        .await
        .unwrap();
    assert!(matches!(
        res[0],
        TransitionResult::Conflict {
            current: Some(JobState::Running),
            ..
        }
    ));
    let res = s
        .finish(vec![finish(
            &r,
            &b,
            Finish::Succeeded {
                result: Some(Payload::from_json("42").unwrap()),
            },
        )])
        .await
        .unwrap();
    assert!(matches!(
        res[0],
        TransitionResult::Applied {
            state: JobState::Succeeded,
            ..
        }
    ));
    let res = s
        .finish(vec![finish(
            &r,
            &b,
            Finish::Dead {
                error: "late".into(),
            },
        )])
        .await
        .unwrap();
    assert!(!res[0].is_applied());
    let r = s.get(id).await.unwrap().unwrap();
    assert_eq!(r.state, JobState::Succeeded);
    assert_eq!(r.result.as_ref().map(Payload::as_str), Some("42"));
    assert!(r.finished_at.is_some());
    // Heartbeats of both claims report the loss.
    assert_eq!(
        s.heartbeat(&[Held::of(&first), Held::of(&r)], LONG)
            .await
            .unwrap(),
        vec![Heartbeat::Lost, Heartbeat::Lost]
    );
}

pub async fn state_retry_defer_and_not_due(s: Arc<dyn StateManager>) {
    let w = WorkerId::new("w");
    let id = create_one(s.as_ref(), NewJob::new("k")).await;
    let r = claimed(claim_one(s.as_ref(), id, &w, LONG).await);
    let before = Utc::now();
    let res = s
        .finish(vec![finish(
            &r,
            &w,
            Finish::Retry {
                delay: Duration::from_secs(60),
                error: "flaky".into(),
            },
        )])
        .await
        .unwrap();
    assert!(res[0].is_applied());
    let r = s.get(id).await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.attempt, r.last_error.as_deref()),
        (JobState::Queued, 1, Some("flaky"))
    );
    assert_eq!(s.counts().await.unwrap().retried, 1, "a retry is counted");
    // Not due yet: an early delivery is told when (the delay counted from the store's
    // clock, which is this one's within a second here).
    match claim_one(s.as_ref(), id, &w, LONG).await {
        Claim::NotDue { run_at, .. } => {
            let after = (run_at - before).num_milliseconds();
            assert!((59_000..=61_000).contains(&after), "{after} ms");
        }
        other => panic!("expected NotDue, got {other:?}"),
    }
    // A deferral does not spend the attempt.
    let id2 = create_one(s.as_ref(), NewJob::new("k")).await;
    let r2 = claimed(claim_one(s.as_ref(), id2, &w, LONG).await);
    s.finish(vec![finish(
        &r2,
        &w,
        Finish::Defer {
            delay: Duration::ZERO,
            reason: "rate limited".into(),
        },
    )])
    .await
    .unwrap();
    let r2 = claimed(claim_one(s.as_ref(), id2, &w, LONG).await);
    assert_eq!(r2.attempt, 1, "deferral kept the attempt");
    assert_eq!(
        s.counts().await.unwrap().retried,
        1,
        "a deferral is not a retry"
    );
}

pub async fn state_lease_expiry_with_attempts_spent_is_dead(s: Arc<dyn StateManager>) {
    let w = WorkerId::new("w");
    let mut rec = record(NewJob::new("k"));
    rec.max_attempts = 1;
    let id = rec.id;
    s.create(vec![rec]).await.unwrap();
    claimed(claim_one(s.as_ref(), id, &w, Duration::from_millis(30)).await);
    tokio::time::sleep(Duration::from_millis(60)).await;
    match claim_one(s.as_ref(), id, &w, LONG).await {
        Claim::Exhausted { reason, .. } => assert!(reason.contains("expired"), "{reason}"),
        other => panic!("expected Exhausted, got {other:?}"),
    }
    let r = s.get(id).await.unwrap().unwrap();
    assert_eq!(r.state, JobState::Dead);
    assert!(r.last_error.unwrap().contains("no attempts left"));
}

pub async fn state_idempotency_keys(s: Arc<dyn StateManager>) {
    let first = record(NewJob::new("k").idempotency_key("order-7"));
    let second = record(NewJob::new("k").idempotency_key("order-7"));
    let other = record(NewJob::new("k").idempotency_key("order-8"));
    let first_id = first.id;
    let res = s.create(vec![first, second, other]).await.unwrap();
    assert_eq!(res[0], Created::New(first_id));
    assert_eq!(res[1], Created::Existing(first_id));
    assert!(matches!(res[2], Created::New(_)));
    let again = s
        .create(vec![record(NewJob::new("k").idempotency_key("order-7"))])
        .await
        .unwrap();
    assert_eq!(again[0], Created::Existing(first_id));
}

/// A record given twice in one batch is stored once, and an id named twice in one claim is
/// claimed once: the second of each is answered from what the first did.
pub async fn state_an_id_twice_in_one_batch_counts_once(s: Arc<dyn StateManager>) {
    let rec = record(NewJob::new("twice"));
    let id = rec.id;
    let res = s.create(vec![rec.clone(), rec]).await.unwrap();
    assert_eq!(res, vec![Created::New(id), Created::Existing(id)]);
    let w = WorkerId::new("w");
    let claims = s.claim(&[id, id], &w, LONG).await.unwrap();
    let claimed = claims
        .iter()
        .filter(|c| matches!(c, Claim::Claimed { .. }))
        .count();
    assert_eq!(claimed, 1, "{claims:?}");
    let r = s.get(id).await.unwrap().unwrap();
    assert_eq!((r.state, r.attempt), (JobState::Running, 1));
    let counts = s.counts().await.unwrap().per_kind["twice"];
    assert_eq!((counts.queued, counts.running), (0, 1));
}

pub async fn state_cancel(s: Arc<dyn StateManager>) {
    let w = WorkerId::new("w");
    let queued = create_one(s.as_ref(), NewJob::new("k")).await;
    assert_eq!(
        s.cancel(queued, "user").await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        s.get(queued).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    assert_eq!(
        s.cancel(queued, "again").await.unwrap(),
        CancelOutcome::AlreadyFinished(JobState::Cancelled)
    );
    assert!(matches!(
        claim_one(s.as_ref(), queued, &w, LONG).await,
        Claim::Skipped { .. }
    ));

    let running = create_one(s.as_ref(), NewJob::new("k")).await;
    let r = claimed(claim_one(s.as_ref(), running, &w, LONG).await);
    assert_eq!(
        s.cancel(running, "user").await.unwrap(),
        CancelOutcome::Requested
    );
    assert_eq!(
        s.heartbeat(&[Held::of(&r)], LONG).await.unwrap(),
        vec![Heartbeat::Held {
            cancel_requested: true
        }]
    );
    // A retry after a cancel request ends the job cancelled instead.
    let res = s
        .finish(vec![finish(
            &r,
            &w,
            Finish::Retry {
                delay: Duration::ZERO,
                error: "x".into(),
            },
        )])
        .await
        .unwrap();
    assert!(matches!(
        res[0],
        TransitionResult::Applied {
            state: JobState::Cancelled,
            ..
        }
    ));

    let err = s.cancel(JobId::new(), "nobody").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

pub async fn state_events_record_every_transition(s: Arc<dyn StateManager>) {
    let w = WorkerId::new("w");
    let id = create_one(s.as_ref(), NewJob::new("k")).await;
    let r = claimed(claim_one(s.as_ref(), id, &w, LONG).await);
    s.finish(vec![finish(
        &r,
        &w,
        Finish::Retry {
            delay: Duration::ZERO,
            error: "flaky".into(),
        },
    )])
    .await
    .unwrap();
    let r = claimed(claim_one(s.as_ref(), id, &w, LONG).await);
    s.finish(vec![finish(&r, &w, Finish::Succeeded { result: None })])
        .await
        .unwrap();
    let events = s.events(id).await.unwrap();
    let path: Vec<(Option<JobState>, JobState)> = events.iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(
        path,
        vec![
            (None, JobState::Queued),
            (Some(JobState::Queued), JobState::Running),
            (Some(JobState::Running), JobState::Queued),
            (Some(JobState::Queued), JobState::Running),
            (Some(JobState::Running), JobState::Succeeded),
        ]
    );
    assert_eq!(events[2].reason.as_deref(), Some("flaky"));
    assert_eq!(events[3].attempt, 2);
    assert_eq!(events[1].worker.as_ref(), Some(&w));
    assert!(events.windows(2).all(|p| p[0].at <= p[1].at));
    assert!(s.events(JobId::new()).await.unwrap().is_empty());
}

/// Every page of `filter` from the start, following cursors (a store may answer short or
/// empty pages with a cursor when its scan budget runs out); the ids in walk order.
pub async fn walk_list(s: &dyn StateManager, filter: &JobFilter, page: Page) -> Vec<JobId> {
    let mut seen = Vec::new();
    let mut at = page.clone();
    for _ in 0..10_000 {
        let got = s.list(filter, &at).await.unwrap();
        assert!(got.items.len() <= page.limit);
        seen.extend(got.items.iter().map(|r| r.id));
        match got.next {
            Some(cursor) => at = page.clone().after(cursor),
            None => return seen,
        }
    }
    panic!("the listing never ended");
}

pub async fn state_lists_filter_by_tag(s: Arc<dyn StateManager>) {
    let mut ids = Vec::new();
    for i in 0..30 {
        let mut r = record(NewJob::new(if i % 2 == 0 { "even" } else { "odd" }));
        if i % 5 == 0 {
            r.tags.push("blue".into());
        }
        if i == 29 {
            r.tags = vec!["rare".into(), "blue-ish".into()];
        }
        ids.push(r.id);
        assert!(matches!(
            s.create(vec![r]).await.unwrap()[0],
            Created::New(_)
        ));
    }
    let tagged = |tag: &str| JobFilter {
        tag: Some(tag.into()),
        ..Default::default()
    };
    let blue: Vec<JobId> = ids.iter().copied().step_by(5).collect();
    assert_eq!(
        walk_list(s.as_ref(), &tagged("blue"), Page::first(2)).await,
        blue
    );
    assert_eq!(
        walk_list(s.as_ref(), &tagged("blue"), Page::first(4).descending()).await,
        blue.iter().rev().copied().collect::<Vec<_>>()
    );
    // A tag is matched whole: `blue` is not `blue-ish`.
    assert_eq!(
        walk_list(s.as_ref(), &tagged("rare"), Page::first(10)).await,
        vec![ids[29]]
    );
    assert!(
        walk_list(s.as_ref(), &tagged("none-such"), Page::first(10))
            .await
            .is_empty()
    );
    // With a kind: the even blue ones (0, 10, 20).
    let even_blue = JobFilter {
        kind: Some("even".into()),
        tag: Some("blue".into()),
        ..Default::default()
    };
    assert_eq!(
        walk_list(s.as_ref(), &even_blue, Page::first(10)).await,
        vec![ids[0], ids[10], ids[20]]
    );
}

pub async fn state_pagination_and_filters(s: Arc<dyn StateManager>) {
    let w = WorkerId::new("w");
    let mut ids = Vec::new();
    for i in 0..25 {
        let kind = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(create_one(s.as_ref(), NewJob::new(kind)).await);
    }
    claimed(claim_one(s.as_ref(), ids[0], &w, LONG).await);
    // Walk all pages of 10, ascending.
    let mut seen = Vec::new();
    let mut page = Page::first(10);
    loop {
        let got = s.list(&JobFilter::default(), &page).await.unwrap();
        assert!(got.items.len() <= 10);
        seen.extend(got.items.iter().map(|r| r.id));
        match got.next {
            Some(cursor) => page = Page::first(10).after(cursor),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    // Descending, every kind, in pages of 7.
    let mut seen = Vec::new();
    let mut page = Page::first(7).descending();
    loop {
        let got = s.list(&JobFilter::default(), &page).await.unwrap();
        seen.extend(got.items.iter().map(|r| r.id));
        match got.next {
            Some(cursor) => page = Page::first(7).descending().after(cursor),
            None => break,
        }
    }
    assert_eq!(seen, ids.iter().rev().copied().collect::<Vec<_>>());
    // Descending, filtered by kind.
    let filter = JobFilter {
        kind: Some("odd".into()),
        ..Default::default()
    };
    let got = s
        .list(&filter, &Page::first(100).descending())
        .await
        .unwrap();
    let odd: Vec<JobId> = ids
        .iter()
        .copied()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, id)| id)
        .rev()
        .collect();
    assert_eq!(got.items.iter().map(|r| r.id).collect::<Vec<_>>(), odd);
    assert_eq!(got.next, None);
    // By state.
    let filter = JobFilter {
        state: Some(JobState::Running),
        ..Default::default()
    };
    let got = s.list(&filter, &Page::first(100)).await.unwrap();
    assert_eq!(
        got.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    // Limits are checked.
    let err = s
        .list(&JobFilter::default(), &Page::first(0))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("limit"));
}

pub async fn state_counts(s: Arc<dyn StateManager>) {
    let w = WorkerId::new("w");
    let a = create_one(s.as_ref(), NewJob::new("alpha")).await;
    create_one(s.as_ref(), NewJob::new("alpha")).await;
    let c = create_one(s.as_ref(), NewJob::new("beta")).await;
    let r = claimed(claim_one(s.as_ref(), a, &w, LONG).await);
    s.finish(vec![finish(
        &r,
        &w,
        Finish::Dead {
            error: "bad".into(),
        },
    )])
    .await
    .unwrap();
    s.cancel(c, "x").await.unwrap();
    let counts = s.counts().await.unwrap();
    assert_eq!(
        (
            counts.total.queued,
            counts.total.dead,
            counts.total.cancelled
        ),
        (1, 1, 1)
    );
    assert_eq!(counts.per_kind["alpha"].queued, 1);
    assert_eq!(counts.per_kind["alpha"].dead, 1);
    assert_eq!(counts.per_kind["beta"].cancelled, 1);
}

pub async fn state_batch_answers_in_order(s: Arc<dyn StateManager>) {
    let w = WorkerId::new("w");
    let recs: Vec<JobRecord> = (0..100).map(|_| record(NewJob::new("k"))).collect();
    let ids: Vec<JobId> = recs.iter().map(|r| r.id).collect();
    let created = s.create(recs).await.unwrap();
    assert_eq!(created.iter().map(Created::id).collect::<Vec<_>>(), ids);
    let mut probe = ids.clone();
    probe.insert(50, JobId::new());
    let claims = s.claim(&probe, &w, LONG).await.unwrap();
    assert_eq!(claims.len(), 101);
    assert!(matches!(claims[50], Claim::Skipped { state: None, .. }));
    let transitions: Vec<Transition> = claims
        .into_iter()
        .filter_map(|c| match c {
            Claim::Claimed(r) => Some(finish(&r, &w, Finish::Succeeded { result: None })),
            _ => None,
        })
        .collect();
    assert_eq!(transitions.len(), 100);
    let res = s.finish(transitions).await.unwrap();
    assert!(res.iter().all(TransitionResult::is_applied));
    assert_eq!(s.counts().await.unwrap().total.succeeded, 100);
}

/// Put the claim `r` back, due now, attempt not spent (as an open breaker does).
async fn defer_now(s: &dyn StateManager, r: &JobRecord, w: &WorkerId) {
    let res = s
        .finish(vec![finish(
            r,
            w,
            Finish::Defer {
                delay: Duration::ZERO,
                reason: "breaker open".into(),
            },
        )])
        .await
        .unwrap();
    assert!(res[0].is_applied(), "{res:?}");
}

/// The fence is the claim, not the worker: when a deferral puts the attempt back, the same
/// worker's next claim repeats (worker, attempt), yet the earlier claim can neither extend
/// nor finish the job the later one holds.
pub async fn state_fence_is_the_claim_token(s: Arc<dyn StateManager>) {
    let w = WorkerId::new("twin");
    let id = create_one(s.as_ref(), NewJob::new("k")).await;
    let first = claimed(claim_one(s.as_ref(), id, &w, LONG).await);
    defer_now(s.as_ref(), &first, &w).await;
    let second = claimed(claim_one(s.as_ref(), id, &w, LONG).await);
    assert_eq!(
        (first.attempt, second.attempt),
        (1, 1),
        "the attempt repeats"
    );
    assert_ne!(Held::of(&first), Held::of(&second));
    assert_eq!(
        s.heartbeat(&[Held::of(&first), Held::of(&second)], LONG)
            .await
            .unwrap(),
        vec![
            Heartbeat::Lost,
            Heartbeat::Held {
                cancel_requested: false
            }
        ]
    );
    let res = s
        .finish(vec![finish(
            &first,
            &w,
            Finish::Cancelled {
                reason: "stale".into(),
            },
        )])
        .await
        .unwrap();
    assert!(
        matches!(
            res[0],
            TransitionResult::Conflict {
                current: Some(JobState::Running),
                ..
            }
        ),
        "{res:?}"
    );
    let res = s
        .finish(vec![finish(
            &second,
            &w,
            Finish::Succeeded { result: None },
        )])
        .await
        .unwrap();
    assert!(res[0].is_applied(), "{res:?}");
    assert_eq!(s.get(id).await.unwrap().unwrap().state, JobState::Succeeded);
}

/// A cancel asked for while the job ran survives its worker's death: the claim that finds the
/// lease expired ends the job cancelled instead of running it again.
pub async fn state_takeover_of_a_cancel_requested_job_cancels_it(s: Arc<dyn StateManager>) {
    let a = WorkerId::new("a");
    let b = WorkerId::new("b");
    let id = create_one(s.as_ref(), NewJob::new("k")).await;
    claimed(claim_one(s.as_ref(), id, &a, Duration::from_millis(50)).await);
    assert_eq!(
        s.cancel(id, "user").await.unwrap(),
        CancelOutcome::Requested
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    match claim_one(s.as_ref(), id, &b, LONG).await {
        Claim::Cancelled { id: got, reason } => {
            assert_eq!(got, id);
            assert!(reason.contains("cancel"), "{reason}");
        }
        other => panic!("expected Cancelled, got {other:?}"),
    }
    let r = s.get(id).await.unwrap().unwrap();
    assert_eq!((r.state, r.attempt), (JobState::Cancelled, 1));
    assert!(r.finished_at.is_some() && r.lease_owner.is_none());
    let counts = s.counts().await.unwrap();
    assert_eq!((counts.total.cancelled, counts.total.running), (1, 0));
    let events = s.events(id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.from, last.to),
        (Some(JobState::Running), JobState::Cancelled)
    );
}

/// Times compared with the store's clock are counted from it: a job from a submitter whose
/// clock runs 30 s ahead is due at once (its `run_at` is read relative to its `created_at`),
/// one it delays by 2 s is due 2 s later, not 32.
pub async fn state_a_submitter_clock_ahead_delays_nothing(s: Arc<dyn StateManager>) {
    let w = WorkerId::new("w");
    let ahead = Utc::now() + chrono::Duration::seconds(30);
    let mut now_job = record(NewJob::new("k"));
    (now_job.created_at, now_job.updated_at, now_job.run_at) = (ahead, ahead, ahead);
    let mut later_job = record(NewJob::new("k"));
    (later_job.created_at, later_job.updated_at) = (ahead, ahead);
    later_job.run_at = ahead + chrono::Duration::seconds(2);
    let (now_id, later_id) = (now_job.id, later_job.id);
    s.create(vec![now_job, later_job]).await.unwrap();
    claimed(claim_one(s.as_ref(), now_id, &w, LONG).await);
    match claim_one(s.as_ref(), later_id, &w, LONG).await {
        Claim::NotDue { run_at, .. } => {
            let wait = (run_at - Utc::now()).num_milliseconds();
            assert!((1_000..=3_000).contains(&wait), "due in {wait} ms");
        }
        other => panic!("expected NotDue, got {other:?}"),
    }
}

/// A live job's history stays bounded however often it is put back (a breaker that keeps
/// deferring it): its submission, its first transition and the latest are kept.
pub async fn state_history_of_a_live_job_is_bounded(s: Arc<dyn StateManager>) {
    let w = WorkerId::new("w");
    let id = create_one(s.as_ref(), NewJob::new("k")).await;
    for _ in 0..100 {
        let r = claimed(claim_one(s.as_ref(), id, &w, LONG).await);
        defer_now(s.as_ref(), &r, &w).await;
    }
    let events = s.events(id).await.unwrap();
    assert!(
        (8..=64).contains(&events.len()),
        "{} events kept",
        events.len()
    );
    assert_eq!((events[0].from, events[0].to), (None, JobState::Queued));
    assert_eq!(
        (events[1].from, events[1].to),
        (Some(JobState::Queued), JobState::Running)
    );
    let last = events.last().unwrap();
    assert_eq!(
        (last.from, last.to, last.reason.as_deref()),
        (
            Some(JobState::Running),
            JobState::Queued,
            Some("breaker open")
        )
    );
    assert!(events.windows(2).all(|p| p[0].at <= p[1].at));
}

/// Every kind of finish means one thing on every store: the record and the history event it
/// leaves are [`JobRecord::finished`]'s, field by field, with and without a cancel request
/// pending (times to within a couple of seconds where the store's clock decides them).
pub async fn state_every_finish_means_one_thing(s: Arc<dyn StateManager>) {
    let w = WorkerId::new("w");
    let finishes = [
        Finish::Succeeded {
            result: Some(Payload::from_json(r#"{"ok":true}"#).unwrap()),
        },
        Finish::Succeeded { result: None },
        Finish::Retry {
            delay: Duration::from_secs(60),
            error: "upstream 503".into(),
        },
        Finish::Defer {
            delay: Duration::from_secs(60),
            reason: "rate limited".into(),
        },
        Finish::Release {
            reason: "shutting down".into(),
        },
        Finish::Dead {
            error: "bad input".into(),
        },
        Finish::Cancelled {
            reason: "stopped".into(),
        },
    ];
    for finish in finishes {
        for cancel in [false, true] {
            let id = create_one(s.as_ref(), NewJob::new("k")).await;
            let claim = claimed(claim_one(s.as_ref(), id, &w, LONG).await);
            if cancel {
                assert_eq!(
                    s.cancel(id, "user").await.unwrap(),
                    CancelOutcome::Requested
                );
            }
            let base = s.get(id).await.unwrap().unwrap();
            let (expected, event) = base.finished(&finish, &w, Utc::now());
            let res = s
                .finish(vec![self::finish(&claim, &w, finish.clone())])
                .await
                .unwrap();
            let what = format!("{finish:?}, cancel requested: {cancel}");
            assert_eq!(
                res[0],
                TransitionResult::Applied {
                    state: expected.state,
                    version: expected.version
                },
                "{what}"
            );
            let got = s.get(id).await.unwrap().unwrap();
            let shape = |r: &JobRecord| {
                (
                    r.state,
                    r.attempt,
                    r.version,
                    r.result.as_ref().map(|p| p.as_str().to_owned()),
                    r.last_error.clone(),
                    r.lease_owner.clone(),
                    r.lease_expires_at,
                    r.finished_at.is_some(),
                    r.cancel_requested,
                )
            };
            assert_eq!(shape(&got), shape(&expected), "{what}");
            let off = (got.run_at - expected.run_at).num_milliseconds().abs();
            assert!(off <= 2_000, "{what}: run_at {off} ms off");
            let last = s.events(id).await.unwrap().pop().unwrap();
            assert_eq!(
                (last.from, last.to, last.attempt, last.worker, last.reason),
                (
                    event.from,
                    event.to,
                    event.attempt,
                    event.worker,
                    event.reason
                ),
                "{what}"
            );
        }
    }
}

// ------------------------------------------------------ stores that are their own queue

/// The ids of claims that must all be `Claimed`.
pub fn claimed_ids(claims: Vec<Claim>) -> Vec<JobId> {
    claims
        .into_iter()
        .map(|c| match c {
            Claim::Claimed(r) => r.id,
            other => panic!("expected Claimed, got {other:?}"),
        })
        .collect()
}

/// `claim_due` takes the highest priority first, then the oldest; serves only the queues
/// asked for; holds a job back until its `run_at`, waking a waiting claim when it comes due.
pub async fn queuing_state_claims_by_priority_and_waits_for_due_jobs(
    s: Arc<dyn jobforge::store::JobStore>,
) {
    let mut high = record(NewJob::new("k"));
    high.priority = 5;
    let mut records = vec![
        record(NewJob::new("k")),
        high,
        record(NewJob::new("k")),
        record(NewJob::new("k").queue("other")),
    ];
    let mut later = record(NewJob::new("k"));
    later.run_at = Utc::now() + chrono::Duration::milliseconds(400);
    records.push(later);
    let ids: Vec<JobId> = records.iter().map(|r| r.id).collect();
    // One at a time, so creation order is certain.
    for r in records {
        s.create(vec![r]).await.unwrap();
    }
    let (low, high, low2, other, later) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let w = WorkerId::new("w");
    let queues = vec!["default".to_owned()];
    let mut req = Reserve {
        worker: &w,
        queues: &queues,
        max: 10,
        lease: LONG,
        wait: Duration::ZERO,
    };
    assert_eq!(
        claimed_ids(s.claim_due(&req).await.unwrap()),
        vec![high, low, low2]
    );
    // The delayed one comes due while a claim waits.
    req.wait = Duration::from_secs(3);
    let started = std::time::Instant::now();
    assert_eq!(claimed_ids(s.claim_due(&req).await.unwrap()), vec![later]);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    let both = vec!["default".to_owned(), "other".to_owned()];
    req.queues = &both;
    req.wait = Duration::ZERO;
    assert_eq!(claimed_ids(s.claim_due(&req).await.unwrap()), vec![other]);
    assert!(s.claim_due(&req).await.unwrap().is_empty());
    let r = s.get(later).await.unwrap().unwrap();
    assert_eq!((r.state, r.attempt), (JobState::Running, 1));
    assert_eq!(r.lease_owner.as_ref(), Some(&w));
    let stats = s.stats().await.unwrap();
    assert_eq!((stats.ready, stats.delayed, stats.in_flight), (0, 0, 5));
}

/// A claim waiting on `waiting` with nothing due starts when `submitting` (the same store,
/// or another handle on it, as in another process) creates a job, well before its poll
/// interval (the caller sets that long): the store's own wake-up explains it. `within`
/// bounds the wait.
pub async fn queuing_state_wakes_a_waiting_claim(
    waiting: Arc<dyn jobforge::store::JobStore>,
    submitting: Arc<dyn StateManager>,
    within: Duration,
) {
    let waiter = tokio::spawn(async move {
        let w = WorkerId::new("w");
        let queues = vec!["default".to_owned()];
        let req = Reserve {
            worker: &w,
            queues: &queues,
            max: 5,
            lease: LONG,
            wait: Duration::from_secs(10),
        };
        let started = std::time::Instant::now();
        let got = waiting.claim_due(&req).await.unwrap();
        (got.len(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let created = submitting
        .create(vec![record(NewJob::new("k"))])
        .await
        .unwrap();
    assert!(matches!(created[..], [Created::New(_)]));
    let (n, waited) = waiter.await.unwrap();
    assert_eq!(n, 1);
    assert!(waited < within, "woken after {waited:?}");
}

/// `claim_due` is cancel-safe: a caller that stops waiting right after the claim went out
/// (a worker shutting down) strands nothing. What the store claimed for it is handed back,
/// due now, attempt not spent; only what the caller did get stays running.
pub async fn queuing_state_claim_due_is_cancel_safe(s: Arc<dyn jobforge::store::JobStore>) {
    const N: usize = 5_000;
    let records: Vec<JobRecord> = (0..N).map(|_| record(NewJob::new("k"))).collect();
    s.create(records).await.unwrap();
    let w = WorkerId::new("w");
    let queues = vec!["default".to_owned()];
    let req = Reserve {
        worker: &w,
        queues: &queues,
        max: N,
        lease: LONG,
        wait: Duration::from_secs(5),
    };
    // The caller stops waiting after 2 ms: while a store's claim of 5,000 jobs is still on
    // its way (a store that answers sooner gives the caller what it claimed).
    let kept = match tokio::time::timeout(Duration::from_millis(2), s.claim_due(&req)).await {
        Ok(claims) => claimed_ids(claims.unwrap()).len(),
        Err(_) => 0,
    };
    // (Give a claim the caller left behind time to land, and its hand-back time to follow.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let counts = s.counts().await.unwrap();
        if counts.total.running as usize == kept && counts.total.queued as usize == N - kept {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} running, {} queued; {kept} were given to the caller",
            counts.total.running,
            counts.total.queued
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What went back runs at its first attempt.
    let req = Reserve {
        wait: Duration::ZERO,
        ..req
    };
    let mut attempts = Vec::new();
    while attempts.len() < N - kept {
        let again = s.claim_due(&req).await.unwrap();
        assert!(
            !again.is_empty(),
            "{} of {} claimed again",
            attempts.len(),
            N - kept
        );
        attempts.extend(again.iter().map(|c| match c {
            Claim::Claimed(r) => r.attempt,
            other => panic!("{other:?}"),
        }));
    }
    assert!(attempts.iter().all(|&a| a == 1));
}

/// `finish_and_claim` settles a batch and claims the next jobs in one step: finishes are
/// fenced and answered in order (a conflict among them), the claim takes due jobs by
/// priority and skips the jobs it just settled, counts and events follow both; with `max`
/// zero it only finishes.
pub async fn queuing_state_finish_and_claim_settles_then_claims(
    s: Arc<dyn jobforge::store::JobStore>,
) {
    let records: Vec<JobRecord> = (0..5).map(|_| record(NewJob::new("k"))).collect();
    let ids: Vec<JobId> = records.iter().map(|r| r.id).collect();
    for r in records {
        s.create(vec![r]).await.unwrap();
    }
    let w = WorkerId::new("w");
    let queues = vec!["default".to_owned()];
    let mut req = Reserve {
        worker: &w,
        queues: &queues,
        max: 2,
        lease: LONG,
        wait: Duration::ZERO,
    };
    let claims = s.claim_due(&req).await.unwrap();
    let held: Vec<JobRecord> = claims
        .into_iter()
        .map(|c| match c {
            Claim::Claimed(r) => r,
            other => panic!("expected Claimed, got {other:?}"),
        })
        .collect();
    assert_eq!(held.iter().map(|r| r.id).collect::<Vec<_>>(), ids[..2]);
    let finish = |r: &JobRecord, finish: Finish| Transition {
        id: r.id,
        worker: w.clone(),
        token: r.version,
        finish,
    };
    let transitions = vec![
        finish(
            &held[0],
            Finish::Succeeded {
                result: Some(Payload::from_value(&serde_json::json!(7)).unwrap()),
            },
        ),
        finish(
            &held[1],
            Finish::Retry {
                delay: Duration::from_secs(3600),
                error: "later".to_owned(),
            },
        ),
        // Never claimed: a conflict, and the job stays due for the claim.
        Transition {
            id: ids[2],
            worker: w.clone(),
            token: 99,
            finish: Finish::Succeeded { result: None },
        },
    ];
    req.max = 10;
    let answer = s.finish_and_claim(transitions, &req).await.unwrap();
    assert!(answer.claim_error.is_none(), "{:?}", answer.claim_error);
    assert!(
        matches!(
            answer.results[..],
            [
                TransitionResult::Applied {
                    state: JobState::Succeeded,
                    ..
                },
                TransitionResult::Applied {
                    state: JobState::Queued,
                    ..
                },
                TransitionResult::Conflict {
                    current: Some(JobState::Queued),
                    ..
                },
            ]
        ),
        "{:?}",
        answer.results
    );
    assert_eq!(claimed_ids(answer.claims), ids[2..]);
    let done = s.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result.unwrap().as_str(), "7");
    let later = s.get(ids[1]).await.unwrap().unwrap();
    assert_eq!(
        (later.state, later.last_error.as_deref()),
        (JobState::Queued, Some("later"))
    );
    let events = s.events(ids[0]).await.unwrap();
    assert_eq!(
        events.last().map(|e| (e.from, e.to)),
        Some((Some(JobState::Running), JobState::Succeeded)),
        "{events:?}"
    );
    let counts = s.counts().await.unwrap();
    assert_eq!(counts.retried, 1, "the retry is counted");
    let counts = counts.total;
    assert_eq!(
        (counts.queued, counts.running, counts.succeeded),
        (1, 3, 1),
        "{counts:?}"
    );

    // Only a finish: nothing claimed.
    let running = s.get(ids[3]).await.unwrap().unwrap();
    req.max = 0;
    let answer = s
        .finish_and_claim(
            vec![finish(
                &running,
                Finish::Dead {
                    error: "no".to_owned(),
                },
            )],
            &req,
        )
        .await
        .unwrap();
    assert!(answer.claims.is_empty());
    assert!(matches!(
        answer.results[..],
        [TransitionResult::Applied {
            state: JobState::Dead,
            ..
        }]
    ));
    let stats = s.stats().await.unwrap();
    assert_eq!((stats.ready, stats.delayed, stats.in_flight), (0, 1, 2));
}

/// `stats` splits the queue by kind: ready (due), delayed (submitted for later, or retried
/// after a backoff), in flight and dead, whatever the backlog's size.
pub async fn queuing_state_stats_split_the_queue_by_kind(s: Arc<dyn jobforge::store::JobStore>) {
    // Created one by one, so b's two come first in claim order.
    let b: Vec<JobRecord> = (0..2).map(|_| record(NewJob::new("b"))).collect();
    for r in &b {
        s.create(vec![r.clone()]).await.unwrap();
    }
    let w = WorkerId::new("w");
    let queues = vec!["default".to_owned()];
    let req = Reserve {
        worker: &w,
        queues: &queues,
        max: 2,
        lease: LONG,
        wait: Duration::ZERO,
    };
    let held: Vec<JobRecord> = s
        .claim_due(&req)
        .await
        .unwrap()
        .into_iter()
        .map(|c| match c {
            Claim::Claimed(r) => r,
            other => panic!("expected Claimed, got {other:?}"),
        })
        .collect();
    assert_eq!(held.len(), 2);
    let mut later = record(NewJob::new("a"));
    later.run_at = later.created_at + chrono::Duration::hours(1);
    s.create(vec![
        record(NewJob::new("a")),
        record(NewJob::new("a")),
        later,
    ])
    .await
    .unwrap();
    let stats = s.stats().await.unwrap();
    assert_eq!(
        (stats.ready, stats.delayed, stats.in_flight, stats.dead),
        (2, 1, 2, 0)
    );
    let finishes = vec![
        Transition {
            id: held[0].id,
            worker: w.clone(),
            token: held[0].version,
            finish: Finish::Dead {
                error: "no".to_owned(),
            },
        },
        Transition {
            id: held[1].id,
            worker: w.clone(),
            token: held[1].version,
            finish: Finish::Retry {
                delay: Duration::from_secs(3600),
                error: "later".to_owned(),
            },
        },
    ];
    s.finish(finishes).await.unwrap();
    let stats = s.stats().await.unwrap();
    assert_eq!(
        (stats.ready, stats.delayed, stats.in_flight, stats.dead),
        (2, 2, 0, 1)
    );
    let a = &stats.per_kind["a"];
    assert_eq!((a.ready, a.delayed, a.in_flight, a.dead), (2, 1, 0, 0));
    let b = &stats.per_kind["b"];
    assert_eq!((b.ready, b.delayed, b.in_flight, b.dead), (0, 1, 0, 1));
}

/// A progress report is kept while its claim holds the job, read back by `get` and `list`,
/// and refused (nothing written) once the claim is gone; the last one stays after the finish.
pub async fn state_progress_is_fenced_and_read_back(s: Arc<dyn StateManager>) {
    let id = create_one(s.as_ref(), NewJob::new("import")).await;
    let w = WorkerId::new("w");
    let first = claimed(claim_one(s.as_ref(), id, &w, LONG).await);
    assert_eq!(s.get(id).await.unwrap().unwrap().progress, None);
    let half = jobforge::job::Progress::new(0.5, Some("half of the rows"));
    assert!(s.report_progress(Held::of(&first), &half).await.unwrap());
    let got = s.get(id).await.unwrap().unwrap().progress.unwrap();
    assert_eq!(
        (got.fraction, got.message.as_deref()),
        (0.5, Some("half of the rows"))
    );
    let listed = s
        .list(&JobFilter::default(), &Page::first(10))
        .await
        .unwrap();
    assert_eq!(
        listed.items[0].progress.as_ref().map(|p| p.fraction),
        Some(0.5),
        "list shows it too"
    );
    // Put back and claimed again: the first claim's reports are refused.
    defer_now(s.as_ref(), &first, &w).await;
    let second = claimed(claim_one(s.as_ref(), id, &w, LONG).await);
    let stale = jobforge::job::Progress::new(0.9, Some("stale"));
    assert!(!s.report_progress(Held::of(&first), &stale).await.unwrap());
    let done = jobforge::job::Progress::new(1.0, None);
    assert!(s.report_progress(Held::of(&second), &done).await.unwrap());
    succeed(s.as_ref(), &second, &w, serde_json::Value::Null).await;
    assert!(!s.report_progress(Held::of(&second), &half).await.unwrap());
    let kept = s.get(id).await.unwrap().unwrap().progress.unwrap();
    assert_eq!((kept.fraction, kept.message), (1.0, None));
    assert!(
        !s.report_progress(
            Held {
                id: JobId::new(),
                token: 1
            },
            &half
        )
        .await
        .unwrap(),
        "an unknown job"
    );
}

// ---------------------------------------------------------------- workflow contract

/// A step record of workflow `wf`: `Pending` while it waits for `after`, with its links both
/// ways (as `Orchestrator::submit_workflow` makes them).
pub fn step_record(
    wf: JobId,
    name: &str,
    job: NewJob,
    after: &[JobId],
    dependents: &[JobId],
    policy: &str,
) -> JobRecord {
    let mut value = serde_json::to_value(record(job)).unwrap();
    value["state"] = serde_json::json!(if after.is_empty() {
        "queued"
    } else {
        "pending"
    });
    value["step"] = serde_json::json!({
        "workflow": wf,
        "workflow_name": "contract",
        "name": name,
        "depends_on": after,
        "dependents": dependents,
        "waiting_on": after.len(),
        "on_dependency_failure": policy,
    });
    serde_json::from_value(value).unwrap()
}

async fn state_of(s: &dyn StateManager, id: JobId) -> JobState {
    s.get(id).await.unwrap().expect("the step is kept").state
}

async fn claim_all_due(s: &dyn jobforge::store::JobStore, w: &WorkerId) -> Vec<JobRecord> {
    let queues = vec!["default".to_owned()];
    let req = Reserve {
        worker: w,
        queues: &queues,
        max: 100,
        lease: LONG,
        wait: Duration::ZERO,
    };
    s.claim_due(&req)
        .await
        .unwrap()
        .into_iter()
        .map(claimed)
        .collect()
}

async fn succeed(s: &dyn StateManager, r: &JobRecord, w: &WorkerId, result: serde_json::Value) {
    let out = s
        .finish(vec![finish(
            r,
            w,
            Finish::Succeeded {
                result: Some(Payload::from_value(&result).unwrap()),
            },
        )])
        .await
        .unwrap();
    assert!(out[0].is_applied(), "{out:?}");
}

fn sorted(mut ids: Vec<JobId>) -> Vec<JobId> {
    ids.sort();
    ids
}

/// A diamond a → (b, c) → d: a step is claimable only once every dependency succeeded, and
/// becomes `Queued` in the finish of its last dependency (read right after it); counts follow
/// `pending`; the history shows the move; listing by workflow finds exactly its steps.
pub async fn workflow_a_step_waits_for_every_dependency(s: Arc<dyn jobforge::store::JobStore>) {
    assert!(s.supports_workflows());
    let wf = JobId::new();
    let jobs: Vec<NewJob> = ["a", "b", "c", "d"]
        .iter()
        .map(|k| NewJob::new(*k))
        .collect();
    let [a, b, c, d] = [jobs[0].id(), jobs[1].id(), jobs[2].id(), jobs[3].id()];
    let records = vec![
        step_record(wf, "a", jobs[0].clone(), &[], &[b, c], "cancel"),
        step_record(wf, "b", jobs[1].clone(), &[a], &[d], "cancel"),
        step_record(wf, "c", jobs[2].clone(), &[a], &[d], "cancel"),
        step_record(wf, "d", jobs[3].clone(), &[b, c], &[], "cancel"),
    ];
    let created = s.create(records).await.unwrap();
    assert!(
        created.iter().all(|c| matches!(c, Created::New(_))),
        "{created:?}"
    );
    // A plain job beside it, not a step.
    let plain = create_one(s.as_ref(), NewJob::new("plain")).await;
    let counts = s.counts().await.unwrap();
    assert_eq!((counts.total.pending, counts.total.queued), (3, 2));

    let w = WorkerId::new("w");
    let first = claim_all_due(s.as_ref(), &w).await;
    assert_eq!(
        sorted(first.iter().map(|r| r.id).collect()),
        sorted(vec![a, plain])
    );
    let a_held = first.iter().find(|r| r.id == a).unwrap();
    let link = a_held
        .step
        .as_deref()
        .expect("a claimed step carries its link");
    assert_eq!((link.name.as_str(), link.workflow), ("a", wf));
    assert_eq!(sorted(link.dependents.clone()), sorted(vec![b, c]));
    assert_eq!(state_of(s.as_ref(), b).await, JobState::Pending);

    succeed(s.as_ref(), a_held, &w, serde_json::json!({"total": 42})).await;
    assert_eq!(state_of(s.as_ref(), b).await, JobState::Queued);
    assert_eq!(state_of(s.as_ref(), c).await, JobState::Queued);
    assert_eq!(state_of(s.as_ref(), d).await, JobState::Pending);

    let second = claim_all_due(s.as_ref(), &w).await;
    assert_eq!(
        sorted(second.iter().map(|r| r.id).collect()),
        sorted(vec![b, c])
    );
    succeed(s.as_ref(), &second[0], &w, serde_json::json!(1)).await;
    let d_now = s.get(d).await.unwrap().unwrap();
    assert_eq!(
        d_now.state,
        JobState::Pending,
        "one dependency of two is not enough"
    );
    assert_eq!(d_now.step.as_deref().map(|l| l.waiting_on), Some(1));
    assert!(claim_all_due(s.as_ref(), &w).await.is_empty());
    succeed(s.as_ref(), &second[1], &w, serde_json::json!(2)).await;
    assert_eq!(state_of(s.as_ref(), d).await, JobState::Queued);
    let counts = s.counts().await.unwrap();
    assert_eq!((counts.total.pending, counts.total.queued), (0, 1));

    let last = claim_all_due(s.as_ref(), &w).await;
    assert_eq!(last.iter().map(|r| r.id).collect::<Vec<_>>(), vec![d]);
    let events = s.events(d).await.unwrap();
    assert_eq!(
        events[0].to,
        JobState::Pending,
        "submitted waiting: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.from == Some(JobState::Pending) && e.to == JobState::Queued),
        "{events:?}"
    );

    let filter = JobFilter {
        workflow: Some(wf),
        ..JobFilter::default()
    };
    let listed = s.list(&filter, &Page::first(10)).await.unwrap();
    assert_eq!(
        listed.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![a, b, c, d]
    );
    let a_done = &listed.items[0];
    assert_eq!(
        a_done.result.as_ref().map(Payload::as_str),
        Some(r#"{"total":42}"#)
    );
    // A finished step stays as long as its workflow: it is not deleted alone.
    assert_eq!(
        s.delete_finished(a).await.unwrap(),
        jobforge::store::Deleted::Step
    );
    assert!(s.get(a).await.unwrap().is_some());
}

/// When a dependency ends dead: a step that cancels is cancelled (and so are the cancelling
/// steps after it), one that skips ends `Succeeded` with no result (and the step after it
/// goes on), one that runs anyway is queued. A retry settles nothing.
pub async fn workflow_failure_policies(s: Arc<dyn jobforge::store::JobStore>) {
    let wf = JobId::new();
    let job = |k: &str| NewJob::new(k);
    let (root, cancel, cancel_after, skip, skip_after, run) = (
        job("root"),
        job("cancel"),
        job("cancel_after"),
        job("skip"),
        job("skip_after"),
        job("run"),
    );
    let ids = [
        root.id(),
        cancel.id(),
        cancel_after.id(),
        skip.id(),
        skip_after.id(),
        run.id(),
    ];
    let records = vec![
        step_record(wf, "root", root, &[], &[ids[1], ids[3], ids[5]], "cancel"),
        step_record(wf, "cancel", cancel, &[ids[0]], &[ids[2]], "cancel"),
        step_record(wf, "cancel_after", cancel_after, &[ids[1]], &[], "cancel"),
        step_record(wf, "skip", skip, &[ids[0]], &[ids[4]], "skip"),
        step_record(wf, "skip_after", skip_after, &[ids[3]], &[], "cancel"),
        step_record(wf, "run", run, &[ids[0]], &[], "run"),
    ];
    s.create(records).await.unwrap();
    let w = WorkerId::new("w");
    let held = claim_all_due(s.as_ref(), &w).await;
    assert_eq!(held.iter().map(|r| r.id).collect::<Vec<_>>(), vec![ids[0]]);
    // A retry puts the root back: nothing after it moves.
    let out = s
        .finish(vec![finish(
            &held[0],
            &w,
            Finish::Retry {
                delay: Duration::ZERO,
                error: "busy".into(),
            },
        )])
        .await
        .unwrap();
    assert!(out[0].is_applied());
    assert_eq!(state_of(s.as_ref(), ids[1]).await, JobState::Pending);
    let held = claim_all_due(s.as_ref(), &w).await;
    let out = s
        .finish(vec![finish(
            &held[0],
            &w,
            Finish::Dead {
                error: "bad input".into(),
            },
        )])
        .await
        .unwrap();
    assert!(out[0].is_applied());
    let states = [
        state_of(s.as_ref(), ids[1]).await,
        state_of(s.as_ref(), ids[2]).await,
        state_of(s.as_ref(), ids[3]).await,
        state_of(s.as_ref(), ids[4]).await,
        state_of(s.as_ref(), ids[5]).await,
    ];
    assert_eq!(
        states,
        [
            JobState::Cancelled,
            JobState::Cancelled,
            JobState::Succeeded,
            JobState::Queued,
            JobState::Queued
        ]
    );
    let skipped = s.get(ids[3]).await.unwrap().unwrap();
    assert_eq!((skipped.result, skipped.attempt), (None, 0));
    let events = s.events(ids[1]).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.from, last.to),
        (Some(JobState::Pending), JobState::Cancelled)
    );
    assert!(
        last.reason
            .as_deref()
            .is_some_and(|r| r.contains(&ids[0].to_string())),
        "names the dependency: {last:?}"
    );
    let counts = s.counts().await.unwrap();
    assert_eq!(
        (
            counts.total.pending,
            counts.total.queued,
            counts.total.cancelled,
            counts.total.succeeded,
            counts.total.dead
        ),
        (0, 2, 2, 1, 1)
    );
    let due = claim_all_due(s.as_ref(), &w).await;
    assert_eq!(
        sorted(due.iter().map(|r| r.id).collect()),
        sorted(vec![ids[4], ids[5]])
    );
}

/// Cancelling a pending step cancels it (and the cancelling steps after it); cancelling a
/// queued step that others wait for cancels them too; a takeover that ends a step dead (its
/// attempts spent) settles the steps after it in the same claim.
pub async fn workflow_cancel_and_takeover_settle_dependents(s: Arc<dyn jobforge::store::JobStore>) {
    let wf = JobId::new();
    let (a, b, c) = (NewJob::new("a"), NewJob::new("b"), NewJob::new("c"));
    let (x, y) = (NewJob::new("x").max_attempts(1), NewJob::new("y"));
    let ids = [a.id(), b.id(), c.id(), x.id(), y.id()];
    let mut x_record = step_record(wf, "x", x, &[], &[ids[4]], "cancel");
    x_record.max_attempts = 1;
    s.create(vec![
        step_record(wf, "a", a, &[], &[ids[1]], "cancel"),
        step_record(wf, "b", b, &[ids[0]], &[ids[2]], "cancel"),
        step_record(wf, "c", c, &[ids[1]], &[], "run"),
        x_record,
        step_record(wf, "y", y, &[ids[3]], &[], "cancel"),
    ])
    .await
    .unwrap();
    // A pending step, cancelled: the one after it runs anyway (policy `run`), so it is queued.
    assert_eq!(
        s.cancel(ids[1], "no").await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(state_of(s.as_ref(), ids[1]).await, JobState::Cancelled);
    assert_eq!(state_of(s.as_ref(), ids[2]).await, JobState::Queued);
    // The root it waited for can still run.
    assert_eq!(state_of(s.as_ref(), ids[0]).await, JobState::Queued);

    // x: claimed with a short lease and lost; the takeover finds its attempts spent.
    let w = WorkerId::new("w");
    let claims = s
        .claim(&[ids[3]], &w, Duration::from_millis(50))
        .await
        .unwrap();
    claimed(claims.into_iter().next().unwrap());
    tokio::time::sleep(Duration::from_millis(120)).await;
    let again = s
        .claim(&[ids[3]], &WorkerId::new("w2"), LONG)
        .await
        .unwrap();
    assert!(matches!(again[0], Claim::Exhausted { .. }), "{again:?}");
    assert_eq!(state_of(s.as_ref(), ids[4]).await, JobState::Cancelled);
    let counts = s.counts().await.unwrap();
    assert_eq!(counts.total.pending, 0);
}

/// A chain of 1,000 steps whose root ends dead: every step after it is cancelled in the
/// finish that ended the root, each naming the step before it (in PostgreSQL, walked as a
/// worklist: a trigger call per link would run the server out of stack).
pub async fn workflow_a_long_chain_is_cancelled_in_one_step(s: Arc<dyn jobforge::store::JobStore>) {
    let wf = JobId::new();
    let jobs: Vec<NewJob> = (0..1_000).map(|_| NewJob::new("link")).collect();
    let ids: Vec<JobId> = jobs.iter().map(NewJob::id).collect();
    let records: Vec<JobRecord> = jobs
        .into_iter()
        .enumerate()
        .map(|(i, job)| {
            let after: Vec<JobId> = if i == 0 { vec![] } else { vec![ids[i - 1]] };
            let next: Vec<JobId> = ids.get(i + 1).copied().into_iter().collect();
            step_record(wf, &format!("link{i}"), job, &after, &next, "cancel")
        })
        .collect();
    s.create(records).await.unwrap();
    let w = WorkerId::new("w");
    let held = claim_all_due(s.as_ref(), &w).await;
    assert_eq!(held.iter().map(|r| r.id).collect::<Vec<_>>(), vec![ids[0]]);
    let out = s
        .finish(vec![finish(
            &held[0],
            &w,
            Finish::Dead {
                error: "bad input".into(),
            },
        )])
        .await
        .unwrap();
    assert!(out[0].is_applied(), "{out:?}");
    let counts = s.counts().await.unwrap();
    assert_eq!(
        (
            counts.total.pending,
            counts.total.cancelled,
            counts.total.dead
        ),
        (0, 999, 1)
    );
    let last = s.events(ids[999]).await.unwrap();
    let reason = last
        .last()
        .and_then(|e| e.reason.clone())
        .unwrap_or_default();
    assert!(reason.contains(&ids[998].to_string()), "{reason}");
}

/// `delete_finished` drops a finished job now: record, history, count, listing, and its
/// idempotency key (free for a new job); an unfinished job and an unknown id are answered,
/// not deleted.
pub async fn store_deletes_finished_jobs(s: Arc<dyn jobforge::store::JobStore>) {
    use jobforge::store::Deleted;
    let w = WorkerId::new("w");
    let done = create_one(s.as_ref(), NewJob::new("del").idempotency_key("del-key")).await;
    let waiting = create_one(s.as_ref(), NewJob::new("del")).await;
    let failed = create_one(s.as_ref(), NewJob::new("del")).await;
    let r = claimed(claim_one(s.as_ref(), done, &w, LONG).await);
    let f = claimed(claim_one(s.as_ref(), failed, &w, LONG).await);
    s.finish(vec![
        finish(&r, &w, Finish::Succeeded { result: None }),
        finish(&f, &w, Finish::Dead { error: "no".into() }),
    ])
    .await
    .unwrap();

    assert_eq!(
        s.delete_finished(waiting).await.unwrap(),
        Deleted::NotFinished(JobState::Queued)
    );
    assert_eq!(
        s.delete_finished(JobId::new()).await.unwrap(),
        Deleted::NotFound
    );
    assert_eq!(s.delete_finished(done).await.unwrap(), Deleted::Deleted);
    assert_eq!(s.delete_finished(failed).await.unwrap(), Deleted::Deleted);
    assert_eq!(
        s.delete_finished(done).await.unwrap(),
        Deleted::NotFound,
        "a deleted job is gone"
    );
    assert!(s.get(done).await.unwrap().is_none());
    assert!(
        s.get(waiting).await.unwrap().is_some(),
        "only the named job goes"
    );
    let counts = s.counts().await.unwrap();
    assert_eq!(
        (
            counts.total.queued,
            counts.total.succeeded,
            counts.total.dead
        ),
        (1, 0, 0),
        "{counts:?}"
    );
    let dead = walk_list(
        s.as_ref(),
        &JobFilter {
            state: Some(JobState::Dead),
            ..JobFilter::default()
        },
        Page::first(10),
    )
    .await;
    assert!(dead.is_empty(), "{dead:?}");
    let all = walk_list(
        s.as_ref(),
        &JobFilter {
            kind: Some("del".into()),
            ..JobFilter::default()
        },
        Page::first(10),
    )
    .await;
    assert_eq!(all, vec![waiting]);
    // The key is free again.
    let again = s
        .create(vec![record(NewJob::new("del").idempotency_key("del-key"))])
        .await
        .unwrap();
    assert!(
        matches!(again[..], [Created::New(id)] if id != done),
        "{again:?}"
    );
}

/// `queue_depths` counts queued jobs per queue, due ones per priority (highest first), and
/// leaves out what is running, cancelled or finished.
pub async fn store_reports_queue_depths(s: Arc<dyn jobforge::store::JobStore>) {
    use jobforge::queue::{PriorityDepth, QueueDepth};
    let job = |queue: &str, priority: i16| NewJob::new("depth").queue(queue).priority(priority);
    // (records as the orchestrator makes them, with their priority and delay)
    let create = |j: NewJob| {
        let mut r = JobRecord::from_job(j);
        (r.state, r.attempt, r.started_at) = (JobState::Queued, 0, None);
        let s = Arc::clone(&s);
        async move {
            let id = r.id;
            s.create(vec![r]).await.unwrap();
            id
        }
    };
    for j in [
        job("alpha", 5),
        job("alpha", 5),
        job("alpha", 0),
        job("alpha", 0).delay(Duration::from_secs(3600)),
        job("beta", 0),
    ] {
        create(j).await;
    }
    // Cancelled while due, and claimed: neither waits any more.
    let cancelled = create(job("alpha", 5)).await;
    s.cancel(cancelled, "no").await.unwrap();
    let running = create(job("beta", 9)).await;
    claimed(claim_one(s.as_ref(), running, &WorkerId::new("w"), LONG).await);

    let depths = s.queue_depths().await.unwrap();
    let ready = |pairs: &[(i16, u64)]| -> Vec<PriorityDepth> {
        pairs
            .iter()
            .map(|&(priority, ready)| PriorityDepth { priority, ready })
            .collect()
    };
    assert_eq!(
        depths,
        vec![
            QueueDepth {
                queue: "alpha".into(),
                ready: ready(&[(5, 2), (0, 1)]),
                delayed: 1,
                at_least: false,
            },
            QueueDepth {
                queue: "beta".into(),
                ready: ready(&[(0, 1)]),
                delayed: 0,
                at_least: false,
            },
        ]
    );
}

/// A job's W3C trace context is kept as submitted, and a claim hands it to the worker (each
/// attempt's span is its child).
pub async fn state_keeps_the_trace_context(s: Arc<dyn StateManager>) {
    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut r = JobRecord::from_job(NewJob::new("traced").traceparent(TRACE));
    (r.state, r.attempt, r.started_at) = (JobState::Queued, 0, None);
    let id = r.id;
    let plain = record(NewJob::new("traced"));
    let plain_id = plain.id;
    s.create(vec![r, plain]).await.unwrap();
    let got = s.get(id).await.unwrap().unwrap();
    assert_eq!(got.traceparent.as_deref(), Some(TRACE));
    let none = s.get(plain_id).await.unwrap().unwrap();
    assert_eq!(none.traceparent, None);
    let claimed = claimed(claim_one(s.as_ref(), id, &WorkerId::new("w"), LONG).await);
    assert_eq!(
        claimed.traceparent.as_deref(),
        Some(TRACE),
        "the claim carries it"
    );
}
