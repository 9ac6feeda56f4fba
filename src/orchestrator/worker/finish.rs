//! The finisher: what an attempt's outcome means for its job, and settling finished
//! attempts with the store in batches.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::fetch::{backend_backoff, start_claims, take_free_slots};
use super::{Done, PoolShared, stop};
use crate::job::{JobState, Payload, clamp_delay};
use crate::memory::{ExecutionRecord, OutcomeClass};
use crate::queue::Reserve;
use crate::state::{Finish, Transition, TransitionResult};
use crate::strategy::{Outcome, RetryPolicy};

/// Where an attempt's outcome takes its job, and how the execution is recorded; `None`
/// when there is nothing to report: the handler stopped because the claim was lost or the
/// pool handed the job back at shutdown (`why` says why its token fired, see [`stop`]).
///
/// A retry after the attempts are spent is dead; delays asked for (a retry's `after`, a
/// deferral) are clamped to [`MAX_DELAY`](crate::job::MAX_DELAY).
pub(super) fn finish_for(
    outcome: &Outcome,
    why: u8,
    attempt: u32,
    max_attempts: u32,
    retry: RetryPolicy,
) -> Option<(Finish, OutcomeClass)> {
    Some(match outcome {
        Outcome::Succeeded(value) => {
            let result = if value.is_null() {
                None
            } else {
                Payload::from_value(value).ok()
            };
            (Finish::Succeeded { result }, OutcomeClass::Succeeded)
        }
        Outcome::Retry { error, after } => {
            if attempt >= max_attempts {
                (
                    Finish::Dead {
                        error: format!("{error} (attempts exhausted: {attempt} of {max_attempts})"),
                    },
                    OutcomeClass::Failed,
                )
            } else {
                (
                    Finish::Retry {
                        delay: clamp_delay(after.unwrap_or_else(|| retry.delay(attempt))),
                        error: error.to_string(),
                    },
                    OutcomeClass::Retried,
                )
            }
        }
        Outcome::Failed(error) => (
            Finish::Dead {
                error: error.to_string(),
            },
            OutcomeClass::Failed,
        ),
        Outcome::Deferred { after, reason, .. } => (
            Finish::Defer {
                delay: clamp_delay(*after),
                reason: reason.clone(),
            },
            OutcomeClass::Deferred,
        ),
        // Only a cancel request (or the handler's own decision) ends a job cancelled: a
        // handler stopped by a lost lease or a shutdown reports nothing.
        Outcome::Cancelled(_) if why == stop::LEASE_LOST || why == stop::SHUTDOWN => return None,
        Outcome::Cancelled(reason) => (
            Finish::Cancelled {
                reason: reason.clone(),
            },
            OutcomeClass::Cancelled,
        ),
    })
}

/// How many finish round trips the finisher keeps in flight. With one, the store waits
/// while the worker handles an answer and the worker waits while the store works; with two
/// they overlap (the worker's next batch is sent while the store settles the last).
const TRIPS_IN_FLIGHT: usize = 2;

/// A finish round trip: the batch it carried, and the store's answer.
type Trip<'a> =
    futures_util::future::BoxFuture<'a, (Vec<Done>, crate::Result<Vec<TransitionResult>>)>;

/// Settle finished attempts in batches, up to [`TRIPS_IN_FLIGHT`] round trips at once (a
/// second one starts when a trip is under way and a quarter of a batch waits). A batch the
/// store cannot take now is kept and tried again (with later results added) until the
/// store answers: the jobs stay in the running set meanwhile, so their heartbeats go on and
/// their leases hold. A result is given up only when the store says the claim no longer
/// holds its job.
pub(super) async fn finish_loop(
    shared: Arc<PoolShared>,
    mut rx: mpsc::UnboundedReceiver<Done>,
    record_tx: mpsc::Sender<Vec<ExecutionRecord>>,
) {
    use futures_util::StreamExt;
    use futures_util::stream::FuturesUnordered;

    let max = shared.config.batch_size.max(1);
    let mut pending: Vec<Done> = Vec::with_capacity(max);
    let mut failures = 0u32;
    let mut trips: FuturesUnordered<Trip<'_>> = FuturesUnordered::new();
    // The executors' channel closed (the pool stopped): settle what is left, then end.
    let mut closed = false;
    loop {
        if pending.is_empty() && trips.is_empty() {
            if closed {
                break;
            }
            shared.finisher_idle.store(true, Ordering::Release);
            shared.kick.notify_one();
            let next = rx.recv().await;
            shared.finisher_idle.store(false, Ordering::Release);
            match next {
                Some(done) => {
                    shared.unsettled.fetch_sub(1, Ordering::AcqRel);
                    pending.push(done);
                }
                None => break,
            }
        }
        while pending.len() < max {
            match rx.try_recv() {
                Ok(done) => {
                    shared.unsettled.fetch_sub(1, Ordering::AcqRel);
                    pending.push(done);
                }
                Err(_) => break,
            }
        }
        let room = trips.len() < TRIPS_IN_FLIGHT && (trips.is_empty() || pending.len() >= max / 4);
        if !pending.is_empty() && room {
            let mut records = Vec::new();
            let batch = sort_results(&shared, &mut pending, &mut records);
            send_records(&shared, &record_tx, records);
            if !batch.is_empty() {
                trips.push(Box::pin(round_trip(&shared, batch, failures, max)));
            }
            continue;
        }
        // A trip is under way: wait for its answer, or for more results to send with the next.
        tokio::select! {
            Some((batch, answer)) = trips.next() => {
                let mut records = Vec::new();
                match answer {
                    Ok(results) if results.len() == batch.len() => {
                        if failures > 0 {
                            tracing::info!(worker = %shared.worker, "finished jobs accepted again");
                            failures = 0;
                        }
                        apply_finishes(&shared, batch, results, &mut records);
                    }
                    Ok(results) => {
                        tracing::error!(
                            expected = batch.len(),
                            got = results.len(),
                            "state store answered a finish batch with the wrong count; trying again"
                        );
                        failures += 1;
                        requeue(&mut pending, batch);
                        tokio::time::sleep(backend_backoff(failures)).await;
                    }
                    Err(err) => {
                        failures += 1;
                        if shared
                            .give_up_at
                            .lock()
                            .is_some_and(|at| Instant::now() >= at)
                        {
                            tracing::error!(error = %err, jobs = batch.len(), "the pool stopped and the store still refuses finishes: the jobs' leases will expire and they will run again");
                            let lost = batch.iter().chain(pending.iter()).filter(|d| d.record.is_some()).count();
                            shared
                                .records_dropped
                                .fetch_add(lost as u64, Ordering::Relaxed);
                            break;
                        }
                        let pause = backend_backoff(failures).min(Duration::from_secs(1));
                        tracing::warn!(error = %err, jobs = batch.len(), ?pause, "finish failed; keeping the results and their leases, and trying again");
                        requeue(&mut pending, batch);
                        tokio::time::sleep(pause).await;
                    }
                }
                send_records(&shared, &record_tx, records);
            }
            next = rx.recv(), if !closed && pending.len() < max => match next {
                Some(done) => {
                    shared.unsettled.fetch_sub(1, Ordering::AcqRel);
                    pending.push(done);
                }
                None => closed = true,
            },
            else => {}
        }
    }
}

/// Sort `pending` (emptied): results with nothing to report, and those of claims this pool
/// gave up (handed back at shutdown, or failed by the watchdog), leave without a round trip
/// (their execution records go to `records`); the rest are returned, to settle.
fn sort_results(
    shared: &PoolShared,
    pending: &mut Vec<Done>,
    records: &mut Vec<ExecutionRecord>,
) -> Vec<Done> {
    let mut batch: Vec<Done> = Vec::with_capacity(pending.len());
    let mut running = shared.running.lock();
    for done in pending.drain(..) {
        let held = running.contains_key(&done.key);
        if done.transition.is_none() || !held {
            if running.remove(&done.key).is_some() {
                shared.engine.running.remove([done.key]);
            }
            records.extend(done.record);
        } else {
            batch.push(done);
        }
    }
    batch
}

/// A batch the store did not take goes back before the results that came since.
fn requeue(pending: &mut Vec<Done>, mut batch: Vec<Done>) {
    batch.append(pending);
    *pending = batch;
}

/// One round trip: finish `batch`, and claim in the same call for the slots free now
/// (unless the store has been failing, or the pool is stopping).
async fn round_trip(
    shared: &Arc<PoolShared>,
    batch: Vec<Done>,
    failures: u32,
    max: usize,
) -> (Vec<Done>, crate::Result<Vec<TransitionResult>>) {
    let engine = &shared.engine;
    let transitions: Vec<Transition> = batch.iter().filter_map(|d| d.transition.clone()).collect();
    // The slots these results freed take their next jobs in the same round trip.
    // (Stopping is read under the gate: a shutdown stops, then takes the gate.)
    let gate = (failures == 0)
        .then(|| shared.claiming.try_read().ok())
        .flatten();
    let queues = shared.active_queues();
    let permits = if gate.is_some() && !shared.is_stopping() && !queues.is_empty() {
        take_free_slots(shared, shared.claim_size(max))
    } else {
        Vec::new()
    };
    let trip = Instant::now();
    let answer = if permits.is_empty() {
        engine.store.finish(transitions).await
    } else {
        let req = Reserve {
            worker: &shared.worker,
            queues: &queues,
            max: permits.len(),
            lease: shared.config.lease,
            wait: Duration::ZERO,
        };
        engine
            .store
            .finish_and_claim(transitions, &req)
            .await
            .map(|answer| {
                super::note(&shared.trip_micros, trip.elapsed());
                if let Some(err) = &answer.claim_error {
                    tracing::warn!(worker = %shared.worker, error = %err, "claim failed after a finish; the fetcher claims instead");
                }
                start_claims(shared, answer.claims, permits);
                answer.results
            })
    };
    drop(gate);
    (batch, answer)
}

/// Hand execution records to the recorder; when it is behind, they are counted as dropped.
fn send_records(
    shared: &PoolShared,
    record_tx: &mpsc::Sender<Vec<ExecutionRecord>>,
    records: Vec<ExecutionRecord>,
) {
    if records.is_empty() {
        return;
    }
    if let Err(full) = record_tx.try_send(records) {
        let lost = match full {
            mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r.len(),
        };
        shared
            .records_dropped
            .fetch_add(lost as u64, Ordering::Relaxed);
    }
}

/// The store's answers to a finish batch: the running set, and the execution records.
fn apply_finishes(
    shared: &PoolShared,
    batch: Vec<Done>,
    results: Vec<TransitionResult>,
    records: &mut Vec<ExecutionRecord>,
) {
    {
        let mut running = shared.running.lock();
        for done in &batch {
            running.remove(&done.key);
        }
        shared
            .engine
            .running
            .remove(batch.iter().map(|done| done.key));
    }
    for (done, result) in batch.into_iter().zip(results) {
        let Done {
            transition,
            attempt,
            record,
            ..
        } = done;
        let Some(transition) = transition else {
            continue;
        };
        match result {
            TransitionResult::Applied { state, .. } => {
                log_transition(&transition, attempt, state);
                if let Some(mut record) = record {
                    if state == JobState::Cancelled {
                        record.outcome = OutcomeClass::Cancelled;
                    }
                    records.push(record);
                }
            }
            TransitionResult::Conflict { current, reason } => {
                tracing::debug!(job_id = %transition.id, ?current, %reason, "finish refused (lease taken over or job released); result discarded");
                // The handler ran all the same: its execution is part of the history.
                records.extend(record);
            }
        }
    }
}

fn log_transition(transition: &Transition, attempt: u32, state: JobState) {
    match &transition.finish {
        Finish::Dead { error } => {
            tracing::warn!(job_id = %transition.id, attempt, %error, "job dead");
        }
        Finish::Retry { error, delay } => {
            tracing::debug!(job_id = %transition.id, attempt, %error, ?delay, "job will retry");
        }
        _ => {
            tracing::debug!(job_id = %transition.id, attempt, to = %state, "job finished")
        }
    }
}

/// How long a stopping pool keeps trying to finish the jobs it ran.
pub(super) const SHUTDOWN_FINISH_GRACE: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::JobError;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(3).with_base(Duration::from_millis(10))
    }

    #[test]
    fn a_handler_stopped_by_a_lost_lease_or_a_shutdown_reports_nothing() {
        let cancelled = Outcome::Cancelled("stopped".to_owned());
        assert!(finish_for(&cancelled, stop::LEASE_LOST, 1, 3, policy()).is_none());
        assert!(finish_for(&cancelled, stop::SHUTDOWN, 1, 3, policy()).is_none());
        for why in [stop::CANCEL_REQUESTED, stop::NONE] {
            assert!(matches!(
                finish_for(&cancelled, why, 1, 3, policy()),
                Some((Finish::Cancelled { .. }, OutcomeClass::Cancelled))
            ));
        }
    }

    #[test]
    fn absurd_delays_are_clamped() {
        let retry = Outcome::Retry {
            error: JobError::retryable("later"),
            after: Some(Duration::MAX),
        };
        let Some((Finish::Retry { delay, .. }, _)) = finish_for(&retry, stop::NONE, 1, 3, policy())
        else {
            panic!("a retry");
        };
        assert_eq!(delay, crate::job::MAX_DELAY);
        let defer = Outcome::Deferred {
            after: Duration::MAX,
            reason: "breaker open".to_owned(),
            class: "circuit_open".into(),
        };
        let Some((Finish::Defer { delay, .. }, _)) = finish_for(&defer, stop::NONE, 1, 3, policy())
        else {
            panic!("a deferral");
        };
        assert_eq!(delay, crate::job::MAX_DELAY);
    }

    #[test]
    fn a_retry_on_the_last_attempt_is_dead() {
        let retry = Outcome::Retry {
            error: JobError::retryable("boom"),
            after: None,
        };
        assert!(matches!(
            finish_for(&retry, stop::NONE, 3, 3, policy()),
            Some((Finish::Dead { .. }, OutcomeClass::Failed))
        ));
        assert!(matches!(
            finish_for(&retry, stop::NONE, 2, 3, policy()),
            Some((Finish::Retry { .. }, OutcomeClass::Retried))
        ));
    }
}
