//! The suite role: check the prerequisites, run each selected scenario on each store in
//! turn, report.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jobforge::JobId;
use jobforge::state::StateTally;
use sqlx::postgres::PgPool;

use crate::jobs::{self, KindSettings, Mix};
use crate::ledger::{self, LedgerSchema};
use crate::pg_cluster::Cluster;
use crate::procs::{self, Skew, Workers};
use crate::report::{self, Row};
use crate::roles::{Common, SubmitterSettings, WorkerSettings};
use crate::scenarios::{self, Fault, Length, Scenario};
use crate::store::{ScenarioStore, StoreKind, blocking};
use crate::verify::{self, Tally};

const SKIP: &str = "chaos suite skipped: JOBFORGE_CHAOS is not set; set JOBFORGE_CHAOS=short to run; bash .ci/run does";

/// Everything the scenarios share.
struct Suite {
    length: Length,
    jobs: usize,
    seed: u64,
    exe: PathBuf,
    ledger_url: String,
    ledger: PgPool,
    cluster: Option<Arc<Cluster>>,
    faketime: Option<String>,
    /// Names this run's schemas and namespaces.
    run: String,
    logs: PathBuf,
}

pub(crate) fn run() -> ExitCode {
    let length = match std::env::var("JOBFORGE_CHAOS")
        .ok()
        .as_deref()
        .map(str::trim)
    {
        None | Some("") => {
            println!("{SKIP}");
            return ExitCode::SUCCESS;
        }
        Some("short") => Length::Short,
        Some("long") => Length::Long,
        Some(other) => {
            eprintln!("JOBFORGE_CHAOS={other}: use `short` (CI) or `long` (before a release)");
            return ExitCode::FAILURE;
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chaos suite: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(main_async(length)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("\nCHAOS SUITE FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target")
}

async fn main_async(length: Length) -> Result<bool, String> {
    let started = Instant::now();
    let jobs = match std::env::var("JOBFORGE_CHAOS_JOBS") {
        Ok(n) => n
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|_| format!("JOBFORGE_CHAOS_JOBS={n} is not a number"))?,
        Err(_) => length.default_jobs(),
    };
    let seed = match std::env::var("JOBFORGE_CHAOS_SEED") {
        Ok(s) => s
            .parse()
            .map_err(|_| format!("JOBFORGE_CHAOS_SEED={s} is not a number"))?,
        Err(_) => fastrand::u64(..),
    };
    let only: Vec<String> = std::env::var("JOBFORGE_CHAOS_ONLY")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let selected: Vec<(Scenario, StoreKind)> = scenarios::all(length, jobs)
        .into_iter()
        .flat_map(|sc| StoreKind::ALL.map(|k| (sc.clone(), k)))
        .filter(|(sc, k)| {
            let key = format!("{}/{}", sc.name, k.name());
            only.is_empty() || only.iter().any(|o| key.contains(o.as_str()))
        })
        .collect();
    if selected.is_empty() {
        return Err(format!(
            "JOBFORGE_CHAOS_ONLY={only:?} matches no scenario (names are <scenario>/<store>, e.g. sigkill/redis)"
        ));
    }

    // Prerequisites: each missing one is a loud failure, never a skip.
    let ledger_url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            return Err(
                "DATABASE_URL is not set; the suite keeps its ledger in that PostgreSQL (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/test)"
                    .to_owned(),
            );
        }
    };
    let shown = redact(&ledger_url);
    // One plain connection first, so an unreachable server says why (refused, no such
    // database, authentication) instead of a pool's timeout.
    match tokio::time::timeout(
        Duration::from_secs(10),
        <sqlx::PgConnection as sqlx::Connection>::connect(&ledger_url),
    )
    .await
    {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
        }
        Ok(Err(e)) => return Err(format!("DATABASE_URL ({shown}) is unreachable: {e}")),
        Err(_) => return Err(format!("DATABASE_URL ({shown}) did not answer within 10 s")),
    }
    let ledger = ledger::pool(&ledger_url, None, 4, "jfchaos_suite").await?;
    let needs = |kind: StoreKind| selected.iter().any(|(_, k)| *k == kind);
    let cluster = if needs(StoreKind::Postgres) {
        let bin = Cluster::find_bin().ok_or(
            "no PostgreSQL server binaries (initdb, pg_ctl) found: install postgresql or set PG_BIN",
        )?;
        println!("starting a private PostgreSQL cluster ({})", bin.display());
        Some(Arc::new(blocking(move || Cluster::start_in(bin)).await?))
    } else {
        None
    };
    if needs(StoreKind::Redis) {
        let ok = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Err("redis-server is not installed (apt-get install redis-server)".to_owned());
        }
    }
    let faketime = if selected.iter().any(|(sc, _)| sc.skew.is_some()) {
        Some(procs::faketime_preload()?)
    } else {
        None
    };
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let logs = target_dir().join("chaos-logs");
    let _ = std::fs::remove_dir_all(&logs);
    let suite = Arc::new(Suite {
        length,
        jobs,
        seed,
        exe,
        ledger_url,
        ledger,
        cluster,
        faketime,
        run: uuid::Uuid::now_v7().simple().to_string()[24..].to_owned(),
        logs,
    });
    println!(
        "chaos suite ({}): {} scenario runs, {jobs} jobs per scenario, seed {seed} (JOBFORGE_CHAOS_SEED={seed} repeats the job mix), worker logs in {}",
        length.name(),
        selected.len(),
        suite.logs.display()
    );

    let mut rows = Vec::new();
    for (sc, kind) in selected {
        let name = format!("{}/{}", sc.name, kind.name());
        println!("\n=== {name}: {}", sc.about);
        let clock = Instant::now();
        let task = tokio::spawn(run_one(Arc::clone(&suite), sc.clone(), kind));
        let tally = match task.await {
            Ok(Ok(tally)) => tally,
            Ok(Err(e)) => errored(&sc, format!("the scenario could not run: {e}")),
            Err(e) if e.is_panic() => errored(&sc, format!("the scenario panicked: {e}")),
            Err(e) => errored(&sc, format!("the scenario task failed: {e}")),
        };
        let row = Row {
            scenario: sc.name.to_owned(),
            store: kind.name().to_owned(),
            tally,
            secs: clock.elapsed().as_secs_f64(),
        };
        println!(
            "=== {name}: {} in {:.0} s{}",
            if row.passed() { "PASS" } else { "FAIL" },
            row.secs,
            row.tally
                .failures
                .iter()
                .map(|f| format!("\n    {f}"))
                .collect::<String>()
        );
        rows.push(row);
    }
    let wall = started.elapsed();
    let table = report::text(&rows);
    println!("\n{table}");
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".to_owned());
    let preamble = vec![
        format!(
            "`JOBFORGE_CHAOS={}`, {} jobs per scenario, seed {}, commit {commit}",
            suite.length.name(),
            suite.jobs,
            suite.seed
        ),
        format!(
            "run at {} UTC, wall time {:.0} s ({:.1} min)",
            Utc::now().format("%Y-%m-%d %H:%M"),
            wall.as_secs_f64(),
            wall.as_secs_f64() / 60.0
        ),
        "lost: queued or missing at the end; stuck: running at the end; double-finished: two terminal events in one history; duplicate executions: jobs with two or more ledger rows; takeovers: history events saying a lease expired; parked: queued with a due time over a day away (bad_handlers only); p99 lag: due time to start (clock_skew only)".to_owned(),
    ];
    let path = target_dir().join("chaos-report.md");
    report::write(&path, &report::markdown(&rows, &preamble))?;
    let failed = rows.iter().filter(|r| !r.passed()).count();
    println!(
        "chaos suite: {} of {} scenario runs passed in {:.0} s; report in {}",
        rows.len() - failed,
        rows.len(),
        wall.as_secs_f64(),
        path.display()
    );
    Ok(failed == 0)
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for messages.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((auth, host)) => match auth.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => url.to_owned(),
            },
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn errored(sc: &Scenario, why: String) -> Tally {
    Tally {
        jobs: sc.jobs(),
        failures: vec![why],
        ..Tally::default()
    }
}

/// Counts by state, or `None` while the store does not answer.
async fn counts(orch: &jobforge::Orchestrator) -> Option<StateTally> {
    match tokio::time::timeout(Duration::from_secs(3), orch.store().counts()).await {
        Ok(Ok(c)) => Some(c.total),
        _ => None,
    }
}

/// Where a one-shot store fault is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shot {
    Pending,
    Down(Instant),
    Done,
}

/// Jobs submitted so far, with the time each chunk landed (the suite's clock).
type Submitted = Arc<Mutex<Vec<(JobId, DateTime<Utc>)>>>;

/// Start a submitter process whose stdout lines (a chunk's ids each) land in `into`.
fn spawn_submitter(
    suite: &Suite,
    common: &Common,
    settings: &SubmitterSettings,
    skew: Option<Skew>,
    log: PathBuf,
    into: Submitted,
) -> Result<tokio::task::JoinHandle<Result<(), String>>, String> {
    let log_file =
        std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let mut cmd = Command::new(&suite.exe);
    cmd.envs(common.env())
        .envs(settings.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file);
    if let Some(skew) = &skew {
        skew.apply(&mut cmd);
    }
    let mut child = cmd.spawn().map_err(|e| format!("spawn a submitter: {e}"))?;
    let stdout = child.stdout.take().ok_or("submitter stdout")?;
    Ok(tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("read a submitter's ids: {e}"))?;
            let now = Utc::now();
            let ids = line
                .split_whitespace()
                .map(|id| id.parse::<JobId>().map(|id| (id, now)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("a submitter wrote `{line}`: {e}"))?;
            into.lock().map_err(|_| "poisoned")?.extend(ids);
        }
        let status = child
            .wait()
            .map_err(|e| format!("wait for a submitter: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "a submitter exited with {status}: {}",
                procs::tail(&log, 10)
            ))
        }
    }))
}

/// Half of a mix (`first`: the larger half).
fn half(mix: &Mix, first: bool) -> Mix {
    let mut out = Mix(Vec::new(), mix.1);
    for (mode, n) in &mix.0 {
        out = out.with(*mode, if first { n - n / 2 } else { n / 2 });
    }
    out
}

async fn run_one(suite: Arc<Suite>, sc: Scenario, kind: StoreKind) -> Result<Tally, String> {
    let tag = format!(
        "{}_{}",
        sc.name,
        match kind {
            StoreKind::Postgres => "pg",
            StoreKind::Redis => "rd",
        }
    );
    let ledger_schema = LedgerSchema::create(
        &suite.ledger,
        &suite.ledger_url,
        &format!("jfchaos_{}_{tag}", suite.run),
    )
    .await?;
    let ns = format!("jfc_{}_{tag}", suite.run);
    let mut store = match kind {
        StoreKind::Postgres => ScenarioStore::postgres(
            Arc::clone(suite.cluster.as_ref().ok_or("no PostgreSQL cluster")?),
            &ns,
        ),
        StoreKind::Redis => {
            let durable = sc.durable_redis;
            let ns = ns.clone();
            blocking(move || ScenarioStore::redis(&ns, durable)).await?
        }
    };
    let kind_settings = KindSettings {
        max_attempts: sc.max_attempts,
        timeout: sc.timeout,
    };
    let outcome = drive(&suite, &sc, &mut store, &ledger_schema, kind_settings).await;
    store.cleanup().await;
    outcome
}

/// Submit, run the workers, break things, wait, stop, verify.
async fn drive(
    suite: &Suite,
    sc: &Scenario,
    store: &mut ScenarioStore,
    ledger_schema: &LedgerSchema,
    kind: KindSettings,
) -> Result<Tally, String> {
    let watcher = store
        .spec
        .connect_patiently(
            "jfchaos_suite",
            || kind.config(jobs::no_handler()),
            Duration::from_secs(30),
        )
        .await?;
    let orch = &watcher.orch;
    let common = Common {
        store: store.spec.clone(),
        ledger_url: suite.ledger_url.clone(),
        ledger_schema: ledger_schema.name.clone(),
        kind,
    };
    let logs = suite
        .logs
        .join(format!("{}-{}", sc.name, store.spec.kind.name()));
    std::fs::create_dir_all(&logs).map_err(|e| format!("create {}: {e}", logs.display()))?;
    let skew = |sign: &str| {
        sc.skew
            .zip(suite.faketime.as_ref())
            .map(|(by, preload)| Skew {
                preload: preload.clone(),
                offset: format!("{sign}{}s", by.as_secs()),
            })
    };
    let skews: Vec<Option<Skew>> = (0..sc.workers)
        .map(|slot| match slot {
            0 => skew("+"),
            1 => skew("-"),
            _ => None,
        })
        .collect();
    let mut workers = Workers::new(
        &suite.exe,
        &logs,
        common.clone(),
        WorkerSettings {
            concurrency: sc.concurrency,
            lease: sc.lease,
            poll: sc.poll,
            grace: sc.grace,
            block: sc.block,
        },
        skews,
    );
    let n = sc.jobs();
    let submitted: Submitted = Arc::default();
    let mut submitters = Vec::new();
    // The suite's seed, varied per scenario (FNV-1a of its name).
    let seed = sc
        .name
        .bytes()
        .fold(suite.seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    if sc.skew.is_none() {
        let jobs = sc.mix.jobs(seed, sc.normal_attempts);
        let into = Arc::clone(&submitted);
        let record = move |ids: &[JobId]| {
            let now = Utc::now();
            if let Ok(mut s) = into.lock() {
                s.extend(ids.iter().map(|id| (*id, now)));
            }
        };
        let start_workers = |workers: &mut Workers| -> Result<(), String> {
            for slot in 0..sc.workers {
                workers.spawn(slot)?;
            }
            Ok(())
        };
        match sc.pace {
            None => {
                // A backlog first, then the workers.
                let clock = Instant::now();
                match sc.diamond {
                    Some(width) => {
                        jobs::submit_diamonds(orch, n, width, seed, record).await?;
                    }
                    None => {
                        jobs::submit_jobs(orch, jobs, Duration::ZERO, record).await?;
                    }
                }
                println!(
                    "  submitted {n} jobs in {:.1} s",
                    clock.elapsed().as_secs_f64()
                );
                start_workers(&mut workers)?;
                workers.wait_ready(Duration::from_secs(60)).await?;
            }
            Some(pace) => {
                // The workers first, then the jobs streamed in while they run.
                start_workers(&mut workers)?;
                workers.wait_ready(Duration::from_secs(60)).await?;
                let orch = orch.clone();
                submitters.push(tokio::spawn(async move {
                    jobs::submit_jobs(&orch, jobs, pace, record)
                        .await
                        .map(|_| ())
                }));
                println!("  submitting {n} jobs, a chunk every {pace:?}, while the workers run");
            }
        }
    } else {
        // Workers first (one ahead, one behind, one on time), then two submitters, one
        // ahead and one behind, a chunk every 2 s each (together about half what the
        // workers can take, so the lag measured is the clocks', not a queue's).
        for slot in 0..sc.workers {
            workers.spawn(slot)?;
        }
        workers.wait_ready(Duration::from_secs(60)).await?;
        for (i, sign) in ["+", "-"].into_iter().enumerate() {
            let settings = SubmitterSettings {
                mix: half(&sc.mix, i == 0),
                seed: seed.wrapping_add(i as u64),
                pace: Duration::from_secs(2),
                normal_attempts: sc.normal_attempts,
            };
            submitters.push(spawn_submitter(
                suite,
                &common,
                &settings,
                skew(sign),
                logs.join(format!("submitter-{i}.log")),
                Arc::clone(&submitted),
            )?);
        }
        println!("  workers at +30 s, -30 s and on time; submitters at +30 s and -30 s");
    }

    // Wait for the jobs while injecting the fault.
    let clock = Instant::now();
    let deadline = clock + sc.deadline;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut next_fault = clock
        + match sc.fault {
            Fault::SigKill { every } | Fault::SigTerm { every } | Fault::ConnKill { every } => {
                every
            }
            _ => Duration::ZERO,
        };
    let mut shot = Shot::Pending;
    let mut cut = (0u64, 0u32);
    let mut fault_errors: Vec<String> = Vec::new();
    let mut seen: Option<(u64, u64, u64)> = None;
    let mut last_change = Instant::now();
    let mut next_print = Instant::now();
    let mut fault_note = String::new();
    let ending = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        workers.reap(sc.grace + Duration::from_secs(30));
        let now = Instant::now();
        // While the store is down on purpose, asking would only wait for a timeout.
        let tally = match shot {
            Shot::Down(_) => None,
            _ => counts(orch).await,
        };
        let finished = tally.map(|c| c.succeeded + c.dead + c.cancelled);
        let submitting = submitters.iter().any(|s| !s.is_finished());
        // One-shot faults strike once this share of the jobs is finished.
        let reached = |at: f64| finished.is_some_and(|f| f as f64 >= at * n as f64);
        match sc.fault {
            Fault::None => {}
            Fault::SigKill { every } if now >= next_fault => {
                workers.kill_and_restart(rng.usize(..workers.slots()))?;
                next_fault += every;
            }
            Fault::SigTerm { every } if now >= next_fault => {
                if let Some(slot) = workers.random_ready(&mut rng) {
                    workers.term_and_restart(slot)?;
                }
                next_fault += every;
            }
            Fault::ConnKill { every } if now >= next_fault => {
                match store.kill_connections().await {
                    Ok(k) => cut = (cut.0 + k, cut.1 + 1),
                    Err(e) => fault_errors.push(e),
                }
                next_fault += every;
            }
            Fault::StoreRestart { at } if shot == Shot::Pending && reached(at) => {
                let t = Instant::now();
                store.restart().await?;
                fault_note = format!(
                    "store restarted at {} of {n} finished (took {:.1} s)",
                    finished.unwrap_or(0),
                    t.elapsed().as_secs_f64()
                );
                println!("  {fault_note}");
                shot = Shot::Done;
                last_change = Instant::now();
            }
            Fault::StoreOutage { at, .. } if shot == Shot::Pending && reached(at) => {
                store.stop().await?;
                fault_note = format!("store stopped at {} of {n} finished", finished.unwrap_or(0));
                println!("  {fault_note}");
                shot = Shot::Down(Instant::now());
            }
            Fault::StoreOutage { down, .. } => {
                if let Shot::Down(since) = shot {
                    if since.elapsed() >= down {
                        store.start().await?;
                        println!(
                            "  store started again after {:.1} s",
                            since.elapsed().as_secs_f64()
                        );
                        fault_note.push_str(&format!(
                            ", started again after {:.1} s",
                            since.elapsed().as_secs_f64()
                        ));
                        shot = Shot::Done;
                        last_change = Instant::now();
                    }
                }
            }
            _ => {}
        }
        if now >= next_print {
            next_print = now + Duration::from_secs(3);
            let mut line = format!("  {:>5.1}s ", clock.elapsed().as_secs_f64());
            match tally {
                Some(c) => line.push_str(&format!(
                    "{}/{n} finished (succeeded {}, dead {}, cancelled {}), {} running, {} queued",
                    finished.unwrap_or(0),
                    c.succeeded,
                    c.dead,
                    c.cancelled,
                    c.running,
                    c.queued
                )),
                None => line.push_str("store not answering"),
            }
            match sc.fault {
                Fault::SigKill { .. } => line.push_str(&format!(" | SIGKILLs {}", workers.kills)),
                Fault::SigTerm { .. } => line.push_str(&format!(" | SIGTERMs {}", workers.terms)),
                Fault::ConnKill { .. } => {
                    line.push_str(&format!(" | {} connections cut in {} rounds", cut.0, cut.1));
                }
                _ => {}
            }
            println!("{line}");
        }
        if finished.is_some_and(|f| f >= n as u64) && !submitting {
            break format!(
                "all {n} jobs finished after {:.1} s",
                clock.elapsed().as_secs_f64()
            );
        }
        let key = tally.map(|c| (finished.unwrap_or(0), c.running, c.queued));
        if key.is_some() && key != seen {
            seen = key;
            last_change = now;
        }
        if matches!(shot, Shot::Down(_)) || submitting {
            last_change = now;
        }
        if now.duration_since(last_change) >= sc.stall {
            break format!(
                "stopped waiting after {:.1} s: nothing changed for {:?}",
                clock.elapsed().as_secs_f64(),
                sc.stall
            );
        }
        if now >= deadline {
            break format!("stopped waiting at the deadline ({:?})", sc.deadline);
        }
    };
    println!("  {ending}");
    if let Shot::Down(_) = shot {
        // The deadline came during the outage: bring the store back to read it.
        store.start().await?;
    }
    let alive = workers.alive();
    workers.stop_all(sc.grace + Duration::from_secs(30)).await;
    for s in submitters {
        match s.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => fault_errors.push(format!("submitting: {e}")),
            Err(e) => fault_errors.push(format!("a submitter task failed: {e}")),
        }
    }

    let ledger = ledger_schema.counts(&suite.ledger).await?;
    let submitted = submitted.lock().map_err(|_| "poisoned")?.clone();
    let clock = Instant::now();
    let mut tally = verify::verify(sc, orch, &submitted, &ledger).await?;
    println!(
        "  read back {} records and histories in {:.1} s",
        submitted.len(),
        clock.elapsed().as_secs_f64()
    );
    if submitted.len() != n {
        tally
            .failures
            .push(format!("{} of {n} jobs were submitted", submitted.len()));
    }
    if alive < workers.slots() {
        tally.failures.push(format!(
            "{} of {} worker processes had died when the jobs were done",
            workers.slots() - alive,
            workers.slots()
        ));
    }
    for note in &workers.notes {
        tally
            .failures
            .push(format!("worker {}: {}", note.worker, note.what));
    }
    for e in fault_errors {
        tally.failures.push(e);
    }
    tally.notes.insert(0, ending);
    match sc.fault {
        Fault::SigKill { .. } => tally
            .notes
            .push(format!("{} workers SIGKILLed", workers.kills)),
        Fault::SigTerm { .. } => tally
            .notes
            .push(format!("{} workers SIGTERMed", workers.terms)),
        Fault::ConnKill { .. } => tally
            .notes
            .push(format!("{} connections cut in {} rounds", cut.0, cut.1)),
        Fault::StoreRestart { .. } | Fault::StoreOutage { .. } => tally.notes.push(fault_note),
        Fault::None => {}
    }
    if let (Some(p99), Some(max)) = (tally.p99_lag, tally.max_lag) {
        tally
            .notes
            .push(format!("start lag p99 {p99:.2} s, max {max:.2} s"));
    }
    Ok(tally)
}
