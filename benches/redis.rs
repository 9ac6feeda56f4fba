//! Criterion benchmarks of the Redis backends against `REDIS_URL` (skipped, with a note,
//! when it is unset): a batch of 1,000 jobs through the queue (enqueue, reserve, ack) and
//! through the state (create, claim, finish), and through the state as its own queue
//! (create, claim_due, finish: the Redis-only deployment).
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo bench --features redis --bench redis
//! ```
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jobforge::queue::{Envelope, QueueManager, Reserve};
use jobforge::redis::{RedisQueueConfig, RedisState, RedisStateConfig, RedisStreamsQueue};
use jobforge::state::{Claim, Finish, StateManager, Transition};
use jobforge::store::JobStore;
use jobforge::{JobId, JobRecord, WorkerId};

const BATCH: usize = 1_000;

fn records(n: usize) -> Vec<JobRecord> {
    let now = Utc::now();
    (0..n)
        .filter_map(|_| {
            serde_json::from_value(serde_json::json!({
                "id": JobId::new(), "kind": "noop", "queue": "default", "payload": null,
                "state": "queued", "priority": 0, "attempt": 0, "max_attempts": 25,
                "timeout": null, "idempotency_key": null, "tags": [], "tenant": null,
                "strategy": null, "run_at": now, "created_at": now, "updated_at": now,
                "started_at": null, "finished_at": null, "result": null, "last_error": null,
                "lease_owner": null, "lease_expires_at": null, "cancel_requested": false,
                "version": 1
            }))
            .ok()
        })
        .collect()
}

fn cleanup(url: &str, ns: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{ns}*"))
        .query(&mut conn)
        .unwrap_or_default();
    for chunk in keys.chunks(1000) {
        let _: redis::RedisResult<usize> = redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
}

/// Every claimed job, finished as succeeded.
fn succeeded(claims: Vec<Claim>, worker: &WorkerId) -> Vec<Transition> {
    claims
        .into_iter()
        .filter_map(|c| match c {
            Claim::Claimed(r) => Some(Transition {
                id: r.id,
                worker: worker.clone(),
                token: r.version,
                finish: Finish::Succeeded { result: None },
            }),
            _ => None,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("benches/redis.rs: skipped: REDIS_URL is not set");
        return;
    };
    let Ok(rt) = tokio::runtime::Runtime::new() else {
        eprintln!("benches/redis.rs: no Tokio runtime");
        return;
    };
    let ns = format!("jobforge-criterion-{}", uuid::Uuid::now_v7().simple());
    let setup = rt.block_on(async {
        let queue =
            RedisStreamsQueue::connect(RedisQueueConfig::new(url.as_str()).with_namespace(&ns))
                .await?;
        let state = RedisState::with_pool(
            queue.pool().clone(),
            RedisStateConfig::new(url.as_str()).with_namespace(&ns),
        )?;
        Ok::<_, jobforge::Error>((Arc::new(queue), Arc::new(state)))
    });
    let (queue, state) = match setup {
        Ok(pair) => pair,
        Err(err) => {
            eprintln!("benches/redis.rs: cannot use {url}: {err}");
            return;
        }
    };
    let worker = WorkerId::new("bench");
    let queues = vec!["default".to_owned()];
    let mut group = c.benchmark_group("redis");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));

    group.bench_function("queue: enqueue + reserve + ack, 1000 jobs", |b| {
        b.to_async(&rt).iter(|| async {
            let jobs: Vec<Envelope> = records(BATCH).iter().map(Envelope::from_record).collect();
            queue.enqueue(&jobs).await.ok();
            let leases = queue
                .reserve(&Reserve {
                    worker: &worker,
                    queues: &queues,
                    max: BATCH,
                    lease: Duration::from_secs(30),
                    wait: Duration::ZERO,
                })
                .await
                .unwrap_or_default();
            queue.ack(&leases).await.ok();
        });
    });

    group.bench_function("state: create + claim + finish, 1000 jobs", |b| {
        b.to_async(&rt).iter(|| async {
            let recs = records(BATCH);
            let ids: Vec<JobId> = recs.iter().map(|r| r.id).collect();
            state.create(recs).await.ok();
            let claims = state
                .claim(&ids, &worker, Duration::from_secs(30))
                .await
                .unwrap_or_default();
            state.finish(succeeded(claims, &worker)).await.ok();
        });
    });
    group.bench_function(
        "state as its own queue: create + claim_due + finish, 1000 jobs",
        |b| {
            b.to_async(&rt).iter(|| async {
                state.create(records(BATCH)).await.ok();
                let claims = state
                    .claim_due(&Reserve {
                        worker: &worker,
                        queues: &queues,
                        max: BATCH,
                        lease: Duration::from_secs(30),
                        wait: Duration::ZERO,
                    })
                    .await
                    .unwrap_or_default();
                state.finish(succeeded(claims, &worker)).await.ok();
            });
        },
    );
    group.finish();
    cleanup(&url, &ns);
}

criterion_group!(benches, bench);
criterion_main!(benches);
