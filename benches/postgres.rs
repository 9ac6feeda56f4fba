//! Criterion benchmarks of the PostgreSQL backend against `DATABASE_URL` (skipped, with a
//! note, when it is unset), in a schema of its own that it drops at the end:
//!
//! - `create_10000`: one `create` of 10,000 jobs (one `UNNEST` insert);
//! - `claim_finish_256`: the Postgres-only hot path, one `claim_due` of 256 due jobs and one
//!   `finish` of them (two statements per 256 jobs);
//! - `claim_finish_64/finished_kept/N`: the same for 64 jobs with N finished jobs kept in the
//!   table, for N = 0, 100,000 and 1,000,000: the claim reads a partial index of queued jobs,
//!   so its cost must not grow with N.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --features postgres --bench postgres
//! ```
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use jobforge::postgres::PostgresState;
use jobforge::postgres::{PostgresBackend, PostgresConfig};
use jobforge::queue::Reserve;
use jobforge::state::{Claim, Finish, StateManager, Transition};
use jobforge::store::JobStore;
use jobforge::{JobId, JobRecord, WorkerId};

const SCHEMA: &str = "jobforge_criterion";

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

async fn sql(pg: &PostgresBackend, text: String) {
    if let Err(err) = sqlx::query(sqlx::AssertSqlSafe(text))
        .execute(pg.pool())
        .await
    {
        eprintln!("benches/postgres.rs: {err}");
    }
}

/// Claim `max` due jobs and finish them; the time of the two statements.
async fn claim_and_finish(state: &PostgresState, worker: &WorkerId, max: usize) -> Duration {
    let queues = vec!["default".to_owned()];
    let req = Reserve {
        worker,
        queues: &queues,
        max,
        lease: Duration::from_secs(60),
        wait: Duration::ZERO,
    };
    let started = Instant::now();
    let claims = state.claim_due(&req).await.unwrap_or_default();
    let transitions: Vec<Transition> = claims
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
        .collect();
    let _ = state.finish(transitions).await;
    started.elapsed()
}

fn bench(c: &mut Criterion) {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("benches/postgres.rs: skipped: DATABASE_URL is not set");
        return;
    };
    let Ok(rt) = tokio::runtime::Runtime::new() else {
        eprintln!("benches/postgres.rs: no Tokio runtime");
        return;
    };
    let pg = match rt.block_on(PostgresBackend::connect_with(
        &url,
        PostgresConfig::default()
            .with_schema(SCHEMA)
            .with_purge_interval(None),
    )) {
        Ok(pg) => pg,
        Err(err) => {
            eprintln!("benches/postgres.rs: cannot use {url}: {err}");
            return;
        }
    };
    let state = pg.store();
    let worker = WorkerId::new("bench");
    let reset = |pg: &PostgresBackend| {
        rt.block_on(sql(
            pg,
            format!(
                "TRUNCATE {SCHEMA}.jobs, {SCHEMA}.job_events, {SCHEMA}.job_counts, \
                 {SCHEMA}.job_count_deltas, {SCHEMA}.job_ready, {SCHEMA}.job_leases"
            ),
        ));
    };

    let mut group = c.benchmark_group("postgres");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));

    reset(&pg);
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("create_10000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch = records(10_000);
                let started = Instant::now();
                let _ = rt.block_on(state.create(batch));
                total += started.elapsed();
            }
            total
        });
    });

    reset(&pg);
    group.throughput(Throughput::Elements(256));
    group.bench_function("claim_finish_256", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Keep a backlog (outside the timing).
                let _ = rt.block_on(state.create(records(256)));
                total += rt.block_on(claim_and_finish(&state, &worker, 256));
            }
            total
        });
    });

    group.throughput(Throughput::Elements(64));
    for kept in [0u64, 100_000, 1_000_000] {
        reset(&pg);
        rt.block_on(async {
            sql(
                &pg,
                format!(
                    "INSERT INTO {SCHEMA}.jobs (id, kind, queue, payload, state, priority, attempt,
                         max_attempts, tags, run_at, created_at, updated_at, started_at,
                         finished_at, version)
                     SELECT gen_random_uuid(), 'noop', 'default', 'null', 'succeeded', 0, 1, 25,
                            '{{}}', now(), now(), now(), now(), now(), 3
                     FROM generate_series(1, {kept})"
                ),
            )
            .await;
            sql(&pg, format!("VACUUM ANALYZE {SCHEMA}.jobs")).await;
        });
        group.bench_with_input(
            BenchmarkId::new("claim_finish_64/finished_kept", kept),
            &kept,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let _ = rt.block_on(state.create(records(64)));
                        total += rt.block_on(claim_and_finish(&state, &worker, 64));
                    }
                    total
                });
            },
        );
    }
    group.finish();
    drop(state);
    rt.block_on(sql(&pg, format!("DROP SCHEMA {SCHEMA} CASCADE")));
}

criterion_group!(benches, bench);
criterion_main!(benches);
