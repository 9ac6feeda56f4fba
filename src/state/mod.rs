//! Durable job records, the state machine and history: the [`StateManager`] trait and its
//! backends.

mod in_memory;
mod types;

pub use in_memory::{InMemoryState, InMemoryStateConfig};
pub use types::{
    CancelOutcome, Claim, Created, Finish, Heartbeat, JobFilter, Order, Page, Paged, StateCounts,
    StateManager, StateTally, Transition, TransitionResult,
};
