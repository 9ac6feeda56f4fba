-- jobforge: schedules (`jobforge::schedule`), one row each. The definition is kept as
-- written (its `paused` is the column's); the due index holds only active schedules, so a
-- poll reads the due ones and nothing else.
CREATE TABLE schedules (
    id          text COLLATE "C" PRIMARY KEY,
    definition  jsonb       NOT NULL,
    paused      boolean     NOT NULL,
    next_run_at timestamptz,
    version     bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    fired       bigint      NOT NULL,
    skipped     bigint      NOT NULL,
    -- The latest fires, oldest first (at most 32).
    history     jsonb       NOT NULL
);

CREATE INDEX schedules_due ON schedules (next_run_at)
    WHERE NOT paused AND next_run_at IS NOT NULL;
