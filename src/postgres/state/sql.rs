//! The SQL text of the PostgreSQL store, prepared once per schema.

use std::sync::Arc;

use crate::postgres::Shared;

/// What a claim reads of the job rows `j` it locks: the record, which it answers for the jobs
/// it claims, and the claim the row settled last.
const CLAIM_COLUMNS: &str = "j.id, j.kind, j.queue, j.payload, j.state, j.priority, \
    j.attempt, j.max_attempts, j.timeout_ms, j.idempotency_key, j.tags, j.tenant, \
    j.strategy, j.run_at, j.created_at, j.updated_at, j.started_at, j.finished_at, \
    j.result, j.last_error, j.cancel_requested, j.version, j.step, j.waiting_on, \
    j.progress, j.traceparent, j.claimed_by, j.claimed_from, j.claim_attempt, \
    j.claim_reason, j.claim_version";

/// The slot of `job_leases` that new leases go to (migration `20261205000004_leases.sql`).
const LEASE_SLOT: &str = "(SELECT slot FROM {s}.job_lease_ring)";

/// The slot of the ready ring that new rows go to.
const RING_SLOT: &str = "(SELECT slot FROM {s}.job_ring WHERE one = true)";

/// The slot of `job_count_deltas` that count changes go to (it moves on by itself, whatever
/// holds the ready ring: migration `20261204000005_delta_ring.sql`).
const DELTA_SLOT: &str = "(SELECT delta_slot FROM {s}.job_ring WHERE one = true)";

/// The columns of a job row, as [`JobRow`] reads them (from a row that already has them
/// as shown, as [`JOB_NOW`] makes them).
pub(super) const JOB_COLUMNS: &str = "id, kind, queue, payload::text AS payload, state, priority, attempt, \
    max_attempts, timeout_ms, idempotency_key, tags, tenant, strategy, run_at, created_at, \
    updated_at, started_at, finished_at, result::text AS result, last_error, lease_owner, \
    lease_expires_at, cancel_requested, version, step::text AS step, waiting_on, \
    progress::text AS progress, traceparent";

/// A job as readers see it, from the row `j` and its live lease `l` (joined by
/// [`LIVE_LEASE`], NULL when none): while a claim holds it, the job is `running` with the
/// lease's attempt, owner, expiry, start and token (as its version); the row tells the rest.
pub(super) const JOB_NOW: &str = "j.id, j.kind, j.queue, j.payload::text AS payload, \
    CASE WHEN l.token IS NULL THEN j.state ELSE 'running' END AS state, j.priority, \
    coalesce(l.attempt, j.attempt) AS attempt, j.max_attempts, j.timeout_ms, \
    j.idempotency_key, j.tags, j.tenant, j.strategy, j.run_at, j.created_at, \
    CASE WHEN l.token IS NULL THEN j.updated_at ELSE greatest(j.updated_at, l.started_at) END \
        AS updated_at, \
    coalesce(l.started_at, j.started_at) AS started_at, j.finished_at, \
    j.result::text AS result, j.last_error, l.worker AS lease_owner, \
    l.expires_at AS lease_expires_at, j.cancel_requested, \
    CASE WHEN l.token IS NULL THEN j.version ELSE greatest(j.version, l.token) END AS version, \
    j.step::text AS step, j.waiting_on, j.progress::text AS progress, j.traceparent";

/// The live lease of the row `j` as `l`: a claim the row has not settled yet (its token
/// above the row's `claim_version`). At most one is live: a claim inserts one only when
/// none is, and a takeover settles the one it replaces.
pub(super) const LIVE_LEASE: &str = "LEFT JOIN LATERAL (
    SELECT x.token, x.attempt, x.worker, x.expires_at, x.started_at, x.claimed_from, x.reason
    FROM {s}.job_leases x
    WHERE x.id = j.id AND x.token > coalesce(j.claim_version, 0)
    ORDER BY x.token DESC LIMIT 1) l ON true";

/// Insert a batch of jobs (one `UNNEST` of column arrays), their times by the server's clock
/// (`run_at` keeps its distance from the submitter's `created_at`); a taken id or idempotency key
/// skips the row. Counts and notifies in the same statement (the notification is the outer
/// side of the answer, so it always runs), and answers only the rows it skipped (with the
/// holder of their key, if it can see one), or one empty row.
const CREATE: &str = r"
WITH ins AS (
    INSERT INTO {s}.jobs (id, kind, queue, payload, state, priority, attempt, max_attempts,
        timeout_ms, idempotency_key, tags, tenant, strategy, run_at, created_at, updated_at,
        version, traceparent)
    -- Times by this server's clock: the submitter's `run_at - created_at` from now.
    SELECT id, kind, queue, payload::json, 'queued', priority, 0, max_attempts, timeout_ms,
        idempotency_key,
        CASE WHEN tags IS NULL THEN '{}'::text[]
             ELSE ARRAY(SELECT json_array_elements_text(tags::json)) END,
        tenant, strategy, now() + (run_at - created_at), now(), now(), 1, traceparent
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::smallint[],
                $6::int[], $7::bigint[], $8::text[], $9::text[], $10::text[],
                $11::text[], $12::timestamptz[], $13::timestamptz[], $15::text[])
        WITH ORDINALITY AS t(id, kind, queue, payload, priority, max_attempts, timeout_ms,
                             idempotency_key, tags, tenant, strategy, run_at, created_at,
                             traceparent, ord)
    ORDER BY ord
    ON CONFLICT DO NOTHING
    RETURNING id, kind, queue, priority, run_at, idempotency_key
),
-- Each new job is ready to claim (when due) from the ring.
readied AS (
    INSERT INTO {s}.job_ready (slot, queue, priority, run_at, id)
    SELECT {ring_slot}, queue, priority, run_at, id FROM ins
),
counted AS (
    INSERT INTO {s}.job_count_deltas (slot, kind, state, n)
    SELECT {delta_slot}, kind, 'queued', count(*) FROM ins GROUP BY kind
),
notified AS (
    SELECT pg_notify($14, queue || CASE WHEN due THEN ''
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
        ins.id IS NOT NULL OR EXISTS (SELECT 1 FROM {s}.jobs e WHERE e.id = i.id) AS id_taken
    FROM unnest($1::uuid[], $8::text[]) WITH ORDINALITY AS i(id, idempotency_key, ord)
    LEFT JOIN ins ON ins.id = i.id
    -- Not stored, or stored from an earlier place in the batch (the same id given twice).
    WHERE (ins.id IS NULL OR EXISTS (
              SELECT 1 FROM unnest($1::uuid[]) WITH ORDINALITY AS e(id, ord)
              WHERE e.id = i.id AND e.ord < i.ord))
      AND (SELECT count(*) FROM ins) < cardinality($1::uuid[])
) s ON true
";

/// Insert a batch that holds workflow steps ([`crate::workflow`]): as [`CREATE`], and each
/// row's state (`pending` for a step that waits, else `queued`) `$15` and step `$16` (JSON, or
/// NULL for a plain job). All or nothing: no row is skipped, so a taken id or key fails the
/// statement and nothing is stored. Answers how many rows it stored.
const CREATE_STEPS: &str = r"
WITH ins AS (
    INSERT INTO {s}.jobs (id, kind, queue, payload, state, priority, attempt, max_attempts,
        timeout_ms, idempotency_key, tags, tenant, strategy, run_at, created_at, updated_at,
        version, step, workflow_id, waiting_on, step_policy, traceparent)
    SELECT id, kind, queue, payload::json, state, priority, 0, max_attempts, timeout_ms,
        idempotency_key,
        CASE WHEN tags IS NULL THEN '{}'::text[]
             ELSE ARRAY(SELECT json_array_elements_text(tags::json)) END,
        tenant, strategy, now() + (run_at - created_at), now(), now(), 1, step::jsonb,
        (step::jsonb->>'workflow')::uuid, (step::jsonb->>'waiting_on')::int,
        step::jsonb->>'on_dependency_failure', traceparent
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::smallint[],
                $6::int[], $7::bigint[], $8::text[], $9::text[], $10::text[],
                $11::text[], $12::timestamptz[], $13::timestamptz[], $15::text[], $16::text[],
                $17::text[])
        WITH ORDINALITY AS t(id, kind, queue, payload, priority, max_attempts, timeout_ms,
                             idempotency_key, tags, tenant, strategy, run_at, created_at,
                             state, step, traceparent, ord)
    ORDER BY ord
    RETURNING id, kind, queue, priority, run_at, state
),
readied AS (
    INSERT INTO {s}.job_ready (slot, queue, priority, run_at, id)
    SELECT {ring_slot}, queue, priority, run_at, id FROM ins WHERE state = 'queued'
),
counted AS (
    INSERT INTO {s}.job_count_deltas (slot, kind, state, n)
    SELECT {delta_slot}, kind, state, count(*) FROM ins GROUP BY kind, state
),
notified AS (
    SELECT pg_notify($14, queue || CASE WHEN due THEN ''
        ELSE ' ' || floor(extract(epoch FROM at) * 1000000)::bigint END)
    FROM (SELECT queue, run_at <= now() AS due, min(run_at) AS at FROM ins
          WHERE state = 'queued' GROUP BY 1, 2) q
)
SELECT (SELECT count(*) FROM ins) AS stored, (SELECT count(*) FROM notified) AS notified
";

/// The holders of idempotency keys, read in a fresh snapshot (for keys taken by a
/// concurrent submit that committed after the create statement began).
const KEY_HOLDERS: &str =
    "SELECT idempotency_key, id FROM {s}.jobs WHERE idempotency_key = ANY($1::text[])";

/// The part of a claim after the candidate rows are locked (CTE `locked`: the job rows'
/// [`CLAIM_COLUMNS`], and their live lease as `l_token`, `l_attempt`, `l_worker`,
/// `l_expires`, `l_started`, `l_from`, `l_reason`, NULL when none): decide each row (claim,
/// takeover, attempts spent, not due, skip), write the new leases, settle the claims that
/// takeovers and ends replace, record events. `{worker}` and `{lease}` (micros) are
/// parameter placeholders. Answers the jobs claimed as `upd` (with `from_state`), as readers
/// would see them now, and the jobs that ended.
const CLAIM_TAIL: &str = r"
decided AS (
    SELECT l.*,
        CASE
            WHEN l.l_token IS NULL AND l.state = 'queued' AND l.run_at > now() THEN 'not_due'
            WHEN l.l_token IS NULL AND l.state = 'queued' THEN 'claimed'
            WHEN l.l_token IS NOT NULL AND l.l_expires <= now()
                 AND l.cancel_requested THEN 'cancelled'
            WHEN l.l_token IS NOT NULL AND l.l_expires <= now()
                 AND l.l_attempt >= l.max_attempts THEN 'exhausted'
            WHEN l.l_token IS NOT NULL AND l.l_expires <= now() THEN 'claimed'
            ELSE 'skipped'
        END AS outcome,
        CASE WHEN l.l_token IS NOT NULL THEN
            CASE WHEN l.cancel_requested
                THEN 'cancelled by request; the lease of ' || l.l_worker
                     || ' expired during attempt ' || l.l_attempt
                WHEN l.l_attempt >= l.max_attempts
                THEN 'worker_lost: lease of ' || l.l_worker
                     || ' expired during attempt ' || l.l_attempt || ' of ' || l.max_attempts
                     || '; no attempts left'
                ELSE 'lease of ' || l.l_worker
                     || ' expired during attempt ' || l.l_attempt || '; taken over'
            END
        END AS reason,
        CASE WHEN l.l_token IS NULL THEN l.state ELSE 'running' END AS found
    FROM locked l
),
-- The claim a takeover or a dead worker's end replaces is settled on the row (its fields
-- become the row's latest claim); the end of attempts is written there too.
settled AS (
    UPDATE {s}.jobs j SET
        state = CASE d.outcome WHEN 'exhausted' THEN 'dead' WHEN 'cancelled' THEN 'cancelled'
                               ELSE j.state END,
        attempt = d.l_attempt,
        started_at = d.l_started,
        finished_at = CASE WHEN d.outcome = 'claimed' THEN j.finished_at ELSE now() END,
        last_error = CASE WHEN d.outcome = 'exhausted' THEN d.reason ELSE j.last_error END,
        claimed_by = d.l_worker,
        claimed_from = d.l_from,
        claim_attempt = d.l_attempt,
        claim_reason = d.l_reason,
        claim_version = d.l_token,
        updated_at = now(),
        version = CASE WHEN d.outcome = 'claimed' THEN j.version
                       ELSE greatest(j.version, d.l_token) + 1 END
    FROM decided d
    WHERE j.id = d.id AND d.l_token IS NOT NULL
      AND d.outcome IN ('claimed', 'exhausted', 'cancelled')
    RETURNING j.id, j.state, j.version, j.attempt
),
-- A new lease for each job claimed: its token is above every version the job had.
leased AS (
    INSERT INTO {s}.job_leases (slot, id, queue, token, attempt, worker, expires_at,
                                started_at, claimed_from, reason)
    SELECT {lease_slot}, d.id, d.queue,
           greatest(d.version, coalesce(d.l_token, 0), coalesce(d.claim_version, 0)) + 1,
           coalesce(d.l_attempt, d.attempt) + 1, {worker},
           now() + {lease} * interval '1 microsecond', now(), d.found, d.reason
    FROM decided d WHERE d.outcome = 'claimed'
    RETURNING id, token, attempt, worker, expires_at, started_at
),
upd AS (
    SELECT d.found AS from_state, d.id, d.kind, d.queue, d.payload::text AS payload,
           'running'::text AS state, d.priority, n.attempt, d.max_attempts, d.timeout_ms,
           d.idempotency_key, d.tags, d.tenant, d.strategy, d.run_at, d.created_at,
           n.started_at AS updated_at, n.started_at, d.finished_at, d.result::text AS result,
           d.last_error, n.worker AS lease_owner, n.expires_at AS lease_expires_at,
           d.cancel_requested, n.token AS version, d.step::text AS step, d.waiting_on,
           d.progress::text AS progress, d.traceparent
    FROM decided d JOIN leased n ON n.id = d.id
    UNION ALL
    -- A dead worker's job that ends here (attempts spent: dead; cancel asked: cancelled).
    SELECT d.found, d.id, d.kind, d.queue, d.payload::text, t.state, d.priority, t.attempt,
           d.max_attempts, d.timeout_ms, d.idempotency_key, d.tags, d.tenant, d.strategy,
           d.run_at, d.created_at, now(), d.l_started, now(), d.result::text, d.last_error,
           NULL::text, NULL::timestamptz, d.cancel_requested, t.version, d.step::text,
           d.waiting_on, d.progress::text, d.traceparent
    FROM decided d JOIN settled t ON t.id = d.id
    WHERE d.outcome IN ('exhausted', 'cancelled')
),
events AS (
    INSERT INTO {s}.job_events (job_id, version, at, from_state, to_state, attempt, worker,
                                reason)
    -- The claim the row held before the one a takeover or an end settles onto it.
    SELECT d.id, d.claim_version, d.started_at, d.claimed_from, 'running', d.claim_attempt,
           d.claimed_by, d.claim_reason
    FROM decided d JOIN settled t ON t.id = d.id
    WHERE d.claimed_by IS NOT NULL
    UNION ALL
    -- A dead worker's job that ends: the move to dead or cancelled.
    SELECT t.id, t.version, now(), 'running', t.state, t.attempt, {worker}, d.reason
    FROM settled t JOIN decided d ON d.id = t.id
    WHERE d.outcome IN ('exhausted', 'cancelled')
),
";

/// The counts a claim changes (`{finished}`: those of a finish in the same statement, or
/// nothing), appended to the ring's current slot of `job_count_deltas`.
const CLAIM_COUNTED: &str = r"
counted AS (
    INSERT INTO {s}.job_count_deltas (slot, kind, state, n)
    SELECT {delta_slot}, kind, st, sum(delta) FROM (
        SELECT kind, from_state AS st, -1 AS delta FROM upd WHERE from_state <> state
        UNION ALL
        SELECT kind, state, 1 FROM upd WHERE from_state <> state{finished}
    ) x
    GROUP BY kind, st HAVING sum(delta) <> 0
)";

/// The counts a finish changes, for [`CLAIM_COUNTED`]'s `{finished}`.
const FINISHED_COUNTED: &str = r"
        UNION ALL
        SELECT kind, 'running', -1 FROM f_upd
        UNION ALL
        SELECT kind, state, 1 FROM f_upd
        UNION ALL
        SELECT kind, 'retried', 1 FROM f_upd WHERE op = 'retry' AND state = 'queued'";

/// Claim named jobs (the generic path: a queue delivered them). Locks in id order so
/// concurrent batches cannot deadlock; their live leases are read once the locks are held
/// (`leases_of`, with a snapshot of its own: see the migration
/// `20261205000004_leases.sql`).
const CLAIM_IDS_HEAD: &str = r"
WITH rows AS (
    SELECT {claim_columns} FROM {s}.jobs j WHERE j.id = ANY($1::uuid[])
    ORDER BY j.id FOR UPDATE
),
live AS MATERIALIZED (
    SELECT * FROM {s}.leases_of(ARRAY(SELECT id FROM rows))
),
locked AS (
    SELECT r.*, v.token AS l_token, v.attempt AS l_attempt, v.worker AS l_worker,
           v.expires_at AS l_expires, v.started_at AS l_started, v.claimed_from AS l_from,
           v.reason AS l_reason
    FROM rows r LEFT JOIN live v ON v.id = r.id AND v.token > coalesce(r.claim_version, 0)
),";

const CLAIM_IDS_FOOT: &str = r"
SELECT i.id AS input_id, coalesce(d.outcome, 'skipped') AS outcome, d.found AS found_state,
       d.run_at AS found_run_at, d.reason AS found_reason, u.*
FROM unnest($1::uuid[]) WITH ORDINALITY AS i(id, ord)
LEFT JOIN decided d ON d.id = i.id
LEFT JOIN upd u ON u.id = i.id
ORDER BY i.ord";

/// Claim due jobs (this store is the queue): expired leases first (when `{takeovers}`, a
/// window in microseconds, is above 0: that look is kept off most claims, and covers only
/// the leases that expired within the window, see `PostgresState::takeover_window`), then due
/// jobs of each queue from the ready ring by priority, run_at and id, skipping rows other
/// workers hold.
/// `{queues}`, `{max}` and `{takeovers}` are parameter placeholders; `{not_finished}` names
/// the jobs a finish in the same statement settles, which the look leaves out.
const CLAIM_DUE_HEAD: &str = r"
-- (Leases are read through functions: see the migration `20261205000004_leases.sql`.)
expired AS (
    SELECT {claim_columns}, e.token AS l_token, e.attempt AS l_attempt,
           e.worker AS l_worker, e.expires_at AS l_expires, e.started_at AS l_started,
           e.claimed_from AS l_from, e.reason AS l_reason
    FROM {s}.leases_expired({queues}::text[], {takeovers}, {max}, {not_finished}) e
    JOIN {s}.jobs j ON j.id = e.id
    WHERE e.token > coalesce(j.claim_version, 0)
    FOR UPDATE OF j SKIP LOCKED
),
-- The ready ring's due rows, as many as the takeovers leave room for (taken once each:
-- see `ring_take` in the migration `20261204000003_ready_ring.sql`).
taken AS MATERIALIZED (
    SELECT t.id, t.queue, t.priority, t.run_at
    FROM {s}.ring_take({queues}::text[], greatest({max} - (SELECT count(*) FROM expired), 0)) t
),
-- Their jobs, locked in id order (a ring row whose job moved on, cancelled, is dropped:
-- `decided` skips it), and their live leases once the locks are held (none, unless another
-- claim took the job meanwhile).
due AS (
    SELECT {claim_columns} FROM {s}.jobs j WHERE j.id = ANY (ARRAY(SELECT id FROM taken))
    ORDER BY j.id FOR UPDATE
),
due_live AS MATERIALIZED (
    SELECT * FROM {s}.leases_of(ARRAY(SELECT id FROM due))
),
locked AS (
    SELECT * FROM expired
    UNION ALL
    SELECT d.*, v.token, v.attempt, v.worker, v.expires_at, v.started_at, v.claimed_from,
           v.reason
    FROM due d
    LEFT JOIN due_live v ON v.id = d.id AND v.token > coalesce(d.claim_version, 0)
),";

/// Ring rows taken but neither claimed nor dropped go back to the ring for the next claim:
/// those of jobs this statement cannot see (submitted after it began: `ring_take` reads with
/// a newer snapshot), and of jobs not due after all (their row said they were).
const CLAIM_DUE_UNSEEN: &str = r"
unseen AS (
    INSERT INTO {s}.job_ready (slot, queue, priority, run_at, id)
    SELECT {ring_slot}, t.queue, t.priority, t.run_at, t.id FROM taken t
    WHERE NOT EXISTS (SELECT 1 FROM due d WHERE d.id = t.id)
       OR EXISTS (SELECT 1 FROM decided d WHERE d.id = t.id AND d.outcome = 'not_due')
),";

/// (`found_state`: the state the job was locked in, `running` for a takeover.)
const CLAIM_DUE_FOOT: &str = r"
SELECT u.id AS input_id, d.outcome, d.found AS found_state,
       NULL::timestamptz AS found_run_at, d.reason AS found_reason, u.*
FROM upd u JOIN decided d ON d.id = u.id
ORDER BY u.priority DESC, u.run_at, u.id";

/// Extend the leases of the claims still held (fenced on each claim's token: a lease the
/// row has settled, or a takeover replaced, is not extended); answers them. Only the narrow
/// lease rows are written, each by the pool that holds it (a takeover skips locked leases),
/// so no lock order is needed.
const HEARTBEAT: &str = r"
UPDATE {s}.job_leases l SET expires_at = now() + $3 * interval '1 microsecond'
FROM unnest($1::uuid[], $2::bigint[]) AS h(id, token), {s}.jobs j
WHERE l.id = h.id AND l.token = h.token AND j.id = h.id
  AND coalesce(j.claim_version, 0) < h.token
RETURNING l.id, l.token, j.cancel_requested";

/// The finish's common table expressions (`input`, `f_locked`, `f_upd`, `f_events`,
/// `trimmed`, `notified`, `f_conflicts`), shared by [`FINISH`] and the finish-and-claim statement.
macro_rules! finish_ctes {
    () => {
        r"
input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::bigint[],
                         $6::text[], $7::text[])
        WITH ORDINALITY AS t(id, worker, token, op, delay_us, message, result, ord)
),
-- The rows whose live lease is the input's claim, locked in id order. A takeover settles
-- the lease it replaces on the row (`claim_version`): the lock reads the row again, so a
-- finish that waited for it sees that its claim is gone. The row's earlier claim (`prev_*`)
-- goes to the history below when this one replaces it.
f_locked AS MATERIALIZED (
    SELECT j.id, j.claimed_by AS prev_by, j.claim_version AS prev_version,
           j.started_at AS prev_started, j.claimed_from AS prev_from,
           j.claim_attempt AS prev_attempt, j.claim_reason AS prev_reason,
           l.token, l.attempt AS l_attempt, l.worker AS l_worker, l.started_at AS l_started,
           l.claimed_from AS l_from, l.reason AS l_reason
    FROM input i
    JOIN {s}.leases_of(ARRAY(SELECT id FROM input)) l ON l.id = i.id AND l.token = i.token
    JOIN {s}.jobs j ON j.id = i.id
    WHERE coalesce(j.claim_version, 0) < l.token
    ORDER BY j.id
    FOR UPDATE OF j
),
f_upd AS (
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
                       THEN greatest(l.l_attempt - 1, 0) ELSE l.l_attempt END,
        last_error = CASE WHEN i.op = 'dead' OR (i.op = 'retry' AND NOT j.cancel_requested)
                          THEN i.message ELSE j.last_error END,
        finished_at = CASE WHEN i.op IN ('succeeded', 'dead', 'cancelled') OR j.cancel_requested
                           THEN now() ELSE j.finished_at END,
        started_at = l.l_started,
        claimed_by = l.l_worker,
        claimed_from = l.l_from,
        claim_attempt = l.l_attempt,
        claim_reason = l.l_reason,
        claim_version = l.token,
        updated_at = now(),
        version = greatest(j.version, l.token) + 1
    FROM input i JOIN f_locked l ON l.id = i.id
    WHERE j.id = i.id
    RETURNING j.id, j.kind, j.queue, j.priority, j.state, j.attempt, j.version, j.run_at,
        i.worker, j.claimed_by,
        CASE WHEN i.op IN ('retry', 'defer', 'release') AND j.state = 'cancelled'
             THEN 'cancelled by request' ELSE i.message END AS message,
        i.op
),
-- A job put back (retried, deferred, released) is ready to claim again from the ring.
f_readied AS (
    INSERT INTO {s}.job_ready (slot, queue, priority, run_at, id)
    SELECT {ring_slot}, queue, priority, run_at, id FROM f_upd WHERE state = 'queued'
),
-- A plain success by the worker that claimed the job (most finishes) writes no event: the
-- row tells it (`EVENTS` reads it from `finished_at`, `claimed_by` and `version`). The claim
-- the row held before this one (a job's earlier attempt) goes to the history.
f_events AS (
    INSERT INTO {s}.job_events (job_id, version, at, from_state, to_state, attempt, worker,
                                reason)
    SELECT id, version, now(), 'running', state, attempt, worker, message FROM f_upd
    WHERE NOT (state = 'succeeded' AND message IS NULL AND worker = claimed_by)
    UNION ALL
    SELECT l.id, l.prev_version, l.prev_started, l.prev_from, 'running', l.prev_attempt,
           l.prev_by, l.prev_reason
    FROM f_locked l JOIN f_upd u ON u.id = l.id
    WHERE l.prev_by IS NOT NULL
),
-- A job with more changes than the history keeps (versions count every change, so most jobs
-- are never looked at): drop all but its first event and the latest $9 - 5 (with the
-- two written above, the earlier claim and the move, submission and the latest claim kept
-- on the row: $9 in all).
trimmed AS (
    DELETE FROM {s}.job_events e USING f_upd u
    WHERE u.version > $9 AND e.job_id = u.id
      AND e.version > (SELECT min(f.version) FROM {s}.job_events f WHERE f.job_id = u.id)
      AND e.version < (SELECT g.version FROM {s}.job_events g WHERE g.job_id = u.id
                       ORDER BY g.version DESC OFFSET $9 - 6 LIMIT 1)
),
notified AS (
    SELECT pg_notify($8, queue)
    FROM (SELECT DISTINCT queue FROM f_upd WHERE state = 'queued' AND run_at <= now()) q
),
-- For the answers of the jobs not finished here: who holds them now (one call for all).
f_conflicts AS MATERIALIZED (
    SELECT * FROM {s}.leases_of(ARRAY(
        SELECT i.id FROM input i WHERE NOT EXISTS (SELECT 1 FROM f_upd u WHERE u.id = i.id)))
)"
    };
}
/// What a finish's counts change, alone.
macro_rules! finish_counted {
    () => {
        r"
counted AS (
    INSERT INTO {s}.job_count_deltas (slot, kind, state, n)
    SELECT {delta_slot}, kind, st, sum(delta) FROM (
        SELECT kind, 'running' AS st, -1 AS delta FROM f_upd
        UNION ALL
        SELECT kind, state, 1 FROM f_upd
        UNION ALL
        -- (a running total of retries, kept beside the states: `StateCounts::retried`)
        SELECT kind, 'retried', 1 FROM f_upd WHERE op = 'retry' AND state = 'queued'
    ) x
    GROUP BY kind, st HAVING sum(delta) <> 0
)"
    };
}
/// Finish a batch of attempts, each fenced by its claim's token; a cancel requested while
/// the job ran turns a put-back into `cancelled`. Events (a long history trimmed to the
/// first and the latest), counts and a wake-up for jobs put back due now, all in the one
/// statement. The rows are locked in id order first (as `HEARTBEAT` locks them), so
/// concurrent statements never deadlock; rows it does not touch are answered from the
/// statement's snapshot. Delays count from the server's clock.
const FINISH: &str = concat!(
    "WITH",
    finish_ctes!(),
    ",",
    finish_counted!(),
    r"
SELECT CASE WHEN cl.token IS NULL THEN cj.state ELSE 'running' END AS cur_state,
       coalesce(cl.token, cj.claim_version) AS cur_claim, cl.worker AS cur_owner,
       u.state AS new_state, u.version AS new_version,
       (SELECT count(*) FROM notified) AS notified
FROM input i
LEFT JOIN f_upd u ON u.id = i.id
LEFT JOIN {s}.jobs cj ON u.id IS NULL AND cj.id = i.id
LEFT JOIN f_conflicts cl ON cl.id = cj.id AND cl.token > coalesce(cj.claim_version, 0)
ORDER BY i.ord"
);

/// Finish a batch (as [`FINISH`]) and claim due jobs (as `claim_due`) in one statement: the
/// finish's parameters are `$1`–`$9` as in [`FINISH`], the claim's queues `$10`, most jobs
/// `$11`, worker `$12`, lease `$13`, takeover window `$14`. The claim keeps off the rows the finish
/// settles, and the counts of both are written by one `counted`. Answers one row per job
/// claimed (at least one row): the finish's answers, in input order, as arrays on the first.
const FINISH_AND_CLAIM_FOOT: &str = r"
SELECT CASE WHEN c.rn IS NULL OR c.rn = 1 THEN f.f_cur_state END AS f_cur_state,
       CASE WHEN c.rn IS NULL OR c.rn = 1 THEN f.f_cur_claim END AS f_cur_claim,
       CASE WHEN c.rn IS NULL OR c.rn = 1 THEN f.f_cur_owner END AS f_cur_owner,
       CASE WHEN c.rn IS NULL OR c.rn = 1 THEN f.f_new_state END AS f_new_state,
       CASE WHEN c.rn IS NULL OR c.rn = 1 THEN f.f_new_version END AS f_new_version,
       f.notified, c.*
FROM (
    SELECT array_agg(CASE WHEN cl.token IS NULL THEN cj.state ELSE 'running' END
                     ORDER BY i.ord) AS f_cur_state,
           array_agg(coalesce(cl.token, cj.claim_version) ORDER BY i.ord) AS f_cur_claim,
           array_agg(cl.worker ORDER BY i.ord) AS f_cur_owner,
           array_agg(u.state ORDER BY i.ord) AS f_new_state,
           array_agg(u.version ORDER BY i.ord) AS f_new_version,
           (SELECT count(*) FROM notified) AS notified
    FROM input i
    LEFT JOIN f_upd u ON u.id = i.id
    LEFT JOIN {s}.jobs cj ON u.id IS NULL AND cj.id = i.id
LEFT JOIN f_conflicts cl ON cl.id = cj.id AND cl.token > coalesce(cj.claim_version, 0)
) f
LEFT JOIN (
    SELECT row_number() OVER (ORDER BY u.priority DESC, u.run_at, u.id) AS rn,
           u.id AS input_id, d.outcome, d.found AS found_state,
           NULL::timestamptz AS found_run_at, d.reason AS found_reason, u.*
    FROM upd u JOIN decided d ON d.id = u.id
) c ON true
ORDER BY c.rn";

/// Cancel one job: queued at once, running by setting the flag its heartbeat reports. Whether
/// it runs is read once its row is locked (`leases_of`: a claim that committed while the
/// cancel waited leaves the row as it was).
const CANCEL: &str = r"
WITH rows AS (
    SELECT id, kind, state, claim_version FROM {s}.jobs WHERE id = $1 FOR UPDATE
),
live AS MATERIALIZED (
    SELECT * FROM {s}.leases_of(ARRAY(SELECT id FROM rows))
),
locked AS (
    SELECT r.id, r.kind,
           CASE WHEN EXISTS (SELECT 1 FROM live v WHERE v.token > coalesce(r.claim_version, 0))
                THEN 'running' ELSE r.state END AS state
    FROM rows r
),
upd AS (
    UPDATE {s}.jobs j SET
        state = CASE WHEN l.state IN ('queued', 'pending') THEN 'cancelled' ELSE j.state END,
        cancel_requested = j.cancel_requested OR l.state = 'running',
        finished_at = CASE WHEN l.state IN ('queued', 'pending') THEN now()
                           ELSE j.finished_at END,
        updated_at = now(),
        version = j.version + 1
    FROM locked l
    WHERE j.id = l.id AND l.state IN ('queued', 'pending', 'running')
    RETURNING j.id, j.kind, j.version, j.attempt, l.state AS from_state, j.state
),
events AS (
    INSERT INTO {s}.job_events (job_id, version, at, from_state, to_state, attempt, worker,
                                reason)
    SELECT id, version, now(), from_state, state, attempt, NULL, $2
    FROM upd WHERE from_state IN ('queued', 'pending')
),
counted AS (
    INSERT INTO {s}.job_count_deltas (slot, kind, state, n)
    SELECT {delta_slot}, kind, st, sum(delta) FROM (
        SELECT kind, from_state AS st, -1 AS delta FROM upd
        WHERE from_state IN ('queued', 'pending')
        UNION ALL
        SELECT kind, 'cancelled', 1 FROM upd WHERE from_state IN ('queued', 'pending')
    ) x
    GROUP BY kind, st
)
SELECT state FROM locked";

/// Keep a progress report on the record of a claim that still holds its job (by id, the
/// primary key, and token: the lease is live); answers a row only when it did.
const PROGRESS: &str = r"
UPDATE {s}.jobs j SET progress = $3::jsonb
WHERE j.id = $1 AND coalesce(j.claim_version, 0) < $2
  AND EXISTS (SELECT 1 FROM {s}.job_leases l WHERE l.id = $1 AND l.token = $2)
RETURNING 1";

/// A job's history: submission, the latest settled claim and a plain success from its row,
/// the claim that holds it now from its lease, the rest from `job_events`. (A success is on the row when the finish wrote no event for it: the
/// job's version then has no event.)
const EVENTS: &str = r"
SELECT at, from_state, to_state, attempt, worker, reason FROM (
    SELECT 0::bigint AS version, created_at AS at, NULL::text AS from_state,
           CASE WHEN jsonb_array_length(coalesce(step->'depends_on', '[]'::jsonb)) > 0
                THEN 'pending' ELSE 'queued' END AS to_state,
           0 AS attempt, NULL::text AS worker, 'submitted' AS reason
    FROM {s}.jobs WHERE id = $1
    UNION ALL
    SELECT claim_version, started_at, claimed_from, 'running', claim_attempt, claimed_by,
           claim_reason
    FROM {s}.jobs WHERE id = $1 AND claimed_by IS NOT NULL
    UNION ALL
    -- The claim that holds it now.
    SELECT l.token, l.started_at, l.claimed_from, 'running', l.attempt, l.worker, l.reason
    FROM {s}.jobs j {live_lease}
    WHERE j.id = $1 AND l.token IS NOT NULL
    UNION ALL
    SELECT j.version, j.finished_at, 'running', 'succeeded', j.attempt, j.claimed_by,
           NULL::text
    FROM {s}.jobs j WHERE j.id = $1 AND j.state = 'succeeded' AND NOT EXISTS (
        SELECT 1 FROM {s}.job_events e WHERE e.job_id = j.id AND e.version = j.version)
    UNION ALL
    SELECT version, at, from_state, to_state, attempt, worker, reason
    FROM {s}.job_events WHERE job_id = $1
) e
ORDER BY version";

/// Counts by kind and state: the folded counts plus the changes not yet folded (see the
/// migration `20261204000004_count_deltas.sql`).
const COUNTS: &str = r"
SELECT kind, state, sum(n)::bigint AS n FROM (
    SELECT kind, state, n FROM {s}.job_counts
    UNION ALL
    SELECT kind, state, n FROM {s}.job_count_deltas
) c
GROUP BY kind, state HAVING sum(n) <> 0";

/// Queued jobs not yet due, by kind: through `jobs_delayed`, so it reads only those (the
/// rest of the queue stats come from `job_counts`).
const QUEUE_DELAYED: &str = r"
SELECT kind, count(*) AS n FROM {s}.jobs
WHERE state = 'queued' AND run_at > created_at AND run_at > now()
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
    INSERT INTO {s}.job_count_deltas (slot, kind, state, n)
    SELECT {delta_slot}, kind, state, -count(*) FROM del GROUP BY kind, state
)
SELECT count(*) FROM del";

/// Delete one finished job that is not a workflow step, with its history; counts follow.
/// Answers the job's state and whether it is a step (no row: no such job), and whether it
/// went.
const DELETE_FINISHED: &str = r"
WITH target AS (
    SELECT id, state, step IS NOT NULL AS is_step FROM {s}.jobs WHERE id = $1 FOR UPDATE
),
del AS (
    DELETE FROM {s}.jobs j USING target t
    WHERE j.id = t.id AND t.state IN ('succeeded', 'dead', 'cancelled') AND NOT t.is_step
    RETURNING j.id, j.kind, j.state
),
history AS (
    DELETE FROM {s}.job_events e USING del WHERE e.job_id = del.id
),
counted AS (
    INSERT INTO {s}.job_count_deltas (slot, kind, state, n)
    SELECT {delta_slot}, kind, state, -1 FROM del
)
SELECT t.state, t.is_step, (SELECT count(*) FROM del) > 0 AS deleted FROM target t";

/// The queues and priorities that have rows in the ready ring (`job_ready`, which holds a row
/// for every queued job, and rows of jobs claimed since, until its slot is emptied), at most
/// `$1` of them: found by skipping through the ring's index, one probe per queue and
/// priority however many rows each has.
const QUEUE_LANES: &str = r"
WITH RECURSIVE lanes(queue, priority) AS (
    (SELECT queue, priority FROM {s}.job_ready ORDER BY queue, priority DESC LIMIT 1)
    UNION ALL
    SELECT n.queue, n.priority FROM lanes l CROSS JOIN LATERAL (
        SELECT * FROM (
            (SELECT queue, priority FROM {s}.job_ready
             WHERE queue = l.queue AND priority < l.priority
             ORDER BY queue, priority DESC LIMIT 1)
            UNION ALL
            (SELECT queue, priority FROM {s}.job_ready
             WHERE queue > l.queue
             ORDER BY queue, priority DESC LIMIT 1)
        ) x LIMIT 1
    ) n
)
SELECT queue, priority FROM lanes LIMIT $1";

/// Per queue `$1` and priority `$2`: the queued jobs (not running on a lease) among the first
/// `$3` ring rows of the lane, due (`ready`) or not (`delayed`) by their records, and how many
/// rows were read (a lane read to the budget may hold more).
const QUEUE_DEPTHS: &str = r"
SELECT q.queue, q.priority, c.ready, c.delayed, c.scanned
FROM unnest($1::text[], $2::smallint[]) AS q(queue, priority)
CROSS JOIN LATERAL (
    SELECT count(DISTINCT j.id) FILTER (WHERE j.state = 'queued' AND l.token IS NULL
                                           AND j.run_at <= now()) AS ready,
           count(DISTINCT j.id) FILTER (WHERE j.state = 'queued' AND l.token IS NULL
                                           AND j.run_at > now()) AS delayed,
           count(*) AS scanned
    FROM (SELECT r.id FROM {s}.job_ready r
          WHERE r.queue = q.queue AND r.priority = q.priority LIMIT $3) r
    LEFT JOIN {s}.jobs j ON j.id = r.id
    {live_lease}
) c";

/// The prepared statement texts of one schema.
pub(super) struct Statements {
    pub(super) create: Arc<str>,
    pub(super) create_steps: Arc<str>,
    pub(super) key_holders: Arc<str>,
    pub(super) claim_ids: Arc<str>,
    pub(super) claim_due: Arc<str>,
    pub(super) finish_and_claim: Arc<str>,
    pub(super) heartbeat: Arc<str>,
    pub(super) progress: Arc<str>,
    pub(super) finish: Arc<str>,
    pub(super) cancel: Arc<str>,
    pub(super) get: Arc<str>,
    pub(super) events: Arc<str>,
    pub(super) counts: Arc<str>,
    pub(super) queue_delayed: Arc<str>,
    pub(super) purge: Arc<str>,
    pub(super) delete_finished: Arc<str>,
    pub(super) queue_lanes: Arc<str>,
    pub(super) queue_depths: Arc<str>,
}

impl Statements {
    pub(super) fn new(shared: &Shared) -> Self {
        let sql = |template: &str| {
            shared.sql(
                &template
                    .replace("{claim_columns}", CLAIM_COLUMNS)
                    .replace("{live_lease}", LIVE_LEASE)
                    .replace("{ring_slot}", RING_SLOT)
                    .replace("{delta_slot}", DELTA_SLOT)
                    .replace("{lease_slot}", LEASE_SLOT),
            )
        };
        let tail = |worker: &str, lease: &str| {
            CLAIM_TAIL
                .replace("{worker}", worker)
                .replace("{lease}", lease)
        };
        let due_head = |queues: &str, max: &str, takeovers: &str, not_finished: &str| {
            CLAIM_DUE_HEAD
                .replace("{queues}", queues)
                .replace("{max}", max)
                .replace("{takeovers}", takeovers)
                .replace("{not_finished}", not_finished)
        };
        let counted = |finished: &str| CLAIM_COUNTED.replace("{finished}", finished);
        Self {
            create: sql(CREATE),
            create_steps: sql(CREATE_STEPS),
            key_holders: sql(KEY_HOLDERS),
            claim_ids: sql(&format!(
                "{CLAIM_IDS_HEAD}{}{}{CLAIM_IDS_FOOT}",
                tail("$2", "$3"),
                counted("")
            )),
            claim_due: sql(&format!(
                "WITH {}{}{CLAIM_DUE_UNSEEN}{}{CLAIM_DUE_FOOT}",
                due_head("$1", "$2", "$5", "'{}'::uuid[]"),
                tail("$3", "$4"),
                counted("")
            )),
            finish_and_claim: sql(&format!(
                "WITH {},{}{}{CLAIM_DUE_UNSEEN}{}{FINISH_AND_CLAIM_FOOT}",
                finish_ctes!(),
                due_head("$10", "$11", "$14", "$1::uuid[]"),
                tail("$12", "$13"),
                counted(FINISHED_COUNTED)
            )),
            heartbeat: sql(HEARTBEAT),
            progress: sql(PROGRESS),
            finish: sql(FINISH),
            cancel: sql(CANCEL),
            get: sql(&format!(
                "SELECT {JOB_NOW} FROM {{s}}.jobs j {{live_lease}} WHERE j.id = $1"
            )),
            events: sql(EVENTS),
            counts: sql(COUNTS),
            queue_delayed: sql(QUEUE_DELAYED),
            purge: sql(PURGE),
            delete_finished: sql(DELETE_FINISHED),
            queue_lanes: sql(QUEUE_LANES),
            queue_depths: sql(QUEUE_DEPTHS),
        }
    }
}
