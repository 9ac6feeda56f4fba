//! A thin HTTP API over any [`JobOrchestrator`] (feature `http`, on axum).
//!
//! [`router`] answers an [`axum::Router`] a host mounts in its own server, or serves as it is
//! (the `jobforge-server` binary does). Routes are versioned under `/v1`; operations routes
//! (`/health`, `/ready`, `/metrics`, `/openapi.json`, `/docs`) sit beside them. Every error is
//! an RFC 9457 [`Problem`] (`application/problem+json`) with a stable `type`.
//!
//! ```
//! use std::sync::Arc;
//! use jobforge::http::{router, HttpConfig};
//! use jobforge::prelude::*;
//!
//! # fn main() -> jobforge::Result<()> {
//! let orchestrator = Orchestrator::builder()
//!     .handler("greet", |_ctx: JobContext| async { Ok(serde_json::json!("hi")) })
//!     .build()?;
//! let config = HttpConfig::default()
//!     .with_memory(Arc::clone(orchestrator.memory()))
//!     .with_known_kinds(orchestrator.kinds());
//! let app: axum::Router = router(Arc::new(orchestrator), config);
//! // axum::serve(listener, app).await
//! # drop(app);
//! # Ok(())
//! # }
//! ```
//!
//! ## Security
//!
//! [`HttpConfig::with_security`] puts the [`security`] layers around every route:
//! authentication (API keys, JWT), a scope per route, per-address and per-credential rate
//! limits, CORS, and the security headers (sent on every response even without it). Public
//! paths (`/health` by default) skip the credential check. A caller bound to a tenant gets a
//! [`Tenant`] in its request extensions: submissions are stamped with it, every read and
//! cancel only sees that tenant's jobs, and its memory namespaces are its own. A host with
//! authentication of its own can insert [`Tenant`] itself instead.

// Handlers answer `Result<_, Problem>`: the problem is the response body, built on the rare
// error path only, so moving its 152 bytes costs nothing that boxing would save.
#![allow(clippy::result_large_err)]

mod extract;
mod jobs;
mod memory;
mod metrics;
mod openapi;
mod ops;
mod problem;
mod schedules;
pub mod security;
pub mod server;
pub(crate) mod ui;
mod workflows;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::memory::{Memory, Window};
use crate::orchestrator::Schedules;
use crate::safety::BreakerRegistry;
use crate::{JobOrchestrator, Result};

pub use extract::ApiJson;
pub use openapi::{ApiDoc, openapi};
pub use problem::{ApiResult, PROBLEM_BASE, PROBLEM_JSON, Problem, ProblemType};
pub use schedules::{ScheduleBody, parse_schedules};

/// A readiness check: resolves to `Ok(())` when the backends answer.
pub type ReadinessCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync>;

/// The tenant of the caller, put into the request extensions by an upstream middleware
/// (authentication). When present, submitted jobs belong to it and reads, lists and cancels
/// see only its jobs (others answer 404). Absent, the API is single-tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant(pub String);

/// How the HTTP API behaves. `Default` gives a 1 MiB body limit, a 30 s request timeout, batches
/// of up to 1,000 jobs, no memory routes and any kind accepted.
///
/// ```
/// use std::time::Duration;
/// use jobforge::http::HttpConfig;
///
/// let config = HttpConfig::default()
///     .with_body_limit(256 * 1024)
///     .with_request_timeout(Duration::from_secs(5))
///     .with_known_kinds(["email.send", "report.render"]);
/// assert_eq!(config.body_limit(), 256 * 1024);
/// ```
#[derive(Clone)]
pub struct HttpConfig {
    body_limit: usize,
    request_timeout: Duration,
    max_batch: usize,
    memory: Option<Arc<dyn Memory>>,
    schedules: Option<Schedules>,
    known_kinds: Option<BTreeSet<String>>,
    breakers: Vec<Arc<BreakerRegistry>>,
    readiness: Option<ReadinessCheck>,
    reflection_window: Window,
    docs: bool,
    security: Option<security::Security>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_batch: 1_000,
            memory: None,
            schedules: None,
            known_kinds: None,
            breakers: Vec::new(),
            readiness: None,
            reflection_window: Window::Last(1_000),
            docs: true,
            security: None,
        }
    }
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("body_limit", &self.body_limit)
            .field("request_timeout", &self.request_timeout)
            .field("max_batch", &self.max_batch)
            .field("memory", &self.memory.is_some())
            .field("schedules", &self.schedules.is_some())
            .field("known_kinds", &self.known_kinds)
            .field("breakers", &self.breakers.len())
            .field("readiness", &self.readiness.is_some())
            .field("reflection_window", &self.reflection_window)
            .field("docs", &self.docs)
            .field("security", &self.security)
            .finish()
    }
}

impl HttpConfig {
    /// Largest accepted request body in bytes (default 1 MiB); larger bodies answer 413.
    #[must_use]
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Longest a request may take (default 30 s); slower ones answer 503 `timeout`.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Most jobs in one `POST /v1/jobs/batch` (default 1,000).
    #[must_use]
    pub fn with_max_batch(mut self, jobs: usize) -> Self {
        self.max_batch = jobs;
        self
    }

    /// The memory behind `/v1/memory` and `/v1/kinds/{kind}/reflection` (usually the
    /// orchestrator's own, [`Orchestrator::memory`](crate::Orchestrator::memory)). Without
    /// one those routes answer 501 `memory-not-configured`.
    #[must_use]
    pub fn with_memory(mut self, memory: Arc<dyn Memory>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// Serve `/v1/schedules` over these schedules (usually
    /// [`Orchestrator::schedules`](crate::Orchestrator::schedules)), and show the scheduler's
    /// counts in `/metrics`. Without them those routes answer 501 `schedules-not-configured`.
    ///
    /// ```
    /// # fn main() -> jobforge::Result<()> {
    /// use jobforge::http::HttpConfig;
    /// use jobforge::prelude::*;
    ///
    /// let orchestrator = Orchestrator::builder().build()?;
    /// let config = HttpConfig::default().with_schedules(orchestrator.schedules()?);
    /// # drop(config);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_schedules(mut self, schedules: Schedules) -> Self {
        self.schedules = Some(schedules);
        self
    }

    /// Accept submissions of these kinds only; others answer 422 `unknown-kind` (default: any
    /// kind is accepted, as the library does, since a worker elsewhere may have its handler).
    #[must_use]
    pub fn with_known_kinds<I, S>(mut self, kinds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.known_kinds = Some(kinds.into_iter().map(Into::into).collect());
        self
    }

    /// Report the breakers of this registry in `/metrics` (state per key).
    #[must_use]
    pub fn with_breakers(mut self, registry: Arc<BreakerRegistry>) -> Self {
        self.breakers.push(registry);
        self
    }

    /// How `/ready` checks the backends (default: the orchestrator's `stats`, and a search
    /// of the memory when one is configured).
    #[must_use]
    pub fn with_readiness_check<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.readiness = Some(Arc::new(move || Box::pin(check())));
        self
    }

    /// The executions `/v1/kinds/{kind}/reflection` looks at when the request names no
    /// window (default the latest 1,000).
    #[must_use]
    pub fn with_reflection_window(mut self, window: Window) -> Self {
        self.reflection_window = window;
        self
    }

    /// Serve `/openapi.json` and the Swagger UI at `/docs` (default on).
    #[must_use]
    pub fn with_docs(mut self, docs: bool) -> Self {
        self.docs = docs;
        self
    }

    /// Authentication, scopes, per-client rate limits, CORS and the security headers (see
    /// [`security`]). Without it the router authenticates nobody (the host's own middleware
    /// may) but still sends the security headers on every response. A caller bound to a tenant
    /// sees only its tenant's jobs and memory.
    #[must_use]
    pub fn with_security(mut self, security: security::Security) -> Self {
        self.security = Some(security);
        self
    }

    /// The body limit in bytes.
    #[must_use]
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// The request timeout.
    #[must_use]
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
}

/// What every handler shares.
pub(crate) struct Shared {
    pub(crate) orchestrator: Arc<dyn JobOrchestrator>,
    pub(crate) memory: Option<Arc<dyn Memory>>,
    pub(crate) schedules: Option<Schedules>,
    pub(crate) known_kinds: Option<BTreeSet<String>>,
    pub(crate) breakers: Vec<Arc<BreakerRegistry>>,
    pub(crate) readiness: Option<ReadinessCheck>,
    pub(crate) reflection_window: Window,
    pub(crate) body_limit: usize,
    pub(crate) max_batch: usize,
    pub(crate) metrics: metrics::HttpMetrics,
}

/// The router's state: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The HTTP API over `orchestrator`: the `/v1` routes, the operations routes, and the common
/// middleware (request ids in `x-request-id`, a `tracing` span per request, body limit,
/// request timeout, problem+json for every error, metrics).
pub fn router(orchestrator: Arc<dyn JobOrchestrator>, config: HttpConfig) -> Router {
    let docs = config.docs;
    let request_timeout = config.request_timeout;
    let body_limit = config.body_limit;
    let state = AppState {
        shared: Arc::new(Shared {
            orchestrator,
            memory: config.memory,
            schedules: config.schedules,
            known_kinds: config.known_kinds,
            breakers: config.breakers,
            readiness: config.readiness,
            reflection_window: config.reflection_window,
            body_limit,
            max_batch: config.max_batch.max(1),
            metrics: metrics::HttpMetrics::default(),
        }),
    };
    // The seam for authentication: a layer added to `api` alone guards every `/v1` route and
    // leaves the operations routes open to probes and scrapers.
    let api = api_routes(state.clone());
    let ops = ops_routes(state.clone(), docs);
    let app = api.merge(ops).fallback(ops::unknown_route);
    // Authentication wraps the routes and their fallback (unknown paths are refused like
    // known ones), inside the request id, tracing, problem and metrics layers so refusals get
    // them too; public paths (`/health` by default) pass.
    let app = match &config.security {
        Some(security) => security.protect(app),
        None => app,
    };
    let app = app.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(TraceLayer::new_for_http().make_span_with(ops::request_span))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(axum::middleware::from_fn(ops::problem_details))
            .layer(CatchPanicLayer::custom(ops::panic_response))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                metrics::track,
            ))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                request_timeout,
            ))
            .layer(DefaultBodyLimit::max(body_limit)),
    );
    // CORS and the security headers outermost, so every answer carries them.
    match &config.security {
        Some(security) => security.harden(app),
        None => security::with_security_headers(app, false),
    }
}

/// The versioned API: jobs, queues, kinds, memory, schedules.
fn api_routes(state: AppState) -> Router {
    Router::new()
        .merge(jobs::routes())
        .merge(memory::routes())
        .merge(schedules::routes())
        .merge(workflows::routes())
        .merge(ui::routes())
        .with_state(state)
}

/// Probes, metrics and the API's documentation.
fn ops_routes(state: AppState, docs: bool) -> Router {
    let ops = ops::routes().with_state(state);
    if docs {
        ops.merge(openapi::docs_routes())
    } else {
        ops
    }
}
