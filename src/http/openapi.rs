//! The OpenAPI document, generated from the handlers and their types (utoipa), with the error
//! responses of every operation added from one table, and the Swagger UI at `/docs`.

use axum::Router;
use serde_json::Value;
use utoipa::OpenApi;
use utoipa::openapi::Ref;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa_swagger_ui::SwaggerUi;

use super::problem::{PROBLEM_JSON, Problem, ProblemType};
use super::{jobs, memory, ops, schedules, workflows};

/// The OpenAPI document of the API, as derived from the handlers. Use [`openapi`] for the
/// complete document (error responses included).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "jobforge",
        description = "Background jobs over HTTP: submit, inspect and cancel jobs, read queue statistics, keep memory entries, and read what each kind's execution history says.\n\nEvery error is an RFC 9457 `application/problem+json` document with a stable `type` URI (`https://jobforge.dev/problems/<name>`); errors about input name the `field`. Every response carries the request's `x-request-id`.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        jobs::submit,
        jobs::submit_batch,
        jobs::list,
        jobs::get_job,
        jobs::events,
        jobs::cancel,
        jobs::retry,
        jobs::delete_job,
        jobs::stats,
        jobs::paused_queues,
        jobs::queue_depths,
        jobs::pause_queue,
        jobs::resume_queue,
        workflows::submit,
        workflows::get_workflow,
        workflows::cancel,
        memory::reflection,
        memory::get_entry,
        memory::put_entry,
        memory::delete_entry,
        memory::search,
        schedules::list,
        schedules::get_schedule,
        schedules::put_schedule,
        schedules::delete_schedule,
        schedules::pause,
        schedules::resume,
        schedules::trigger,
        schedules::history,
        ops::health,
        ops::ready,
        ops::metrics,
    ),
    components(schemas(Problem)),
    tags(
        (name = "jobs", description = "Submit, read, list, cancel and retry jobs."),
        (name = "workflows", description = "Jobs that wait for jobs: submit a graph, follow it, cancel it."),
        (name = "queues", description = "What the queue and the state store hold."),
        (name = "kinds", description = "What each kind's execution history says."),
        (name = "memory", description = "Namespaced entries handlers and hosts keep."),
        (name = "schedules", description = "Cron and interval schedules the fleet fires once per tick."),
        (name = "operations", description = "Probes and metrics, outside `/v1`."),
    )
)]
pub struct ApiDoc;

/// Which problems each operation can answer, besides `500 internal`.
fn errors_of(operation_id: &str) -> &'static [ProblemType] {
    use ProblemType::*;
    match operation_id {
        "submitJob" | "submitJobs" => &[
            MalformedJson,
            InvalidParameter,
            PayloadTooLarge,
            UnsupportedMediaType,
            Validation,
            UnknownKind,
            LimitExceeded,
            BackendUnavailable,
            Timeout,
        ],
        "getJob" | "getJobEvents" | "getWorkflow" => {
            &[InvalidParameter, NotFound, BackendUnavailable, Timeout]
        }
        "submitWorkflow" => &[
            MalformedJson,
            InvalidParameter,
            PayloadTooLarge,
            UnsupportedMediaType,
            Validation,
            UnknownKind,
            WorkflowsNotSupported,
            BackendUnavailable,
            Timeout,
        ],
        "cancelWorkflow" => &[InvalidParameter, NotFound, BackendUnavailable, Timeout],
        "retryJob" => &[
            InvalidParameter,
            NotFound,
            Conflict,
            Validation,
            BackendUnavailable,
            Timeout,
        ],
        "deleteJob" => &[
            InvalidParameter,
            NotFound,
            Conflict,
            DeletingNotSupported,
            BackendUnavailable,
            Timeout,
        ],
        "cancelJob" => &[
            InvalidParameter,
            NotFound,
            Conflict,
            BackendUnavailable,
            Timeout,
        ],
        "listJobs" => &[InvalidParameter, BackendUnavailable, Timeout],
        "getQueueStats" => &[BackendUnavailable, Timeout],
        "getPausedQueues" => &[BackendUnavailable, Timeout],
        "getQueueDepths" => &[BackendUnavailable, Timeout],
        "pauseQueue" | "resumeQueue" => &[
            InvalidParameter,
            PausingNotSupported,
            BackendUnavailable,
            Timeout,
        ],
        "getKindReflection" => &[
            InvalidParameter,
            NotFound,
            MemoryNotConfigured,
            BackendUnavailable,
            Timeout,
        ],
        "getMemoryEntry" | "deleteMemoryEntry" => &[
            InvalidParameter,
            NotFound,
            MemoryNotConfigured,
            BackendUnavailable,
            Timeout,
        ],
        "putMemoryEntry" => &[
            MalformedJson,
            InvalidParameter,
            PayloadTooLarge,
            UnsupportedMediaType,
            Validation,
            Conflict,
            LimitExceeded,
            MemoryNotConfigured,
            BackendUnavailable,
            Timeout,
        ],
        "searchMemory" => &[
            InvalidParameter,
            MemoryNotConfigured,
            BackendUnavailable,
            Timeout,
        ],
        "listSchedules" => &[
            Forbidden,
            SchedulesNotConfigured,
            BackendUnavailable,
            Timeout,
        ],
        "getSchedule" | "deleteSchedule" | "pauseSchedule" | "resumeSchedule"
        | "getScheduleHistory" => &[
            NotFound,
            Forbidden,
            SchedulesNotConfigured,
            BackendUnavailable,
            Timeout,
        ],
        "triggerSchedule" => &[
            NotFound,
            Forbidden,
            Validation,
            SchedulesNotConfigured,
            BackendUnavailable,
            Timeout,
        ],
        "putSchedule" => &[
            MalformedJson,
            InvalidParameter,
            PayloadTooLarge,
            UnsupportedMediaType,
            Validation,
            UnknownKind,
            Conflict,
            Forbidden,
            SchedulesNotConfigured,
            BackendUnavailable,
            Timeout,
        ],
        "ready" => &[NotReady],
        "metrics" => &[BackendUnavailable, Timeout],
        _ => &[],
    }
}

/// An example of `kind`, as the API answers it.
fn example_of(kind: ProblemType) -> Value {
    let (detail, field): (&str, Option<&str>) = match kind {
        ProblemType::MalformedJson => (
            "the body is not valid JSON: EOF while parsing an object at line 1 column 9",
            None,
        ),
        ProblemType::UnsupportedMediaType => (
            "send the body as JSON with the header `content-type: application/json`",
            None,
        ),
        ProblemType::Validation => ("invalid `kind`: must not be empty", Some("kind")),
        ProblemType::InvalidParameter => (
            "`not-a-uuid` is not a job id; job ids are UUIDs such as 01890a5d-ac96-774b-b9aa-76a1c8c8a1f4",
            Some("id"),
        ),
        ProblemType::UnknownKind => (
            "no handler is registered for kind `emial.send` on this server; registered kinds: echo, fail_n_times, sleep",
            Some("kind"),
        ),
        ProblemType::NotFound => (
            "no job 01890a5d-ac96-774b-b9aa-76a1c8c8a1f4; it may never have existed, or have left retention after it finished",
            None,
        ),
        ProblemType::MethodNotAllowed => ("this route does not take this method", None),
        ProblemType::Conflict => (
            "the entry changed since it was read; read it again and retry",
            None,
        ),
        ProblemType::PayloadTooLarge => (
            "the body is over this server's limit of 1048576 bytes; send less (large data belongs elsewhere, with a reference in the payload)",
            None,
        ),
        ProblemType::LimitExceeded => (
            "the memory holds its maximum number of entries; delete some or raise the limit",
            None,
        ),
        ProblemType::Timeout => (
            "the request took longer than the server's request timeout; retry, or ask for less",
            None,
        ),
        ProblemType::BackendUnavailable => (
            "state store unreachable; the backend may be restarting, so retry with backoff",
            None,
        ),
        ProblemType::ShuttingDown => ("the server is shutting down", None),
        ProblemType::NotReady => (
            "a backend did not answer: connection refused; check that it runs and is reachable",
            None,
        ),
        ProblemType::MemoryNotConfigured => (
            "this server has no memory configured, so entries and reflection are not served; configure one with `HttpConfig::with_memory`",
            None,
        ),
        ProblemType::SchedulesNotConfigured => (
            "this server keeps no schedules; configure them with `HttpConfig::with_schedules(orchestrator.schedules()?)` on a store that keeps schedules",
            None,
        ),
        ProblemType::WorkflowsNotSupported => (
            "this store does not keep workflows yet; use the in-memory, PostgreSQL or Redis store",
            None,
        ),
        ProblemType::PausingNotSupported => (
            "this store cannot pause queues; use the in-memory, PostgreSQL or Redis store",
            None,
        ),
        ProblemType::DeletingNotSupported => (
            "this store cannot delete jobs before their retention ends; use the in-memory, PostgreSQL or Redis store, or let retention delete them",
            None,
        ),
        ProblemType::Forbidden => (
            "schedules belong to the whole fleet, not to a tenant; use a credential bound to no tenant (with the scopes schedules:read or schedules:write)",
            None,
        ),
        _ => (
            "the server failed while answering; the request id finds it in the server's log",
            None,
        ),
    };
    let mut problem = Problem::new(kind, detail);
    problem.field = field.map(str::to_owned);
    problem.instance = Some("/v1/jobs".to_owned());
    problem.request_id = Some("0b8e3c1e-6f0a-4a53-9d77-3f5f8a1f2b90".to_owned());
    serde_json::to_value(problem).unwrap_or(Value::Null)
}

fn add_errors(operation: &mut Operation) {
    let id = operation.operation_id.clone().unwrap_or_default();
    let mut kinds: Vec<ProblemType> = errors_of(&id).to_vec();
    kinds.push(ProblemType::Internal);
    let mut statuses: Vec<u16> = kinds.iter().map(|k| k.status().as_u16()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    for status in statuses {
        let of_status: Vec<ProblemType> = kinds
            .iter()
            .copied()
            .filter(|k| k.status().as_u16() == status)
            .collect();
        let description = of_status
            .iter()
            .map(|k| format!("`{}`: {}.", k.slug(), k.title()))
            .collect::<Vec<_>>()
            .join(" ");
        let examples = of_status.iter().map(|k| {
            (
                k.slug(),
                ExampleBuilder::new()
                    .summary(k.title())
                    .value(Some(example_of(*k)))
                    .build(),
            )
        });
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .examples_from_iter(examples)
            .build();
        let response = ResponseBuilder::new()
            .description(description)
            .content(PROBLEM_JSON, content)
            .build();
        operation
            .responses
            .responses
            .insert(status.to_string(), response.into());
    }
}

/// A refusal of the security layer (`jobforge::http::security`) as the API answers it.
fn security_problem(slug: &str, title: &str, status: u16, detail: &str) -> Value {
    serde_json::json!({
        "type": format!("https://jobforge.dev/problems/{slug}"),
        "title": title,
        "status": status,
        "detail": detail,
    })
}

/// The answers of the security layer: 401 without valid credentials, 403 without the route's
/// scope (`scoped`), 429 past a rate limit (every route, public ones included).
fn add_security_responses(operation: &mut Operation, authenticated: bool, scoped: bool) {
    let mut answers = vec![(
        429u16,
        "rate-limited",
        "Too Many Requests",
        "`rate-limited`: a rate limit (per client address, or per credential and tier) was reached; wait `Retry-After` seconds. `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` tell the quota.",
        "rate limit reached; retry after 1 s",
    )];
    if authenticated {
        answers.push((
            401,
            "unauthorized",
            "Unauthorized",
            "`unauthorized`: no credentials, or ones that are not valid (unknown, revoked or expired); `WWW-Authenticate` says which scheme to use. Only when the server has authentication configured.",
            "missing credentials: send `Authorization: Bearer <API key or JWT>` or `X-API-Key`",
        ));
    }
    if scoped {
        answers.push((
            403,
            "forbidden",
            "Forbidden",
            "`forbidden`: the credentials are valid but lack the scope this route needs (see docs/AUTHENTICATION.md).",
            "this request needs the scope `jobs:write`",
        ));
    }
    for (status, slug, title, description, detail) in answers {
        let example = ExampleBuilder::new()
            .summary(title)
            .value(Some(security_problem(slug, title, status, detail)))
            .build();
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .examples_from_iter([(slug, example)])
            .build();
        let response = ResponseBuilder::new()
            .description(description)
            .content(PROBLEM_JSON, content)
            .build();
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| response.into());
    }
    if authenticated {
        operation.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("apiKey", Vec::<String>::new()),
        ]);
    }
}

/// The complete OpenAPI document: [`ApiDoc`] with every operation's error responses (each
/// problem type it can answer, with an example), the request id header, and the security
/// schemes (bearer API key or JWT, or `X-API-Key`) with their 401, 403 and 429 answers.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    for (path, item) in doc.paths.paths.iter_mut() {
        // `/health` is public by default; everything else needs credentials when the server
        // has authentication configured, and all of `/v1` and `/metrics` a scope.
        let authenticated = path != "/health";
        let scoped = path.starts_with("/v1/") || path == "/metrics";
        for operation in [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.delete.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            add_errors(operation);
            add_security_responses(operation, authenticated, scoped);
        }
    }
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`jfk_...`, from `jobforge-server keys generate`) or a JWT, as `Authorization: Bearer <credential>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key in the `X-API-Key` header instead of `Authorization`.",
            ))),
        );
    }
    doc
}

/// `/openapi.json` and the Swagger UI at `/docs`.
pub(crate) fn docs_routes() -> Router {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", openapi()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_documented_with_errors() {
        let doc = serde_json::to_value(openapi()).unwrap_or(Value::Null);
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        assert!(paths.len() >= 12);
        for (path, item) in &paths {
            for (method, op) in item.as_object().cloned().unwrap_or_default() {
                let at = format!("{method} {path}");
                assert!(
                    op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                    "{at}: summary"
                );
                assert!(
                    op["description"].as_str().is_some_and(|s| !s.is_empty()),
                    "{at}: description"
                );
                assert!(op["responses"]["500"].is_object(), "{at}: 500");
            }
        }
    }
}
