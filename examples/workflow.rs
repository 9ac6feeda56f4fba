//! A workflow on the embedded default: an order pipeline with a fan-out and a fan-in.
//!
//! ```text
//!            ┌─► ship ──► label ×3 ─┐
//!  charge ───┤                      ├─► close
//!            └─► email ─────────────┘
//! ```
//!
//! Each step runs once every step before it succeeded, reads their results, and prints
//! itself as it runs. Run with `cargo run --example workflow`.

use std::time::{Duration, Instant};

use jobforge::prelude::*;
use jobforge::workflow::Workflow;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let say = move |ctx: &JobContext, what: String| {
        let step = ctx.step().map_or("?", |s| s.name.as_str());
        println!(
            "{:>6.1} ms  {step:<8} {what}",
            started.elapsed().as_secs_f64() * 1e3
        );
    };

    let orchestrator = Orchestrator::builder()
        .handler("charge", move |ctx: JobContext| async move {
            let cents: u64 = ctx.decode()?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            say(&ctx, format!("charged {cents} cents"));
            Ok(json!({ "cents": cents, "receipt": "R-1042" }))
        })
        .handler("ship", move |ctx: JobContext| async move {
            let charge: Value = ctx.dependency("charge").await?.unwrap_or_default();
            say(
                &ctx,
                format!("parcel booked for receipt {}", charge["receipt"]),
            );
            Ok(json!({ "parcel": "P-77", "items": 3 }))
        })
        .handler("label", move |ctx: JobContext| async move {
            let item: u32 = ctx.decode()?;
            tokio::time::sleep(Duration::from_millis(10)).await;
            say(&ctx, format!("printed the label of item {item}"));
            Ok(json!(format!("L-77-{item}")))
        })
        .handler("email", move |ctx: JobContext| async move {
            let charge: Value = ctx.dependency("charge").await?.unwrap_or_default();
            say(&ctx, format!("receipt {} sent", charge["receipt"]));
            Ok(Value::Null)
        })
        .handler("close", move |ctx: JobContext| async move {
            let inputs = ctx.dependencies().await?;
            let labels: Vec<String> = inputs
                .iter()
                .filter_map(|d| d.result.as_ref()?.decode().ok())
                .collect();
            say(
                &ctx,
                format!("order closed with labels {}", labels.join(", ")),
            );
            Ok(json!({ "labels": labels }))
        })
        .build()?;

    let wf = Workflow::new("order-1042");
    let charge = wf.add(NewJob::new("charge").payload(&4_200u64));
    let ship = wf.add(NewJob::new("ship")).after(&charge);
    let email = wf.add(NewJob::new("email")).after(&charge);
    let labels = wf
        .add_many((1..=3u32).map(|i| NewJob::new("label").payload(&i)))
        .after(&ship);
    wf.add(NewJob::new("close")).after((&email, &labels));
    let id = orchestrator.submit_workflow(wf).await?;

    let workers = orchestrator.start_workers(WorkerConfig::default().concurrency(8))?;
    let status = loop {
        let status = orchestrator
            .workflow(id)
            .await?
            .ok_or("the workflow is gone")?;
        if status.finished {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    workers.shutdown(Duration::from_secs(5)).await;

    println!("\nworkflow {} ({}):", status.name, status.id);
    for step in &status.steps {
        println!(
            "  {:<8} {:<9} after [{}]",
            step.name,
            step.state.as_str(),
            step.after.join(", ")
        );
    }
    println!(
        "{} of {} steps succeeded",
        status.counts.succeeded,
        status.steps.len()
    );
    Ok(())
}
