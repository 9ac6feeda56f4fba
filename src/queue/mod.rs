//! Delivery with leases: the [`QueueManager`] trait, its types and the in-memory queue
//! (the Redis Streams and PostgreSQL queues are in [`redis`](crate::redis) and
//! [`postgres`](crate::postgres)).

mod in_memory;
mod inspect;
mod types;

pub use in_memory::{InMemoryQueue, InMemoryQueueConfig};
pub use inspect::QueueInspect;
pub use types::{
    DeadLetter, Envelope, KindQueueStats, Lease, PriorityDepth, QueueDepth, QueueManager,
    QueueStats, Requeue, Reserve,
};
