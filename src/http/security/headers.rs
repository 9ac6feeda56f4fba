//! Security headers on every response, and CORS from an explicit allowlist.

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use super::api_key::X_API_KEY;
use super::rate_limit::{RATELIMIT_LIMIT, RATELIMIT_POLICY, RATELIMIT_REMAINING, RATELIMIT_RESET};
use crate::{Error, Result};

/// `Strict-Transport-Security` sent when serving TLS: one year.
pub const HSTS_VALUE: &str = "max-age=31536000";

/// The headers set on every response, unless the handler set the same header itself:
///
/// | header | value |
/// |---|---|
/// | `X-Content-Type-Options` | `nosniff` |
/// | `X-Frame-Options` | `DENY` |
/// | `Content-Security-Policy` | `frame-ancestors 'none'` (nothing else: Swagger UI at `/docs` loads its own scripts and styles; a route wanting a stricter policy sets its own) |
/// | `Referrer-Policy` | `no-referrer` |
/// | `Cache-Control` | `no-store` (API answers carry job data; a route serving static assets may set its own) |
/// | `Strict-Transport-Security` | [`HSTS_VALUE`], only when `tls` is true |
///
/// Apply it outermost, so that refusals by the other layers (401, 403, 429) and the router's
/// own 404s carry the headers too.
///
/// ```
/// use axum::{Router, routing::get};
/// use jobforge::http::security::with_security_headers;
///
/// let app: Router = with_security_headers(Router::new().route("/health", get(|| async { "ok" })), false);
/// ```
pub fn with_security_headers<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    tls: bool,
) -> Router<S> {
    let router = router
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
    if tls {
        router.layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS_VALUE),
        ))
    } else {
        router
    }
}

/// Check one CORS origin: `scheme://host[:port]`, no path, no wildcard.
pub fn parse_origin(origin: &str) -> Result<HeaderValue> {
    let bad = |why: &str| {
        Error::invalid_input(
            "cors origin",
            format!("{origin:?} {why}; give an exact origin like https://app.example.com"),
        )
    };
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| bad("must start with https:// or http://"))?;
    if rest.is_empty()
        || rest.contains(['/', '*', ' ', '?', '#', '@'])
        || origin.ends_with(':')
        || rest.chars().any(char::is_control)
    {
        return Err(bad(
            "is not an exact origin (no path, wildcard or credentials)",
        ));
    }
    HeaderValue::from_str(origin).map_err(|_| bad("is not a valid header value"))
}

/// A CORS layer allowing exactly these origins, or `None` when the list is empty (no CORS
/// headers at all: browsers on other origins cannot call the API).
///
/// Allowed: methods GET, POST, PUT, DELETE; request headers `Authorization`, `Content-Type`,
/// `X-API-Key`; the rate-limit headers and `Retry-After` exposed; preflights cached 10
/// minutes. Credentials (cookies) are not allowed: the API authenticates with headers.
///
/// ```
/// use jobforge::http::security::cors_layer;
///
/// assert!(cors_layer(&[])?.is_none());
/// assert!(cors_layer(&["https://app.example.com".to_owned()])?.is_some());
/// assert!(cors_layer(&["*".to_owned()]).is_err());
/// # Ok::<(), jobforge::Error>(())
/// ```
pub fn cors_layer(origins: &[String]) -> Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let origins = origins
        .iter()
        .map(|o| parse_origin(o))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(X_API_KEY),
            ])
            .expose_headers([
                header::RETRY_AFTER,
                RATELIMIT_LIMIT,
                RATELIMIT_REMAINING,
                RATELIMIT_RESET,
                RATELIMIT_POLICY,
            ])
            .max_age(Duration::from_secs(600)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_exact() {
        assert!(parse_origin("https://app.example.com").is_ok());
        assert!(parse_origin("http://localhost:3000").is_ok());
        for bad in [
            "*",
            "app.example.com",
            "https://",
            "https://app.example.com/",
            "https://*.example.com",
            "https://user@app.example.com",
            "ftp://x",
            "https://x:",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
