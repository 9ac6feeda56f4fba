-- jobforge: job records, their history and counts, and the standalone delivery queue.
--
-- Runs with `search_path` set to the crate's own schema (default `jobforge`), so the names
-- below land there and never clash with the host application's tables.

-- One row per job: the state store (`PostgresState`). When one Postgres is both queue and
-- state, this table is also the queue: a due job is a `queued` row whose `run_at` has passed.
CREATE TABLE jobs (
    id               uuid        PRIMARY KEY,
    kind             text        NOT NULL,
    queue            text        NOT NULL,
    -- `json`, not `jsonb`: the payload is kept byte for byte as submitted.
    payload          json        NOT NULL,
    state            text        NOT NULL
        CHECK (state IN ('queued', 'running', 'succeeded', 'dead', 'cancelled')),
    priority         smallint    NOT NULL,
    attempt          integer     NOT NULL,
    max_attempts     integer     NOT NULL,
    timeout_ms       bigint,
    idempotency_key  text,
    tags             text[]      NOT NULL,
    tenant           text,
    strategy         text,
    run_at           timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    result           json,
    last_error       text,
    lease_owner      text,
    lease_expires_at timestamptz,
    cancel_requested boolean     NOT NULL DEFAULT false,
    version          bigint      NOT NULL,
    -- The latest claim, which is the latest `running` event of the job's history: kept here
    -- (the claim writes no event row) until a later claim moves it to job_events.
    -- `started_at` is its time.
    claimed_by       text,
    claimed_from     text,
    claim_attempt    integer,
    claim_reason     text,
    claim_version    bigint
) WITH (
    -- Every claim and finish rewrites a row: vacuum early so the claim index stays lean.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02
);

-- The claim: due jobs of a queue by priority, then run_at, then id (creation order).
-- Partial, so finished jobs kept for inspection never slow it down.
CREATE INDEX jobs_due ON jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
-- Takeover: running jobs whose lease has run out.
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'running';
-- Idempotent submission: one job per key while the job is kept.
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Listing by state and by kind, walked by id (keyset pagination). Partial, so the hot path
-- adds few entries: a claim (queued -> running) and a finish (running -> succeeded) none,
-- a submit one (queued, which listing and the reconciler page through). Running jobs are
-- few (listed through jobs_lease), succeeded ones the bulk (listed through the primary key);
-- by kind, the rare end states have an index, the rest is walked by id.
CREATE INDEX jobs_state_id ON jobs (state, id) WHERE state IN ('queued', 'dead', 'cancelled');
CREATE INDEX jobs_kind_id ON jobs (kind, id) WHERE state IN ('dead', 'cancelled');
CREATE INDEX jobs_tenant_id ON jobs (tenant, id) WHERE tenant IS NOT NULL;
-- Retention: finished jobs, oldest first.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Every transition after submission, but for the two the job row itself tells (submission,
-- and the latest claim). The job's version after the transition orders a job's history.
CREATE TABLE job_events (
    job_id     uuid        NOT NULL,
    version    bigint      NOT NULL,
    at         timestamptz NOT NULL,
    from_state text        NOT NULL,
    to_state   text        NOT NULL,
    attempt    integer     NOT NULL,
    worker     text,
    reason     text,
    PRIMARY KEY (job_id, version)
);

-- Job counts by kind and state, kept by the statements that change states (counting rows
-- would read the whole table). Spread over a few shards per (kind, state) so concurrent
-- statements seldom wait for one another; the count is the sum over shards.
CREATE TABLE job_counts (
    kind  text     NOT NULL,
    state text     NOT NULL,
    shard smallint NOT NULL,
    n     bigint   NOT NULL,
    PRIMARY KEY (kind, state, shard)
);

-- The standalone queue (`PostgresQueue`), for deployments whose state lives elsewhere.
CREATE SEQUENCE queue_seq;

CREATE TABLE queue_entries (
    id               uuid        PRIMARY KEY,
    kind             text        NOT NULL,
    queue            text        NOT NULL,
    priority         smallint    NOT NULL,
    run_at           timestamptz NOT NULL,
    attempt          integer     NOT NULL,
    -- Arrival order (renewed on release), the last tie-breaker.
    seq              bigint      NOT NULL DEFAULT nextval('queue_seq'),
    -- Deliveries so far: the lease token, so a stale holder cannot touch a newer delivery.
    deliveries       bigint      NOT NULL DEFAULT 0,
    leased_by        text,
    lease_expires_at timestamptz
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);

CREATE INDEX queue_entries_ready ON queue_entries (queue, priority DESC, run_at, seq)
    WHERE lease_expires_at IS NULL;
CREATE INDEX queue_entries_leased ON queue_entries (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;

CREATE TABLE queue_dead (
    seq      bigint      PRIMARY KEY DEFAULT nextval('queue_seq'),
    id       uuid        NOT NULL,
    kind     text        NOT NULL,
    queue    text        NOT NULL,
    priority smallint    NOT NULL,
    run_at   timestamptz NOT NULL,
    attempt  integer     NOT NULL,
    reason   text        NOT NULL,
    at       timestamptz NOT NULL
);
