//! `/v1/jobs` and `/v1/queues/stats`: submit, batch submit, get, list, events, cancel, stats.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};

use super::extract::ApiJson;
use super::problem::{ApiResult, Problem, ProblemType};
use super::{AppState, Tenant};
use crate::job::{JobId, JobRecord, JobState, Limits, NewJob, Payload};
use crate::state::{CancelOutcome, JobFilter, Order, Page};

mod views;

pub(crate) use views::*;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/batch", post(submit_batch))
        .route("/v1/jobs/{id}", get(get_job).delete(delete_job))
        .route("/v1/jobs/{id}/events", get(events))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/retry", post(retry))
        .route("/v1/queues/stats", get(stats))
        .route("/v1/queues/paused", get(paused_queues))
        .route("/v1/queues/depths", get(queue_depths))
        .route("/v1/queues/{queue}/pause", post(pause_queue))
        .route("/v1/queues/{queue}/resume", post(resume_queue))
}

pub(super) fn parse_id(raw: &str) -> ApiResult<JobId> {
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
pub(super) fn to_new_job(
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

pub(super) fn check_kind(state: &AppState, job: &NewJob, field: &str) -> ApiResult<()> {
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

/// The header `name` as text, if sent; a value that is not visible ASCII is a parameter
/// error naming it.
fn text_header<'h>(headers: &'h HeaderMap, name: &'static str) -> ApiResult<Option<&'h str>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| Problem::parameter(name, "the header must be visible ASCII text")),
    }
}

fn header_key(headers: &HeaderMap) -> ApiResult<Option<&str>> {
    text_header(headers, "Idempotency-Key")
}

/// The W3C `traceparent` header, if sent: the jobs submitted take it, so each attempt's span
/// (feature `otel`) joins the caller's trace. Its format is checked with the job's fields
/// (field `traceparent`).
fn header_traceparent(headers: &HeaderMap) -> ApiResult<Option<&str>> {
    text_header(headers, "traceparent")
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
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the submission idempotent when the body has no `idempotency_key`.", example = "order-42-confirmation"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context: the job's attempts are spans of this trace (feature `otel`).", example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ),
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
    let mut job = to_new_job(body, tenant.as_ref(), header_key(&headers)?, "")?;
    if let Some(traceparent) = header_traceparent(&headers)? {
        job = job.traceparent(traceparent);
    }
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
    created_response(&state, submitted, tenant.as_ref()).await
}

/// The answer to a submission (or a retry): `201` with the new job, or `200` with the job
/// an idempotency key already named (`Idempotent-Replayed: true`); `Location` either way.
async fn created_response(
    state: &AppState,
    submitted: crate::Submitted,
    tenant: Option<&Tenant>,
) -> ApiResult<Response> {
    let record = find(state, submitted.id, tenant).await?;
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

pub(super) fn rename_field(mut problem: Problem, prefix: &str) -> Problem {
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
    params(("traceparent" = Option<String>, Header, description = "W3C trace context: every job's attempts are spans of this trace (feature `otel`).", example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")),
    request_body(content = SubmitBatch, description = "The jobs to submit."),
    responses(
        (status = 201, description = "At least one job was created.", body = BatchView),
        (status = 200, description = "Every job already existed (idempotency keys); nothing was created.", body = BatchView),
    )
)]
pub(crate) async fn submit_batch(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SubmitBatch>,
) -> ApiResult<Response> {
    let tenant = tenant.map(|Extension(t)| t);
    let traceparent = header_traceparent(&headers)?;
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
        let mut job = to_new_job(item, tenant.as_ref(), None, &prefix)?;
        if let Some(traceparent) = traceparent {
            job = job.traceparent(traceparent);
        }
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
/// last one. Cursors are opaque: keep the filters and order the same while paging. Each call
/// looks at a bounded number of jobs, so a filter that matches few of them may answer a page
/// shorter than `limit`, even empty, with a cursor: keep following it until it is `null`.
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
        workflow: None,
        tag: params.tag,
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

/// Retry a dead job
///
/// Runs a dead job again as a new job: the same kind, payload, queue, priority, attempts,
/// timeout, tags, tenant and strategy, tagged `retry-of:<id>`. The dead job and its history
/// stay as they are. Repeating the call answers the same copy (`200` and
/// `Idempotent-Replayed: true`). A job that is not dead, or a workflow step, answers `409`.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    tag = "jobs",
    operation_id = "retryJob",
    params(("id" = uuid::Uuid, Path, description = "The dead job's id.", example = "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4")),
    responses(
        (status = 201, description = "The copy was created and queued.", body = JobView,
            headers(("Location" = String, description = "The copy's address, `/v1/jobs/{id}`."))),
        (status = 200, description = "This job was retried before; that copy is returned.", body = JobView,
            headers(("Location" = String, description = "The copy's address."), ("Idempotent-Replayed" = String, description = "`true`."))),
    )
)]
pub(crate) async fn retry(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let tenant = tenant.map(|Extension(t)| t);
    let id = find(&state, parse_id(&id)?, tenant.as_ref()).await?.id;
    let submitted = state.shared.orchestrator.retry(id).await?;
    state
        .shared
        .metrics
        .submitted(1, u64::from(submitted.created));
    created_response(&state, submitted, tenant.as_ref()).await
}

/// Queue depths
///
/// Jobs waiting in each queue: due ones per priority (highest first) and those waiting for
/// their time. A store may stop counting a long lane at its budget (PostgreSQL at 10,000
/// jobs per queue and priority); `at_least` then says the counts are lower bounds. Empty on
/// a store that cannot tell (Redis Streams beside PostgreSQL).
#[utoipa::path(
    get,
    path = "/v1/queues/depths",
    tag = "queues",
    operation_id = "getQueueDepths",
    responses((status = 200, description = "The queues' depths now.", body = QueueDepthsView))
)]
pub(crate) async fn queue_depths(
    State(state): State<AppState>,
) -> ApiResult<Json<QueueDepthsView>> {
    let depths = state.shared.orchestrator.queue_depths().await?;
    Ok(Json(QueueDepthsView {
        queues: depths.into_iter().map(QueueDepthView::from).collect(),
    }))
}

/// Delete a finished job
///
/// Deletes a succeeded, dead or cancelled job and its history now, instead of when its
/// retention ends; its idempotency key is free again. A job that is not finished (cancel it
/// first), or a workflow step (kept as long as its workflow), answers `409`; an unknown id
/// (or one already deleted) `404`.
#[utoipa::path(
    delete,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    operation_id = "deleteJob",
    params(("id" = uuid::Uuid, Path, description = "The finished job's id.", example = "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4")),
    responses((status = 204, description = "The job and its history are gone."))
)]
pub(crate) async fn delete_job(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<axum::http::StatusCode> {
    let id = find_visible(&state, tenant, &id).await?.id;
    match state.shared.orchestrator.delete(id).await {
        Ok(()) => Ok(axum::http::StatusCode::NO_CONTENT),
        Err(e) if e.kind() == crate::ErrorKind::Configuration => {
            Err(Problem::new(ProblemType::DeletingNotSupported, e.message()))
        }
        Err(e) => Err(e.into()),
    }
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

/// Paused queues
///
/// The queues no worker claims from until they are resumed.
#[utoipa::path(
    get,
    path = "/v1/queues/paused",
    tag = "queues",
    operation_id = "getPausedQueues",
    responses((status = 200, description = "The paused queues, by name.", body = PausedView,
        example = json!({"paused": ["reports"]})))
)]
pub(crate) async fn paused_queues(State(state): State<AppState>) -> ApiResult<Json<PausedView>> {
    let paused = state.shared.orchestrator.paused_queues().await?;
    Ok(Json(PausedView {
        paused: paused.into_iter().collect(),
    }))
}

/// Pause a queue
///
/// Fleet-wide: every worker pool on this store stops claiming the queue's jobs within about a
/// second. Jobs can still be submitted to it; jobs already claimed run to their end.
/// Repeating it is harmless (`changed: false`). Scope `admin`.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/pause",
    tag = "queues",
    operation_id = "pauseQueue",
    params(("queue" = String, Path, description = "The queue's name.", example = "reports")),
    responses((status = 200, description = "The queue is paused.", body = QueuePauseView))
)]
pub(crate) async fn pause_queue(
    State(state): State<AppState>,
    Path(queue): Path<String>,
) -> ApiResult<Json<QueuePauseView>> {
    set_paused(&state, queue, true).await
}

/// Resume a queue
///
/// Workers claim the queue's jobs again within about a second. Scope `admin`.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/resume",
    tag = "queues",
    operation_id = "resumeQueue",
    params(("queue" = String, Path, description = "The queue's name.", example = "reports")),
    responses((status = 200, description = "The queue runs.", body = QueuePauseView))
)]
pub(crate) async fn resume_queue(
    State(state): State<AppState>,
    Path(queue): Path<String>,
) -> ApiResult<Json<QueuePauseView>> {
    set_paused(&state, queue, false).await
}

async fn set_paused(
    state: &AppState,
    queue: String,
    paused: bool,
) -> ApiResult<Json<QueuePauseView>> {
    let orchestrator = &state.shared.orchestrator;
    let changed = if paused {
        orchestrator.pause_queue(&queue).await
    } else {
        orchestrator.resume_queue(&queue).await
    }
    .map_err(pause_problem)?;
    Ok(Json(QueuePauseView {
        queue,
        paused,
        changed,
    }))
}

/// A store that cannot pause answers 501; a bad name is a parameter.
pub(crate) fn pause_problem(e: crate::Error) -> Problem {
    match e.kind() {
        crate::ErrorKind::Configuration => {
            Problem::new(ProblemType::PausingNotSupported, e.message())
        }
        crate::ErrorKind::InvalidInput => Problem::parameter("queue", e.message()),
        _ => Problem::from(e),
    }
}
