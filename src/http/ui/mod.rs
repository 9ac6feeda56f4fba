//! The operator console at `/ui`: server-rendered pages over the same orchestrator, memory
//! and schedules as the API, behind the same authentication and scopes.
//!
//! - **Pages** (`GET`, scope `jobs:read`): overview (counts by state and kind, live charts of
//!   jobs finished per second and queue depth, workers holding jobs, breakers), jobs (a
//!   filtered, keyset-paginated list; a job's payload, result, error, progress and history),
//!   kinds (each kind's reflection, latency histogram and the adaptive recommendation with its
//!   reasons), queues, schedules, and a workflow drawn as its graph.
//! - **Actions** (`POST`, scope `jobs:write`): cancel a job, retry a dead one. A read-only
//!   principal sees no action buttons, and its forged requests answer 403.
//! - **Login**: `/ui/login` takes an API key (or a JWT) and keeps it in an `HttpOnly`,
//!   `SameSite=Strict` cookie (`Secure` over TLS and on loopback) scoped to the console's
//!   path; the API under `/v1` never reads that cookie, so no other site can make a browser
//!   call the API with it. A `Authorization`/`X-API-Key` header works on the console too.
//!   Without [`HttpConfig::with_security`](crate::http::HttpConfig::with_security) the console
//!   is open, like the API.
//! - **No inline script or style**: every page sends a `Content-Security-Policy` of
//!   `default-src 'none'` with only the console's own script, style sheet and same-origin
//!   fetches allowed; values are HTML-escaped by the templates (maud).
//! - Live updates poll `/ui/live` every two seconds (counts only, a few hundred bytes), and
//!   the script keeps at most 150 points per chart.

use axum::Router;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::AppState;
use super::security::Principal;
use super::security::Scope;

mod pages;
mod render;
mod session;
mod svg;

pub(crate) use session::{session_token, to_login};

/// The console's session cookie.
pub(crate) const SESSION_COOKIE: &str = "jobforge_session";

/// The policy every console page is sent with: its own script and style sheet, same-origin
/// fetches and forms, nothing inline, no frames.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

const APP_JS: &str = include_str!("../../../assets/ui/app.js");
const APP_CSS: &str = include_str!("../../../assets/ui/app.css");

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/", get(pages::overview))
        .route("/ui/live", get(pages::live))
        .route("/ui/jobs", get(pages::jobs))
        .route("/ui/jobs/bulk", post(pages::bulk))
        .route("/ui/jobs/{id}", get(pages::job))
        .route("/ui/jobs/{id}/cancel", post(pages::cancel))
        .route("/ui/jobs/{id}/retry", post(pages::retry))
        .route("/ui/jobs/{id}/delete", post(pages::delete))
        .route("/ui/kinds", get(pages::kinds))
        .route("/ui/kinds/{kind}", get(pages::kind))
        .route("/ui/queues", get(pages::queues))
        .route("/ui/queues/{action}", post(pages::queue_action))
        .route("/ui/schedules", get(pages::schedules))
        .route("/ui/schedules/{id}/{action}", post(pages::schedule_action))
        .route("/ui/workflows", get(pages::workflows))
        .route("/ui/workflows/{id}", get(pages::workflow))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/assets/app.js", get(script))
        .route("/ui/assets/app.css", get(style))
}

async fn script() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Embedded in the binary: they change only with it.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

/// What every console handler knows about the request: where the console is mounted and
/// what the caller may do.
pub(crate) struct Ctx {
    /// `/ui`, or `/prefix/ui` when the router is nested.
    pub(crate) base: String,
    /// Whether the caller may act on jobs (scope `jobs:write`).
    pub(crate) can_write: bool,
    /// Whether the caller may see the fleet's schedules (`schedules:read`, no tenant).
    pub(crate) can_see_schedules: bool,
    /// Whether the caller may pause, resume and trigger them (`schedules:write`).
    pub(crate) can_schedule: bool,
    /// Whether the caller may pause and resume queues (`admin`).
    pub(crate) is_admin: bool,
    /// Who is signed in, when credentials are checked.
    pub(crate) who: Option<String>,
    /// The caller's tenant: it sees only that tenant's jobs.
    pub(crate) tenant: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let path = parts
            .extensions
            .get::<OriginalUri>()
            .map_or_else(|| parts.uri.path(), |o| o.path());
        let base = super::security::console_path(path)
            .map_or("/ui", |(base, _)| base)
            .to_owned();
        // Without credentials checked, every caller is the same unrestricted principal: no
        // one is signed in, and there is nothing to log out of.
        let checked = parts
            .extensions
            .get::<super::security::SessionVerifier>()
            .is_some_and(super::security::SessionVerifier::auth_enabled);
        let principal = parts.extensions.get::<Principal>().filter(|_| checked);
        let allows = |scope| principal.is_none_or(|p| p.scopes().allows(scope));
        let can_write = allows(Scope::JobsWrite);
        let who = principal.map(|p| p.id().to_owned());
        let tenant = parts
            .extensions
            .get::<super::Tenant>()
            .map(|t| t.0.clone())
            .or_else(|| principal.and_then(|p| p.tenant().map(str::to_owned)));
        // Schedules are the fleet's: a tenant's credential never sees them (as on the API).
        let can_see_schedules = allows(Scope::SchedulesRead) && tenant.is_none();
        let can_schedule = can_see_schedules && allows(Scope::SchedulesWrite);
        let is_admin = allows(Scope::Admin);
        Ok(Ctx {
            base,
            can_write,
            can_see_schedules,
            can_schedule,
            is_admin,
            who,
            tenant,
        })
    }
}

/// A page: HTML with the console's security policy.
pub(crate) fn page(status: StatusCode, markup: maud::Markup) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            // Under the API's `no-referrer`, browsers send `Origin: null` on the console's
            // own form posts; `same-origin` lets them name the origin (and still sends
            // nothing to other sites).
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            ),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// A `303 See Other` to `location` (after a form post, so a reload does not post again).
pub(crate) fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// Whether a form post comes from the console's own pages: a browser sends `Origin` (and
/// `Sec-Fetch-Site`) on every `POST`; when present they must name this host. The
/// `SameSite=Strict` cookie already keeps other sites' posts unauthenticated; this refuses
/// them even when the caller authenticates some other way.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let site_ok = site.is_none_or(|v| v == "same-origin" || v == "none");
    let origin_ok = match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (None, _) => true,
        // A page served with a strict referrer policy posts with `Origin: null`; the
        // browser's own `Sec-Fetch-Site` then says where the post came from.
        (Some("null"), _) => site == Some("same-origin"),
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
    };
    site_ok && origin_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_posts_only() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "no Origin: not a cross-site browser post");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
        // What Chromium sends from a page with a strict referrer policy.
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h), "null from another site");
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h), "null from this site");
        h.remove("sec-fetch-site");
        assert!(!same_origin(&h), "null without a browser saying where from");
    }
}
