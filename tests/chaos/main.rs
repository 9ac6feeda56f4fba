//! The chaos suite: jobforge's promises checked against real stores while processes die,
//! stores restart, connections are cut and clocks disagree.
//!
//! What is promised, the scenarios, the assertions and how to read the report:
//! `docs/reliability.md`. In short:
//!
//! ```text
//! JOBFORGE_CHAOS=short cargo test --all-features --test chaos     # 20,000 jobs per scenario
//! JOBFORGE_CHAOS=long  cargo test --all-features --test chaos     # the release-length run
//! JOBFORGE_CHAOS_ONLY=sigkill/redis ...                           # scenarios matching a substring
//! ```
//!
//! Without `JOBFORGE_CHAOS` the binary says why it skipped and passes. With it, a missing
//! prerequisite (`DATABASE_URL` unset or unreachable, no `redis-server`, no `initdb`, no
//! `faketime`) fails loudly.
//!
//! One binary, three roles (`JOBFORGE_CHAOS_ROLE`): the suite (default) re-executes itself
//! as `worker` processes, which run a worker pool on the store the environment names, and as
//! `submitter` processes, which submit jobs (under a skewed clock in `clock_skew`).

#[path = "../support/pg_cluster.rs"]
mod pg_cluster;
#[path = "../support/private_redis.rs"]
mod private_redis;

mod jobs;
mod ledger;
mod procs;
mod report;
mod roles;
mod scenarios;
mod store;
mod suite;
mod verify;

use std::process::ExitCode;

fn main() -> ExitCode {
    // `cargo test -- --list` (and test runners that ask) passes flags every test binary
    // gets; this one has no tests to list.
    if std::env::args().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    match std::env::var(roles::ROLE).ok().as_deref() {
        Some("worker") => roles::run_worker(),
        Some("submitter") => roles::run_submitter(),
        Some(other) => {
            eprintln!(
                "{}={other}: unknown role; use worker or submitter",
                roles::ROLE
            );
            ExitCode::FAILURE
        }
        None => suite::run(),
    }
}
