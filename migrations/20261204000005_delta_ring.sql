-- jobforge: count changes fold on their own turn, whatever holds the ready ring (issue 20).
--
-- The count changes in `job_count_deltas` used to go to the ready ring's current slot, so a
-- backlog that kept the ring in place (more queued jobs in the next slot than a move carries)
-- also kept one slot of count changes from ever being folded: it grew by a row per statement
-- until the backlog drained, and every `counts()` read it all.
--
-- Now `job_ring.delta_slot` names the slot count changes go to, and every call of
-- `ring_rotate` that is due moves it on, folding and emptying the slot it moves to first,
-- before and whatever the ready ring then does (moved, busy or held by a backlog). A slot
-- whose writers still hold it past the lock timeout is left for the next call.
--
-- A call is due when the last due call was at least `min_age` ago (`job_ring.looked_at`),
-- whether it moved the ring or found a backlog. Before, only a move counted, so while a
-- backlog kept the ring in place every process looked again at every tick: each look holds
-- the next slot's exclusive lock (which claims queue behind) while it counts up to
-- `most_carried` live rows there. Now one look per interval does, whatever the processes.
ALTER TABLE job_ring ADD COLUMN delta_slot smallint CHECK (delta_slot BETWEEN 0 AND 2);
ALTER TABLE job_ring ADD COLUMN looked_at timestamptz;
UPDATE job_ring SET delta_slot = slot, looked_at = rotated_at;
ALTER TABLE job_ring ALTER COLUMN delta_slot SET NOT NULL,
                     ALTER COLUMN looked_at SET NOT NULL;

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
    -- The rows of jobs still queued (those of jobs claimed by other means, or cancelled,
    -- go with the slot).
    EXECUTE format(
        'SELECT array_agg(r.queue), array_agg(r.priority), array_agg(r.run_at), '
        'array_agg(r.id), count(*) FROM (SELECT r.* FROM %I r JOIN jobs j ON j.id = r.id '
        'WHERE j.state = ''queued'' LIMIT $1) r', part)
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
