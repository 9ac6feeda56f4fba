//! Schedules on the embedded default: three of them (a cron expression every two seconds,
//! an interval, and a slow one whose overlapping ticks are skipped), a worker pool that
//! fires and runs them, and what each did after a few seconds.
//!
//! Run with `cargo run --example schedules`.

use std::time::Duration;

use jobforge::prelude::*;
use jobforge::schedule::{CatchUp, Overlap, Schedule, ScheduledJob, SchedulerConfig};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let orchestrator = Orchestrator::builder()
        .handler("report", |ctx: JobContext| async move {
            // A scheduled job's idempotency key is `<schedule id>@<tick>`.
            let key = ctx.record().idempotency_key.as_deref().unwrap_or("-");
            println!("  ran {key}");
            Ok(json!(null))
        })
        .handler("ping", |_ctx: JobContext| async move { Ok(json!("pong")) })
        .handler("slow", |_ctx: JobContext| async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok(json!(null))
        })
        .build()?;

    let schedules = orchestrator.schedules()?;
    // Every two seconds, read in Paris time; a missed tick is fired once on restart.
    schedules
        .upsert(
            Schedule::cron("report", "*/2 * * * * *", ScheduledJob::new("report"))
                .time_zone("Europe/Paris")
                .catch_up(CatchUp::Latest),
        )
        .await?;
    schedules
        .upsert(Schedule::interval(
            "ping",
            Duration::from_secs(1),
            ScheduledJob::new("ping"),
        ))
        .await?;
    // Every second, but a tick waits while the previous job still runs.
    schedules
        .upsert(
            Schedule::interval("slow", Duration::from_secs(1), ScheduledJob::new("slow"))
                .overlap(Overlap::Skip),
        )
        .await?;

    let pool =
        orchestrator.start_workers(WorkerConfig::default().schedules(Some(SchedulerConfig {
            poll: Duration::from_millis(100),
            ..SchedulerConfig::default()
        })))?;
    println!("firing for 5 s:");
    tokio::time::sleep(Duration::from_secs(5)).await;
    pool.shutdown(Duration::from_secs(5)).await;

    println!("\n| schedule | fired | skipped | next tick |");
    println!("|---|---:|---:|---|");
    for record in schedules.list().await? {
        println!(
            "| {} | {} | {} | {} |",
            record.schedule.id,
            record.fired,
            record.skipped,
            record
                .next_run_at
                .map_or_else(|| "-".to_owned(), |t| t.format("%H:%M:%S%.3f").to_string())
        );
    }
    let counts = schedules.counts();
    println!(
        "\nthis process: {} fired, {} skipped by overlap, {} missed, {} caught up",
        counts.fired, counts.skipped_overlap, counts.skipped_missed, counts.caught_up
    );
    let fired = schedules.list().await?.iter().map(|r| r.fired).sum::<u64>();
    if fired == 0 {
        return Err("no schedule fired".into());
    }
    Ok(())
}
