//! `/v1/jobs` and `/v1/queues/stats`: submit, batch submit, get, list, events, cancel, stats.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::extract::ApiJson;
use super::problem::{ApiResult, Problem, ProblemType};
use super::{AppState, Tenant};
use crate::job::{JobEvent, JobId, JobRecord, JobState, Limits, NewJob, Payload};
use crate::orchestrator::Stats;
use crate::state::{CancelOutcome, JobFilter, Order, Page};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/batch", post(submit_batch))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/events", get(events))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/queues/stats", get(stats))
}

/// The lifecycle states of a job.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobStateName {
    /// Waiting to run (now or at its `run_at`).
    Queued,
    /// Held by a worker under a lease.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Failed for good: a permanent error, or attempts spent.
    Dead,
    /// Cancelled before it finished.
    Cancelled,
}

/// A job to submit. Only `kind` is required; unknown fields are rejected.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "kind": "echo",
    "payload": {"message": "hello"},
    "priority": 5,
    "max_attempts": 3,
    "idempotency_key": "order-42-confirmation",
    "tags": ["trial"]
}))]
pub(crate) struct SubmitJob {
    /// Which handler runs it: a registered kind (no whitespace, at most 128 bytes).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\s\u0000-\u001F\u007F-\u009F]+$"
    )]
    kind: String,
    /// Any JSON value (default `null`), at most 1 MiB.
    #[serde(default)]
    #[schema(value_type = Value)]
    payload: Option<Box<RawValue>>,
    /// The queue (default `default`).
    #[serde(default)]
    queue: Option<String>,
    /// Higher runs first among due jobs (default 0).
    #[serde(default)]
    priority: Option<i16>,
    /// Run no earlier than this many milliseconds after submission (at most ten years).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 315_360_000_000_u64)]
    delay_ms: Option<u64>,
    /// Run no earlier than this time (RFC 3339); wins over `delay_ms`.
    #[serde(default)]
    run_at: Option<DateTime<Utc>>,
    /// Attempts before the job is dead-lettered (default: the kind's retry policy), 1 to 1,000.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    max_attempts: Option<u32>,
    /// Deadline of one attempt in milliseconds, 1 to 604,800,000 (a week).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604_800_000_u64)]
    timeout_ms: Option<u64>,
    /// A repeat submission with the same key returns the first job instead of a new one.
    /// The `Idempotency-Key` header does the same when this field is absent.
    #[serde(default)]
    idempotency_key: Option<String>,
    /// Free-form tags (at most 32).
    #[serde(default)]
    tags: Vec<String>,
    /// The tenant the job belongs to (set by the server when the caller is authenticated).
    #[serde(default)]
    tenant: Option<String>,
    /// Run with this registered strategy instead of the kind's default (`direct`,
    /// `inline_retry`, `hedged`, `adaptive`, ...).
    #[serde(default)]
    strategy: Option<String>,
}

/// Jobs to submit in one request: all are validated first, and one invalid job rejects the
/// whole batch (the problem's `field` says which, as `jobs[i].field`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"jobs": [
    {"kind": "echo", "payload": {"n": 1}},
    {"kind": "sleep", "payload": {"ms": 50}}
]}))]
pub(crate) struct SubmitBatch {
    /// The jobs, 1 to the server's batch limit (default 1,000).
    jobs: Vec<SubmitJob>,
}

/// A job as stored: its definition, where it is in its life, and its outcome.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4",
    "kind": "echo",
    "queue": "default",
    "payload": {"message": "hello"},
    "state": "succeeded",
    "priority": 0,
    "attempt": 1,
    "max_attempts": 3,
    "timeout_ms": null,
    "idempotency_key": null,
    "tags": [],
    "tenant": null,
    "strategy": null,
    "run_at": "2025-01-01T12:00:00Z",
    "created_at": "2025-01-01T12:00:00Z",
    "updated_at": "2025-01-01T12:00:00.004Z",
    "started_at": "2025-01-01T12:00:00.001Z",
    "finished_at": "2025-01-01T12:00:00.004Z",
    "result": {"message": "hello"},
    "last_error": null,
    "lease_owner": null,
    "lease_expires_at": null,
    "cancel_requested": false,
    "version": 3
}))]
pub(crate) struct JobView {
    /// The job's id (a UUID v7: ids sort by creation time).
    #[schema(value_type = String, format = Uuid)]
    id: JobId,
    /// Its kind.
    kind: String,
    /// Its queue.
    queue: String,
    /// Its JSON payload.
    #[schema(value_type = Value)]
    payload: Payload,
    /// Where it is in its life.
    #[schema(value_type = JobStateName)]
    state: JobState,
    /// Higher runs first.
    priority: i16,
    /// Attempts started so far (the running one included).
    attempt: u32,
    /// Attempts allowed before it is dead-lettered.
    max_attempts: u32,
    /// Deadline of one attempt, in milliseconds.
    timeout_ms: Option<u64>,
    /// The idempotency key it was submitted with.
    idempotency_key: Option<String>,
    /// Its tags.
    tags: Vec<String>,
    /// Its tenant.
    tenant: Option<String>,
    /// The strategy named at submission.
    strategy: Option<String>,
    /// When it is (or was) due.
    run_at: DateTime<Utc>,
    /// When it was submitted.
    created_at: DateTime<Utc>,
    /// When it last changed.
    updated_at: DateTime<Utc>,
    /// When its latest attempt started.
    started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    finished_at: Option<DateTime<Utc>>,
    /// The handler's result, once it succeeded.
    #[schema(value_type = Value)]
    result: Option<Payload>,
    /// The latest error (`class: message`).
    last_error: Option<String>,
    /// The worker holding its lease, while running.
    #[schema(value_type = Option<String>)]
    lease_owner: Option<crate::WorkerId>,
    /// When that lease runs out.
    lease_expires_at: Option<DateTime<Utc>>,
    /// Whether a cancel was asked for while it ran.
    cancel_requested: bool,
    /// Bumped on every change.
    version: u64,
}

/// The prefix of a tenant-bound caller's idempotency keys: `tenant:<length>:<tenant>:`, which
/// no other tenant's can spell.
fn tenant_key_prefix(tenant: &str) -> String {
    format!("tenant:{}:{tenant}:", tenant.len())
}

impl From<JobRecord> for JobView {
    fn from(r: JobRecord) -> Self {
        Self {
            id: r.id,
            kind: r.kind,
            queue: r.queue,
            payload: r.payload,
            state: r.state,
            priority: r.priority,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            timeout_ms: r
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            idempotency_key: match (r.idempotency_key, r.tenant.as_deref()) {
                (Some(key), Some(tenant)) => Some(
                    key.strip_prefix(&tenant_key_prefix(tenant))
                        .map_or_else(|| key.clone(), str::to_owned),
                ),
                (key, _) => key,
            },
            tags: r.tags,
            tenant: r.tenant,
            strategy: r.strategy,
            run_at: r.run_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            result: r.result,
            last_error: r.last_error,
            lease_owner: r.lease_owner,
            lease_expires_at: r.lease_expires_at,
            cancel_requested: r.cancel_requested,
            version: r.version,
        }
    }
}

/// One submission's answer in a batch.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubmittedView {
    /// The job's id.
    #[schema(value_type = String, format = Uuid)]
    id: JobId,
    /// `false` when an existing job with the same idempotency key was returned instead.
    created: bool,
    /// Where to read the job.
    location: String,
}

/// The answer to a batch submission, one item per job in request order.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"items": [
    {"id": "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4", "created": true, "location": "/v1/jobs/01890a5d-ac96-774b-b9aa-76a1c8c8a1f4"},
    {"id": "01890a5d-ac96-774b-b9aa-76a1c8c8a1f5", "created": true, "location": "/v1/jobs/01890a5d-ac96-774b-b9aa-76a1c8c8a1f5"}
]}))]
pub(crate) struct BatchView {
    /// One answer per submitted job, in order.
    items: Vec<SubmittedView>,
}

/// One page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobPage {
    /// The jobs of this page.
    items: Vec<JobView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Which jobs to list, and which page.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only jobs in this state (`queued`, `running`, `succeeded`, `dead`, `cancelled`).
    #[param(value_type = Option<JobStateName>)]
    state: Option<JobState>,
    /// Only jobs of this kind.
    kind: Option<String>,
    /// Only jobs on this queue.
    queue: Option<String>,
    /// Only jobs of this tenant.
    tenant: Option<String>,
    /// Page size, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page; absent for the first page.
    #[param(value_type = Option<uuid::Uuid>)]
    cursor: Option<String>,
    /// `asc` (oldest first, the default) or `desc`.
    #[param(value_type = Option<String>, pattern = "^(asc|desc)$")]
    order: Option<String>,
}

impl ListParams {
    fn parse(pairs: Vec<(String, String)>) -> ApiResult<Self> {
        let mut params = ListParams::default();
        for (name, value) in pairs {
            match name.as_str() {
                "state" => {
                    params.state = Some(
                        value
                            .parse::<JobState>()
                            .map_err(|e| Problem::parameter("state", e.message()))?,
                    );
                }
                "kind" => params.kind = Some(value),
                "queue" => params.queue = Some(value),
                "tenant" => params.tenant = Some(value),
                "limit" => {
                    let limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|l| (1..=Page::MAX_LIMIT).contains(l))
                        .ok_or_else(|| {
                            Problem::parameter(
                                "limit",
                                format!(
                                    "`{value}` is not a page size; use a whole number from 1 to {}",
                                    Page::MAX_LIMIT
                                ),
                            )
                        })?;
                    params.limit = Some(limit);
                }
                "cursor" => params.cursor = Some(value),
                "order" => match value.as_str() {
                    "asc" | "desc" => params.order = Some(value),
                    _ => {
                        return Err(Problem::parameter(
                            "order",
                            format!("`{value}` is not an order; use `asc` or `desc`"),
                        ));
                    }
                },
                other => {
                    return Err(Problem::parameter(
                        other,
                        format!(
                            "`{other}` is not a parameter of this route; use state, kind, queue, tenant, limit, cursor, order"
                        ),
                    ));
                }
            }
        }
        Ok(params)
    }
}

/// One entry of a job's history.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventView {
    /// When it happened.
    at: DateTime<Utc>,
    /// The state before (`null` for creation).
    #[schema(value_type = Option<JobStateName>)]
    from: Option<JobState>,
    /// The state after.
    #[schema(value_type = JobStateName)]
    to: JobState,
    /// The attempt number at the time.
    attempt: u32,
    /// The worker that made the change, if a worker did.
    #[schema(value_type = Option<String>)]
    worker: Option<crate::WorkerId>,
    /// Why (an error, `cancelled by request`, `lease expired`, ...).
    reason: Option<String>,
}

impl From<JobEvent> for EventView {
    fn from(e: JobEvent) -> Self {
        Self {
            at: e.at,
            from: e.from,
            to: e.to,
            attempt: e.attempt,
            worker: e.worker,
            reason: e.reason,
        }
    }
}

/// A job's history, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"items": [
    {"at": "2025-01-01T12:00:00Z", "from": null, "to": "queued", "attempt": 0, "worker": null, "reason": null},
    {"at": "2025-01-01T12:00:00.001Z", "from": "queued", "to": "running", "attempt": 1, "worker": "jobforge-server/0189…", "reason": null},
    {"at": "2025-01-01T12:00:00.004Z", "from": "running", "to": "succeeded", "attempt": 1, "worker": "jobforge-server/0189…", "reason": null}
]}))]
pub(crate) struct EventList {
    /// The events.
    items: Vec<EventView>,
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CancelOutcomeName {
    /// The job was queued and is now cancelled.
    Cancelled,
    /// The job is running; its handler was asked to stop, and it ends cancelled unless it
    /// finishes first.
    Requested,
    /// The job had already finished; nothing changed.
    AlreadyFinished,
}

/// The answer to a cancel.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4", "outcome": "cancelled", "state": "cancelled"}))]
pub(crate) struct CancelView {
    /// The job.
    #[schema(value_type = String, format = Uuid)]
    id: JobId,
    /// What the cancel did.
    outcome: CancelOutcomeName,
    /// The job's state now.
    #[schema(value_type = JobStateName)]
    state: JobState,
}

/// Delivery counts of one kind.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueueCounts {
    /// Due and waiting.
    ready: u64,
    /// Waiting for their `run_at`.
    delayed: u64,
    /// Leased to a worker.
    in_flight: u64,
    /// Dead-lettered.
    dead: u64,
}

/// Job counts by state.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StateCountsView {
    /// Waiting to run.
    queued: u64,
    /// Held by a worker.
    running: u64,
    /// Finished with a result.
    succeeded: u64,
    /// Failed for good.
    dead: u64,
    /// Cancelled.
    cancelled: u64,
}

impl From<crate::state::StateTally> for StateCountsView {
    fn from(t: crate::state::StateTally) -> Self {
        Self {
            queued: t.queued,
            running: t.running,
            succeeded: t.succeeded,
            dead: t.dead,
            cancelled: t.cancelled,
        }
    }
}

/// What the queue and the state store hold now.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "ready": 12, "delayed": 3, "in_flight": 4, "dead": 1,
    "per_kind": {"echo": {"ready": 12, "delayed": 3, "in_flight": 4, "dead": 1}},
    "jobs": {"queued": 15, "running": 4, "succeeded": 980, "dead": 1, "cancelled": 0},
    "jobs_per_kind": {"echo": {"queued": 15, "running": 4, "succeeded": 980, "dead": 1, "cancelled": 0}}
}))]
pub(crate) struct StatsView {
    /// Due and waiting.
    ready: u64,
    /// Waiting for their `run_at`.
    delayed: u64,
    /// Leased to a worker.
    in_flight: u64,
    /// Dead-lettered.
    dead: u64,
    /// The same delivery counts per kind.
    per_kind: BTreeMap<String, QueueCounts>,
    /// Job records by state (finished ones while retained).
    jobs: StateCountsView,
    /// Job records by state, per kind.
    jobs_per_kind: BTreeMap<String, StateCountsView>,
}

impl From<Stats> for StatsView {
    fn from(s: Stats) -> Self {
        Self {
            ready: s.queue.ready,
            delayed: s.queue.delayed,
            in_flight: s.queue.in_flight,
            dead: s.queue.dead,
            per_kind: s
                .queue
                .per_kind
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        QueueCounts {
                            ready: v.ready,
                            delayed: v.delayed,
                            in_flight: v.in_flight,
                            dead: v.dead,
                        },
                    )
                })
                .collect(),
            jobs: s.jobs.total.into(),
            jobs_per_kind: s
                .jobs
                .per_kind
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect(),
        }
    }
}

fn parse_id(raw: &str) -> ApiResult<JobId> {
    raw.parse::<JobId>().map_err(|_| {
        Problem::parameter(
            "id",
            format!("`{raw}` is not a job id; job ids are UUIDs such as 01890a5d-ac96-774b-b9aa-76a1c8c8a1f4"),
        )
    })
}

/// The job at path parameter `id`, if the id parses, the job exists and the caller's tenant
/// (if any) may see it; another tenant's job answers the same 404 as a missing one.
async fn find_visible(
    state: &AppState,
    tenant: Option<Extension<Tenant>>,
    id: &str,
) -> ApiResult<JobRecord> {
    let id = parse_id(id)?;
    find(state, id, tenant.as_deref()).await
}

/// The job, if it exists and the caller may see it.
async fn find(state: &AppState, id: JobId, tenant: Option<&Tenant>) -> ApiResult<JobRecord> {
    let record = state.shared.orchestrator.get(id).await?;
    match record {
        Some(r) if tenant.is_none_or(|t| r.tenant.as_deref() == Some(t.0.as_str())) => Ok(r),
        _ => Err(Problem::not_found(format!(
            "no job {id}; it may never have existed, or have left retention after it finished"
        ))),
    }
}

fn location(id: JobId) -> String {
    format!("/v1/jobs/{id}")
}

/// Field names as the API spells them.
fn api_field(field: &str) -> &str {
    match field {
        "timeout" => "timeout_ms",
        other => other,
    }
}

/// Build the engine's job from a request body.
fn to_new_job(
    body: SubmitJob,
    tenant: Option<&Tenant>,
    header_key: Option<&str>,
    field_prefix: &str,
) -> ApiResult<NewJob> {
    let mut job = NewJob::new(body.kind);
    if let Some(payload) = body.payload {
        job = job.raw_payload(Payload::from_json(payload.get().to_owned())?);
    }
    if let Some(queue) = body.queue {
        job = job.queue(queue);
    }
    if let Some(priority) = body.priority {
        job = job.priority(priority);
    }
    const MAX_DELAY_MS: u64 = 315_360_000_000;
    const MAX_TIMEOUT_MS: u64 = 604_800_000;
    if body.delay_ms.is_some_and(|d| d > MAX_DELAY_MS) {
        return Err(Problem::validation(
            &format!("{field_prefix}delay_ms"),
            format!("must be at most {MAX_DELAY_MS} (ten years); use `run_at` for a fixed time"),
        ));
    }
    if body.timeout_ms.is_some_and(|t| t > MAX_TIMEOUT_MS) {
        return Err(Problem::validation(
            &format!("{field_prefix}timeout_ms"),
            format!("must be at most {MAX_TIMEOUT_MS} (a week); leave it out for no timeout"),
        ));
    }
    if let Some(delay) = body.delay_ms {
        job = job.delay(Duration::from_millis(delay));
    }
    if let Some(at) = body.run_at {
        job = job.run_at(at);
    }
    if let Some(attempts) = body.max_attempts {
        job = job.max_attempts(attempts);
    }
    if let Some(timeout) = body.timeout_ms {
        job = job.timeout(Duration::from_millis(timeout));
    }
    if let Some(key) = body.idempotency_key.as_deref().or(header_key) {
        // A tenant's keys are its own: stored under the tenant's prefix (shown back without
        // it), so one tenant can neither block another's submissions nor learn its job ids.
        job = match tenant {
            Some(t) => job.idempotency_key(format!("{}{key}", tenant_key_prefix(&t.0))),
            None => job.idempotency_key(key),
        };
    }
    for tag in body.tags {
        job = job.tag(tag);
    }
    match (tenant, body.tenant) {
        (Some(t), Some(asked)) if asked != t.0 => {
            return Err(Problem::validation(
                &format!("{field_prefix}tenant"),
                format!("`{asked}` is not the tenant you are authenticated as; leave `tenant` out"),
            ));
        }
        (Some(t), _) => job = job.tenant(t.0.clone()),
        (None, Some(asked)) => job = job.tenant(asked),
        (None, None) => {}
    }
    if let Some(strategy) = body.strategy {
        job = job.strategy(strategy);
    }
    Ok(job)
}

fn check_kind(state: &AppState, job: &NewJob, field: &str) -> ApiResult<()> {
    if let Some(known) = &state.shared.known_kinds {
        if !known.contains(job.kind()) {
            let names: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err(Problem::new(
                ProblemType::UnknownKind,
                format!(
                    "no handler is registered for kind `{}` on this server; registered kinds: {}",
                    job.kind(),
                    names.join(", ")
                ),
            )
            .with_field(field));
        }
    }
    Ok(())
}

fn header_key(headers: &HeaderMap) -> ApiResult<Option<&str>> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            Problem::parameter("Idempotency-Key", "the header must be visible ASCII text")
        }),
    }
}

/// Submit a job
///
/// Validates the job and queues it. The answer is the stored job, `201 Created` with a
/// `Location` header. With an idempotency key (the `idempotency_key` field or the
/// `Idempotency-Key` header) a repeat returns the original job with `200 OK` and
/// `Idempotent-Replayed: true`, and creates nothing.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    operation_id = "submitJob",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the submission idempotent when the body has no `idempotency_key`.", example = "order-42-confirmation")),
    request_body(content = SubmitJob, description = "The job to submit."),
    responses(
        (status = 201, description = "The job was created and queued.", body = JobView,
            headers(("Location" = String, description = "The job's address, `/v1/jobs/{id}`."))),
        (status = 200, description = "A job with this idempotency key already existed; it is returned and nothing was created.", body = JobView,
            headers(("Location" = String, description = "The existing job's address."), ("Idempotent-Replayed" = String, description = "`true`."))),
    )
)]
pub(crate) async fn submit(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SubmitJob>,
) -> ApiResult<Response> {
    let tenant = tenant.map(|Extension(t)| t);
    let job = to_new_job(body, tenant.as_ref(), header_key(&headers)?, "")?;
    check_kind(&state, &job, "kind")?;
    let submitted = state
        .shared
        .orchestrator
        .submit(job)
        .await
        .map_err(|e| rename_field(Problem::from(e), ""))?;
    state
        .shared
        .metrics
        .submitted(1, u64::from(submitted.created));
    let record = find(&state, submitted.id, tenant.as_ref()).await?;
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(JobView::from(record))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location(submitted.id)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if !submitted.created {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn rename_field(mut problem: Problem, prefix: &str) -> Problem {
    if let Some(field) = problem.field.take() {
        problem.field = Some(format!("{prefix}{}", api_field(&field)));
    }
    problem
}

/// Submit many jobs
///
/// Validates every job first: one invalid job rejects the whole batch and nothing is
/// queued; the problem's `field` names the job and field as `jobs[i].field`. Answers one item
/// per job, in order, with `created: false` for jobs whose idempotency key was already used.
/// `201 Created` when at least one job was created, else `200 OK`.
#[utoipa::path(
    post,
    path = "/v1/jobs/batch",
    tag = "jobs",
    operation_id = "submitJobs",
    request_body(content = SubmitBatch, description = "The jobs to submit."),
    responses(
        (status = 201, description = "At least one job was created.", body = BatchView),
        (status = 200, description = "Every job already existed (idempotency keys); nothing was created.", body = BatchView),
    )
)]
pub(crate) async fn submit_batch(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    ApiJson(body): ApiJson<SubmitBatch>,
) -> ApiResult<Response> {
    let tenant = tenant.map(|Extension(t)| t);
    let max = state.shared.max_batch;
    if body.jobs.is_empty() || body.jobs.len() > max {
        return Err(Problem::validation(
            "jobs",
            format!(
                "{} jobs is not a batch size this server takes; send 1 to {max} jobs",
                body.jobs.len()
            ),
        ));
    }
    let limits = Limits::default();
    let mut jobs = Vec::with_capacity(body.jobs.len());
    for (i, item) in body.jobs.into_iter().enumerate() {
        let prefix = format!("jobs[{i}].");
        let job = to_new_job(item, tenant.as_ref(), None, &prefix)?;
        check_kind(&state, &job, &format!("{prefix}kind"))?;
        // Name the job that breaks the default limits; the engine checks the real ones.
        if let Err(e) = job.validate(&limits) {
            return Err(rename_field(Problem::from(e), &prefix));
        }
        jobs.push(job);
    }
    let submitted = state
        .shared
        .orchestrator
        .submit_batch(jobs)
        .await
        .map_err(|e| rename_field(Problem::from(e), "jobs[]."))?;
    let created = submitted.iter().filter(|s| s.created).count() as u64;
    state
        .shared
        .metrics
        .submitted(submitted.len() as u64, created);
    let status = if created > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let items = submitted
        .into_iter()
        .map(|s| SubmittedView {
            id: s.id,
            created: s.created,
            location: location(s.id),
        })
        .collect();
    Ok((status, Json(BatchView { items })).into_response())
}

/// Get a job
///
/// The job's definition, state, attempts, result or last error. Finished jobs stay readable
/// while the backend retains them (24 hours by default in memory).
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    operation_id = "getJob",
    params(("id" = uuid::Uuid, Path, description = "The job's id.", example = "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4")),
    responses((status = 200, description = "The job.", body = JobView))
)]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(find_visible(&state, tenant, &id).await?.into()))
}

/// List jobs
///
/// Jobs matching every filter given, oldest first (or newest first with `order=desc`), a page
/// at a time. Pass the answer's `next_cursor` as `cursor` for the next page; it is `null` on the
/// last one. Cursors are opaque: keep the filters and order the same while paging.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    operation_id = "listJobs",
    params(ListParams),
    responses((status = 200, description = "One page of jobs.", body = JobPage,
        example = json!({"items": [], "next_cursor": null})))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Json<JobPage>> {
    let params = ListParams::parse(pairs)?;
    let tenant = tenant.map(|Extension(t)| t);
    let mut page = Page::first(params.limit.unwrap_or(100));
    if params.order.as_deref() == Some("desc") {
        page.order = Order::Desc;
    }
    if let Some(cursor) = params.cursor.as_deref() {
        let after = cursor.parse::<JobId>().map_err(|_| {
            Problem::parameter(
                "cursor",
                format!("`{cursor}` is not a cursor; pass the `next_cursor` of the previous page, or leave `cursor` out for the first page"),
            )
        })?;
        page = page.after(after);
    }
    let tenant_filter = match (tenant, params.tenant) {
        (Some(t), Some(asked)) if asked != t.0 => {
            return Err(Problem::parameter(
                "tenant",
                format!("`{asked}` is not the tenant you are authenticated as"),
            ));
        }
        (Some(t), _) => Some(t.0),
        (None, asked) => asked,
    };
    let filter = JobFilter {
        state: params.state,
        kind: params.kind,
        queue: params.queue,
        tenant: tenant_filter,
    };
    let paged = state.shared.orchestrator.list(&filter, &page).await?;
    Ok(Json(JobPage {
        items: paged.items.into_iter().map(JobView::from).collect(),
        next_cursor: paged.next.map(|id| id.to_string()),
    }))
}

/// Get a job's history
///
/// Every transition of the job, oldest first: who made it, when, at which attempt, and why
/// (the error of a failed attempt, `cancelled by request`, a lost lease).
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    tag = "jobs",
    operation_id = "getJobEvents",
    params(("id" = uuid::Uuid, Path, description = "The job's id.", example = "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4")),
    responses((status = 200, description = "The job's history.", body = EventList))
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Json<EventList>> {
    let id = find_visible(&state, tenant, &id).await?.id;
    let events = state.shared.orchestrator.events(id).await?;
    Ok(Json(EventList {
        items: events.into_iter().map(EventView::from).collect(),
    }))
}

/// Cancel a job
///
/// A queued job is cancelled at once (`outcome: cancelled`). A running job's handler is asked
/// to stop through its cancellation token (`outcome: requested`): it ends cancelled unless it
/// finishes first. A finished job is left as it is (`outcome: already_finished`). Repeating a
/// cancel is harmless.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    operation_id = "cancelJob",
    params(("id" = uuid::Uuid, Path, description = "The job's id.", example = "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4")),
    responses((status = 200, description = "What the cancel did, and the job's state now.", body = CancelView))
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Json<CancelView>> {
    let id = find_visible(&state, tenant, &id).await?.id;
    let outcome = state.shared.orchestrator.cancel(id).await?;
    let (outcome, job_state) = match outcome {
        CancelOutcome::Cancelled => (CancelOutcomeName::Cancelled, JobState::Cancelled),
        CancelOutcome::Requested => (CancelOutcomeName::Requested, JobState::Running),
        CancelOutcome::AlreadyFinished(s) => (CancelOutcomeName::AlreadyFinished, s),
    };
    Ok(Json(CancelView {
        id,
        outcome,
        state: job_state,
    }))
}

/// Queue statistics
///
/// Delivery counts (ready, delayed, in flight, dead), overall and per kind, and the job
/// records by state, overall and per kind.
#[utoipa::path(
    get,
    path = "/v1/queues/stats",
    tag = "queues",
    operation_id = "getQueueStats",
    responses((status = 200, description = "The counts now.", body = StatsView))
)]
pub(crate) async fn stats(State(state): State<AppState>) -> ApiResult<Json<StatsView>> {
    Ok(Json(state.shared.orchestrator.stats().await?.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_params_name_the_bad_parameter() {
        let bad = |k: &str, v: &str| {
            ListParams::parse(vec![(k.to_owned(), v.to_owned())])
                .err()
                .and_then(|p| p.field)
        };
        assert_eq!(bad("state", "nope").as_deref(), Some("state"));
        assert_eq!(bad("limit", "0").as_deref(), Some("limit"));
        assert_eq!(bad("limit", "1001").as_deref(), Some("limit"));
        assert_eq!(bad("order", "up").as_deref(), Some("order"));
        assert_eq!(bad("colour", "red").as_deref(), Some("colour"));
        assert_eq!(bad("kind", "echo"), None);
    }

    #[test]
    fn view_keeps_the_payload_text() {
        let record = JobRecord::from_job(NewJob::new("k").payload(&json!({"a": 1})));
        let view = serde_json::to_value(JobView::from(record)).ok();
        assert_eq!(
            view.as_ref().and_then(|v| v.get("payload")).cloned(),
            Some(json!({"a": 1}))
        );
    }
}
