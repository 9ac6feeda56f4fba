//! `StateManager` and `JobStore` for [`PostgresState`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::job::{JobEvent, JobId, JobRecord, JobState, WorkerId};
use crate::postgres::{db_error, stmt};
use crate::queue::{KindQueueStats, QueueStats, Reserve};
use crate::state::{
    CancelOutcome, Claim, Created, Heartbeat, Held, JobFilter, Page, Paged, StateCounts,
    StateManager, Transition, TransitionResult,
};
use crate::store::{FinishAndClaim, JobStore};
use crate::{Error, ErrorKind, Result};

use super::PostgresState;
use super::rows::*;

#[async_trait]
impl StateManager for PostgresState {
    async fn create(&self, jobs: Vec<JobRecord>) -> Result<Vec<Created>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        if jobs.iter().any(|j| j.step.is_some()) {
            // A workflow: all of it or nothing.
            return self.create_steps(&jobs).await;
        }
        let mut answers: Vec<Option<Created>> = vec![None; jobs.len()];
        let mut pending: Vec<usize> = (0..jobs.len()).collect();
        for _round in 0..3 {
            let batch: Vec<&JobRecord> = pending.iter().map(|&i| &jobs[i]).collect();
            let skipped = self.create_once(&batch).await?;
            for &i in &pending {
                answers[i] = Some(Created::New(jobs[i].id));
            }
            let mut unresolved = Vec::new();
            for row in skipped {
                let Some(ord) = row.ord else { continue };
                let Some(&i) = usize::try_from(ord - 1).ok().and_then(|k| pending.get(k)) else {
                    return Err(Error::new(
                        ErrorKind::Backend,
                        "PostgreSQL answered a create batch with a row out of range",
                    ));
                };
                answers[i] = if let Some(holder) = row.holder {
                    Some(Created::Existing(JobId::from_uuid(holder)))
                } else if jobs[i].idempotency_key.is_none() || row.id_taken == Some(true) {
                    // The id itself is taken: the job exists.
                    Some(Created::Existing(jobs[i].id))
                } else {
                    unresolved.push(i);
                    None
                };
            }
            if unresolved.is_empty() {
                break;
            }
            // The keys were taken by submits that committed after this statement began: read
            // their holders in a fresh snapshot.
            let keys: Vec<&str> = unresolved
                .iter()
                .filter_map(|&i| jobs[i].idempotency_key.as_deref())
                .collect();
            self.shared.count_statement();
            let holders: Vec<(String, Uuid)> = sqlx::query_as(stmt(&self.sql.key_holders))
                .bind(keys)
                .fetch_all(&self.shared.pool)
                .await
                .map_err(|e| db_error("look up idempotency keys", e))?;
            let holders: HashMap<String, Uuid> = holders.into_iter().collect();
            pending = Vec::new();
            for i in unresolved {
                match jobs[i]
                    .idempotency_key
                    .as_ref()
                    .and_then(|k| holders.get(k))
                {
                    Some(holder) => answers[i] = Some(Created::Existing(JobId::from_uuid(*holder))),
                    // Its holder is gone again (finished and purged): try to store it anew.
                    None => pending.push(i),
                }
            }
            if pending.is_empty() {
                break;
            }
        }
        answers
            .into_iter()
            .map(|a| {
                a.ok_or_else(|| {
                    Error::new(
                        ErrorKind::Conflict,
                        "an idempotency key was taken and released repeatedly while submitting; submit again",
                    )
                })
            })
            .collect()
    }

    async fn claim(&self, ids: &[JobId], worker: &WorkerId, lease: Duration) -> Result<Vec<Claim>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(ids.len());
        for chunk in distinct_chunks(ids.to_vec(), |id| *id) {
            out.extend(self.claim_chunk(&chunk, worker, lease).await?);
        }
        Ok(out)
    }

    async fn heartbeat(&self, held: &[Held], lease: Duration) -> Result<Vec<Heartbeat>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.heartbeat_on(&self.shared.pool, held, lease).await?;
        let still: HashMap<(Uuid, i64), bool> = rows
            .into_iter()
            .map(|(id, token, cancel)| ((id, token), cancel))
            .collect();
        Ok(held
            .iter()
            .map(|h| {
                let token = i64::try_from(h.token).unwrap_or(i64::MAX);
                match still.get(&(*h.id.as_uuid(), token)) {
                    Some(&cancel_requested) => Heartbeat::Held { cancel_requested },
                    None => Heartbeat::Lost,
                }
            })
            .collect())
    }

    async fn finish(&self, transitions: Vec<Transition>) -> Result<Vec<TransitionResult>> {
        if transitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(transitions.len());
        for chunk in distinct_chunks(transitions, |t| t.id) {
            out.extend(self.finish_chunk(chunk).await?);
        }
        Ok(out)
    }

    async fn cancel(&self, id: JobId, reason: &str) -> Result<CancelOutcome> {
        self.shared.count_statement();
        let state: Option<String> = sqlx::query_scalar(stmt(&self.sql.cancel))
            .bind(*id.as_uuid())
            .bind(reason)
            .fetch_optional(&self.shared.pool)
            .await
            .map_err(|e| db_error("cancel a job", e))?;
        match state.as_deref().map(parse_state).transpose()? {
            None => Err(Error::new(ErrorKind::NotFound, format!("no job {id}"))),
            Some(JobState::Queued | JobState::Pending) => Ok(CancelOutcome::Cancelled),
            Some(JobState::Running) => Ok(CancelOutcome::Requested),
            Some(state) => Ok(CancelOutcome::AlreadyFinished(state)),
        }
    }

    async fn report_progress(&self, held: Held, progress: &crate::job::Progress) -> Result<bool> {
        self.shared.count_statement();
        let row: Option<i32> = sqlx::query_scalar(stmt(&self.sql.progress))
            .bind(*held.id.as_uuid())
            .bind(i64::try_from(held.token).unwrap_or(i64::MAX))
            .bind(serde_json::to_string(progress)?)
            .fetch_optional(&self.shared.pool)
            .await
            .map_err(|e| db_error("keep a progress report", e))?;
        Ok(row.is_some())
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>> {
        self.shared.count_statement();
        sqlx::query_as::<_, JobRow>(stmt(&self.sql.get))
            .bind(*id.as_uuid())
            .fetch_optional(&self.shared.pool)
            .await
            .map_err(|e| db_error("read a job", e))?
            .map(JobRow::into_record)
            .transpose()
    }

    async fn list(&self, filter: &JobFilter, page: &Page) -> Result<Paged<JobRecord>> {
        page.validate()?;
        let (mut rows, stopped) = self.list_page(filter, page).await?;
        let more = rows.len() > page.limit;
        rows.truncate(page.limit);
        let items = rows
            .into_iter()
            .map(JobRow::into_record)
            .collect::<Result<Vec<_>>>()?;
        let next = if more {
            items.last().map(|r| r.id)
        } else {
            // A short page whose walk ran out of budget goes on from where the walk stopped.
            stopped
        };
        Ok(Paged { items, next })
    }

    async fn events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        self.shared.count_statement();
        let rows = sqlx::query_as::<_, EventRow>(stmt(&self.sql.events))
            .bind(*id.as_uuid())
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("read a job's history", e))?;
        rows.into_iter()
            .map(|row| {
                Ok(JobEvent {
                    job_id: id,
                    at: row.at,
                    from: row.from_state.as_deref().map(parse_state).transpose()?,
                    to: parse_state(&row.to_state)?,
                    attempt: count_u32(row.attempt),
                    worker: row.worker.map(WorkerId::new),
                    reason: row.reason,
                })
            })
            .collect()
    }

    async fn counts(&self) -> Result<StateCounts> {
        let rows = self.counts_on(&self.shared.pool).await?;
        let mut counts = StateCounts::default();
        for row in rows {
            if row.state == "retried" {
                counts.retried += u64::try_from(row.n).unwrap_or(0);
                continue;
            }
            let state = parse_state(&row.state)?;
            let n = u64::try_from(row.n).unwrap_or(0);
            *counts.total.get_mut(state) += n;
            *counts.per_kind.entry(row.kind).or_default().get_mut(state) += n;
        }
        Ok(counts)
    }

    async fn ping(&self) -> Result<()> {
        self.shared.count_statement();
        sqlx::query("SELECT 1")
            .execute(&self.shared.pool)
            .await
            .map(|_| ())
            .map_err(|e| db_error("answer a ping", e))
    }
}

/// Most ready-ring rows [`JobStore::queue_depths`] reads, shared among the queues and
/// priorities it finds (each reads at least [`LANE_LEAST`] and at most [`LANE_MOST`]).
const DEPTH_BUDGET: i64 = 10_000;
const LANE_LEAST: i64 = 100;
const LANE_MOST: i64 = 5_000;
/// Most queue and priority pairs it reads.
const MOST_LANES: i64 = 200;

#[async_trait]
impl JobStore for PostgresState {
    fn supports_workflows(&self) -> bool {
        true
    }

    async fn paused_queues(&self) -> Result<std::collections::BTreeSet<String>> {
        self.shared.count_statement();
        let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT queue FROM {}.paused_queues",
            self.shared.quoted_schema()
        )))
        .fetch_all(&self.shared.pool)
        .await
        .map_err(|e| db_error("read the paused queues", e))?;
        Ok(rows.into_iter().map(|(q,)| q).collect())
    }

    async fn queue_depths(&self) -> Result<Vec<crate::queue::QueueDepth>> {
        use crate::queue::{PriorityDepth, QueueDepth};
        self.shared.count_statement();
        let lanes: Vec<(String, i16)> = sqlx::query_as(stmt(&self.sql.queue_lanes))
            .bind(MOST_LANES)
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("find the queues' lanes", e))?;
        if lanes.is_empty() {
            return Ok(Vec::new());
        }
        // The budget shared among the lanes, so the read stays bounded however many.
        let per_lane = (DEPTH_BUDGET / i64::try_from(lanes.len()).unwrap_or(i64::MAX))
            .clamp(LANE_LEAST, LANE_MOST);
        let (queues, priorities): (Vec<String>, Vec<i16>) = lanes.into_iter().unzip();
        self.shared.count_statement();
        let rows: Vec<(String, i16, i64, i64, i64)> = sqlx::query_as(stmt(&self.sql.queue_depths))
            .bind(&queues)
            .bind(&priorities)
            .bind(per_lane)
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("count the queues' depths", e))?;
        let mut out: Vec<QueueDepth> = Vec::new();
        let most = i64::try_from(queues.len()).unwrap_or(i64::MAX) >= MOST_LANES;
        for (queue, priority, ready, delayed, scanned) in rows {
            if ready == 0 && delayed == 0 && scanned < per_lane {
                continue; // (only rows of jobs claimed since)
            }
            if out.last().is_none_or(|d| d.queue != queue) {
                out.push(QueueDepth {
                    queue,
                    ..QueueDepth::default()
                });
            }
            let Some(depth) = out.last_mut() else {
                continue;
            };
            depth.at_least |= scanned >= per_lane;
            depth.delayed += u64::try_from(delayed).unwrap_or(0);
            if ready > 0 {
                depth.ready.push(PriorityDepth {
                    priority,
                    ready: u64::try_from(ready).unwrap_or(0),
                });
            }
        }
        if most {
            if let Some(last) = out.last_mut() {
                last.at_least = true;
            }
        }
        Ok(out)
    }

    async fn delete_finished(&self, id: JobId) -> Result<crate::store::Deleted> {
        use crate::store::Deleted;
        self.shared.count_statement();
        let row: Option<(String, bool, bool)> = sqlx::query_as(stmt(&self.sql.delete_finished))
            .bind(*id.as_uuid())
            .fetch_optional(&self.shared.pool)
            .await
            .map_err(|e| db_error("delete a job", e))?;
        Ok(match row {
            None => Deleted::NotFound,
            Some((_, _, true)) => Deleted::Deleted,
            Some((_, true, false)) => Deleted::Step,
            Some((state, false, false)) => Deleted::NotFinished(parse_state(&state)?),
        })
    }

    async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<bool> {
        let schema = self.shared.quoted_schema();
        let sql = if paused {
            format!(
                "INSERT INTO {schema}.paused_queues (queue, paused_at) VALUES ($1, now()) \
                 ON CONFLICT (queue) DO NOTHING"
            )
        } else {
            format!("DELETE FROM {schema}.paused_queues WHERE queue = $1")
        };
        self.shared.count_statement();
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(queue)
            .execute(&self.shared.pool)
            .await
            .map_err(|e| db_error("pause or resume a queue", e))?;
        if done.rows_affected() > 0 && !paused {
            // Workers waiting for work look again.
            self.shared.count_statement();
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&self.shared.channel)
                .bind(queue)
                .execute(&self.shared.pool)
                .await
                .map_err(|e| db_error("announce a resumed queue", e))?;
        }
        Ok(done.rows_affected() > 0)
    }

    async fn claim_due(&self, req: &Reserve<'_>) -> Result<Vec<Claim>> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        self.shared
            .poll(req.wait, || self.claim_due_once(req))
            .await
    }

    async fn finish_and_claim(
        &self,
        transitions: Vec<Transition>,
        req: &Reserve<'_>,
    ) -> Result<FinishAndClaim> {
        let distinct = {
            let mut seen = std::collections::HashSet::with_capacity(transitions.len());
            transitions.iter().all(|t| seen.insert(t.id))
        };
        if transitions.is_empty() || req.max == 0 || req.queues.is_empty() || !distinct {
            // Nothing to fuse, or a batch that names a job twice (answered as if run one by
            // one): the finish, then the claim.
            return crate::store::finish_then_claim(self, transitions, req).await;
        }
        let (results, claims) = self.finish_and_claim_once(transitions, req).await?;
        Ok(FinishAndClaim::new(results, claims))
    }

    fn schedules(&self) -> Option<std::sync::Arc<dyn crate::schedule::ScheduleStore>> {
        Some(std::sync::Arc::clone(&self.schedules)
            as std::sync::Arc<dyn crate::schedule::ScheduleStore>)
    }

    async fn stats(&self) -> Result<QueueStats> {
        // Queued, running and dead from the counters; of the queued, the ones not yet due
        // through their own small index. Two short reads, whatever the backlog.
        let counts = self.counts().await?;
        self.shared.count_statement();
        let delayed = sqlx::query_as::<_, (String, i64)>(stmt(&self.sql.queue_delayed))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("count delayed jobs", e))?;
        let mut per_kind: BTreeMap<String, KindQueueStats> = BTreeMap::new();
        for (kind, tally) in counts.per_kind {
            if tally.queued > 0 || tally.running > 0 || tally.dead > 0 {
                per_kind.insert(
                    kind,
                    KindQueueStats {
                        ready: tally.queued,
                        in_flight: tally.running,
                        dead: tally.dead,
                        ..KindQueueStats::default()
                    },
                );
            }
        }
        for (kind, n) in delayed {
            let n = u64::try_from(n).unwrap_or(0);
            let k = per_kind.entry(kind).or_default();
            // (two reads, so a job claimed or due between them is not counted twice)
            k.delayed = n.min(k.ready);
            k.ready -= k.delayed;
        }
        let mut stats = QueueStats::default();
        for k in per_kind.values() {
            stats.ready += k.ready;
            stats.delayed += k.delayed;
            stats.in_flight += k.in_flight;
            stats.dead += k.dead;
        }
        stats.per_kind = per_kind;
        Ok(stats)
    }
}
