//! Delivery with leases: the [`QueueManager`] trait and its backends.

mod in_memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
mod postgres;
mod types;

pub use in_memory::{InMemoryQueue, InMemoryQueueConfig};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresQueue;
pub use types::{
    DeadLetter, Envelope, KindQueueStats, Lease, QueueManager, QueueStats, Release, Reserve,
};
