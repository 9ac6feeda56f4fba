//! In-memory engine throughput: no-op jobs submitted in batches and run to completion, and the
//! cost of one reserve/ack round on the queue.
//!
//! `cargo bench --bench engine`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use jobforge::prelude::*;
use jobforge::queue::{Envelope, InMemoryQueue, QueueManager, Reserve};
use jobforge::{JobOrchestrator, WorkerId};
use serde_json::Value;
use tokio::sync::Notify;

const JOBS: u64 = 20_000;
const SUBMIT_BATCH: usize = 1_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn end_to_end(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(JOBS));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    for record in [true, false] {
        let name = if record {
            "noop_end_to_end"
        } else {
            "noop_end_to_end_no_recording"
        };
        group.bench_function(BenchmarkId::new(name, JOBS), |b| {
            let done = Arc::new(AtomicU64::new(0));
            let all_done = Arc::new(Notify::new());
            let (d, n) = (Arc::clone(&done), Arc::clone(&all_done));
            let target = Arc::new(AtomicU64::new(u64::MAX));
            let t = Arc::clone(&target);
            let orch = Orchestrator::builder()
                .handler("noop", move |_ctx: JobContext| {
                    let (d, n, t) = (Arc::clone(&d), Arc::clone(&n), Arc::clone(&t));
                    async move {
                        if d.fetch_add(1, Ordering::Relaxed) + 1 == t.load(Ordering::Relaxed) {
                            n.notify_one();
                        }
                        Ok(Value::Null)
                    }
                })
                .build()
                .expect("build");
            let pool = rt.block_on(async {
                orch.start_workers(
                    WorkerConfig::default()
                        .concurrency(512)
                        .batch_size(512)
                        .record_executions(record),
                )
                .expect("workers")
            });
            b.to_async(&rt).iter(|| {
                let orch = orch.clone();
                let (done, all_done, target) = (
                    Arc::clone(&done),
                    Arc::clone(&all_done),
                    Arc::clone(&target),
                );
                async move {
                    let start = done.load(Ordering::Relaxed);
                    target.store(start + JOBS, Ordering::Relaxed);
                    let waiter = all_done.notified();
                    tokio::pin!(waiter);
                    waiter.as_mut().enable();
                    for _ in 0..(JOBS as usize / SUBMIT_BATCH) {
                        let jobs = (0..SUBMIT_BATCH).map(|_| NewJob::new("noop")).collect();
                        orch.submit_batch(jobs).await.expect("submit");
                    }
                    if done.load(Ordering::Relaxed) < start + JOBS {
                        waiter.await;
                    }
                }
            });
            rt.block_on(pool.shutdown(Duration::from_secs(5)));
        });
    }
    group.finish();
}

fn reserve_ack_round(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("queue");
    for batch in [1usize, 100] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new("reserve_ack_round", batch), |b| {
            let queue = InMemoryQueue::new();
            let worker = WorkerId::new("bench");
            let queues = vec!["default".to_owned()];
            // A standing backlog so the heap has realistic depth.
            let backlog: Vec<Envelope> = (0..100_000)
                .map(|_| Envelope {
                    id: JobId::new(),
                    kind: "noop".into(),
                    queue: "default".into(),
                    priority: 0,
                    run_at: chrono::Utc::now(),
                    attempt: 0,
                })
                .collect();
            rt.block_on(queue.enqueue(&backlog)).expect("enqueue");
            b.to_async(&rt).iter(|| async {
                let leases = queue
                    .reserve(&Reserve {
                        worker: &worker,
                        queues: &queues,
                        max: batch,
                        lease: Duration::from_secs(30),
                        wait: Duration::ZERO,
                    })
                    .await
                    .expect("reserve");
                // Put the same jobs back so the backlog stays constant.
                let again: Vec<Envelope> = leases.iter().map(|l| l.envelope.clone()).collect();
                queue.ack(&leases).await.expect("ack");
                queue.enqueue(&again).await.expect("enqueue");
            });
        });
    }
    group.finish();
}

criterion_group!(benches, end_to_end, reserve_ack_round);
criterion_main!(benches);
