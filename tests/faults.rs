//! The engine under faults its store or its handlers cause: each test injects one (a
//! heartbeat answer that arrives late, a store that refuses finishes for seconds, a handler
//! that never returns or blocks its thread, absurd delays, a memory that refuses records)
//! into the embedded store and checks that nothing is lost, stuck, cancelled by nobody, or
//! run twice where no worker died. The stores' own clauses are in `tests/conformance`; the
//! same faults against real servers and real processes are the chaos suite (`tests/chaos`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jobforge::memory::{
    Entry, EntryQuery, ExecutionRecord, InMemoryMemory, Memory, NewEntry, Reflection, Window,
};
use jobforge::prelude::*;
use jobforge::queue::{QueueStats, Reserve};
use jobforge::state::{
    CancelOutcome, Claim, Created, Heartbeat, Held, InMemoryState, JobFilter, Page, Paged,
    StateCounts, StateManager, Transition, TransitionResult,
};
use jobforge::store::JobStore;
use jobforge::{Error, ErrorKind, JobEvent, JobId, JobOrchestrator, Payload, WorkerId};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

/// The embedded store with faults switched on by the test.
#[derive(Default)]
struct Faulty {
    inner: InMemoryState,
    /// Each heartbeat waits this long before it reaches the store, and as long again before
    /// its answer reaches the worker (ms).
    heartbeat_lag_ms: AtomicU64,
    /// Heartbeats fail while set.
    heartbeats_down: AtomicBool,
    /// Finishes fail until this instant (ms since `epoch`).
    finishes_down_until_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
    finish_failures: AtomicU32,
    /// Each finish takes this long (ms).
    finish_lag_ms: AtomicU64,
    /// Finishes under way now, and the most ever under way at once.
    finishing: AtomicU32,
    most_finishing: AtomicU32,
}

impl Faulty {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(0)
    }

    fn refuse_finishes_for(&self, span: Duration) {
        let until = self.now_ms() + u64::try_from(span.as_millis()).unwrap_or(0);
        self.finishes_down_until_ms.store(until, Ordering::SeqCst);
    }
}

fn down(what: &str) -> Error {
    Error::new(
        ErrorKind::Backend,
        format!("{what}: the store is down (injected)"),
    )
}

#[async_trait]
impl StateManager for Faulty {
    async fn create(&self, jobs: Vec<JobRecord>) -> jobforge::Result<Vec<Created>> {
        self.inner.create(jobs).await
    }
    async fn claim(
        &self,
        ids: &[JobId],
        worker: &WorkerId,
        lease: Duration,
    ) -> jobforge::Result<Vec<Claim>> {
        self.inner.claim(ids, worker, lease).await
    }
    async fn heartbeat(&self, held: &[Held], lease: Duration) -> jobforge::Result<Vec<Heartbeat>> {
        if self.heartbeats_down.load(Ordering::SeqCst) {
            return Err(down("heartbeat"));
        }
        let lag = Duration::from_millis(self.heartbeat_lag_ms.load(Ordering::SeqCst));
        tokio::time::sleep(lag).await;
        let answer = self.inner.heartbeat(held, lease).await;
        tokio::time::sleep(lag).await;
        answer
    }
    async fn finish(&self, t: Vec<Transition>) -> jobforge::Result<Vec<TransitionResult>> {
        if self.now_ms() < self.finishes_down_until_ms.load(Ordering::SeqCst) {
            self.finish_failures.fetch_add(1, Ordering::SeqCst);
            return Err(down("finish"));
        }
        let now = self.finishing.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_finishing.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(
            self.finish_lag_ms.load(Ordering::SeqCst),
        ))
        .await;
        let answer = self.inner.finish(t).await;
        self.finishing.fetch_sub(1, Ordering::SeqCst);
        answer
    }
    async fn cancel(&self, id: JobId, reason: &str) -> jobforge::Result<CancelOutcome> {
        self.inner.cancel(id, reason).await
    }
    async fn get(&self, id: JobId) -> jobforge::Result<Option<JobRecord>> {
        self.inner.get(id).await
    }
    async fn list(&self, f: &JobFilter, p: &Page) -> jobforge::Result<Paged<JobRecord>> {
        self.inner.list(f, p).await
    }
    async fn events(&self, id: JobId) -> jobforge::Result<Vec<JobEvent>> {
        self.inner.events(id).await
    }
    async fn counts(&self) -> jobforge::Result<StateCounts> {
        self.inner.counts().await
    }
}

#[async_trait]
impl JobStore for Faulty {
    async fn claim_due(&self, req: &Reserve<'_>) -> jobforge::Result<Vec<Claim>> {
        self.inner.claim_due(req).await
    }
    async fn stats(&self) -> jobforge::Result<QueueStats> {
        self.inner.stats().await
    }
}

/// A handler's work of `span` that stops when its token fires, as handlers should.
async fn run_unless_cancelled(ctx: &JobContext, span: Duration) -> Result<Value, JobError> {
    tokio::select! {
        () = ctx.cancellation_token().cancelled() => Err(JobError::cancelled("stopped")),
        () = tokio::time::sleep(span) => Ok(json!("done")),
    }
}

fn workers() -> WorkerConfig {
    WorkerConfig::default().poll_wait(Duration::from_millis(20))
}

/// Finding 1: a heartbeat's "lease lost" about an earlier attempt reached the attempt that
/// ran now (the running set was keyed by job), so a job retried quickly was cancelled by
/// nobody. Here the first attempt's heartbeat reaches the store while the job waits for its
/// retry, and its answer (lost) comes back while the second attempt runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_answer_about_an_earlier_attempt_never_reaches_a_later_one() {
    let store = Arc::new(Faulty::default());
    store.heartbeat_lag_ms.store(100, Ordering::SeqCst);
    let orch = Orchestrator::builder()
        .store(Arc::clone(&store))
        .kind(
            "flaky",
            KindConfig::new(|ctx: JobContext| async move {
                if ctx.attempt() == 1 {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    return Err(JobError::retryable("first attempt fails")
                        .retry_after(Duration::from_millis(100)));
                }
                // The second attempt honours cancellation, as handlers should.
                run_unless_cancelled(&ctx, Duration::from_millis(1_000)).await
            })
            .retry(RetryPolicy::new(3)),
        )
        .build()
        .unwrap();
    // Leases of 600 ms: a heartbeat every 200 ms. The first, taken while attempt 1 runs,
    // reaches the store at 300 ms, when the job waits for its retry (due at 350 ms), and its
    // answer comes back at 400 ms, while attempt 2 runs.
    let pool = orch
        .start_workers(workers().lease(Duration::from_millis(600)))
        .unwrap();
    let job = orch.submit(NewJob::new("flaky")).await.unwrap();
    let done = orch.wait_for(job.id, WAIT).await.unwrap();
    pool.shutdown(WAIT).await;
    assert_eq!(done.state, JobState::Succeeded, "{:?}", done.last_error);
    assert_eq!(done.attempt, 2);
}

/// Finding 3: a finish that met a store outage of more than a few seconds was dropped after
/// five tries; the heartbeats stopped, the lease ran out, and the job ran again (or, on its
/// last attempt, died `worker_lost` though its handler had succeeded). The result must be
/// kept, and its lease held, until the store takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_result_is_kept_through_a_store_outage_and_applied_once() {
    let store = Arc::new(Faulty::default());
    let runs = Arc::new(AtomicU32::new(0));
    let r = Arc::clone(&runs);
    let orch = Orchestrator::builder()
        .store(Arc::clone(&store))
        .kind(
            "once",
            KindConfig::new(move |_ctx: JobContext| {
                let r = Arc::clone(&r);
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    Ok(json!("done"))
                }
            })
            .retry(RetryPolicy::new(1)),
        )
        .build()
        .unwrap();
    store.refuse_finishes_for(Duration::from_secs(6));
    let pool = orch
        .start_workers(workers().lease(Duration::from_millis(900)))
        .unwrap();
    let job = orch.submit(NewJob::new("once")).await.unwrap();
    let done = orch.wait_for(job.id, WAIT).await.unwrap();
    pool.shutdown(WAIT).await;
    assert!(
        store.finish_failures.load(Ordering::SeqCst) >= 6,
        "the outage outlasted the old five tries"
    );
    assert_eq!(done.state, JobState::Succeeded, "{:?}", done.last_error);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "ran once");
    assert_eq!(done.attempt, 1, "never taken over");
}

/// Finding 5: a handler's absurd `retry_after` or deferral, or a submit delayed by
/// `Duration::MAX`, overflowed the time arithmetic and panicked outside the handler's
/// `catch_unwind`, killing the executor and leaving its job running for good. Delays are
/// clamped (or refused at submit, naming the field); one executor keeps running jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_delays_are_clamped_or_refused_and_the_executor_lives_on() {
    let orch = Orchestrator::builder()
        .handler("later", |_ctx: JobContext| async move {
            Err::<Value, _>(JobError::retryable("much later").retry_after(Duration::MAX))
        })
        .handler("defer", |_ctx: JobContext| async move {
            Err::<Value, _>(JobError::defer(Duration::MAX, "never"))
        })
        .handler("noop", |_ctx: JobContext| async move { Ok(Value::Null) })
        .build()
        .unwrap();
    let err = orch
        .submit(NewJob::new("noop").delay(Duration::MAX))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("delay"), "{err}");
    let far = chrono::Utc::now() + chrono::Duration::days(365 * 50);
    let err = orch
        .submit(NewJob::new("noop").run_at(far))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("run_at"), "{err}");
    // One executor: if a job killed it, nothing after would run.
    let pool = orch.start_workers(workers().concurrency(1)).unwrap();
    let later = orch.submit(NewJob::new("later")).await.unwrap();
    let deferred = orch.submit(NewJob::new("defer")).await.unwrap();
    let rest = orch
        .submit_batch((0..50).map(|_| NewJob::new("noop")).collect())
        .await
        .unwrap();
    for s in &rest {
        let r = orch.wait_for(s.id, WAIT).await.unwrap();
        assert_eq!(r.state, JobState::Succeeded);
    }
    for id in [later.id, deferred.id] {
        let r = orch.get(id).await.unwrap().unwrap();
        assert_eq!(r.state, JobState::Queued, "parked, not stuck running");
        let ahead = r.run_at - chrono::Utc::now();
        assert!(
            ahead > chrono::Duration::days(9 * 365) && ahead <= chrono::Duration::days(3_651),
            "due in {ahead}"
        );
    }
    pool.shutdown(WAIT).await;
}

/// Finding 6: a handler that never returns held its job and slot forever. With a deadline
/// (the pool's default when neither job nor kind sets one), an async handler that ignores
/// its cancellation is dropped at the deadline and the attempt fails as timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_never_returns_times_out_by_default() {
    let orch = Orchestrator::builder()
        .kind(
            "hang",
            KindConfig::new(|_ctx: JobContext| async move {
                std::future::pending::<()>().await;
                Ok(Value::Null)
            })
            .retry(RetryPolicy::new(2).with_base(Duration::from_millis(10))),
        )
        .build()
        .unwrap();
    let pool = orch
        .start_workers(workers().default_timeout(Some(Duration::from_millis(200))))
        .unwrap();
    let job = orch.submit(NewJob::new("hang")).await.unwrap();
    let done = orch.wait_for(job.id, WAIT).await.unwrap();
    pool.shutdown(WAIT).await;
    assert_eq!(done.state, JobState::Dead);
    assert!(
        done.last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{:?}",
        done.last_error
    );
}

/// Finding 6: a handler that blocks its thread cannot be stopped by its deadline; once the
/// grace after it is over, its attempt fails and its slot goes to a new executor, so a pool
/// of one keeps running jobs while the stuck one sleeps on.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_handler_that_blocks_its_thread_loses_its_slot_not_the_pool() {
    let orch = Orchestrator::builder()
        .kind(
            "block",
            KindConfig::new(|_ctx: JobContext| async move {
                std::thread::sleep(Duration::from_secs(4));
                Ok(Value::Null)
            })
            .retry(RetryPolicy::new(1))
            .timeout(Duration::from_millis(200)),
        )
        .handler("noop", |_ctx: JobContext| async move { Ok(Value::Null) })
        .build()
        .unwrap();
    let pool = orch
        .start_workers(
            workers()
                .concurrency(1)
                .timeout_grace(Duration::from_millis(300)),
        )
        .unwrap();
    let started = Instant::now();
    let blocked = orch.submit(NewJob::new("block")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let quick = orch
        .submit_batch((0..5).map(|_| NewJob::new("noop")).collect())
        .await
        .unwrap();
    for s in &quick {
        let r = orch.wait_for(s.id, WAIT).await.unwrap();
        assert_eq!(r.state, JobState::Succeeded);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the others waited {took:?} for the blocked handler"
    );
    let b = orch.wait_for(blocked.id, WAIT).await.unwrap();
    assert_eq!(b.state, JobState::Dead);
    assert!(
        b.last_error
            .as_deref()
            .is_some_and(|e| e.contains("did not stop")),
        "{:?}",
        b.last_error
    );
    pool.shutdown(Duration::from_secs(6)).await;
}

/// Finding 7: a pool that took back its own expired job kept one entry per job id, so the
/// stale attempt's completion removed the new attempt's: its heartbeats stopped and a cancel
/// no longer reached it. Here heartbeats fail until the lease runs out, the same pool takes
/// the job over, the first attempt completes (refused), and a cancel must still stop the
/// second at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_taken_back_by_its_own_pool_keeps_its_new_attempt() {
    let store = Arc::new(Faulty::default());
    store.heartbeats_down.store(true, Ordering::SeqCst);
    let second_started = Arc::new(tokio::sync::Notify::new());
    let s = Arc::clone(&second_started);
    let orch = Orchestrator::builder()
        .store(Arc::clone(&store))
        .kind(
            "twice",
            KindConfig::new(move |ctx: JobContext| {
                let s = Arc::clone(&s);
                async move {
                    if ctx.attempt() == 1 {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        return Ok(json!("first"));
                    }
                    s.notify_one();
                    run_unless_cancelled(&ctx, Duration::from_secs(8)).await
                }
            })
            .retry(RetryPolicy::new(3)),
        )
        .build()
        .unwrap();
    let pool = orch
        .start_workers(workers().lease(Duration::from_millis(100)))
        .unwrap();
    let job = orch.submit(NewJob::new("twice")).await.unwrap();
    tokio::time::timeout(WAIT, second_started.notified())
        .await
        .expect("taken over by its own pool");
    store.heartbeats_down.store(false, Ordering::SeqCst);
    // Let the first attempt complete (its finish is refused: the job is the second's now).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(pool.running() >= 1, "the second attempt is still held");
    let asked = Instant::now();
    assert_eq!(orch.cancel(job.id).await.unwrap(), CancelOutcome::Requested);
    let done = orch.wait_for(job.id, WAIT).await.unwrap();
    assert_eq!(done.state, JobState::Cancelled);
    // Cancelled in its second attempt: not after its lease lapsed and a third took over.
    assert_eq!(done.attempt, 2, "taken over again");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "the cancel took {:?}",
        asked.elapsed()
    );
    pool.shutdown(WAIT).await;
}

/// Finding 11: two pools under one worker id passed each other's fence. The fence is now
/// the claim token (conformance), and a process refuses a second pool of the same name.
#[tokio::test]
async fn a_second_pool_with_the_same_worker_id_is_refused() {
    let orch = Orchestrator::builder()
        .handler("noop", |_ctx: JobContext| async move { Ok(Value::Null) })
        .build()
        .unwrap();
    let id = WorkerId::new("host-1");
    let first = orch.start_workers(workers().worker_id(id.clone())).unwrap();
    let err = orch
        .start_workers(workers().worker_id(id.clone()))
        .unwrap_err();
    assert_eq!(err.field(), Some("worker_id"), "{err}");
    first.shutdown(WAIT).await;
    // Once the first has stopped, the name is free again.
    let again = orch.start_workers(workers().worker_id(id)).unwrap();
    again.shutdown(WAIT).await;
}

/// Finding 13: a payload nested hundreds of thousands deep failed a whole batch in
/// PostgreSQL and broke listing in Redis. Its nesting is limited at submit, with an error
/// naming the job; `submit_each` stores the others, `submit_batch` stores none.
#[tokio::test]
async fn a_payload_nested_too_deep_is_refused_naming_its_job() {
    let orch = Orchestrator::builder()
        .handler("k", |_ctx: JobContext| async move { Ok(Value::Null) })
        .build()
        .unwrap();
    let deep =
        Payload::from_json(format!("{}{}", "[".repeat(300_000), "]".repeat(300_000))).unwrap();
    let jobs = || {
        vec![
            NewJob::new("k").payload(&json!({"n": 1})),
            NewJob::new("k").raw_payload(deep.clone()),
            NewJob::new("k").payload(&json!({"n": 3})),
        ]
    };
    let answers = orch.submit_each(jobs()).await.unwrap();
    assert!(answers[0].is_ok() && answers[2].is_ok());
    let err = answers[1].as_ref().unwrap_err();
    assert_eq!(err.field(), Some("payload"));
    assert!(err.to_string().contains("job 1"), "{err}");
    assert_eq!(orch.stats().await.unwrap().jobs.total.queued, 2);
    let batch = jobs();
    let bad = batch[1].id();
    let err = orch.submit_batch(batch).await.unwrap_err();
    assert_eq!(err.field(), Some("payload"));
    assert!(err.to_string().contains(&bad.to_string()), "{err}");
    assert_eq!(orch.stats().await.unwrap().jobs.total.queued, 2);
    // A payload at the limit is taken, and reads back.
    let ok = Payload::from_json(format!("{}{}", "[".repeat(64), "]".repeat(64))).unwrap();
    let job = orch.submit(NewJob::new("k").raw_payload(ok)).await.unwrap();
    let listed = orch
        .list(&JobFilter::default(), &Page::first(10))
        .await
        .unwrap();
    assert!(listed.items.iter().any(|r| r.id == job.id));
}

/// A memory whose store refuses records for a while.
struct Refusing {
    inner: InMemoryMemory,
    refused: AtomicU32,
    /// Refuse the next this many calls to `record`.
    refuse: AtomicU32,
}

#[async_trait]
impl Memory for Refusing {
    async fn put(&self, entry: NewEntry) -> jobforge::Result<Entry> {
        self.inner.put(entry).await
    }
    async fn get(&self, ns: &str, key: &str) -> jobforge::Result<Option<Entry>> {
        self.inner.get(ns, key).await
    }
    async fn update(
        &self,
        ns: &str,
        key: &str,
        value: Value,
        expected: Option<u64>,
    ) -> jobforge::Result<Entry> {
        self.inner.update(ns, key, value, expected).await
    }
    async fn delete(&self, ns: &str, key: &str) -> jobforge::Result<bool> {
        self.inner.delete(ns, key).await
    }
    async fn search(&self, q: &EntryQuery) -> jobforge::Result<Vec<Entry>> {
        self.inner.search(q).await
    }
    async fn record(&self, runs: &[ExecutionRecord]) -> jobforge::Result<()> {
        let left = self.refuse.load(Ordering::SeqCst);
        if left > 0 {
            self.refuse.store(left - 1, Ordering::SeqCst);
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(down("record executions"));
        }
        self.inner.record(runs).await
    }
    async fn reflect(&self, kind: &str, window: Window) -> jobforge::Result<Reflection> {
        self.inner.reflect(kind, window).await
    }
}

/// Finding 14: the recorder logged a refused write and dropped the batch, and the shutdown
/// report counted only drops from a full channel, so history went missing silently. A refused
/// batch is kept and written once the store takes it; what has to go is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_records_survive_a_memory_outage_and_every_loss_is_counted() {
    let memory = Arc::new(Refusing {
        inner: InMemoryMemory::new(),
        refused: AtomicU32::new(0),
        refuse: AtomicU32::new(4),
    });
    let orch = Orchestrator::builder()
        .memory(Arc::clone(&memory) as Arc<dyn Memory>)
        .handler("noop", |_ctx: JobContext| async move { Ok(Value::Null) })
        .build()
        .unwrap();
    let pool = orch.start_workers(workers()).unwrap();
    orch.submit_batch((0..300).map(|_| NewJob::new("noop")).collect())
        .await
        .unwrap();
    orch.wait_idle(WAIT).await.unwrap();
    let report = pool.shutdown(WAIT).await;
    assert_eq!(memory.refused.load(Ordering::SeqCst), 4);
    assert_eq!(report.records_dropped, 0);
    assert_eq!(memory.inner.stored_executions("noop"), 300);

    // A memory that never takes them: the shutdown reports every record lost.
    let memory = Arc::new(Refusing {
        inner: InMemoryMemory::new(),
        refused: AtomicU32::new(0),
        refuse: AtomicU32::new(u32::MAX),
    });
    let orch = Orchestrator::builder()
        .memory(Arc::clone(&memory) as Arc<dyn Memory>)
        .handler("noop", |_ctx: JobContext| async move { Ok(Value::Null) })
        .build()
        .unwrap();
    let pool = orch.start_workers(workers()).unwrap();
    orch.submit_batch((0..40).map(|_| NewJob::new("noop")).collect())
        .await
        .unwrap();
    orch.wait_idle(WAIT).await.unwrap();
    let report = pool.shutdown(WAIT).await;
    assert_eq!(report.records_dropped, 40);
    assert_eq!(memory.inner.stored_executions("noop"), 0);
}

/// What the engine logs, from every thread (the watchdog logs from one of its own).
fn captured_logs() -> Arc<parking_lot::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<parking_lot::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    Arc::clone(LOGS.get_or_init(|| {
        let logs = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        logs
    }))
}

struct Sink(Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Finding 6: a handler that blocks the thread starves every task on it, and nothing said
/// so. On a runtime of one thread the pool's watchdog sees its posted task not run and logs
/// the stall, naming the job that runs longest.
#[tokio::test(flavor = "current_thread")]
async fn a_handler_blocking_the_runtime_is_reported() {
    let logs = captured_logs();
    let orch = Orchestrator::builder()
        .handler("block", |_ctx: JobContext| async move {
            std::thread::sleep(Duration::from_millis(1_500));
            Ok(Value::Null)
        })
        .build()
        .unwrap();
    let pool = orch
        .start_workers(workers().stall_threshold(Duration::from_millis(300)))
        .unwrap();
    let job = orch.submit(NewJob::new("block")).await.unwrap();
    let done = orch.wait_for(job.id, WAIT).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    pool.shutdown(WAIT).await;
    let text = String::from_utf8_lossy(&logs.lock()).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("blocking its thread"))
        .unwrap_or_else(|| panic!("no stall reported in:\n{text}"));
    assert!(line.contains(&job.id.to_string()), "{line}");
}

/// The finisher keeps two round trips in flight, never more: while the store settles one
/// batch, the results that come meanwhile go in a second, and a third waits for an answer.
/// (With one trip at a time, the store sat idle while the worker handled each answer.)
/// Every job still finishes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_settles_two_batches_at_once_and_never_three() {
    let store = Arc::new(Faulty::default());
    store.finish_lag_ms.store(100, Ordering::SeqCst);
    let runs = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&runs);
    let orch = Orchestrator::builder()
        .store(Arc::clone(&store))
        .handler("quick", move |_ctx: JobContext| {
            let runs = Arc::clone(&counted);
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(Value::Null)
            }
        })
        .build()
        .unwrap();
    let jobs: Vec<NewJob> = (0..400).map(|_| NewJob::new("quick")).collect();
    let submitted = orch.submit_batch(jobs).await.unwrap();
    let pool = orch
        .start_workers(workers().concurrency(16).batch_size(8))
        .unwrap();
    for job in &submitted {
        let done = orch.wait_for(job.id, WAIT).await.unwrap();
        assert_eq!(done.state, JobState::Succeeded);
    }
    pool.shutdown(WAIT).await;
    assert_eq!(store.most_finishing.load(Ordering::SeqCst), 2);
    assert_eq!(runs.load(Ordering::SeqCst), 400, "every job ran once");
}
