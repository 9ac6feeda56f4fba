//! The one job kind of the suite, its payload, the job mixes, and the one submission path.

use std::time::Duration;

use jobforge::prelude::*;
use jobforge::{Handler, JobOrchestrator};
use serde::{Deserialize, Serialize};

/// The kind every scenario submits.
pub(crate) const KIND: &str = "chaos";

/// Jobs per `submit_batch` call.
pub(crate) const CHUNK: usize = 1_000;

/// What a job's handler does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    /// Sleep `ms` (honouring cancellation), write the ledger row, succeed.
    Normal,
    /// Attempt 1 fails at once with a retryable error, retried within 1 ms (the kind's
    /// policy: base 1 ms, full jitter); later attempts are `Normal`.
    FailOnce,
    /// Run three leases long (heartbeats keep the lease), then as `Normal`.
    Long,
    /// Never return, ignoring cancellation (`std::future::pending`).
    Hang,
    /// Block the executor's thread (`std::thread::sleep`), then give up (permanent error).
    Block,
    /// Ask for an absurd delay: `retry_after(Duration::MAX)`, or `defer(Duration::MAX)` when
    /// the payload says `defer`.
    Absurd,
}

impl Mode {
    pub(crate) const ALL: [Mode; 6] = [
        Mode::Normal,
        Mode::FailOnce,
        Mode::Long,
        Mode::Hang,
        Mode::Block,
        Mode::Absurd,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::FailOnce => "fail_once",
            Mode::Long => "long",
            Mode::Hang => "hang",
            Mode::Block => "block",
            Mode::Absurd => "absurd",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether a job of this mode is expected to end `succeeded`.
    pub(crate) fn should_succeed(self) -> bool {
        matches!(self, Mode::Normal | Mode::FailOnce | Mode::Long)
    }
}

/// A job's payload: `{"ms": 1..30, "mode": "..."}` (and `"defer": true` for some absurd ones).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct ChaosPayload {
    pub(crate) ms: u64,
    pub(crate) mode: Mode,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) defer: bool,
}

/// How many jobs of each mode; the order of submission is shuffled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Mix(pub(crate) Vec<(Mode, usize)>, pub(crate) Option<Slow>);

/// Some `fail_once` jobs whose retried attempt runs `ms` instead of 1..=30: `per_mille` of
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slow {
    pub(crate) per_mille: u32,
    pub(crate) ms: u64,
}

impl Mix {
    pub(crate) fn only(mode: Mode, n: usize) -> Self {
        Self(vec![(mode, n)], None)
    }

    pub(crate) fn with(mut self, mode: Mode, n: usize) -> Self {
        if n > 0 {
            self.0.push((mode, n));
        }
        self
    }

    pub(crate) fn with_slow(mut self, slow: Slow) -> Self {
        self.1 = Some(slow);
        self
    }

    pub(crate) fn total(&self) -> usize {
        self.0.iter().map(|(_, n)| n).sum()
    }

    /// `normal=900,fail_once=100[,slow=20:2000]`, as passed to a submitter process.
    pub(crate) fn encode(&self) -> String {
        self.0
            .iter()
            .map(|(m, n)| format!("{}={n}", m.name()))
            .chain(self.1.map(|s| format!("slow={}:{}", s.per_mille, s.ms)))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub(crate) fn decode(text: &str) -> Result<Self, String> {
        let mut mix = Mix::default();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (mode, n) = part
                .split_once('=')
                .ok_or_else(|| format!("mix entry `{part}` is not mode=count"))?;
            if mode == "slow" {
                let (per_mille, ms) = n
                    .split_once(':')
                    .and_then(|(p, m)| Some((p.parse().ok()?, m.parse().ok()?)))
                    .ok_or_else(|| format!("mix entry `{part}` is not slow=per_mille:ms"))?;
                mix = mix.with_slow(Slow { per_mille, ms });
                continue;
            }
            let mode = Mode::parse(mode).ok_or_else(|| format!("unknown mode `{mode}`"))?;
            let n = n
                .parse()
                .map_err(|_| format!("mix entry `{part}`: bad count"))?;
            mix = mix.with(mode, n);
        }
        Ok(mix)
    }

    /// The jobs, shuffled with `seed`: `ms` uniform in 1..=30, every other absurd job a
    /// deferral. `max_attempts` for `Normal`/`FailOnce` jobs overrides the kind's when set.
    pub(crate) fn jobs(&self, seed: u64, normal_attempts: Option<u32>) -> Vec<NewJob> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut payloads = Vec::with_capacity(self.total());
        for (mode, n) in &self.0 {
            for i in 0..*n {
                let slow = self
                    .1
                    .filter(|s| *mode == Mode::FailOnce && rng.u32(0..1000) < s.per_mille);
                payloads.push(ChaosPayload {
                    ms: slow.map_or_else(|| rng.u64(1..=30), |s| s.ms),
                    mode: *mode,
                    defer: *mode == Mode::Absurd && i % 2 == 1,
                });
            }
        }
        rng.shuffle(&mut payloads);
        payloads
            .into_iter()
            .map(|p| {
                let job = NewJob::new(KIND).payload(&p);
                match normal_attempts {
                    Some(n) if p.mode.should_succeed() => job.max_attempts(n),
                    _ => job,
                }
            })
            .collect()
    }
}

/// The kind's settings: every process of a scenario (suite, submitters, workers) registers
/// the kind the same way, so `max_attempts` fixed at submission matches what workers run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KindSettings {
    pub(crate) max_attempts: u32,
    pub(crate) timeout: Option<Duration>,
}

impl KindSettings {
    pub(crate) fn config(&self, handler: impl Handler) -> KindConfig {
        // Retries after about a millisecond: the retry storm's retries race heartbeats.
        let policy = RetryPolicy::new(self.max_attempts)
            .with_base(Duration::from_millis(1))
            .with_cap(Duration::from_millis(10));
        let config = KindConfig::new(handler).retry(policy);
        match self.timeout {
            Some(t) => config.timeout(t),
            None => config,
        }
    }
}

/// A handler for processes that run no jobs (the suite, submitters).
pub(crate) fn no_handler() -> impl Handler {
    |_ctx: JobContext| async {
        Err::<serde_json::Value, _>(JobError::permanent(
            "this process runs no jobs (a chaos suite or submitter process)",
        ))
    }
}

/// The one submission path: `jobs` in chunks of [`CHUNK`] through `submit_batch`, each chunk
/// tried again (same job ids, so nothing is made twice) if the store refuses it, a pause of
/// `pace` between chunks. `on_chunk` gets each chunk's ids once the store has them.
///
/// Kept in one function because the batch API may change shape (answer per job, say).
pub(crate) async fn submit_jobs(
    orch: &dyn JobOrchestrator,
    jobs: Vec<NewJob>,
    pace: Duration,
    mut on_chunk: impl FnMut(&[JobId]),
) -> Result<Vec<JobId>, String> {
    let mut ids = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter().peekable();
    while jobs.peek().is_some() {
        let chunk: Vec<NewJob> = jobs.by_ref().take(CHUNK).collect();
        let want: Vec<JobId> = chunk.iter().map(NewJob::id).collect();
        let mut tries = 0;
        let answers = loop {
            match orch.submit_batch(chunk.clone()).await {
                Ok(answers) => break answers,
                Err(err) if tries < 20 => {
                    tries += 1;
                    eprintln!(
                        "submit of {} jobs failed ({err}); trying again",
                        chunk.len()
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(err) => return Err(format!("submit failed 20 times: {err}")),
            }
        };
        if answers.len() != want.len() {
            return Err(format!(
                "submit_batch answered {} results for {} jobs",
                answers.len(),
                want.len()
            ));
        }
        for (answer, id) in answers.iter().zip(&want) {
            // A retried chunk may find its jobs made by the first try (`created: false`),
            // but never under another id.
            if answer.id != *id {
                return Err(format!(
                    "submit_batch answered job {} for job {id}",
                    answer.id
                ));
            }
        }
        on_chunk(&want);
        ids.extend(want);
        if !pace.is_zero() && jobs.peek().is_some() {
            tokio::time::sleep(pace).await;
        }
    }
    Ok(ids)
}

/// Submit `total` jobs (rounded down to whole diamonds, at least one) as diamond workflows:
/// a root, `width` steps after it, and a join after all of them, every step a `normal` chaos
/// job. Each workflow's ids go to `on_chunk` once it is stored. Answers how many jobs.
pub(crate) async fn submit_diamonds(
    orch: &dyn JobOrchestrator,
    total: usize,
    width: usize,
    seed: u64,
    mut on_chunk: impl FnMut(&[JobId]),
) -> Result<usize, String> {
    use jobforge::workflow::Workflow;
    let mut rng = fastrand::Rng::with_seed(seed);
    let per = width + 2;
    let diamonds = (total / per).max(1);
    let mut job = || {
        NewJob::new(KIND).payload(&ChaosPayload {
            ms: rng.u64(1..=30),
            mode: Mode::Normal,
            defer: false,
        })
    };
    for i in 0..diamonds {
        let wf = Workflow::new(format!("diamond-{i}"));
        let root = wf.add(job());
        let parts = wf.add_many((0..width).map(|_| job())).after(&root);
        let join = wf.add(job()).after(&parts).name("join");
        let mut ids = vec![root.id()];
        ids.extend(parts.as_slice().iter().map(jobforge::workflow::Step::id));
        ids.push(join.id());
        let mut tries = 0;
        loop {
            match orch.submit_workflow(wf.clone()).await {
                Ok(_) => break,
                Err(err) if tries < 20 => {
                    tries += 1;
                    eprintln!("submit of workflow diamond-{i} failed ({err}); trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(err) => return Err(format!("submit_workflow failed 20 times: {err}")),
            }
        }
        on_chunk(&ids);
    }
    Ok(diamonds * per)
}
