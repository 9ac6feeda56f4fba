//! The console's login: a form that takes an API key (or a JWT), checks it as the API would,
//! and keeps it in the session cookie.

use std::time::Duration;

use axum::Extension;
use axum::Form;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use serde::Deserialize;

use super::{Ctx, SESSION_COOKIE, page, render, see_other};
use crate::http::security::{Scope, SessionVerifier};

/// How long a session cookie lives in the browser.
const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// The longest credential the form accepts (a JWT with many claims fits).
const MAX_CREDENTIAL: usize = 8 * 1024;

/// The session cookie's credential, if the request carries one.
pub(crate) fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Send a browser without a valid session to the login form, remembering where it was going.
pub(crate) fn to_login(base: &str, path: &str) -> Response {
    let next = if path.starts_with(base) && path != base {
        format!(
            "?next={}",
            percent_encoding::utf8_percent_encode(path, NEXT_SET)
        )
    } else {
        String::new()
    };
    see_other(&format!("{base}/login{next}"))
}

const NEXT_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

#[derive(Deserialize)]
pub(crate) struct NextQuery {
    next: Option<String>,
}

/// `GET /ui/login`.
pub(crate) async fn login_form(
    Ctx { base, .. }: Ctx,
    verifier: Option<Extension<SessionVerifier>>,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> Response {
    let open = verifier.is_none_or(|v| !v.auth_enabled());
    page(
        StatusCode::OK,
        render::login(&base, q.next.as_deref(), None, open),
    )
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    key: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /ui/login`: check the key; on success set the session cookie and go on.
pub(crate) async fn login(
    Ctx { base, .. }: Ctx,
    headers: HeaderMap,
    verifier: Option<Extension<SessionVerifier>>,
    Form(form): Form<LoginForm>,
) -> Response {
    if !super::same_origin(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    // Only a path inside the console: never an open redirect to another site.
    let next = form
        .next
        .as_deref()
        .filter(|n| n.starts_with(&format!("{base}/")) && !n.contains("//") && !n.contains('\\'))
        .map_or_else(|| base.clone(), str::to_owned);
    let Some(Extension(verifier)) = verifier.filter(|v| v.auth_enabled()) else {
        // No credentials are checked on this server: the console is open.
        return see_other(&next);
    };
    let key = form.key.trim();
    let refused = |why: &str| {
        page(
            StatusCode::UNAUTHORIZED,
            render::login(&base, form.next.as_deref(), Some(why), false),
        )
    };
    if key.is_empty() || key.len() > MAX_CREDENTIAL || !key.bytes().all(cookie_safe) {
        return refused("That key was refused: it is not an API key or a token.");
    }
    let principal = match verifier.verify(key) {
        Ok(p) => p,
        Err(_) => return refused("That key was refused: it is unknown, revoked or expired."),
    };
    if !principal.scopes().allows(Scope::JobsRead) {
        return refused("That key was refused: the console needs the jobs:read scope.");
    }
    let secure = verifier.tls() || forwarded_https(&headers) || loopback(&headers);
    let cookie = Cookie::build((SESSION_COOKIE, key.to_owned()))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .path(base.clone())
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(SESSION_LIFETIME.as_secs()).unwrap_or(i64::MAX),
        ))
        .build();
    tracing::info!(
        target: crate::http::security::AUDIT_TARGET,
        principal = principal.id(),
        outcome = "console_login",
    );
    with_cookie(see_other(&next), &cookie)
}

/// `POST /ui/logout`: forget the session.
pub(crate) async fn logout(Ctx { base, .. }: Ctx, headers: HeaderMap) -> Response {
    if !super::same_origin(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let cookie = Cookie::build((SESSION_COOKIE, ""))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path(base.clone())
        .max_age(cookie::time::Duration::ZERO)
        .build();
    with_cookie(see_other(&format!("{base}/login")), &cookie)
}

fn with_cookie(mut response: Response, cookie: &Cookie<'_>) -> Response {
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// Bytes a cookie value may hold unquoted (RFC 6265 `cookie-octet`).
fn cookie_safe(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Browsers treat loopback hosts as secure contexts and keep `Secure` cookies over plain
/// HTTP there.
fn loopback(headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let name = host
        .strip_prefix('[')
        .and_then(|h| h.split_once(']'))
        .map_or_else(
            || host.rsplit_once(':').map_or(host, |(h, _)| h),
            |(h, _)| h,
        );
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        assert_eq!(session_token(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; jobforge_session=jfk_ab_cd; b=2"),
        );
        assert_eq!(session_token(&h), Some("jfk_ab_cd"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("jobforge_session="),
        );
        assert_eq!(session_token(&h), None);
    }

    #[test]
    fn loopback_hosts() {
        let mut h = HeaderMap::new();
        for (host, expected) in [
            ("127.0.0.1:8080", true),
            ("localhost:3000", true),
            ("[::1]:8080", true),
            ("jobs.example.com", false),
            ("10.0.0.5:8080", false),
        ] {
            h.insert(header::HOST, HeaderValue::from_static(host));
            assert_eq!(loopback(&h), expected, "{host}");
        }
    }

    #[test]
    fn the_login_redirect_keeps_the_page_within_the_console() {
        let r = to_login("/ui", "/ui/jobs/abc");
        assert_eq!(
            r.headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok()),
            Some("/ui/login?next=/ui/jobs/abc")
        );
        let r = to_login("/ui", "/ui");
        assert_eq!(
            r.headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok()),
            Some("/ui/login")
        );
    }
}
