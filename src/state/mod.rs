//! Durable job records, the state machine and history: the [`StateManager`] trait, its types
//! and the in-memory store (the PostgreSQL and Redis stores are in
//! [`postgres`](crate::postgres) and [`redis`](crate::redis)).

mod in_memory;
mod types;

pub use in_memory::{InMemoryState, InMemoryStateConfig};
pub use types::{
    CancelOutcome, Claim, Created, Finish, Heartbeat, Held, JobFilter, Order, Page, Paged,
    StateCounts, StateManager, StateTally, Transition, TransitionResult,
};
