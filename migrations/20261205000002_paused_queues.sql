-- Paused queues (issue 17): no worker pool claims from a queue listed here until it is
-- resumed. Pools read the table about once a second; a resume also notifies the schema's
-- channel so waiting workers look at once. A few rows at most, changed by operators only:
-- nothing on the hot path writes it.
CREATE TABLE paused_queues (
    queue     text        PRIMARY KEY,
    paused_at timestamptz NOT NULL
);
