//! Durable job records, the state machine and history: the [`StateManager`] trait and its
//! backends.

mod in_memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
mod postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
mod redis;
mod types;

pub use in_memory::{InMemoryState, InMemoryStateConfig};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresState;
#[cfg(feature = "redis")]
pub use redis::{RedisState, RedisStateConfig};
pub use types::{
    CancelOutcome, Claim, Created, Finish, Heartbeat, Held, JobFilter, Order, Page, Paged,
    QueuingState, StateCounts, StateManager, StateTally, Transition, TransitionResult,
};
