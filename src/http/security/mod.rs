//! Security for the HTTP API: authentication (API keys, JWT), scopes and tenancy, per-client
//! rate limits, security headers, CORS and TLS.
//!
//! The pieces compose around any `axum::Router`:
//!
//! 1. [`SecurityConfig`] holds the settings; the server binary fills it from [`SecurityArgs`]
//!    (flattened into its command line), calls [`SecurityConfig::check_bind`] before binding
//!    (no public address without authentication unless `--insecure-no-auth`), and
//!    [`SecurityConfig::build`]s a [`Security`].
//! 2. [`Security::apply`] wraps the router: per-address rate limit → credentials → route scope
//!    ([`required_scope`]) → per-credential rate limit → the handler, with CORS and the
//!    security headers outermost so every answer, refusals included, carries them.
//! 3. Handlers take `Extension<Principal>` and enforce tenancy as [`Principal`] describes.
//! 4. With TLS configured, [`serve_tls`] serves the router over rustls ([`load_server_config`]).
//!
//! Refusals are RFC 9457 `application/problem+json` with `type`
//! `https://jobforge.dev/problems/<slug>`: `unauthorized` (401, with `WWW-Authenticate:
//! Bearer realm="jobforge"`), `forbidden` (403) and `rate-limited` (429, with `Retry-After`
//! and the `RateLimit-*` fields). No answer echoes a credential or says why a token failed.
//!
//! ```
//! use axum::{Router, routing::get};
//! use jobforge::http::security::{ApiKey, ApiKeyEntry, SecurityConfig};
//!
//! let key = ApiKey::generate()?; // give key.key() to the client, keep only the hash
//! let config = SecurityConfig {
//!     api_keys: vec![ApiKeyEntry::new(key.id(), key.sha256_hex(), "jobs:read".parse()?, None)?],
//!     ..SecurityConfig::default()
//! };
//! config.check_bind("0.0.0.0:8080".parse().unwrap())?;
//! let app: Router = config.build()?.apply(
//!     Router::new()
//!         .route("/health", get(|| async { "ok" }))
//!         .route("/v1/jobs", get(|| async { "[]" })),
//! );
//! # Ok::<(), jobforge::Error>(())
//! ```
//!
//! `docs/AUTHENTICATION.md` walks through keys, JWT, scopes, tenancy and rotation;
//! `SECURITY.md` gives the threat model.

mod api_key;
mod args;
mod auth;
mod client_ip;
mod config;
mod headers;
mod jwt;
mod principal;
mod problem;
mod rate_limit;
mod scope;
mod tls;

pub use api_key::{
    API_KEY_PREFIX, ApiKey, ApiKeyEntry, ApiKeyStore, X_API_KEY, generate_key_command,
    looks_like_api_key, sha256_hex,
};
pub use args::{JwtAlgorithmArg, SecurityArgs};
pub use auth::{AUDIT_TARGET, required_scope};
pub(crate) use auth::{SessionVerifier, console_path};
pub use client_ip::{
    ClientIp, TrustedProxies, X_FORWARDED_FOR, canonical, client_ip, rate_limit_key,
};
pub use config::{Security, SecurityConfig};
pub use headers::{HSTS_VALUE, cors_layer, parse_origin, with_security_headers};
pub use jwt::{JwtConfig, JwtKey, JwtVerifier, MAX_TOKEN_BYTES, MIN_HS256_SECRET_BYTES};
pub use principal::{AuthError, Principal, REALM};
pub use problem::{PROBLEM_BASE, PROBLEM_CONTENT_TYPE};
pub use rate_limit::{
    KeyedLimiter, RATELIMIT_LIMIT, RATELIMIT_POLICY, RATELIMIT_REMAINING, RATELIMIT_RESET,
    RateDecision, RateLimits, RateQuota,
};
pub use scope::{Scope, Scopes, Tier};
pub use tls::{TlsPaths, load_server_config, serve_tls};
