use std::time::Duration;

use crate::redis::client::{LinkConfig, connection_settings, validate_namespace};
use crate::{Error, Result};

/// Settings of a [`RedisState`](super::RedisState).
///
/// ```
/// use std::time::Duration;
/// use jobforge::redis::RedisStateConfig;
///
/// let config = RedisStateConfig::new("redis://127.0.0.1:6379")
///     .with_namespace("billing")
///     .with_retention(Duration::from_secs(3600));
/// assert_eq!(config.retention(), Duration::from_secs(3600));
/// ```
// `Debug` is derived: the URL sits in `LinkConfig`, whose `Debug` hides the password.
#[derive(Clone, Debug)]
pub struct RedisStateConfig {
    pub(super) link: LinkConfig,
    pub(super) namespace: String,
    pub(super) retention: Duration,
    pub(super) dead_retention: Duration,
    pub(super) max_events_per_job: usize,
    pub(super) chunk_size: usize,
    pub(super) sweep_batch: usize,
    pub(super) list_scan_budget: usize,
    pub(super) poll_interval: Duration,
}

impl Default for RedisStateConfig {
    /// `redis://127.0.0.1:6379`, namespace `jobforge`.
    fn default() -> Self {
        Self::new("redis://127.0.0.1:6379")
    }
}

connection_settings!(RedisStateConfig);

impl RedisStateConfig {
    /// Settings for the server at `url`, with namespace `jobforge`, a pool of 8 connections,
    /// 5 s connect and 10 s response timeouts, finished jobs kept 24 h (dead ones 7 days), 64
    /// events per job, and 1,000 jobs per script call.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            link: LinkConfig::new(url.into(), 8, Duration::from_secs(10)),
            namespace: "jobforge".to_owned(),
            retention: Duration::from_secs(24 * 3600),
            dead_retention: Duration::from_secs(7 * 24 * 3600),
            max_events_per_job: 64,
            chunk_size: 1_000,
            sweep_batch: 1_000,
            list_scan_budget: 5_000,
            poll_interval: Duration::from_millis(500),
        }
    }

    /// How long succeeded and cancelled jobs (and their idempotency keys) are kept
    /// (default 24 h).
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How long dead jobs are kept (default 7 days).
    #[must_use]
    pub fn with_dead_retention(mut self, retention: Duration) -> Self {
        self.dead_retention = retention;
        self
    }

    /// Events kept per job, creation included (default 64): the first transition and the
    /// latest ones.
    #[must_use]
    pub fn with_max_events_per_job(mut self, max: usize) -> Self {
        self.max_events_per_job = max;
        self
    }

    /// Most jobs handled by one script call (default 1,000).
    #[must_use]
    pub fn with_chunk_size(mut self, n: usize) -> Self {
        self.chunk_size = n;
        self
    }

    /// Most expired records dropped per call that sweeps (default 1,000).
    #[must_use]
    pub fn with_sweep_batch(mut self, n: usize) -> Self {
        self.sweep_batch = n;
        self
    }

    /// Most index entries one `list` call examines (default 5,000; at least a page). A
    /// filtered listing that runs out returns a short page and a cursor to continue.
    #[must_use]
    pub fn with_list_scan_budget(mut self, n: usize) -> Self {
        self.list_scan_budget = n;
        self
    }

    /// How often a waiting [`JobStore::claim_due`](crate::store::JobStore::claim_due) looks
    /// again when nothing woke it (default 500 ms). New and retried jobs wake waiting claims
    /// at once, in this process and in others (through a Redis channel), and a claim knows
    /// when the next delayed job comes due; the poll is the fallback while that channel
    /// reconnects.
    #[must_use]
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every.max(Duration::from_millis(1));
        self
    }

    /// How long finished jobs are kept.
    #[must_use]
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// These settings for a part of a [`RedisBackend`](crate::redis::RedisBackend): its
    /// connection settings and namespace are the backend's.
    pub(in crate::redis) fn for_backend(mut self, link: &LinkConfig, namespace: &str) -> Self {
        self.link = link.clone();
        self.namespace = namespace.to_owned();
        self
    }

    pub(in crate::redis) fn validate(&self) -> Result<()> {
        validate_namespace(&self.namespace)?;
        if self.chunk_size == 0 || self.chunk_size > 5_000 {
            return Err(Error::invalid_input(
                "chunk_size",
                format!("{} is out of range; use 1 to 5,000", self.chunk_size),
            ));
        }
        if self.max_events_per_job < 2 {
            return Err(Error::invalid_input(
                "max_events_per_job",
                "must be at least 2 (creation and one transition)",
            ));
        }
        Ok(())
    }
}
