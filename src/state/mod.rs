//! Durable job records, the state machine and history: the [`StateManager`] trait and its
//! backends.

mod in_memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
mod redis;
mod types;

pub use in_memory::{InMemoryState, InMemoryStateConfig};
#[cfg(feature = "redis")]
pub use redis::{RedisState, RedisStateConfig};
pub use types::{
    CancelOutcome, Claim, Created, Finish, Heartbeat, JobFilter, Order, Page, Paged, StateCounts,
    StateManager, StateTally, Transition, TransitionResult,
};
