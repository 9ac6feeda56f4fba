#![cfg(feature = "redis")]
//! The Redis backends against a real server (`REDIS_URL`, e.g. `redis://127.0.0.1:6379`).
//! Without `REDIS_URL` every test says it skipped and why; with it set and the server
//! unreachable, they fail. Each test works under its own namespace and deletes its keys.

mod conformance;
#[path = "support/private_redis.rs"]
mod private_redis;

use std::sync::Arc;
use std::time::Duration;

use jobforge::queue::QueueManager;
use jobforge::redis::{RedisQueueConfig, RedisState, RedisStateConfig, RedisStreamsQueue};
use jobforge::state::StateManager;
use private_redis::PrivateRedis;

/// The server to test against, or `None` (with a note) when `REDIS_URL` is unset.
fn redis_url(test: &str) -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "{test}: skipped: REDIS_URL is not set (run e.g. `REDIS_URL=redis://127.0.0.1:6379 cargo test --features redis`)"
            );
            None
        }
    }
}

/// A namespace of its own for one test; `cleanup` deletes every key under it.
struct Namespaces {
    url: String,
    names: parking_lot::Mutex<Vec<String>>,
}

impl Namespaces {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            names: parking_lot::Mutex::new(Vec::new()),
        }
    }

    fn fresh(&self, test: &str) -> String {
        let name = format!("jft-{test}-{}", uuid::Uuid::now_v7().simple());
        self.names.lock().push(name.clone());
        name
    }

    async fn cleanup(&self) -> usize {
        let client = redis::Client::open(self.url.as_str()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect for cleanup");
        let mut deleted = 0;
        let names = self.names.lock().clone();
        for name in names {
            let keys = keys_of(&mut conn, &name).await;
            for chunk in keys.chunks(500) {
                // UNLINK frees in the background: a hash of a million records takes longer
                // to free than a client waits for an answer.
                let n: usize = redis::cmd("UNLINK")
                    .arg(chunk)
                    .query_async(&mut conn)
                    .await
                    .expect("UNLINK");
                deleted += n;
            }
        }
        deleted
    }
}

/// Every key of a namespace (`{<ns>` starts them all).
async fn keys_of(conn: &mut redis::aio::MultiplexedConnection, ns: &str) -> Vec<String> {
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{ns}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

#[tokio::test]
async fn bad_url_and_unreachable_server_fail_at_connect_with_clear_errors() {
    let err = RedisStreamsQueue::connect(RedisQueueConfig::new("http://nope"))
        .await
        .expect_err("bad scheme");
    assert_eq!(err.kind(), jobforge::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("url"), "{err}");
    // Nothing listens on port 1.
    let err = RedisState::connect(
        RedisStateConfig::new("redis://:hunter2@127.0.0.1:1")
            .with_connect_timeout(Duration::from_millis(500)),
    )
    .await
    .expect_err("unreachable");
    assert_eq!(err.kind(), jobforge::ErrorKind::Backend);
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(
        !text.contains("hunter2"),
        "the password is never shown: {text}"
    );
}

// ---------------------------------------------------------------- helpers for engine tests

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use async_trait::async_trait;
use jobforge::prelude::*;
use jobforge::queue::{DeadLetter, Envelope, Lease, QueueStats, Requeue, Reserve};
use jobforge::redis::{RedisRateLimit, RedisRateLimitConfig};
use jobforge::state::{
    CancelOutcome, Claim, Created, Heartbeat, Held, InMemoryState, JobFilter, Page, Paged,
    StateCounts, Transition, TransitionResult,
};
use jobforge::store::{ReconcilerConfig, Split};
use jobforge::{JobEvent, JobId, JobOrchestrator, JobRecord, WorkerId};
use serde_json::json;

async fn redis_backends(url: &str, ns: &str) -> (Arc<RedisStreamsQueue>, Arc<RedisState>) {
    let queue = Arc::new(
        RedisStreamsQueue::connect(RedisQueueConfig::new(url).with_namespace(ns))
            .await
            .expect("queue"),
    );
    let state = Arc::new(
        RedisState::with_pool(
            queue.pool().clone(),
            RedisStateConfig::new(url).with_namespace(ns),
        )
        .expect("state"),
    );
    (queue, state)
}

fn quick_workers() -> WorkerConfig {
    WorkerConfig::default()
        .poll_wait(Duration::from_millis(100))
        .lease(Duration::from_millis(600))
}

/// The kinds of the end-to-end runs: `double` (n -> 2n), `flaky` (fails twice, counting its
/// calls), `broken` (fails for good).
fn e2e_kinds(
    builder: jobforge::OrchestratorBuilder,
    calls: &Arc<AtomicU32>,
) -> jobforge::OrchestratorBuilder {
    let c = Arc::clone(calls);
    builder
        .handler("double", |ctx: JobContext| async move {
            let n: i64 = ctx.decode()?;
            Ok(json!(n * 2))
        })
        .kind(
            "flaky",
            KindConfig::new(move |ctx: JobContext| {
                let c = Arc::clone(&c);
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    if ctx.attempt() < 3 {
                        Err(JobError::retryable("upstream 503"))
                    } else {
                        Ok(json!("ok"))
                    }
                }
            })
            .retry(
                RetryPolicy::new(5)
                    .with_base(Duration::from_millis(5))
                    .with_cap(Duration::from_millis(20)),
            ),
        )
        .handler("broken", |_ctx: JobContext| async move {
            Err::<serde_json::Value, _>(JobError::permanent("bad input: no such account"))
        })
}

/// Submit the end-to-end mix (200 doubles, a flaky job at priority 5, a broken one, a
/// delayed double that is cancelled, an idempotent pair), check what is seen on the way, and
/// wait until nothing is active. Returns the ids of the batch, in order.
async fn e2e_run(orch: &Orchestrator) -> Vec<JobId> {
    let mut jobs: Vec<NewJob> = (0..200)
        .map(|i| NewJob::new("double").payload(&i))
        .collect();
    jobs.push(NewJob::new("flaky").priority(5));
    jobs.push(NewJob::new("broken"));
    let later = NewJob::new("double")
        .payload(&1)
        .delay(Duration::from_secs(60));
    let later_id = later.id();
    jobs.push(later);
    let submitted = orch.submit_batch(jobs).await.unwrap();
    // Idempotency through the orchestrator.
    let a = orch
        .submit(NewJob::new("double").payload(&7).idempotency_key("k-7"))
        .await
        .unwrap();
    let b = orch
        .submit(NewJob::new("double").payload(&7).idempotency_key("k-7"))
        .await
        .unwrap();
    assert!(a.created && !b.created && a.id == b.id);
    assert!(orch.stats().await.unwrap().queue.delayed >= 1);
    assert_eq!(
        orch.cancel(later_id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let counts = orch.stats().await.unwrap().jobs;
        if counts.total.active() == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still active: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    submitted.into_iter().map(|s| s.id).collect()
}

/// What every end-to-end run must end with, whatever the backends.
async fn e2e_check(orch: &Orchestrator, ids: &[JobId], calls: &AtomicU32) {
    let d = orch.get(ids[3]).await.unwrap().unwrap();
    assert_eq!(d.state, JobState::Succeeded);
    assert_eq!(d.result.unwrap().as_str(), "6");
    let flaky = orch.get(ids[200]).await.unwrap().unwrap();
    assert_eq!((flaky.state, flaky.attempt), (JobState::Succeeded, 3));
    assert!(flaky.last_error.unwrap().contains("upstream 503"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let broken = orch.get(ids[201]).await.unwrap().unwrap();
    assert_eq!(broken.state, JobState::Dead);
    assert!(broken.last_error.unwrap().contains("no such account"));
    let stats = orch.stats().await.unwrap();
    assert_eq!(stats.jobs.total.succeeded, 202);
    assert_eq!(stats.jobs.total.cancelled, 1);
    assert_eq!(stats.jobs.total.dead, 1);
    // Creation, then per attempt running and back to queued (twice), running, succeeded.
    let events = orch.events(ids[200]).await.unwrap();
    assert_eq!(events.len(), 7, "{events:?}");
    assert_eq!(
        events.last().map(|e| (e.from, e.to, e.attempt)),
        Some((Some(JobState::Running), JobState::Succeeded, 3))
    );
    let listed = orch
        .list(
            &JobFilter {
                kind: Some("flaky".into()),
                ..Default::default()
            },
            &Page::first(10),
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_only_deployment_runs_retries_dead_letters_and_cancels() {
    let Some(url) = redis_url("redis_only_deployment_runs_retries_dead_letters_and_cancels") else {
        return;
    };
    let ns = Namespaces::new(&url);
    let name = ns.fresh("e2e");
    let (queue, state) = redis_backends(&url, &name).await;
    let calls = Arc::new(AtomicU32::new(0));
    let orch = e2e_kinds(
        Orchestrator::builder()
            .queue(queue.clone())
            .state(state.clone()),
        &calls,
    )
    .build()
    .unwrap();
    let pool = orch.start_workers(quick_workers()).unwrap();
    let ids = e2e_run(&orch).await;
    e2e_check(&orch, &ids, &calls).await;
    // A Split settles its queue (acknowledges, dead-letters) just after the state's
    // transition, which is what `e2e_run` waited for: wait for the queue too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let q = orch.stats().await.unwrap().queue;
        if (q.in_flight, q.dead) == (0, 1) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = queue.dead_letters("default", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, ids[201]);
    assert!(dead[0].3.contains("no such account"));
    let per_queue = queue.queue_stats("default").await.unwrap();
    assert_eq!((per_queue.dead, per_queue.per_kind["broken"].dead), (1, 1));
    let stats = orch.stats().await.unwrap();
    assert_eq!(
        (stats.queue.ready, stats.queue.in_flight, stats.queue.dead),
        (0, 0, 1)
    );
    assert_eq!(
        stats.queue.delayed, 0,
        "a cancelled delayed job's delivery is dropped at the cancel"
    );
    assert!(pool.shutdown(Duration::from_secs(5)).await.drained);
    ns.cleanup().await;
}

/// Passes everything through, except that heartbeats are dropped on the floor (a host
/// whose heartbeats stopped reaching Redis).
struct NoHeartbeats {
    queue: Arc<dyn QueueManager>,
    state: Arc<dyn StateManager>,
}

#[async_trait]
impl QueueManager for NoHeartbeats {
    async fn enqueue(&self, jobs: &[Envelope]) -> jobforge::Result<()> {
        self.queue.enqueue(jobs).await
    }
    async fn reserve(&self, req: &Reserve<'_>) -> jobforge::Result<Vec<Lease>> {
        self.queue.reserve(req).await
    }
    async fn extend(&self, leases: &[Lease], _lease: Duration) -> jobforge::Result<Vec<bool>> {
        Ok(vec![true; leases.len()])
    }
    async fn ack(&self, leases: &[Lease]) -> jobforge::Result<()> {
        self.queue.ack(leases).await
    }
    async fn requeue(&self, items: &[Requeue]) -> jobforge::Result<()> {
        self.queue.requeue(items).await
    }
    async fn dead_letter(&self, items: &[DeadLetter]) -> jobforge::Result<()> {
        self.queue.dead_letter(items).await
    }
    async fn stats(&self) -> jobforge::Result<QueueStats> {
        self.queue.stats().await
    }
}

#[async_trait]
impl StateManager for NoHeartbeats {
    async fn create(&self, jobs: Vec<JobRecord>) -> jobforge::Result<Vec<Created>> {
        self.state.create(jobs).await
    }
    async fn claim(
        &self,
        ids: &[JobId],
        worker: &WorkerId,
        lease: Duration,
    ) -> jobforge::Result<Vec<Claim>> {
        self.state.claim(ids, worker, lease).await
    }
    async fn heartbeat(&self, held: &[Held], _lease: Duration) -> jobforge::Result<Vec<Heartbeat>> {
        Ok(vec![
            Heartbeat::Held {
                cancel_requested: false
            };
            held.len()
        ])
    }
    async fn finish(&self, t: Vec<Transition>) -> jobforge::Result<Vec<TransitionResult>> {
        self.state.finish(t).await
    }
    async fn cancel(&self, id: JobId, reason: &str) -> jobforge::Result<CancelOutcome> {
        self.state.cancel(id, reason).await
    }
    async fn get(&self, id: JobId) -> jobforge::Result<Option<JobRecord>> {
        self.state.get(id).await
    }
    async fn list(&self, f: &JobFilter, p: &Page) -> jobforge::Result<Paged<JobRecord>> {
        self.state.list(f, p).await
    }
    async fn events(&self, id: JobId) -> jobforge::Result<Vec<JobEvent>> {
        self.state.events(id).await
    }
    async fn counts(&self) -> jobforge::Result<StateCounts> {
        self.state.counts().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_stops_heartbeating_is_taken_over_and_cannot_overwrite() {
    let Some(url) = redis_url("a_host_that_stops_heartbeating_is_taken_over_and_cannot_overwrite")
    else {
        return;
    };
    let ns = Namespaces::new(&url);
    let name = ns.fresh("hosts");
    // Host A: heartbeats lost; its handler takes far longer than its lease.
    let (qa, sa) = redis_backends(&url, &name).await;
    let silent = Arc::new(NoHeartbeats {
        queue: qa,
        state: sa,
    });
    let a_started = Arc::new(tokio::sync::Notify::new());
    let a_done = Arc::new(tokio::sync::Notify::new());
    let (started, done) = (Arc::clone(&a_started), Arc::clone(&a_done));
    let host_a = Orchestrator::builder()
        .queue(silent.clone())
        .state(silent.clone())
        .handler("slow", move |_ctx: JobContext| {
            let (started, done) = (Arc::clone(&started), Arc::clone(&done));
            async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_millis(1500)).await;
                done.notify_one();
                Ok(json!("from A"))
            }
        })
        .build()
        .unwrap();
    let pool_a = host_a
        .start_workers(
            WorkerConfig::default()
                .worker_id(WorkerId::new("host-a"))
                .concurrency(1)
                .lease(Duration::from_millis(300))
                .poll_wait(Duration::from_millis(50)),
        )
        .unwrap();
    let job = host_a.submit(NewJob::new("slow")).await.unwrap().id;
    tokio::time::timeout(Duration::from_secs(10), a_started.notified())
        .await
        .expect("host A started the job");

    // Host B: a second process (its own connections), healthy.
    let (qb, sb) = redis_backends(&url, &name).await;
    let host_b = Orchestrator::builder()
        .queue(qb)
        .state(sb)
        .handler(
            "slow",
            |_ctx: JobContext| async move { Ok(json!("from B")) },
        )
        .build()
        .unwrap();
    let pool_b = host_b
        .start_workers(
            WorkerConfig::default()
                .worker_id(WorkerId::new("host-b"))
                .lease(Duration::from_secs(2))
                .poll_wait(Duration::from_millis(50)),
        )
        .unwrap();
    let done_by_b = host_b.wait_for(job, Duration::from_secs(10)).await.unwrap();
    assert_eq!(done_by_b.state, JobState::Succeeded);
    assert_eq!(done_by_b.result.as_ref().unwrap().as_str(), "\"from B\"");
    assert_eq!(done_by_b.attempt, 2);
    // A finishes late; its result is refused.
    tokio::time::timeout(Duration::from_secs(10), a_done.notified())
        .await
        .expect("host A's handler returned");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = host_b.get(job).await.unwrap().unwrap();
    assert_eq!(after.result.as_ref().unwrap().as_str(), "\"from B\"");
    assert_eq!(
        after.version, done_by_b.version,
        "A's late finish changed nothing"
    );
    let events = host_b.events(job).await.unwrap();
    assert!(
        events.iter().any(|e| e
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("taken over"))),
        "{events:?}"
    );
    pool_b.shutdown(Duration::from_secs(5)).await;
    pool_a.shutdown(Duration::from_secs(5)).await;
    let stats = host_b.stats().await.unwrap();
    assert_eq!((stats.queue.ready, stats.queue.in_flight), (0, 0));
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciler_enqueues_jobs_the_queue_lost() {
    let Some(url) = redis_url("reconciler_enqueues_jobs_the_queue_lost") else {
        return;
    };
    let ns = Namespaces::new(&url);
    let name = ns.fresh("reconcile");
    let queue = Arc::new(
        RedisStreamsQueue::connect(RedisQueueConfig::new(url.as_str()).with_namespace(&name))
            .await
            .unwrap(),
    );
    let ran = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran);
    let split = Arc::new(Split::new(queue.clone(), Arc::new(InMemoryState::new())));
    let orch = Orchestrator::builder()
        .store(split.clone())
        .handler("work", move |_ctx: JobContext| {
            let r = Arc::clone(&r);
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok(serde_json::Value::Null)
            }
        })
        .build()
        .unwrap();
    // Jobs are in state and queue, then the queue's keys vanish (a Redis restart without
    // persistence, a FLUSHDB), with no worker running yet.
    let first: Vec<NewJob> = (0..300).map(|_| NewJob::new("work")).collect();
    orch.submit_batch(first).await.unwrap();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys = keys_of(&mut conn, &name).await;
    assert!(!keys.is_empty());
    let _: usize = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(queue.stats().await.unwrap().ready, 0);
    let pool = orch.start_workers(quick_workers()).unwrap();
    let reconciler = split
        .start_reconciler(
            queue.clone(),
            ReconcilerConfig::default()
                .every(Duration::from_millis(200))
                .grace(Duration::from_millis(100)),
        )
        .unwrap();
    // While it runs, lose the keys again under the running system, with new jobs in flight.
    let second: Vec<NewJob> = (0..200).map(|_| NewJob::new("work")).collect();
    orch.submit_batch(second).await.unwrap();
    let keys = keys_of(&mut conn, &name).await;
    let _: usize = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    orch.wait_idle(Duration::from_secs(30)).await.unwrap();
    let counts = orch.stats().await.unwrap().jobs;
    assert_eq!(counts.total.succeeded, 500);
    assert!(reconciler.enqueued() >= 300, "{}", reconciler.enqueued());
    assert!(ran.load(Ordering::SeqCst) >= 500);
    // A second reconciler does nothing while the first holds the lock.
    let other = split
        .start_reconciler(queue.clone(), ReconcilerConfig::default())
        .unwrap();
    assert!(reconciler.run_once().await.unwrap().leader);
    assert!(!other.run_once().await.unwrap().leader);
    other.shutdown().await;
    reconciler.shutdown().await;
    pool.shutdown(Duration::from_secs(5)).await;
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_share_one_rate_limit() {
    let Some(url) = redis_url("two_orchestrators_share_one_rate_limit") else {
        return;
    };
    let ns = Namespaces::new(&url);
    let name = ns.fresh("limit");
    const RATE: u32 = 20; // per second
    const BURST: u32 = 4;
    const JOBS: usize = 50;
    let allowed_at: Arc<parking_lot::Mutex<Vec<std::time::Instant>>> = Arc::default();
    let mut hosts = Vec::new();
    for host in ["a", "b"] {
        let (queue, state) = redis_backends(&url, &name).await;
        let limit = Arc::new(
            RedisRateLimit::connect(
                RedisRateLimitConfig::new(url.as_str(), RATE, Duration::from_secs(1))
                    .with_burst(BURST)
                    .with_namespace(&name),
            )
            .await
            .unwrap(),
        );
        let seen = Arc::clone(&allowed_at);
        let orch = Orchestrator::builder()
            .queue(queue)
            .state(state)
            .handler("call", move |_ctx: JobContext| {
                let (limit, seen) = (Arc::clone(&limit), Arc::clone(&seen));
                async move {
                    let d = limit
                        .check("partner-api")
                        .await
                        .map_err(JobError::retryable)?;
                    if !d.allowed {
                        return Err(JobError::defer(d.retry_after, "rate limited"));
                    }
                    seen.lock().push(std::time::Instant::now());
                    Ok(serde_json::Value::Null)
                }
            })
            .build()
            .unwrap();
        let pool = orch
            .start_workers(quick_workers().worker_id(WorkerId::new(format!("host-{host}"))))
            .unwrap();
        hosts.push((orch, pool));
    }
    let started = std::time::Instant::now();
    let jobs: Vec<NewJob> = (0..JOBS).map(|_| NewJob::new("call")).collect();
    hosts[0].0.submit_batch(jobs).await.unwrap();
    hosts[0].0.wait_idle(Duration::from_secs(30)).await.unwrap();
    let elapsed = started.elapsed();
    let mut times = allowed_at.lock().clone();
    times.sort();
    assert_eq!(times.len(), JOBS);
    // GCRA: in any window of length L, at most BURST + L * RATE pass (plus one for clock
    // granularity between the server's clock and ours).
    let per = 1.0 / f64::from(RATE);
    for i in 0..times.len() {
        for j in i..times.len() {
            let window = (times[j] - times[i]).as_secs_f64();
            let passed = (j - i + 1) as f64;
            assert!(
                passed <= f64::from(BURST) + window / per + 1.0,
                "{passed} passed within {window:.3}s"
            );
        }
    }
    let least = Duration::from_secs_f64((JOBS as f64 - f64::from(BURST)) * per);
    assert!(
        elapsed >= least.mul_f64(0.9),
        "{elapsed:?} < {least:?}: the limit held them back"
    );
    let stats = hosts[0].0.stats().await.unwrap();
    assert_eq!(stats.jobs.total.succeeded, JOBS as u64);
    for (_, pool) in hosts {
        pool.shutdown(Duration::from_secs(5)).await;
    }
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_only_retained_records_are_left() {
    let Some(url) = redis_url("memory_stays_bounded_only_retained_records_are_left") else {
        return;
    };
    let n: usize = std::env::var("JOBFORGE_BOUNDED_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let ns = Namespaces::new(&url);
    let name = ns.fresh("bounded");
    // The Redis-only deployment: the state is its own queue.
    let state = Arc::new(
        RedisState::connect(RedisStateConfig::new(url.as_str()).with_namespace(&name))
            .await
            .unwrap(),
    );
    let orch = Orchestrator::builder()
        .store(state.clone())
        .handler("noop", |_ctx: JobContext| async {
            Ok(serde_json::Value::Null)
        })
        .build()
        .unwrap();
    let pool = orch
        .start_workers(
            quick_workers()
                .concurrency(1000)
                .batch_size(1000)
                .record_executions(false),
        )
        .unwrap();
    for _ in 0..n / 1000 {
        let jobs: Vec<NewJob> = (0..1000).map(|_| NewJob::new("noop")).collect();
        orch.submit_batch(jobs).await.unwrap();
    }
    orch.wait_idle(Duration::from_secs(100)).await.unwrap();
    pool.shutdown(Duration::from_secs(5)).await;
    assert_eq!(state.counts().await.unwrap().total.succeeded, n as u64);
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let hlen = |key: String| redis::cmd("HLEN").arg(key).to_owned();
    let fields = |conn: &mut redis::aio::MultiplexedConnection, key: String| {
        let cmd = hlen(key);
        let mut conn = conn.clone();
        async move { cmd.query_async::<usize>(&mut conn).await.unwrap() }
    };
    // One record (two fields) per retained job, and a fixed set of keys besides.
    assert_eq!(fields(&mut conn, format!("{{{name}}}:m")).await, n);
    assert_eq!(fields(&mut conn, format!("{{{name}}}:d")).await, n);
    let mut keys = keys_of(&mut conn, &name).await;
    keys.sort();
    // The records, the index by kind, the lane, its registry and the queue names, the
    // counts, the retention list: nothing per job.
    assert!(keys.len() <= 12, "{} keys: {keys:?}", keys.len());
    eprintln!(
        "{n} jobs done: {n} records in 2 hashes, {} keys: {keys:?}",
        keys.len()
    );

    // With a short retention, finished records go: nothing per job is left.
    let short = ns.fresh("bounded-short");
    let state = Arc::new(
        RedisState::connect(
            RedisStateConfig::new(url.as_str())
                .with_namespace(&short)
                .with_retention(Duration::from_millis(300))
                .with_dead_retention(Duration::from_millis(300)),
        )
        .await
        .unwrap(),
    );
    let orch = Orchestrator::builder()
        .store(state.clone())
        .handler("noop", |_ctx: JobContext| async {
            Ok(serde_json::Value::Null)
        })
        .build()
        .unwrap();
    let pool = orch.start_workers(quick_workers()).unwrap();
    let jobs: Vec<NewJob> = (0..1000)
        .map(|i| NewJob::new("noop").idempotency_key(format!("key-{i}")))
        .collect();
    orch.submit_batch(jobs).await.unwrap();
    orch.wait_idle(Duration::from_secs(30)).await.unwrap();
    pool.shutdown(Duration::from_secs(5)).await;
    // A cancelled and a dead job go too, from their indexes and counts.
    let extra = vec![
        conformance::record(NewJob::new("gone")),
        conformance::record(NewJob::new("gone").idempotency_key("gone-2")),
    ];
    let (cancelled, dead) = (extra[0].id, extra[1].id);
    state.create(extra).await.unwrap();
    state.cancel(cancelled, "not wanted").await.unwrap();
    let w = WorkerId::new("w");
    let claims = state
        .claim(&[dead], &w, Duration::from_millis(300))
        .await
        .unwrap();
    let [Claim::Claimed(r)] = &claims[..] else {
        panic!("{claims:?}")
    };
    state
        .finish(vec![conformance::finish(
            r,
            &w,
            Finish::Dead {
                error: "bad input".into(),
            },
        )])
        .await
        .unwrap();
    let counts = state.counts().await.unwrap();
    assert_eq!((counts.total.cancelled, counts.total.dead), (1, 1));
    // Past the retention and the workers' 600 ms leases: records and lease batches go.
    tokio::time::sleep(Duration::from_millis(700)).await;
    while state.sweep().await.unwrap() > 0 {}
    assert_eq!(fields(&mut conn, format!("{{{short}}}:rb")).await, 0);
    let keys = keys_of(&mut conn, &short).await;
    assert!(
        keys.iter().all(|k| !k.contains(":ik:")),
        "idempotency keys outlived retention: {keys:?}"
    );
    assert_eq!(fields(&mut conn, format!("{{{short}}}:m")).await, 0);
    assert_eq!(fields(&mut conn, format!("{{{short}}}:d")).await, 0);
    assert!(keys.len() <= 12, "{keys:?}");
    assert_eq!(state.counts().await.unwrap().total.total(), 0);
    ns.cleanup().await;
}

/// A job deleted before its retention ended is counted down once: when the sweep reaches
/// its retention entry later, it passes over it (before, it counted the job down again, so
/// a later job of the same kind and state went uncounted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_job_is_not_counted_down_again_by_the_sweep() {
    let Some(url) = redis_url("a_deleted_job_is_not_counted_down_again_by_the_sweep") else {
        return;
    };
    let ns = Namespaces::new(&url);
    let name = ns.fresh("deleted");
    let state = RedisState::connect(
        RedisStateConfig::new(url.as_str())
            .with_namespace(&name)
            .with_retention(Duration::from_millis(200))
            .with_dead_retention(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let w = WorkerId::new("w");
    let die = |id| {
        let (state, w) = (&state, &w);
        async move {
            let claims = state
                .claim(&[id], w, Duration::from_secs(30))
                .await
                .unwrap();
            let [Claim::Claimed(r)] = &claims[..] else {
                panic!("{claims:?}")
            };
            state
                .finish(vec![conformance::finish(
                    r,
                    w,
                    Finish::Dead {
                        error: "bad".into(),
                    },
                )])
                .await
                .unwrap();
        }
    };
    let first = conformance::record(NewJob::new("gone"));
    let first_id = first.id;
    state.create(vec![first]).await.unwrap();
    die(first_id).await;
    assert_eq!(
        state.delete_finished(first_id).await.unwrap(),
        jobforge::store::Deleted::Deleted
    );
    assert_eq!(state.counts().await.unwrap().total.dead, 0);
    // Past the first one's retention, a second dead job of the kind; its finish sweeps the
    // first one's entry.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = conformance::record(NewJob::new("gone"));
    let second_id = second.id;
    state.create(vec![second]).await.unwrap();
    die(second_id).await;
    while state.sweep().await.unwrap() > 0 {}
    assert_eq!(
        state.counts().await.unwrap().total.dead,
        1,
        "the second dead job is counted"
    );
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys = keys_of(&mut conn, &name).await;
    assert!(
        keys.iter().all(|k| !k.ends_with(":deleted")),
        "the sweep let go of the deleted ids: {keys:?}"
    );
    ns.cleanup().await;
}

/// The drains of large backlogs: few round trips, and a per-job cost that does not grow as
/// the backlog shrinks (lenient: the machine is shared). `per_batch` is seconds per job of
/// each batch, in order.
fn assert_steady_cost(per_batch: &[f64], trips: u64, jobs: usize) {
    let tenth = (per_batch.len() / 10).max(1);
    let avg = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let first = avg(&per_batch[..tenth]);
    let last = avg(&per_batch[per_batch.len() - tenth..]);
    eprintln!(
        "drained {jobs} jobs: {:.4} round trips/job, {:.1} us/job in the first tenth, {:.1} in the last",
        trips as f64 / jobs as f64,
        first * 1e6,
        last * 1e6
    );
    assert!(trips as f64 / (jobs as f64) < 0.01, "{trips} round trips");
    assert!(
        last < first * 5.0 + 50e-6,
        "first {first:e} s/job, last {last:e} s/job"
    );
}

/// Sleep until the wall clock reaches `at`.
async fn sleep_until_utc(at: chrono::DateTime<chrono::Utc>) {
    tokio::time::sleep((at - chrono::Utc::now()).to_std().unwrap_or_default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_backlogs_of_ready_and_delayed_jobs_drain_at_a_steady_cost() {
    let Some(url) = redis_url("large_backlogs_of_ready_and_delayed_jobs_drain_at_a_steady_cost")
    else {
        return;
    };
    // Same shape as the full 1,000,000 + 1,000,000; set JOBFORGE_BACKLOG=1000000 for it.
    let n: usize = std::env::var("JOBFORGE_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let ns = Namespaces::new(&url);
    let name = ns.fresh("backlog");
    let queue =
        RedisStreamsQueue::connect(RedisQueueConfig::new(url.as_str()).with_namespace(&name))
            .await
            .unwrap();
    // Due once they are all in (enqueueing takes a while on a busy machine), all at once.
    let due = chrono::Utc::now()
        + chrono::Duration::seconds(2)
        + chrono::Duration::microseconds(i64::try_from(2 * n * 50).unwrap_or(i64::MAX));
    let mut sent = 0;
    while sent < n {
        let take = (n - sent).min(10_000);
        let ready: Vec<Envelope> = (0..take)
            .map(|_| conformance::envelope("k", 0, 0))
            .collect();
        let delayed: Vec<Envelope> = (0..take)
            .map(|_| {
                let mut e = conformance::envelope("k", 0, 0);
                e.run_at = due;
                e
            })
            .collect();
        queue.enqueue(&delayed).await.unwrap();
        queue.enqueue(&ready).await.unwrap();
        sent += take;
    }
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.ready + stats.delayed, 2 * n as u64);
    assert!(
        stats.delayed >= n as u64 * 9 / 10,
        "the delayed jobs came due before they were all in: {stats:?}"
    );
    sleep_until_utc(due).await;
    // Everything is due at once now: drain it in batches.
    let worker = WorkerId::new("drainer");
    let queues = vec!["default".to_owned()];
    let mut seen = std::collections::HashSet::with_capacity(2 * n);
    let trips_before = queue.round_trips();
    let started = std::time::Instant::now();
    let mut per_batch = Vec::new();
    while seen.len() < 2 * n {
        let t = std::time::Instant::now();
        let leases = queue
            .reserve(&Reserve {
                worker: &worker,
                queues: &queues,
                max: 1000,
                lease: Duration::from_secs(60),
                wait: Duration::from_millis(100),
            })
            .await
            .unwrap();
        assert!(!leases.is_empty(), "drained {} of {}", seen.len(), 2 * n);
        for l in &leases {
            assert!(seen.insert(l.id()), "{} delivered twice", l.id());
        }
        queue.ack(&leases).await.unwrap();
        per_batch.push(t.elapsed().as_secs_f64() / leases.len() as f64);
    }
    let trips = queue.round_trips() - trips_before;
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.ready, stats.delayed, stats.in_flight), (0, 0, 0));
    eprintln!("drained in {:?}", started.elapsed());
    assert_steady_cost(&per_batch, trips, 2 * n);
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_lanes_are_strict_but_never_starve_the_lowest() {
    let Some(url) = redis_url("priority_lanes_are_strict_but_never_starve_the_lowest") else {
        return;
    };
    let ns = Namespaces::new(&url);
    let name = ns.fresh("lanes");
    let queue = RedisStreamsQueue::connect(
        RedisQueueConfig::new(url.as_str())
            .with_namespace(&name)
            .with_max_lane_wait(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let worker = WorkerId::new("w");
    let queues = vec!["default".to_owned()];
    let reserve = |max| Reserve {
        worker: &worker,
        queues: &queues,
        max,
        lease: Duration::from_secs(30),
        wait: Duration::ZERO,
    };
    let low = conformance::envelope("k", -5, 0);
    queue.enqueue(std::slice::from_ref(&low)).await.unwrap();
    // While high-priority work keeps coming, the low job waits (strict priority)...
    let mut low_seen_after = None;
    let started = std::time::Instant::now();
    for round in 0..40 {
        let high: Vec<Envelope> = (0..8).map(|_| conformance::envelope("k", 10, 0)).collect();
        queue.enqueue(&high).await.unwrap();
        let got = queue.reserve(&reserve(8)).await.unwrap();
        if got.iter().any(|l| l.id() == low.id) {
            low_seen_after = Some((round, started.elapsed()));
            break;
        }
        if started.elapsed() < Duration::from_millis(250) {
            assert!(
                got.iter().all(|l| l.envelope.priority == 10),
                "strict while young"
            );
        }
        queue.ack(&got).await.unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // ...until it has waited longer than the lane wait: then it is served.
    let (_, after) = low_seen_after.expect("the low-priority job was starved");
    assert!(
        after >= Duration::from_millis(250),
        "served after {after:?}"
    );
    ns.cleanup().await;
}

// A `redis-server` of the test's own: `tests/support/private_redis.rs` (shared with the chaos
// suite).

/// A handler that counts its runs, each after `pause`.
fn counting(ran: &Arc<AtomicUsize>, pause: Duration) -> impl Handler {
    let r = Arc::clone(ran);
    move |_ctx: JobContext| {
        let r = Arc::clone(&r);
        async move {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            r.fetch_add(1, Ordering::SeqCst);
            Ok(serde_json::Value::Null)
        }
    }
}

/// Submit `n` jobs of kind `work` while the server comes back, retrying refused ones.
async fn submit_as_it_returns(orch: &Orchestrator, n: usize) {
    let mut submitted = 0;
    while submitted < n {
        if orch.submit(NewJob::new("work")).await.is_ok() {
            submitted += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_run_workers_recover_and_every_job_finishes() {
    if redis_url("redis_restart_mid_run_workers_recover_and_every_job_finishes").is_none() {
        return;
    }
    let port = PrivateRedis::spare_port();
    let mut server = PrivateRedis::start(port);
    let queue = Arc::new(
        RedisStreamsQueue::connect(
            RedisQueueConfig::new(server.url())
                .with_connect_timeout(Duration::from_millis(500))
                .with_response_timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap(),
    );
    let ran = Arc::new(AtomicUsize::new(0));
    let split = Arc::new(Split::new(queue.clone(), Arc::new(InMemoryState::new())));
    let orch = Orchestrator::builder()
        .store(split.clone())
        .handler("work", counting(&ran, Duration::from_millis(2)))
        .build()
        .unwrap();
    let pool = orch
        .start_workers(
            WorkerConfig::default()
                .concurrency(16)
                .lease(Duration::from_millis(600))
                .poll_wait(Duration::from_millis(100)),
        )
        .unwrap();
    let reconciler = split
        .start_reconciler(
            queue.clone(),
            ReconcilerConfig::default()
                .every(Duration::from_millis(300))
                .grace(Duration::from_millis(300)),
        )
        .unwrap();
    let jobs: Vec<NewJob> = (0..400).map(|_| NewJob::new("work")).collect();
    orch.submit_batch(jobs).await.unwrap();
    // Let it get going, then pull the server away mid-run.
    while ran.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.shutdown_nosave().await;
    let during = orch.submit(NewJob::new("work")).await;
    assert!(during.is_err(), "the queue is down");
    assert_eq!(during.unwrap_err().kind(), jobforge::ErrorKind::Backend);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let server = PrivateRedis::start(port);
    // After the restart: workers, pooled connections, groups and scripts come back by
    // themselves; the reconciler re-enqueues what the empty server lost.
    submit_as_it_returns(&orch, 100).await;
    orch.wait_idle(Duration::from_secs(60)).await.unwrap();
    let counts = orch.stats().await.unwrap().jobs;
    // 400 + the one submitted during the outage (in state, lost by the queue) + 100.
    assert_eq!(counts.total.succeeded, 501, "{counts:?}");
    assert!(reconciler.enqueued() > 0);
    reconciler.shutdown().await;
    pool.shutdown(Duration::from_secs(5)).await;
    drop(server);
}

// ------------------------------------------------- the Redis state as its own queue

use jobforge::state::Finish;
use jobforge::store::JobStore;

async fn queuing_state(url: &str, ns: &str, config: RedisStateConfig) -> Arc<RedisState> {
    Arc::new(
        RedisState::connect(config.with_namespace(ns))
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_state_as_its_own_queue_runs_retries_dead_letters_and_cancels() {
    let Some(url) = redis_url("redis_state_as_its_own_queue_runs_retries_dead_letters_and_cancels")
    else {
        return;
    };
    let ns = Namespaces::new(&url);
    let name = ns.fresh("own-queue");
    let state = queuing_state(&url, &name, RedisStateConfig::new(url.as_str())).await;
    let calls = Arc::new(AtomicU32::new(0));
    let orch = e2e_kinds(Orchestrator::builder().store(state.clone()), &calls)
        .build()
        .unwrap();
    let pool = orch.start_workers(quick_workers()).unwrap();
    let ids = e2e_run(&orch).await;
    e2e_check(&orch, &ids, &calls).await;
    // Stats come from the counts: the cancelled job's lane entry does not count.
    let stats = orch.stats().await.unwrap();
    assert_eq!(
        (
            stats.queue.ready,
            stats.queue.delayed,
            stats.queue.in_flight,
            stats.queue.dead
        ),
        (0, 0, 0, 1)
    );
    assert_eq!(stats.queue.per_kind["broken"].dead, 1);
    let events = orch.events(ids[200]).await.unwrap();
    assert!(
        events[2]
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("upstream 503")
    );
    let dead = orch
        .list(
            &JobFilter {
                state: Some(JobState::Dead),
                ..Default::default()
            },
            &Page::first(10),
        )
        .await
        .unwrap();
    assert_eq!(
        dead.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![ids[201]]
    );
    assert!(pool.shutdown(Duration::from_secs(5)).await.drained);
    ns.cleanup().await;
}

/// Finding: while every slot of a pool stays busy (no claims, no finishes), each heartbeat
/// filed a new lease batch and nothing dropped the expired ones; and queue and kind names
/// stayed in their sets for good. Heartbeats now drop expired batches of their queues, and
/// a sweep drops queues with nothing filed, waiting or leased, and kinds with no record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_batches_and_the_queue_and_kind_sets_stay_bounded() {
    let Some(url) = redis_url("lease_batches_and_the_queue_and_kind_sets_stay_bounded") else {
        return;
    };
    let ns = Namespaces::new(&url);
    let name = ns.fresh("bounded-sets");
    let config = RedisStateConfig::new(url.as_str())
        .with_retention(Duration::from_millis(200))
        .with_dead_retention(Duration::from_millis(200));
    let state = queuing_state(&url, &name, config).await;
    let mut records: Vec<JobRecord> = (0..10)
        .map(|_| conformance::record(NewJob::new("k")))
        .collect();
    records.extend((0..20).map(|i| {
        conformance::record(NewJob::new(format!("kind-{i}")).queue(format!("queue-{i}")))
    }));
    state.create(records).await.unwrap();
    let w = WorkerId::new("busy");
    let mut queues = vec!["default".to_owned()];
    queues.extend((0..20).map(|i| format!("queue-{i}")));
    let lease = Duration::from_millis(300);
    let claims = state
        .claim_due(&Reserve {
            worker: &w,
            queues: &queues,
            max: 100,
            lease,
            wait: Duration::ZERO,
        })
        .await
        .unwrap();
    let held: Vec<JobRecord> = claims
        .into_iter()
        .map(|c| match c {
            Claim::Claimed(r) => r,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(held.len(), 30);
    // Three leases' worth of heartbeats and nothing else.
    let marks: Vec<Held> = held.iter().map(Held::of).collect();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let beats = state.heartbeat(&marks, lease).await.unwrap();
        assert!(beats.iter().all(|b| matches!(b, Heartbeat::Held { .. })));
    }
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let batches: usize = redis::cmd("HLEN")
        .arg(format!("{{{name}}}:rb"))
        .query_async(&mut conn)
        .await
        .unwrap();
    // One live batch per queue and heartbeat within a lease (about three), not one per
    // heartbeat ever made (30 per queue).
    assert!(batches <= 21 * 5, "{batches} lease batches for 21 queues");
    // All finish; past the retention everything per job, queue and kind goes.
    let done: Vec<Transition> = held
        .iter()
        .map(|r| conformance::finish(r, &w, Finish::Succeeded { result: None }))
        .collect();
    state.finish(done).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    while state.sweep().await.unwrap() > 0 {}
    let members = |key: String| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("SMEMBERS")
                .arg(key)
                .query_async::<Vec<String>>(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        members(format!("{{{name}}}:queues")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        members(format!("{{{name}}}:kinds")).await,
        Vec::<String>::new()
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_claim_is_woken_by_a_submit_from_another_process() {
    let Some(url) = redis_url("an_idle_claim_is_woken_by_a_submit_from_another_process") else {
        return;
    };
    let ns = Namespaces::new(&url);
    let name = ns.fresh("wake");
    // A long poll interval, so only the published wake-up can explain a quick start.
    let config = RedisStateConfig::new(url.as_str()).with_poll_interval(Duration::from_secs(20));
    let waiting = queuing_state(&url, &name, config.clone()).await;
    let submitting = queuing_state(&url, &name, config).await;
    // The first claim subscribes to the wake channel; the create comes while it waits.
    conformance::queuing_state_wakes_a_waiting_claim(waiting, submitting, Duration::from_secs(5))
        .await;
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_due_takes_over_expired_leases_and_fences_the_old_owner() {
    let Some(url) = redis_url("claim_due_takes_over_expired_leases_and_fences_the_old_owner")
    else {
        return;
    };
    let ns = Namespaces::new(&url);
    let name = ns.fresh("takeover");
    let state = queuing_state(&url, &name, RedisStateConfig::new(url.as_str())).await;
    let mut job = conformance::record(NewJob::new("k"));
    job.max_attempts = 2;
    let id = job.id;
    state.create(vec![job]).await.unwrap();
    let queues = vec!["default".to_owned()];
    let (a, b) = (WorkerId::new("host-a"), WorkerId::new("host-b"));
    let req = |w| Reserve {
        worker: w,
        queues: &queues,
        max: 10,
        lease: Duration::from_millis(200),
        wait: Duration::ZERO,
    };
    let first = state.claim_due(&req(&a)).await.unwrap();
    let [Claim::Claimed(first)] = &first[..] else {
        panic!("{first:?}")
    };
    assert_eq!(first.id, id);
    // A heartbeat keeps the lease: no takeover while it holds.
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(matches!(
        state
            .heartbeat(&[Held::of(first)], Duration::from_millis(200))
            .await
            .unwrap()[..],
        [Heartbeat::Held { .. }]
    ));
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(state.claim_due(&req(&b)).await.unwrap().is_empty());
    // Host a goes quiet; host b takes the job over once the lease ran out.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let taken = state.claim_due(&req(&b)).await.unwrap();
    let [Claim::Claimed(r)] = &taken[..] else {
        panic!("{taken:?}")
    };
    assert_eq!((r.id, r.attempt, r.lease_owner.as_ref()), (id, 2, Some(&b)));
    // Host a comes back and cannot overwrite: its settle finds another version.
    let late = state
        .finish(vec![conformance::finish(
            first,
            &a,
            Finish::Succeeded { result: None },
        )])
        .await
        .unwrap();
    assert!(
        matches!(late[..], [TransitionResult::Conflict { .. }]),
        "{late:?}"
    );
    // Host b goes quiet too: its attempts are spent, so the next claim buries the job.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let buried = state.claim_due(&req(&a)).await.unwrap();
    assert!(
        matches!(&buried[..], [Claim::Exhausted { id: x, .. }] if *x == id),
        "{buried:?}"
    );
    let record = state.get(id).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Dead);
    assert!(record.last_error.unwrap().contains("no attempts left"));
    let stats = state.stats().await.unwrap();
    assert_eq!((stats.in_flight, stats.dead), (0, 1));
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_separate_queue_the_state_keeps_no_lane_backlog() {
    let Some(url) = redis_url("with_a_separate_queue_the_state_keeps_no_lane_backlog") else {
        return;
    };
    let ns = Namespaces::new(&url);
    let name = ns.fresh("lanes");
    let (queue, state) = redis_backends(&url, &name).await;
    let orch = Orchestrator::builder()
        .queue(queue.clone())
        .state(state.clone())
        .handler("noop", |_ctx: JobContext| async {
            Ok(serde_json::Value::Null)
        })
        .build()
        .unwrap();
    let pool = orch.start_workers(quick_workers()).unwrap();
    for _ in 0..5 {
        let jobs: Vec<NewJob> = (0..1000).map(|_| NewJob::new("noop")).collect();
        orch.submit_batch(jobs).await.unwrap();
    }
    orch.wait_idle(Duration::from_secs(60)).await.unwrap();
    pool.shutdown(Duration::from_secs(5)).await;
    assert_eq!(state.counts().await.unwrap().total.succeeded, 5000);
    // The state filed every job in its own lane too; the claims through the Streams queue
    // trimmed the lane behind them.
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let left: usize = redis::cmd("LLEN")
        .arg(format!("{{{name}}}:q:default:0"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left <= 200, "{left} lane entries left behind");
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_queue_drains_large_ready_and_delayed_backlogs_at_a_steady_cost() {
    let Some(url) = redis_url("own_queue_drains_large_ready_and_delayed_backlogs_at_a_steady_cost")
    else {
        return;
    };
    // Same shape as the full 1,000,000 + 1,000,000; set JOBFORGE_BACKLOG=1000000 for it.
    let n: usize = std::env::var("JOBFORGE_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let ns = Namespaces::new(&url);
    let name = ns.fresh("own-backlog");
    let state = queuing_state(&url, &name, RedisStateConfig::new(url.as_str())).await;
    // Due once they are all in (a debug build creates about 15k jobs/s), all at once.
    let due = chrono::Utc::now()
        + chrono::Duration::seconds(2)
        + chrono::Duration::microseconds(i64::try_from(2 * n * 100).unwrap_or(i64::MAX));
    let mut sent = 0;
    while sent < n {
        let take = (n - sent).min(5_000);
        let mut records: Vec<JobRecord> = (0..take)
            .map(|_| conformance::record(NewJob::new("k")))
            .collect();
        records.extend((0..take).map(|_| {
            let mut r = conformance::record(NewJob::new("k"));
            r.run_at = due;
            r
        }));
        state.create(records).await.unwrap();
        sent += take;
    }
    let stats = state.stats().await.unwrap();
    assert_eq!(stats.ready + stats.delayed, 2 * n as u64);
    assert!(
        stats.delayed >= n as u64 * 9 / 10,
        "the delayed jobs came due before they were all in: {stats:?}"
    );
    sleep_until_utc(due).await;
    let worker = WorkerId::new("drainer");
    let queues = vec!["default".to_owned()];
    let mut seen = std::collections::HashSet::with_capacity(2 * n);
    let trips_before = state.round_trips();
    let mut per_batch = Vec::new();
    while seen.len() < 2 * n {
        let t = std::time::Instant::now();
        let claims = state
            .claim_due(&Reserve {
                worker: &worker,
                queues: &queues,
                max: 1000,
                lease: Duration::from_secs(60),
                wait: Duration::from_millis(100),
            })
            .await
            .unwrap();
        assert!(!claims.is_empty(), "drained {} of {}", seen.len(), 2 * n);
        let mut done = Vec::with_capacity(claims.len());
        for c in claims {
            let Claim::Claimed(r) = c else {
                panic!("{c:?}")
            };
            assert!(seen.insert(r.id), "{} claimed twice", r.id);
            done.push(conformance::finish(
                &r,
                &worker,
                Finish::Succeeded { result: None },
            ));
        }
        let n_done = done.len();
        let results = state.finish(done).await.unwrap();
        assert!(
            results
                .iter()
                .all(|r| matches!(r, TransitionResult::Applied { .. }))
        );
        per_batch.push(t.elapsed().as_secs_f64() / n_done as f64);
    }
    let trips = state.round_trips() - trips_before;
    let stats = state.stats().await.unwrap();
    assert_eq!((stats.ready, stats.delayed, stats.in_flight), (0, 0, 0));
    assert_eq!(state.counts().await.unwrap().total.succeeded, 2 * n as u64);
    assert_steady_cost(&per_batch, trips, 2 * n);
    ns.cleanup().await;
}

/// A finish is settled from the record the claim returned (computed in Rust) or, when that
/// copy is not at hand, by the finish script (in Lua): both must write the same record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_finish_writes_what_the_finish_script_writes() {
    let Some(url) = redis_url("a_settled_finish_writes_what_the_finish_script_writes") else {
        return;
    };
    let ns = Namespaces::new(&url);
    let name = ns.fresh("settle");
    let config = RedisStateConfig::new(url.as_str()).with_max_events_per_job(3);
    let settling = queuing_state(&url, &name, config.clone()).await;
    // Another instance on the same data never saw the claims: it finishes by the script.
    let scripted = queuing_state(&url, &name, config).await;
    let w = WorkerId::new("w");
    let later = Duration::from_secs(60);
    let finishes = [
        Finish::Succeeded {
            result: Some(jobforge::Payload::from_json("{\"ok\":1}").unwrap()),
        },
        Finish::Succeeded { result: None },
        Finish::Retry {
            delay: later,
            error: "boom".into(),
        },
        Finish::Defer {
            delay: later,
            reason: "rate limited".into(),
        },
        Finish::Dead {
            error: "bad input".into(),
        },
        Finish::Cancelled {
            reason: "stopped".into(),
        },
        Finish::Release {
            reason: "shutting down".into(),
        },
    ];
    for finish in finishes {
        let mut records = Vec::new();
        for _ in 0..2 {
            let mut r = conformance::record(
                NewJob::new("k").idempotency_key(format!("key-{}", uuid::Uuid::now_v7())),
            );
            r.max_attempts = 5;
            records.push(r);
        }
        let ids: Vec<JobId> = records.iter().map(|r| r.id).collect();
        settling.create(records).await.unwrap();
        // Three rounds, so the history cap (3 events with creation) drops events too.
        for round in 0..3 {
            let claims = settling
                .claim(&ids, &w, Duration::from_secs(30))
                .await
                .unwrap();
            let [Claim::Claimed(ra), Claim::Claimed(rb)] = &claims[..] else {
                panic!("{claims:?}")
            };
            let t = |r: &JobRecord| {
                conformance::finish(
                    r,
                    &w,
                    if round < 2 {
                        Finish::Release {
                            reason: "again".into(),
                        }
                    } else {
                        finish.clone()
                    },
                )
            };
            let before = settling.round_trips();
            let a = settling.finish(vec![t(ra)]).await.unwrap();
            if round > 0 {
                // (The first call may also load the script.)
                assert_eq!(settling.round_trips() - before, 1, "settled in one call");
            }
            let b = scripted.finish(vec![t(rb)]).await.unwrap();
            // Requeue keeps the attempt: the next round claims attempt 1 again.
            assert_eq!(a, b, "{finish:?}");
        }
        let (x, y) = (
            settling.get(ids[0]).await.unwrap().unwrap(),
            settling.get(ids[1]).await.unwrap().unwrap(),
        );
        let shape = |r: &JobRecord| {
            (
                r.state,
                r.attempt,
                r.version,
                r.result.as_ref().map(|p| p.as_str().to_owned()),
                r.last_error.clone(),
                r.lease_owner.clone(),
                r.lease_expires_at.is_some(),
                r.finished_at.is_some(),
                r.started_at.is_some(),
            )
        };
        assert_eq!(shape(&x), shape(&y), "{finish:?}");
        let (ex, ey) = (
            settling.events(ids[0]).await.unwrap(),
            settling.events(ids[1]).await.unwrap(),
        );
        let steps = |e: &[JobEvent]| {
            e.iter()
                .map(|e| (e.from, e.to, e.attempt, e.worker.clone(), e.reason.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(steps(&ex), steps(&ey), "{finish:?}");
        assert_eq!(ex.len(), 3, "{ex:?}");
        let stats = settling.stats().await.unwrap();
        assert_eq!(stats.in_flight, 0, "{finish:?}: {stats:?}");
    }
    let counts = settling.counts().await.unwrap();
    assert_eq!(counts.total.running, 0);
    ns.cleanup().await;
}

/// The Redis-only deployment loses what the server held when it restarts without
/// persistence (documented), but the workers come back by themselves: scripts are reloaded,
/// connections and the wake channel reconnect, and new work runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_queue_workers_recover_from_a_redis_restart() {
    if redis_url("own_queue_workers_recover_from_a_redis_restart").is_none() {
        return;
    }
    let port = PrivateRedis::spare_port();
    let mut server = PrivateRedis::start(port);
    let state = Arc::new(
        RedisState::connect(
            RedisStateConfig::new(server.url())
                .with_connect_timeout(Duration::from_millis(500))
                .with_response_timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap(),
    );
    let ran = Arc::new(AtomicUsize::new(0));
    let orch = Orchestrator::builder()
        .store(state.clone())
        .handler("work", counting(&ran, Duration::ZERO))
        .build()
        .unwrap();
    let pool = orch
        .start_workers(
            WorkerConfig::default()
                .concurrency(16)
                .lease(Duration::from_millis(600))
                .poll_wait(Duration::from_millis(200)),
        )
        .unwrap();
    let jobs: Vec<NewJob> = (0..100).map(|_| NewJob::new("work")).collect();
    orch.submit_batch(jobs).await.unwrap();
    orch.wait_idle(Duration::from_secs(30)).await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 100);
    server.shutdown_nosave().await;
    let during = orch.submit(NewJob::new("work")).await;
    assert_eq!(
        during.expect_err("the server is down").kind(),
        jobforge::ErrorKind::Backend
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let server = PrivateRedis::start(port);
    submit_as_it_returns(&orch, 100).await;
    orch.wait_idle(Duration::from_secs(30)).await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 200);
    assert_eq!(state.counts().await.unwrap().total.succeeded, 100);
    pool.shutdown(Duration::from_secs(5)).await;
    drop(server);
}

/// A Redis state given without a queue is refused at `build`, naming `.store(..)`; the state
/// as a store behind a timeout is shared by two orchestrators (as two processes would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_state_without_a_queue_is_refused_and_a_wrapped_store_is_shared() {
    use jobforge::safety::{Layer, TimeoutLayer};
    let Some(url) =
        redis_url("a_redis_state_without_a_queue_is_refused_and_a_wrapped_store_is_shared")
    else {
        return;
    };
    let ns = Namespaces::new(&url);
    let name = ns.fresh("wrapped");
    let state = queuing_state(&url, &name, RedisStateConfig::new(url.as_str())).await;
    let err = Orchestrator::builder()
        .state(state.clone())
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), jobforge::ErrorKind::Configuration);
    assert!(err.to_string().contains(".store(..)"), "{err}");
    let timeout = TimeoutLayer::new(Duration::from_secs(5));
    let submitter = Orchestrator::builder()
        .store(Arc::new(timeout.layer(state.clone())))
        .build()
        .unwrap();
    let other = queuing_state(&url, &name, RedisStateConfig::new(url.as_str())).await;
    let runner = Orchestrator::builder()
        .store(Arc::new(timeout.layer(other)))
        .handler("k", |_ctx: JobContext| async move {
            Ok(serde_json::json!("ran"))
        })
        .build()
        .unwrap();
    let pool = runner.start_workers(quick_workers()).unwrap();
    let id = submitter.submit(NewJob::new("k")).await.unwrap().id;
    let done = submitter
        .wait_for(id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    pool.shutdown(Duration::from_secs(10)).await;
    ns.cleanup().await;
}

// ------------------------------------------------- one backend, one connection

use jobforge::redis::{RedisBackend, RedisConfig};

/// A `RedisBackend` connects once and hands out the store, the Streams queue and rate
/// limits on that one pool, under its namespace: the store runs a job to success for an
/// orchestrator, the queue delivers and acknowledges, a rate limit refuses past its burst,
/// and the backend counts the requests of them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_backend_hands_out_a_store_a_queue_and_a_rate_limit_on_one_connection() {
    let Some(url) =
        redis_url("a_redis_backend_hands_out_a_store_a_queue_and_a_rate_limit_on_one_connection")
    else {
        return;
    };
    let ns = Namespaces::new(&url);
    let name = ns.fresh("backend");
    let err = RedisBackend::connect_with(&url, RedisConfig::default().with_namespace("a{b}"))
        .await
        .expect_err("a namespace with braces");
    assert_eq!(err.field(), Some("namespace"), "{err}");
    let backend = RedisBackend::connect_with(
        &url,
        RedisConfig::default()
            .with_namespace(&name)
            .with_pool_size(3)
            .with_state(RedisStateConfig::default().with_retention(Duration::from_secs(600))),
    )
    .await
    .unwrap();
    assert_eq!(backend.config().namespace(), name);
    assert_eq!(backend.store().config().namespace(), name);
    assert_eq!(
        backend.store().config().retention(),
        Duration::from_secs(600)
    );
    assert_eq!(backend.queue().config().namespace(), name);
    for pool in [
        backend.pool(),
        backend.store().pool(),
        backend.queue().pool(),
    ] {
        assert_eq!(pool.status().max_size, 3);
    }

    // The store, as an orchestrator's whole store.
    let orch = Orchestrator::builder()
        .store(backend.store())
        .handler("k", |_ctx: JobContext| async move { Ok(json!("ran")) })
        .build()
        .unwrap();
    let workers = orch.start_workers(quick_workers()).unwrap();
    let id = orch.submit(NewJob::new("k")).await.unwrap().id;
    let done = orch.wait_for(id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result.as_ref().unwrap().as_str(), "\"ran\"");
    assert!(workers.shutdown(Duration::from_secs(5)).await.drained);

    // The Streams queue, on the same pool.
    let queue = backend.queue();
    let sent = conformance::envelope("k", 0, 0);
    queue.enqueue(std::slice::from_ref(&sent)).await.unwrap();
    let worker = WorkerId::new("w");
    let leases = conformance::reserve(
        queue.as_ref(),
        &worker,
        10,
        Duration::from_secs(30),
        Duration::ZERO,
    )
    .await;
    assert_eq!(
        leases.iter().map(|l| l.envelope.id).collect::<Vec<_>>(),
        vec![sent.id]
    );
    queue.ack(&leases).await.unwrap();
    let stats = queue.queue_stats("default").await.unwrap();
    assert_eq!((stats.ready, stats.in_flight), (0, 0));

    // A rate limit, on the same pool: one a minute, in bursts of two.
    let limit = backend.rate_limit(1, Duration::from_secs(60), 2).unwrap();
    assert!(limit.check("partner").await.unwrap().allowed);
    assert!(limit.check("partner").await.unwrap().allowed);
    let refused = limit.check("partner").await.unwrap();
    assert!(!refused.allowed);
    assert!(refused.retry_after > Duration::from_secs(50), "{refused:?}");
    let err = backend
        .rate_limit(0, Duration::from_secs(1), 1)
        .expect_err("a zero rate");
    assert_eq!(err.kind(), jobforge::ErrorKind::InvalidInput);

    // Every request went through the backend's one pool: it counts them all.
    let parts = backend.store().round_trips() + backend.queue().round_trips();
    assert!(parts > 0);
    assert!(
        backend.round_trips() >= parts + 3,
        "{} < {parts} + the limit's 3",
        backend.round_trips()
    );
    drop(orch);
    // The store's, the queue's and the limit's keys are all under the namespace.
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = keys_of(&mut conn, &name).await;
    for prefix in [
        format!("{{{name}}}:m"),
        format!("{{{name}:default}}:"),
        format!("{{{name}:rl:partner}}"),
    ] {
        assert!(
            keys.iter().any(|k| k.starts_with(&prefix)),
            "{prefix} in {keys:?}"
        );
    }
    assert!(ns.cleanup().await > 0);
}

/// Finding: a store and a Streams queue in one namespace both kept their queue names in
/// `{ns}:queues`, and the store's sweep dropped the names the queue had registered (it sees no
/// record filed under them), so another process's queue stats missed those queues' jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_sweep_leaves_the_streams_queue_registry_alone() {
    let Some(url) = redis_url("the_store_sweep_leaves_the_streams_queue_registry_alone") else {
        return;
    };
    let ns = Namespaces::new(&url);
    let name = ns.fresh("registry");
    let backend = RedisBackend::connect_with(&url, RedisConfig::default().with_namespace(&name))
        .await
        .unwrap();
    let mut env = conformance::envelope("k", 0, 0);
    env.queue = "streamed".into();
    backend.queue().enqueue(&[env]).await.unwrap();
    backend.store().sweep().await.unwrap();
    // A queue handle of another process: it has registered nothing itself.
    let other =
        RedisStreamsQueue::connect(RedisQueueConfig::new(url.as_str()).with_namespace(&name))
            .await
            .unwrap();
    assert_eq!(other.stats().await.unwrap().ready, 1);
    ns.cleanup().await;
}
