-- jobforge: claims write a narrow lease row, not the job's record (issues 14 and 20).
--
-- A claim used to rewrite the whole job row (state, attempt, lease, the claim's fields) and
-- add two index entries for it; the finish rewrote it again. Measured apart with pgbench
-- (73 jobs a statement, medians of three): rewriting the rows took 1.60 ms, locking them
-- and inserting a lease row each 0.98 ms. And every claim left a dead version of a wide row
-- behind, which a held xmin horizon keeps.
--
-- Now a claim inserts one row per job into `job_leases`: the claim's token, attempt,
-- worker, expiry, start, where it came from and why. The job row is left as it was
-- (`state` stays `queued`) until the attempt settles: the finish (or a takeover, or the end
-- of a dead worker's attempts) writes the claim onto the row (`claimed_by`, `claim_version`
-- ... as before) and the outcome. A lease is live while its token is above the row's
-- `claim_version` (the token of the last claim the row settled): readers show such a job as
-- `running`, with the lease's attempt, owner, expiry and token as its version.
--
-- Heartbeats extend the lease row only. Takeovers find expired leases through
-- `job_leases_expiry`. The rows are split into three slots like the ready ring; the backend
-- calls `lease_rotate` after each `ring_rotate`, in a transaction of its own (so neither
-- move holds its lock while the other waits for one): it moves the lease slot on, writing
-- the live leases of the slot it empties back into it (they are few: one per job running),
-- whatever the ready ring does.
CREATE TABLE job_leases (
    slot         smallint    NOT NULL,
    id           uuid        NOT NULL,
    queue        text        NOT NULL,
    token        bigint      NOT NULL,
    attempt      integer     NOT NULL,
    worker       text        NOT NULL,
    expires_at   timestamptz NOT NULL,
    started_at   timestamptz NOT NULL,
    claimed_from text        NOT NULL,
    reason       text
) PARTITION BY LIST (slot);

CREATE TABLE job_leases_0 PARTITION OF job_leases FOR VALUES IN (0);
CREATE TABLE job_leases_1 PARTITION OF job_leases FOR VALUES IN (1);
CREATE TABLE job_leases_2 PARTITION OF job_leases FOR VALUES IN (2);

CREATE INDEX job_leases_id ON job_leases (id, token);
CREATE INDEX job_leases_expiry ON job_leases (expires_at);

-- The slot new leases go to, and when the lease slots last moved on: one row, in a table of
-- its own without an index (`job_ring`'s row is rewritten by every move of the ready ring;
-- rewritten by the lease moves too, its versions outgrew a page while a horizon was held,
-- and every further one added a primary-key entry).
CREATE TABLE job_lease_ring (
    slot     smallint    NOT NULL CHECK (slot BETWEEN 0 AND 2),
    moved_at timestamptz NOT NULL
);
INSERT INTO job_lease_ring (slot, moved_at) VALUES (0, now());

-- The big claim and finish statements read `job_leases` only through the two functions
-- below. A `TRUNCATE` of a slot invalidates every cached plan that reads the table (see
-- `ring_take` in `20261204000003_ready_ring.sql`): read inline, each move of the lease slot
-- made every connection plan those statements again (a 60,000-job burn-down at concurrency
-- 32 ran at 17-19k jobs/s instead of 25-27k). The functions' own statements are small and
-- quick to plan again.

-- The leases of `ids`, live or settled, read with a snapshot of its own (VOLATILE): a claim
-- calls it once it holds the rows' locks, so it sees a lease that another claim of the same
-- job committed while it waited for them (the other claim left the job row as it was, so the
-- row the lock reads again tells nothing). A cancel and a finish do the same. The caller
-- keeps the live one: the lease whose token is above the `claim_version` of the row it holds
-- (at most one is).
CREATE FUNCTION leases_of(ids uuid[])
RETURNS TABLE (id uuid, token bigint, attempt integer, worker text, expires_at timestamptz,
               started_at timestamptz, claimed_from text, reason text)
LANGUAGE plpgsql VOLATILE ROWS 64 SET search_path FROM CURRENT AS $$
BEGIN
    RETURN QUERY
    SELECT l.id, l.token, l.attempt, l.worker, l.expires_at, l.started_at, l.claimed_from,
           l.reason
    FROM job_leases l
    WHERE l.id = ANY (ids);
END $$;

-- At most `most` live leases of `queues` that expired within `window_us` microseconds
-- before now, oldest first, leaving out `skip` (jobs the calling statement finishes): locked
-- (`SKIP LOCKED`: a lease a heartbeat is extending is left for the next look).
CREATE FUNCTION leases_expired(queues text[], window_us bigint, most bigint, skip uuid[])
RETURNS TABLE (id uuid, token bigint, attempt integer, worker text, expires_at timestamptz,
               started_at timestamptz, claimed_from text, reason text)
LANGUAGE plpgsql VOLATILE ROWS 8 SET search_path FROM CURRENT AS $$
BEGIN
    IF window_us <= 0 OR most <= 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT l.id, l.token, l.attempt, l.worker, l.expires_at, l.started_at, l.claimed_from,
           l.reason
    FROM job_leases l JOIN jobs j ON j.id = l.id
    WHERE l.expires_at <= now() AND l.expires_at > now() - window_us * interval '1 microsecond'
      AND l.queue = ANY (queues) AND l.token > coalesce(j.claim_version, 0)
      AND NOT (l.id = ANY (skip))
    ORDER BY l.expires_at LIMIT most
    FOR UPDATE OF l SKIP LOCKED;
END $$;

-- As before (`20261204000005_delta_ring.sql`), but a job with a live lease is not queued.
CREATE OR REPLACE FUNCTION ring_rotate(min_age interval, most_carried bigint,
                                       OUT outcome text, OUT new_slot smallint,
                                       OUT carried bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
-- Claims that arrive while the move waits for its lock queue behind it: keep that short.
SET lock_timeout = '20ms'
-- It reads whole slots (the pools run with enable_seqscan off).
SET enable_seqscan = on
AS $$
DECLARE
    cur smallint;
    dcur smallint;
    due boolean;
    part text;
    deltas text;
    qs text[];
    ps smallint[];
    rs timestamptz[];
    ids uuid[];
BEGIN
    carried := 0;
    SELECT slot, delta_slot, looked_at <= now() - min_age INTO cur, dcur, due
    FROM job_ring WHERE one = true FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR NOT due THEN
        outcome := 'not_due';
        RETURN;
    END IF;
    -- Count changes: fold the next slot into `job_counts` (shard 0; older shards stay summed),
    -- empty it, and send new changes there.
    deltas := format('job_count_deltas_%s', (dcur + 1) % 3);
    BEGIN
        EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', deltas);
        EXECUTE format(
            'INSERT INTO job_counts AS c (kind, state, shard, n) '
            'SELECT kind, state, 0, sum(n) FROM %I GROUP BY kind, state HAVING sum(n) <> 0 '
            'ORDER BY kind, state '
            'ON CONFLICT (kind, state, shard) DO UPDATE SET n = c.n + excluded.n', deltas);
        EXECUTE format('TRUNCATE %I', deltas);
        UPDATE job_ring SET delta_slot = (dcur + 1) % 3 WHERE one = true;
    EXCEPTION WHEN lock_not_available THEN
        NULL; -- writers still hold that slot: the next call folds it
    END;
    new_slot := (cur + 1) % 3;
    part := format('job_ready_%s', new_slot);
    BEGIN
        EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', part);
    EXCEPTION WHEN lock_not_available THEN
        outcome := 'busy';
        new_slot := NULL;
        RETURN;
    END;
    -- The rows of jobs still queued and not running (those of jobs claimed by other means,
    -- or cancelled, go with the slot).
    EXECUTE format(
        'SELECT array_agg(r.queue), array_agg(r.priority), array_agg(r.run_at), '
        'array_agg(r.id), count(*) FROM (SELECT r.* FROM %I r JOIN jobs j ON j.id = r.id '
        'WHERE j.state = ''queued'' AND NOT EXISTS (SELECT 1 FROM job_leases l '
        'WHERE l.id = j.id AND l.token > coalesce(j.claim_version, 0)) LIMIT $1) r', part)
    INTO qs, ps, rs, ids, carried USING most_carried + 1;
    IF carried > most_carried THEN
        UPDATE job_ring SET looked_at = now() WHERE one = true;
        outcome := 'backlog';
        new_slot := NULL;
        carried := 0;
        RETURN;
    END IF;
    EXECUTE format('TRUNCATE %I', part);
    IF carried > 0 THEN
        EXECUTE format('INSERT INTO %I (slot, queue, priority, run_at, id) '
                       'SELECT $1, * FROM unnest($2, $3, $4, $5)', part)
        USING new_slot, qs, ps, rs, ids;
    END IF;
    UPDATE job_ring SET slot = new_slot, rotated_at = now(), looked_at = now()
    WHERE one = true;
    outcome := 'moved';
END $$;

-- Move the lease slot on if it last moved at least `min_age` ago: empty the next slot with
-- TRUNCATE, keeping its live leases (jobs still running on them), and send new leases there.
-- Which leases are live is read before the lock: no new lease goes to that slot, and what
-- the lock keeps out (heartbeats, finishes, takeovers) only extends or ends leases, so under
-- the lock only those rows are read again, as they are then. Answers whether it moved.
CREATE FUNCTION lease_rotate(min_age interval) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET lock_timeout = '20ms'
SET enable_seqscan = on
AS $$
DECLARE
    cur smallint;
    due boolean;
    nxt smallint;
    live_ids uuid[];
    live_tokens bigint[];
    kept job_leases[];
BEGIN
    SELECT slot, moved_at <= now() - min_age INTO cur, due
    FROM job_lease_ring FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR NOT due THEN
        RETURN false;
    END IF;
    nxt := (cur + 1) % 3;
    SELECT array_agg(l.id), array_agg(l.token) INTO live_ids, live_tokens
    FROM job_leases l JOIN jobs j ON j.id = l.id
    WHERE l.slot = nxt AND l.token > coalesce(j.claim_version, 0);
    BEGIN
        EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', format('job_leases_%s', nxt));
    EXCEPTION WHEN lock_not_available THEN
        RETURN false; -- heartbeats or finishes still hold that slot: the next call moves it
    END;
    SELECT array_agg(l) INTO kept FROM job_leases l
    WHERE l.slot = nxt AND (l.id, l.token) IN (SELECT * FROM unnest(live_ids, live_tokens));
    EXECUTE format('TRUNCATE %I', format('job_leases_%s', nxt));
    IF kept IS NOT NULL THEN
        INSERT INTO job_leases SELECT * FROM unnest(kept);
    END IF;
    UPDATE job_lease_ring SET slot = nxt, moved_at = now();
    RETURN true;
END $$;

-- Jobs running before this migration: their claim becomes a lease, and their row goes back
-- to what it was before the claim (the claims before it are in `job_events` already: a
-- claim moved the one before it there).
INSERT INTO job_leases (slot, id, queue, token, attempt, worker, expires_at, started_at,
                        claimed_from, reason)
SELECT 0, id, queue, claim_version, attempt, coalesce(lease_owner, claimed_by, 'unknown'),
       coalesce(lease_expires_at, now()), coalesce(started_at, now()),
       coalesce(claimed_from, 'queued'), claim_reason
FROM jobs WHERE state = 'running' AND claim_version IS NOT NULL;

UPDATE jobs SET state = 'queued', attempt = greatest(attempt - 1, 0), claimed_by = NULL,
       claimed_from = NULL, claim_attempt = NULL, claim_reason = NULL, claim_version = NULL,
       lease_owner = NULL, lease_expires_at = NULL
WHERE state = 'running';

-- Claims no longer write the row's lease columns, so nothing reads them through this.
DROP INDEX jobs_lease;

-- The lease lives in `job_leases`; the row's own lease columns were written by claims only.
ALTER TABLE jobs DROP COLUMN lease_owner, DROP COLUMN lease_expires_at;
