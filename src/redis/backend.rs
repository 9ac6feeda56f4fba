use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::Pool;

use super::client::{Link, LinkConfig, connection_settings, validate_namespace};
use super::{
    RedisQueueConfig, RedisRateLimit, RedisRateLimitConfig, RedisState, RedisStateConfig,
    RedisStreamsQueue,
};
use crate::Result;

/// Settings of a [`RedisBackend`]: the namespace and connection settings that its store, its
/// queue and its rate limits share, and the settings of the store and the queue.
///
/// ```
/// use std::time::Duration;
/// use jobforge::redis::{RedisConfig, RedisStateConfig};
///
/// let config = RedisConfig::default()
///     .with_namespace("billing")
///     .with_pool_size(16)
///     .with_state(RedisStateConfig::default().with_retention(Duration::from_secs(3600)));
/// assert_eq!(config.namespace(), "billing");
/// assert_eq!(config.state().retention(), Duration::from_secs(3600));
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    /// Its URL is the one given to `connect_with` (empty until then).
    link: LinkConfig,
    namespace: String,
    state: RedisStateConfig,
    queue: RedisQueueConfig,
}

impl Default for RedisConfig {
    /// As [`new`](Self::new).
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("link", &self.link)
            .field("namespace", &self.namespace)
            .field("state", &self.state())
            .field("queue", &self.queue())
            .finish()
    }
}

connection_settings!(RedisConfig);

impl RedisConfig {
    /// Namespace `jobforge`, a pool of 8 connections, 5 s connect and 10 s response
    /// timeouts, and the defaults of [`RedisStateConfig`] and [`RedisQueueConfig`]. The URL
    /// is given at connect.
    #[must_use]
    pub fn new() -> Self {
        Self {
            link: LinkConfig::new(String::new(), 8, Duration::from_secs(10)),
            namespace: "jobforge".to_owned(),
            state: RedisStateConfig::default(),
            queue: RedisQueueConfig::default(),
        }
    }

    /// The store's settings: retention, events kept per job, batch sizes, poll interval.
    /// Their URL, namespace and connection settings are ignored: the backend's apply.
    #[must_use]
    pub fn with_state(mut self, state: RedisStateConfig) -> Self {
        self.state = state;
        self
    }

    /// The Streams queue's settings: dead letters kept, lane waits, batch sizes. Their URL,
    /// namespace and connection settings are ignored: the backend's apply.
    #[must_use]
    pub fn with_queue(mut self, queue: RedisQueueConfig) -> Self {
        self.queue = queue;
        self
    }

    /// The store's settings, with the backend's namespace and connection settings.
    #[must_use]
    pub fn state(&self) -> RedisStateConfig {
        self.state.clone().for_backend(&self.link, &self.namespace)
    }

    /// The Streams queue's settings, with the backend's namespace and connection settings.
    #[must_use]
    pub fn queue(&self) -> RedisQueueConfig {
        self.queue.clone().for_backend(&self.link, &self.namespace)
    }

    /// These settings for the server at `url`, checked.
    fn at(mut self, url: &str) -> Result<Self> {
        self.link.url = url.to_owned();
        validate_namespace(&self.namespace)?;
        self.state().validate()?;
        self.queue().validate()?;
        Ok(self)
    }
}

/// One Redis server as jobforge's store, Streams queue and shared rate limits, on one
/// connection. Cheap to clone; clones share everything.
///
/// Connecting opens one connection pool and checks it with a `PING`, so a malformed URL or
/// an unreachable server is a clear error here rather than a failure later. The store, the
/// queue and every rate limit handed out then send their requests over the same multiplexed
/// connection from that pool, and all keep their keys under the one namespace (default
/// `jobforge`): deployments sharing a server use different ones. Only what must wait on the
/// server (the queue's blocking reads, the store's wake-up subscription) opens connections of
/// its own.
///
/// What it hands out:
///
/// - [`store`](Self::store): the [`RedisState`], job records and their queue in one, for
///   [`OrchestratorBuilder::store`](crate::OrchestratorBuilder::store): the Redis-only
///   deployment.
/// - [`queue`](Self::queue): the [`RedisStreamsQueue`], for a deployment whose state lives
///   elsewhere (`.queue(redis.queue()).state(pg.store())`, with the reconciler).
/// - [`rate_limit`](Self::rate_limit): a [`RedisRateLimit`] shared by every worker on every
///   host.
///
/// The existing constructors of each ([`RedisState::connect`], ...) still work, each with
/// a pool of its own.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use jobforge::prelude::*;
/// use jobforge::redis::{RedisBackend, RedisConfig, RedisStateConfig};
///
/// # async fn run() -> jobforge::Result<()> {
/// let redis = RedisBackend::connect_with(
///     "redis://127.0.0.1:6379",
///     RedisConfig::default()
///         .with_namespace("billing")
///         .with_state(RedisStateConfig::default().with_retention(Duration::from_secs(3600))),
/// )
/// .await?;
/// // 50 calls a second to the partner, in bursts of up to 10, across every worker.
/// let limit = redis.rate_limit(50, Duration::from_secs(1), 10)?;
/// let orchestrator = Orchestrator::builder()
///     .store(redis.store())
///     .handler("call.partner", move |_ctx: JobContext| {
///         let limit = Arc::clone(&limit);
///         async move {
///             let decision = limit.check("partner-api").await.map_err(JobError::retryable)?;
///             if !decision.allowed {
///                 return Err(JobError::defer(decision.retry_after, "partner API rate limit"));
///             }
///             // ... call the partner ...
///             Ok(serde_json::Value::Null)
///         }
///     })
///     .build()?;
/// let workers = orchestrator.start_workers(WorkerConfig::default())?;
/// orchestrator.submit(NewJob::new("call.partner")).await?;
/// # workers.shutdown(Duration::from_secs(5)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    shared: Arc<Shared>,
    store: Arc<RedisState>,
    queue: Arc<RedisStreamsQueue>,
}

/// The link the parts share and the settings.
struct Shared {
    link: Link,
    config: RedisConfig,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("link", &self.shared.config.link)
            .field("namespace", &self.shared.config.namespace)
            .field("round_trips", &self.round_trips())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connect to `url` (`redis://[user:password@]host[:port][/db]`) with the default
    /// [`RedisConfig`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, RedisConfig::default()).await
    }

    /// Connect to `url` with `config`. Fails at once, saying what to check, when the settings
    /// are invalid, the URL is malformed or the server does not answer.
    pub async fn connect_with(url: &str, config: RedisConfig) -> Result<Self> {
        let config = config.at(url)?;
        let link = Link::connect(&config.link, "backend").await?;
        Ok(Self::from_link(link, config))
    }

    /// Use a pool the host built. `url` is still needed: the queue's blocking reads and the
    /// store's wake-up subscription open connections of their own. Nothing is sent yet.
    pub fn from_pool(pool: Pool, url: &str, config: RedisConfig) -> Result<Self> {
        let config = config.at(url)?;
        let link = Link::with_pool(pool, url, "backend")?;
        Ok(Self::from_link(link, config))
    }

    fn from_link(link: Link, config: RedisConfig) -> Self {
        let store = RedisState::from_link(link.share("state"), config.state());
        let queue = RedisStreamsQueue::from_link(link.share("queue"), config.queue());
        Self {
            shared: Arc::new(Shared { link, config }),
            store: Arc::new(store),
            queue: Arc::new(queue),
        }
    }

    /// The store: job records, history, counts, and their queue, for
    /// [`OrchestratorBuilder::store`](crate::OrchestratorBuilder::store).
    #[must_use]
    pub fn store(&self) -> Arc<RedisState> {
        Arc::clone(&self.store)
    }

    /// The Streams queue, for deployments whose state lives elsewhere. With Redis as state
    /// too, prefer [`store`](Self::store), which is its own queue.
    #[must_use]
    pub fn queue(&self) -> Arc<RedisStreamsQueue> {
        Arc::clone(&self.queue)
    }

    /// A rate limit of `rate` checks per `per` and key, in bursts of up to `burst`, shared by
    /// every worker on every host through this server (see [`RedisRateLimit`]). Limits of one
    /// namespace that check the same key share its allowance: give limits with different
    /// settings keys of their own. An invalid setting (a zero `rate` or `burst`, checks less
    /// than a microsecond apart) is an
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error.
    pub fn rate_limit(&self, rate: u32, per: Duration, burst: u32) -> Result<Arc<RedisRateLimit>> {
        let config = &self.shared.config;
        let limit = RedisRateLimitConfig::new(config.link.url.clone(), rate, per)
            .with_burst(burst)
            .for_backend(&config.link, &config.namespace);
        limit.validate()?;
        Ok(Arc::new(RedisRateLimit::from_link(
            self.shared.link.share("rate limit"),
            limit,
        )))
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &Pool {
        self.shared.link.pool()
    }

    /// The settings in use.
    #[must_use]
    pub fn config(&self) -> &RedisConfig {
        &self.shared.config
    }

    /// Requests sent to Redis so far by everything this backend handed out (a script call
    /// counts once): its store, its queue and its rate limits.
    #[must_use]
    pub fn round_trips(&self) -> u64 {
        self.shared.link.shared_round_trips()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store, the queue and every rate limit share the backend's one pool and cached
    /// connection, and take its namespace and connection settings (no server needed: nothing
    /// is sent).
    #[test]
    fn every_part_shares_the_one_connection_and_the_namespace() {
        let url = "redis://:secret@127.0.0.1:6379";
        let pool = deadpool_redis::Config::from_url(url)
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .expect("pool");
        let backend = RedisBackend::from_pool(
            pool,
            url,
            RedisConfig::new()
                .with_namespace("billing")
                .with_response_timeout(Duration::from_secs(3))
                .with_state(RedisStateConfig::new("redis://elsewhere").with_namespace("x"))
                .with_queue(RedisQueueConfig::new("redis://elsewhere").with_chunk_size(7)),
        )
        .expect("backend");
        let limit = backend
            .rate_limit(10, Duration::from_secs(1), 2)
            .expect("limit");
        let link = &backend.shared.link;
        assert!(link.shares_with(backend.store().link()));
        assert!(link.shares_with(backend.queue().link()));
        assert!(link.shares_with(limit.link()));
        assert!(Arc::ptr_eq(&backend.store(), &backend.clone().store()));
        assert_eq!(backend.store().config().namespace(), "billing");
        assert_eq!(backend.queue().config().namespace(), "billing");
        assert_eq!(limit.config().namespace(), "billing");
        // Their URL and connection settings are the backend's (and the password stays hidden).
        for shown in [
            format!("{:?}", backend.store().config()),
            format!("{:?}", backend.queue().config()),
            format!("{:?}", limit.config()),
        ] {
            assert!(shown.contains("redis://:***@127.0.0.1:6379"), "{shown}");
            assert!(shown.contains("response_timeout: 3s"), "{shown}");
            assert!(!shown.contains("elsewhere"), "{shown}");
        }
        assert!(format!("{:?}", backend.queue().config()).contains("chunk_size: 7"));
        assert!(!format!("{backend:?}").contains("secret"), "{backend:?}");
        assert!(!format!("{:?}", backend.config()).contains("secret"));
    }

    #[test]
    fn invalid_settings_fail_before_connecting() {
        let pool = || {
            deadpool_redis::Config::from_url("redis://127.0.0.1:6379")
                .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                .expect("pool")
        };
        let url = "redis://127.0.0.1:6379";
        for (config, field) in [
            (RedisConfig::new().with_namespace(""), "namespace"),
            (
                RedisConfig::new().with_state(RedisStateConfig::default().with_chunk_size(0)),
                "chunk_size",
            ),
            (
                RedisConfig::new().with_queue(RedisQueueConfig::default().with_chunk_size(9_999)),
                "chunk_size",
            ),
        ] {
            let err = RedisBackend::from_pool(pool(), url, config).expect_err(field);
            assert_eq!(err.field(), Some(field), "{err}");
        }
        let err = RedisBackend::from_pool(pool(), "http://nope", RedisConfig::new())
            .expect_err("bad url");
        assert_eq!(err.field(), Some("url"), "{err}");
    }
}
