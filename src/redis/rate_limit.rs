//! A rate limit shared by every worker on every host: GCRA in one Lua script per check, on
//! the Redis server's clock (`TIME`), so worker clocks do not matter. Its keyed API is the
//! in-process `RateLimit`'s.

use std::sync::LazyLock;
use std::time::Duration;

use deadpool_redis::Pool;

use super::client::{Link, LinkConfig, Lua, connection_settings, validate_namespace};
use super::reply::{array, int, unexpected};
use crate::{Error, Result};

static GCRA: LazyLock<Lua> = LazyLock::new(|| Lua::new("gcra", include_str!("lua/gcra.lua")));

/// Settings of a [`RedisRateLimit`]: `rate` per `per`, with bursts of up to `burst`.
///
/// ```
/// use std::time::Duration;
/// use jobforge::redis::RedisRateLimitConfig;
///
/// // 100 per second, bursts of 10.
/// let config = RedisRateLimitConfig::new("redis://127.0.0.1:6379", 100, Duration::from_secs(1))
///     .with_burst(10)
///     .with_namespace("billing");
/// assert_eq!(config.burst(), 10);
/// ```
// `Debug` is derived: the URL sits in `LinkConfig`, whose `Debug` hides the password.
#[derive(Clone, Debug)]
pub struct RedisRateLimitConfig {
    link: LinkConfig,
    namespace: String,
    rate: u32,
    per: Duration,
    burst: u32,
}

connection_settings!(RedisRateLimitConfig);

impl RedisRateLimitConfig {
    /// `rate` checks allowed per `per`, per key, on the server at `url`; bursts of 1 (set
    /// with [`with_burst`](Self::with_burst)); namespace `jobforge`.
    pub fn new(url: impl Into<String>, rate: u32, per: Duration) -> Self {
        Self {
            link: LinkConfig::new(url.into(), 4, Duration::from_secs(5)),
            namespace: "jobforge".to_owned(),
            rate,
            per,
            burst: 1,
        }
    }

    /// How many checks may pass at once after a quiet spell (default 1).
    #[must_use]
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// The burst.
    #[must_use]
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// These settings for a part of a [`RedisBackend`](crate::redis::RedisBackend): its
    /// connection settings and namespace are the backend's.
    pub(in crate::redis) fn for_backend(mut self, link: &LinkConfig, namespace: &str) -> Self {
        self.link = link.clone();
        self.namespace = namespace.to_owned();
        self
    }

    fn interval_us(&self) -> u64 {
        u64::try_from(self.per.as_micros() / u128::from(self.rate.max(1))).unwrap_or(u64::MAX)
    }

    pub(in crate::redis) fn validate(&self) -> Result<()> {
        if self.rate == 0 {
            return Err(Error::invalid_input("rate", "must be at least 1"));
        }
        if self.burst == 0 {
            return Err(Error::invalid_input("burst", "must be at least 1"));
        }
        if self.interval_us() == 0 {
            return Err(Error::invalid_input(
                "rate",
                format!(
                    "{} per {:?} is finer than a microsecond apart; use a longer period",
                    self.rate, self.per
                ),
            ));
        }
        validate_namespace(&self.namespace)?;
        Ok(())
    }
}

/// The answer to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the check passed (and was counted).
    pub allowed: bool,
    /// How many more would pass right now.
    pub remaining: u32,
    /// When refused, how long until one would pass (zero when allowed).
    pub retry_after: Duration,
}

/// A GCRA rate limit shared by all workers through Redis, keyed (per kind, per tenant, ...).
///
/// A job that is refused should be *deferred*, not failed: return
/// [`JobError::defer`](crate::JobError::defer) with the decision's `retry_after`.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use jobforge::prelude::*;
/// use jobforge::redis::{RedisRateLimit, RedisRateLimitConfig};
///
/// # async fn run() -> jobforge::Result<()> {
/// let limit = Arc::new(
///     RedisRateLimit::connect(RedisRateLimitConfig::new("redis://127.0.0.1:6379", 50, Duration::from_secs(1)))
///         .await?,
/// );
/// let orchestrator = Orchestrator::builder()
///     .handler("call.partner", move |ctx: JobContext| {
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
/// # drop(orchestrator);
/// # Ok(())
/// # }
/// ```
pub struct RedisRateLimit {
    link: Link,
    config: RedisRateLimitConfig,
}

impl std::fmt::Debug for RedisRateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimit")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimit {
    /// Connect with a pool of its own; fails at once when the URL is malformed or the server
    /// does not answer.
    pub async fn connect(config: RedisRateLimitConfig) -> Result<Self> {
        config.validate()?;
        let link = Link::connect(&config.link, "rate limit").await?;
        Ok(Self { link, config })
    }

    /// Use a pool the host built.
    pub fn with_pool(pool: Pool, config: RedisRateLimitConfig) -> Result<Self> {
        config.validate()?;
        let link = Link::with_pool(pool, &config.link.url, "rate limit")?;
        Ok(Self { link, config })
    }

    /// On `link` (shared with the other parts of a [`RedisBackend`](super::RedisBackend), say);
    /// `config` is already validated.
    pub(in crate::redis) fn from_link(link: Link, config: RedisRateLimitConfig) -> Self {
        Self { link, config }
    }

    #[cfg(test)]
    pub(in crate::redis) fn link(&self) -> &Link {
        &self.link
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &RedisRateLimitConfig {
        &self.config
    }

    /// Take one from `key`'s allowance.
    pub async fn check(&self, key: &str) -> Result<Decision> {
        self.check_n(key, 1).await
    }

    /// Take `n` at once (all or none). `n` over the burst can never pass and is an
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error.
    pub async fn check_n(&self, key: &str, n: u32) -> Result<Decision> {
        if n == 0 || n > self.config.burst {
            return Err(Error::invalid_input(
                "n",
                format!(
                    "{n} is out of range; use 1 to the burst ({})",
                    self.config.burst
                ),
            ));
        }
        let redis_key = format!("{{{}:rl:{key}}}", self.config.namespace);
        let args = [
            self.config.interval_us().to_string().into_bytes(),
            self.config.burst.to_string().into_bytes(),
            n.to_string().into_bytes(),
        ];
        let reply = self.link.eval(&GCRA, &[&redis_key], &args).await?;
        let parts = array("rate limit", reply)?;
        let [allowed, remaining, retry] = parts.as_slice() else {
            return Err(unexpected("rate limit", &::redis::Value::Array(parts)));
        };
        Ok(Decision {
            allowed: int(allowed) == Some(1),
            remaining: u32::try_from(int(remaining).unwrap_or(0).max(0)).unwrap_or(u32::MAX),
            retry_after: Duration::from_micros(u64::try_from(int(retry).unwrap_or(0)).unwrap_or(0)),
        })
    }
}
