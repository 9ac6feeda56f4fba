//! Redis: the state store that is its own queue (the Redis-only deployment), a queue on Redis
//! Streams for delivery beside a state kept elsewhere, and a rate limit shared by every
//! worker; many worker processes on many hosts share one Redis (7.0 or later, with
//! `maxmemory-policy noeviction`). The scripts are under `src/redis/lua/`; the data layout
//! and guarantees are in `docs/backends.md`.
//!
//! [`RedisBackend::connect`] opens one connection pool, checked with a `PING`; from it come
//! the store ([`RedisState`]), the Streams queue ([`RedisStreamsQueue`]) and rate limits
//! ([`RedisRateLimit`]), all on that pool's connection and under one namespace. Each can
//! also be connected on its own ([`RedisState::connect`], ...).
//!
//! ```no_run
//! use jobforge::prelude::*;
//! use jobforge::redis::RedisBackend;
//!
//! # async fn run() -> jobforge::Result<()> {
//! let redis = RedisBackend::connect("redis://127.0.0.1:6379").await?;
//! let orchestrator = Orchestrator::builder()
//!     .store(redis.store())
//!     .handler("noop", |_ctx: JobContext| async { Ok(serde_json::Value::Null) })
//!     .build()?;
//! let workers = orchestrator.start_workers(WorkerConfig::default())?;
//! orchestrator.submit(NewJob::new("noop")).await?;
//! # workers.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```

mod backend;
pub(crate) mod client;
mod queue;
mod rate_limit;
pub(crate) mod reply;
mod schedules;
mod state;

pub use backend::{RedisBackend, RedisConfig};
pub use queue::{RedisQueueConfig, RedisStreamsQueue};
pub use rate_limit::{Decision, RedisRateLimit, RedisRateLimitConfig};
pub use schedules::RedisSchedules;
pub use state::{RedisState, RedisStateConfig};
