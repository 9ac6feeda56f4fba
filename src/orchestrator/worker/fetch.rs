//! The fetcher: claims due jobs for the executors when nothing else will (the finisher's
//! round trips claim for the slots its results free), waiting for work when there is none,
//! and hands them to the executors.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::{Assigned, FetcherStep, PoolShared, Running, StopSignal};
use crate::handler::JobContext;
use crate::orchestrator::kind::KindConfig;
use crate::queue::Reserve;
use crate::state::Claim;

/// Back-off for a failing backend: 50 ms doubling to 5 s, with jitter.
pub(super) fn backend_backoff(failures: u32) -> Duration {
    let ceiling = Duration::from_millis(50).saturating_mul(1 << failures.min(7));
    let ceiling = ceiling.min(Duration::from_secs(5));
    ceiling / 2 + Duration::from_micros(fastrand::u64(0..=(ceiling.as_micros() as u64 / 2)))
}

pub(super) async fn fetch_loop(shared: Arc<PoolShared>) {
    let engine = Arc::clone(&shared.engine);
    let mut failures = 0u32;
    let batch = shared.config.batch_size;
    let mut epoch = shared.queues_epoch.subscribe();
    loop {
        let first = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            permit = Arc::clone(&shared.slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        epoch.borrow_and_update();
        let queues = shared.active_queues();
        let step = if !shared
            .queues_known
            .load(std::sync::atomic::Ordering::Acquire)
        {
            // Not before the paused queues were read once (a paused queue is not claimed
            // from at start either).
            FetcherStep::Wait
        } else if queues.is_empty() {
            // Every queue of this pool is paused: look again when one comes back.
            FetcherStep::Wait
        } else {
            shared.fetcher_step()
        };
        if step != FetcherStep::Claim {
            // Jobs wait in the buffer, or the finisher's next round trip claims: a claim
            // now would only carry fewer jobs. Look again when the finisher goes idle; and,
            // while the pool fills up, in a millisecond: nothing else would say when the
            // executors took the buffer's jobs (an executor wakes nothing: see
            // `executor_loop`). The poll wait is a safety net, not the path.
            drop(first);
            let pause = if step == FetcherStep::Filling {
                Duration::from_millis(1)
            } else {
                shared.config.poll_wait
            };
            tokio::select! {
                biased;
                () = shared.stop.cancelled() => break,
                () = shared.kick.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
            continue;
        }
        let mut permits = vec![first];
        permits.extend(take_free_slots(
            &shared,
            shared.claim_size(batch.saturating_sub(1)),
        ));
        let req = Reserve {
            worker: &shared.worker,
            queues: &queues,
            max: permits.len(),
            lease: shared.config.lease,
            wait: shared.config.poll_wait,
        };
        // Reserve and claim in one step. A shutdown lets a claim under way land (a store's
        // claim waits for work at most the poll wait) and starts what it took like any
        // claim, so the shutdown's own hand-back covers it: nothing is left to a store's
        // hand-back racing the process's exit.
        let claim = engine.store.claim_due(&req);
        tokio::pin!(claim);
        let claims = tokio::select! {
            biased;
            r = &mut claim => r,
            // A queue was paused (or resumed) while the claim waited for work: stop waiting
            // (claims are cancel-safe) and claim again with the queues as they are now.
            Ok(()) = epoch.changed() => continue,
            () = shared.stop.cancelled() => {
                let landing = shared.config.poll_wait.saturating_add(Duration::from_secs(5));
                if let Ok(Ok(claims)) = tokio::time::timeout(landing, &mut claim).await {
                    start_claims(&shared, claims, permits);
                }
                break;
            }
        };
        match claims {
            Ok(claims) => {
                if failures > 0 {
                    tracing::info!(worker = %shared.worker, "store reachable again");
                }
                failures = 0;
                start_claims(&shared, claims, permits);
            }
            Err(err) => {
                failures += 1;
                let pause = backend_backoff(failures);
                tracing::warn!(worker = %shared.worker, error = %err, ?pause, "claim failed; backing off");
                tokio::select! {
                    () = shared.stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// Up to `max` free slots, taken now (none when every slot is held).
pub(super) fn take_free_slots(
    shared: &PoolShared,
    max: usize,
) -> Vec<tokio::sync::OwnedSemaphorePermit> {
    let mut permits = Vec::new();
    while permits.len() < max {
        match Arc::clone(&shared.slots).try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
    permits
}

/// Register what a claim took and hand it to the executors, each job with one of `permits`.
/// Each claim is keyed by its token, the record's version as the claim returned it.
pub(super) fn start_claims(
    shared: &Arc<PoolShared>,
    claims: Vec<Claim>,
    mut permits: Vec<OwnedSemaphorePermit>,
) {
    let mut assigned = Vec::with_capacity(claims.len());
    {
        let mut running = shared.running.lock();
        for claim in claims {
            let record = match claim {
                Claim::Claimed(record) => record,
                Claim::Exhausted { id, reason } => {
                    tracing::warn!(job_id = %id, %reason, "dead: worker lost with no attempts left");
                    continue;
                }
                Claim::Cancelled { id, reason } => {
                    tracing::info!(job_id = %id, %reason, "cancelled: its worker was lost after a cancel request");
                    continue;
                }
                Claim::NotDue { .. } | Claim::Skipped { .. } => continue,
            };
            let Some(permit) = permits.pop() else {
                // claim_due answers at most `max` (= permits); the lease will expire and the
                // job will be taken over.
                tracing::error!(job_id = %record.id, "more claims than asked for; leaving the job to its lease");
                continue;
            };
            let stop = StopSignal::new();
            running.insert(
                (record.id, record.version),
                Running {
                    attempt: record.attempt,
                    stop: stop.clone(),
                },
            );
            let idempotent = shared
                .engine
                .kinds
                .get(&record.kind)
                .is_some_and(KindConfig::is_idempotent);
            let store: Arc<dyn crate::state::StateManager> = shared.engine.store.clone();
            let ctx = JobContext::new(
                record,
                shared.worker.clone(),
                Arc::clone(&shared.engine.memory),
                stop.token.clone(),
            )
            .with_idempotent(idempotent)
            .with_store(store);
            assigned.push(Assigned { ctx, permit, stop });
        }
        // Reachable by a cancel from this process from now on, until the claim is let go.
        shared.engine.running.register(
            assigned
                .iter()
                .map(|a| (a.ctx.id(), a.ctx.record().version, &a.stop)),
        );
    }
    for job in assigned {
        // Never full: every job holds one of `concurrency` slots, and the channel has room
        // for as many. Closed only at shutdown, after the fetcher stopped.
        if let Err(err) = shared.jobs_tx.try_send(job) {
            let job = err.into_inner();
            tracing::error!(job_id = %job.ctx.id(), "no executor took the job; its lease will expire and it will be delivered again");
            let key = (job.ctx.id(), job.ctx.record().version);
            let mut running = shared.running.lock();
            if running.remove(&key).is_some() {
                shared.engine.running.remove([key]);
            }
        }
    }
}
