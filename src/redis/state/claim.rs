use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ::redis::Value;
use chrono::Utc;

use super::codec::parse_record;
use super::{Core, HELD_CAP, NamedClaim, SCRIPTS, arg};
use crate::job::{JobId, WorkerId};
use crate::queue::Reserve;
use crate::redis::reply::{array, int, need_int, need_text, owned, text, unexpected};
use crate::state::{Claim, Held, Transition, TransitionResult};
use crate::util::{dur_micros, from_micros, micros};
use crate::{Error, ErrorKind, Result};

impl Core {
    /// The claim script's head: mode, worker, lease, events kept, sweep limit, dead
    /// retention, retention.
    pub(super) fn claim_head(
        &self,
        mode: &str,
        worker: &WorkerId,
        lease: Duration,
    ) -> Vec<Vec<u8>> {
        vec![
            arg(mode),
            arg(worker),
            arg(dur_micros(lease)),
            arg(self.config.max_events_per_job - 1),
            arg(self.config.sweep_batch),
            arg(dur_micros(self.config.dead_retention)),
            arg(dur_micros(self.config.retention)),
        ]
    }

    /// One pass of [`JobStore::claim_due`]: the claims, and when nothing was claimed,
    /// when something comes due next (by Redis's clock).
    ///
    /// The script runs in a task of its own, so nothing is stranded whatever happens to the
    /// caller: a caller that stops waiting (drops the future) has what the script claimed for
    /// it handed back at once, and a call whose answer is lost (a reply timeout, a killed
    /// connection) hands back, by the name it gave the script for its lease batches,
    /// whatever it took; each due now, attempt not spent.
    pub(super) async fn claim_due_once(
        self: &Arc<Self>,
        req: &Reserve<'_>,
    ) -> Result<(Vec<Claim>, Option<i64>)> {
        let (args, claim) = self.due_args(req);
        let core = Arc::clone(self);
        let (next, claims) = self
            .spawn_claim(claim, async move {
                core.claim_due_call(&args)
                    .await
                    .map(|(claims, next)| (next, claims))
            })
            .await?;
        Ok((claims, next))
    }

    /// The claim script's arguments in mode 'due' for `req`, and the name its lease batches
    /// take.
    pub(super) fn due_args(&self, req: &Reserve<'_>) -> (Vec<Vec<u8>>, NamedClaim) {
        let mut args = self.claim_head("due", req.worker, req.lease);
        args.push(arg(req.max.min(self.config.chunk_size)));
        args.extend(req.queues.iter().map(arg));
        let name = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        args.push(arg(&name));
        let claim = NamedClaim {
            name,
            worker: req.worker.clone(),
            lease: req.lease,
            queues: req.queues.to_vec(),
        };
        (args, claim)
    }

    /// Run a call that claims (`call`, answering something and the claims) in a task of its
    /// own: a caller that stops waiting has what it claimed handed back, and so does a call
    /// whose answer was lost (by `claim`'s name).
    pub(super) async fn spawn_claim<T: Send + 'static>(
        self: &Arc<Self>,
        claim: NamedClaim,
        call: impl std::future::Future<Output = Result<(T, Vec<Claim>)>> + Send + 'static,
    ) -> Result<(T, Vec<Claim>)> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let core = Arc::clone(self);
        tokio::spawn(async move {
            let answer = call.await;
            let lost = answer.is_err();
            if let Err(Ok((_, claims))) = tx.send(answer) {
                // The caller is gone: forget what it would have settled, and give it back.
                {
                    let mut held = core.held.lock();
                    for claim in &claims {
                        if let Claim::Claimed(r) = claim {
                            held.remove(&Held::of(r));
                        }
                    }
                }
                core.hand_back_named(&claim).await;
            } else if lost {
                core.hand_back_named(&claim).await;
            }
        });
        rx.await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Backend,
                "the claim task ended without an answer; try again",
            ))
        })
    }

    /// Settle `transitions` from the records their claims returned and claim due jobs for
    /// `req`, in one script call; what the records cannot settle goes to the finish script
    /// after. The caller checked that the batch fits in one call.
    pub(super) async fn settle_and_claim(
        self: &Arc<Self>,
        transitions: Vec<Transition>,
        req: &Reserve<'_>,
    ) -> Result<(Vec<TransitionResult>, Vec<Claim>)> {
        let mut prepared = self.prepare_settle(&transitions);
        let items = std::mem::take(&mut prepared.items);
        let mut args = vec![arg(4 + items.iter().map(Vec::len).sum::<usize>())];
        args.extend(self.settle_head());
        args.extend(items.into_iter().flatten());
        let (claim_args, claim) = self.due_args(req);
        args.extend(claim_args);
        let core = Arc::clone(self);
        let (settled, claims) = self
            .spawn_claim(claim, async move {
                let reply = core
                    .link
                    .eval(&SCRIPTS.settle_claim, &[&core.prefix], &args)
                    .await?;
                let mut parts = array("settle_claim", reply)?.into_iter();
                let settled = array("settle_claim", parts.next().unwrap_or(Value::Nil))?;
                let mut claim =
                    array("settle_claim", parts.next().unwrap_or(Value::Nil))?.into_iter();
                let claims = core.claimed(&array("claim", claim.next().unwrap_or(Value::Nil))?)?;
                let _next = claim.next();
                core.note_clock(claim.next().as_ref());
                Ok((settled, claims))
            })
            .await?;
        let out = prepared.apply(&settled);
        let results = self.finish_rest(transitions, out).await?;
        Ok((results, claims))
    }

    pub(super) async fn claim_due_call(
        &self,
        args: &[Vec<u8>],
    ) -> Result<(Vec<Claim>, Option<i64>)> {
        let reply = self
            .link
            .eval(&SCRIPTS.claim, &[&self.prefix], args)
            .await?;
        let mut parts = array("claim", reply)?.into_iter();
        let claims = self.claimed(&array("claim", parts.next().unwrap_or(Value::Nil))?)?;
        let next = parts.next().as_ref().and_then(int);
        self.note_clock(parts.next().as_ref());
        Ok((claims, next))
    }

    /// Hand back the jobs `claim` took and still holds (see `claim_due_once`), trying for as
    /// long as their leases last; after that their leases expire and they are taken over all
    /// the same.
    pub(super) async fn hand_back_named(&self, claim: &NamedClaim) {
        let deadline = tokio::time::Instant::now() + claim.lease;
        let mut pause = Duration::from_millis(100);
        let mut args = vec![
            arg(&claim.name),
            arg(&claim.worker),
            arg(dur_micros(claim.lease)),
            arg(self.config.max_events_per_job - 1),
            arg(dur_micros(self.config.retention)),
            arg(dur_micros(self.config.dead_retention)),
            arg(self.config.sweep_batch),
            arg("claimed for a caller that never got the answer; handed back"),
        ];
        args.extend(claim.queues.iter().map(arg));
        loop {
            match self
                .link
                .eval(&SCRIPTS.handback, &[&self.prefix], &args)
                .await
            {
                Ok(back) => {
                    if int(&back).is_some_and(|n| n > 0) {
                        tracing::debug!(jobs = ?int(&back), "handed back jobs claimed for a caller that never got them");
                    }
                    return;
                }
                Err(err) if tokio::time::Instant::now() + pause < deadline => {
                    tracing::debug!(error = %err, "could not hand back a lost claim yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not hand back the jobs of a claim whose answer was lost; they run again when their leases expire");
                    return;
                }
            }
        }
    }

    /// Parse claim answers and remember the records claimed, for settling.
    pub(super) fn claimed(&self, replies: &[Value]) -> Result<Vec<Claim>> {
        let claims = parse_claims(replies)?;
        let mut held = self.held.lock();
        if held.len() + claims.len() > HELD_CAP {
            held.clear();
        }
        for (claim, group) in claims.iter().zip(replies.chunks(4)) {
            if let (Claim::Claimed(r), Some(Value::BulkString(m))) = (claim, group.get(3)) {
                held.insert(Held::of(r), m.clone());
            }
        }
        Ok(claims)
    }

    /// Remember how far Redis's clock (as a script read it) is from ours.
    pub(super) fn note_clock(&self, redis_now: Option<&Value>) {
        if let Some(now) = redis_now.and_then(int) {
            self.clock_offset
                .store(now - micros(Utc::now()), Ordering::Relaxed);
        }
    }

    /// Redis's clock now, as far as the last claim told.
    pub(super) fn redis_now(&self) -> i64 {
        micros(Utc::now()) + self.clock_offset.load(Ordering::Relaxed)
    }
}

/// Claim answers, four values each: `claimed, id, d, m` | `notdue, id, run_at, -` |
/// `exhausted, id, reason, -` | `cancelled, id, reason, -` | `skipped, id, state, -`.
fn parse_claims(replies: &[Value]) -> Result<Vec<Claim>> {
    replies
        .chunks(4)
        .map(|parts| {
            let what = parts.first().and_then(text).unwrap_or("");
            let id = || -> Result<JobId> {
                need_text("job id", parts.get(1).unwrap_or(&Value::Nil))?.parse()
            };
            Ok(match what {
                "claimed" => Claim::Claimed(parse_record(&parts[1..])?),
                "notdue" => Claim::NotDue {
                    id: id()?,
                    run_at: from_micros(need_int("run_at", parts.get(2).unwrap_or(&Value::Nil))?),
                },
                "exhausted" => Claim::Exhausted {
                    id: id()?,
                    reason: parts.get(2).and_then(owned).unwrap_or_default(),
                },
                "cancelled" => Claim::Cancelled {
                    id: id()?,
                    reason: parts.get(2).and_then(owned).unwrap_or_default(),
                },
                "skipped" => Claim::Skipped {
                    id: id()?,
                    state: parts.get(2).and_then(text).and_then(|s| s.parse().ok()),
                },
                _ => return Err(unexpected("claim", &Value::Array(parts.to_vec()))),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewJob;
    use crate::job::{JobRecord, JobState};
    use crate::redis::state::{RedisState, RedisStateConfig, drop_namespace};
    use crate::state::StateManager;
    use crate::store::JobStore;

    /// With a server at `REDIS_URL`: a claim whose answer never reached its caller (a reply
    /// timeout, a killed connection) is handed back by the name it gave its lease batches:
    /// its jobs are due again at once, attempt not spent. Before, they waited out their
    /// lease and a takeover spent an attempt.
    #[tokio::test]
    async fn a_claim_whose_answer_was_lost_is_handed_back_by_name() {
        let Ok(url) = std::env::var("REDIS_URL") else {
            eprintln!("skipped: REDIS_URL is not set");
            return;
        };
        let ns = format!("jft-unit-lost-{}", uuid::Uuid::now_v7().simple());
        let state = RedisState::connect(RedisStateConfig::new(url.as_str()).with_namespace(&ns))
            .await
            .expect("connect");
        let records: Vec<JobRecord> = (0..5)
            .map(|_| {
                let mut r = JobRecord::from_job(NewJob::new("k"));
                r.state = JobState::Queued;
                r.attempt = 0;
                r.started_at = None;
                r
            })
            .collect();
        state.create(records).await.expect("create");
        let claim = NamedClaim {
            name: "lost-answer".to_owned(),
            worker: WorkerId::new("w"),
            lease: Duration::from_secs(30),
            queues: vec!["default".to_owned()],
        };
        let mut args = state.core.claim_head("due", &claim.worker, claim.lease);
        args.push(arg(10));
        args.push(arg("default"));
        args.push(arg(&claim.name));
        // The script runs; its answer is dropped, as a lost reply would be.
        let (claims, _) = state.core.claim_due_call(&args).await.expect("claim");
        assert_eq!(claims.len(), 5);
        assert_eq!(state.counts().await.expect("counts").total.running, 5);
        state.core.hand_back_named(&claim).await;
        let counts = state.counts().await.expect("counts");
        assert_eq!((counts.total.running, counts.total.queued), (0, 5));
        let queues = vec!["default".to_owned()];
        let again = state
            .claim_due(&Reserve {
                worker: &claim.worker,
                queues: &queues,
                max: 10,
                lease: claim.lease,
                wait: Duration::ZERO,
            })
            .await
            .expect("claim again");
        assert_eq!(again.len(), 5);
        for c in &again {
            let Claim::Claimed(r) = c else {
                panic!("{c:?}")
            };
            assert_eq!(r.attempt, 1, "the attempt was not spent");
            let events = state.events(r.id).await.expect("events");
            assert!(
                events.iter().any(|e| e
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.contains("handed back"))),
                "{events:?}"
            );
        }
        drop_namespace(&state, &ns).await;
    }
}
