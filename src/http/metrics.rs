//! `/metrics` bookkeeping: request counts and latency histograms per route, submissions, and
//! the Prometheus text exposition (written by hand: a few counters and histograms need no
//! registry crate and no global recorder in the host's process).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;

use super::AppState;

/// Upper bounds of the request latency histogram, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct RouteStats {
    /// (method, status) → count.
    responses: HashMap<(String, u16), u64>,
    /// Per bucket (not cumulative), the last one is +Inf.
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

/// What the HTTP layer counts.
#[derive(Default)]
pub(crate) struct HttpMetrics {
    routes: Mutex<HashMap<String, RouteStats>>,
    submitted: AtomicU64,
    created: AtomicU64,
}

impl HttpMetrics {
    pub(crate) fn submitted(&self, jobs: u64, created: u64) {
        self.submitted.fetch_add(jobs, Ordering::Relaxed);
        self.created.fetch_add(created, Ordering::Relaxed);
    }

    fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let mut routes = self.routes.lock();
        let stats = match routes.get_mut(route) {
            Some(stats) => stats,
            None => routes.entry(route.to_owned()).or_default(),
        };
        match stats.responses.get_mut(&(method.to_owned(), status)) {
            Some(n) => *n += 1,
            None => {
                stats.responses.insert((method.to_owned(), status), 1);
            }
        }
        let bucket = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        stats.buckets[bucket] += 1;
        stats.sum += seconds;
        stats.count += 1;
    }

    /// The HTTP part of the exposition.
    pub(crate) fn render(&self, out: &mut String) {
        let routes = self.routes.lock();
        let mut names: Vec<&String> = routes.keys().collect();
        names.sort();
        out.push_str("# HELP jobforge_http_requests_total HTTP requests answered, by route, method and status.\n");
        out.push_str("# TYPE jobforge_http_requests_total counter\n");
        for name in &names {
            let stats = &routes[*name];
            let mut keys: Vec<&(String, u16)> = stats.responses.keys().collect();
            keys.sort();
            for key in keys {
                let _ = writeln!(
                    out,
                    "jobforge_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{}\"}} {}",
                    escape(name),
                    escape(&key.0),
                    key.1,
                    stats.responses[key]
                );
            }
        }
        out.push_str("# HELP jobforge_http_request_duration_seconds Time to answer an HTTP request, by route.\n");
        out.push_str("# TYPE jobforge_http_request_duration_seconds histogram\n");
        for name in &names {
            let stats = &routes[*name];
            let route = escape(name);
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += stats.buckets[i];
                let _ = writeln!(
                    out,
                    "jobforge_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "jobforge_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                stats.count
            );
            let _ = writeln!(
                out,
                "jobforge_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                stats.sum
            );
            let _ = writeln!(
                out,
                "jobforge_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                stats.count
            );
        }
        drop(routes);
        out.push_str(
            "# HELP jobforge_http_jobs_submitted_total Jobs submitted over HTTP (repeats of an idempotency key included).\n",
        );
        out.push_str("# TYPE jobforge_http_jobs_submitted_total counter\n");
        let _ = writeln!(
            out,
            "jobforge_http_jobs_submitted_total {}",
            self.submitted.load(Ordering::Relaxed)
        );
        out.push_str("# HELP jobforge_http_jobs_created_total Jobs created over HTTP.\n");
        out.push_str("# TYPE jobforge_http_jobs_created_total counter\n");
        let _ = writeln!(
            out,
            "jobforge_http_jobs_created_total {}",
            self.created.load(Ordering::Relaxed)
        );
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
pub(crate) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Middleware: count and time every request by its route template (`/v1/jobs/{id}`), so ids
/// never become labels.
pub(crate) async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // A fixed set of labels: HTTP allows any token as a method, and each distinct one would
    // otherwise be a label kept forever (memory any client could grow).
    let method = match *req.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let response = next.run(req).await;
    state.shared.metrics.observe(
        &route,
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_labels_are_escaped() {
        let m = HttpMetrics::default();
        m.observe("/v1/jobs", "POST", 201, 0.0007);
        m.observe("/v1/jobs", "POST", 201, 0.3);
        m.observe("/v1/jobs", "POST", 422, 20.0);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains(
            "jobforge_http_requests_total{route=\"/v1/jobs\",method=\"POST\",status=\"201\"} 2"
        ));
        assert!(out.contains(
            "jobforge_http_request_duration_seconds_bucket{route=\"/v1/jobs\",le=\"0.001\"} 1"
        ));
        assert!(out.contains(
            "jobforge_http_request_duration_seconds_bucket{route=\"/v1/jobs\",le=\"0.5\"} 2"
        ));
        assert!(out.contains(
            "jobforge_http_request_duration_seconds_bucket{route=\"/v1/jobs\",le=\"+Inf\"} 3"
        ));
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
