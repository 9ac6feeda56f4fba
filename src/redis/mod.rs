//! Redis: the state store that is its own queue (the Redis-only deployment), a queue on Redis
//! Streams for delivery beside a state kept elsewhere, and a rate limit shared by every
//! worker; many worker processes on many hosts share one Redis (7.0 or later, with
//! `maxmemory-policy noeviction`). The scripts are under `src/redis/lua/`; the data layout
//! and guarantees are in `docs/backends.md`.

pub(crate) mod client;
mod queue;
mod rate_limit;
pub(crate) mod reply;
mod state;

pub use queue::{RedisQueueConfig, RedisStreamsQueue};
pub use rate_limit::{Decision, RedisRateLimit, RedisRateLimitConfig};
pub use state::{RedisState, RedisStateConfig};
