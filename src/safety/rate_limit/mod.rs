//! Rate limits with GCRA: [`RateLimitLayer`] builds [`RateLimit`] wrappers over a shared,
//! keyed, in-process [`RateLimiter`] (`governor`). A job over its limit is deferred for the
//! time the limiter says (class `rate_limited`); its attempt is not spent.

mod local;

pub use local::{RateLimit, RateLimitConfig, RateLimitLayer, RateLimiter};
