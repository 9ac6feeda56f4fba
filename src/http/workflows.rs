//! `/v1/workflows`: submit a workflow (its graph as JSON), read it (steps, states, edges,
//! progress) and cancel it.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::ApiJson;
use super::jobs::{
    JobStateName, StateCountsView, SubmitJob, check_kind, parse_id, rename_field, to_new_job,
};
use super::problem::{ApiResult, Problem, ProblemType};
use super::{AppState, Tenant};
use crate::ErrorKind;
use crate::job::{JobId, JobState};
use crate::workflow::{MAX_STEPS, OnDependencyFailure, Step, Workflow, WorkflowStatus};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workflows", post(submit))
        .route("/v1/workflows/{id}", get(get_workflow))
        .route("/v1/workflows/{id}/cancel", post(cancel))
}

/// A workflow to submit: a named graph of steps, each a job that runs once every step it
/// names in `after` has succeeded. Unknown fields are rejected.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "order-42",
    "steps": [
        {"name": "charge", "job": {"kind": "charge", "payload": {"cents": 1200}}},
        {"name": "ship", "after": ["charge"], "job": {"kind": "ship"}},
        {"name": "email", "after": ["charge"], "job": {"kind": "email"}},
        {"name": "close", "after": ["ship", "email"], "on_dependency_failure": "run",
         "job": {"kind": "close"}}
    ]
}))]
pub(crate) struct SubmitWorkflow {
    /// A label shown with its steps (1 to 256 bytes; need not be unique).
    name: String,
    /// The steps, in any order, 1 to 100,000.
    steps: Vec<SubmitStep>,
}

/// One step of a workflow.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitStep {
    /// The step's name, unique in the workflow; `after` refers to steps by it.
    name: String,
    /// The names of the steps it runs after (default: none, so it runs at once).
    #[serde(default)]
    after: Vec<String>,
    /// What the step does when a dependency ends dead or cancelled: `cancel` (default),
    /// `skip` (it ends succeeded with no result, and the steps after it go on) or `run`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "cancel")]
    on_dependency_failure: Option<String>,
    /// The job the step runs (as `POST /v1/jobs` takes it; no idempotency key).
    job: SubmitJob,
}

/// A workflow as it stands.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4",
    "name": "order-42",
    "finished": false,
    "counts": {"pending": 1, "queued": 0, "running": 1, "succeeded": 2, "dead": 0, "cancelled": 0},
    "steps": [
        {"id": "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4", "name": "charge", "kind": "charge",
         "state": "succeeded", "attempt": 1, "after": [], "waiting_on": 0,
         "on_dependency_failure": "cancel", "last_error": null},
        {"id": "01890a5d-ac97-7e51-8d0c-1f2a3b4c5d6e", "name": "close", "kind": "close",
         "state": "pending", "attempt": 0, "after": ["ship", "email"], "waiting_on": 1,
         "on_dependency_failure": "run", "last_error": null}
    ]
}))]
pub(crate) struct WorkflowView {
    /// The workflow's id.
    #[schema(value_type = String, format = Uuid)]
    id: JobId,
    /// Its name.
    name: String,
    /// Whether every step has finished.
    finished: bool,
    /// Steps by state: the workflow's progress.
    counts: StateCountsView,
    /// Its steps, by id (the order their jobs were made).
    steps: Vec<WorkflowStepView>,
}

/// One step of a workflow, with its edges.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkflowStepView {
    /// The step's job (`GET /v1/jobs/{id}` has all of it).
    #[schema(value_type = String, format = Uuid)]
    id: JobId,
    /// The step's name.
    name: String,
    /// Its job's kind.
    kind: String,
    /// Where it is.
    #[schema(value_type = JobStateName)]
    state: JobState,
    /// Attempts started.
    attempt: u32,
    /// The names of the steps it runs after.
    after: Vec<String>,
    /// Dependencies it still waits for.
    waiting_on: u32,
    /// `cancel`, `skip` or `run`.
    on_dependency_failure: String,
    /// Its latest error, if any.
    last_error: Option<String>,
}

impl From<WorkflowStatus> for WorkflowView {
    fn from(s: WorkflowStatus) -> Self {
        Self {
            id: s.id,
            name: s.name,
            finished: s.finished,
            counts: s.counts.into(),
            steps: s
                .steps
                .into_iter()
                .map(|step| WorkflowStepView {
                    id: step.id,
                    name: step.name,
                    kind: step.kind,
                    state: step.state,
                    attempt: step.attempt,
                    after: step.after,
                    waiting_on: step.waiting_on,
                    on_dependency_failure: step.on_dependency_failure.as_str().to_owned(),
                    last_error: step.last_error,
                })
                .collect(),
        }
    }
}

/// What a workflow's cancel did.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4", "cancelled": 3}))]
pub(crate) struct WorkflowCancelView {
    /// The workflow.
    #[schema(value_type = String, format = Uuid)]
    id: JobId,
    /// Steps cancelled at once or asked to stop (running ones).
    cancelled: u64,
}

/// The graph of a request as a [`Workflow`]: every step added first, then ordered by name.
fn to_workflow(
    body: SubmitWorkflow,
    tenant: Option<&Tenant>,
    state: &AppState,
) -> ApiResult<Workflow> {
    if body.steps.is_empty() || body.steps.len() > MAX_STEPS {
        return Err(Problem::validation(
            "steps",
            format!(
                "{} steps is not a workflow this server takes; send 1 to {MAX_STEPS}",
                body.steps.len()
            ),
        ));
    }
    let wf = Workflow::new(body.name);
    let mut by_name: HashMap<String, Step> = HashMap::with_capacity(body.steps.len());
    let mut edges = Vec::with_capacity(body.steps.len());
    for (i, item) in body.steps.into_iter().enumerate() {
        let prefix = format!("steps[{i}].job.");
        if item.job.idempotency_key.is_some() {
            return Err(Problem::validation(
                &format!("{prefix}idempotency_key"),
                "a workflow step cannot have its own idempotency key; the workflow is submitted once, as a whole",
            ));
        }
        let job = to_new_job(item.job, tenant, None, &prefix)?;
        check_kind(state, &job, &format!("{prefix}kind"))?;
        let policy = match item.on_dependency_failure.as_deref() {
            None => OnDependencyFailure::default(),
            Some(name) => OnDependencyFailure::parse(name)
                .map_err(|e| rename_field(Problem::from(e), &format!("steps[{i}].")))?,
        };
        let step = wf
            .add(job)
            .name(item.name.clone())
            .on_dependency_failure(policy);
        if by_name.insert(item.name.clone(), step.clone()).is_some() {
            return Err(Problem::validation(
                &format!("steps[{i}].name"),
                format!(
                    "two steps are named `{}`; step names are unique in a workflow",
                    item.name
                ),
            ));
        }
        edges.push((step, item.after));
    }
    for (i, (step, after)) in edges.into_iter().enumerate() {
        let mut deps = Vec::with_capacity(after.len());
        for name in after {
            match by_name.get(&name) {
                Some(dep) => deps.push(dep.clone()),
                None => {
                    return Err(Problem::validation(
                        &format!("steps[{i}].after"),
                        format!("no step is named `{name}` in this workflow"),
                    ));
                }
            }
        }
        step.after(&deps);
    }
    Ok(wf)
}

/// The workflow, if it exists and the caller may see it (a tenant sees only its own).
async fn find(state: &AppState, id: JobId, tenant: Option<&Tenant>) -> ApiResult<WorkflowStatus> {
    let status = state.shared.orchestrator.workflow(id).await?;
    // Every step must be the caller's (a workflow's steps share one tenant when submitted
    // through `submit_workflow`; checking all of them holds for any store's contents).
    let visible = |s: &WorkflowStatus| match tenant {
        None => true,
        Some(t) => s
            .steps
            .iter()
            .all(|step| step.tenant.as_deref() == Some(t.0.as_str())),
    };
    match status {
        Some(s) if visible(&s) => Ok(s),
        _ => Err(Problem::not_found(format!(
            "no workflow {id}; it may never have existed, or its steps have left retention"
        ))),
    }
}

/// The workflow at path parameter `id`, if the id parses, the workflow exists and the
/// caller may see it.
async fn find_visible(
    state: &AppState,
    tenant: Option<Extension<Tenant>>,
    raw: &str,
) -> ApiResult<WorkflowStatus> {
    let id = parse_id(raw)?;
    find(state, id, tenant.map(|Extension(t)| t).as_ref()).await
}

/// Submit a workflow
///
/// Stores every step or none: a cycle, a step named twice, an `after` that names no step, or
/// an invalid job rejects the whole workflow (the problem's `field` says where, as
/// `steps[i].field`). Steps with nothing in `after` are queued at once; the others wait
/// (`pending`) until every step they name has succeeded. Answers the workflow, `201 Created`,
/// with a `Location` header.
#[utoipa::path(
    post,
    path = "/v1/workflows",
    tag = "workflows",
    operation_id = "submitWorkflow",
    request_body(content = SubmitWorkflow, description = "The workflow's graph."),
    responses(
        (status = 201, description = "The workflow was stored; its first steps are queued.", body = WorkflowView,
            headers(("Location" = String, description = "The workflow's address, `/v1/workflows/{id}`."))),
    )
)]
pub(crate) async fn submit(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    ApiJson(body): ApiJson<SubmitWorkflow>,
) -> ApiResult<Response> {
    let tenant = tenant.map(|Extension(t)| t);
    let wf = to_workflow(body, tenant.as_ref(), &state)?;
    let n = wf.len() as u64;
    let id = state
        .shared
        .orchestrator
        .submit_workflow(wf)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::Configuration => {
                Problem::new(ProblemType::WorkflowsNotSupported, e.message())
            }
            _ => rename_field(Problem::from(e), ""),
        })?;
    state.shared.metrics.submitted(n, n);
    let status = find(&state, id, tenant.as_ref()).await?;
    let mut response = (StatusCode::CREATED, Json(WorkflowView::from(status))).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("/v1/workflows/{id}")) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// Get a workflow
///
/// Its steps with their states, edges and errors, and its progress (steps by state).
#[utoipa::path(
    get,
    path = "/v1/workflows/{id}",
    tag = "workflows",
    operation_id = "getWorkflow",
    params(("id" = uuid::Uuid, Path, description = "The workflow's id.", example = "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4")),
    responses((status = 200, description = "The workflow.", body = WorkflowView))
)]
pub(crate) async fn get_workflow(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkflowView>> {
    Ok(Json(find_visible(&state, tenant, &id).await?.into()))
}

/// Cancel a workflow
///
/// Every unfinished step: waiting and queued steps are cancelled at once, running ones are
/// asked to stop through their cancellation token. Repeating it is harmless.
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/cancel",
    tag = "workflows",
    operation_id = "cancelWorkflow",
    params(("id" = uuid::Uuid, Path, description = "The workflow's id.", example = "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4")),
    responses((status = 200, description = "How many steps were cancelled or asked to stop.", body = WorkflowCancelView))
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkflowCancelView>> {
    let id = find_visible(&state, tenant, &id).await?.id;
    let cancelled = state.shared.orchestrator.cancel_workflow(id).await?;
    Ok(Json(WorkflowCancelView { id, cancelled }))
}
