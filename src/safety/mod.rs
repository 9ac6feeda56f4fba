//! Safety layers: composable wrappers in the shape of tower's `Layer` around a
//! [`Handler`](crate::Handler) (and, for timeouts and breakers, around a
//! [`QueueManager`](crate::QueueManager) or [`StateManager`](crate::StateManager)).
//!
//! A breaker that is open *defers* the job: it goes back to the queue with a delay and its
//! attempt is not spent.

pub mod circuit_breaker;
mod clock;
mod key;
mod keyed_map;
mod layer;
mod timeout;

pub use circuit_breaker::{
    BreakerRegistry, BreakerSnapshot, BreakerState, CallNotPermitted, CallOutcome, CircuitBreaker,
    CircuitBreakerConfig, CircuitBreakerLayer, DroppedCall, Permit, SlidingWindow, StateChange,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use key::KeyBy;
pub use layer::{HandlerExt, Layer};
pub use timeout::{Timeout, TimeoutLayer};
