-- Queue stats without a scan of every queued job: the jobs that wait for a later run_at
-- (submitted with a delay, or retried after a backoff). A job due when submitted has
-- run_at = created_at and never enters this index, so submit, claim and finish of ordinary
-- jobs write nothing here; ready jobs are the queued count (job_counts) less these.
CREATE INDEX jobs_delayed ON jobs (run_at) INCLUDE (kind)
    WHERE state = 'queued' AND run_at > created_at;
