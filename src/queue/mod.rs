//! Delivery with leases: the [`QueueManager`] trait and its backends.

mod in_memory;
mod inspect;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
mod postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
mod redis;
mod types;

pub use in_memory::{InMemoryQueue, InMemoryQueueConfig};
pub use inspect::QueueInspect;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresQueue;
#[cfg(feature = "redis")]
pub use redis::{RedisQueueConfig, RedisStreamsQueue};
#[cfg(feature = "redis")]
pub(crate) use redis::{client, reply};
pub use types::{
    DeadLetter, Envelope, KindQueueStats, Lease, QueueManager, QueueStats, Release, Reserve,
};
