//! Workflows through the whole engine, on every store that keeps them (in-memory, PostgreSQL,
//! Redis): outputs passed along a graph, fan-out and fan-in, failure policies, cancelling a
//! workflow, and a join that runs once after all its dependencies. A store that keeps none
//! (Redis Streams beside PostgreSQL) refuses a workflow with an error that says so.
//!
//! `cargo test --all-features --test workflow postgres::` runs one store's.

mod deploy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deploy::Deployed;
use jobforge::prelude::*;
use jobforge::workflow::{OnDependencyFailure, Workflow, WorkflowStatus};
use jobforge::{ErrorKind, JobOrchestrator};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(30);

fn workers() -> WorkerConfig {
    WorkerConfig::default()
        .concurrency(16)
        .poll_wait(Duration::from_millis(50))
        .lease(Duration::from_secs(5))
}

macro_rules! scenarios {
    ($deployment:ident: $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

macro_rules! workflow_scenarios {
    ($deployment:ident) => {
        scenarios!($deployment:
            an_order_pipeline_passes_outputs_along,
            a_failed_step_settles_what_waits_by_policy,
            cancelling_a_workflow_stops_every_unfinished_step,
            a_join_after_a_wide_fan_out_runs_once_after_all_of_it,
            a_batch_callback_counts_its_jobs_by_outcome,
            cancelling_a_workflow_follows_the_graph_not_the_ids,
        );
    };
}

mod in_memory {
    use super::deploy::{Deployed, Deployment};
    workflow_scenarios!(InMemory);
}

mod postgres {
    use super::deploy::{Deployed, Deployment};
    workflow_scenarios!(Postgres);
}

mod redis {
    use super::deploy::{Deployed, Deployment};
    workflow_scenarios!(Redis);
}

mod streams_postgres {
    use super::deploy::{Deployed, Deployment};
    scenarios!(StreamsPostgres: a_store_without_workflows_refuses_them);
}

/// The workflow once every step has finished (or after [`WAIT`], to fail on what it shows).
async fn until_finished(orch: &Orchestrator, id: JobId) -> WorkflowStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = orch
            .workflow(id)
            .await
            .unwrap()
            .expect("the workflow is kept");
        if status.finished || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn by_name(status: &WorkflowStatus) -> HashMap<&str, JobState> {
    status
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.state))
        .collect()
}

/// charge → (ship, email) → five labels after ship → close after (email, labels): each step
/// reads what its dependencies returned, and starts only after they all finished.
async fn an_order_pipeline_passes_outputs_along(d: &Deployed) {
    let orch = d
        .builder()
        .handler("charge", |ctx: JobContext| async move {
            let cents: u64 = ctx.decode()?;
            Ok(json!({ "charged": cents }))
        })
        .handler("ship", |ctx: JobContext| async move {
            let charge: Value = ctx.dependency("charge").await?.unwrap_or_default();
            Ok(json!({ "parcel_for": charge["charged"] }))
        })
        .handler("email", |ctx: JobContext| async move {
            let charge: Value = ctx.dependency("charge").await?.unwrap_or_default();
            Ok(json!(format!("receipt for {}", charge["charged"])))
        })
        .handler("label", |ctx: JobContext| async move {
            let n: u64 = ctx.decode()?;
            Ok(json!(n * 10))
        })
        .handler("close", |ctx: JobContext| async move {
            let deps = ctx.dependencies().await?;
            let labels: u64 = deps
                .iter()
                .filter(|d| d.name.starts_with("label"))
                .filter_map(|d| d.result.as_ref()?.decode::<u64>().ok())
                .sum();
            let email: String = ctx.dependency("email").await?.unwrap_or_default();
            Ok(json!({ "labels": labels, "email": email, "inputs": deps.len() }))
        })
        .build()
        .unwrap();
    let wf = Workflow::new("order-7");
    let charge = wf.add(NewJob::new("charge").payload(&1200));
    let ship = wf.add(NewJob::new("ship")).after(&charge);
    let email = wf.add(NewJob::new("email")).after(&charge);
    let labels = wf
        .add_many((1..=5u64).map(|n| NewJob::new("label").payload(&n)))
        .after(&ship);
    let close = wf.add(NewJob::new("close")).after((&email, &labels));
    let close_id = close.id();
    let id = orch.submit_workflow(wf).await.unwrap();
    let pool = orch.start_workers(workers()).unwrap();
    let status = until_finished(&orch, id).await;
    pool.shutdown(Duration::from_secs(5)).await;

    assert!(status.finished, "{status:#?}");
    assert_eq!(status.name, "order-7");
    assert_eq!(status.counts.succeeded, 9, "{status:#?}");
    let close = orch.get(close_id).await.unwrap().unwrap();
    let result: Value = close.result.unwrap().decode().unwrap();
    assert_eq!(
        result,
        json!({ "labels": 150, "email": "receipt for 1200", "inputs": 6 })
    );
    // No step started before every one of its dependencies finished.
    let records: HashMap<JobId, JobRecord> = {
        let mut all = HashMap::new();
        for step in &status.steps {
            all.insert(step.id, orch.get(step.id).await.unwrap().unwrap());
        }
        all
    };
    for record in records.values() {
        let link = record.step.as_deref().unwrap();
        for dep in &link.depends_on {
            let dep = &records[dep];
            assert!(
                dep.finished_at.unwrap() <= record.started_at.unwrap(),
                "{} started before {} finished",
                link.name,
                dep.step.as_ref().unwrap().name
            );
        }
    }
    let close_status = status.steps.iter().find(|s| s.name == "close").unwrap();
    assert_eq!(close_status.after.len(), 6);
}

/// `fetch` fails for good: `parse` (cancel) is cancelled and so is `store` after it;
/// `thumbnail` (skip) ends succeeded without running and `publish` after it runs; `report`
/// (run anyway) runs and sees the failure.
async fn a_failed_step_settles_what_waits_by_policy(d: &Deployed) {
    let ran: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = |ran: &Arc<Mutex<Vec<String>>>| {
        let ran = Arc::clone(ran);
        move |ctx: JobContext| {
            let ran = Arc::clone(&ran);
            async move {
                ran.lock().push(ctx.kind().to_owned());
                if ctx.kind() == "report" {
                    let deps = ctx.dependencies().await?;
                    return Ok(json!(deps[0].state.map(|s| s.as_str())));
                }
                Ok(Value::Null)
            }
        }
    };
    let orch = d
        .builder()
        .handler("fetch", |_ctx: JobContext| async move {
            Err::<Value, _>(JobError::permanent("404 not found").with_class("http"))
        })
        .handler("parse", log(&ran))
        .handler("store", log(&ran))
        .handler("thumbnail", log(&ran))
        .handler("publish", log(&ran))
        .handler("report", log(&ran))
        .build()
        .unwrap();
    let wf = Workflow::new("ingest");
    let fetch = wf.add(NewJob::new("fetch"));
    let parse = wf.add(NewJob::new("parse")).after(&fetch);
    wf.add(NewJob::new("store")).after(&parse);
    let thumb = wf
        .add(NewJob::new("thumbnail"))
        .after(&fetch)
        .on_dependency_failure(OnDependencyFailure::Skip);
    wf.add(NewJob::new("publish")).after(&thumb);
    let report = wf
        .add(NewJob::new("report"))
        .after(&fetch)
        .on_dependency_failure(OnDependencyFailure::Run);
    let report_id = report.id();
    let id = orch.submit_workflow(wf).await.unwrap();
    let pool = orch.start_workers(workers()).unwrap();
    let status = until_finished(&orch, id).await;
    pool.shutdown(Duration::from_secs(5)).await;

    let states = by_name(&status);
    assert_eq!(states["fetch"], JobState::Dead);
    assert_eq!(states["parse"], JobState::Cancelled);
    assert_eq!(states["store"], JobState::Cancelled);
    assert_eq!(states["thumbnail"], JobState::Succeeded);
    assert_eq!(states["publish"], JobState::Succeeded);
    assert_eq!(states["report"], JobState::Succeeded);
    let mut ran = ran.lock().clone();
    ran.sort();
    assert_eq!(
        ran,
        vec!["publish", "report"],
        "skipped and cancelled steps never ran"
    );
    let report = orch.get(report_id).await.unwrap().unwrap();
    assert_eq!(report.result.unwrap().as_str(), r#""dead""#);
}

/// A running step is asked to stop, waiting and queued steps are cancelled at once, and
/// nothing of the workflow runs afterwards.
async fn cancelling_a_workflow_stops_every_unfinished_step(d: &Deployed) {
    let started = Arc::new(tokio::sync::Notify::new());
    let signal = Arc::clone(&started);
    let orch = d
        .builder()
        .handler("slow", move |ctx: JobContext| {
            let signal = Arc::clone(&signal);
            async move {
                signal.notify_one();
                ctx.cancellation_token().cancelled().await;
                Err::<Value, _>(JobError::cancelled("stopped"))
            }
        })
        .handler("after", |_ctx: JobContext| async move { Ok(Value::Null) })
        .build()
        .unwrap();
    let wf = Workflow::new("long");
    let slow = wf.add(NewJob::new("slow"));
    let next = wf.add(NewJob::new("after")).after(&slow);
    wf.add_many((0..3).map(|_| NewJob::new("after")))
        .after(&next);
    let id = orch.submit_workflow(wf).await.unwrap();
    let pool = orch.start_workers(workers()).unwrap();
    tokio::time::timeout(WAIT, started.notified())
        .await
        .expect("the first step started");
    let n = orch.cancel_workflow(id).await.unwrap();
    assert_eq!(
        n, 5,
        "one running step asked to stop, four waiting ones cancelled"
    );
    let status = until_finished(&orch, id).await;
    pool.shutdown(Duration::from_secs(5)).await;
    assert_eq!(status.counts.cancelled, 5, "{status:#?}");
    let missing = orch.cancel_workflow(JobId::new()).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
}

/// root → 200 steps → join: the join runs exactly once, after every one of the 200.
async fn a_join_after_a_wide_fan_out_runs_once_after_all_of_it(d: &Deployed) {
    let joins = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = Arc::clone(&joins);
    let orch = d
        .builder()
        .handler("part", |ctx: JobContext| async move {
            let n: u64 = ctx.decode()?;
            Ok(json!(n))
        })
        .handler("join", move |ctx: JobContext| {
            let count = Arc::clone(&count);
            async move {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let deps = ctx.dependencies().await?;
                let done = deps
                    .iter()
                    .filter(|d| d.state == Some(JobState::Succeeded))
                    .count();
                Ok(json!(done))
            }
        })
        .build()
        .unwrap();
    let wf = Workflow::new("wide");
    let root = wf.add(NewJob::new("part").payload(&0u64));
    let parts = wf
        .add_many((1..=200u64).map(|n| NewJob::new("part").payload(&n)))
        .after(&root);
    let join = wf.add(NewJob::new("join")).after(&parts);
    let join_id = join.id();
    let id = orch.submit_workflow(wf).await.unwrap();
    let pool = orch.start_workers(workers().concurrency(32)).unwrap();
    let status = until_finished(&orch, id).await;
    pool.shutdown(Duration::from_secs(5)).await;
    assert_eq!(status.counts.succeeded, 202, "{:?}", status.counts);
    assert_eq!(joins.load(std::sync::atomic::Ordering::SeqCst), 1);
    let join = orch.get(join_id).await.unwrap().unwrap();
    assert_eq!(join.result.unwrap().as_str(), "200");
    assert_eq!(join.attempt, 1);
}

/// Ten jobs, three of which fail for good, and a callback after all of them: it runs once
/// they all ended, and counts them by outcome.
async fn a_batch_callback_counts_its_jobs_by_outcome(d: &Deployed) {
    let orch = d
        .builder()
        .handler("report", |ctx: JobContext| async move {
            let outcomes = ctx.dependencies().await?;
            let count =
                |state: JobState| outcomes.iter().filter(|o| o.state == Some(state)).count();
            Ok(json!({ "succeeded": count(JobState::Succeeded), "dead": count(JobState::Dead) }))
        })
        .kind(
            "send",
            KindConfig::new(|ctx: JobContext| async move {
                let n: u64 = ctx.decode()?;
                if n % 3 == 0 && n > 0 {
                    return Err(JobError::permanent(format!("address {n} bounced")));
                }
                ctx.progress(1.0, "sent").await?;
                Ok(json!(n))
            })
            .retry(RetryPolicy::new(1)),
        )
        .build()
        .unwrap();
    let wf = Workflow::new("emails");
    let (sends, report) = wf.add_batch(
        (0..10u64).map(|n| NewJob::new("send").payload(&n)),
        NewJob::new("report"),
    );
    let report_id = report.id();
    let first_send = sends.as_slice()[1].id();
    let id = orch.submit_workflow(wf).await.unwrap();
    let pool = orch.start_workers(workers()).unwrap();
    let status = until_finished(&orch, id).await;
    pool.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        (status.counts.succeeded, status.counts.dead),
        (8, 3),
        "{status:#?}"
    );
    let report = orch.get(report_id).await.unwrap().unwrap();
    assert_eq!(
        report.result.unwrap().decode::<Value>().unwrap(),
        json!({ "succeeded": 7, "dead": 3 })
    );
    let sent = orch.get(first_send).await.unwrap().unwrap();
    let progress = sent.progress.expect("the handler reported progress");
    assert_eq!(
        (progress.fraction, progress.message.as_deref()),
        (1.0, Some("sent"))
    );
}

/// Jobs made before they are added (so ids do not follow the graph): cancelling the
/// workflow still cancels each waiting step before the steps it waits for. Cancelled the
/// other way round, the step that skips would end `Succeeded` and the one that runs anyway
/// would be queued to run.
async fn cancelling_a_workflow_follows_the_graph_not_the_ids(d: &Deployed) {
    let orch = d.builder().build().unwrap();
    let (last, run, mid) = (NewJob::new("b"), NewJob::new("c"), NewJob::new("a"));
    let wf = Workflow::new("made-ahead");
    let root = wf.add(NewJob::new("root"));
    let mid = wf.add(mid).after(&root);
    wf.add(last)
        .after(&mid)
        .on_dependency_failure(OnDependencyFailure::Skip);
    wf.add(run)
        .after(&mid)
        .on_dependency_failure(OnDependencyFailure::Run);
    let id = orch.submit_workflow(wf).await.unwrap();
    assert_eq!(orch.cancel_workflow(id).await.unwrap(), 4);
    let status = orch.workflow(id).await.unwrap().unwrap();
    assert_eq!(status.counts.cancelled, 4, "{status:#?}");
}

async fn a_store_without_workflows_refuses_them(d: &Deployed) {
    let orch = d.builder().build().unwrap();
    let wf = Workflow::new("w");
    wf.add(NewJob::new("a"));
    let err = orch.submit_workflow(wf).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains("workflows"), "{err}");
}
