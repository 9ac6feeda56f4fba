//! The authentication and rate-limit middleware, and the scope each route needs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api_key::{ApiKeyStore, X_API_KEY, looks_like_api_key};
use super::client_ip::{ClientIp, TrustedProxies, client_ip, rate_limit_key};
use super::jwt::JwtVerifier;
use super::principal::{AuthError, Principal};
use super::rate_limit::KeyedLimiter;
use super::scope::{Scope, Tier};

/// The scope a request needs, from its method and path; `None` for a route that needs a valid
/// credential but no particular scope (outside `/v1`, except `/metrics`, which needs `admin`).
///
/// | route | scope |
/// |---|---|
/// | `POST /v1/jobs`, `POST /v1/jobs/batch`, `POST /v1/jobs/{id}/cancel`, `POST /v1/jobs/{id}/retry`, `DELETE /v1/jobs/{id}`, `POST /v1/workflows`, `POST /v1/workflows/{id}/cancel` | `jobs:write` |
/// | `GET /v1/jobs`, `GET /v1/jobs/...`, `GET /v1/workflows/{id}`, `GET /v1/queues/stats`, `GET /v1/queues/paused`, `GET /v1/queues/depths`, `GET /v1/kinds/{kind}/reflection` | `jobs:read` |
/// | `GET /v1/memory...` | `memory:read` |
/// | `PUT /v1/memory/...`, `DELETE /v1/memory/...` | `memory:write` |
/// | `GET /v1/schedules`, `GET /v1/schedules/...` | `schedules:read` |
/// | `PUT /v1/schedules/{id}`, `DELETE /v1/schedules/{id}`, `POST /v1/schedules/{id}/pause`, `.../resume`, `.../trigger` | `schedules:write` |
/// | anything else under `/v1` (`POST /v1/queues/{queue}/pause` and `.../resume` among them), and `/metrics` | `admin` |
/// | `GET /ui/...` (the console's pages) | `jobs:read` (`schedules:read` under `/ui/schedules`) |
/// | `POST /ui/...` (the console's actions, deleting a finished job among them) | `jobs:write` (`schedules:write` under `/ui/schedules`, `admin` under `/ui/queues`) |
///
/// The console's login, logout and assets (`/ui/login`, `/ui/logout`, `/ui/assets/...`) need
/// no credential at all.
///
/// `HEAD` counts as `GET`. Paths are matched segment by segment as sent (not decoded), and an
/// unexpected shape falls to `admin`, never to a narrower scope.
///
/// ```
/// use axum::http::Method;
/// use jobforge::http::security::{required_scope, Scope};
///
/// assert_eq!(required_scope(&Method::POST, "/v1/jobs"), Some(Scope::JobsWrite));
/// assert_eq!(required_scope(&Method::GET, "/v1/jobs/0190"), Some(Scope::JobsRead));
/// assert_eq!(required_scope(&Method::DELETE, "/v1/jobs/0190"), Some(Scope::JobsWrite));
/// assert_eq!(required_scope(&Method::DELETE, "/v1/jobs/0190/events"), Some(Scope::Admin));
/// assert_eq!(required_scope(&Method::PUT, "/v1/memory/ns/key"), Some(Scope::MemoryWrite));
/// assert_eq!(required_scope(&Method::POST, "/v1/schedules/nightly/trigger"), Some(Scope::SchedulesWrite));
/// assert_eq!(required_scope(&Method::GET, "/docs"), None);
/// assert_eq!(required_scope(&Method::GET, "/ui/jobs"), Some(Scope::JobsRead));
/// assert_eq!(required_scope(&Method::POST, "/ui/jobs/0190/cancel"), Some(Scope::JobsWrite));
/// assert_eq!(required_scope(&Method::GET, "/ui/schedules"), Some(Scope::SchedulesRead));
/// assert_eq!(required_scope(&Method::POST, "/ui/schedules/nightly/pause"), Some(Scope::SchedulesWrite));
/// ```
#[must_use]
pub fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    let all: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    // Mounted under a prefix (`/api/v1/jobs` when the host nests the router at `/api`), the
    // API starts at the first `v1` segment; judging the whole path would find no scope.
    let segments = match all.iter().position(|s| *s == "v1") {
        Some(at) => &all[at..],
        None => &all[..],
    };
    let read = *method == Method::GET || *method == Method::HEAD;
    if let Some((_, rest)) = console_path(path) {
        // The console's schedule pages need what `/v1/schedules` needs.
        let schedules = rest == "/schedules" || rest.starts_with("/schedules/");
        // Pausing a queue stops the whole fleet's work on it: `admin`, as on the API.
        if !read && rest.starts_with("/queues/") {
            return Some(Scope::Admin);
        }
        return Some(match (read, *method == Method::POST, schedules) {
            (true, _, false) => Scope::JobsRead,
            (true, _, true) => Scope::SchedulesRead,
            (false, true, false) => Scope::JobsWrite,
            (false, true, true) => Scope::SchedulesWrite,
            (false, false, _) => Scope::Admin,
        });
    }
    match segments {
        [.., "metrics"] => Some(Scope::Admin),
        ["v1", rest @ ..] => Some(match (rest, read) {
            (["jobs"], false) if *method == Method::POST => Scope::JobsWrite,
            (["jobs", "batch"], false) if *method == Method::POST => Scope::JobsWrite,
            (["jobs", id, "cancel" | "retry"], false)
                if *method == Method::POST && !id.is_empty() =>
            {
                Scope::JobsWrite
            }
            (["jobs", id], false) if *method == Method::DELETE && !id.is_empty() => {
                Scope::JobsWrite
            }
            (["jobs", ..], true) => Scope::JobsRead,
            (["workflows"], false) if *method == Method::POST => Scope::JobsWrite,
            (["workflows", id, "cancel"], false) if *method == Method::POST && !id.is_empty() => {
                Scope::JobsWrite
            }
            (["workflows", id], true) if !id.is_empty() => Scope::JobsRead,
            (["queues", "stats" | "paused" | "depths"], true) => Scope::JobsRead,
            (["kinds", kind, "reflection"], true) if !kind.is_empty() => Scope::JobsRead,
            (["memory", ..], true) => Scope::MemoryRead,
            (["memory", _, ..], false) if *method == Method::PUT || *method == Method::DELETE => {
                Scope::MemoryWrite
            }
            (["schedules", ..], true) => Scope::SchedulesRead,
            (["schedules", id], false)
                if !id.is_empty() && (*method == Method::PUT || *method == Method::DELETE) =>
            {
                Scope::SchedulesWrite
            }
            (["schedules", id, "pause" | "resume" | "trigger"], false)
                if !id.is_empty() && *method == Method::POST =>
            {
                Scope::SchedulesWrite
            }
            _ => Scope::Admin,
        }),
        _ => None,
    }
}

/// The state of the security middleware: credentials, limiters, public paths.
pub(crate) struct Guard {
    pub(crate) api_keys: Option<Arc<ApiKeyStore>>,
    pub(crate) jwt: Option<JwtVerifier>,
    /// False only when no credential is configured: every request then gets
    /// [`Principal::unrestricted`].
    pub(crate) auth_enabled: bool,
    pub(crate) public_paths: Vec<String>,
    pub(crate) trusted_proxies: TrustedProxies,
    pub(crate) per_ip: Option<KeyedLimiter<IpAddr>>,
    /// Per principal: read, write, admin.
    pub(crate) per_principal: Option<[KeyedLimiter<String>; 3]>,
    /// Whether the server serves TLS (the console's session cookie is then `Secure`).
    pub(crate) tls: bool,
}

/// Where a path sits in the console: its base (`/ui`, or `/admin/ui` when the router is
/// nested under `/admin`) and the rest after it (`""`, `/jobs`, ...); `None` outside it.
/// A path with a `v1` segment anywhere is the API's, never the console's (a router nested
/// under `/ui` serves its API at `/ui/v1/...`, which must keep the API's scopes and never
/// take the console's cookie).
#[must_use]
pub(crate) fn console_path(path: &str) -> Option<(&str, &str)> {
    if path.split('/').any(|s| s == "v1") {
        return None;
    }
    let mut offset = 0;
    for segment in path.split('/') {
        let end = offset + segment.len();
        if segment == "ui" {
            return path.get(..end).zip(path.get(end..));
        }
        offset = end + 1;
    }
    None
}

/// The console paths that need no credential: its login and logout, and its script and
/// style sheet.
fn console_public(rest: &str) -> bool {
    rest == "/login" || rest == "/logout" || rest.starts_with("/assets/")
}

/// What the console's login form checks a presented key or token with, and whether the
/// session cookie may be `Secure`. Put in the request extensions of every request by the
/// authentication layer.
#[derive(Clone)]
pub(crate) struct SessionVerifier {
    guard: Arc<Guard>,
}

impl SessionVerifier {
    /// The principal of `token` (an API key or a JWT), as the API would find it.
    pub(crate) fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.guard.authenticate_token(token).map(|(p, _)| p)
    }

    /// Whether the server itself serves TLS.
    pub(crate) fn tls(&self) -> bool {
        self.guard.tls
    }

    /// Whether credentials are checked at all.
    pub(crate) fn auth_enabled(&self) -> bool {
        self.guard.auth_enabled
    }
}

static WARNED_NO_CONNECT_INFO: AtomicBool = AtomicBool::new(false);

impl Guard {
    /// A public path covers itself and what lies below it (`/docs` covers `/docs/` and
    /// `/docs/index.css`), never a sibling that merely starts the same (`/docsx`).
    pub(crate) fn is_public(&self, path: &str) -> bool {
        self.public_paths.iter().any(|p| {
            path.strip_prefix(p.trim_end_matches('/'))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// The principal for the request's credentials, and a key for its rate limit that cannot
    /// collide between an API key id and a JWT subject.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        console: bool,
    ) -> Result<(Principal, String), AuthError> {
        let token = match credential(headers) {
            // The console's pages also take the session cookie its login form set; the API
            // never does, so no other site can make a browser call it with the cookie.
            Err(AuthError::MissingCredentials) if console => {
                crate::http::ui::session_token(headers).ok_or(AuthError::MissingCredentials)?
            }
            found => found?,
        };
        self.authenticate_token(token)
    }

    fn authenticate_token(&self, token: &str) -> Result<(Principal, String), AuthError> {
        if looks_like_api_key(token) {
            let store = self
                .api_keys
                .as_ref()
                .ok_or(AuthError::InvalidCredentials)?;
            let principal = store.verify(token)?;
            let key = format!("key:{}", principal.id());
            Ok((principal, key))
        } else {
            let jwt = self.jwt.as_ref().ok_or(AuthError::InvalidCredentials)?;
            let principal = jwt.verify(token)?;
            let key = format!("jwt:{}", principal.id());
            Ok((principal, key))
        }
    }
}

/// The one credential a request carries: `Authorization: Bearer <token>` or
/// `X-API-Key: <key>`. Two of them (even equal), a repeated header, another scheme or a value
/// that is not text: invalid.
fn credential(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    let mut api_key = headers.get_all(X_API_KEY).iter();
    let found = match (
        authorization.next(),
        authorization.next(),
        api_key.next(),
        api_key.next(),
    ) {
        (None, _, None, _) => return Err(AuthError::MissingCredentials),
        (Some(value), None, None, _) => {
            let text = value.to_str().map_err(|_| AuthError::InvalidCredentials)?;
            let (scheme, token) = text.split_once(' ').ok_or(AuthError::InvalidCredentials)?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(AuthError::InvalidCredentials);
            }
            token.trim()
        }
        (None, _, Some(value), None) => value
            .to_str()
            .map_err(|_| AuthError::InvalidCredentials)?
            .trim(),
        _ => return Err(AuthError::InvalidCredentials),
    };
    if found.is_empty() {
        return Err(AuthError::InvalidCredentials);
    }
    Ok(found)
}

/// The `tracing` target of the security audit events: every refused request (who, what, why
/// in one stable word), and every authenticated one at `debug`. Never a credential.
pub const AUDIT_TARGET: &str = "jobforge::http::audit";

fn client_of(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ClientIp>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ClientIp(ip)| *ip)
}

fn audit(request: &Request, path: &str, principal: Option<&Principal>, refusal: &AuthError) {
    let outcome = match refusal {
        AuthError::MissingCredentials => "missing_credentials",
        AuthError::InvalidCredentials => "invalid_credentials",
        AuthError::InsufficientScope(_) => "insufficient_scope",
        AuthError::TenantMismatch => "tenant_mismatch",
    };
    tracing::info!(
        target: AUDIT_TARGET,
        client = %client_of(request),
        principal = principal.map(Principal::id),
        method = %request.method(),
        path,
        outcome,
    );
}

/// Middleware: find the client address, put [`ClientIp`] in the extensions, and apply the
/// per-address limit.
pub(crate) async fn client_guard(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let ip = match peer {
        Some(peer) => client_ip(peer, request.headers(), &guard.trusted_proxies),
        None => {
            if !WARNED_NO_CONNECT_INFO.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "no peer address on the request: serve the router with \
                     `into_make_service_with_connect_info::<SocketAddr>()`; until then every \
                     client shares one rate limit"
                );
            }
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
    };
    request.extensions_mut().insert(ClientIp(ip));
    let decision = guard
        .per_ip
        .as_ref()
        .map(|limiter| limiter.check(&rate_limit_key(ip)));
    if let Some(refusal) = decision.and_then(|d| d.refusal("client address")) {
        tracing::info!(
            target: AUDIT_TARGET,
            client = %ip,
            method = %request.method(),
            path = request.uri().path(),
            outcome = "rate_limited",
            limit = "client address",
        );
        return refusal;
    }
    let mut response = next.run(request).await;
    if let Some(decision) = decision {
        decision.write_headers(response.headers_mut());
    }
    response
}

/// Middleware: authenticate, check the route's scope, apply the per-principal limit, and put
/// the [`Principal`] in the extensions.
pub(crate) async fn auth_guard(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Response {
    // Inside `Router::nest` the URI has lost its prefix; decide on the path the client sent.
    let path = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri().path(), |original| original.path())
        .to_owned();
    let console = console_path(&path);
    request.extensions_mut().insert(SessionVerifier {
        guard: Arc::clone(&guard),
    });
    if guard.is_public(&path) || console.is_some_and(|(_, rest)| console_public(rest)) {
        return next.run(request).await;
    }
    let required = required_scope(request.method(), &path);
    let (principal, limit_key) = if guard.auth_enabled {
        match guard.authenticate(request.headers(), console.is_some()) {
            Ok(found) => found,
            Err(refusal) => {
                audit(&request, &path, None, &refusal);
                // A browser without a (valid) session is sent to the login form.
                if let Some((base, _)) = console {
                    if *request.method() == Method::GET
                        && matches!(
                            refusal,
                            AuthError::MissingCredentials | AuthError::InvalidCredentials
                        )
                    {
                        return crate::http::ui::to_login(base, &path);
                    }
                }
                return refusal.into_response();
            }
        }
    } else {
        (Principal::unrestricted(), String::new())
    };
    if let Some(Err(refusal)) = required.map(|scope| principal.require(scope)) {
        audit(&request, &path, Some(&principal), &refusal);
        return refusal.into_response();
    }
    let tier = required.map_or(Tier::Read, Scope::tier);
    let decision = match (&guard.per_principal, guard.auth_enabled) {
        (Some([read, write, admin]), true) => Some(
            match tier {
                Tier::Read => read,
                Tier::Write => write,
                Tier::Admin => admin,
            }
            .check(&limit_key),
        ),
        _ => None,
    };
    if let Some(refusal) = decision.and_then(|d| d.refusal("credential")) {
        tracing::info!(
            target: AUDIT_TARGET,
            client = %client_of(&request),
            principal = principal.id(),
            method = %request.method(),
            path = %path,
            outcome = "rate_limited",
            limit = tier.as_str(),
        );
        return refusal;
    }
    tracing::debug!(
        target: AUDIT_TARGET,
        client = %client_of(&request),
        principal = principal.id(),
        method = %request.method(),
        path = %path,
        outcome = "allowed",
    );
    // The router's handlers scope jobs and memory by the `Tenant` extension.
    if let Some(tenant) = principal.tenant() {
        let tenant = crate::http::Tenant(tenant.to_owned());
        request.extensions_mut().insert(tenant);
    }
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    if let Some(decision) = decision {
        decision.write_headers(response.headers_mut());
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_console_is_found_by_its_segment_and_never_under_v1() {
        assert_eq!(console_path("/ui"), Some(("/ui", "")));
        assert_eq!(console_path("/ui/jobs/x"), Some(("/ui", "/jobs/x")));
        assert_eq!(
            console_path("/admin/ui/login"),
            Some(("/admin/ui", "/login"))
        );
        assert_eq!(console_path("/uix/jobs"), None);
        assert_eq!(console_path("/v1/jobs"), None);
        assert_eq!(console_path("/v1/ui"), None);
        // A router nested under `/ui`: its API keeps the API's scopes.
        assert_eq!(console_path("/ui/v1/schedules/x/pause"), None);
        assert_eq!(
            required_scope(&Method::POST, "/ui/v1/schedules/x/pause"),
            Some(Scope::SchedulesWrite)
        );
    }

    #[test]
    fn route_scopes() {
        let cases = [
            (Method::POST, "/v1/jobs", Some(Scope::JobsWrite)),
            (Method::POST, "/v1/jobs/batch", Some(Scope::JobsWrite)),
            (Method::POST, "/v1/jobs/abc/cancel", Some(Scope::JobsWrite)),
            (Method::POST, "/v1/jobs//cancel", Some(Scope::Admin)),
            (Method::POST, "/v1/jobs/abc", Some(Scope::Admin)),
            (Method::GET, "/v1/jobs", Some(Scope::JobsRead)),
            (Method::POST, "/v1/workflows", Some(Scope::JobsWrite)),
            (
                Method::POST,
                "/v1/workflows/w/cancel",
                Some(Scope::JobsWrite),
            ),
            (Method::GET, "/v1/workflows/w", Some(Scope::JobsRead)),
            (Method::GET, "/v1/workflows", Some(Scope::Admin)),
            (Method::DELETE, "/v1/workflows/w", Some(Scope::Admin)),
            (Method::HEAD, "/v1/jobs/abc/events", Some(Scope::JobsRead)),
            (Method::GET, "/v1/queues/stats", Some(Scope::JobsRead)),
            (Method::GET, "/v1/queues", Some(Scope::Admin)),
            (
                Method::GET,
                "/v1/kinds/email/reflection",
                Some(Scope::JobsRead),
            ),
            (Method::GET, "/v1/memory", Some(Scope::MemoryRead)),
            (Method::GET, "/v1/memory/ns/k", Some(Scope::MemoryRead)),
            (Method::PUT, "/v1/memory/ns/k", Some(Scope::MemoryWrite)),
            (Method::DELETE, "/v1/memory/ns/k", Some(Scope::MemoryWrite)),
            (Method::GET, "/v1/schedules", Some(Scope::SchedulesRead)),
            (
                Method::GET,
                "/v1/schedules/s/history",
                Some(Scope::SchedulesRead),
            ),
            (Method::PUT, "/v1/schedules/s", Some(Scope::SchedulesWrite)),
            (
                Method::DELETE,
                "/v1/schedules/s",
                Some(Scope::SchedulesWrite),
            ),
            (
                Method::POST,
                "/v1/schedules/s/trigger",
                Some(Scope::SchedulesWrite),
            ),
            (
                Method::POST,
                "/v1/schedules/s/pause",
                Some(Scope::SchedulesWrite),
            ),
            (Method::PUT, "/v1/schedules", Some(Scope::Admin)),
            (Method::POST, "/v1/schedules/s/history", Some(Scope::Admin)),
            (Method::PUT, "/v1/memory", Some(Scope::Admin)),
            (Method::POST, "/v1/memory/ns/k", Some(Scope::Admin)),
            (Method::GET, "/v1/admin/anything", Some(Scope::Admin)),
            (Method::GET, "/v1", Some(Scope::Admin)),
            (Method::GET, "/metrics", Some(Scope::Admin)),
            (Method::GET, "/docs", None),
            (Method::GET, "/V1/jobs", None),
            // Mounted under a prefix by the host.
            (Method::POST, "/api/v1/jobs", Some(Scope::JobsWrite)),
            (Method::GET, "/api/v1/jobs", Some(Scope::JobsRead)),
            (
                Method::DELETE,
                "/api/v1/memory/ns/k",
                Some(Scope::MemoryWrite),
            ),
            (Method::GET, "/api/metrics", Some(Scope::Admin)),
            (Method::GET, "/api/docs", None),
        ];
        for (method, path, scope) in cases {
            assert_eq!(required_scope(&method, path), scope, "{method} {path}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn credentials_are_read_strictly() {
        assert_eq!(
            credential(&HeaderMap::new()),
            Err(AuthError::MissingCredentials)
        );
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer abc")])),
            Ok("abc")
        );
        assert_eq!(
            credential(&headers(&[("authorization", "bearer  abc ")])),
            Ok("abc")
        );
        assert_eq!(
            credential(&headers(&[("x-api-key", "jfk_a_b")])),
            Ok("jfk_a_b")
        );
        for bad in [
            headers(&[("authorization", "Basic YTpi")]),
            headers(&[("authorization", "Bearer")]),
            headers(&[("authorization", "Bearer ")]),
            headers(&[("authorization", "Bearer a"), ("authorization", "Bearer a")]),
            headers(&[("authorization", "Bearer a"), ("x-api-key", "a")]),
            headers(&[("x-api-key", "a"), ("x-api-key", "b")]),
            headers(&[("x-api-key", "")]),
        ] {
            assert_eq!(
                credential(&bad),
                Err(AuthError::InvalidCredentials),
                "{bad:?}"
            );
        }
    }
}
