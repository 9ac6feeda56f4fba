use std::time::Duration;

use ::redis::Value;
use async_trait::async_trait;

use super::codec::{BlobIn, bad_record, decode_events, decode_m, parse_record};
use super::{Core, RedisState, SCRIPTS, arg};
use crate::job::{JobEvent, JobId, JobRecord, JobState, WorkerId};
use crate::queue::{KindQueueStats, QueueStats, Reserve};
use crate::redis::reply::{array, int, need_text, owned, text, unexpected};
use crate::state::{
    CancelOutcome, Claim, Created, Heartbeat, Held, JobFilter, Order, Page, Paged, StateCounts,
    StateManager, StateTally, Transition, TransitionResult,
};
use crate::store::{FinishAndClaim, JobStore};
use crate::util::{dur_micros, from_micros};
use crate::{Error, ErrorKind, Result};

#[async_trait]
impl StateManager for RedisState {
    async fn create(&self, jobs: Vec<JobRecord>) -> Result<Vec<Created>> {
        if jobs.iter().any(|j| j.step.is_some()) {
            return self.create_steps(&jobs).await;
        }
        if let Some(bad) = jobs.iter().find(|j| j.state != JobState::Queued) {
            return Err(Error::invalid_input(
                "state",
                format!(
                    "job {} is {}; only queued jobs are created (submit new jobs)",
                    bad.id, bad.state
                ),
            ));
        }
        let items = jobs
            .iter()
            .map(Core::record_fields)
            .collect::<Result<Vec<_>>>()?;
        let replies = self.core.chunks(&SCRIPTS.create, &[], items).await?;
        let created = replies
            .chunks(2)
            .map(|parts| {
                let [what, id] = parts else {
                    return Err(unexpected("create", &Value::Array(parts.to_vec())));
                };
                let id: JobId = need_text("job id", id)?.parse()?;
                Ok(match text(what) {
                    Some("new") => Created::New(id),
                    _ => Created::Existing(id),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if created.iter().any(|c| matches!(c, Created::New(_))) {
            self.wake.notify_waiters();
        }
        Ok(created)
    }

    async fn claim(&self, ids: &[JobId], worker: &WorkerId, lease: Duration) -> Result<Vec<Claim>> {
        let head = self.core.claim_head("ids", worker, lease);
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(self.core.config.chunk_size) {
            let mut args = head.clone();
            args.extend(chunk.iter().map(arg));
            let reply = self
                .core
                .link
                .eval(&SCRIPTS.claim, &[&self.core.prefix], &args)
                .await?;
            let mut parts = array("claim", reply)?.into_iter();
            out.extend(
                self.core
                    .claimed(&array("claim", parts.next().unwrap_or(Value::Nil))?)?,
            );
            parts.next();
            self.core.note_clock(parts.next().as_ref());
        }
        Ok(out)
    }

    async fn heartbeat(&self, held: &[Held], lease: Duration) -> Result<Vec<Heartbeat>> {
        let head = [arg(dur_micros(lease))];
        let items = held.iter().map(|h| vec![arg(h.id), arg(h.token)]).collect();
        let replies = self.core.chunks(&SCRIPTS.heartbeat, &head, items).await?;
        Ok(replies
            .iter()
            .map(|r| match text(r) {
                Some("held") => Heartbeat::Held {
                    cancel_requested: false,
                },
                Some("cancel") => Heartbeat::Held {
                    cancel_requested: true,
                },
                _ => Heartbeat::Lost,
            })
            .collect())
    }

    /// Most transitions are settled from the record this store's claim returned: the next
    /// record is computed here and one script compares and writes it. The rest (the record
    /// changed since: a heartbeat, a cancel request, a takeover) go through the finish
    /// script, which decides on what is stored.
    async fn finish(&self, transitions: Vec<Transition>) -> Result<Vec<TransitionResult>> {
        let requeues = transitions
            .iter()
            .any(|t| t.finish.target() == JobState::Queued);
        let result = self.core.finish_all(transitions).await;
        if requeues {
            self.wake.notify_waiters();
        }
        result
    }

    async fn cancel(&self, id: JobId, reason: &str) -> Result<CancelOutcome> {
        let args = [
            arg(id),
            arg(reason),
            arg(self.core.config.max_events_per_job - 1),
            arg(dur_micros(self.core.config.retention)),
        ];
        let reply = self
            .core
            .link
            .eval(&SCRIPTS.cancel, &[&self.core.prefix], &args)
            .await?;
        let parts = array("cancel", reply)?;
        match parts.first().and_then(text) {
            Some("cancelled") => Ok(CancelOutcome::Cancelled),
            Some("requested") => Ok(CancelOutcome::Requested),
            Some("finished") => {
                let state = parts
                    .get(1)
                    .and_then(text)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| unexpected("cancel", &Value::Array(parts.clone())))?;
                Ok(CancelOutcome::AlreadyFinished(state))
            }
            Some("missing") => Err(Error::new(ErrorKind::NotFound, format!("no job {id}"))),
            _ => Err(unexpected("cancel", &Value::Array(parts))),
        }
    }

    async fn report_progress(&self, held: Held, progress: &crate::job::Progress) -> Result<bool> {
        let args = [arg(held.id), arg(held.token), serde_json::to_vec(progress)?];
        let reply = self
            .core
            .link
            .eval(&SCRIPTS.progress, &[&self.core.prefix], &args)
            .await?;
        Ok(int(&reply) == Some(1))
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>> {
        let reply = self
            .core
            .link
            .eval(&SCRIPTS.get, &[&self.core.prefix], &[arg(id)])
            .await?;
        let mut values = array("get", reply)?;
        if values
            .get(1)
            .is_none_or(|m| !matches!(m, Value::BulkString(_)))
        {
            return Ok(None);
        }
        values.insert(0, Value::BulkString(arg(id)));
        parse_record(&values).map(Some)
    }

    async fn list(&self, filter: &JobFilter, page: &Page) -> Result<Paged<JobRecord>> {
        page.validate()?;
        // Dead and cancelled jobs have indexes of their own (they are few among many); other
        // states are filtered while walking the kind's index or the index of all jobs.
        let index = match (filter.workflow, &filter.state, &filter.kind) {
            (Some(workflow), _, _) => format!("wf:{workflow}"),
            (None, Some(state @ (JobState::Dead | JobState::Cancelled)), _) => {
                format!("s:{state}")
            }
            (None, _, Some(kind)) => format!("k:{kind}"),
            (None, _, None) => "all".to_owned(),
        };
        let args = [
            arg(index),
            page.after.map_or_else(Vec::new, arg),
            arg(page.limit),
            arg(match page.order {
                Order::Asc => "asc",
                Order::Desc => "desc",
            }),
            arg(self.core.config.list_scan_budget.max(page.limit + 1)),
            filter.state.map_or_else(Vec::new, arg),
            filter.kind.as_deref().map_or_else(Vec::new, arg),
            filter.queue.as_deref().map_or_else(Vec::new, arg),
            filter.tenant.as_deref().map_or_else(Vec::new, arg),
            filter.tag.as_deref().map_or_else(Vec::new, arg),
        ];
        let reply = self
            .core
            .link
            .eval(&SCRIPTS.list, &[&self.core.prefix], &args)
            .await?;
        let mut parts = array("list", reply)?.into_iter();
        let items = array("list items", parts.next().unwrap_or(Value::Nil))?
            .into_iter()
            .map(|r| parse_record(&array("list item", r)?))
            .collect::<Result<Vec<_>>>()?;
        let next = match parts.next().as_ref().and_then(text) {
            Some(id) => Some(id.parse()?),
            None => None,
        };
        Ok(Paged { items, next })
    }

    async fn events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        let reply = self
            .core
            .link
            .eval(&SCRIPTS.get, &[&self.core.prefix], &[arg(id)])
            .await?;
        let values = array("events", reply)?;
        let (Some(Value::BulkString(d)), Some(Value::BulkString(m))) =
            (values.first(), values.get(1))
        else {
            return Ok(Vec::new());
        };
        let blob =
            serde_json::from_slice::<BlobIn>(d).map_err(|_| bad_record(&id.to_string(), "d"))?;
        let created = from_micros(blob.created_at);
        // A workflow step with dependencies was created waiting for them.
        let submitted = if blob.step.is_some_and(|s| !s.depends_on.is_empty()) {
            JobState::Pending
        } else {
            JobState::Queued
        };
        let m = decode_m(m).ok_or_else(|| bad_record(&id.to_string(), "m"))?;
        let kept = decode_events(id, m.events).ok_or_else(|| bad_record(&id.to_string(), "m"))?;
        let mut events = Vec::with_capacity(kept.len() + 1);
        events.push(JobEvent {
            job_id: id,
            at: created,
            from: None,
            to: submitted,
            attempt: 0,
            worker: None,
            reason: Some("submitted".to_owned()),
        });
        events.extend(kept);
        Ok(events)
    }

    async fn counts(&self) -> Result<StateCounts> {
        let (_, flat) = self.core.counts_raw().await?;
        let mut counts = StateCounts::default();
        for pair in flat.chunks(2) {
            let [field, value] = pair else { continue };
            let (Some(field), Some(n)) = (text(field), int(value)) else {
                continue;
            };
            if field == "retried" {
                counts.retried = u64::try_from(n.max(0)).unwrap_or(0);
                continue;
            }
            let Some((state, kind)) = field.split_once(':') else {
                continue;
            };
            let Ok(state) = state.parse::<JobState>() else {
                continue;
            };
            let n = u64::try_from(n.max(0)).unwrap_or(0);
            *counts.total.get_mut(state) += n;
            *counts
                .per_kind
                .entry(kind.to_owned())
                .or_insert_with(StateTally::default)
                .get_mut(state) += n;
        }
        counts.per_kind.retain(|_, t| t.total() > 0);
        Ok(counts)
    }

    async fn ping(&self) -> Result<()> {
        self.core.link.ping().await
    }
}

/// The Redis store is its own queue: each queue's jobs wait in lanes (one sorted set per
/// priority, by `run_at`), running jobs in a set ordered by lease expiry, and one script
/// call claims a batch — takeovers of expired leases first, then due jobs, highest priority
/// first — while [`StateManager::finish`] settles it.
#[async_trait]
impl JobStore for RedisState {
    fn supports_workflows(&self) -> bool {
        true
    }

    async fn paused_queues(&self) -> Result<std::collections::BTreeSet<String>> {
        let reply = self
            .core
            .link
            .query(
                "read the paused queues",
                ::redis::cmd("SMEMBERS").arg(format!("{}:paused", self.core.prefix)),
            )
            .await?;
        Ok(array("paused queues", reply)?
            .iter()
            .filter_map(text)
            .map(str::to_owned)
            .collect())
    }

    async fn queue_depths(&self) -> Result<Vec<crate::queue::QueueDepth>> {
        use crate::queue::{PriorityDepth, QueueDepth};
        /// Most lane entries one call reads, over all queues.
        const BUDGET: usize = 20_000;
        /// Most due jobs one call moves from a queue's waiting set to its lanes.
        const MOVED: usize = 1_000;
        let reply = self
            .core
            .link
            .eval(
                &SCRIPTS.depths,
                &[&self.core.prefix],
                &[arg(BUDGET), arg(MOVED)],
            )
            .await?;
        let mut out = Vec::new();
        for row in array("queue depths", reply)? {
            let row = array("a queue's depth", row)?;
            let bad = || unexpected("queue depths", &Value::Array(row.clone()));
            let (Some(queue), Some(delayed), Some(at_least)) = (
                row.first().and_then(text),
                row.get(1).and_then(int),
                row.get(2).and_then(int),
            ) else {
                return Err(bad());
            };
            let mut depth = QueueDepth {
                queue: queue.to_owned(),
                delayed: u64::try_from(delayed).unwrap_or(0),
                at_least: at_least == 1,
                ..QueueDepth::default()
            };
            for pair in row.get(3..).unwrap_or_default().chunks(2) {
                let [priority, ready] = pair else {
                    return Err(bad());
                };
                let (Some(priority), Some(ready)) = (int(priority), int(ready)) else {
                    return Err(bad());
                };
                depth.ready.push(PriorityDepth {
                    priority: i16::try_from(priority).map_err(|_| bad())?,
                    ready: u64::try_from(ready).unwrap_or(0),
                });
            }
            out.push(depth);
        }
        Ok(out)
    }

    async fn delete_finished(&self, id: JobId) -> Result<crate::store::Deleted> {
        use crate::store::Deleted;
        let reply = self
            .core
            .link
            .eval(&SCRIPTS.delete, &[&self.core.prefix], &[arg(id)])
            .await?;
        let parts = array("delete", reply)?;
        match parts.first().and_then(text) {
            Some("deleted") => Ok(Deleted::Deleted),
            Some("step") => Ok(Deleted::Step),
            Some("missing") => Ok(Deleted::NotFound),
            Some("not_finished") => parts
                .get(1)
                .and_then(text)
                .and_then(|s| s.parse().ok())
                .map(Deleted::NotFinished)
                .ok_or_else(|| unexpected("delete", &Value::Array(parts.clone()))),
            _ => Err(unexpected("delete", &Value::Array(parts))),
        }
    }

    async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<bool> {
        let key = format!("{}:paused", self.core.prefix);
        let mut cmd = ::redis::cmd(if paused { "SADD" } else { "SREM" });
        cmd.arg(key).arg(queue);
        let reply = self
            .core
            .link
            .query("pause or resume a queue", &cmd)
            .await?;
        Ok(matches!(reply, Value::Int(n) if n > 0))
    }

    async fn claim_due(&self, req: &Reserve<'_>) -> Result<Vec<Claim>> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + req.wait;
        if !req.wait.is_zero() {
            self.ensure_listener();
        }
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (claims, next) = self.core.claim_due_once(req).await?;
            let now = tokio::time::Instant::now();
            if !claims.is_empty() || now >= deadline {
                return Ok(claims);
            }
            let mut nap = (deadline - now).min(self.core.config.poll_interval);
            if let Some(next) = next {
                // `next` is by Redis's clock: so is the wait.
                let until = u64::try_from(next - self.core.redis_now()).unwrap_or(0);
                nap = nap.min(Duration::from_micros(until).max(Duration::from_millis(1)));
            }
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn finish_and_claim(
        &self,
        transitions: Vec<Transition>,
        req: &Reserve<'_>,
    ) -> Result<FinishAndClaim> {
        if transitions.is_empty()
            || req.max == 0
            || req.queues.is_empty()
            || transitions.len() > self.core.config.chunk_size
            || !self.core.all_held(&transitions)
        {
            // Nothing to claim, too much for one call, or finishes the claims' records cannot
            // settle (the finish script decides those, before the claim as everywhere).
            return crate::store::finish_then_claim(self, transitions, req).await;
        }
        let requeues = transitions
            .iter()
            .any(|t| t.finish.target() == JobState::Queued);
        let answer = self.core.settle_and_claim(transitions, req).await;
        if requeues {
            self.wake.notify_waiters();
        }
        let (results, claims) = answer?;
        Ok(FinishAndClaim::new(results, claims))
    }

    fn schedules(&self) -> Option<std::sync::Arc<dyn crate::schedule::ScheduleStore>> {
        Some(std::sync::Arc::clone(&self.schedules)
            as std::sync::Arc<dyn crate::schedule::ScheduleStore>)
    }

    async fn stats(&self) -> Result<QueueStats> {
        let reply = self
            .core
            .link
            .eval(&SCRIPTS.stats, &[&self.core.prefix], &[])
            .await?;
        let flat = array("queue stats", reply)?;
        let number = |v: &Value| int(v).and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        let mut stats = QueueStats::default();
        for k in flat.chunks(5) {
            let [kind, queued, delayed, running, dead] = k else {
                continue;
            };
            let Some(kind) = owned(kind) else { continue };
            let (queued, delayed) = (number(queued), number(delayed));
            let entry = KindQueueStats {
                ready: queued.saturating_sub(delayed),
                delayed: delayed.min(queued),
                in_flight: number(running),
                dead: number(dead),
            };
            stats.ready += entry.ready;
            stats.delayed += entry.delayed;
            stats.in_flight += entry.in_flight;
            stats.dead += entry.dead;
            if entry != KindQueueStats::default() {
                stats.per_kind.insert(kind, entry);
            }
        }
        Ok(stats)
    }
}
