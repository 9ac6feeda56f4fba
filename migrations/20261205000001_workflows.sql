-- jobforge: workflow steps, and progress reports (issue 16).
--
-- `progress`: what a running job's handler last reported (`JobContext::progress`), at most
-- once a second per job; not indexed, so its updates stay HOT.
ALTER TABLE jobs ADD COLUMN progress jsonb;
--
-- A step is a job row with its place in the graph: `step` (the workflow, the step's name,
-- the steps it runs after and those that run after it, its failure policy: written once,
-- at submit), `workflow_id` (to list a workflow's steps) and `waiting_on` (dependencies not
-- settled yet). A step that waits is `pending`. Rows of plain jobs leave the three NULL.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('pending', 'queued', 'running', 'succeeded', 'dead', 'cancelled')) NOT VALID;
ALTER TABLE jobs VALIDATE CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD COLUMN step jsonb;
ALTER TABLE jobs ADD COLUMN workflow_id uuid;
ALTER TABLE jobs ADD COLUMN waiting_on integer;
-- The step's failure policy apart from its link: the trigger below reads it for every
-- dependency that ends, and a join's link names all its dependencies (a 10,000-step fan-in's
-- is 400 kB of TOASTed jsonb, read whole by `step->>...`).
ALTER TABLE jobs ADD COLUMN step_policy text;

CREATE INDEX jobs_workflow_id ON jobs (workflow_id, id) WHERE workflow_id IS NOT NULL;

-- When a step ends (succeeded, dead, cancelled), the steps after it that still wait are
-- settled in the same transaction, whatever statement ended it (a finish, a claim that
-- found a dead worker's attempts spent, a cancel): each counts it down and is queued when
-- it was the last it waited for, or ends as its policy says (`cancel`: cancelled; `skip`:
-- succeeded with no result). A step ended here settles the steps after it in turn, in the
-- same call: a loop over a worklist, not a nested call per link (the trigger fired by this
-- function's own updates returns at once), so a long chain of cancelled steps cannot run
-- the server out of stack.
--
-- Most settlements only count down a step that waits for others too (each of a fan-in's
-- 1,000 dependencies but the last): that is one small UPDATE, whose RETURNING says which
-- steps reached 0. Only when some step moves does the larger statement run, which files it
-- (ring row, count deltas, history, NOTIFY).
--
-- The same decision as `crate::workflow::settle`; the in-memory store's is
-- `Inner::settle_dependents`, Redis's `settle_steps`.
CREATE FUNCTION settle_dependents() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    -- The steps that ended and whose followers are still to settle, and how they ended.
    done_ids uuid[] := ARRAY[NEW.id];
    done_states text[] := ARRAY[NEW.state];
    i integer := 0;
    done_id uuid;
    ended text;
    deps uuid[];
    ready uuid[];
    ends uuid[];
    more_ids uuid[];
    more_states text[];
    notified bigint;
BEGIN
    IF pg_trigger_depth() > 1 THEN
        -- Ended by the loop below, which settles what follows it.
        RETURN NULL;
    END IF;
    WHILE i < cardinality(done_ids) LOOP
        i := i + 1;
        done_id := done_ids[i];
        ended := done_states[i];
        IF i = 1 THEN
            deps := ARRAY(SELECT d::uuid
                          FROM jsonb_array_elements_text(NEW.step->'dependents') AS d
                          ORDER BY 1);
        ELSE
            deps := ARRAY(SELECT d::uuid
                          FROM jobs j, jsonb_array_elements_text(j.step->'dependents') AS d
                          WHERE j.id = done_id
                          ORDER BY 1);
        END IF;
        CONTINUE WHEN cardinality(deps) = 0;
        -- Count down the waiting steps that take this end as done (all of them when it
        -- succeeded; those that run anyway when it failed). The UPDATE locks each row and
        -- reads it again once locked, so of two statements counting one step down at once,
        -- exactly one brings it to 0: that one queues it.
        WITH counted AS (
            UPDATE jobs SET waiting_on = waiting_on - 1, updated_at = now()
            WHERE id = ANY (deps) AND state = 'pending'
              AND (ended = 'succeeded' OR step_policy = 'run')
            RETURNING id, waiting_on
        )
        SELECT array_agg(id) FILTER (WHERE waiting_on = 0) INTO ready FROM counted;
        -- The others end by their policy (cancelled, or skipped).
        ends := NULL;
        IF ended <> 'succeeded' THEN
            ends := ARRAY(SELECT id FROM jobs
                          WHERE id = ANY (deps) AND state = 'pending'
                            AND step_policy IS DISTINCT FROM 'run');
        END IF;
        CONTINUE WHEN coalesce(cardinality(ready), 0) + coalesce(cardinality(ends), 0) = 0;
        WITH locked AS MATERIALIZED (
            SELECT j.id, j.step_policy AS policy, j.waiting_on
            FROM jobs j
            WHERE j.id = ANY (coalesce(ready, '{}') || coalesce(ends, '{}'))
              AND j.state = 'pending'
            ORDER BY j.id
            FOR UPDATE
        ),
        decided AS (
            SELECT l.id, CASE
                WHEN l.waiting_on = 0 THEN 'queued'
                WHEN l.policy = 'skip' THEN 'succeeded'
                ELSE 'cancelled' END AS to_state
            FROM locked l
        ),
        moved AS (
            UPDATE jobs j SET
                state = d.to_state,
                waiting_on = 0,
                -- Its own delay counts from now, when it became ready.
                run_at = CASE WHEN d.to_state = 'queued' THEN now() + (j.run_at - j.created_at)
                              ELSE j.run_at END,
                finished_at = CASE WHEN d.to_state IN ('succeeded', 'cancelled') THEN now()
                                   ELSE j.finished_at END,
                updated_at = now(),
                version = j.version + 1
            FROM decided d
            WHERE j.id = d.id
            RETURNING j.id, j.kind, j.queue, j.priority, j.run_at, j.attempt, j.version,
                      d.to_state
        ),
        events AS (
            INSERT INTO job_events (job_id, version, at, from_state, to_state, attempt,
                                    worker, reason)
            SELECT id, version, now(), 'pending', to_state, attempt, NULL,
                CASE to_state
                    WHEN 'queued' THEN 'dependencies succeeded'
                    WHEN 'succeeded' THEN 'skipped: dependency ' || done_id || ' ended ' || ended
                    ELSE 'cancelled: dependency ' || done_id || ' ended ' || ended
                END
            FROM moved
        ),
        readied AS (
            INSERT INTO job_ready (slot, queue, priority, run_at, id)
            SELECT (SELECT slot FROM job_ring WHERE one = true), queue, priority, run_at, id
            FROM moved WHERE to_state = 'queued'
        ),
        counted AS (
            INSERT INTO job_count_deltas (slot, kind, state, n)
            SELECT (SELECT delta_slot FROM job_ring WHERE one = true), kind, st, sum(delta)
            FROM (
                SELECT kind, 'pending' AS st, -1 AS delta FROM moved
                UNION ALL
                SELECT kind, to_state, 1 FROM moved
            ) x
            GROUP BY kind, st
        ),
        notify AS (
            SELECT pg_notify(current_schema() || '_jobforge', queue || CASE WHEN due THEN ''
                ELSE ' ' || floor(extract(epoch FROM at) * 1000000)::bigint END)
            FROM (SELECT queue, run_at <= now() AS due, min(run_at) AS at FROM moved
                  WHERE to_state = 'queued' GROUP BY 1, 2) q
        )
        -- (`notify` is read so that it runs; the steps that ended go on the worklist.)
        SELECT array_agg(m.id) FILTER (WHERE m.to_state <> 'queued'),
               array_agg(m.to_state) FILTER (WHERE m.to_state <> 'queued'),
               (SELECT count(*) FROM notify)
        INTO more_ids, more_states, notified
        FROM moved m;
        IF more_ids IS NOT NULL THEN
            done_ids := done_ids || more_ids;
            done_states := done_states || more_states;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_settle_dependents
    AFTER UPDATE OF state ON jobs
    FOR EACH ROW
    WHEN (NEW.step IS NOT NULL AND NEW.state IN ('succeeded', 'dead', 'cancelled')
          AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION settle_dependents();
