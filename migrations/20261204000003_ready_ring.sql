-- jobforge: the ready ring, where claims find queued jobs (issue 20).
--
-- A claim used to walk the partial index `jobs_due` from its head. Every claimed job left a
-- dead entry there, and while some transaction holds the xmin horizon (an idle `BEGIN`, a
-- long report) vacuum may not remove them: each claim walked all the entries of the jobs
-- claimed since the horizon was taken, and slowed down for as long as it was held.
--
-- Now each queued job has a row in `job_ready`, a narrow table split into three slots. New
-- rows go to the slot `job_ring` names; a claim locks its rows (`SKIP LOCKED`), deletes them
-- and claims their jobs. Every couple of seconds the store moves on to the next slot and
-- empties it with `TRUNCATE` first (what live rows it still holds, few, are written back),
-- so the dead rows and entries a claim can meet are those of the last few seconds, held
-- horizon or not. `jobs` stays the record: `get`, `list` and history read it as before.
CREATE TABLE job_ready (
    slot     smallint    NOT NULL,
    queue    text        NOT NULL,
    priority smallint    NOT NULL,
    run_at   timestamptz NOT NULL,
    id       uuid        NOT NULL
) PARTITION BY LIST (slot);

CREATE TABLE job_ready_0 PARTITION OF job_ready FOR VALUES IN (0);
CREATE TABLE job_ready_1 PARTITION OF job_ready FOR VALUES IN (1);
CREATE TABLE job_ready_2 PARTITION OF job_ready FOR VALUES IN (2);

-- The claim's order: a queue's due jobs by priority, then run_at, then id.
CREATE INDEX job_ready_due ON job_ready (queue, priority DESC, run_at, id);

-- The slot new rows go to, and when the store last moved on.
CREATE TABLE job_ring (
    one        boolean     PRIMARY KEY DEFAULT true CHECK (one),
    slot       smallint    NOT NULL CHECK (slot BETWEEN 0 AND 2),
    rotated_at timestamptz NOT NULL
);
INSERT INTO job_ring (slot, rotated_at) VALUES (0, now());

-- The claim reads the ring only through `ring_take`. A `TRUNCATE` invalidates every cached
-- plan that reads the table it empties: were the slots read in the big claim statements,
-- every connection would plan them again after every move (a few milliseconds apiece). The
-- function's own statement is small and quick to plan again. (Inserts name only the parent
-- table, whose plans a slot's `TRUNCATE` leaves alone.) `SET search_path FROM CURRENT`: the
-- names below resolve in this schema whatever the caller's path.

-- Take at most `most` due rows of the queues, by priority, then run_at, then id: locked
-- (other takers skip them) and deleted, so each is taken once. Answers the rows.
-- The function reads with a snapshot of its own, newer than its caller's: it can take the
-- row of a job submitted after the calling statement began, which that statement cannot see
-- in `jobs`. The claim writes such rows back (see `unseen` in the claim statements).
-- (ROWS: what a claim takes, not the default 1,000 rows a plan would make room for.)
CREATE FUNCTION ring_take(queues text[], most bigint)
RETURNS TABLE (id uuid, queue text, priority smallint, run_at timestamptz)
LANGUAGE plpgsql ROWS 64 SET search_path FROM CURRENT AS $$
BEGIN
    IF most <= 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH picked AS (
        SELECT r.part, r.tid, r.priority, r.run_at, r.id FROM unnest(queues) AS q(name)
        CROSS JOIN LATERAL (
            SELECT j.tableoid AS part, j.ctid AS tid, j.priority, j.run_at, j.id
            FROM job_ready j
            WHERE j.queue = q.name AND j.run_at <= now()
            ORDER BY j.priority DESC, j.run_at, j.id
            LIMIT most FOR UPDATE SKIP LOCKED
        ) r
        ORDER BY r.priority DESC, r.run_at, r.id
        LIMIT most
    ),
    taken AS (
        DELETE FROM job_ready d
        WHERE d.ctid = ANY (ARRAY(SELECT p.tid FROM picked p))
          AND (d.tableoid, d.ctid) IN (SELECT p.part, p.tid FROM picked p)
        RETURNING d.id, d.queue, d.priority, d.run_at
    )
    SELECT t.id, t.queue, t.priority, t.run_at FROM taken t;
END $$;

-- Move on to the next slot if the last move is at least `min_age` old: empty it with
-- TRUNCATE, writing back the rows of jobs still queued (at most `most_carried`; more, and it
-- stays: 'backlog'). One mover at a time ('not_due' for the others); a slot the claims under
-- way hold past the lock timeout answers 'busy'.
CREATE FUNCTION ring_rotate(min_age interval, most_carried bigint,
                            OUT outcome text, OUT new_slot smallint, OUT carried bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
-- Claims that arrive while the move waits for its lock queue behind it: keep that short.
SET lock_timeout = '20ms'
-- It reads whole slots (the pools run with enable_seqscan off).
SET enable_seqscan = on
AS $$
DECLARE
    cur smallint;
    due boolean;
    part text;
    qs text[];
    ps smallint[];
    rs timestamptz[];
    ids uuid[];
BEGIN
    carried := 0;
    SELECT slot, rotated_at <= now() - min_age INTO cur, due
    FROM job_ring WHERE one = true FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR NOT due THEN
        outcome := 'not_due';
        RETURN;
    END IF;
    new_slot := (cur + 1) % 3;
    part := format('job_ready_%s', new_slot);
    BEGIN
        EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', part);
    EXCEPTION WHEN lock_not_available THEN
        outcome := 'busy';
        new_slot := NULL;
        RETURN;
    END;
    -- The rows of jobs still queued (those of jobs claimed by other means, or cancelled,
    -- go with the slot).
    EXECUTE format(
        'SELECT array_agg(r.queue), array_agg(r.priority), array_agg(r.run_at), '
        'array_agg(r.id), count(*) FROM (SELECT r.* FROM %I r JOIN jobs j ON j.id = r.id '
        'WHERE j.state = ''queued'' LIMIT $1) r', part)
    INTO qs, ps, rs, ids, carried USING most_carried + 1;
    IF carried > most_carried THEN
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
    UPDATE job_ring SET slot = new_slot, rotated_at = now() WHERE one = true;
    outcome := 'moved';
END $$;

-- Jobs queued before this migration.
INSERT INTO job_ready (slot, queue, priority, run_at, id)
SELECT 0, queue, priority, run_at, id FROM jobs WHERE state = 'queued';

-- Claims no longer read it.
DROP INDEX jobs_due;
