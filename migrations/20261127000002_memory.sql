-- jobforge: the memory (`PostgresMemory`): namespaced entries and the execution history
-- reflection reads.

-- Keys sort bytewise (COLLATE "C"), as the in-memory memory sorts them, so a search answers
-- in the same order; a key-prefix search is a range of the primary key.
CREATE TABLE memory_entries (
    namespace  text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    -- `json`, not `jsonb`: kept as written; nothing searches inside values.
    value      json        NOT NULL,
    tags       text[]      NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    expires_at timestamptz,
    version    bigint      NOT NULL,
    PRIMARY KEY (namespace, key)
);

-- Search by tags (`tags @> $wanted`).
CREATE INDEX memory_entries_tags ON memory_entries USING gin (tags);
-- The purge of expired entries.
CREATE INDEX memory_entries_expiry ON memory_entries (expires_at) WHERE expires_at IS NOT NULL;

-- One row per execution, in the order recorded (`seq`).
CREATE TABLE memory_executions (
    seq            bigint      GENERATED ALWAYS AS IDENTITY,
    kind           text        NOT NULL,
    job_id         uuid        NOT NULL,
    strategy       text        NOT NULL,
    outcome        text        NOT NULL
        CHECK (outcome IN ('succeeded', 'retried', 'failed', 'deferred', 'cancelled')),
    duration_ns    bigint      NOT NULL,
    attempt        integer     NOT NULL,
    inline_retries integer     NOT NULL,
    error_class    text,
    at             timestamptz NOT NULL,
    decision       text
);

-- Window::All and Window::Last(n): a kind's executions by recording order.
CREATE INDEX memory_executions_kind_seq ON memory_executions (kind, seq);
-- Window::Since(span): a kind's executions by time.
CREATE INDEX memory_executions_kind_at ON memory_executions (kind, at);
-- Retention: rows are appended roughly in time order, so a BRIN index finds old ones for
-- next to nothing.
CREATE INDEX memory_executions_at ON memory_executions USING brin (at);
