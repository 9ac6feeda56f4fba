//! The watchdog: a thread that recovers the slots of stuck handlers and reports a stalled
//! runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::execute::executor_loop;
use super::finish::finish_for;
use super::{Done, PoolShared, stop};
use crate::handler::JobError;
use crate::job::JobId;
use crate::state::Transition;
use crate::strategy::Outcome;

/// A thread of the pool's own that watches what its tasks cannot: an executor stuck in a
/// handler past its deadline (its slot is recovered), and a runtime that stopped running
/// tasks (a handler blocks the thread; logged with the jobs running longest).
pub(super) struct Watchdog {
    stop_tx: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    pub(super) fn start(shared: &Arc<PoolShared>) -> Option<Self> {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let weak = Arc::downgrade(shared);
        let spawned = std::thread::Builder::new()
            .name(format!("jobforge-watchdog-{}", shared.worker))
            .spawn(move || watch(&weak, &stop_rx));
        match spawned {
            Ok(_) => Some(Self { stop_tx }),
            Err(err) => {
                tracing::warn!(error = %err, "could not start the worker pool's watchdog thread; stuck handlers will not be detected");
                None
            }
        }
    }

    pub(super) fn stop(self) {
        let _ = self.stop_tx.send(());
    }
}

fn watch(weak: &std::sync::Weak<PoolShared>, stop_rx: &std::sync::mpsc::Receiver<()>) {
    let tick = Duration::from_millis(250);
    // A task posted to the runtime each tick; while one has not run, the runtime is stalled.
    let ran = Arc::new(AtomicBool::new(true));
    let mut posted_at = Instant::now();
    let mut warned = false;
    loop {
        match stop_rx.recv_timeout(tick) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let Some(shared) = weak.upgrade() else { return };
        if shared.is_stopping() && shared.jobs_tx.is_closed() {
            return;
        }
        recover_stuck(&shared);
        if ran.load(Ordering::Acquire) {
            if warned {
                tracing::info!(worker = %shared.worker, stalled = ?posted_at.elapsed(), "the runtime runs tasks again");
                warned = false;
            }
            ran.store(false, Ordering::Release);
            posted_at = Instant::now();
            let flag = Arc::clone(&ran);
            drop(shared.runtime.spawn(async move {
                flag.store(true, Ordering::Release);
            }));
        } else if !warned && posted_at.elapsed() >= shared.config.stall_threshold {
            warned = true;
            let mut longest: Vec<(Duration, JobId, String)> = shared
                .executor_slots
                .iter()
                .filter_map(|s| {
                    s.busy
                        .lock()
                        .as_ref()
                        .map(|b| (b.started.elapsed(), b.key.0, b.job.get().kind.clone()))
                })
                .collect();
            longest.sort_by_key(|b| std::cmp::Reverse(b.0));
            longest.truncate(3);
            let jobs: Vec<String> = longest
                .iter()
                .map(|(d, id, kind)| format!("{id} ({kind}, running {d:?})"))
                .collect();
            tracing::error!(
                worker = %shared.worker,
                stalled = ?posted_at.elapsed(),
                running_longest = %jobs.join(", "),
                "the runtime has not run a task for a while: a handler is blocking its thread (use spawn_blocking for synchronous work)"
            );
        }
    }
}

/// Fail the attempts whose handlers are still running past their deadline and grace, and
/// give their slots to new executors, so the pool keeps its concurrency.
fn recover_stuck(shared: &Arc<PoolShared>) {
    let now = Instant::now();
    for (slot, s) in shared.executor_slots.iter().enumerate() {
        let stuck = {
            let mut busy = s.busy.lock();
            let overdue = busy
                .as_ref()
                .is_some_and(|b| b.recover_at.is_some_and(|at| at <= now));
            if !overdue {
                continue;
            }
            s.generation.fetch_add(1, Ordering::AcqRel);
            busy.take()
        };
        let Some(stuck) = stuck else { continue };
        let Some(done_tx) = shared.done_tx.lock().clone() else {
            return;
        };
        let held = shared.running.lock().contains_key(&stuck.key);
        let grace = shared.config.timeout_grace;
        let timeout = stuck.timeout.unwrap_or_default();
        tracing::error!(
            job_id = %stuck.key.0,
            kind = %stuck.job.get().kind,
            ?timeout,
            ?grace,
            "a handler did not stop after its deadline (it blocks its thread or ignores cancellation); failing the attempt and replacing its executor"
        );
        if held {
            let outcome = Outcome::Retry {
                error: JobError::retryable(format!(
                    "attempt timed out after {timeout:?} and its handler did not stop within {grace:?} more (it blocks its thread or ignores cancellation)"
                ))
                .with_class("timeout"),
                after: None,
            };
            let finish = finish_for(
                &outcome,
                stop::NONE,
                stuck.attempt,
                stuck.max_attempts,
                shared.engine.retry_for(&stuck.job.get().kind),
            )
            .map(|(finish, _)| finish);
            shared.send_done(
                &done_tx,
                Done {
                    key: stuck.key,
                    transition: finish.map(|finish| Transition {
                        id: stuck.key.0,
                        worker: shared.worker.clone(),
                        token: stuck.key.1,
                        finish,
                    }),
                    attempt: stuck.attempt,
                    record: None,
                },
            );
        }
        if let Some(r) = shared.running.lock().get(&stuck.key) {
            r.stop.fire(stop::LEASE_LOST);
        }
        // The stuck executor keeps its permit until it returns (then forgets it): this one
        // is the new executor's.
        shared.slots.add_permits(1);
        let generation = s.generation.load(Ordering::Acquire);
        let handle =
            shared
                .runtime
                .spawn(executor_loop(Arc::clone(shared), slot, generation, done_tx));
        if let Some(old) = shared.executors.lock().get_mut(slot) {
            *old = handle;
        }
    }
}
