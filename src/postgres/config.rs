use std::time::Duration;

use crate::{Error, Result};

/// Settings of a [`PostgresBackend`](super::PostgresBackend).
///
/// ```
/// use std::time::Duration;
/// use jobforge::postgres::PostgresConfig;
///
/// let config = PostgresConfig::default()
///     .with_schema("jobs_eu")
///     .with_max_connections(20)
///     .with_retention(Duration::from_secs(3 * 24 * 3600));
/// assert_eq!(config.schema, "jobs_eu");
/// ```
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// The schema that holds jobforge's tables and its migrations table, so nothing clashes
    /// with the host application's. Lowercase letters, digits and `_`, starting with a letter
    /// or `_`, at most 48 bytes. Default `jobforge`.
    pub schema: String,
    /// Most connections in the pool [`connect`](super::PostgresBackend::connect) opens
    /// (ignored by [`from_pool`](super::PostgresBackend::from_pool)). One more is kept for
    /// `LISTEN`. Default 10.
    pub max_connections: u32,
    /// How long to wait for a connection before an operation fails. Default 5 s.
    pub acquire_timeout: Duration,
    /// The `application_name` the connections report (visible in `pg_stat_activity`).
    /// Default `jobforge`.
    pub application_name: String,
    /// How often an idle worker looks for due jobs even without a notification: the backstop
    /// for notifications lost across reconnects and for delayed jobs nobody announced.
    /// Default 1 s.
    pub poll_interval: Duration,
    /// How long finished jobs (and their history and idempotency keys) are kept. Default 24 h.
    pub retention: Duration,
    /// How often the backend deletes what is past retention, in the background; `None` turns
    /// that off (call [`purge`](super::PostgresBackend::purge) yourself). Default 60 s.
    pub purge_interval: Option<Duration>,
    /// Rows deleted per statement when purging, so a purge never holds many locks or long
    /// transactions. Default 1,000.
    pub purge_batch: usize,
    /// How long executions recorded in the memory are kept. Default 7 days.
    pub execution_retention: Duration,
    /// Largest memory entry value, in bytes of JSON (as the in-memory memory's default).
    /// Default 64 KiB.
    pub max_value_bytes: usize,
    /// Most events kept in one job's history: its submission, its first transition and the
    /// latest ones (a job deferred again and again keeps a bounded history). At least 8.
    /// Default 64, as the other stores.
    pub max_events_per_job: usize,
    /// How often the ready ring, where claims find queued jobs, moves on to its next slot,
    /// which it empties with `TRUNCATE` (and so do the slots of count changes and of
    /// leases). A claim meets the dead rows of about three such intervals at most, even
    /// while another transaction keeps vacuum from removing them (see docs/backends.md,
    /// "Under long transactions"). Default 2 s.
    pub ring_interval: Duration,
    /// Most jobs one `list` call looks at beyond what an index narrows it to (default 5,000,
    /// as the Redis store; at least a page). A filter that matches few of the jobs it walks
    /// (a kind among finished jobs, a tag) answers a short page and a cursor to continue,
    /// instead of reading the whole table for one page.
    pub list_scan_budget: usize,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            schema: "jobforge".to_owned(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            application_name: "jobforge".to_owned(),
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(24 * 3600),
            purge_interval: Some(Duration::from_secs(60)),
            purge_batch: 1_000,
            execution_retention: Duration::from_secs(7 * 24 * 3600),
            max_value_bytes: 64 * 1024,
            max_events_per_job: 64,
            ring_interval: Duration::from_secs(2),
            list_scan_budget: 5_000,
        }
    }
}

impl PostgresConfig {
    /// Put jobforge's tables in `schema`.
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Open at most `max` pooled connections.
    #[must_use]
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// Wait at most `timeout` for a connection.
    #[must_use]
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Report `name` as the connections' `application_name`.
    #[must_use]
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// Look for due jobs at least this often while idle.
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Keep finished jobs for `retention`.
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Purge in the background every `interval` (`None`: never).
    #[must_use]
    pub fn with_purge_interval(mut self, interval: Option<Duration>) -> Self {
        self.purge_interval = interval;
        self
    }

    /// Delete at most `rows` per purge statement.
    #[must_use]
    pub fn with_purge_batch(mut self, rows: usize) -> Self {
        self.purge_batch = rows;
        self
    }

    /// Keep recorded executions for `retention`.
    #[must_use]
    pub fn with_execution_retention(mut self, retention: Duration) -> Self {
        self.execution_retention = retention;
        self
    }

    /// Accept memory entry values up to `bytes` of JSON.
    #[must_use]
    pub fn with_max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// Keep at most `max` events of a job's history (at least 8).
    #[must_use]
    pub fn with_max_events_per_job(mut self, max: usize) -> Self {
        self.max_events_per_job = max;
        self
    }

    /// Look at most `n` jobs per `list` call beyond what an index narrows it to.
    #[must_use]
    pub fn with_list_scan_budget(mut self, n: usize) -> Self {
        self.list_scan_budget = n;
        self
    }

    /// Move the ready ring on every `interval`.
    #[must_use]
    pub fn with_ring_interval(mut self, interval: Duration) -> Self {
        self.ring_interval = interval;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let schema = &self.schema;
        let valid = !schema.is_empty()
            && schema.len() <= 48
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && schema.bytes().next().is_some_and(|b| !b.is_ascii_digit())
            && !schema.starts_with("pg_");
        if !valid {
            return Err(Error::invalid_input(
                "schema",
                format!(
                    "`{schema}` is not usable: use 1 to 48 lowercase letters, digits and `_`, starting with a letter or `_` (and not `pg_`)"
                ),
            ));
        }
        if self.max_connections == 0 {
            return Err(Error::invalid_input(
                "max_connections",
                "must be at least 1",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::invalid_input(
                "poll_interval",
                "must be greater than zero",
            ));
        }
        if self.max_events_per_job < 8 {
            return Err(Error::invalid_input(
                "max_events_per_job",
                format!(
                    "{} is too few; keep at least 8 events per job",
                    self.max_events_per_job
                ),
            ));
        }
        if self.ring_interval < Duration::from_millis(100) {
            return Err(Error::invalid_input(
                "ring_interval",
                format!(
                    "{:?} is too short: each move takes a lock the claims wait for; use 100 ms or more",
                    self.ring_interval
                ),
            ));
        }
        if self.purge_batch == 0 {
            return Err(Error::invalid_input("purge_batch", "must be at least 1"));
        }
        if self.purge_interval.is_some_and(|i| i.is_zero()) {
            return Err(Error::invalid_input(
                "purge_interval",
                "must be greater than zero; use None to turn purging off",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        for bad in [
            "",
            "Jobs",
            "1jobs",
            "pg_jobs",
            "jobs-eu",
            "jobs;drop",
            &"a".repeat(49),
        ] {
            let err = PostgresConfig::default().with_schema(bad).validate().err();
            assert_eq!(err.and_then(|e| e.field()), Some("schema"), "{bad}");
        }
        for good in ["jobforge", "_x", "jobs_eu_2"] {
            assert!(
                PostgresConfig::default()
                    .with_schema(good)
                    .validate()
                    .is_ok()
            );
        }
    }
}
