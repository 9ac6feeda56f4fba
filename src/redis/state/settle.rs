use std::time::Duration;

use ::redis::Value;

use super::codec::{
    F_CANCEL, F_DK, F_FINISHED, F_LE, F_LEASE, F_RES, Packed, event_len, state_code,
};
use super::{Core, SCRIPTS, arg};
use crate::job::{JobState, Payload, clamp_delay};
use crate::redis::reply::{int, need_int, owned, text, unexpected};
use crate::state::{Finish, Transition, TransitionResult};
use crate::util::{dur_micros, from_micros, micros};
use crate::{Error, ErrorKind, Result};

/// What a settled transition writes (see [`settle`]).
struct Settled {
    m: Vec<u8>,
    state: JobState,
    version: u64,
    kind: String,
    queue: String,
    key: String,
    priority: i16,
    /// The lane score of a job put back in its queue.
    score: Option<i64>,
    /// A failed attempt queued for another (counted in `StateCounts::retried`).
    retry: bool,
}

/// The record `finish` writes for `t` when the stored one is `old` (as this store's claim
/// returned it): the transition of the finish script, computed here so that the settle
/// script only compares and writes. `now` is Redis's clock (microseconds), `keep` the events
/// kept besides creation. `None` where the script must decide: the job is not held by `t`'s
/// claim as far as `old` says, or a cancel was asked for.
#[allow(clippy::cast_precision_loss)] // microseconds since 1970 stay below 2^53
fn settle(old: &[u8], t: &Transition, now: i64, keep: usize) -> Option<Settled> {
    let mut p = Packed::read(old)?;
    if p.state != 2 || p.claim != t.token as f64 || p.flags & F_CANCEL != 0 {
        return None;
    }
    let now_f = now as f64;
    let effect = t.finish.effect(p.attempt, false, from_micros(now));
    if let Some(result) = effect.result.filter(|r| !r.as_str().is_empty()) {
        p.result = result.as_str();
        p.flags |= F_RES;
    }
    if let Some(run_at) = effect.run_at {
        p.run_at = micros(run_at) as f64;
    }
    if let Some(error) = effect.last_error {
        p.error = error;
        p.flags |= F_LE;
    }
    p.attempt = effect.attempt;
    let (to, reason) = (effect.to, effect.reason);
    p.version += 1.0;
    // The event, as push_event packs it.
    let worker = t.worker.as_str();
    let why = reason.unwrap_or("");
    let mut event = Vec::with_capacity(23 + worker.len() + why.len());
    event.extend_from_slice(&now_f.to_le_bytes());
    event.push(2);
    event.push(state_code(to));
    event.push(1 | if reason.is_some() { 2 } else { 0 });
    event.extend_from_slice(&p.attempt.to_le_bytes());
    event.extend_from_slice(&u32::try_from(worker.len()).ok()?.to_le_bytes());
    event.extend_from_slice(worker.as_bytes());
    event.extend_from_slice(&u32::try_from(why.len()).ok()?.to_le_bytes());
    event.extend_from_slice(why.as_bytes());
    let kept: Vec<u8>;
    if usize::try_from(p.events_kept).ok()? >= keep {
        // Keep the first transition and the latest.
        let first = event_len(p.events)?;
        kept = if keep >= 2 {
            let second = event_len(&p.events[first..])?;
            [&p.events[..first], &p.events[first + second..]].concat()
        } else {
            p.events[first..].to_vec()
        };
        p.events = &kept;
    } else {
        p.events_kept += 1;
    }
    p.state = state_code(to);
    p.updated = now_f;
    p.owner = "";
    p.lease = 0.0;
    p.flags &= !F_LEASE;
    #[allow(clippy::cast_possible_truncation)] // whole microseconds
    let score = if to == JobState::Queued {
        if p.run_at > now_f {
            p.flags |= F_DK;
        }
        Some(p.run_at as i64)
    } else {
        p.finished = now_f;
        p.flags |= F_FINISHED;
        None
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // whole, non-negative
    let version = p.version as u64;
    Some(Settled {
        m: p.write(&event),
        state: to,
        version,
        kind: p.kind.to_owned(),
        queue: p.queue.to_owned(),
        key: p.key.to_owned(),
        priority: p.priority,
        score,
        retry: to == JobState::Queued && matches!(t.finish, Finish::Retry { .. }),
    })
}

impl Core {
    /// Settle what can be settled from the records remembered at claim time; answers per
    /// transition, `None` where the finish script must decide.
    pub(super) async fn settle_known(
        &self,
        transitions: &[Transition],
    ) -> Result<Vec<Option<TransitionResult>>> {
        let mut prepared = self.prepare_settle(transitions);
        if prepared.items.is_empty() {
            return Ok(prepared.out);
        }
        let items = std::mem::take(&mut prepared.items);
        let replies = self
            .chunks(&SCRIPTS.settle, &self.settle_head(), items)
            .await?;
        Ok(prepared.apply(&replies))
    }

    /// Whether the records of every transition's claim are remembered (so all can be settled
    /// from them).
    pub(super) fn all_held(&self, transitions: &[Transition]) -> bool {
        let held = self.held.lock();
        transitions.iter().all(|t| held.contains_key(&t.held()))
    }

    /// The settle script's head: retention, dead retention, sweep limit.
    pub(super) fn settle_head(&self) -> [Vec<u8>; 4] {
        [
            arg(dur_micros(self.config.retention)),
            arg(dur_micros(self.config.dead_retention)),
            arg(self.config.sweep_batch),
            // (events kept by the workflow steps a finished step settles)
            arg(self.config.max_events_per_job - 1),
        ]
    }

    /// The settle script's items for the transitions the records remembered at claim time
    /// can settle (those records are let go).
    pub(super) fn prepare_settle(&self, transitions: &[Transition]) -> PreparedSettle {
        let now = self.redis_now();
        let keep = self.config.max_events_per_job - 1;
        let mut prepared = PreparedSettle {
            out: vec![None; transitions.len()],
            items: Vec::new(),
            answers: Vec::new(),
        };
        let mut held = self.held.lock();
        for (i, t) in transitions.iter().enumerate() {
            let Some(old) = held.remove(&t.held()) else {
                continue;
            };
            let Some(s) = settle(&old, t, now, keep) else {
                continue;
            };
            prepared.items.push(vec![
                arg(t.id),
                arg(s.version - 1),
                s.m,
                arg(&s.kind),
                arg(&s.queue),
                arg(s.priority),
                s.score.map_or_else(Vec::new, arg),
                arg(&s.key),
                if s.retry { b"1".to_vec() } else { Vec::new() },
            ]);
            prepared.answers.push((i, s.state, s.version));
        }
        prepared
    }

    /// Finish by the script, which decides on the stored records.
    pub(super) async fn finish_by_script(
        &self,
        transitions: Vec<Transition>,
    ) -> Result<Vec<TransitionResult>> {
        let head = [
            arg(self.config.max_events_per_job - 1),
            arg(dur_micros(self.config.retention)),
            arg(dur_micros(self.config.dead_retention)),
            arg(self.config.sweep_batch),
        ];
        let items = transitions.iter().map(finish_args).collect();
        let replies = self.chunks(&SCRIPTS.finish, &head, items).await?;
        replies
            .chunks(3)
            .map(|parts| {
                let state = parts
                    .get(1)
                    .and_then(text)
                    .and_then(|s| s.parse::<JobState>().ok());
                match parts.first().and_then(text) {
                    Some("applied") => Ok(TransitionResult::Applied {
                        state: state
                            .ok_or_else(|| unexpected("finish", &Value::Array(parts.to_vec())))?,
                        version: u64::try_from(need_int(
                            "version",
                            parts.get(2).unwrap_or(&Value::Nil),
                        )?)
                        .unwrap_or(0),
                    }),
                    Some("conflict") => Ok(TransitionResult::Conflict {
                        current: state,
                        reason: parts.get(2).and_then(owned).unwrap_or_default(),
                    }),
                    _ => Err(unexpected("finish", &Value::Array(parts.to_vec()))),
                }
            })
            .collect()
    }

    /// Settle what the claims' records allow, and the rest by the script.
    pub(super) async fn finish_all(
        &self,
        transitions: Vec<Transition>,
    ) -> Result<Vec<TransitionResult>> {
        let settled = self.settle_known(&transitions).await?;
        self.finish_rest(transitions, settled).await
    }

    /// The answers to `transitions`, `settled` where the settle script applied them and the
    /// finish script's for the rest.
    pub(super) async fn finish_rest(
        &self,
        transitions: Vec<Transition>,
        settled: Vec<Option<TransitionResult>>,
    ) -> Result<Vec<TransitionResult>> {
        if settled.iter().all(Option::is_some) {
            return Ok(settled.into_iter().flatten().collect());
        }
        let (rest, slots): (Vec<Transition>, Vec<usize>) = transitions
            .into_iter()
            .zip(0..)
            .filter(|(_, i)| settled[*i].is_none())
            .unzip();
        let mut decided = self.finish_by_script(rest).await?.into_iter();
        let mut out = settled;
        for i in slots {
            out[i] = decided.next();
        }
        out.into_iter()
            .map(|r| {
                r.ok_or_else(|| {
                    Error::new(
                        ErrorKind::Backend,
                        "the finish script answered too few transitions",
                    )
                })
            })
            .collect()
    }
}

/// Settle script items for a batch, and how to read the script's answers.
pub(super) struct PreparedSettle {
    /// Per transition: `None` until the script applied it.
    out: Vec<Option<TransitionResult>>,
    pub(super) items: Vec<Vec<Vec<u8>>>,
    /// Per item: the transition it settles, and what it applies.
    answers: Vec<(usize, JobState, u64)>,
}

impl PreparedSettle {
    /// The answers, with those the script applied (`replies`, one per item: 1 applied).
    pub(super) fn apply(self, replies: &[Value]) -> Vec<Option<TransitionResult>> {
        let mut out = self.out;
        for (reply, (i, state, version)) in replies.iter().zip(self.answers) {
            if int(reply) == Some(1) {
                out[i] = Some(TransitionResult::Applied { state, version });
            }
        }
        out
    }
}

fn finish_args(t: &Transition) -> Vec<Vec<u8>> {
    let (code, delay, text): (&str, Option<Duration>, &str) = match &t.finish {
        Finish::Succeeded { result } => ("ok", None, result.as_ref().map_or("", Payload::as_str)),
        Finish::Retry { delay, error } => ("retry", Some(*delay), error),
        Finish::Defer { delay, reason } => ("defer", Some(*delay), reason),
        Finish::Dead { error } => ("dead", None, error),
        Finish::Cancelled { reason } => ("cancel", None, reason),
        Finish::Release { reason } => ("release", None, reason),
    };
    vec![
        arg(t.id),
        arg(&t.worker),
        arg(t.token),
        arg(code),
        delay.map_or_else(Vec::new, |d| arg(dur_micros(clamp_delay(d)))),
        arg(text),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewJob;
    use crate::job::{JobRecord, WorkerId};
    use crate::redis::state::{RedisState, RedisStateConfig, drop_namespace};
    use crate::state::{Claim, Held, StateManager};

    /// With a server at `REDIS_URL`: a finish of a job this store claimed is settled in one
    /// call (no fallback to the finish script), and the claim's copy is let go.
    #[tokio::test]
    async fn a_finish_after_a_claim_is_settled_in_one_call() {
        let Ok(url) = std::env::var("REDIS_URL") else {
            eprintln!("skipped: REDIS_URL is not set");
            return;
        };
        let ns = format!("jft-unit-settle-{}", uuid::Uuid::now_v7().simple());
        let state = RedisState::connect(RedisStateConfig::new(url.as_str()).with_namespace(&ns))
            .await
            .expect("connect");
        let mut record = JobRecord::from_job(NewJob::new("k"));
        record.state = JobState::Queued;
        record.attempt = 0;
        record.started_at = None;
        let id = record.id;
        state.create(vec![record]).await.expect("create");
        let worker = WorkerId::new("w");
        let claims = state
            .claim(&[id], &worker, Duration::from_secs(30))
            .await
            .expect("claim");
        let [Claim::Claimed(claimed)] = &claims[..] else {
            panic!("{claims:?}")
        };
        let held = Held::of(claimed);
        assert!(state.core.held.lock().contains_key(&held));
        // The settle script, loaded (a server that never ran it answers NOSCRIPT first).
        state
            .core
            .link
            .eval(
                &SCRIPTS.settle,
                &[&state.core.prefix],
                &[arg(0), arg(0), arg(0)],
            )
            .await
            .expect("load the settle script");
        let before = state.round_trips();
        let done = state
            .finish(vec![Transition {
                id,
                worker,
                token: held.token,
                finish: Finish::Succeeded { result: None },
            }])
            .await
            .expect("finish");
        let [TransitionResult::Applied { state: to, version }] = done[..] else {
            panic!("{done:?}")
        };
        assert_eq!(to, JobState::Succeeded);
        assert_eq!(state.round_trips() - before, 1, "settled, no fallback");
        assert!(state.core.held.lock().is_empty());
        let stored = state.get(id).await.expect("get").expect("kept");
        assert_eq!(
            (stored.state, stored.version),
            (JobState::Succeeded, version)
        );
        drop_namespace(&state, &ns).await;
    }

    /// With a server at `REDIS_URL`: a worker's finish of jobs this store claimed and its
    /// claim of the next are one call (the settle-and-claim script).
    #[tokio::test]
    async fn a_finish_and_the_next_claim_are_one_call() {
        use crate::queue::Reserve;
        use crate::store::JobStore;
        let Ok(url) = std::env::var("REDIS_URL") else {
            eprintln!("skipped: REDIS_URL is not set");
            return;
        };
        let ns = format!("jft-unit-fused-{}", uuid::Uuid::now_v7().simple());
        let state = RedisState::connect(RedisStateConfig::new(url.as_str()).with_namespace(&ns))
            .await
            .expect("connect");
        for _ in 0..3 {
            let mut record = JobRecord::from_job(NewJob::new("k"));
            (record.state, record.attempt, record.started_at) = (JobState::Queued, 0, None);
            state.create(vec![record]).await.expect("create");
        }
        let worker = WorkerId::new("w");
        let queues = vec!["default".to_owned()];
        let req = Reserve {
            worker: &worker,
            queues: &queues,
            max: 1,
            lease: Duration::from_secs(30),
            wait: Duration::ZERO,
        };
        let done = |claims: &[Claim]| {
            let [Claim::Claimed(r)] = claims else {
                panic!("{claims:?}")
            };
            vec![Transition {
                id: r.id,
                worker: worker.clone(),
                token: r.version,
                finish: Finish::Succeeded { result: None },
            }]
        };
        let first = state.claim_due(&req).await.expect("claim");
        // The first call loads the script; the second is measured.
        let second = state
            .finish_and_claim(done(&first), &req)
            .await
            .expect("finish and claim");
        let before = state.round_trips();
        let third = state
            .finish_and_claim(done(&second.claims), &req)
            .await
            .expect("finish and claim");
        assert_eq!(state.round_trips() - before, 1, "one call");
        assert!(matches!(
            third.results[..],
            [TransitionResult::Applied {
                state: JobState::Succeeded,
                ..
            }]
        ));
        assert_eq!(third.claims.len(), 1);
        let counts = state.counts().await.expect("counts").total;
        assert_eq!((counts.succeeded, counts.running), (2, 1));
        drop_namespace(&state, &ns).await;
    }
}
