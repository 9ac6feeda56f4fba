//! RFC 9457 problem details: every error the API answers is `application/problem+json` with a
//! stable `type` URI per kind of error, and, for bad input, the field that was wrong.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Error, ErrorKind};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Where the problem type URIs live; each type is this plus a short name.
pub const PROBLEM_BASE: &str = "https://jobforge.dev/problems/";

/// The stable kinds of problem the API answers. The `type` URI of each is
/// [`PROBLEM_BASE`] followed by [`ProblemType::slug`]; match on the URI, never on the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemType {
    /// 400: the body is not JSON at all (syntax error, truncated, empty).
    MalformedJson,
    /// 415: the body is not sent as `application/json`.
    UnsupportedMediaType,
    /// 422: the body is JSON but a field is missing, has the wrong type, is unknown, or has a
    /// value that is not accepted. `field` names it.
    Validation,
    /// 400: a path or query parameter (an id, a cursor, a limit, a filter) is not accepted.
    /// `field` names it.
    InvalidParameter,
    /// 422: no handler is registered for the job's kind on this server.
    UnknownKind,
    /// 404: no such job, entry or route.
    NotFound,
    /// 405: the route exists, but not with this method.
    MethodNotAllowed,
    /// 409: someone else changed the thing first (a lost compare-and-set); read it again.
    Conflict,
    /// 413: the body is larger than the server's limit.
    PayloadTooLarge,
    /// 429: a configured limit or capacity was reached; retry later.
    LimitExceeded,
    /// 503: the request did not finish within the server's request timeout.
    Timeout,
    /// 503: a backend (queue, state, memory store) failed or is unreachable; retry later.
    BackendUnavailable,
    /// 503: the server is shutting down.
    ShuttingDown,
    /// 503: the readiness check failed: a backend is not reachable.
    NotReady,
    /// 501: the server has no memory configured, so memory and reflection routes are off.
    MemoryNotConfigured,
    /// 501: the server keeps no schedules (none configured, or its store keeps none), so the
    /// schedule routes are off.
    SchedulesNotConfigured,
    /// 501: the server's store keeps no workflows (Redis Streams beside PostgreSQL), so
    /// workflows cannot be submitted.
    WorkflowsNotSupported,
    /// 501: the server's store cannot pause queues (Redis Streams beside PostgreSQL).
    PausingNotSupported,
    /// 501: the server's store cannot delete jobs before their retention ends (Redis
    /// Streams beside PostgreSQL).
    DeletingNotSupported,
    /// 403: the caller may not use this route as it is authenticated (a tenant-bound
    /// credential on fleet-wide schedules).
    Forbidden,
    /// 500: anything else; the detail says what, and the request id finds it in the logs.
    Internal,
}

impl ProblemType {
    /// Every problem type, for documentation and tests.
    pub const ALL: [ProblemType; 21] = [
        ProblemType::MalformedJson,
        ProblemType::UnsupportedMediaType,
        ProblemType::Validation,
        ProblemType::InvalidParameter,
        ProblemType::UnknownKind,
        ProblemType::NotFound,
        ProblemType::MethodNotAllowed,
        ProblemType::Conflict,
        ProblemType::PayloadTooLarge,
        ProblemType::LimitExceeded,
        ProblemType::Timeout,
        ProblemType::BackendUnavailable,
        ProblemType::ShuttingDown,
        ProblemType::NotReady,
        ProblemType::MemoryNotConfigured,
        ProblemType::SchedulesNotConfigured,
        ProblemType::WorkflowsNotSupported,
        ProblemType::PausingNotSupported,
        ProblemType::DeletingNotSupported,
        ProblemType::Forbidden,
        ProblemType::Internal,
    ];

    /// The short, stable name at the end of the type URI.
    #[must_use]
    pub fn slug(self) -> &'static str {
        match self {
            ProblemType::MalformedJson => "malformed-json",
            ProblemType::UnsupportedMediaType => "unsupported-media-type",
            ProblemType::Validation => "validation",
            ProblemType::InvalidParameter => "invalid-parameter",
            ProblemType::UnknownKind => "unknown-kind",
            ProblemType::NotFound => "not-found",
            ProblemType::MethodNotAllowed => "method-not-allowed",
            ProblemType::Conflict => "conflict",
            ProblemType::PayloadTooLarge => "payload-too-large",
            ProblemType::LimitExceeded => "limit-exceeded",
            ProblemType::Timeout => "timeout",
            ProblemType::BackendUnavailable => "backend-unavailable",
            ProblemType::ShuttingDown => "shutting-down",
            ProblemType::NotReady => "not-ready",
            ProblemType::MemoryNotConfigured => "memory-not-configured",
            ProblemType::SchedulesNotConfigured => "schedules-not-configured",
            ProblemType::WorkflowsNotSupported => "workflows-not-supported",
            ProblemType::PausingNotSupported => "pausing-not-supported",
            ProblemType::DeletingNotSupported => "deleting-not-supported",
            ProblemType::Forbidden => "forbidden",
            ProblemType::Internal => "internal",
        }
    }

    /// The full `type` URI.
    #[must_use]
    pub fn uri(self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }

    /// The HTTP status this problem is answered with.
    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            ProblemType::MalformedJson | ProblemType::InvalidParameter => StatusCode::BAD_REQUEST,
            ProblemType::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemType::Validation | ProblemType::UnknownKind => StatusCode::UNPROCESSABLE_ENTITY,
            ProblemType::NotFound => StatusCode::NOT_FOUND,
            ProblemType::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemType::Conflict => StatusCode::CONFLICT,
            ProblemType::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemType::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            ProblemType::Timeout
            | ProblemType::BackendUnavailable
            | ProblemType::ShuttingDown
            | ProblemType::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ProblemType::MemoryNotConfigured
            | ProblemType::SchedulesNotConfigured
            | ProblemType::WorkflowsNotSupported
            | ProblemType::PausingNotSupported
            | ProblemType::DeletingNotSupported => StatusCode::NOT_IMPLEMENTED,
            ProblemType::Forbidden => StatusCode::FORBIDDEN,
            ProblemType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short, fixed summary of the problem type (the `title`).
    #[must_use]
    pub fn title(self) -> &'static str {
        match self {
            ProblemType::MalformedJson => "The request body is not valid JSON",
            ProblemType::UnsupportedMediaType => "The request body must be application/json",
            ProblemType::Validation => "A field of the request body is not accepted",
            ProblemType::InvalidParameter => "A path or query parameter is not accepted",
            ProblemType::UnknownKind => "No handler is registered for this kind",
            ProblemType::NotFound => "Not found",
            ProblemType::MethodNotAllowed => "Method not allowed on this route",
            ProblemType::Conflict => "Changed by someone else first",
            ProblemType::PayloadTooLarge => "The request body is too large",
            ProblemType::LimitExceeded => "A limit was reached",
            ProblemType::Timeout => "The request timed out",
            ProblemType::BackendUnavailable => "A backend is unavailable",
            ProblemType::ShuttingDown => "The server is shutting down",
            ProblemType::NotReady => "Not ready",
            ProblemType::MemoryNotConfigured => "No memory is configured on this server",
            ProblemType::SchedulesNotConfigured => "No schedules are kept by this server",
            ProblemType::WorkflowsNotSupported => "This server's store keeps no workflows",
            ProblemType::PausingNotSupported => "This server's store cannot pause queues",
            ProblemType::DeletingNotSupported => "This server's store cannot delete jobs",
            ProblemType::Forbidden => "Not allowed for these credentials",
            ProblemType::Internal => "Internal error",
        }
    }
}

/// An RFC 9457 problem details object, answered as `application/problem+json`.
///
/// ```
/// use jobforge::http::{Problem, ProblemType};
///
/// let problem = Problem::new(ProblemType::Validation, "`kind` must not be empty").with_field("kind");
/// assert_eq!(problem.status, 422);
/// assert_eq!(problem.r#type, "https://jobforge.dev/problems/validation");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "https://jobforge.dev/problems/validation",
    "title": "A field of the request body is not accepted",
    "status": 422,
    "detail": "invalid `kind`: must not be empty",
    "field": "kind",
    "instance": "/v1/jobs",
    "request_id": "0b8e3c1e-6f0a-4a53-9d77-3f5f8a1f2b90"
}))]
pub struct Problem {
    /// The stable problem type URI (`https://jobforge.dev/problems/<name>`).
    #[serde(rename = "type")]
    pub r#type: String,
    /// A short, fixed summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What was wrong in this request, and what to do about it.
    pub detail: String,
    /// For bad input: the field or parameter that was wrong (`kind`, `payload`, `cursor`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The request id (also in the `x-request-id` header), to find the request in the logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Problem {
    /// A problem of type `kind` with `detail` saying what was wrong.
    #[must_use]
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            r#type: kind.uri(),
            title: kind.title().to_owned(),
            status: kind.status().as_u16(),
            detail: detail.into(),
            field: None,
            instance: None,
            request_id: None,
        }
    }

    /// Name the field or parameter that was wrong.
    #[must_use]
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// A bad path or query parameter.
    #[must_use]
    pub fn parameter(field: &str, detail: impl Into<String>) -> Self {
        Self::new(ProblemType::InvalidParameter, detail).with_field(field)
    }

    /// A bad field of the body.
    #[must_use]
    pub fn validation(field: &str, detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Validation, detail).with_field(field)
    }

    /// Nothing at this address.
    #[must_use]
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::NotFound, detail)
    }

    /// The HTTP status.
    #[must_use]
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<Error> for Problem {
    fn from(err: Error) -> Self {
        let kind = match err.kind() {
            ErrorKind::InvalidInput | ErrorKind::Serialization => ProblemType::Validation,
            ErrorKind::NotFound => ProblemType::NotFound,
            ErrorKind::Conflict => ProblemType::Conflict,
            ErrorKind::Backend => ProblemType::BackendUnavailable,
            ErrorKind::LimitExceeded => ProblemType::LimitExceeded,
            ErrorKind::Timeout => ProblemType::Timeout,
            ErrorKind::ShuttingDown => ProblemType::ShuttingDown,
            _ => ProblemType::Internal,
        };
        if kind.status().is_server_error() {
            // The full error, source chain included, goes to the log; the client gets the
            // message, which never carries credentials (backend URLs are not in messages).
            tracing::warn!(error = %err, "request failed");
        }
        let detail = match kind {
            ProblemType::BackendUnavailable => format!(
                "{}; the backend may be restarting, so retry with backoff",
                err.message()
            ),
            _ => err.message().to_owned(),
        };
        let problem = Problem::new(kind, detail);
        match err.field() {
            Some(field) => problem.with_field(field),
            None => problem,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// The error type of every handler: a [`Problem`], answered as `application/problem+json`.
pub type ApiResult<T> = std::result::Result<T, Problem>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_distinct_slug_and_an_error_status() {
        let mut slugs: Vec<&str> = ProblemType::ALL.iter().map(|t| t.slug()).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), ProblemType::ALL.len());
        for t in ProblemType::ALL {
            assert!(t.status().as_u16() >= 400, "{t:?}");
            assert!(t.uri().starts_with(PROBLEM_BASE));
        }
    }

    #[test]
    fn error_kinds_map_to_problem_types_and_keep_the_field() {
        let p = Problem::from(Error::invalid_input("kind", "must not be empty"));
        assert_eq!((p.status, p.field.as_deref()), (422, Some("kind")));
        let p = Problem::from(Error::new(ErrorKind::NotFound, "no job"));
        assert_eq!(p.status, 404);
        let p = Problem::from(Error::new(ErrorKind::Backend, "down"));
        assert_eq!(p.status, 503);
        assert!(p.detail.contains("retry"));
    }
}
