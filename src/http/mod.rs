//! The HTTP face of jobforge (feature `http`).
//!
//! [`security`] holds the pieces that make it safe to expose: authentication, per-client rate
//! limits, security headers, CORS and TLS.

pub mod security;
