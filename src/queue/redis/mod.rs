//! The Redis backend of the queue (Redis Streams with a consumer group), and the connection
//! plumbing it shares with the Redis state store and the distributed rate limit.

pub(crate) mod client;
mod queue;
pub(crate) mod reply;

pub use queue::{RedisQueueConfig, RedisStreamsQueue};
