//! The whole engine, in memory: handlers, retries, dead letters, cancellation, panics,
//! unknown kinds, timeouts, heartbeats, takeover and shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use jobforge::prelude::*;
use jobforge::queue::{QueueManager, Reserve};
use jobforge::state::{CancelOutcome, JobFilter, Page, StateManager};
use jobforge::{ErrorKind, JobOrchestrator, WorkerId};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::new(attempts)
        .with_base(Duration::from_millis(1))
        .with_cap(Duration::from_millis(5))
}

fn workers() -> WorkerConfig {
    WorkerConfig::default()
        .poll_wait(Duration::from_millis(50))
        .lease(Duration::from_millis(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_kinds_run_to_success_with_results() {
    let orch = Orchestrator::builder()
        .handler("double", |ctx: JobContext| async move {
            let n: i64 = ctx.decode()?;
            Ok(json!(n * 2))
        })
        .handler("upper", |ctx: JobContext| async move {
            let s: String = ctx.decode()?;
            Ok(json!(s.to_uppercase()))
        })
        .handler("noop", |_ctx: JobContext| async move { Ok(Value::Null) })
        .build()
        .unwrap();
    let pool = orch.start_workers(workers()).unwrap();
    let mut jobs = Vec::new();
    for i in 0..300 {
        jobs.push(match i % 3 {
            0 => NewJob::new("double").payload(&i),
            1 => NewJob::new("upper").payload(&format!("job{i}")),
            _ => NewJob::new("noop"),
        });
    }
    let submitted = orch.submit_batch(jobs).await.unwrap();
    assert!(submitted.iter().all(|s| s.created));
    orch.wait_idle(WAIT).await.unwrap();
    let d = orch.get(submitted[3].id).await.unwrap().unwrap();
    assert_eq!(d.state, JobState::Succeeded);
    assert_eq!(d.result.unwrap().as_str(), "6");
    let u = orch.get(submitted[4].id).await.unwrap().unwrap();
    assert_eq!(u.result.unwrap().as_str(), "\"JOB4\"");
    let stats = orch.stats().await.unwrap();
    assert_eq!(stats.jobs.total.succeeded, 300);
    assert_eq!(stats.jobs.per_kind["upper"].succeeded, 100);
    assert_eq!((stats.queue.ready, stats.queue.in_flight), (0, 0));
    let report = pool.shutdown(WAIT).await;
    assert!(report.drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_then_success_and_dead_letter_with_reason() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let orch = Orchestrator::builder()
        .kind(
            "flaky",
            KindConfig::new(move |ctx: JobContext| {
                let c = Arc::clone(&c);
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    if ctx.attempt() < 3 {
                        Err(JobError::retryable("upstream 503").with_class("http_503"))
                    } else {
                        Ok(json!("ok"))
                    }
                }
            })
            .retry(fast_retry(5)),
        )
        .kind(
            "broken",
            KindConfig::new(|_ctx: JobContext| async move {
                Err::<Value, _>(JobError::retryable("always down"))
            })
            .retry(fast_retry(3)),
        )
        .handler("invalid", |_ctx: JobContext| async move {
            Err::<Value, _>(JobError::permanent("no such user"))
        })
        .build()
        .unwrap();
    let pool = orch.start_workers(workers()).unwrap();
    let flaky = orch.submit(NewJob::new("flaky")).await.unwrap().id;
    let broken = orch.submit(NewJob::new("broken")).await.unwrap().id;
    let invalid = orch.submit(NewJob::new("invalid")).await.unwrap().id;

    let r = orch.wait_for(flaky, WAIT).await.unwrap();
    assert_eq!((r.state, r.attempt), (JobState::Succeeded, 3));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(r.last_error.unwrap().contains("upstream 503"));

    let r = orch.wait_for(broken, WAIT).await.unwrap();
    assert_eq!((r.state, r.attempt), (JobState::Dead, 3));
    assert!(
        r.last_error
            .as_deref()
            .unwrap()
            .contains("attempts exhausted: 3 of 3")
    );

    let r = orch.wait_for(invalid, WAIT).await.unwrap();
    assert_eq!(
        (r.state, r.attempt),
        (JobState::Dead, 1),
        "permanent errors are not retried"
    );
    assert!(r.last_error.unwrap().contains("no such user"));

    let events = orch.events(broken).await.unwrap();
    let running = events.iter().filter(|e| e.to == JobState::Running).count();
    assert_eq!(running, 3);
    assert_eq!(events.last().unwrap().to, JobState::Dead);
    let stats = orch.stats().await.unwrap();
    assert_eq!(stats.queue.dead, 2);
    assert_eq!(stats.queue.per_kind["broken"].dead, 1);
    pool.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_and_running_jobs() {
    let started = Arc::new(tokio::sync::Notify::new());
    let s = Arc::clone(&started);
    let orch = Orchestrator::builder()
        .handler("wait", move |ctx: JobContext| {
            let s = Arc::clone(&s);
            async move {
                s.notify_one();
                ctx.cancelled().await;
                Err::<Value, _>(JobError::cancelled("stopped as asked"))
            }
        })
        .handler("stubborn", |ctx: JobContext| async move {
            // Ignores the token's meaning and reports a retryable error: still ends cancelled.
            ctx.cancelled().await;
            Err::<Value, _>(JobError::retryable("interrupted"))
        })
        .build()
        .unwrap();
    let pool = orch.start_workers(workers()).unwrap();

    let later = orch
        .submit(NewJob::new("wait").delay(Duration::from_secs(60)))
        .await
        .unwrap()
        .id;
    assert_eq!(orch.cancel(later).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(
        orch.get(later).await.unwrap().unwrap().state,
        JobState::Cancelled
    );

    let running = orch.submit(NewJob::new("wait")).await.unwrap().id;
    started.notified().await;
    assert_eq!(
        orch.cancel(running).await.unwrap(),
        CancelOutcome::Requested
    );
    let r = orch.wait_for(running, WAIT).await.unwrap();
    assert_eq!(r.state, JobState::Cancelled);

    let stubborn = orch.submit(NewJob::new("stubborn")).await.unwrap().id;
    // Wait until it runs.
    let deadline = tokio::time::Instant::now() + WAIT;
    while orch.get(stubborn).await.unwrap().unwrap().state != JobState::Running {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    orch.cancel(stubborn).await.unwrap();
    assert_eq!(
        orch.wait_for(stubborn, WAIT).await.unwrap().state,
        JobState::Cancelled
    );
    assert_eq!(
        orch.cancel(stubborn).await.unwrap(),
        CancelOutcome::AlreadyFinished(JobState::Cancelled)
    );
    assert_eq!(
        orch.cancel(JobId::new()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    pool.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_unknown_kinds_and_bad_payloads_end_jobs_and_the_worker_lives_on() {
    let orch = Orchestrator::builder()
        .kind(
            "panics",
            KindConfig::new(|_ctx: JobContext| async move {
                if true {
                    panic!("index out of bounds");
                }
                Ok(Value::Null)
            })
            .retry(fast_retry(2)),
        )
        .handler("typed", |ctx: JobContext| async move {
            #[derive(serde::Deserialize)]
            struct Args {
                #[allow(dead_code)]
                width: u32,
            }
            let _args: Args = ctx.decode()?;
            Ok(Value::Null)
        })
        .handler("fine", |_ctx: JobContext| async move { Ok(json!(1)) })
        .default_retry(fast_retry(2))
        .build()
        .unwrap();
    let pool = orch.start_workers(workers()).unwrap();
    let panics = orch.submit(NewJob::new("panics")).await.unwrap().id;
    let unknown = orch
        .submit(NewJob::new("nobody.handles.this"))
        .await
        .unwrap()
        .id;
    let bad = orch
        .submit(NewJob::new("typed").payload(&json!({"width": "wide"})))
        .await
        .unwrap()
        .id;

    let r = orch.wait_for(panics, WAIT).await.unwrap();
    assert_eq!((r.state, r.attempt), (JobState::Dead, 2));
    assert!(r.last_error.unwrap().contains("index out of bounds"));

    let r = orch.wait_for(unknown, WAIT).await.unwrap();
    assert_eq!(
        (r.state, r.attempt),
        (JobState::Dead, 2),
        "unknown kinds are retried, then dead"
    );
    assert!(
        r.last_error
            .unwrap()
            .contains("no handler for kind `nobody.handles.this`")
    );

    let r = orch.wait_for(bad, WAIT).await.unwrap();
    assert_eq!(
        (r.state, r.attempt),
        (JobState::Dead, 1),
        "decode errors are permanent"
    );
    assert!(r.last_error.unwrap().starts_with("decode:"));

    // The pool still works.
    let fine = orch.submit(NewJob::new("fine")).await.unwrap().id;
    assert_eq!(
        orch.wait_for(fine, WAIT).await.unwrap().state,
        JobState::Succeeded
    );
    pool.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_retryable_failures() {
    let orch = Orchestrator::builder()
        .kind(
            "slow",
            KindConfig::new(|_ctx: JobContext| async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(Value::Null)
            })
            .timeout(Duration::from_millis(50))
            .retry(fast_retry(2)),
        )
        .build()
        .unwrap();
    let pool = orch.start_workers(workers()).unwrap();
    let id = orch.submit(NewJob::new("slow")).await.unwrap().id;
    let r = orch.wait_for(id, WAIT).await.unwrap();
    assert_eq!((r.state, r.attempt), (JobState::Dead, 2));
    assert!(r.last_error.unwrap().starts_with("timeout:"));
    // A job's own timeout wins over its kind's.
    let id = orch
        .submit(
            NewJob::new("slow")
                .timeout(Duration::from_millis(10))
                .max_attempts(1),
        )
        .await
        .unwrap()
        .id;
    let r = orch.wait_for(id, WAIT).await.unwrap();
    assert!(r.last_error.unwrap().contains("10ms"));
    pool.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_long_jobs_from_being_taken_over() {
    let orch = Orchestrator::builder()
        .handler("long", |_ctx: JobContext| async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok(Value::Null)
        })
        .build()
        .unwrap();
    let config = WorkerConfig::default()
        .poll_wait(Duration::from_millis(20))
        .lease(Duration::from_millis(150));
    let a = orch.start_workers(config.clone()).unwrap();
    let b = orch.start_workers(config).unwrap();
    let id = orch.submit(NewJob::new("long")).await.unwrap().id;
    let r = orch.wait_for(id, WAIT).await.unwrap();
    assert_eq!(
        (r.state, r.attempt),
        (JobState::Succeeded, 1),
        "never taken over while its worker lives"
    );
    a.shutdown(WAIT).await;
    b.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_job_is_taken_over_after_its_lease() {
    // Both shapes of the engine: the default (one store that is its own queue), and a
    // separate queue and state.
    for separate in [false, true] {
        let mut builder = Orchestrator::builder().handler("k", |ctx: JobContext| async move {
            Ok(json!(ctx.attempt()))
        });
        let queue = Arc::new(jobforge::queue::InMemoryQueue::new());
        let state = Arc::new(jobforge::state::InMemoryState::new());
        if separate {
            builder = builder.queue(queue.clone()).state(state.clone());
        } else {
            builder = builder.store(state.clone());
        }
        let orch = builder.build().unwrap();
        let id = orch.submit(NewJob::new("k")).await.unwrap().id;
        // A worker takes the job, then dies without a word.
        let ghost = WorkerId::new("ghost");
        if separate {
            let queues = vec!["default".to_owned()];
            let leases = queue
                .reserve(&Reserve {
                    worker: &ghost,
                    queues: &queues,
                    max: 1,
                    lease: Duration::from_millis(100),
                    wait: Duration::ZERO,
                })
                .await
                .unwrap();
            assert_eq!(leases.len(), 1);
        }
        state
            .claim(&[id], &ghost, Duration::from_millis(100))
            .await
            .unwrap();
        let pool = orch.start_workers(workers()).unwrap();
        let r = orch.wait_for(id, WAIT).await.unwrap();
        assert_eq!(
            (r.state, r.attempt),
            (JobState::Succeeded, 2),
            "separate: {separate}"
        );
        assert_eq!(r.result.unwrap().as_str(), "2");
        let events = orch.events(id).await.unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.reason.as_deref().is_some_and(|r| r.contains("expired")))
        );
        pool.shutdown(WAIT).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_unfinished_jobs_back_and_another_pool_finishes_them() {
    let finish_fast = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = Arc::clone(&finish_fast);
    let orch = Orchestrator::builder()
        .handler("work", move |ctx: JobContext| {
            let f = Arc::clone(&f);
            async move {
                if !f.load(Ordering::SeqCst) {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(30)) => {}
                        () = ctx.cancelled() => return Err(JobError::cancelled("shutdown")),
                    }
                }
                Ok(json!("done"))
            }
        })
        .build()
        .unwrap();
    let first = orch.start_workers(workers().concurrency(4)).unwrap();
    let ids: Vec<JobId> = orch
        .submit_batch((0..6).map(|_| NewJob::new("work")).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    while first.running() < 4 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = first.shutdown(Duration::from_millis(100)).await;
    assert!(!report.drained);
    assert_eq!(report.released, 4);
    let counts = orch.stats().await.unwrap().jobs.total;
    assert_eq!(
        (counts.queued, counts.running),
        (6, 0),
        "nothing lost, nothing left running"
    );
    for id in &ids {
        assert_eq!(
            orch.get(*id).await.unwrap().unwrap().attempt,
            0,
            "released attempts are not spent"
        );
    }
    finish_fast.store(true, Ordering::SeqCst);
    let second = orch.start_workers(workers()).unwrap();
    orch.wait_idle(WAIT).await.unwrap();
    for id in &ids {
        let r = orch.get(*id).await.unwrap().unwrap();
        assert_eq!((r.state, r.attempt), (JobState::Succeeded, 1));
    }
    assert!(second.shutdown(WAIT).await.drained);
}

#[tokio::test]
async fn submission_is_validated_and_idempotent() {
    let orch = Orchestrator::builder()
        .handler("k", |_ctx: JobContext| async move { Ok(Value::Null) })
        .build()
        .unwrap();
    let a = orch
        .submit(NewJob::new("k").idempotency_key("once"))
        .await
        .unwrap();
    let b = orch
        .submit(NewJob::new("k").idempotency_key("once"))
        .await
        .unwrap();
    assert!(a.created && !b.created);
    assert_eq!(a.id, b.id);
    assert_eq!(orch.stats().await.unwrap().queue.ready, 1);

    for (job, field) in [
        (NewJob::new(""), "kind"),
        (NewJob::new("k").max_attempts(0), "max_attempts"),
        (NewJob::new("k").timeout(Duration::ZERO), "timeout"),
        (
            NewJob::new("k").payload(&"x".repeat(2 * 1024 * 1024)),
            "payload",
        ),
        (NewJob::new("k").strategy("warp-speed"), "strategy"),
    ] {
        let err = orch.submit(job).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(err.field(), Some(field), "{err}");
    }
    // One bad job rejects the whole batch; nothing is stored.
    let err = orch
        .submit_batch(vec![NewJob::new("k"), NewJob::new("")])
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("kind"));
    let all = orch
        .list(&JobFilter::default(), &Page::first(10))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 1);
}

#[tokio::test]
async fn configuration_errors_are_caught_at_build() {
    let h = |_ctx: JobContext| async move { Ok(Value::Null) };
    let err = Orchestrator::builder()
        .handler("k", h)
        .handler("k", h)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    let err = Orchestrator::builder()
        .kind("k", KindConfig::new(h).strategy("nope"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("nope"));
    let err = Orchestrator::builder()
        .default_strategy("nope")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    let err = Orchestrator::builder()
        .build()
        .unwrap()
        .start_workers(WorkerConfig::default().concurrency(0));
    assert_eq!(err.unwrap_err().field(), Some("concurrency"));
}

#[test]
fn start_workers_outside_a_runtime_is_a_clear_error() {
    let orch = Orchestrator::builder().build().unwrap();
    let err = orch.start_workers(WorkerConfig::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains("Tokio runtime"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_are_recorded_in_memory() {
    // The in-memory Memory records what ran; reflect sees it.
    let orch = Orchestrator::builder()
        .handler("k", |_ctx: JobContext| async move { Ok(Value::Null) })
        .build()
        .unwrap();
    let pool = orch.start_workers(workers()).unwrap();
    orch.submit_batch((0..20).map(|_| NewJob::new("k")).collect())
        .await
        .unwrap();
    orch.wait_idle(WAIT).await.unwrap();
    pool.shutdown(WAIT).await;
    let reflection = orch
        .memory()
        .reflect("k", jobforge::memory::Window::All)
        .await
        .unwrap();
    assert_eq!(reflection.count, 20);
    assert_eq!(reflection.succeeded, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_state_can_be_queue_and_state_at_once() {
    let state = Arc::new(jobforge::state::InMemoryState::new());
    let orch = Orchestrator::builder()
        .store(Arc::clone(&state))
        .handler("double", |ctx: JobContext| async move {
            let n: i64 = ctx.decode()?;
            Ok(json!(n * 2))
        })
        .build()
        .unwrap();
    let pool = orch.start_workers(workers()).unwrap();
    let jobs: Vec<NewJob> = (0..200)
        .map(|i| NewJob::new("double").payload(&i))
        .collect();
    let submitted = orch.submit_batch(jobs).await.unwrap();
    orch.wait_idle(WAIT).await.unwrap();
    let r = orch.get(submitted[21].id).await.unwrap().unwrap();
    assert_eq!(r.result.unwrap().as_str(), "42");
    let stats = orch.stats().await.unwrap();
    assert_eq!(stats.jobs.total.succeeded, 200);
    assert_eq!((stats.queue.ready, stats.queue.in_flight), (0, 0));
    assert!(pool.shutdown(WAIT).await.drained);
}

/// Delayed counts per kind while the in-memory store serves as the queue (they come from its
/// delayed index, not from a walk over every job): cancelled and re-filed jobs are not
/// counted, due ones count as ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_counts_follow_cancels_and_due_times() {
    let orch = Orchestrator::builder()
        .handler("later", |_ctx: JobContext| async { Ok(Value::Null) })
        .handler("other", |_ctx: JobContext| async { Ok(Value::Null) })
        .build()
        .unwrap();
    let pool = orch.start_workers(WorkerConfig::default()).unwrap();
    let hour = Duration::from_secs(3600);
    let a = orch
        .submit(NewJob::new("later").delay(hour))
        .await
        .unwrap()
        .id;
    orch.submit(NewJob::new("later").delay(hour)).await.unwrap();
    orch.submit(NewJob::new("other").delay(hour)).await.unwrap();
    let soon = orch
        .submit(NewJob::new("other").delay(Duration::from_millis(50)))
        .await
        .unwrap()
        .id;
    let stats = orch.stats().await.unwrap();
    assert_eq!(stats.queue.delayed, 4);
    assert_eq!(stats.queue.per_kind["later"].delayed, 2);
    assert_eq!(orch.cancel(a).await.unwrap(), CancelOutcome::Cancelled);
    orch.wait_for(soon, Duration::from_secs(10)).await.unwrap();
    let stats = orch.stats().await.unwrap();
    assert_eq!(
        (
            stats.queue.delayed,
            stats.queue.ready,
            stats.queue.in_flight
        ),
        (2, 0, 0)
    );
    assert_eq!(stats.queue.per_kind["later"].delayed, 1);
    assert_eq!(stats.queue.per_kind["other"].delayed, 1);
    pool.shutdown(Duration::from_secs(5)).await;
}

/// A state given without a queue cannot deliver to other processes: `build` refuses it and
/// names the fix, and a store wrapped in a safety layer is a store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_without_a_queue_is_refused_and_a_wrapped_store_works() {
    use jobforge::safety::{Layer, TimeoutLayer};
    let err = Orchestrator::builder()
        .state(Arc::new(jobforge::state::InMemoryState::new()))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains(".store(..)"), "{err}");
    let err = Orchestrator::builder()
        .queue(Arc::new(jobforge::queue::InMemoryQueue::new()))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains(".state(..)"), "{err}");
    let wrapped = TimeoutLayer::new(Duration::from_secs(5))
        .layer(Arc::new(jobforge::state::InMemoryState::new()));
    let orch = Orchestrator::builder()
        .store(Arc::new(wrapped))
        .handler("k", |_ctx: JobContext| async move { Ok(json!(1)) })
        .build()
        .unwrap();
    let pool = orch.start_workers(workers()).unwrap();
    let id = orch.submit(NewJob::new("k")).await.unwrap().id;
    assert_eq!(
        orch.wait_for(id, WAIT).await.unwrap().state,
        JobState::Succeeded
    );
    pool.shutdown(WAIT).await;
}

/// A cancel reaches a job running in this process at once, not at its pool's next
/// heartbeat (a third of a one-minute lease away here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_a_job_running_in_this_process_at_once() {
    let started = Arc::new(tokio::sync::Notify::new());
    let s = Arc::clone(&started);
    let orch = Orchestrator::builder()
        .handler("wait", move |ctx: JobContext| {
            let s = Arc::clone(&s);
            async move {
                s.notify_one();
                ctx.cancelled().await;
                Err::<Value, _>(JobError::cancelled("stopped as asked"))
            }
        })
        .build()
        .unwrap();
    let pool = orch
        .start_workers(workers().lease(Duration::from_secs(60)))
        .unwrap();
    let running = orch.submit(NewJob::new("wait")).await.unwrap().id;
    started.notified().await;
    assert_eq!(
        orch.cancel(running).await.unwrap(),
        CancelOutcome::Requested
    );
    let r = orch
        .wait_for(running, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.state, JobState::Cancelled);
    pool.shutdown(WAIT).await;
}
