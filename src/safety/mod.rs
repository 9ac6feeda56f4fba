//! Safety layers: [`Timeout`], [`CircuitBreaker`], [`RateLimit`] and [`Bulkhead`], composable
//! wrappers in the shape of tower's `Layer` around a [`Handler`](crate::Handler) (and, for
//! timeouts and breakers, around a [`QueueManager`](crate::QueueManager) or
//! [`StateManager`](crate::StateManager)).
//!
//! A breaker that is open, a rate limit that is reached or a bulkhead that is full *defers*
//! the job: it goes back to the queue with a delay and its attempt is not spent. See
//! `docs/safety.md` for the state machine and the recommended order of layers.

mod bulkhead;
pub mod circuit_breaker;

mod key;
mod keyed_map;
mod layer;
pub mod rate_limit;
mod timeout;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use bulkhead::{Bulkhead, BulkheadConfig, BulkheadLayer, BulkheadRegistry};
pub use circuit_breaker::{
    BreakerRegistry, BreakerSnapshot, BreakerState, CallNotPermitted, CallOutcome, CircuitBreaker,
    CircuitBreakerConfig, CircuitBreakerLayer, DroppedCall, Permit, SlidingWindow, StateChange,
};
pub use key::KeyBy;
pub use layer::{HandlerExt, Layer};
pub use rate_limit::{RateLimit, RateLimitConfig, RateLimitLayer, RateLimiter};
pub use timeout::{Timeout, TimeoutLayer};
