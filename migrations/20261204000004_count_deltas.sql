-- jobforge: counts that state changes append instead of rewriting (issue 20).
--
-- Every statement that changed job states used to upsert a `job_counts` row (one of 16
-- shards per kind and state). While a transaction holds the xmin horizon, each upsert leaves
-- a dead version that vacuum may not remove, and the next upsert of the same row walks them
-- all: after a minute of a held horizon at 500 jobs/s, 48 upserts took 5.8 ms, and every
-- claim and finish paid its share.
--
-- Now those statements append their changes to `job_count_deltas`, in the ready ring's
-- current slot (the same `job_ring` row names it). When the ring moves on to a slot,
-- `ring_rotate` folds that slot's changes into `job_counts` (one row per kind and state)
-- and empties it with `TRUNCATE`, under the same lock, so a count is never lost or counted
-- twice. A count is `job_counts` plus the changes not yet folded.
CREATE TABLE job_count_deltas (
    slot  smallint NOT NULL,
    kind  text     NOT NULL,
    state text     NOT NULL,
    n     bigint   NOT NULL
) PARTITION BY LIST (slot);

CREATE TABLE job_count_deltas_0 PARTITION OF job_count_deltas FOR VALUES IN (0);
CREATE TABLE job_count_deltas_1 PARTITION OF job_count_deltas FOR VALUES IN (1);
CREATE TABLE job_count_deltas_2 PARTITION OF job_count_deltas FOR VALUES IN (2);

-- As before, and also: fold the counts of the slot it moves to (before the backlog check, so
-- a ring held in place by a backlog still folds the slots it does not write to).
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
    due boolean;
    part text;
    deltas text;
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
    deltas := format('job_count_deltas_%s', new_slot);
    BEGIN
        EXECUTE format('LOCK TABLE %I, %I IN ACCESS EXCLUSIVE MODE', part, deltas);
    EXCEPTION WHEN lock_not_available THEN
        outcome := 'busy';
        new_slot := NULL;
        RETURN;
    END;
    -- The slot's count changes, folded into `job_counts` (shard 0; older shards stay summed).
    EXECUTE format(
        'INSERT INTO job_counts AS c (kind, state, shard, n) '
        'SELECT kind, state, 0, sum(n) FROM %I GROUP BY kind, state HAVING sum(n) <> 0 '
        'ORDER BY kind, state '
        'ON CONFLICT (kind, state, shard) DO UPDATE SET n = c.n + excluded.n', deltas);
    EXECUTE format('TRUNCATE %I', deltas);
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
