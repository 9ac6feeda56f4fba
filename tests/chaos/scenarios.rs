//! The scenarios: what each submits, how its workers are set up, the fault it injects, and
//! what it expects beyond the rules every scenario keeps (see `verify.rs`).

use std::time::Duration;

use crate::jobs::{Mix, Mode, Slow};

/// `short` (CI) or `long` (before a release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Length {
    Short,
    Long,
}

impl Length {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Length::Short => "short",
            Length::Long => "long",
        }
    }

    /// Jobs per scenario unless `JOBFORGE_CHAOS_JOBS` says otherwise.
    pub(crate) fn default_jobs(self) -> usize {
        match self {
            Length::Short => 20_000,
            Length::Long => 200_000,
        }
    }
}

/// What the suite does to the running system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Fault {
    /// Nothing (the scenario's jobs or clocks are the trouble).
    None,
    /// SIGKILL a random worker every `every`, starting another at once.
    SigKill { every: Duration },
    /// SIGTERM a random worker every `every` (graceful), starting another at once.
    SigTerm { every: Duration },
    /// Restart the store once, when `at` of the jobs are finished.
    StoreRestart { at: f64 },
    /// Stop the store for `down`, when `at` of the jobs are finished.
    StoreOutage { at: f64, down: Duration },
    /// Cut the workers' store connections every `every`.
    ConnKill { every: Duration },
}

/// What a scenario tolerates or demands beyond the common rules.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Expect {
    /// Jobs run more than once are reported but allowed (a worker died mid-job).
    pub(crate) duplicates_allowed: bool,
    /// Any takeover (a lease that ran out) fails the scenario.
    pub(crate) no_takeovers: bool,
    /// `hang`, `block` and `absurd` jobs may end dead; `absurd` ones may be parked.
    pub(crate) bad_handlers: bool,
    /// The p99 lag between a job's due time and its start must stay under this.
    pub(crate) max_p99_lag: Option<Duration>,
}

#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    /// What it shows, for the report.
    pub(crate) about: &'static str,
    pub(crate) mix: Mix,
    /// `max_attempts` of the `normal`/`fail_once` jobs when it differs from the kind's.
    pub(crate) normal_attempts: Option<u32>,
    pub(crate) workers: usize,
    pub(crate) concurrency: usize,
    pub(crate) lease: Duration,
    pub(crate) poll: Duration,
    pub(crate) grace: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) timeout: Option<Duration>,
    pub(crate) block: Duration,
    pub(crate) fault: Fault,
    /// Submit while the workers run, a chunk every `pace` (instead of a backlog first): the
    /// queue stays short, so a retried job is claimed again at once.
    pub(crate) pace: Option<Duration>,
    /// Workers and submitters run with shifted clocks (`clock_skew`): jobs are submitted by
    /// two submitter processes while the workers run, a chunk every 2 s each.
    pub(crate) skew: Option<Duration>,
    /// The Redis server keeps an append-only file synced at every write (it is restarted).
    pub(crate) durable_redis: bool,
    /// The jobs are the steps of workflows instead: diamonds of a root, this many steps
    /// after it, and a join after all of those (`jobs::submit_diamonds`).
    pub(crate) diamond: Option<usize>,
    /// Waiting ends when nothing changed for this long (what is left is reported).
    pub(crate) stall: Duration,
    /// Waiting ends after this whatever happens.
    pub(crate) deadline: Duration,
    pub(crate) expect: Expect,
}

impl Scenario {
    fn base(name: &'static str, about: &'static str, jobs: usize, length: Length) -> Self {
        Self {
            name,
            about,
            mix: Mix::only(Mode::Normal, jobs),
            normal_attempts: None,
            workers: 3,
            concurrency: 32,
            lease: Duration::from_secs(5),
            poll: Duration::from_millis(500),
            grace: Duration::from_millis(200),
            max_attempts: 10,
            timeout: None,
            block: Duration::from_secs(3),
            fault: Fault::None,
            pace: None,
            skew: None,
            durable_redis: false,
            diamond: None,
            stall: Duration::from_secs(20),
            deadline: match length {
                Length::Short => Duration::from_secs(240),
                Length::Long => Duration::from_secs(1800),
            },
            expect: Expect::default(),
        }
    }

    pub(crate) fn jobs(&self) -> usize {
        self.mix.total()
    }
}

/// The steps between a diamond workflow's root and its join.
const DIAMOND_WIDTH: usize = 1_000;

/// Every scenario, in the order they run.
pub(crate) fn all(length: Length, jobs: usize) -> Vec<Scenario> {
    let long = length == Length::Long;
    let fault_every = Duration::from_secs(2);
    let outage = if long {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(8)
    };
    vec![
        Scenario {
            fault: Fault::SigKill { every: fault_every },
            expect: Expect {
                duplicates_allowed: true,
                ..Expect::default()
            },
            ..Scenario::base(
                "sigkill",
                "SIGKILL a random worker every 2 s and start another: its jobs come back when their leases run out (duplicates allowed, reported)",
                jobs,
                length,
            )
        },
        Scenario {
            fault: Fault::SigKill { every: fault_every },
            diamond: Some(DIAMOND_WIDTH),
            // Whole diamonds: a root, the steps after it, a join.
            mix: Mix::only(
                Mode::Normal,
                (jobs / (DIAMOND_WIDTH + 2)).max(1) * (DIAMOND_WIDTH + 2),
            ),
            expect: Expect {
                duplicates_allowed: true,
                ..Expect::default()
            },
            ..Scenario::base(
                "workflow_sigkill",
                "diamond workflows (a root, 1,000 steps after it, a join after all of them) while a random worker is SIGKILLed every 2 s: every step runs, every join once all 1,000 before it succeeded (its handler checks, and ends dead otherwise), nothing left pending",
                jobs,
                length,
            )
        },
        Scenario {
            fault: Fault::SigTerm { every: fault_every },
            expect: Expect {
                no_takeovers: true,
                ..Expect::default()
            },
            ..Scenario::base(
                "sigterm",
                "SIGTERM a random worker every 2 s (shutdown with 200 ms of grace) and start another: nothing runs twice, no lease runs out",
                jobs,
                length,
            )
        },
        Scenario {
            // Two in a hundred retried attempts run 2 s, twice the lease: only heartbeats
            // keep their leases.
            mix: Mix::only(Mode::FailOnce, jobs).with_slow(Slow {
                per_mille: 20,
                ms: 2_000,
            }),
            lease: Duration::from_secs(1),
            // A backlog would put every retry behind it; streamed in, retries are claimed
            // again within milliseconds, while the heartbeats of their first attempt race.
            pace: Some(Duration::from_secs(1)),
            ..Scenario::base(
                "retry_storm",
                "every job fails its first attempt and is retried within 1 ms (2% of the retries then run 2 s, twice the lease), jobs streamed in a chunk a second, leases of 1 s so heartbeats race the retries: none cancelled, none run twice",
                jobs,
                length,
            )
        },
        Scenario {
            fault: Fault::StoreRestart { at: 0.3 },
            durable_redis: true,
            ..Scenario::base(
                "store_restart",
                "the store restarted mid-run (PostgreSQL pg_ctl restart -m fast; Redis SHUTDOWN and start, AOF appendfsync always): nothing lost",
                jobs,
                length,
            )
        },
        Scenario {
            fault: Fault::StoreOutage {
                at: 0.25,
                down: outage,
            },
            durable_redis: true,
            lease: Duration::from_secs(30),
            stall: Duration::from_secs(45),
            ..Scenario::base(
                "store_outage",
                "the store stopped for 8 s under 30 s leases: nothing lost, nothing run twice",
                jobs,
                length,
            )
        },
        Scenario {
            fault: Fault::ConnKill {
                every: Duration::from_secs(1),
            },
            ..Scenario::base(
                "conn_kill",
                "the workers' store connections cut every second (pg_terminate_backend; CLIENT KILL normal and pubsub): nothing lost, nothing run twice",
                jobs,
                length,
            )
        },
        Scenario {
            // The long jobs among a backlog of short ones, so their heartbeats share the
            // store with a steady stream of claims and finishes.
            mix: Mix::only(Mode::Long, 20).with(Mode::Normal, jobs / 2),
            lease: Duration::from_secs(2),
            stall: Duration::from_secs(15),
            expect: Expect {
                no_takeovers: true,
                ..Expect::default()
            },
            ..Scenario::base(
                "long_jobs",
                "20 jobs running 6 s, three times their 2 s lease, kept by heartbeats, among half the usual backlog of short jobs: no takeover, none run twice",
                jobs,
                length,
            )
        },
        Scenario {
            mix: Mix::only(Mode::Normal, jobs - jobs / 10).with(Mode::FailOnce, jobs / 10),
            skew: Some(Duration::from_secs(30)),
            stall: Duration::from_secs(45),
            expect: Expect {
                max_p99_lag: Some(Duration::from_secs(5)),
                ..Expect::default()
            },
            ..Scenario::base(
                "clock_skew",
                "workers and submitters 30 s off (one ahead, one behind, one on time), a tenth of the jobs fail once: all complete, none run twice, p99 start lag under 5 s",
                jobs,
                length,
            )
        },
        Scenario {
            mix: Mix::only(Mode::Normal, jobs)
                .with(Mode::Hang, 12)
                .with(Mode::Block, 6)
                .with(Mode::Absurd, 12),
            normal_attempts: Some(10),
            max_attempts: 2,
            timeout: Some(Duration::from_secs(1)),
            lease: Duration::from_secs(10),
            stall: Duration::from_secs(15),
            expect: Expect {
                bad_handlers: true,
                duplicates_allowed: true,
                ..Expect::default()
            },
            ..Scenario::base(
                "bad_handlers",
                "normal jobs among handlers that hang, block their thread, or ask for Duration::MAX (kind timeout 1 s, 2 attempts): normal jobs succeed, workers live, hangs end dead by timeout, absurd delays dead or parked",
                jobs,
                length,
            )
        },
    ]
}
