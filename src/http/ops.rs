//! `/health`, `/ready`, `/metrics`, the fallback, and the middleware that makes every error
//! answer `application/problem+json`.

use std::any::Any;
use std::fmt::Write as _;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::metrics::escape;
use super::problem::{PROBLEM_JSON, Problem, ProblemType};
use crate::memory::EntryQuery;
use crate::safety::BreakerState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub(crate) struct ProbeStatus {
    /// `ok` (alive) or `ready` (backends reachable).
    status: &'static str,
}

/// Liveness
///
/// Answers `200 {"status":"ok"}` while the process serves HTTP. It checks nothing else: use
/// `/ready` to know whether the backends answer.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    operation_id = "health",
    responses((status = 200, description = "The server is alive.", body = ProbeStatus))
)]
pub(crate) async fn health() -> Json<ProbeStatus> {
    Json(ProbeStatus { status: "ok" })
}

/// Readiness
///
/// Answers `200 {"status":"ready"}` when the queue, the state store and the memory answer;
/// `503` with a `not-ready` problem naming what failed otherwise. Load balancers should send
/// traffic only to ready servers.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    operation_id = "ready",
    responses((status = 200, description = "The backends answer.", body = ProbeStatus,
        example = json!({"status": "ready"})))
)]
pub(crate) async fn ready(State(state): State<AppState>) -> Result<Json<ProbeStatus>, Problem> {
    let shared = &state.shared;
    let result = match &shared.readiness {
        Some(check) => check().await,
        None => match shared.orchestrator.stats().await {
            Ok(_) => match &shared.memory {
                Some(memory) => memory
                    .search(&EntryQuery::namespace("jobforge.ready").limit(1))
                    .await
                    .map(|_| ()),
                None => Ok(()),
            },
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => Ok(Json(ProbeStatus { status: "ready" })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(Problem::new(
                ProblemType::NotReady,
                format!(
                    "a backend did not answer: {}; check that it runs and is reachable",
                    e.message()
                ),
            ))
        }
    }
}

/// Prometheus metrics
///
/// The Prometheus text exposition (version 0.0.4): jobs by state and kind, queue depth by
/// kind, jobs submitted over HTTP (throughput: take its `rate()`), request counts and latency
/// histograms per route, job latency percentiles per kind from the memory, circuit
/// breaker states, and with schedules configured the schedules kept and due and what this
/// process's schedulers fired, caught up and skipped.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses((status = 200, description = "The metrics.", content_type = "text/plain; version=0.0.4",
        body = String,
        example = "# TYPE jobforge_jobs gauge\njobforge_jobs{state=\"queued\"} 3\n"))
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, Problem> {
    let shared = &state.shared;
    let stats = shared.orchestrator.stats().await?;
    let mut out = String::with_capacity(4096);
    out.push_str("# HELP jobforge_jobs Job records by state (finished ones while retained).\n");
    out.push_str("# TYPE jobforge_jobs gauge\n");
    for s in crate::JobState::ALL {
        let _ = writeln!(
            out,
            "jobforge_jobs{{state=\"{}\"}} {}",
            s.as_str(),
            stats.jobs.total.get(s)
        );
    }
    out.push_str("# HELP jobforge_jobs_by_kind Job records by kind and state.\n");
    out.push_str("# TYPE jobforge_jobs_by_kind gauge\n");
    for (kind, tally) in &stats.jobs.per_kind {
        for s in crate::JobState::ALL {
            let _ = writeln!(
                out,
                "jobforge_jobs_by_kind{{kind=\"{}\",state=\"{}\"}} {}",
                escape(kind),
                s.as_str(),
                tally.get(s)
            );
        }
    }
    out.push_str(
        "# HELP jobforge_queue_depth Deliveries by status: ready, delayed, in_flight, dead.\n",
    );
    out.push_str("# TYPE jobforge_queue_depth gauge\n");
    let q = &stats.queue;
    for (status, n) in [
        ("ready", q.ready),
        ("delayed", q.delayed),
        ("in_flight", q.in_flight),
        ("dead", q.dead),
    ] {
        let _ = writeln!(out, "jobforge_queue_depth{{status=\"{status}\"}} {n}");
    }
    out.push_str("# HELP jobforge_queue_depth_by_kind Deliveries by kind and status.\n");
    out.push_str("# TYPE jobforge_queue_depth_by_kind gauge\n");
    for (kind, k) in &q.per_kind {
        for (status, n) in [
            ("ready", k.ready),
            ("delayed", k.delayed),
            ("in_flight", k.in_flight),
            ("dead", k.dead),
        ] {
            let _ = writeln!(
                out,
                "jobforge_queue_depth_by_kind{{kind=\"{}\",status=\"{status}\"}} {n}",
                escape(kind)
            );
        }
    }
    if let Some(memory) = &shared.memory {
        out.push_str("# HELP jobforge_job_latency_seconds Job execution latency percentiles per kind, from the memory's recorded executions (latest 1,000).\n");
        out.push_str("# TYPE jobforge_job_latency_seconds gauge\n");
        // Kinds the state knows, at most 64 (label cardinality stays bounded).
        for kind in stats.jobs.per_kind.keys().take(64) {
            let Ok(r) = memory
                .reflect(kind, crate::memory::Window::Last(1_000))
                .await
            else {
                continue;
            };
            for (quantile, value) in [
                ("0.5", r.p50),
                ("0.9", r.p90),
                ("0.95", r.p95),
                ("0.99", r.p99),
            ] {
                if let Some(v) = value {
                    let _ = writeln!(
                        out,
                        "jobforge_job_latency_seconds{{kind=\"{}\",quantile=\"{quantile}\"}} {}",
                        escape(kind),
                        v.as_secs_f64()
                    );
                }
            }
        }
    }
    out.push_str(
        "# HELP jobforge_breaker_state Circuit breaker state per key: 1 for the state it is in.\n",
    );
    out.push_str("# TYPE jobforge_breaker_state gauge\n");
    for registry in &shared.breakers {
        for snap in registry.snapshot_all() {
            for s in [
                BreakerState::Closed,
                BreakerState::Open,
                BreakerState::HalfOpen,
            ] {
                let _ = writeln!(
                    out,
                    "jobforge_breaker_state{{key=\"{}\",state=\"{}\"}} {}",
                    escape(&snap.key),
                    s.as_str(),
                    u8::from(snap.state == s)
                );
            }
        }
    }
    if let Some(schedules) = &shared.schedules {
        super::schedules::render_metrics(schedules, &mut out).await?;
    }
    shared.metrics.render(&mut out);
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// The fallback: no route here.
pub(crate) async fn unknown_route(req: Request) -> Problem {
    Problem::not_found(format!(
        "no route {} {}; the API is under /v1 (see /docs)",
        req.method(),
        req.uri().path()
    ))
}

/// Middleware: every error response becomes `application/problem+json`, carrying the request
/// path and id. Problems from handlers pass through (with the id added); bare errors from the
/// framework or a middleware (405, timeouts, 413, ...) are turned into problems.
pub(crate) async fn problem_details(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // The console's pages answer errors as HTML pages of their own.
    if response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"))
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let is_problem = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    let mut problem = None;
    if is_problem {
        if let Ok(bytes) = axum::body::to_bytes(body, 256 * 1024).await {
            problem = serde_json::from_slice::<Problem>(&bytes).ok();
        }
    }
    let mut problem = problem.unwrap_or_else(|| bare_problem(status));
    problem.status = status.as_u16();
    problem.instance.get_or_insert(path);
    if problem.request_id.is_none() {
        problem.request_id = request_id;
    }
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    Response::from_parts(parts, Body::from(body))
}

fn bare_problem(status: StatusCode) -> Problem {
    let kind = match status.as_u16() {
        404 => Some(ProblemType::NotFound),
        405 => Some(ProblemType::MethodNotAllowed),
        // The only bare 503 is the request timeout (handlers answer problems).
        408 | 503 | 504 => Some(ProblemType::Timeout),
        413 => Some(ProblemType::PayloadTooLarge),
        415 => Some(ProblemType::UnsupportedMediaType),
        500 => Some(ProblemType::Internal),
        _ => None,
    };
    let reason = status.canonical_reason().unwrap_or("Error");
    match kind {
        Some(ProblemType::MethodNotAllowed) => Problem::new(
            ProblemType::MethodNotAllowed,
            "this route does not take this method; the `allow` header lists those it takes",
        ),
        Some(ProblemType::Timeout) => Problem::new(
            ProblemType::Timeout,
            "the request took longer than the server's request timeout; retry, or ask for less",
        ),
        Some(ProblemType::PayloadTooLarge) => Problem::new(
            ProblemType::PayloadTooLarge,
            "the body is over this server's limit; send less",
        ),
        Some(kind) => Problem::new(kind, reason),
        // RFC 9457: a status with nothing more to say is `about:blank`, titled by its reason.
        None => Problem {
            r#type: "about:blank".to_owned(),
            title: reason.to_owned(),
            status: status.as_u16(),
            detail: reason.to_owned(),
            field: None,
            instance: None,
            request_id: None,
        },
    }
}

/// A handler panicked: answer 500 (the worker threads live on).
pub(crate) fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %what, "request handler panicked");
    Problem::new(
        ProblemType::Internal,
        "the server failed while answering; the request id finds it in the server's log",
    )
    .into_response()
}

/// The `tracing` span of one request.
pub(crate) fn request_span(req: &Request<Body>) -> tracing::Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %request_id,
    )
}
