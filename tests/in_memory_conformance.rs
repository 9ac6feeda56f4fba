//! The shared backend contract, run on the in-memory queue and state.

mod conformance;

use jobforge::queue::{InMemoryQueue, QueueManager};
use jobforge::state::{InMemoryState, StateManager};

use std::time::Duration;

use chrono::Utc;
use jobforge::queue::{DeadLetter, InMemoryQueueConfig, Reserve};
use jobforge::state::{Claim, Created, Finish, InMemoryStateConfig, Transition};
use jobforge::{NewJob, WorkerId};

#[tokio::test]
async fn finished_jobs_leave_the_in_memory_state_after_retention() {
    let state = InMemoryState::with_config(InMemoryStateConfig::default().with_max_finished(5));
    let w = WorkerId::new("w");
    let records: Vec<_> = (0..10)
        .map(|i| conformance::record(NewJob::new("k").idempotency_key(format!("key-{i}"))))
        .collect();
    let ids: Vec<_> = records.iter().map(|r| r.id).collect();
    state.create(records).await.unwrap();
    let claims = state
        .claim(&ids, &w, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(claims.iter().all(|c| matches!(c, Claim::Claimed(_))));
    let done = ids
        .iter()
        .zip(&claims)
        .map(|(id, claim)| Transition {
            id: *id,
            worker: w.clone(),
            token: match claim {
                Claim::Claimed(r) => r.version,
                other => panic!("{other:?}"),
            },
            finish: Finish::Succeeded { result: None },
        })
        .collect();
    state.finish(done).await.unwrap();
    // Only the 5 most recently finished are kept; counts and keys follow.
    assert_eq!(state.len(), 5);
    for id in &ids[..5] {
        assert!(
            state.get(*id).await.unwrap().is_none(),
            "dropped after retention"
        );
    }
    for id in &ids[5..] {
        assert!(state.get(*id).await.unwrap().is_some());
    }
    assert_eq!(state.counts().await.unwrap().total.succeeded, 5);
    // The dropped job's idempotency key is free again.
    let again = conformance::record(NewJob::new("k").idempotency_key("key-0"));
    assert!(matches!(
        state.create(vec![again]).await.unwrap()[0],
        Created::New(_)
    ));
    let kept = conformance::record(NewJob::new("k").idempotency_key("key-9"));
    assert_eq!(
        state.create(vec![kept]).await.unwrap()[0],
        Created::Existing(ids[9])
    );

    // Age-based retention: a zero retention drops finished jobs at the next sweep.
    let state =
        InMemoryState::with_config(InMemoryStateConfig::default().with_retention(Duration::ZERO));
    let r = conformance::record(NewJob::new("k"));
    let id = r.id;
    state.create(vec![r]).await.unwrap();
    state.cancel(id, "x").await.unwrap();
    state.sweep();
    assert!(state.is_empty());
}

#[tokio::test]
async fn the_in_memory_dead_letter_list_is_bounded() {
    let queue =
        InMemoryQueue::with_config(InMemoryQueueConfig::default().with_dead_letter_capacity(3));
    let w = WorkerId::new("w");
    let jobs: Vec<_> = (0..5).map(|_| conformance::envelope("k", 0, 0)).collect();
    queue.enqueue(&jobs).await.unwrap();
    let queues = vec!["default".to_owned()];
    let leases = queue
        .reserve(&Reserve {
            worker: &w,
            queues: &queues,
            max: 5,
            lease: Duration::from_secs(30),
            wait: Duration::ZERO,
        })
        .await
        .unwrap();
    let dead: Vec<DeadLetter> = leases
        .into_iter()
        .map(|lease| DeadLetter {
            lease,
            reason: format!("boom at {}", Utc::now()),
        })
        .collect();
    queue.dead_letter(&dead).await.unwrap();
    let kept = queue.dead_letters(10);
    assert_eq!(kept.len(), 3, "the oldest are dropped past the capacity");
    assert_eq!(kept[0].0.id, jobs[2].id);
    assert_eq!(queue.stats().await.unwrap().dead, 3);
    assert!(queue.is_empty());
}

/// The in-memory state as its own queue: `claim_due` delivers by priority, then run_at, then
/// arrival; holds delayed jobs; skips cancelled ones; re-files retries; takes over expired
/// leases.
#[tokio::test]
async fn in_memory_state_delivers_due_jobs_itself() {
    let state = InMemoryState::new();
    let w = WorkerId::new("w");
    let queues = vec!["default".to_owned()];
    let req = |max, lease_ms, wait_ms| Reserve {
        worker: &w,
        queues: &queues,
        max,
        lease: Duration::from_millis(lease_ms),
        wait: Duration::from_millis(wait_ms),
    };
    let mut low = conformance::record(NewJob::new("k"));
    low.run_at -= chrono::Duration::milliseconds(50);
    let mut high = conformance::record(NewJob::new("k"));
    high.priority = 5;
    let fifo_a = conformance::record(NewJob::new("k"));
    let mut fifo_b = conformance::record(NewJob::new("k"));
    (fifo_b.run_at, fifo_b.created_at) = (fifo_a.run_at, fifo_a.created_at);
    let mut later = conformance::record(NewJob::new("k"));
    later.run_at += chrono::Duration::milliseconds(200);
    let cancelled = conformance::record(NewJob::new("k"));
    let ids = [high.id, low.id, fifo_a.id, fifo_b.id];
    let (later_id, cancelled_id) = (later.id, cancelled.id);
    state
        .create(vec![fifo_a, low, later, cancelled, fifo_b, high])
        .await
        .unwrap();
    state.cancel(cancelled_id, "x").await.unwrap();

    let got = state.claim_due(&req(10, 30_000, 0)).await.unwrap();
    let got_ids: Vec<_> = got
        .iter()
        .map(|c| match c {
            Claim::Claimed(r) => r.id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got_ids, ids,
        "priority, then run_at, then arrival; cancelled skipped"
    );
    // The delayed job comes due while a claim waits.
    let got = state.claim_due(&req(10, 30_000, 2_000)).await.unwrap();
    let [Claim::Claimed(r)] = &got[..] else {
        panic!("{got:?}")
    };
    assert_eq!(r.id, later_id);

    // A retry is filed again and delivered again.
    state
        .finish(vec![conformance::finish(
            r,
            &w,
            Finish::Retry {
                delay: Duration::ZERO,
                error: "flaky".into(),
            },
        )])
        .await
        .unwrap();
    let got = state.claim_due(&req(10, 50, 0)).await.unwrap();
    assert!(matches!(&got[..], [Claim::Claimed(r)] if r.id == later_id && r.attempt == 2));
    // Its worker dies: after the lease, another claim takes it over.
    assert!(state.claim_due(&req(10, 50, 0)).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(80)).await;
    let got = state.claim_due(&req(10, 30_000, 0)).await.unwrap();
    assert!(matches!(&got[..], [Claim::Claimed(r)] if r.id == later_id && r.attempt == 3));

    let stats = state.queue_stats_now();
    assert_eq!((stats.ready, stats.delayed, stats.in_flight), (0, 0, 5));
}
