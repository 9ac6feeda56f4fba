//! Redis as the queue (many workers on many hosts read one stream), PostgreSQL as the
//! durable state and the memory, and the reconciler that re-enqueues what the queue lost.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --features redis,postgres --example redis_postgres
//! ```
//!
//! It works under a Redis namespace and a PostgreSQL schema of its own and removes both at
//! the end. Halfway it deletes a job from the Redis queue behind jobforge's back, as a Redis
//! restart without persistence would; the reconciler puts it back.

use std::sync::Arc;
use std::time::Duration;

use jobforge::postgres::{PostgresBackend, PostgresConfig};
use jobforge::prelude::*;
use jobforge::queue::{QueueManager, Reserve};
use jobforge::redis::{RedisQueueConfig, RedisStreamsQueue};
use jobforge::store::{ReconcilerConfig, Split};
use jobforge::{JobOrchestrator, WorkerId};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let pg_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let namespace = format!("jobforge-example-{}", uuid::Uuid::now_v7().simple());

    let queue = Arc::new(
        RedisStreamsQueue::connect(
            RedisQueueConfig::new(redis_url.clone()).with_namespace(&namespace),
        )
        .await?,
    );
    let pg = PostgresBackend::connect_with(
        &pg_url,
        PostgresConfig::default().with_schema("jobforge_redis_example"),
    )
    .await?;
    // Delivery from the Redis stream, records in PostgreSQL: one store made of the two.
    let store = Arc::new(Split::new(
        Arc::clone(&queue) as Arc<dyn QueueManager>,
        pg.store(),
    ));
    let orchestrator = Orchestrator::builder()
        .store(Arc::clone(&store))
        .memory(pg.memory())
        .handler("thumbnail", |ctx: JobContext| async move {
            let image: String = ctx.decode()?;
            Ok(json!({ "thumbnail": format!("{image}.small.png") }))
        })
        .build()?;

    // Submit while no worker runs, then lose one job from the queue: the state still has it.
    let submitted = orchestrator
        .submit_batch(
            (0..20)
                .map(|i| NewJob::new("thumbnail").payload(&format!("photo-{i}")))
                .collect(),
        )
        .await?;
    let thief = WorkerId::new("lost-in-a-crash");
    let queues = vec!["default".to_owned()];
    let lost = queue
        .reserve(&Reserve {
            worker: &thief,
            queues: &queues,
            max: 1,
            lease: Duration::from_secs(3600),
            wait: Duration::ZERO,
        })
        .await?;
    queue.ack(&lost).await?;
    println!(
        "{} jobs submitted; job {} removed from the Redis queue behind jobforge's back",
        submitted.len(),
        lost[0].id()
    );

    let workers = orchestrator.start_workers(WorkerConfig::default().concurrency(8))?;
    let reconciler = store.start_reconciler(
        Arc::clone(&queue) as _,
        ReconcilerConfig::default()
            .every(Duration::from_millis(500))
            .grace(Duration::from_millis(200)),
    )?;
    for s in &submitted {
        let done = orchestrator.wait_for(s.id, Duration::from_secs(30)).await?;
        assert_eq!(done.state, JobState::Succeeded);
    }
    let stats = orchestrator.stats().await?;
    println!(
        "all {} jobs succeeded (the lost one re-enqueued by the reconciler); Redis queue: {} ready, {} in flight",
        stats.jobs.total.succeeded, stats.queue.ready, stats.queue.in_flight
    );

    reconciler.shutdown().await;
    workers.shutdown(Duration::from_secs(10)).await;

    // Leave nothing behind: the schema, and the namespace's keys.
    sqlx::query("DROP SCHEMA jobforge_redis_example CASCADE")
        .execute(pg.pool())
        .await?;
    let client = redis::Client::open(redis_url.as_str())?;
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
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<usize>(&mut conn)
                .await?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(())
}
