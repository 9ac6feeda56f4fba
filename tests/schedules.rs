//! Schedules end to end, on every store that keeps them: a fleet of worker pools (each on
//! connections of its own, as separate processes would be) fires every tick once while
//! pools stop and start; catch-up after every pool was down; overlap `Skip`; pause, resume,
//! trigger and update. Run one store's with `cargo test --test schedules postgres::`.

mod deploy;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobforge::prelude::*;
use jobforge::schedule::{CatchUp, Overlap, Schedule, ScheduledJob, SchedulerConfig, Upserted};
use jobforge::state::{JobFilter, Page};
use jobforge::{JobOrchestrator, WorkerId, WorkerPool};
use parking_lot::Mutex;

use deploy::{Deployed, Deployment};

/// One `#[tokio::test]` per scenario and store, each on a fresh deployment.
macro_rules! scenarios {
    ($deployment:ident: $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                let Some(d) = super::Deployed::new(super::Deployment::$deployment, stringify!($scenario)).await
                else {
                    return;
                };
                super::$scenario(d).await;
            }
        )*
    };
}

macro_rules! every_scenario {
    ($deployment:ident) => {
        scenarios!($deployment:
            a_fleet_fires_every_tick_once_while_pools_stop_and_start,
            catch_up_after_every_pool_was_down_follows_each_policy,
            overlap_skip_waits_for_the_previous_job,
            pause_resume_trigger_update_and_delete,
        );
    };
}

mod in_memory {
    every_scenario!(InMemory);
}

mod postgres {
    every_scenario!(Postgres);
}

mod redis {
    every_scenario!(Redis);
}

/// Runs per job, by id.
type Runs = Arc<Mutex<BTreeMap<JobId, usize>>>;

fn orchestrator(store: Arc<dyn jobforge::JobStore>, runs: &Runs, work: Duration) -> Orchestrator {
    let runs = Arc::clone(runs);
    Orchestrator::builder()
        .store(store)
        .handler("tick", move |ctx: JobContext| {
            let runs = Arc::clone(&runs);
            async move {
                tokio::time::sleep(work).await;
                *runs.lock().entry(ctx.id()).or_default() += 1;
                Ok(serde_json::json!(null))
            }
        })
        .build()
        .expect("orchestrator")
}

fn pool(o: &Orchestrator, n: usize) -> WorkerPool {
    o.start_workers(
        WorkerConfig::default()
            .worker_id(WorkerId::new(format!("pool-{n}")))
            .concurrency(8)
            .schedules(Some(SchedulerConfig {
                poll: Duration::from_millis(100),
                ..SchedulerConfig::default()
            })),
    )
    .expect("pool")
}

/// A pool that runs jobs and fires no schedule.
fn runner(o: &Orchestrator) -> WorkerPool {
    o.start_workers(WorkerConfig::default().concurrency(8).schedules(None))
        .expect("pool")
}

/// Every job the schedules submitted: (schedule id, tick) from its idempotency key.
async fn ticks(o: &Orchestrator) -> BTreeMap<String, Vec<DateTime<Utc>>> {
    let mut out: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
    let mut page = Page {
        limit: 1000,
        ..Page::default()
    };
    loop {
        let got = o.list(&JobFilter::default(), &page).await.expect("list");
        for job in &got.items {
            let key = job
                .idempotency_key
                .as_deref()
                .expect("a scheduled job has a key");
            let (id, tick) = key.split_once('@').expect("<id>@<tick>");
            let tick = DateTime::parse_from_rfc3339(tick).expect("tick").to_utc();
            out.entry(id.to_owned()).or_default().push(tick);
        }
        match got.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    for ticks in out.values_mut() {
        ticks.sort();
    }
    out
}

async fn wait_idle(o: &Orchestrator) {
    for _ in 0..200 {
        let s = o.stats().await.expect("stats");
        if s.queue.ready == 0 && s.queue.in_flight == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("jobs still queued or running");
}

async fn a_fleet_fires_every_tick_once_while_pools_stop_and_start(d: Deployed) {
    let seconds: u64 = std::env::var("JOBFORGE_SCHEDULE_FLEET_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let runs = Runs::default();
    let o = orchestrator(d.store(), &runs, Duration::ZERO);
    for i in 0..20 {
        let s = Schedule::cron(format!("s{i}"), "* * * * * *", ScheduledJob::new("tick"));
        o.schedules().unwrap().upsert(s).await.expect("upsert");
    }
    // Each pool on an orchestrator and connections of its own, as a process would be.
    let mut pools: Vec<WorkerPool> = Vec::new();
    for n in 0..4 {
        pools.push(pool(
            &orchestrator(d.reopen().await, &runs, Duration::ZERO),
            n,
        ));
    }
    let mut next = 4;
    for second in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if second % 2 == 1 {
            // One pool stops (its running jobs get 100 ms, then go back), another starts.
            let gone = pools.remove(0);
            gone.shutdown(Duration::from_millis(100)).await;
            let fresh = orchestrator(d.reopen().await, &runs, Duration::ZERO);
            pools.push(pool(&fresh, next));
            next += 1;
        }
    }
    for p in pools {
        p.shutdown(Duration::from_secs(5)).await;
    }
    let fired = ticks(&o).await;
    assert_eq!(fired.len(), 20, "every schedule fired");
    for (id, ticks) in &fired {
        assert!(
            ticks.len() as u64 >= seconds - 2,
            "{id}: {} ticks",
            ticks.len()
        );
        let distinct: BTreeSet<_> = ticks.iter().collect();
        assert_eq!(distinct.len(), ticks.len(), "{id}: a tick fired twice");
        for pair in ticks.windows(2) {
            assert_eq!(
                pair[1] - pair[0],
                chrono::Duration::seconds(1),
                "{id}: a tick missing between {} and {}",
                pair[0],
                pair[1]
            );
        }
        let record = o.schedules().unwrap().get(id).await.unwrap().expect("kept");
        assert_eq!(record.fired, ticks.len() as u64, "{id}: fires counted");
        assert_eq!(record.skipped, 0, "{id}");
    }
    // Every submitted job ran once (a job a stopping pool handed back runs on another).
    let pool = runner(&o);
    wait_idle(&o).await;
    pool.shutdown(Duration::from_secs(5)).await;
    let total: usize = fired.values().map(Vec::len).sum();
    let runs = runs.lock();
    assert_eq!(runs.len(), total, "every job ran");
    assert!(
        runs.values().all(|&n| n == 1),
        "no job ran twice to completion"
    );
}

async fn catch_up_after_every_pool_was_down_follows_each_policy(d: Deployed) {
    let runs = Runs::default();
    let o = orchestrator(d.store(), &runs, Duration::ZERO);
    let policies = [
        ("none", CatchUp::None),
        ("latest", CatchUp::Latest),
        ("all", CatchUp::All { max: 100 }),
    ];
    for (id, policy) in policies {
        let s = Schedule::cron(id, "* * * * * *", ScheduledJob::new("tick")).catch_up(policy);
        o.schedules().unwrap().upsert(s).await.expect("upsert");
    }
    let p = pool(&o, 0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    p.shutdown(Duration::from_secs(5)).await;
    let before = ticks(&o).await;
    // Every pool down for 5 s: five ticks come due, three of them more than the 2 s grace late.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p = pool(&o, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.shutdown(Duration::from_secs(5)).await;
    let after = ticks(&o).await;
    let gap = |id: &str| -> Vec<DateTime<Utc>> {
        let last_before = *before[id].last().expect("fired before");
        after[id]
            .iter()
            .copied()
            .filter(|t| *t > last_before)
            .collect()
    };
    let (none, latest, all) = (gap("none"), gap("latest"), gap("all"));
    // On time when the pool came back: the ticks of the last 2 s (two or three of them).
    let on_time = none.len();
    assert!((1..=3).contains(&on_time), "none fired {none:?}");
    assert_eq!(
        latest.len(),
        on_time + 1,
        "latest: one missed tick more; {latest:?}"
    );
    assert!(all.len() >= on_time + 2, "all: every missed tick; {all:?}");
    for pair in all.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            chrono::Duration::seconds(1),
            "all: {all:?}"
        );
    }
    let none_record = o.schedules().unwrap().get("none").await.unwrap().unwrap();
    assert!(
        none_record.skipped >= 2,
        "the missed ticks are counted skipped"
    );
}

async fn overlap_skip_waits_for_the_previous_job(d: Deployed) {
    let runs = Runs::default();
    let o = orchestrator(d.store(), &runs, Duration::from_millis(2500));
    let s = Schedule::interval("slow", Duration::from_secs(1), ScheduledJob::new("tick"))
        .overlap(Overlap::Skip);
    o.schedules().unwrap().upsert(s).await.expect("upsert");
    let p = pool(&o, 0);
    tokio::time::sleep(Duration::from_millis(6500)).await;
    p.shutdown(Duration::from_secs(5)).await;
    let record = o.schedules().unwrap().get("slow").await.unwrap().unwrap();
    // 6 ticks in 6.5 s, and each job takes 2.5 s: at most 3 fire, the rest are skipped.
    assert!(
        (2..=3).contains(&record.fired),
        "fired {} (skipped {})",
        record.fired,
        record.skipped
    );
    assert!(record.skipped >= 3, "skipped {}", record.skipped);
    assert_eq!(
        o.schedules().unwrap().counts().skipped_overlap,
        record.skipped,
        "this process counted each skip as an overlap"
    );
    // No two of its jobs ran at once.
    let mut spans = Vec::new();
    for fire in &record.history {
        let job = o.get(fire.job_id).await.unwrap().expect("job kept");
        spans.push((
            job.started_at.expect("started"),
            job.finished_at.expect("finished"),
        ));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "overlapping jobs: {pair:?}");
    }
}

async fn pause_resume_trigger_update_and_delete(d: Deployed) {
    let runs = Runs::default();
    let o = orchestrator(d.store(), &runs, Duration::ZERO);
    let schedules = o.schedules().unwrap();
    let s = Schedule::interval("s", Duration::from_secs(1), ScheduledJob::new("tick"));
    let (created, what) = schedules.upsert(s.clone()).await.unwrap();
    assert_eq!(what, Upserted::Created);
    let (same, what) = schedules.upsert(s.clone()).await.unwrap();
    assert_eq!((what, same.version), (Upserted::Unchanged, created.version));

    // Unknown kind, bad field: named.
    let err = schedules
        .upsert(Schedule::interval(
            "x",
            Duration::from_secs(1),
            ScheduledJob::new("nope"),
        ))
        .await
        .expect_err("unknown kind");
    assert!(err.to_string().contains("schedule.job.kind"), "{err}");

    let paused = schedules.pause("s").await.unwrap();
    assert!(paused.paused() && paused.next_run_at.is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        schedules.fire_due().await.unwrap(),
        0,
        "paused: nothing fires"
    );
    let job = schedules.trigger("s").await.unwrap();
    assert_eq!(
        schedules
            .history("s")
            .await
            .unwrap()
            .last()
            .map(|f| (f.job_id, f.triggered)),
        Some((job, true))
    );

    let resumed = schedules.resume("s").await.unwrap();
    assert!(!resumed.paused() && resumed.next_run_at.is_some());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        schedules.fire_due().await.unwrap() >= 1,
        "resumed: it fires"
    );

    // A new definition takes a new next tick and keeps the history.
    let longer = Schedule::interval("s", Duration::from_secs(3600), ScheduledJob::new("tick"));
    let (updated, what) = schedules.upsert(longer).await.unwrap();
    assert_eq!(what, Upserted::Updated);
    assert!(updated.next_run_at.unwrap() > Utc::now() + chrono::Duration::minutes(59));
    assert!(updated.history.len() >= 2);

    assert!(schedules.delete("s").await.unwrap());
    assert!(!schedules.delete("s").await.unwrap());
    assert!(schedules.get("s").await.unwrap().is_none());
    let err = schedules.pause("s").await.expect_err("gone");
    assert_eq!(err.kind(), jobforge::ErrorKind::NotFound);
}

#[tokio::test]
async fn a_store_without_schedules_says_so() {
    // The in-memory store keeps them, also behind a `dyn JobStore`.
    let o = Orchestrator::builder()
        .store(Arc::new(jobforge::state::InMemoryState::new()) as Arc<dyn jobforge::JobStore>)
        .build()
        .unwrap();
    assert!(o.schedules().is_ok());
    // A store that keeps none is refused with a reason, not silently kept in memory.
    let split = jobforge::store::Split::new(
        Arc::new(jobforge::queue::InMemoryQueue::new()),
        Arc::new(jobforge::state::InMemoryState::new()),
    );
    let o = Orchestrator::builder()
        .store(Arc::new(split))
        .build()
        .unwrap();
    let err = o.schedules().expect_err("no schedules");
    assert_eq!(err.kind(), jobforge::ErrorKind::Configuration);
    assert!(err.to_string().contains("keeps no schedules"), "{err}");
}

#[tokio::test]
async fn a_split_store_given_schedules_fires_them_once() {
    let split = jobforge::store::Split::new(
        Arc::new(jobforge::queue::InMemoryQueue::new()),
        Arc::new(jobforge::state::InMemoryState::new()),
    )
    .with_schedules(Arc::new(jobforge::schedule::InMemorySchedules::new()));
    let runs = Runs::default();
    let o = orchestrator(Arc::new(split), &runs, Duration::ZERO);
    let schedules = o.schedules().expect("kept by the split store");
    schedules
        .upsert(Schedule::interval(
            "split",
            Duration::from_secs(1),
            ScheduledJob::new("tick"),
        ))
        .await
        .expect("upsert");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Two processes looking at once: each tick is submitted under one key and advanced once.
    let (a, b) = tokio::join!(schedules.fire_due(), schedules.fire_due());
    let fired = a.expect("fire") + b.expect("fire");
    let record = schedules.get("split").await.unwrap().expect("kept");
    assert!(fired >= 2, "fired {fired}");
    assert_eq!(record.fired, fired, "every fire counted once");
    for fire in &record.history {
        let job = o.get(fire.job_id).await.unwrap().expect("the job exists");
        assert_eq!(job.kind, "tick");
    }
    let counts = schedules.counts();
    assert_eq!(counts.fired, fired);
    assert!(counts.due >= 1);
}

/// The fleet as real processes: `jobforge-server --workers-only` processes, each given the
/// same schedules file, fire every tick once while one of them is killed with SIGKILL and
/// started again every two seconds. PostgreSQL and Redis (an in-memory store is one
/// process's own).
#[cfg(all(feature = "http", unix))]
mod processes {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_fleet_of_processes_fires_every_tick_once_through_sigkills() {
        if let Some(d) =
            super::Deployed::new(super::Deployment::Postgres, "postgres processes").await
        {
            super::fleet_of_processes(d).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_fleet_of_processes_fires_every_tick_once_through_sigkills() {
        if let Some(d) = super::Deployed::new(super::Deployment::Redis, "redis processes").await {
            super::fleet_of_processes(d).await;
        }
    }
}

#[cfg(all(feature = "http", unix))]
async fn fleet_of_processes(d: Deployed) {
    use std::process::{Child, Command, Stdio};

    let seconds: u64 = std::env::var("JOBFORGE_SCHEDULE_FLEET_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let storage = d.server_args().expect("a shared store");
    let declared = serde_json::Value::Array(
        (0..20)
            .map(|i| {
                serde_json::json!({"id": format!("p{i}"), "cron": "* * * * * *", "job": {"kind": "echo"}})
            })
            .collect(),
    )
    .to_string();
    let spawn = || -> Child {
        Command::new(env!("CARGO_BIN_EXE_jobforge-server"))
            .args(["--workers-only", "--demo-handlers", "--concurrency", "8"])
            .args(["--schedules", &declared])
            .args(&storage)
            // Only the storage above: the environment's URLs would add a second store.
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn jobforge-server")
    };
    // SIGKILL: no shutdown, no hand-back; what it held is found by the others.
    let kill = |mut child: Child| {
        let _ = child.kill();
        child.wait().expect("reap")
    };
    let mut fleet: Vec<Child> = (0..4).map(|_| spawn()).collect();
    for second in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for child in &mut fleet {
            // A process that exited by itself is a failure (a declared schedule refused, a
            // race at the first upsert lost).
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("a jobforge-server exited by itself: {status}");
            }
        }
        if second % 2 == 1 {
            let killed = kill(fleet.remove(0));
            assert!(!killed.success(), "killed, not exited");
            fleet.push(spawn());
        }
    }
    for child in fleet {
        kill(child);
    }
    let o = Orchestrator::builder()
        .store(d.store())
        .build()
        .expect("orchestrator");
    // A process killed between submitting a tick's job and advancing its schedule leaves the
    // tick due: the next look submits it again under the same key and counts it then. The
    // last SIGKILL leaves no process to look, so this one looks once, within the scheduler's
    // grace, as the next process would (without it, the coverage run once found 8 jobs and
    // 7 fires).
    o.schedules()
        .expect("schedules")
        .fire_due()
        .await
        .expect("one look");
    let fired = ticks(&o).await;
    assert_eq!(fired.len(), 20, "every schedule fired: {:?}", fired.keys());
    for (id, ticks) in &fired {
        // The first process needs a moment to start; from its first tick on, none is lost.
        assert!(
            ticks.len() as u64 >= seconds - 3,
            "{id}: {} ticks in {seconds} s",
            ticks.len()
        );
        for pair in ticks.windows(2) {
            assert_eq!(
                pair[1] - pair[0],
                chrono::Duration::seconds(1),
                "{id}: a tick missing or doubled between {} and {}",
                pair[0],
                pair[1]
            );
        }
        let record = o.schedules().unwrap().get(id).await.unwrap().expect("kept");
        assert_eq!(
            record.fired,
            ticks.len() as u64,
            "{id}: each fire counted once"
        );
    }
}
