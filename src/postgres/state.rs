use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};
use uuid::Uuid;

use crate::job::{JobEvent, JobId, JobRecord, JobState, Payload, WorkerId};
use crate::postgres::{Shared, db_error, micros, random_shard, stmt};
use crate::queue::{KindQueueStats, QueueStats, Reserve};
use crate::state::{
    CancelOutcome, Claim, Created, Finish, Heartbeat, Held, JobFilter, Order, Page, Paged,
    StateCounts, StateManager, Transition, TransitionResult,
};
use crate::store::JobStore;
use crate::{Error, ErrorKind, Result};

/// What a claim reads of the rows it locks.
const CLAIM_COLUMNS: &str = "id, kind, state, run_at, attempt, max_attempts, lease_owner, \
    lease_expires_at, cancel_requested, started_at, claimed_by, claimed_from, claim_attempt, \
    claim_reason, claim_version";

/// The columns of a job row, as [`JobRow`] reads them.
const JOB_COLUMNS: &str = "id, kind, queue, payload::text AS payload, state, priority, attempt, \
    max_attempts, timeout_ms, idempotency_key, tags, tenant, strategy, run_at, created_at, \
    updated_at, started_at, finished_at, result::text AS result, last_error, lease_owner, \
    lease_expires_at, cancel_requested, version";

/// The same, qualified by the alias `j`.
const JOB_COLUMNS_J: &str = "j.id, j.kind, j.queue, j.payload::text AS payload, j.state, \
    j.priority, j.attempt, j.max_attempts, j.timeout_ms, j.idempotency_key, j.tags, j.tenant, \
    j.strategy, j.run_at, j.created_at, j.updated_at, j.started_at, j.finished_at, \
    j.result::text AS result, j.last_error, j.lease_owner, j.lease_expires_at, \
    j.cancel_requested, j.version";

/// Insert a batch of jobs (one `UNNEST` of column arrays), their times by the server's clock
/// (`run_at` keeps its distance from the submitter's `created_at`); a taken id or idempotency key
/// skips the row. Counts and notifies in the same statement (the notification is the outer
/// side of the answer, so it always runs), and answers only the rows it skipped (with the
/// holder of their key, if it can see one), or one empty row.
const CREATE: &str = r"
WITH ins AS (
    INSERT INTO {s}.jobs (id, kind, queue, payload, state, priority, attempt, max_attempts,
        timeout_ms, idempotency_key, tags, tenant, strategy, run_at, created_at, updated_at,
        version)
    -- Times by this server's clock: the submitter's `run_at - created_at` from now.
    SELECT id, kind, queue, payload::json, 'queued', priority, 0, max_attempts, timeout_ms,
        idempotency_key,
        CASE WHEN tags IS NULL THEN '{}'::text[]
             ELSE ARRAY(SELECT json_array_elements_text(tags::json)) END,
        tenant, strategy, now() + (run_at - created_at), now(), now(), 1
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::smallint[],
                $6::int[], $7::bigint[], $8::text[], $9::text[], $10::text[],
                $11::text[], $12::timestamptz[], $13::timestamptz[])
        WITH ORDINALITY AS t(id, kind, queue, payload, priority, max_attempts, timeout_ms,
                             idempotency_key, tags, tenant, strategy, run_at, created_at, ord)
    ORDER BY ord
    ON CONFLICT DO NOTHING
    RETURNING id, kind, queue, run_at, idempotency_key
),
counted AS (
    INSERT INTO {s}.job_counts AS c (kind, state, shard, n)
    SELECT kind, 'queued', $14, n FROM (SELECT kind, count(*) AS n FROM ins GROUP BY kind) g
    ORDER BY kind
    ON CONFLICT (kind, state, shard) DO UPDATE SET n = c.n + excluded.n
),
notified AS (
    SELECT pg_notify($15, queue || CASE WHEN due THEN ''
        ELSE ' ' || floor(extract(epoch FROM at) * 1000000)::bigint END)
    FROM (SELECT queue, run_at <= now() AS due, min(run_at) AS at FROM ins GROUP BY 1, 2) q
)
SELECT s.ord, s.holder, s.id_taken
FROM (SELECT count(*) FROM notified) n
LEFT JOIN (
    -- Looked for only when some row was skipped (a one-time test on the count).
    SELECT i.ord,
        CASE WHEN i.idempotency_key IS NOT NULL THEN coalesce(
            (SELECT x.id FROM ins x WHERE x.idempotency_key = i.idempotency_key LIMIT 1),
            (SELECT e.id FROM {s}.jobs e WHERE e.idempotency_key = i.idempotency_key))
        END AS holder,
        EXISTS (SELECT 1 FROM {s}.jobs e WHERE e.id = i.id) AS id_taken
    FROM unnest($1::uuid[], $8::text[]) WITH ORDINALITY AS i(id, idempotency_key, ord)
    LEFT JOIN ins ON ins.id = i.id
    WHERE ins.id IS NULL AND (SELECT count(*) FROM ins) < cardinality($1::uuid[])
) s ON true
";

/// The holders of idempotency keys, read in a fresh snapshot (for keys taken by a
/// concurrent submit that committed after the create statement began).
const KEY_HOLDERS: &str =
    "SELECT idempotency_key, id FROM {s}.jobs WHERE idempotency_key = ANY($1::text[])";

/// The part of a claim after the candidate rows are locked (CTE `locked`): decide each row
/// (claim, takeover, attempts spent, not due, skip), update, record events, count.
/// `{worker}`, `{lease}` (micros) and `{shard}` are parameter placeholders.
const CLAIM_TAIL: &str = r"
decided AS (
    SELECT l.*,
        CASE
            WHEN l.state = 'queued' AND l.run_at > now() THEN 'not_due'
            WHEN l.state = 'queued' THEN 'claimed'
            WHEN l.state = 'running' AND l.lease_expires_at <= now()
                 AND l.cancel_requested THEN 'cancelled'
            WHEN l.state = 'running' AND l.lease_expires_at <= now()
                 AND l.attempt >= l.max_attempts THEN 'exhausted'
            WHEN l.state = 'running' AND l.lease_expires_at <= now() THEN 'claimed'
            ELSE 'skipped'
        END AS outcome,
        CASE WHEN l.state = 'running' THEN
            CASE WHEN l.cancel_requested
                THEN 'cancelled by request; the lease of ' || coalesce(l.lease_owner, 'unknown')
                     || ' expired during attempt ' || l.attempt
                WHEN l.attempt >= l.max_attempts
                THEN 'worker_lost: lease of ' || coalesce(l.lease_owner, 'unknown')
                     || ' expired during attempt ' || l.attempt || ' of ' || l.max_attempts
                     || '; no attempts left'
                ELSE 'lease of ' || coalesce(l.lease_owner, 'unknown')
                     || ' expired during attempt ' || l.attempt || '; taken over'
            END
        END AS reason
    FROM locked l
),
upd AS (
    -- `ends`: a dead worker's job that ends here (attempts spent: dead; cancel asked: cancelled).
    UPDATE {s}.jobs j SET
        state = CASE d.outcome WHEN 'exhausted' THEN 'dead' WHEN 'cancelled' THEN 'cancelled'
                               ELSE 'running' END,
        attempt = CASE WHEN d.ends THEN j.attempt ELSE j.attempt + 1 END,
        lease_owner = CASE WHEN d.ends THEN NULL ELSE {worker} END,
        lease_expires_at = CASE WHEN d.ends THEN NULL
                                ELSE now() + {lease} * interval '1 microsecond' END,
        started_at = CASE WHEN d.ends THEN j.started_at ELSE now() END,
        finished_at = CASE WHEN d.ends THEN now() ELSE j.finished_at END,
        last_error = CASE WHEN d.outcome = 'exhausted' THEN d.reason ELSE j.last_error END,
        claimed_by = CASE WHEN d.ends THEN NULL ELSE {worker} END,
        claimed_from = CASE WHEN d.ends THEN NULL ELSE d.state END,
        claim_attempt = CASE WHEN d.ends THEN NULL ELSE j.attempt + 1 END,
        claim_reason = CASE WHEN d.ends THEN NULL ELSE d.reason END,
        claim_version = CASE WHEN d.ends THEN NULL ELSE j.version + 1 END,
        updated_at = now(),
        version = j.version + 1
    FROM (SELECT *, outcome IN ('exhausted', 'cancelled') AS ends FROM decided) d
    WHERE j.id = d.id AND d.outcome IN ('claimed', 'exhausted', 'cancelled')
    RETURNING d.state AS from_state, {job_columns_j}
),
events AS (
    INSERT INTO {s}.job_events (job_id, version, at, from_state, to_state, attempt, worker,
                                reason)
    -- The previous claim, which the row now forgets.
    SELECT d.id, d.claim_version, d.started_at, d.claimed_from, 'running', d.claim_attempt,
           d.claimed_by, d.claim_reason
    FROM decided d JOIN upd u ON u.id = d.id
    WHERE d.claimed_by IS NOT NULL
    UNION ALL
    -- A dead worker's job that ends: the move to dead or cancelled. (A claim itself is kept
    -- on the row.)
    SELECT u.id, u.version, now(), 'running', u.state, u.attempt, {worker}, d.reason
    FROM upd u JOIN decided d ON d.id = u.id
    WHERE d.outcome IN ('exhausted', 'cancelled')
),
counted AS (
    INSERT INTO {s}.job_counts AS c (kind, state, shard, n)
    SELECT kind, st, {shard}, sum(delta) FROM (
        SELECT kind, from_state AS st, -1 AS delta FROM upd WHERE from_state <> state
        UNION ALL
        SELECT kind, state, 1 FROM upd WHERE from_state <> state
    ) x
    GROUP BY kind, st HAVING sum(delta) <> 0 ORDER BY kind, st
    ON CONFLICT (kind, state, shard) DO UPDATE SET n = c.n + excluded.n
)";

/// Claim named jobs (the generic path: a queue delivered them). Locks in id order so
/// concurrent batches cannot deadlock.
const CLAIM_IDS_HEAD: &str = r"
WITH locked AS (
    SELECT {claim_columns} FROM {s}.jobs WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
),";

const CLAIM_IDS_FOOT: &str = r"
SELECT i.id AS input_id, coalesce(d.outcome, 'skipped') AS outcome, d.state AS found_state,
       d.run_at AS found_run_at, d.reason AS found_reason, u.*
FROM unnest($1::uuid[]) WITH ORDINALITY AS i(id, ord)
LEFT JOIN decided d ON d.id = i.id
LEFT JOIN upd u ON u.id = i.id
ORDER BY i.ord";

/// Claim due jobs straight from the table (this store is the queue): expired leases first
/// (when `$6` asks for them: that look is kept off most claims), then due jobs of each queue
/// by priority, run_at and id, skipping rows other workers hold.
const CLAIM_DUE_HEAD: &str = r"
WITH expired AS (
    SELECT {claim_columns} FROM {s}.jobs
    WHERE $6 AND state = 'running' AND lease_expires_at <= now() AND queue = ANY($1::text[])
    ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
),
due AS (
    SELECT j.* FROM unnest($1::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT {claim_columns}, priority FROM {s}.jobs
        WHERE state = 'queued' AND queue = q.name AND run_at <= now()
        ORDER BY priority DESC, run_at, id
        LIMIT $2 FOR UPDATE SKIP LOCKED
    ) j
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT $2
),
locked AS (
    SELECT {claim_columns} FROM expired
    UNION ALL
    (SELECT {claim_columns} FROM due LIMIT greatest($2 - (SELECT count(*) FROM expired), 0))
),";

const CLAIM_DUE_FOOT: &str = r"
SELECT u.id AS input_id, d.outcome, NULL::text AS found_state,
       NULL::timestamptz AS found_run_at, d.reason AS found_reason, u.*
FROM upd u JOIN decided d ON d.id = u.id
ORDER BY u.priority DESC, u.run_at, u.id";

/// Extend the leases of the claims still held (fenced on each claim's token); answers them.
/// The rows are locked in id order first, as `FINISH` locks them: a heartbeat and a finish
/// of the same worker's jobs wait for one another but never deadlock.
const HEARTBEAT: &str = r"
WITH held AS MATERIALIZED (
    SELECT j.id FROM {s}.jobs j
    JOIN unnest($1::uuid[], $2::bigint[]) AS h(id, token) ON j.id = h.id
    WHERE j.state = 'running' AND j.claim_version = h.token
    ORDER BY j.id
    FOR UPDATE OF j
)
UPDATE {s}.jobs j SET lease_expires_at = now() + $3 * interval '1 microsecond'
FROM held WHERE j.id = held.id
RETURNING j.id, j.claim_version, j.cancel_requested";

/// Finish a batch of attempts, each fenced by its claim's token; a cancel requested while
/// the job ran turns a put-back into `cancelled`. Events (a long history trimmed to the
/// first and the latest), counts and a wake-up for jobs put back due now, all in the one
/// statement. The rows are locked in id order first (as `HEARTBEAT` locks them), so
/// concurrent statements never deadlock; rows it does not touch are answered from the
/// statement's snapshot. Delays count from the server's clock.
const FINISH: &str = r"
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::bigint[],
                         $6::text[], $7::text[])
        WITH ORDINALITY AS t(id, worker, token, op, delay_us, message, result, ord)
),
locked AS MATERIALIZED (
    SELECT j.id FROM {s}.jobs j JOIN input i ON j.id = i.id
    WHERE j.state = 'running' AND j.claim_version = i.token
    ORDER BY j.id
    FOR UPDATE OF j
),
upd AS (
    UPDATE {s}.jobs j SET
        state = CASE WHEN i.op = 'succeeded' THEN 'succeeded'
                     WHEN i.op = 'dead' THEN 'dead'
                     WHEN i.op = 'cancelled' OR j.cancel_requested THEN 'cancelled'
                     ELSE 'queued' END,
        result = CASE WHEN i.op = 'succeeded' THEN i.result::json ELSE j.result END,
        run_at = CASE WHEN j.cancel_requested THEN j.run_at
                      WHEN i.op IN ('retry', 'defer')
                          THEN now() + i.delay_us * interval '1 microsecond'
                      WHEN i.op = 'release' THEN now()
                      ELSE j.run_at END,
        attempt = CASE WHEN i.op IN ('defer', 'release') AND NOT j.cancel_requested
                       THEN greatest(j.attempt - 1, 0) ELSE j.attempt END,
        last_error = CASE WHEN i.op = 'dead' OR (i.op = 'retry' AND NOT j.cancel_requested)
                          THEN i.message ELSE j.last_error END,
        finished_at = CASE WHEN i.op IN ('succeeded', 'dead', 'cancelled') OR j.cancel_requested
                           THEN now() ELSE j.finished_at END,
        lease_owner = NULL,
        lease_expires_at = NULL,
        updated_at = now(),
        version = j.version + 1
    FROM input i JOIN locked l ON l.id = i.id
    WHERE j.id = i.id AND j.state = 'running' AND j.claim_version = i.token
    RETURNING j.id, j.kind, j.queue, j.state, j.attempt, j.version, j.run_at, i.worker,
        CASE WHEN i.op IN ('retry', 'defer', 'release') AND j.state = 'cancelled'
             THEN 'cancelled by request' ELSE i.message END AS message
),
events AS (
    INSERT INTO {s}.job_events (job_id, version, at, from_state, to_state, attempt, worker,
                                reason)
    SELECT id, version, now(), 'running', state, attempt, worker, message FROM upd
),
-- A job with more changes than the history keeps (versions count every change, so most jobs
-- are never looked at): drop all but its first event and the latest $10 - 4 (with the
-- one written above, submission and the latest claim kept on the row: $10 in all).
trimmed AS (
    DELETE FROM {s}.job_events e USING upd u
    WHERE u.version > $10 AND e.job_id = u.id
      AND e.version > (SELECT min(f.version) FROM {s}.job_events f WHERE f.job_id = u.id)
      AND e.version < (SELECT g.version FROM {s}.job_events g WHERE g.job_id = u.id
                       ORDER BY g.version DESC OFFSET $10 - 5 LIMIT 1)
),
counted AS (
    INSERT INTO {s}.job_counts AS c (kind, state, shard, n)
    SELECT kind, st, $8, sum(delta) FROM (
        SELECT kind, 'running' AS st, -1 AS delta FROM upd
        UNION ALL
        SELECT kind, state, 1 FROM upd
    ) x
    GROUP BY kind, st HAVING sum(delta) <> 0 ORDER BY kind, st
    ON CONFLICT (kind, state, shard) DO UPDATE SET n = c.n + excluded.n
),
notified AS (
    SELECT pg_notify($9, queue)
    FROM (SELECT DISTINCT queue FROM upd WHERE state = 'queued' AND run_at <= now()) q
)
SELECT cur.state AS cur_state, cur.claim_version AS cur_claim, cur.lease_owner AS cur_owner,
       u.state AS new_state, u.version AS new_version,
       (SELECT count(*) FROM notified) AS notified
FROM input i
LEFT JOIN upd u ON u.id = i.id
LEFT JOIN {s}.jobs cur ON u.id IS NULL AND cur.id = i.id
ORDER BY i.ord";

/// Cancel one job: queued at once, running by setting the flag its heartbeat reports.
const CANCEL: &str = r"
WITH locked AS (
    SELECT id, kind, state FROM {s}.jobs WHERE id = $1 FOR UPDATE
),
upd AS (
    UPDATE {s}.jobs j SET
        state = CASE WHEN l.state = 'queued' THEN 'cancelled' ELSE j.state END,
        cancel_requested = j.cancel_requested OR l.state = 'running',
        finished_at = CASE WHEN l.state = 'queued' THEN now() ELSE j.finished_at END,
        updated_at = now(),
        version = j.version + 1
    FROM locked l
    WHERE j.id = l.id AND l.state IN ('queued', 'running')
    RETURNING j.id, j.kind, j.version, j.attempt, l.state AS from_state, j.state
),
events AS (
    INSERT INTO {s}.job_events (job_id, version, at, from_state, to_state, attempt, worker,
                                reason)
    SELECT id, version, now(), from_state, state, attempt, NULL, $2
    FROM upd WHERE from_state = 'queued'
),
counted AS (
    INSERT INTO {s}.job_counts AS c (kind, state, shard, n)
    SELECT kind, st, $3, sum(delta) FROM (
        SELECT kind, 'queued' AS st, -1 AS delta FROM upd WHERE from_state = 'queued'
        UNION ALL
        SELECT kind, 'cancelled', 1 FROM upd WHERE from_state = 'queued'
    ) x
    GROUP BY kind, st ORDER BY kind, st
    ON CONFLICT (kind, state, shard) DO UPDATE SET n = c.n + excluded.n
)
SELECT state FROM locked";

/// A job's history: submission and the latest claim from its row, the rest from
/// `job_events`.
const EVENTS: &str = r"
SELECT at, from_state, to_state, attempt, worker, reason FROM (
    SELECT 0::bigint AS version, created_at AS at, NULL::text AS from_state,
           'queued' AS to_state, 0 AS attempt, NULL::text AS worker, 'submitted' AS reason
    FROM {s}.jobs WHERE id = $1
    UNION ALL
    SELECT claim_version, started_at, claimed_from, 'running', claim_attempt, claimed_by,
           claim_reason
    FROM {s}.jobs WHERE id = $1 AND claimed_by IS NOT NULL
    UNION ALL
    SELECT version, at, from_state, to_state, attempt, worker, reason
    FROM {s}.job_events WHERE job_id = $1
) e
ORDER BY version";

const COUNTS: &str = r"
SELECT kind, state, sum(n)::bigint AS n FROM {s}.job_counts
GROUP BY kind, state HAVING sum(n) <> 0";

const QUEUE_STATS: &str = r"
SELECT kind,
    count(*) FILTER (WHERE state = 'queued' AND run_at <= now()) AS ready,
    count(*) FILTER (WHERE state = 'queued' AND run_at > now()) AS delayed,
    count(*) FILTER (WHERE state = 'running') AS in_flight
FROM {s}.jobs WHERE state IN ('queued', 'running')
GROUP BY kind";

/// Delete finished jobs past retention, oldest first, one small batch per statement, with
/// their history; counts follow.
const PURGE: &str = r"
WITH victims AS (
    SELECT id FROM {s}.jobs
    WHERE finished_at IS NOT NULL AND finished_at < now() - $1 * interval '1 microsecond'
    ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED
),
del AS (
    DELETE FROM {s}.jobs j USING victims v WHERE j.id = v.id RETURNING j.id, j.kind, j.state
),
history AS (
    DELETE FROM {s}.job_events e USING del WHERE e.job_id = del.id
),
counted AS (
    INSERT INTO {s}.job_counts AS c (kind, state, shard, n)
    SELECT kind, state, $3, -count(*) FROM del GROUP BY kind, state ORDER BY kind, state
    ON CONFLICT (kind, state, shard) DO UPDATE SET n = c.n + excluded.n
)
SELECT count(*) FROM del";

/// The prepared statement texts of one schema.
struct Statements {
    create: Arc<str>,
    key_holders: Arc<str>,
    claim_ids: Arc<str>,
    claim_due: Arc<str>,
    heartbeat: Arc<str>,
    finish: Arc<str>,
    cancel: Arc<str>,
    get: Arc<str>,
    events: Arc<str>,
    counts: Arc<str>,
    queue_stats: Arc<str>,
    purge: Arc<str>,
}

impl Statements {
    fn new(shared: &Shared) -> Self {
        let tail = |worker: &str, lease: &str, shard: &str| {
            CLAIM_TAIL
                .replace("{worker}", worker)
                .replace("{lease}", lease)
                .replace("{shard}", shard)
                .replace("{job_columns_j}", JOB_COLUMNS_J)
        };
        Self {
            create: shared.sql(CREATE),
            key_holders: shared.sql(KEY_HOLDERS),
            claim_ids: shared.sql(
                &format!("{CLAIM_IDS_HEAD}{}{CLAIM_IDS_FOOT}", tail("$2", "$3", "$4"))
                    .replace("{claim_columns}", CLAIM_COLUMNS),
            ),
            claim_due: shared.sql(
                &format!("{CLAIM_DUE_HEAD}{}{CLAIM_DUE_FOOT}", tail("$3", "$4", "$5"))
                    .replace("{claim_columns}", CLAIM_COLUMNS),
            ),
            heartbeat: shared.sql(HEARTBEAT),
            finish: shared.sql(FINISH),
            cancel: shared.sql(CANCEL),
            get: shared.sql(&format!(
                "SELECT {JOB_COLUMNS} FROM {{s}}.jobs WHERE id = $1"
            )),
            events: shared.sql(EVENTS),
            counts: shared.sql(COUNTS),
            queue_stats: shared.sql(QUEUE_STATS),
            purge: shared.sql(PURGE),
        }
    }
}

/// Durable job records in PostgreSQL: the `jobs` table (with the indexes claiming, listing
/// and retention need), the `job_events` history, and counts kept as states change.
///
/// Every batch is one statement: `create` inserts with `UNNEST` (a taken idempotency key, also
/// under concurrent submits, answers the existing job); `claim`, `finish` and `heartbeat`
/// lock their rows in id order and apply compare-and-set rules fenced by lease owner and
/// attempt. Finished jobs are deleted after [`PostgresConfig::retention`] in small batches.
///
/// It is also a [`JobStore`]: with
/// [`OrchestratorBuilder::store`](crate::OrchestratorBuilder::store) the
/// `jobs` table is the queue, and a worker claims a batch of due jobs in one statement
/// (`FOR UPDATE SKIP LOCKED`).
///
/// Get one from [`PostgresBackend::state`](crate::postgres::PostgresBackend::state).
///
/// [`PostgresConfig::retention`]: crate::postgres::PostgresConfig::retention
pub struct PostgresState {
    shared: Arc<Shared>,
    sql: Arc<Statements>,
    /// When `claim_due` next looks for expired leases (at most once per poll interval: the
    /// look scans the lease index, and takeovers are never urgent to the millisecond).
    next_takeover_look: parking_lot::Mutex<tokio::time::Instant>,
}

impl std::fmt::Debug for PostgresState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresState")
            .field("schema", &self.shared.config.schema)
            .finish_non_exhaustive()
    }
}

/// A job row as stored.
#[derive(FromRow)]
struct JobRow {
    id: Uuid,
    kind: String,
    queue: String,
    payload: String,
    state: String,
    priority: i16,
    attempt: i32,
    max_attempts: i32,
    timeout_ms: Option<i64>,
    idempotency_key: Option<String>,
    tags: Vec<String>,
    tenant: Option<String>,
    strategy: Option<String>,
    run_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    result: Option<String>,
    last_error: Option<String>,
    lease_owner: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    cancel_requested: bool,
    version: i64,
}

fn stored_payload(text: String, id: Uuid) -> Result<Payload> {
    Payload::from_json(text).map_err(|e| {
        Error::new(
            ErrorKind::Serialization,
            format!("job {id}: stored JSON could not be read back: {e}"),
        )
    })
}

fn parse_state(text: &str) -> Result<JobState> {
    text.parse().map_err(|_| {
        Error::new(
            ErrorKind::Backend,
            format!("the jobs table holds an unknown state `{text}`"),
        )
    })
}

fn count_u32(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl JobRow {
    fn into_record(self) -> Result<JobRecord> {
        Ok(JobRecord {
            id: JobId::from_uuid(self.id),
            state: parse_state(&self.state)?,
            payload: stored_payload(self.payload, self.id)?,
            result: self
                .result
                .map(|r| stored_payload(r, self.id))
                .transpose()?,
            kind: self.kind,
            queue: self.queue,
            priority: self.priority,
            attempt: count_u32(self.attempt),
            max_attempts: count_u32(self.max_attempts),
            timeout: self
                .timeout_ms
                .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
            idempotency_key: self.idempotency_key,
            tags: self.tags,
            tenant: self.tenant,
            strategy: self.strategy,
            run_at: self.run_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            last_error: self.last_error,
            lease_owner: self.lease_owner.map(WorkerId::new),
            lease_expires_at: self.lease_expires_at,
            cancel_requested: self.cancel_requested,
            version: u64::try_from(self.version).unwrap_or(0),
        })
    }
}

/// One answer of a claim statement.
struct ClaimRow {
    input_id: Uuid,
    outcome: String,
    found_state: Option<String>,
    found_run_at: Option<DateTime<Utc>>,
    found_reason: Option<String>,
    job: Option<JobRow>,
}

impl<'r> FromRow<'r, PgRow> for ClaimRow {
    fn from_row(row: &'r PgRow) -> std::result::Result<Self, sqlx::Error> {
        let outcome: String = row.try_get("outcome")?;
        let job = if outcome == "claimed" {
            Some(JobRow::from_row(row)?)
        } else {
            None
        };
        Ok(Self {
            input_id: row.try_get("input_id")?,
            outcome,
            found_state: row.try_get("found_state")?,
            found_run_at: row.try_get("found_run_at")?,
            found_reason: row.try_get("found_reason")?,
            job,
        })
    }
}

impl ClaimRow {
    fn into_claim(self) -> Result<Claim> {
        let id = JobId::from_uuid(self.input_id);
        Ok(match (self.outcome.as_str(), self.job) {
            ("claimed", Some(job)) => Claim::Claimed(job.into_record()?),
            ("exhausted", _) => Claim::Exhausted {
                id,
                reason: self.found_reason.unwrap_or_default(),
            },
            ("cancelled", _) => Claim::Cancelled {
                id,
                reason: self.found_reason.unwrap_or_default(),
            },
            ("not_due", _) => Claim::NotDue {
                id,
                run_at: self.found_run_at.unwrap_or_else(Utc::now),
            },
            _ => Claim::Skipped {
                id,
                state: self.found_state.as_deref().map(parse_state).transpose()?,
            },
        })
    }
}

/// A job `create` did not store (all `None` in the one row answered when none was skipped).
#[derive(FromRow)]
struct SkippedRow {
    /// Its place in the batch, from 1.
    ord: Option<i64>,
    holder: Option<Uuid>,
    /// Whether a job with its id exists (as the statement saw the table).
    id_taken: Option<bool>,
}

#[derive(FromRow)]
struct FinishRow {
    cur_state: Option<String>,
    cur_claim: Option<i64>,
    cur_owner: Option<String>,
    new_state: Option<String>,
    new_version: Option<i64>,
}

#[derive(FromRow)]
struct EventRow {
    at: DateTime<Utc>,
    from_state: Option<String>,
    to_state: String,
    attempt: i32,
    worker: Option<String>,
    reason: Option<String>,
}

#[derive(FromRow)]
struct CountRow {
    kind: String,
    state: String,
    n: i64,
}

#[derive(FromRow)]
struct QueueStatsRow {
    kind: String,
    ready: i64,
    delayed: i64,
    in_flight: i64,
}

/// Split a batch so no chunk names the same job twice: each chunk is one statement, and
/// chunks run in order, so repeated ids are answered as if the items ran one by one.
fn distinct_chunks<T>(items: Vec<T>, id: impl Fn(&T) -> JobId) -> Vec<Vec<T>> {
    let mut chunks: Vec<Vec<T>> = Vec::new();
    let mut seen: HashSet<JobId> = HashSet::new();
    let mut current = Vec::new();
    for item in items {
        if !seen.insert(id(&item)) {
            chunks.push(std::mem::take(&mut current));
            seen.clear();
            seen.insert(id(&item));
        }
        current.push(item);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

impl PostgresState {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let sql = Arc::new(Statements::new(&shared));
        Self {
            shared,
            sql,
            next_takeover_look: parking_lot::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Delete finished jobs older than the configured retention, with their history, in
    /// batches; returns how many were deleted.
    pub async fn purge_finished(&self) -> Result<u64> {
        let config = &self.shared.config;
        let batch = i64::try_from(config.purge_batch).unwrap_or(i64::MAX);
        let mut total = 0u64;
        loop {
            self.shared.count_statement();
            let deleted: i64 = sqlx::query_scalar(stmt(&self.sql.purge))
                .bind(micros(config.retention))
                .bind(batch)
                .bind(random_shard())
                .fetch_one(&self.shared.pool)
                .await
                .map_err(|e| db_error("delete finished jobs past retention", e))?;
            total += u64::try_from(deleted).unwrap_or(0);
            if deleted < batch {
                return Ok(total);
            }
            // Let other work in between batches.
            tokio::task::yield_now().await;
        }
    }

    async fn create_once(&self, jobs: &[&JobRecord]) -> Result<Vec<SkippedRow>> {
        let n = jobs.len();
        let mut ids = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        let mut queues = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut priorities = Vec::with_capacity(n);
        let mut max_attempts = Vec::with_capacity(n);
        let mut timeouts = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut tags = Vec::with_capacity(n);
        let mut tenants = Vec::with_capacity(n);
        let mut strategies = Vec::with_capacity(n);
        let mut run_ats = Vec::with_capacity(n);
        let mut created = Vec::with_capacity(n);
        for job in jobs {
            ids.push(*job.id.as_uuid());
            kinds.push(job.kind.as_str());
            queues.push(job.queue.as_str());
            payloads.push(job.payload.as_str());
            priorities.push(job.priority);
            max_attempts.push(i32::try_from(job.max_attempts).unwrap_or(i32::MAX));
            timeouts.push(job.timeout.map(millis_i64));
            keys.push(job.idempotency_key.as_deref());
            tags.push(if job.tags.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&job.tags)?)
            });
            tenants.push(job.tenant.as_deref());
            strategies.push(job.strategy.as_deref());
            run_ats.push(job.run_at);
            created.push(job.created_at);
        }
        self.shared.count_statement();
        sqlx::query_as::<_, SkippedRow>(stmt(&self.sql.create))
            .bind(ids)
            .bind(kinds)
            .bind(queues)
            .bind(payloads)
            .bind(priorities)
            .bind(max_attempts)
            .bind(timeouts)
            .bind(keys)
            .bind(tags)
            .bind(tenants)
            .bind(strategies)
            .bind(run_ats)
            .bind(created)
            .bind(random_shard())
            .bind(&self.shared.channel)
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("store new jobs", e))
    }

    async fn claim_chunk(
        &self,
        ids: &[JobId],
        worker: &WorkerId,
        lease: Duration,
    ) -> Result<Vec<Claim>> {
        let uuids: Vec<Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
        self.shared.count_statement();
        let rows = sqlx::query_as::<_, ClaimRow>(stmt(&self.sql.claim_ids))
            .bind(uuids)
            .bind(worker.as_str())
            .bind(micros(lease))
            .bind(random_shard())
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("claim jobs", e))?;
        rows.into_iter().map(ClaimRow::into_claim).collect()
    }

    /// One claim statement, run in a task of its own: if the caller stops waiting (a worker
    /// shutting down drops the future), the statement still completes and the jobs it took
    /// are handed back at once, attempt not spent, instead of waiting out their leases.
    async fn claim_due_once(&self, req: &Reserve<'_>) -> Result<Vec<Claim>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = Arc::clone(&self.shared);
        let sql = Arc::clone(&self.sql);
        let queues = req.queues.to_vec();
        let worker = WorkerId::clone(req.worker);
        let max = i64::try_from(req.max).unwrap_or(i64::MAX);
        let lease = micros(req.lease);
        let takeovers = {
            let mut next = self.next_takeover_look.lock();
            let now = tokio::time::Instant::now();
            let due = now >= *next;
            if due {
                *next = now + self.shared.config.poll_interval;
            }
            due
        };
        tokio::spawn(async move {
            let claims =
                claim_due_statement(&shared, &sql, &queues, max, &worker, lease, takeovers).await;
            if let Err(Ok(claims)) = tx.send(claims) {
                hand_back(&shared, &sql, &worker, claims).await;
            }
        });
        rx.await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Backend,
                "the claim task ended without an answer; try again",
            ))
        })
    }

    async fn finish_chunk(&self, transitions: Vec<Transition>) -> Result<Vec<TransitionResult>> {
        finish_statement(&self.shared, &self.sql, transitions).await
    }

    async fn list_page(&self, filter: &JobFilter, page: &Page) -> Result<Vec<JobRow>> {
        let mut sql = format!(
            "SELECT {JOB_COLUMNS} FROM {}.jobs WHERE true",
            self.shared.quoted_schema()
        );
        let mut n = 0;
        let mut param = || {
            n += 1;
            n
        };
        if let Some(state) = filter.state {
            // A literal (one of five fixed names), so the planner can use the partial
            // indexes whose predicate names states.
            sql.push_str(&format!(" AND state = '{}'", state.as_str()));
        }
        if filter.kind.is_some() {
            sql.push_str(&format!(" AND kind = ${}", param()));
        }
        if filter.queue.is_some() {
            sql.push_str(&format!(" AND queue = ${}", param()));
        }
        if filter.tenant.is_some() {
            sql.push_str(&format!(" AND tenant = ${}", param()));
        }
        let (cmp, order) = match page.order {
            Order::Asc => (">", "ASC"),
            Order::Desc => ("<", "DESC"),
        };
        if page.after.is_some() {
            sql.push_str(&format!(" AND id {cmp} ${}", param()));
        }
        sql.push_str(&format!(" ORDER BY id {order} LIMIT ${}", param()));
        let mut query = sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql));
        if let Some(kind) = &filter.kind {
            query = query.bind(kind.as_str());
        }
        if let Some(queue) = &filter.queue {
            query = query.bind(queue.as_str());
        }
        if let Some(tenant) = &filter.tenant {
            query = query.bind(tenant.as_str());
        }
        if let Some(after) = page.after {
            query = query.bind(*after.as_uuid());
        }
        query = query.bind(
            i64::try_from(page.limit)
                .unwrap_or(i64::MAX)
                .saturating_add(1),
        );
        self.shared.count_statement();
        query
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("list jobs", e))
    }
}

async fn claim_due_statement(
    shared: &Shared,
    sql: &Statements,
    queues: &[String],
    max: i64,
    worker: &WorkerId,
    lease_micros: i64,
    takeovers: bool,
) -> Result<Vec<Claim>> {
    shared.count_statement();
    let rows = sqlx::query_as::<_, ClaimRow>(stmt(&sql.claim_due))
        .bind(queues)
        .bind(max)
        .bind(worker.as_str())
        .bind(lease_micros)
        .bind(random_shard())
        .bind(takeovers)
        .fetch_all(&shared.pool)
        .await
        .map_err(|e| db_error("claim due jobs", e))?;
    rows.into_iter().map(ClaimRow::into_claim).collect()
}

/// Give back jobs claimed for a caller that stopped waiting: due now, attempt not spent.
async fn hand_back(shared: &Shared, sql: &Statements, worker: &WorkerId, claims: Vec<Claim>) {
    let transitions: Vec<Transition> = claims
        .into_iter()
        .filter_map(|claim| match claim {
            Claim::Claimed(record) => Some(Transition {
                id: record.id,
                worker: worker.clone(),
                token: record.version,
                finish: Finish::Release {
                    reason: "claimed for a worker that stopped waiting; handed back".to_owned(),
                },
            }),
            _ => None,
        })
        .collect();
    if transitions.is_empty() {
        return;
    }
    let n = transitions.len();
    match finish_statement(shared, sql, transitions).await {
        Ok(_) => tracing::debug!(jobs = n, "handed back jobs claimed for a cancelled claim"),
        Err(err) => {
            tracing::warn!(error = %err, jobs = n, "could not hand back jobs claimed for a cancelled claim; they run again when their leases expire")
        }
    }
}

async fn finish_statement(
    shared: &Shared,
    sql: &Statements,
    transitions: Vec<Transition>,
) -> Result<Vec<TransitionResult>> {
    let n = transitions.len();
    let mut ids = Vec::with_capacity(n);
    let mut workers = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut ops = Vec::with_capacity(n);
    let mut delays: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut messages: Vec<Option<String>> = Vec::with_capacity(n);
    let mut results: Vec<Option<String>> = Vec::with_capacity(n);
    // Sent in id order, so concurrent batches lock shared rows in the same order.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by_key(|&i| transitions[i].id);
    for t in order.iter().map(|&i| &transitions[i]) {
        ids.push(*t.id.as_uuid());
        workers.push(t.worker.as_str());
        tokens.push(i64::try_from(t.token).unwrap_or(i64::MAX));
        let (op, delay, message, result) = match &t.finish {
            Finish::Succeeded { result } => (
                "succeeded",
                None,
                None,
                result.as_ref().map(|r| r.as_str().to_owned()),
            ),
            Finish::Retry { delay, error } => ("retry", Some(*delay), Some(error), None),
            Finish::Defer { delay, reason } => ("defer", Some(*delay), Some(reason), None),
            Finish::Dead { error } => ("dead", None, Some(error), None),
            Finish::Cancelled { reason } => ("cancelled", None, Some(reason), None),
            Finish::Release { reason } => ("release", None, Some(reason), None),
        };
        ops.push(op);
        delays.push(delay.map(|d| micros(crate::job::clamp_delay(d))));
        messages.push(message.cloned());
        results.push(result);
    }
    shared.count_statement();
    let rows = sqlx::query_as::<_, FinishRow>(stmt(&sql.finish))
        .bind(ids)
        .bind(workers)
        .bind(tokens)
        .bind(ops)
        .bind(delays)
        .bind(messages)
        .bind(results)
        .bind(random_shard())
        .bind(&shared.channel)
        .bind(i64::try_from(shared.config.max_events_per_job).unwrap_or(i64::MAX))
        .fetch_all(&shared.pool)
        .await
        .map_err(|e| db_error("finish jobs", e))?;
    let mut answers: Vec<Option<TransitionResult>> = vec![None; n];
    for (&i, row) in order.iter().zip(rows) {
        let t = &transitions[i];
        answers[i] = Some(
            if let (Some(state), Some(version)) = (&row.new_state, row.new_version) {
                TransitionResult::Applied {
                    state: parse_state(state)?,
                    version: u64::try_from(version).unwrap_or(0),
                }
            } else {
                let current = row.cur_state.as_deref().map(parse_state).transpose()?;
                let reason = match current {
                    None => "no such job".to_owned(),
                    Some(state) => format!(
                        "not held by {}'s claim {} (state {state}, latest claim {}, owner {})",
                        t.worker,
                        t.token,
                        row.cur_claim.unwrap_or(0),
                        row.cur_owner.as_deref().unwrap_or("none"),
                    ),
                };
                TransitionResult::Conflict { current, reason }
            },
        );
    }
    answers
        .into_iter()
        .map(|a| {
            a.ok_or_else(|| {
                Error::new(
                    ErrorKind::Backend,
                    "PostgreSQL answered a finish batch with too few rows",
                )
            })
        })
        .collect()
}

#[async_trait]
impl StateManager for PostgresState {
    async fn create(&self, jobs: Vec<JobRecord>) -> Result<Vec<Created>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
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
        let uuids: Vec<Uuid> = held.iter().map(|h| *h.id.as_uuid()).collect();
        let tokens: Vec<i64> = held
            .iter()
            .map(|h| i64::try_from(h.token).unwrap_or(i64::MAX))
            .collect();
        self.shared.count_statement();
        let rows: Vec<(Uuid, i64, bool)> = sqlx::query_as(stmt(&self.sql.heartbeat))
            .bind(uuids)
            .bind(tokens)
            .bind(micros(lease))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("extend leases", e))?;
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
            .bind(random_shard())
            .fetch_optional(&self.shared.pool)
            .await
            .map_err(|e| db_error("cancel a job", e))?;
        match state.as_deref().map(parse_state).transpose()? {
            None => Err(Error::new(ErrorKind::NotFound, format!("no job {id}"))),
            Some(JobState::Queued) => Ok(CancelOutcome::Cancelled),
            Some(JobState::Running) => Ok(CancelOutcome::Requested),
            Some(state) => Ok(CancelOutcome::AlreadyFinished(state)),
        }
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
        let mut rows = self.list_page(filter, page).await?;
        let more = rows.len() > page.limit;
        rows.truncate(page.limit);
        let items = rows
            .into_iter()
            .map(JobRow::into_record)
            .collect::<Result<Vec<_>>>()?;
        let next = if more {
            items.last().map(|r| r.id)
        } else {
            None
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
        self.shared.count_statement();
        let rows = sqlx::query_as::<_, CountRow>(stmt(&self.sql.counts))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("count jobs", e))?;
        let mut counts = StateCounts::default();
        for row in rows {
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

#[async_trait]
impl JobStore for PostgresState {
    async fn claim_due(&self, req: &Reserve<'_>) -> Result<Vec<Claim>> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        self.shared
            .poll(req.wait, || self.claim_due_once(req))
            .await
    }

    async fn stats(&self) -> Result<QueueStats> {
        self.shared.count_statement();
        let rows = sqlx::query_as::<_, QueueStatsRow>(stmt(&self.sql.queue_stats))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("count queued jobs", e))?;
        let dead = self.counts().await?;
        let mut per_kind: BTreeMap<String, KindQueueStats> = BTreeMap::new();
        for row in rows {
            let k = per_kind.entry(row.kind).or_default();
            k.ready = u64::try_from(row.ready).unwrap_or(0);
            k.delayed = u64::try_from(row.delayed).unwrap_or(0);
            k.in_flight = u64::try_from(row.in_flight).unwrap_or(0);
        }
        for (kind, tally) in dead.per_kind {
            if tally.dead > 0 {
                per_kind.entry(kind).or_default().dead = tally.dead;
            }
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
