use std::time::Duration;

use crate::redis::client::{LinkConfig, connection_settings, validate_namespace};
use crate::{Error, Result};

/// Settings of a [`RedisStreamsQueue`](super::RedisStreamsQueue).
///
/// ```
/// use std::time::Duration;
/// use jobforge::redis::RedisQueueConfig;
///
/// let config = RedisQueueConfig::new("redis://:secret@127.0.0.1:6379")
///     .with_namespace("billing")
///     .with_pool_size(8)
///     .with_max_lane_wait(Duration::from_secs(30));
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
// `Debug` is derived: the URL sits in `LinkConfig`, whose `Debug` hides the password.
#[derive(Clone, Debug)]
pub struct RedisQueueConfig {
    pub(super) link: LinkConfig,
    pub(super) namespace: String,
    pub(super) dead_letter_capacity: usize,
    pub(super) max_lane_wait: Duration,
    pub(super) promote_batch: usize,
    pub(super) chunk_size: usize,
}

impl Default for RedisQueueConfig {
    /// `redis://127.0.0.1:6379`, namespace `jobforge`.
    fn default() -> Self {
        Self::new("redis://127.0.0.1:6379")
    }
}

connection_settings!(RedisQueueConfig);

impl RedisQueueConfig {
    /// Settings for the server at `url` (`redis://[user:password@]host[:port][/db]`), with
    /// namespace `jobforge`, a pool of 8 connections, 5 s connect and 10 s response
    /// timeouts, 10,000 dead letters kept per queue, lanes served out of priority order once
    /// their oldest job waited 60 s, and 1,000 items per script call.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            link: LinkConfig::new(url.into(), 8, Duration::from_secs(10)),
            namespace: "jobforge".to_owned(),
            dead_letter_capacity: 10_000,
            max_lane_wait: Duration::from_secs(60),
            promote_batch: 1_000,
            chunk_size: 1_000,
        }
    }

    /// Dead letters kept per queue; the oldest are dropped past this (default 10,000).
    #[must_use]
    pub fn with_dead_letter_capacity(mut self, capacity: usize) -> Self {
        self.dead_letter_capacity = capacity;
        self
    }

    /// Anti-starvation: a lower-priority lane whose oldest ready job has waited longer than
    /// this is served (a quarter of a batch) ahead of strict priority. Zero turns it off, for
    /// strict priority always. Default 60 s.
    #[must_use]
    pub fn with_max_lane_wait(mut self, wait: Duration) -> Self {
        self.max_lane_wait = wait;
        self
    }

    /// Most delayed jobs moved to their lane per reserve call (default 1,000; at least the
    /// reserve's batch is always moved).
    #[must_use]
    pub fn with_promote_batch(mut self, n: usize) -> Self {
        self.promote_batch = n;
        self
    }

    /// Most jobs handled by one script call (default 1,000): larger batches are split, so no
    /// call handles an unbounded number of items.
    #[must_use]
    pub fn with_chunk_size(mut self, n: usize) -> Self {
        self.chunk_size = n;
        self
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
        Ok(())
    }
}
