//! RFC 9457 `application/problem+json` answers for the security layers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The base of every problem `type` URI: `https://jobforge.dev/problems/<slug>`.
pub const PROBLEM_BASE: &str = "https://jobforge.dev/problems/";

/// The `Content-Type` of problem answers.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

/// A problem+json response: `type` is `PROBLEM_BASE` + `slug`.
pub(crate) fn problem(status: StatusCode, slug: &str, title: &str, detail: &str) -> Response {
    let body = Body {
        kind: format!("{PROBLEM_BASE}{slug}"),
        title,
        status: status.as_u16(),
        detail,
    };
    // Serializing four plain fields cannot fail; fall back to an empty object all the same.
    let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = (status, json).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9457_fields() {
        let response = problem(StatusCode::FORBIDDEN, "forbidden", "Forbidden", "nope");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE),
            Some(&HeaderValue::from_static(PROBLEM_CONTENT_TYPE))
        );
    }
}
