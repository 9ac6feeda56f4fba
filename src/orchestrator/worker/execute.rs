//! The executors: each runs claimed jobs one at a time, through the job's strategy, under
//! its deadline.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::finish::finish_for;
use super::{Assigned, Busy, Done, PoolShared, StopSignal, stop};
use crate::handler::{JobContext, JobError};
use crate::memory::{ExecutionRecord, OutcomeClass};
use crate::orchestrator::kind::KindConfig;
use crate::state::Transition;
use crate::strategy::{Outcome, RetryPolicy};

/// One executor: runs claimed jobs one at a time until the pool closes its channel, or until
/// the watchdog gives its slot to a new executor (this one was stuck in a handler).
pub(super) async fn executor_loop(
    shared: Arc<PoolShared>,
    slot: usize,
    generation: u64,
    done_tx: mpsc::UnboundedSender<Done>,
) {
    let Some(me) = shared.executor_slots.get(slot) else {
        return;
    };
    while let Ok(job) = shared.jobs_rx.recv().await {
        // (No wake-up of the fetcher from here: a task woken on this thread waits in its
        // LIFO slot, which no other thread may steal, for as long as the handler about to
        // run blocks the thread. Every job run sends a result, and the finisher's round trip
        // for it claims.)
        let Assigned { ctx, permit, stop } = job;
        let record = ctx.record();
        // The kind's settings, looked up once for the job's deadline, retries and strategy.
        let kind = shared.engine.kinds.get(&record.kind);
        let timeout = shared.timeout_for(record, kind);
        let started = Instant::now();
        let key = (record.id, record.version);
        *me.busy.lock() = Some(Busy {
            key,
            job: ctx.shared_record(),
            started,
            recover_at: timeout
                .and_then(|t| started.checked_add(t.saturating_add(shared.config.timeout_grace))),
            attempt: record.attempt,
            max_attempts: record.max_attempts,
            timeout,
        });
        let span = tracing::info_span!(
            "job",
            id = %ctx.id(),
            kind = %ctx.kind(),
            queue = %record.queue,
            attempt = ctx.attempt(),
            worker = %shared.worker,
            outcome = tracing::field::Empty,
        );
        // The attempt is a span of the trace that submitted the job (feature `otel`).
        #[cfg(feature = "otel")]
        if let Some(traceparent) = record.traceparent.as_deref() {
            crate::otel::set_parent(&span, traceparent);
        }
        let attempt_span = span.clone();
        let (id, attempt, max_attempts) = (record.id, record.attempt, record.max_attempts);
        let retry = shared.engine.retry_of(kind);
        let done = AssertUnwindSafe(run_job(&shared, ctx, kind, stop, timeout, retry))
            .catch_unwind()
            .instrument(span)
            .await
            .unwrap_or_else(|panic| {
                // A fault of the engine's own after the handler ran: the attempt fails like a
                // panicking handler's would, and the executor lives on.
                let message = panic_message(&*panic);
                tracing::error!(job_id = %id, %message, "the worker failed running a job; the attempt fails");
                let outcome = Outcome::Retry {
                    error: JobError::retryable(format!("the worker failed running the job: {message}"))
                        .with_class("panic"),
                    after: None,
                };
                let finish = finish_for(&outcome, stop::NONE, attempt, max_attempts, retry)
                    .map(|(finish, _)| finish);
                Done {
                    key,
                    transition: finish.map(|finish| Transition {
                        id,
                        worker: shared.worker.clone(),
                        token: key.1,
                        finish,
                    }),
                    attempt,
                    record: None,
                }
            });
        attempt_span.record("outcome", outcome_name(&done));
        drop(attempt_span);
        super::note(&shared.job_micros, started.elapsed());
        {
            let mut busy = me.busy.lock();
            if me.generation.load(Ordering::Acquire) != generation {
                // The watchdog failed this job and gave the slot to a new executor while this
                // one was stuck: its result is not wanted, and its permit is the new one's.
                drop(busy);
                permit.forget();
                return;
            }
            *busy = None;
        }
        // The slot frees before the result reaches the finisher, so the finisher's round
        // trip can claim the slot's next job with it.
        drop(permit);
        shared.send_done(&done_tx, done);
    }
}

/// What an attempt came to, for its span: the finish it asks for, or `none` (its claim was
/// lost, or the job was handed back).
fn outcome_name(done: &Done) -> &'static str {
    use crate::state::Finish;
    match done.transition.as_ref().map(|t| &t.finish) {
        None => "none",
        Some(Finish::Succeeded { .. }) => "succeeded",
        Some(Finish::Retry { .. }) => "retry",
        Some(Finish::Defer { .. }) => "deferred",
        Some(Finish::Dead { .. }) => "dead",
        Some(Finish::Cancelled { .. }) => "cancelled",
        Some(Finish::Release { .. }) => "released",
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".to_owned())
}

async fn run_job(
    shared: &PoolShared,
    ctx: JobContext,
    kind: Option<&KindConfig>,
    stop: StopSignal,
    timeout: Option<Duration>,
    retry: RetryPolicy,
) -> Done {
    let engine = &shared.engine;
    let record = ctx.record();
    let id = record.id;
    let token = record.version;
    let attempt = record.attempt;
    let max_attempts = record.max_attempts;
    let strategy = engine.strategy_for(record, kind);
    let started = Instant::now();
    let outcome = match kind {
        None => Outcome::Retry {
            error: JobError::retryable(format!(
                "no handler for kind `{}` on worker {}; it will be retried in case a worker that has one takes it",
                record.kind, shared.worker
            ))
            .with_class("unknown_kind"),
            after: None,
        },
        Some(kind) => {
            let run = AssertUnwindSafe(strategy.run(&ctx, kind.handler.as_ref())).catch_unwind();
            let result = match timeout {
                Some(limit) => match tokio::time::timeout(limit, run).await {
                    Ok(r) => r,
                    Err(_) => Ok(Outcome::from_result(Err(JobError::timeout(limit)))),
                },
                None => run.await,
            };
            match result {
                Ok(outcome) => outcome,
                Err(panic) => Outcome::Retry {
                    error: JobError::retryable(format!(
                        "handler panicked: {}",
                        panic_message(&*panic)
                    ))
                    .with_class("panic"),
                    after: None,
                },
            }
        }
    };
    let duration = started.elapsed();
    let why = stop.why();
    let mapped = finish_for(&outcome, why, attempt, max_attempts, retry);
    let record = shared.config.record_executions.then(|| ExecutionRecord {
        job_id: id,
        kind: record.kind.clone(),
        strategy: strategy.name().to_owned(),
        outcome: mapped
            .as_ref()
            .map_or(OutcomeClass::Cancelled, |(_, class)| *class),
        duration,
        attempt,
        inline_retries: ctx.inline_retries(),
        error_class: outcome.error_class().map(str::to_owned),
        at: Utc::now(),
        decision: ctx.decision(),
    });
    Done {
        key: (id, token),
        transition: mapped.map(|(finish, _)| Transition {
            id,
            worker: shared.worker.clone(),
            token,
            finish,
        }),
        attempt,
        record,
    }
}
