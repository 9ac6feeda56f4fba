//! A keyed circuit breaker with resilience4j's semantics: failure-rate and slow-call-rate
//! thresholds over a count- or time-based sliding window, a minimum number of calls, an open
//! state whose wait may grow on repeated re-opens, and a limited number of half-open probes.
//!
//! ```text
//!            failure rate ≥ threshold or slow-call rate ≥ threshold
//!            (with at least `minimum_calls` in the window)
//!   Closed ───────────────────────────────────────────────────────────► Open
//!     ▲                                                                 │  ▲
//!     │ the permitted probes finish under both thresholds   wait ends   │  │ the probes finish over
//!     │                                                                 ▼  │ a threshold (the wait
//!     └──────────────────────────────────────────────────────────── HalfOpen   grows, if configured)
//! ```
//!
//! [`BreakerRegistry`] holds one breaker per key; [`CircuitBreakerLayer`] wraps a handler or a
//! backend in a [`CircuitBreaker`] that asks the registry for a [`Permit`] before each call.

mod backend;
mod config;
mod core;
mod handler;
mod registry;
mod window;

pub use config::{
    CallOutcome, CircuitBreakerConfig, DroppedCall, SlidingWindow, default_backend_classifier,
    default_error_classifier,
};
pub use core::BreakerState;
pub use handler::{CircuitBreaker, CircuitBreakerLayer};
pub use registry::{BreakerRegistry, BreakerSnapshot, CallNotPermitted, Permit, StateChange};
