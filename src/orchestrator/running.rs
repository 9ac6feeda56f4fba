//! What the worker pools of this process run, as the engine sees it: the stop signal of
//! every attempt under way, by job, so a cancel reaches a running job at once; and the
//! names of the pools still running. The engine owns the registry and cancels through it;
//! the worker registers its attempts into it. Neither names the other.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio_util::sync::CancellationToken;

use crate::job::{JobId, WorkerId};

/// Why a running job's cancellation token fired, so its outcome is read rightly: only a
/// cancel request ends a job `cancelled`.
pub(crate) mod stop {
    /// Not fired (a handler that reports itself cancelled decided so on its own).
    pub(crate) const NONE: u8 = 0;
    /// Someone asked to cancel the job.
    pub(crate) const CANCEL_REQUESTED: u8 = 1;
    /// The claim no longer holds the job: its result is not this worker's to report.
    pub(crate) const LEASE_LOST: u8 = 2;
    /// The pool shut down and handed the job back.
    pub(crate) const SHUTDOWN: u8 = 3;
}

/// The handle on a running job its token's firing goes through: the token and why it fired.
#[derive(Clone)]
pub(crate) struct StopSignal {
    pub(crate) token: CancellationToken,
    why: Arc<AtomicU8>,
}

impl StopSignal {
    pub(crate) fn new() -> Self {
        Self {
            token: CancellationToken::new(),
            why: Arc::new(AtomicU8::new(stop::NONE)),
        }
    }

    /// Fire with `why`; the first reason given is kept.
    pub(crate) fn fire(&self, why: u8) {
        let _ = self
            .why
            .compare_exchange(stop::NONE, why, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    pub(crate) fn why(&self) -> u8 {
        self.why.load(Ordering::Acquire)
    }
}

/// The attempts of one job under way in this process, each under the token its claim
/// returned (no two claims of a job share one). Nearly always one; two when an attempt
/// whose lease expired awaits its finish while the next runs, in one pool or two.
struct Attempts {
    token: u64,
    stop: StopSignal,
    /// The others; empty, so never allocated, in the common case.
    more: Vec<(u64, StopSignal)>,
}

/// The registry: running attempts by job, and the names of the running pools.
///
/// An attempt is registered when its claim lands and removed when its pool lets go of the
/// claim (the finish is settled, the job handed back, or the pool is gone), under its
/// `(job, token)`: an entry is only ever removed by the attempt that added it, never by an
/// earlier or later attempt of the same job. One lock, taken once per claim batch, finish
/// batch and cancel.
#[derive(Default)]
pub(crate) struct RunningJobs {
    attempts: parking_lot::Mutex<HashMap<JobId, Attempts, foldhash::fast::RandomState>>,
    /// Pools of this process by name, with their stop token (fired when they stop).
    pools: parking_lot::Mutex<Vec<(WorkerId, CancellationToken)>>,
}

impl RunningJobs {
    /// Register attempts under way: `(job, token, stop)` each.
    pub(crate) fn register<'a>(
        &self,
        attempts: impl IntoIterator<Item = (JobId, u64, &'a StopSignal)>,
    ) {
        let mut map = self.attempts.lock();
        for (id, token, stop) in attempts {
            match map.entry(id) {
                Entry::Vacant(free) => {
                    free.insert(Attempts {
                        token,
                        stop: stop.clone(),
                        more: Vec::new(),
                    });
                }
                Entry::Occupied(mut taken) => {
                    let taken = taken.get_mut();
                    if taken.token == token {
                        taken.stop = stop.clone();
                    } else if let Some(other) = taken.more.iter_mut().find(|(t, _)| *t == token) {
                        other.1 = stop.clone();
                    } else {
                        taken.more.push((token, stop.clone()));
                    }
                }
            }
        }
    }

    /// Remove the attempts `(job, token)` that ended; an attempt not (or no longer)
    /// registered under that token is left alone.
    pub(crate) fn remove(&self, attempts: impl IntoIterator<Item = (JobId, u64)>) {
        let mut map = self.attempts.lock();
        for (id, token) in attempts {
            let Entry::Occupied(mut entry) = map.entry(id) else {
                continue;
            };
            let job = entry.get_mut();
            if job.token == token {
                match job.more.pop() {
                    Some((next, stop)) => {
                        job.token = next;
                        job.stop = stop;
                    }
                    None => {
                        entry.remove();
                    }
                }
            } else if let Some(at) = job.more.iter().position(|(t, _)| *t == token) {
                job.more.swap_remove(at);
            }
        }
    }

    /// Someone asked to cancel job `id`: fire the tokens of its attempts running in this
    /// process. Returns how many there were.
    pub(crate) fn cancel(&self, id: JobId) -> usize {
        let map = self.attempts.lock();
        let Some(job) = map.get(&id) else { return 0 };
        job.stop.fire(stop::CANCEL_REQUESTED);
        for (_, stop) in &job.more {
            stop.fire(stop::CANCEL_REQUESTED);
        }
        1 + job.more.len()
    }

    /// How many attempts are registered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.attempts
            .lock()
            .values()
            .map(|job| 1 + job.more.len())
            .sum()
    }

    /// Take the name `worker` for a pool that runs until `stop` fires; `false` if a pool of
    /// this process that has not stopped has it already.
    pub(crate) fn add_pool(&self, worker: &WorkerId, stop: &CancellationToken) -> bool {
        let mut pools = self.pools.lock();
        pools.retain(|(_, stop)| !stop.is_cancelled());
        if pools.iter().any(|(name, _)| name == worker) {
            return false;
        }
        pools.push((worker.clone(), stop.clone()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_reaches_every_attempt_of_its_job_and_no_other() {
        let running = RunningJobs::default();
        let (a, b) = (JobId::new(), JobId::new());
        let (a1, b1) = (StopSignal::new(), StopSignal::new());
        running.register([(a, 1, &a1), (b, 7, &b1)]);
        assert_eq!(running.len(), 2);

        assert_eq!(running.cancel(a), 1);
        assert!(a1.token.is_cancelled());
        assert_eq!(a1.why(), stop::CANCEL_REQUESTED);
        assert!(!b1.token.is_cancelled());
        assert_eq!(b1.why(), stop::NONE);
        assert_eq!(running.cancel(JobId::new()), 0);

        // A second attempt of `a` (the first awaits its finish): both are reached.
        let a2 = StopSignal::new();
        running.register([(a, 2, &a2)]);
        assert_eq!(running.cancel(a), 2);
        assert_eq!(a2.why(), stop::CANCEL_REQUESTED);
    }

    #[test]
    fn the_first_reason_a_token_fired_for_is_kept() {
        let running = RunningJobs::default();
        let id = JobId::new();
        let lost = StopSignal::new();
        running.register([(id, 1, &lost)]);
        lost.fire(stop::LEASE_LOST);
        running.cancel(id);
        assert_eq!(lost.why(), stop::LEASE_LOST);
    }

    #[test]
    fn an_attempt_is_removed_only_by_its_own_token() {
        let running = RunningJobs::default();
        let id = JobId::new();
        let (first, second) = (StopSignal::new(), StopSignal::new());
        running.register([(id, 1, &first), (id, 2, &second)]);

        // A token no attempt holds removes nothing.
        running.remove([(id, 3), (JobId::new(), 1)]);
        assert_eq!(running.len(), 2);

        // The earlier attempt ends: the later one is still reached by a cancel.
        running.remove([(id, 1)]);
        assert_eq!(running.len(), 1);
        assert_eq!(running.cancel(id), 1);
        assert!(second.token.is_cancelled());
        assert!(!first.token.is_cancelled());

        // Removing the earlier attempt again (a late duplicate) leaves the later one.
        running.remove([(id, 1)]);
        assert_eq!(running.len(), 1);
        running.remove([(id, 2)]);
        assert_eq!(running.len(), 0);
        assert_eq!(running.cancel(id), 0);

        // The later attempt ends first: the earlier one stays, then goes.
        running.register([(id, 1, &first), (id, 2, &second)]);
        running.remove([(id, 2)]);
        assert_eq!(running.len(), 1);
        running.remove([(id, 1)]);
        assert_eq!(running.len(), 0);
    }

    #[test]
    fn nothing_is_left_once_every_attempt_ended() {
        let running = RunningJobs::default();
        let signals: Vec<(JobId, u64, StopSignal)> = (0..1000u64)
            .map(|i| (JobId::new(), i % 3 + 1, StopSignal::new()))
            .collect();
        running.register(signals.iter().map(|(id, t, s)| (*id, *t, s)));
        // Registering an attempt twice keeps one entry.
        running.register(signals.iter().take(10).map(|(id, t, s)| (*id, *t, s)));
        assert_eq!(running.len(), 1000);
        running.remove(signals.iter().map(|(id, t, _)| (*id, *t)));
        assert_eq!(running.len(), 0);
        assert!(running.attempts.lock().is_empty());
    }

    #[test]
    fn a_pool_name_is_free_again_once_its_pool_stopped() {
        let running = RunningJobs::default();
        let name = WorkerId::new("host-1");
        let first = CancellationToken::new();
        assert!(running.add_pool(&name, &first));
        assert!(!running.add_pool(&name, &CancellationToken::new()));
        assert!(running.add_pool(&WorkerId::new("host-2"), &CancellationToken::new()));
        first.cancel();
        assert!(running.add_pool(&name, &CancellationToken::new()));
    }
}
