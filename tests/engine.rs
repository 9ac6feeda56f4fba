//! The whole engine: handlers, retries, dead letters, cancellation, panics, unknown kinds,
//! timeouts, heartbeats, takeover and shutdown, on every deployment (in-memory, PostgreSQL,
//! Redis, Redis Streams beside PostgreSQL): one test per scenario per deployment, so a
//! failure names both: `cargo test --all-features --test engine postgres::cancel`.
//!
//! A deployment whose server's URL (`DATABASE_URL`, `REDIS_URL`) is unset is skipped with a
//! printed reason. Stores poll and wake at their own pace, so scenarios wait for what they
//! need with a deadline, never for a fixed time.

mod deploy;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use deploy::{Deployed, Deployment};
use jobforge::prelude::*;
use jobforge::queue::{InMemoryQueue, QueueManager, Reserve};
use jobforge::state::{CancelOutcome, InMemoryState, JobFilter, Page, StateManager};
use jobforge::{ErrorKind, JobOrchestrator, OrchestratorBuilder, Stats, WorkerId};
use serde_json::{Value, json};
use tokio::time::Instant;

/// How long a scenario waits for what it expects, on any deployment.
const WAIT: Duration = Duration::from_secs(20);

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::new(attempts)
        .with_base(Duration::from_millis(1))
        .with_cap(Duration::from_millis(5))
}

/// A pool for scenarios that need no takeover: a lease long enough that a heartbeat held up
/// by a loaded machine or a slow round trip never lets a job be taken over.
fn workers() -> WorkerConfig {
    WorkerConfig::default()
        .poll_wait(Duration::from_millis(50))
        .lease(Duration::from_secs(5))
}

/// The engine's stats once `settled` holds, or after [`WAIT`]: a `Split` store settles its
/// queue (acknowledges, dead-letters) just after the state's transition that `wait_for` and
/// `wait_idle` see, so its delivery counts follow a moment later.
async fn stats_once(orch: &Orchestrator, settled: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = orch.stats().await.unwrap();
        if settled(&stats) || Instant::now() >= deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until job `id` is in `state`.
async fn until_state(orch: &Orchestrator, id: JobId, state: JobState) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = orch.get(id).await.unwrap().unwrap().state;
        if now == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} is still {now}, not {state}, after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait for a handler to say it started.
async fn until_started(notify: &tokio::sync::Notify) {
    tokio::time::timeout(WAIT, notify.notified())
        .await
        .expect("the handler did not start");
}

/// One `#[tokio::test]` per scenario, each on a fresh deployment cleaned up after it.
macro_rules! scenarios {
    ($deployment:ident: $($(#[$attr:meta])* $scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attr])*
            async fn $scenario() {
                let Some(d) = Deployed::new(Deployment::$deployment, stringify!($scenario)).await
                else {
                    return;
                };
                super::$scenario(&d).await;
            }
        )*
    };
}

/// The scenarios every deployment runs.
macro_rules! engine_scenarios {
    ($deployment:ident) => {
        scenarios!($deployment:
            many_kinds_run_to_success_with_results,
            retries_then_success_and_dead_letter_with_reason,
            cancel_queued_and_running_jobs,
            panics_unknown_kinds_and_bad_payloads_end_jobs_and_the_worker_lives_on,
            timeouts_are_retryable_failures,
            heartbeats_keep_long_jobs_from_being_taken_over,
            a_dead_workers_job_is_taken_over_after_its_lease,
            shutdown_hands_unfinished_jobs_back_and_another_pool_finishes_them,
            delayed_counts_follow_cancels_and_due_times,
            a_cancel_reaches_a_job_running_in_this_process_at_once,
            executions_are_recorded_in_memory,
        );
    };
}

mod in_memory {
    use super::deploy::{Deployed, Deployment};
    engine_scenarios!(InMemory);
    scenarios!(InMemory: a_paused_queue_is_not_claimed_until_resumed);
}

mod postgres {
    use super::deploy::{Deployed, Deployment};
    engine_scenarios!(Postgres);
    scenarios!(Postgres: a_paused_queue_is_not_claimed_until_resumed);
}

mod redis {
    use super::deploy::{Deployed, Deployment};
    engine_scenarios!(Redis);
    scenarios!(Redis: a_paused_queue_is_not_claimed_until_resumed);
}

/// Redis Streams delivery beside a PostgreSQL state: the `Split` store.
mod streams_postgres {
    use super::deploy::{Deployed, Deployment};
    engine_scenarios!(StreamsPostgres);
    scenarios!(StreamsPostgres: a_split_store_says_it_cannot_pause_queues);
}

// --- The scenarios, on the deployment each test is given. ---

async fn many_kinds_run_to_success_with_results(d: &Deployed) {
    let orch = d
        .builder()
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
    let doubled = orch.get(submitted[3].id).await.unwrap().unwrap();
    assert_eq!(doubled.state, JobState::Succeeded);
    assert_eq!(doubled.result.unwrap().as_str(), "6");
    let u = orch.get(submitted[4].id).await.unwrap().unwrap();
    assert_eq!(u.result.unwrap().as_str(), "\"JOB4\"");
    let stats = stats_once(&orch, |s| (s.queue.ready, s.queue.in_flight) == (0, 0)).await;
    assert_eq!(stats.jobs.total.succeeded, 300);
    assert_eq!(stats.jobs.per_kind["upper"].succeeded, 100);
    assert_eq!((stats.queue.ready, stats.queue.in_flight), (0, 0));
    let report = pool.shutdown(WAIT).await;
    assert!(report.drained);
}

async fn retries_then_success_and_dead_letter_with_reason(d: &Deployed) {
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let orch = d
        .builder()
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
    let stats = stats_once(&orch, |s| s.queue.dead == 2).await;
    assert_eq!(stats.queue.dead, 2);
    assert_eq!(stats.queue.per_kind["broken"].dead, 1);
    pool.shutdown(WAIT).await;
}

async fn cancel_queued_and_running_jobs(d: &Deployed) {
    let started = Arc::new(tokio::sync::Notify::new());
    let s = Arc::clone(&started);
    let orch = d
        .builder()
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
    until_started(&started).await;
    assert_eq!(
        orch.cancel(running).await.unwrap(),
        CancelOutcome::Requested
    );
    let r = orch.wait_for(running, WAIT).await.unwrap();
    assert_eq!(r.state, JobState::Cancelled);

    let stubborn = orch.submit(NewJob::new("stubborn")).await.unwrap().id;
    until_state(&orch, stubborn, JobState::Running).await;
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

async fn panics_unknown_kinds_and_bad_payloads_end_jobs_and_the_worker_lives_on(d: &Deployed) {
    let orch = d
        .builder()
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

async fn timeouts_are_retryable_failures(d: &Deployed) {
    let orch = d
        .builder()
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

/// A job that runs for several leases, with a second pool (of another orchestrator, as in
/// another process) polling all along for expired leases: its worker's heartbeats keep it.
async fn heartbeats_keep_long_jobs_from_being_taken_over(d: &Deployed) {
    let lease = Duration::from_millis(600);
    let orchestrator = || {
        d.builder()
            .handler("long", move |_ctx: JobContext| async move {
                tokio::time::sleep(lease * 4).await;
                Ok(Value::Null)
            })
            .build()
            .unwrap()
    };
    let (one, other) = (orchestrator(), orchestrator());
    let config = WorkerConfig::default()
        .poll_wait(Duration::from_millis(20))
        .lease(lease);
    let a = one.start_workers(config.clone()).unwrap();
    let b = other.start_workers(config).unwrap();
    let id = one.submit(NewJob::new("long")).await.unwrap().id;
    let r = one.wait_for(id, WAIT).await.unwrap();
    assert_eq!(
        (r.state, r.attempt),
        (JobState::Succeeded, 1),
        "never taken over while its worker lives"
    );
    a.shutdown(WAIT).await;
    b.shutdown(WAIT).await;
}

/// A worker takes a job, then dies without a word: after its lease the job is taken over.
/// The ghost claims through the store itself, and on a `Split` reserves the delivery from its
/// queue first, as a worker of that deployment does.
async fn a_dead_workers_job_is_taken_over_after_its_lease(d: &Deployed) {
    let queue = (d.deployment == Deployment::StreamsPostgres).then(|| d.queue());
    taken_over_after_a_lease(d.builder(), queue, d.state()).await;
}

/// The in-memory engine with a separate queue and state (no deployment has that shape).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_job_is_taken_over_after_its_lease_with_a_separate_in_memory_queue() {
    let queue: Arc<dyn QueueManager> = Arc::new(InMemoryQueue::new());
    let state: Arc<dyn StateManager> = Arc::new(InMemoryState::new());
    let builder = Orchestrator::builder()
        .queue(Arc::clone(&queue))
        .state(Arc::clone(&state));
    taken_over_after_a_lease(builder, Some(queue), state).await;
}

async fn taken_over_after_a_lease(
    builder: OrchestratorBuilder,
    queue: Option<Arc<dyn QueueManager>>,
    state: Arc<dyn StateManager>,
) {
    let ghost_lease = Duration::from_millis(300);
    let orch = builder
        .handler(
            "k",
            |ctx: JobContext| async move { Ok(json!(ctx.attempt())) },
        )
        .build()
        .unwrap();
    let id = orch.submit(NewJob::new("k")).await.unwrap().id;
    let ghost = WorkerId::new("ghost");
    if let Some(queue) = &queue {
        let queues = vec!["default".to_owned()];
        let leases = queue
            .reserve(&Reserve {
                worker: &ghost,
                queues: &queues,
                max: 1,
                lease: ghost_lease,
                wait: WAIT,
            })
            .await
            .unwrap();
        assert_eq!(leases.len(), 1);
    }
    let claims = state.claim(&[id], &ghost, ghost_lease).await.unwrap();
    assert!(
        matches!(claims[..], [jobforge::state::Claim::Claimed(_)]),
        "{claims:?}"
    );
    let pool = orch.start_workers(workers()).unwrap();
    let r = orch.wait_for(id, WAIT).await.unwrap();
    assert_eq!(
        (r.state, r.attempt),
        (JobState::Succeeded, 2),
        "separate queue: {}",
        queue.is_some()
    );
    assert_eq!(r.result.unwrap().as_str(), "2");
    let events = orch.events(id).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref().is_some_and(|r| r.contains("expired"))),
        "{events:?}"
    );
    pool.shutdown(WAIT).await;
}

/// A pool shut down while its jobs run hands them back, attempts not spent; a pool of
/// another orchestrator on the same deployment (another process) finishes them.
async fn shutdown_hands_unfinished_jobs_back_and_another_pool_finishes_them(d: &Deployed) {
    let orch = d
        .builder()
        .handler("work", |ctx: JobContext| async move {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
                () = ctx.cancelled() => return Err(JobError::cancelled("shutdown")),
            }
            Ok(json!("slow"))
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
    let deadline = Instant::now() + WAIT;
    while first.running() < 4 {
        assert!(
            Instant::now() < deadline,
            "{} running, not 4",
            first.running()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
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
    let another = d
        .builder()
        .handler("work", |_ctx: JobContext| async move { Ok(json!("done")) })
        .build()
        .unwrap();
    let second = another.start_workers(workers()).unwrap();
    another.wait_idle(WAIT).await.unwrap();
    for id in &ids {
        let r = another.get(*id).await.unwrap().unwrap();
        assert_eq!((r.state, r.attempt), (JobState::Succeeded, 1));
        assert_eq!(r.result.unwrap().as_str(), "\"done\"");
    }
    assert!(second.shutdown(WAIT).await.drained);
}

/// Delayed counts per kind: cancelled and re-filed jobs are not counted, due ones count as
/// ready (in memory they come from the store's delayed index, not from a walk over every
/// job).
async fn delayed_counts_follow_cancels_and_due_times(d: &Deployed) {
    let orch = d
        .builder()
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
    // (due soon, but not before the first stats: a slow machine under coverage took more
    // than 50 ms for the submits)
    let soon = orch
        .submit(NewJob::new("other").delay(Duration::from_millis(1500)))
        .await
        .unwrap()
        .id;
    let stats = orch.stats().await.unwrap();
    assert_eq!(stats.queue.delayed, 4);
    assert_eq!(stats.queue.per_kind["later"].delayed, 2);
    assert_eq!(orch.cancel(a).await.unwrap(), CancelOutcome::Cancelled);
    orch.wait_for(soon, WAIT).await.unwrap();
    let stats = stats_once(&orch, |s| {
        (s.queue.delayed, s.queue.ready, s.queue.in_flight) == (2, 0, 0)
    })
    .await;
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
    pool.shutdown(WAIT).await;
}

/// A cancel reaches a job running in this process at once, not at its pool's next
/// heartbeat (a third of a one-minute lease away here).
async fn a_cancel_reaches_a_job_running_in_this_process_at_once(d: &Deployed) {
    let started = Arc::new(tokio::sync::Notify::new());
    let s = Arc::clone(&started);
    let orch = d
        .builder()
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
    until_started(&started).await;
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

/// The in-memory Memory records what ran, whatever the store; reflect sees it.
async fn executions_are_recorded_in_memory(d: &Deployed) {
    let orch = d
        .builder()
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

// --- The builder and validation: no deployment needed. ---

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

/// Longer than a pool takes to read the paused queues (about once a second).
const PAUSE_SEEN: Duration = Duration::from_millis(1_600);

async fn a_paused_queue_is_not_claimed_until_resumed(d: &Deployed) {
    let orch = d
        .builder()
        .handler("noop", |_ctx: JobContext| async move { Ok(Value::Null) })
        .build()
        .unwrap();
    // Paused before any pool starts: not even a first claim takes its jobs.
    assert!(orch.pause_queue("slow").await.unwrap());
    assert!(!orch.pause_queue("slow").await.unwrap(), "already paused");
    assert_eq!(
        orch.paused_queues()
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["slow".to_owned()]
    );
    let held = orch
        .submit(NewJob::new("noop").queue("slow"))
        .await
        .unwrap()
        .id;
    let pool = orch
        .start_workers(workers().queues(["default", "slow"]))
        .unwrap();
    let free = orch.submit(NewJob::new("noop")).await.unwrap().id;
    until_state(&orch, free, JobState::Succeeded).await;
    tokio::time::sleep(PAUSE_SEEN).await;
    assert_eq!(
        orch.get(held).await.unwrap().unwrap().state,
        JobState::Queued
    );
    assert!(orch.resume_queue("slow").await.unwrap());
    until_state(&orch, held, JobState::Succeeded).await;
    // Paused while the pool runs: within about a second its claims leave the queue out.
    assert!(orch.pause_queue("slow").await.unwrap());
    tokio::time::sleep(PAUSE_SEEN).await;
    let later = orch
        .submit(NewJob::new("noop").queue("slow"))
        .await
        .unwrap()
        .id;
    let other = orch.submit(NewJob::new("noop")).await.unwrap().id;
    until_state(&orch, other, JobState::Succeeded).await;
    tokio::time::sleep(PAUSE_SEEN).await;
    assert_eq!(
        orch.get(later).await.unwrap().unwrap().state,
        JobState::Queued
    );
    assert!(orch.resume_queue("slow").await.unwrap());
    assert!(!orch.resume_queue("slow").await.unwrap(), "already running");
    until_state(&orch, later, JobState::Succeeded).await;
    assert!(orch.paused_queues().await.unwrap().is_empty());
    // A bad name is refused, naming the field.
    let err = orch.pause_queue("has space").await.unwrap_err();
    assert_eq!(err.field(), Some("queue"));
    let report = pool.shutdown(WAIT).await;
    assert!(report.drained);
}

async fn a_split_store_says_it_cannot_pause_queues(d: &Deployed) {
    let orch = d.builder().build().unwrap();
    let err = orch.pause_queue("slow").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains("cannot pause queues"), "{err}");
    assert!(orch.paused_queues().await.unwrap().is_empty());
}
