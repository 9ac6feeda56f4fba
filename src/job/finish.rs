//! The meaning of a finish, defined once: where each kind of [`Finish`] takes a running job,
//! what it writes on the record and in the history. The in-memory store and Redis's
//! Rust-side settle call [`Finish::effect`]; the Redis finish script and the PostgreSQL
//! statement do the same, and a contract test compares every store with
//! [`JobRecord::finished`] field by field.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{JobEvent, JobRecord, JobState, Payload, WorkerId, after};

/// Where a finished attempt leaves the job.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Done, with the handler's result.
    Succeeded {
        /// The result (`None` for no result).
        result: Option<Payload>,
    },
    /// Failed, to be tried again `delay` from now by the store's clock. The attempt is spent.
    Retry {
        /// How long to wait before trying again.
        delay: Duration,
        /// What went wrong.
        error: String,
    },
    /// Put back without spending the attempt, due `delay` from now by the store's clock (a
    /// safety layer deferred it, or the handler asked).
    Defer {
        /// How long to wait.
        delay: Duration,
        /// Why.
        reason: String,
    },
    /// Failed for good.
    Dead {
        /// What went wrong.
        error: String,
    },
    /// Stopped at someone's request.
    Cancelled {
        /// Why.
        reason: String,
    },
    /// Handed back unfinished (worker shutting down); the attempt is not spent; due now.
    Release {
        /// Why.
        reason: String,
    },
}

impl Finish {
    /// The state the job moves to.
    #[must_use]
    pub fn target(&self) -> JobState {
        match self {
            Finish::Succeeded { .. } => JobState::Succeeded,
            Finish::Retry { .. } | Finish::Defer { .. } | Finish::Release { .. } => {
                JobState::Queued
            }
            Finish::Dead { .. } => JobState::Dead,
            Finish::Cancelled { .. } => JobState::Cancelled,
        }
    }
}

/// What a [`Finish`] does to a running job (see [`Finish::effect`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FinishEffect<'a> {
    /// The state it moves to.
    pub to: JobState,
    /// Its attempt count after (a deferral or release gives the attempt back).
    pub attempt: u32,
    /// When it is due again, when it goes back to its queue.
    pub run_at: Option<DateTime<Utc>>,
    /// The error it now records as its last, if it records one.
    pub last_error: Option<&'a str>,
    /// The handler's result it now keeps, if any.
    pub result: Option<&'a Payload>,
    /// The reason its history gives for the move.
    pub reason: Option<&'a str>,
}

/// The reason a put-back turned into a cancel gives.
const CANCELLED_BY_REQUEST: &str = "cancelled by request";

impl Finish {
    /// What this finish does to a running job at `attempt`, now: a retry or deferral is due
    /// again `delay` from `now` (a deferral and a release give the attempt back); a cancel
    /// asked for while the job ran wins over putting it back (it ends `cancelled`, "cancelled
    /// by request").
    ///
    /// ```
    /// use std::time::Duration;
    /// use jobforge::state::Finish;
    /// use jobforge::JobState;
    ///
    /// let now = chrono::Utc::now();
    /// let retry = Finish::Retry { delay: Duration::from_secs(5), error: "503".into() };
    /// let e = retry.effect(2, false, now);
    /// assert_eq!((e.to, e.attempt, e.last_error), (JobState::Queued, 2, Some("503")));
    /// assert_eq!(e.run_at, Some(now + chrono::Duration::seconds(5)));
    /// let e = retry.effect(2, true, now);
    /// assert_eq!((e.to, e.reason), (JobState::Cancelled, Some("cancelled by request")));
    /// ```
    #[must_use]
    pub fn effect(
        &self,
        attempt: u32,
        cancel_requested: bool,
        now: DateTime<Utc>,
    ) -> FinishEffect<'_> {
        let mut effect = FinishEffect {
            to: self.target(),
            attempt,
            run_at: None,
            last_error: None,
            result: None,
            reason: None,
        };
        if cancel_requested && effect.to == JobState::Queued {
            effect.to = JobState::Cancelled;
            effect.reason = Some(CANCELLED_BY_REQUEST);
            return effect;
        }
        match self {
            Finish::Succeeded { result } => effect.result = result.as_ref(),
            Finish::Retry { delay, error } => {
                effect.run_at = Some(after(now, *delay));
                effect.last_error = Some(error);
                effect.reason = Some(error);
            }
            Finish::Defer { delay, reason } => {
                effect.run_at = Some(after(now, *delay));
                effect.attempt = attempt.saturating_sub(1);
                effect.reason = Some(reason);
            }
            Finish::Release { reason } => {
                effect.run_at = Some(now);
                effect.attempt = attempt.saturating_sub(1);
                effect.reason = Some(reason);
            }
            Finish::Dead { error } => {
                effect.last_error = Some(error);
                effect.reason = Some(error);
            }
            Finish::Cancelled { reason } => effect.reason = Some(reason),
        }
        effect
    }
}

impl JobRecord {
    /// This running record after `finish` by `worker` at `now`, and the history event it
    /// adds: the one definition each store's finish is compared with.
    #[must_use]
    pub fn finished(
        &self,
        finish: &Finish,
        worker: &WorkerId,
        now: DateTime<Utc>,
    ) -> (JobRecord, JobEvent) {
        let effect = finish.effect(self.attempt, self.cancel_requested, now);
        let mut next = self.clone();
        next.state = effect.to;
        next.attempt = effect.attempt;
        if let Some(run_at) = effect.run_at {
            next.run_at = run_at;
        }
        if let Some(error) = effect.last_error {
            next.last_error = Some(error.to_owned());
        }
        if let Some(result) = effect.result {
            next.result = Some(result.clone());
        }
        next.updated_at = now;
        next.lease_owner = None;
        next.lease_expires_at = None;
        next.version += 1;
        if effect.to.is_terminal() {
            next.finished_at = Some(now);
        }
        let event = JobEvent {
            job_id: self.id,
            at: now,
            from: Some(JobState::Running),
            to: effect.to,
            attempt: effect.attempt,
            worker: Some(worker.clone()),
            reason: effect.reason.map(str::to_owned),
        };
        (next, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finish_has_one_meaning() {
        let now = Utc::now();
        let d = Duration::from_secs(7);
        let at = Some(now + chrono::Duration::seconds(7));
        let cases = [
            (
                Finish::Succeeded { result: None },
                JobState::Succeeded,
                3,
                None,
            ),
            (
                Finish::Retry {
                    delay: d,
                    error: "e".into(),
                },
                JobState::Queued,
                3,
                at,
            ),
            (
                Finish::Defer {
                    delay: d,
                    reason: "r".into(),
                },
                JobState::Queued,
                2,
                at,
            ),
            (
                Finish::Release { reason: "r".into() },
                JobState::Queued,
                2,
                Some(now),
            ),
            (Finish::Dead { error: "e".into() }, JobState::Dead, 3, None),
            (
                Finish::Cancelled { reason: "r".into() },
                JobState::Cancelled,
                3,
                None,
            ),
        ];
        for (finish, to, attempt, run_at) in cases {
            let e = finish.effect(3, false, now);
            assert_eq!(
                (e.to, e.attempt, e.run_at),
                (to, attempt, run_at),
                "{finish:?}"
            );
            let c = finish.effect(3, true, now);
            if to == JobState::Queued {
                assert_eq!((c.to, c.attempt, c.run_at), (JobState::Cancelled, 3, None));
                assert_eq!(c.last_error, None);
            } else {
                assert_eq!(c, e, "a cancel request changes only put-backs");
            }
        }
    }
}
