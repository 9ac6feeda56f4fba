use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use crate::Result;
use crate::job::{JobId, WorkerId};
use crate::postgres::{Shared, db_error, stmt};
use crate::queue::{
    DeadLetter, Envelope, KindQueueStats, Lease, QueueManager, QueueStats, Requeue, Reserve,
};
use crate::util::dur_micros;

/// Add envelopes; an id already queued is skipped. Wakes listeners.
const ENQUEUE: &str = r"
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::smallint[],
                         $5::timestamptz[], $6::int[])
        WITH ORDINALITY AS t(id, kind, queue, priority, run_at, attempt, ord)
),
ins AS (
    INSERT INTO {s}.queue_entries (id, kind, queue, priority, run_at, attempt)
    SELECT id, kind, queue, priority, run_at, attempt FROM input ORDER BY ord
    ON CONFLICT (id) DO NOTHING
    RETURNING queue, run_at
),
notified AS (
    SELECT pg_notify($7, queue || CASE WHEN due THEN ''
        ELSE ' ' || floor(extract(epoch FROM at) * 1000000)::bigint END)
    FROM (SELECT queue, run_at <= now() AS due, min(run_at) AS at FROM ins GROUP BY 1, 2) q
)
SELECT count(*) FROM notified";

/// Lease due entries (and entries whose lease ran out, due again now) by priority, run_at
/// and arrival, skipping rows other workers are taking.
const RESERVE: &str = r"
WITH expired AS (
    SELECT id, priority, seq FROM {s}.queue_entries
    WHERE lease_expires_at <= now() AND queue = ANY($1::text[])
    ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
),
ready AS (
    SELECT e.id, e.priority, e.run_at, e.seq FROM unnest($1::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at, seq FROM {s}.queue_entries
        WHERE lease_expires_at IS NULL AND queue = q.name AND run_at <= now()
        ORDER BY priority DESC, run_at, seq
        LIMIT $2 FOR UPDATE SKIP LOCKED
    ) e
),
picked AS (
    SELECT id, priority, run_at, seq, expired FROM (
        SELECT id, priority, now() AS run_at, seq, true AS expired FROM expired
        UNION ALL
        SELECT id, priority, run_at, seq, false FROM ready
    ) c
    ORDER BY priority DESC, run_at, seq LIMIT $2
),
upd AS (
    UPDATE {s}.queue_entries e SET
        deliveries = e.deliveries + 1,
        leased_by = $3,
        lease_expires_at = now() + $4 * interval '1 microsecond',
        run_at = CASE WHEN p.expired THEN now() ELSE e.run_at END
    FROM picked p WHERE e.id = p.id
    RETURNING e.id, e.kind, e.queue, e.priority, e.run_at, e.attempt, e.deliveries,
              e.lease_expires_at, e.seq
)
SELECT id, kind, queue, priority, run_at, attempt, deliveries, lease_expires_at FROM upd
ORDER BY priority DESC, run_at, seq";

const EXTEND: &str = r"
UPDATE {s}.queue_entries e SET lease_expires_at = now() + $3 * interval '1 microsecond'
FROM unnest($1::uuid[], $2::bigint[]) AS t(id, token)
WHERE e.id = t.id AND e.deliveries = t.token AND e.lease_expires_at IS NOT NULL
RETURNING e.id, e.deliveries";

const ACK: &str = r"
DELETE FROM {s}.queue_entries e
USING unnest($1::uuid[], $2::bigint[]) AS t(id, token)
WHERE e.id = t.id AND e.deliveries = t.token AND e.lease_expires_at IS NOT NULL";

const REQUEUE: &str = r"
WITH upd AS (
    UPDATE {s}.queue_entries e SET
        run_at = t.run_at,
        attempt = t.attempt,
        seq = nextval('{s}.queue_seq'),
        leased_by = NULL,
        lease_expires_at = NULL
    FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[], $4::int[])
        AS t(id, token, run_at, attempt)
    WHERE e.id = t.id AND e.deliveries = t.token AND e.lease_expires_at IS NOT NULL
    RETURNING e.queue, e.run_at
),
notified AS (
    SELECT pg_notify($5, queue || CASE WHEN due THEN ''
        ELSE ' ' || floor(extract(epoch FROM at) * 1000000)::bigint END)
    FROM (SELECT queue, run_at <= now() AS due, min(run_at) AS at FROM upd GROUP BY 1, 2) q
)
SELECT count(*) FROM notified";

const DISCARD: &str = r"
DELETE FROM {s}.queue_entries
WHERE id = ANY($1::uuid[]) AND queue = $2 AND lease_expires_at IS NULL";

const DEAD_LETTER: &str = r"
WITH del AS (
    DELETE FROM {s}.queue_entries e
    USING unnest($1::uuid[], $2::bigint[], $3::text[]) AS t(id, token, reason)
    WHERE e.id = t.id AND e.deliveries = t.token AND e.lease_expires_at IS NOT NULL
    RETURNING e.id, e.kind, e.queue, e.priority, e.run_at, e.attempt, t.reason
)
INSERT INTO {s}.queue_dead (id, kind, queue, priority, run_at, attempt, reason, at)
SELECT id, kind, queue, priority, run_at, attempt, reason, now() FROM del";

const STATS: &str = r"
SELECT kind, sum(ready)::bigint AS ready, sum(delayed)::bigint AS delayed,
       sum(in_flight)::bigint AS in_flight, sum(dead)::bigint AS dead
FROM (
    SELECT kind,
        count(*) FILTER (WHERE (lease_expires_at IS NULL AND run_at <= now())
                            OR lease_expires_at <= now()) AS ready,
        count(*) FILTER (WHERE lease_expires_at IS NULL AND run_at > now()) AS delayed,
        count(*) FILTER (WHERE lease_expires_at > now()) AS in_flight,
        0 AS dead
    FROM {s}.queue_entries GROUP BY kind
    UNION ALL
    SELECT kind, 0, 0, 0, count(*) FROM {s}.queue_dead GROUP BY kind
) k
GROUP BY kind";

const DEAD_LETTERS: &str = r"
SELECT id, kind, queue, priority, run_at, attempt, reason FROM {s}.queue_dead
ORDER BY seq LIMIT $1";

const PURGE_DEAD: &str = r"
WITH victims AS (
    SELECT seq FROM {s}.queue_dead WHERE at < now() - $1 * interval '1 microsecond'
    ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED
)
DELETE FROM {s}.queue_dead d USING victims v WHERE d.seq = v.seq";

struct Statements {
    enqueue: Arc<str>,
    reserve: Arc<str>,
    extend: Arc<str>,
    ack: Arc<str>,
    requeue: Arc<str>,
    discard: Arc<str>,
    dead_letter: Arc<str>,
    stats: Arc<str>,
    dead_letters: Arc<str>,
    purge_dead: Arc<str>,
}

/// A delivery queue in PostgreSQL, for deployments whose state lives elsewhere (the
/// `queue_entries` table; dead letters in `queue_dead`, kept for
/// [`PostgresConfig::retention`](crate::postgres::PostgresConfig::retention)).
///
/// `reserve` leases due entries by priority, run_at and arrival with
/// `FOR UPDATE SKIP LOCKED`, in one statement per batch; an entry whose lease ran out is
/// reserved again by the same statement. Every lease carries a delivery count as its token,
/// so a stale holder can neither extend nor acknowledge a newer delivery. Idle reserves are
/// woken by `LISTEN/NOTIFY`, with polling as the backstop.
///
/// With PostgreSQL as state too, the job rows themselves are the better queue: see
/// [`JobStore`](crate::store::JobStore). Get one from
/// [`PostgresBackend::queue`](crate::postgres::PostgresBackend::queue).
pub struct PostgresQueue {
    shared: Arc<Shared>,
    sql: Statements,
}

impl std::fmt::Debug for PostgresQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresQueue")
            .field("schema", &self.shared.config.schema)
            .finish_non_exhaustive()
    }
}

#[derive(FromRow)]
struct LeaseRow {
    id: Uuid,
    kind: String,
    queue: String,
    priority: i16,
    run_at: DateTime<Utc>,
    attempt: i32,
    deliveries: i64,
    lease_expires_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct StatsRow {
    kind: String,
    ready: i64,
    delayed: i64,
    in_flight: i64,
    dead: i64,
}

#[derive(FromRow)]
struct DeadRow {
    id: Uuid,
    kind: String,
    queue: String,
    priority: i16,
    run_at: DateTime<Utc>,
    attempt: i32,
    reason: String,
}

fn count_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn token_of(lease: &Lease) -> i64 {
    i64::try_from(lease.token).unwrap_or(i64::MAX)
}

fn attempt_i32(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

impl PostgresQueue {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let sql = Statements {
            enqueue: shared.sql(ENQUEUE),
            reserve: shared.sql(RESERVE),
            extend: shared.sql(EXTEND),
            ack: shared.sql(ACK),
            requeue: shared.sql(REQUEUE),
            discard: shared.sql(DISCARD),
            dead_letter: shared.sql(DEAD_LETTER),
            stats: shared.sql(STATS),
            dead_letters: shared.sql(DEAD_LETTERS),
            purge_dead: shared.sql(PURGE_DEAD),
        };
        Self { shared, sql }
    }

    /// The dead-lettered jobs kept, oldest first, with their reasons (at most `limit`).
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<(Envelope, String)>> {
        self.shared.count_statement();
        let rows = sqlx::query_as::<_, DeadRow>(stmt(&self.sql.dead_letters))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("read dead letters", e))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    Envelope {
                        id: JobId::from_uuid(r.id),
                        kind: r.kind.into(),
                        queue: r.queue.into(),
                        priority: r.priority,
                        run_at: r.run_at,
                        attempt: u32::try_from(r.attempt).unwrap_or(0),
                    },
                    r.reason,
                )
            })
            .collect())
    }

    /// Delete dead letters older than the configured retention, in batches; returns how
    /// many were deleted.
    pub async fn purge_dead_letters(&self) -> Result<u64> {
        let config = &self.shared.config;
        let batch = u64::try_from(config.purge_batch).unwrap_or(u64::MAX);
        let mut total = 0;
        loop {
            self.shared.count_statement();
            let deleted = sqlx::query(stmt(&self.sql.purge_dead))
                .bind(dur_micros(config.retention))
                .bind(i64::try_from(batch).unwrap_or(i64::MAX))
                .execute(&self.shared.pool)
                .await
                .map_err(|e| db_error("delete old dead letters", e))?
                .rows_affected();
            total += deleted;
            if deleted < batch {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    async fn reserve_once(&self, req: &Reserve<'_>) -> Result<Vec<Lease>> {
        self.shared.count_statement();
        let rows = sqlx::query_as::<_, LeaseRow>(stmt(&self.sql.reserve))
            .bind(req.queues)
            .bind(i64::try_from(req.max).unwrap_or(i64::MAX))
            .bind(req.worker.as_str())
            .bind(dur_micros(req.lease))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("reserve queued jobs", e))?;
        Ok(rows
            .into_iter()
            .map(|r| Lease {
                envelope: Envelope {
                    id: JobId::from_uuid(r.id),
                    kind: r.kind.into(),
                    queue: r.queue.into(),
                    priority: r.priority,
                    run_at: r.run_at,
                    attempt: u32::try_from(r.attempt).unwrap_or(0),
                },
                worker: WorkerId::clone(req.worker),
                token: u64::try_from(r.deliveries).unwrap_or(0),
                receipt: None,
                expires_at: r.lease_expires_at,
            })
            .collect())
    }

    fn ids_and_tokens<'a>(leases: impl Iterator<Item = &'a Lease>) -> (Vec<Uuid>, Vec<i64>) {
        leases.map(|l| (*l.id().as_uuid(), token_of(l))).unzip()
    }
}

#[async_trait]
impl QueueManager for PostgresQueue {
    async fn enqueue(&self, jobs: &[Envelope]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = jobs.iter().map(|j| *j.id.as_uuid()).collect();
        let kinds: Vec<&str> = jobs.iter().map(|j| &*j.kind).collect();
        let queues: Vec<&str> = jobs.iter().map(|j| &*j.queue).collect();
        let priorities: Vec<i16> = jobs.iter().map(|j| j.priority).collect();
        let run_ats: Vec<DateTime<Utc>> = jobs.iter().map(|j| j.run_at).collect();
        let attempts: Vec<i32> = jobs.iter().map(|j| attempt_i32(j.attempt)).collect();
        self.shared.count_statement();
        sqlx::query(stmt(&self.sql.enqueue))
            .bind(ids)
            .bind(kinds)
            .bind(queues)
            .bind(priorities)
            .bind(run_ats)
            .bind(attempts)
            .bind(&self.shared.channel)
            .execute(&self.shared.pool)
            .await
            .map_err(|e| db_error("enqueue jobs", e))?;
        Ok(())
    }

    async fn reserve(&self, req: &Reserve<'_>) -> Result<Vec<Lease>> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        self.shared.poll(req.wait, || self.reserve_once(req)).await
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, tokens) = Self::ids_and_tokens(leases.iter());
        self.shared.count_statement();
        let held: Vec<(Uuid, i64)> = sqlx::query_as(stmt(&self.sql.extend))
            .bind(ids)
            .bind(tokens)
            .bind(dur_micros(lease))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("extend queue leases", e))?;
        let held: HashSet<(Uuid, i64)> = held.into_iter().collect();
        Ok(leases
            .iter()
            .map(|l| held.contains(&(*l.id().as_uuid(), token_of(l))))
            .collect())
    }

    async fn ack(&self, leases: &[Lease]) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let (ids, tokens) = Self::ids_and_tokens(leases.iter());
        self.shared.count_statement();
        sqlx::query(stmt(&self.sql.ack))
            .bind(ids)
            .bind(tokens)
            .execute(&self.shared.pool)
            .await
            .map_err(|e| db_error("acknowledge deliveries", e))?;
        Ok(())
    }

    async fn requeue(&self, items: &[Requeue]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let (ids, tokens) = Self::ids_and_tokens(items.iter().map(|i| &i.lease));
        let run_ats: Vec<DateTime<Utc>> = items.iter().map(|i| i.run_at).collect();
        let attempts: Vec<i32> = items.iter().map(|i| attempt_i32(i.attempt)).collect();
        self.shared.count_statement();
        sqlx::query(stmt(&self.sql.requeue))
            .bind(ids)
            .bind(tokens)
            .bind(run_ats)
            .bind(attempts)
            .bind(&self.shared.channel)
            .execute(&self.shared.pool)
            .await
            .map_err(|e| db_error("requeue deliveries", e))?;
        Ok(())
    }

    async fn discard(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
        self.shared.count_statement();
        let done = sqlx::query(stmt(&self.sql.discard))
            .bind(ids)
            .bind(queue)
            .execute(&self.shared.pool)
            .await
            .map_err(|e| db_error("discard deliveries", e))?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    async fn dead_letter(&self, items: &[DeadLetter]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let (ids, tokens) = Self::ids_and_tokens(items.iter().map(|i| &i.lease));
        let reasons: Vec<&str> = items.iter().map(|i| i.reason.as_str()).collect();
        self.shared.count_statement();
        sqlx::query(stmt(&self.sql.dead_letter))
            .bind(ids)
            .bind(tokens)
            .bind(reasons)
            .execute(&self.shared.pool)
            .await
            .map_err(|e| db_error("dead-letter deliveries", e))?;
        Ok(())
    }

    async fn stats(&self) -> Result<QueueStats> {
        self.shared.count_statement();
        let rows = sqlx::query_as::<_, StatsRow>(stmt(&self.sql.stats))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("count queue entries", e))?;
        let mut stats = QueueStats::default();
        let mut per_kind = BTreeMap::new();
        for r in rows {
            let k = KindQueueStats {
                ready: count_u64(r.ready),
                delayed: count_u64(r.delayed),
                in_flight: count_u64(r.in_flight),
                dead: count_u64(r.dead),
            };
            stats.ready += k.ready;
            stats.delayed += k.delayed;
            stats.in_flight += k.in_flight;
            stats.dead += k.dead;
            per_kind.insert(r.kind, k);
        }
        stats.per_kind = per_kind;
        Ok(stats)
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
