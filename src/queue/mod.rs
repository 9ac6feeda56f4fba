//! Delivery with leases: the [`QueueManager`] trait and its backends.

mod in_memory;
mod types;

pub use in_memory::{InMemoryQueue, InMemoryQueueConfig};
pub use types::{
    DeadLetter, Envelope, KindQueueStats, Lease, QueueManager, QueueStats, Release, Reserve,
};
