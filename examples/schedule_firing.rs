//! The cost of firing schedules: N schedules (default 10,000) all due in the same second,
//! fired by `fire_due` as a worker pool's scheduler would (batches of 256, one submit and
//! one compare-and-set call per batch), timed from the second they came due until the last
//! was fired. No workers run: the jobs only queue.
//!
//! ```bash
//! cargo run --release --features full --example schedule_firing                 # in memory
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --release --features full --example schedule_firing
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --features full --example schedule_firing
//! ```
//!
//! It works in a schema or namespace of its own and removes it at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DurationRound, Utc};
use jobforge::JobStore;
use jobforge::postgres::{PostgresBackend, PostgresConfig};
use jobforge::prelude::*;
use jobforge::redis::{RedisBackend, RedisConfig};
use jobforge::schedule::{Schedule, ScheduledJob};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let pg_url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
    let redis_url = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty());
    let schema = format!("jf_schedfire_{}", &tag[20..]);
    let namespace = format!("jf-schedfire-{tag}");
    let (store, pg, redis_conn): (Arc<dyn JobStore>, Option<PostgresBackend>, Option<String>) =
        if let Some(url) = &pg_url {
            let config = PostgresConfig::default()
                .with_schema(&schema)
                .with_purge_interval(None);
            let pg = PostgresBackend::connect_with(url, config).await?;
            (pg.store(), Some(pg), None)
        } else if let Some(url) = &redis_url {
            let redis =
                RedisBackend::connect_with(url, RedisConfig::new().with_namespace(&namespace))
                    .await?;
            (redis.store(), None, Some(url.clone()))
        } else {
            (Arc::new(jobforge::state::InMemoryState::new()), None, None)
        };
    let name = if pg.is_some() {
        "PostgreSQL"
    } else if redis_conn.is_some() {
        "Redis"
    } else {
        "in-memory"
    };
    let result = measure(store, n, name).await;

    // Leave nothing behind.
    if let Some(pg) = pg {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(pg.pool())
        .await?;
    }
    if let Some(url) = redis_conn {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{{{namespace}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async::<usize>(&mut conn)
                    .await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    result
}

/// Upsert `n` schedules due in the same second, then fire them and report.
async fn measure(
    store: Arc<dyn JobStore>,
    n: usize,
    name: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let orchestrator = Orchestrator::builder()
        .store(store)
        .handler("tick", |_ctx: JobContext| async {
            Ok(serde_json::json!(null))
        })
        .build()?;
    let schedules = orchestrator.schedules()?;

    // Every schedule's first tick is the same whole second, after the upserts are done
    // (PostgreSQL upserts one schedule per transaction: about a millisecond each).
    let upserting = Instant::now();
    let lead = chrono::Duration::milliseconds(3000 + 3 * i64::try_from(n).unwrap_or(i64::MAX / 8));
    let due_at = (Utc::now() + lead).duration_trunc(chrono::Duration::seconds(1))?
        + chrono::Duration::seconds(1);
    for i in 0..n {
        let s = Schedule::interval(
            format!("s{i}"),
            Duration::from_secs(3600),
            ScheduledJob::new("tick"),
        )
        .start_at(due_at);
        schedules.upsert(s).await?;
    }
    let upserted = upserting.elapsed();
    if Utc::now() >= due_at {
        return Err(
            format!("the upserts took {upserted:.2?}, past the first tick; run fewer").into(),
        );
    }
    let wait = (due_at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;

    let started = Instant::now();
    let mut fired = 0;
    let mut looks = 0;
    while fired < n as u64 {
        fired += schedules.fire_due().await?;
        looks += 1;
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!("only {fired} of {n} fired in 120 s").into());
        }
    }
    let took = started.elapsed();
    let queued = orchestrator.stats().await?.queue.ready;
    println!("{name}: {n} schedules due at {due_at}");
    println!("  upserted in {upserted:.2?}");
    println!(
        "  fired in {took:.3?} ({looks} looks, {:.0} schedules/s); {queued} jobs queued",
        n as f64 / took.as_secs_f64()
    );

    if queued != n as u64 {
        return Err(format!("{queued} jobs queued, {n} expected").into());
    }
    Ok(())
}
