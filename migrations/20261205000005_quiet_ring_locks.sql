-- jobforge: the moves of the rings take their locks without stalling the claims (issue 14).
--
-- `ring_rotate` and `lease_rotate` empty a slot with `TRUNCATE`, which needs the slot's
-- ACCESS EXCLUSIVE lock. They asked for it with `LOCK TABLE` and a 20 ms `lock_timeout`.
-- But a lock request that waits is queued, and every statement that asks for the same
-- table after it queues behind it, even one that only reads: claims, finishes, heartbeats
-- and cancels read all three slots of the ready ring and of the leases. So each move (every
-- `ring_interval`, 2 s by default) could hold every claim for up to 20 ms, three times
-- over (the count slots, the ready ring, the leases). At 12,000 jobs/s (half of the
-- PostgreSQL peak at concurrency 32) that was much of the submit-to-start tail:
-- `jobforge-bench --mode continuous --rate 12000 --duration 10`, p99 7.71 / 34.62 / 8.00 ms
-- with the moves, 6.10 / 5.32 / 6.51 ms with the ring interval set to an hour.
--
-- `lock_quietly` asks with `NOWAIT` instead, again every half millisecond for a short
-- while: a try that fails leaves no request queued, so the statements under way and those
-- that follow go on, and the move takes the lock in a moment when no statement holds the
-- slot. A slot that went unmoved for five intervals (a load that never leaves such a
-- moment) is then asked for as before, waiting: the slots are emptied only by these moves,
-- so they must move in the end.

-- Take `rel`'s ACCESS EXCLUSIVE lock (kept to the end of the caller's transaction):
-- `NOWAIT` tries for `budget`, then, if `patient`, one try that waits (the caller's
-- `lock_timeout`). Answers whether it holds the lock.
CREATE FUNCTION lock_quietly(rel text, budget interval, patient boolean) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + budget;
BEGIN
    LOOP
        BEGIN
            EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE NOWAIT', rel);
            RETURN true;
        EXCEPTION WHEN lock_not_available THEN
            EXIT WHEN clock_timestamp() >= deadline;
        END;
        PERFORM pg_sleep(0.0005);
    END LOOP;
    IF NOT patient THEN
        RETURN false;
    END IF;
    BEGIN
        EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', rel);
        RETURN true;
    EXCEPTION WHEN lock_not_available THEN
        RETURN false;
    END;
END $$;

-- As before (`20261205000004_leases.sql`), its locks taken by `lock_quietly`; patient when
-- the ring last moved five intervals ago or more (with `min_age` zero, as `rotate_ready`
-- calls it: at once).
CREATE OR REPLACE FUNCTION ring_rotate(min_age interval, most_carried bigint,
                                       OUT outcome text, OUT new_slot smallint,
                                       OUT carried bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
-- (for `lock_quietly`'s last, waiting try)
SET lock_timeout = '20ms'
-- It reads whole slots (the pools run with enable_seqscan off).
SET enable_seqscan = on
AS $$
DECLARE
    cur smallint;
    dcur smallint;
    due boolean;
    patient boolean;
    part text;
    deltas text;
    qs text[];
    ps smallint[];
    rs timestamptz[];
    ids uuid[];
BEGIN
    carried := 0;
    SELECT slot, delta_slot, looked_at <= now() - min_age,
           rotated_at <= now() - 5 * min_age
    INTO cur, dcur, due, patient
    FROM job_ring WHERE one = true FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR NOT due THEN
        outcome := 'not_due';
        RETURN;
    END IF;
    -- Count changes: fold the next slot into `job_counts` (shard 0; older shards stay summed),
    -- empty it, and send new changes there.
    deltas := format('job_count_deltas_%s', (dcur + 1) % 3);
    IF lock_quietly(deltas, interval '5ms', patient) THEN
        EXECUTE format(
            'INSERT INTO job_counts AS c (kind, state, shard, n) '
            'SELECT kind, state, 0, sum(n) FROM %I GROUP BY kind, state HAVING sum(n) <> 0 '
            'ORDER BY kind, state '
            'ON CONFLICT (kind, state, shard) DO UPDATE SET n = c.n + excluded.n', deltas);
        EXECUTE format('TRUNCATE %I', deltas);
        UPDATE job_ring SET delta_slot = (dcur + 1) % 3 WHERE one = true;
    END IF; -- else readers of the counts still hold that slot: the next call folds it
    new_slot := (cur + 1) % 3;
    part := format('job_ready_%s', new_slot);
    IF NOT lock_quietly(part, interval '20ms', patient) THEN
        outcome := 'busy';
        new_slot := NULL;
        RETURN;
    END IF;
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

-- As before (`20261205000004_leases.sql`), its lock taken by `lock_quietly`, patient likewise;
-- and a lease that came into the slot after the live ones were read is kept. A claim writes
-- its lease to the slot it read in `job_lease_ring` when its statement began: one that took
-- longer than two moves (waiting for a job's row, on a starved machine) writes to this slot
-- while it is read, or after, and the read before the lock did not see it. Rows leave a
-- slot only by its `TRUNCATE`, so the read under the lock counts the slot's rows: when more
-- are there than the first read saw, the live ones are read again, under the lock.
CREATE OR REPLACE FUNCTION lease_rotate(min_age interval) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET lock_timeout = '20ms'
SET enable_seqscan = on
AS $$
DECLARE
    cur smallint;
    due boolean;
    patient boolean;
    nxt smallint;
    live_ids uuid[];
    seen bigint;
    now_seen bigint;
    kept job_leases[];
BEGIN
    SELECT slot, moved_at <= now() - min_age, moved_at <= now() - 5 * min_age
    INTO cur, due, patient
    FROM job_lease_ring FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR NOT due THEN
        RETURN false;
    END IF;
    nxt := (cur + 1) % 3;
    -- (a job purged meanwhile has no row: its lease is not live)
    SELECT count(*),
           array_agg(l.id) FILTER (WHERE j.id IS NOT NULL
                                     AND l.token > coalesce(j.claim_version, 0))
    INTO seen, live_ids
    FROM job_leases l LEFT JOIN jobs j ON j.id = l.id
    WHERE l.slot = nxt;
    IF NOT lock_quietly(format('job_leases_%s', nxt), interval '20ms', patient) THEN
        RETURN false; -- claims, heartbeats or finishes still hold that slot: the next call
    END IF;
    -- The slot's rows of those jobs, as they are now (one scan; a settled lease of the same
    -- job kept with them is dead to readers, and goes at a later move).
    SELECT count(*), array_agg(l) FILTER (WHERE l.id = ANY (live_ids))
    INTO now_seen, kept
    FROM job_leases l WHERE l.slot = nxt;
    IF now_seen <> seen THEN
        SELECT array_agg(l) INTO kept
        FROM job_leases l JOIN jobs j ON j.id = l.id
        WHERE l.slot = nxt AND l.token > coalesce(j.claim_version, 0);
    END IF;
    EXECUTE format('TRUNCATE %I', format('job_leases_%s', nxt));
    IF kept IS NOT NULL THEN
        INSERT INTO job_leases SELECT * FROM unnest(kept);
    END IF;
    UPDATE job_lease_ring SET slot = nxt, moved_at = now();
    RETURN true;
END $$;
