//! The request and response bodies of `/v1/jobs` and `/v1/queues/stats`, with their OpenAPI
//! schemas.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::http::problem::{ApiResult, Problem};
use crate::job::{JobEvent, JobId, JobRecord, JobState, Payload};
use crate::orchestrator::Stats;
use crate::state::Page;

/// The lifecycle states of a job.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobStateName {
    /// A workflow step waiting for the steps it runs after.
    Pending,
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
    pub(super) kind: String,
    /// Any JSON value (default `null`), at most 1 MiB.
    #[serde(default)]
    #[schema(value_type = Value)]
    pub(super) payload: Option<Box<RawValue>>,
    /// The queue (default `default`).
    #[serde(default)]
    pub(super) queue: Option<String>,
    /// Higher runs first among due jobs (default 0).
    #[serde(default)]
    pub(super) priority: Option<i16>,
    /// Run no earlier than this many milliseconds after submission (at most ten years).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 315_360_000_000_u64)]
    pub(super) delay_ms: Option<u64>,
    /// Run no earlier than this time (RFC 3339); wins over `delay_ms`.
    #[serde(default)]
    pub(super) run_at: Option<DateTime<Utc>>,
    /// Attempts before the job is dead-lettered (default: the kind's retry policy), 1 to 1,000.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    pub(super) max_attempts: Option<u32>,
    /// Deadline of one attempt in milliseconds, 1 to 604,800,000 (a week).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604_800_000_u64)]
    pub(super) timeout_ms: Option<u64>,
    /// A repeat submission with the same key returns the first job instead of a new one.
    /// The `Idempotency-Key` header does the same when this field is absent.
    #[serde(default)]
    pub(crate) idempotency_key: Option<String>,
    /// Free-form tags (at most 32).
    #[serde(default)]
    pub(super) tags: Vec<String>,
    /// The tenant the job belongs to (set by the server when the caller is authenticated).
    #[serde(default)]
    pub(super) tenant: Option<String>,
    /// Run with this registered strategy instead of the kind's default (`direct`,
    /// `inline_retry`, `hedged`, `adaptive`, ...).
    #[serde(default)]
    pub(super) strategy: Option<String>,
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
    pub(super) jobs: Vec<SubmitJob>,
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
    "version": 3,
    "progress": {"fraction": 1.0, "message": "done", "at": "2026-12-05T03:12:44.120Z"},
    "workflow": null
}))]
pub(crate) struct JobView {
    /// The job's id (a UUID v7: ids sort by creation time).
    #[schema(value_type = String, format = Uuid)]
    pub(super) id: JobId,
    /// Its kind.
    pub(super) kind: String,
    /// Its queue.
    pub(super) queue: String,
    /// Its JSON payload.
    #[schema(value_type = Value)]
    pub(super) payload: Payload,
    /// Where it is in its life.
    #[schema(value_type = JobStateName)]
    pub(super) state: JobState,
    /// Higher runs first.
    pub(super) priority: i16,
    /// Attempts started so far (the running one included).
    pub(super) attempt: u32,
    /// Attempts allowed before it is dead-lettered.
    pub(super) max_attempts: u32,
    /// Deadline of one attempt, in milliseconds.
    pub(super) timeout_ms: Option<u64>,
    /// The idempotency key it was submitted with.
    pub(super) idempotency_key: Option<String>,
    /// Its tags.
    pub(super) tags: Vec<String>,
    /// Its tenant.
    pub(super) tenant: Option<String>,
    /// The strategy named at submission.
    pub(super) strategy: Option<String>,
    /// When it is (or was) due.
    pub(super) run_at: DateTime<Utc>,
    /// When it was submitted.
    pub(super) created_at: DateTime<Utc>,
    /// When it last changed.
    pub(super) updated_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub(super) started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    pub(super) finished_at: Option<DateTime<Utc>>,
    /// The handler's result, once it succeeded.
    #[schema(value_type = Value)]
    pub(super) result: Option<Payload>,
    /// The latest error (`class: message`).
    pub(super) last_error: Option<String>,
    /// The worker holding its lease, while running.
    #[schema(value_type = Option<String>)]
    pub(super) lease_owner: Option<crate::WorkerId>,
    /// When that lease runs out.
    pub(super) lease_expires_at: Option<DateTime<Utc>>,
    /// Whether a cancel was asked for while it ran.
    pub(super) cancel_requested: bool,
    /// Bumped on every change.
    pub(super) version: u64,
    /// What its handler last reported of its progress, if it did.
    pub(super) progress: Option<ProgressView>,
    /// Its workflow and step name, if it is a workflow's step.
    pub(super) workflow: Option<StepView>,
}

/// How far a running job has got, as its handler reported it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"fraction": 0.5, "message": "500 of 1,000 rows", "at": "2026-12-05T03:12:44.120Z"}))]
pub(crate) struct ProgressView {
    /// Done so far, from 0 to 1.
    pub(super) fraction: f64,
    /// What it is doing, if it said.
    pub(super) message: Option<String>,
    /// When it reported it.
    pub(super) at: DateTime<Utc>,
}

/// Where a job stands in its workflow.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4", "name": "order-42", "step": "charge"}))]
pub(crate) struct StepView {
    /// The workflow's id (`GET /v1/workflows/{id}`).
    #[schema(value_type = String, format = Uuid)]
    pub(super) id: JobId,
    /// The workflow's name.
    pub(super) name: String,
    /// The step's name.
    pub(super) step: String,
}

/// The prefix of a tenant-bound caller's idempotency keys: `tenant:<length>:<tenant>:`, which
/// no other tenant's can spell.
pub(super) fn tenant_key_prefix(tenant: &str) -> String {
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
            timeout_ms: r.timeout.map(crate::util::dur_millis),
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
            progress: r.progress.map(|p| ProgressView {
                fraction: p.fraction,
                message: p.message,
                at: p.at,
            }),
            workflow: r.step.map(|s| StepView {
                id: s.workflow,
                name: s.workflow_name,
                step: s.name,
            }),
        }
    }
}

/// One submission's answer in a batch.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubmittedView {
    /// The job's id.
    #[schema(value_type = String, format = Uuid)]
    pub(super) id: JobId,
    /// `false` when an existing job with the same idempotency key was returned instead.
    pub(super) created: bool,
    /// Where to read the job.
    pub(super) location: String,
}

/// The answer to a batch submission, one item per job in request order.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"items": [
    {"id": "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4", "created": true, "location": "/v1/jobs/01890a5d-ac96-774b-b9aa-76a1c8c8a1f4"},
    {"id": "01890a5d-ac96-774b-b9aa-76a1c8c8a1f5", "created": true, "location": "/v1/jobs/01890a5d-ac96-774b-b9aa-76a1c8c8a1f5"}
]}))]
pub(crate) struct BatchView {
    /// One answer per submitted job, in order.
    pub(super) items: Vec<SubmittedView>,
}

/// One page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobPage {
    /// The jobs of this page.
    pub(super) items: Vec<JobView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub(super) next_cursor: Option<String>,
}

/// Which jobs to list, and which page.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only jobs in this state (`pending`, `queued`, `running`, `succeeded`, `dead`,
    /// `cancelled`).
    #[param(value_type = Option<JobStateName>)]
    pub(super) state: Option<JobState>,
    /// Only jobs of this kind.
    pub(super) kind: Option<String>,
    /// Only jobs on this queue.
    pub(super) queue: Option<String>,
    /// Only jobs of this tenant.
    pub(super) tenant: Option<String>,
    /// Only jobs carrying this tag.
    pub(super) tag: Option<String>,
    /// Page size, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub(super) limit: Option<usize>,
    /// The `next_cursor` of the previous page; absent for the first page.
    #[param(value_type = Option<uuid::Uuid>)]
    pub(super) cursor: Option<String>,
    /// `asc` (oldest first, the default) or `desc`.
    #[param(value_type = Option<String>, pattern = "^(asc|desc)$")]
    pub(super) order: Option<String>,
}

impl ListParams {
    pub(super) fn parse(pairs: Vec<(String, String)>) -> ApiResult<Self> {
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
                "tag" => params.tag = Some(value),
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
    pub(super) at: DateTime<Utc>,
    /// The state before (`null` for creation).
    #[schema(value_type = Option<JobStateName>)]
    pub(super) from: Option<JobState>,
    /// The state after.
    #[schema(value_type = JobStateName)]
    pub(super) to: JobState,
    /// The attempt number at the time.
    pub(super) attempt: u32,
    /// The worker that made the change, if a worker did.
    #[schema(value_type = Option<String>)]
    pub(super) worker: Option<crate::WorkerId>,
    /// Why (an error, `cancelled by request`, `lease expired`, ...).
    pub(super) reason: Option<String>,
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
    pub(super) items: Vec<EventView>,
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
    pub(super) id: JobId,
    /// What the cancel did.
    pub(super) outcome: CancelOutcomeName,
    /// The job's state now.
    #[schema(value_type = JobStateName)]
    pub(super) state: JobState,
}

/// Delivery counts of one kind.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueueCounts {
    /// Due and waiting.
    pub(super) ready: u64,
    /// Waiting for their `run_at`.
    pub(super) delayed: u64,
    /// Leased to a worker.
    pub(super) in_flight: u64,
    /// Dead-lettered.
    pub(super) dead: u64,
}

/// Job counts by state.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StateCountsView {
    /// Workflow steps waiting for their dependencies.
    pub(super) pending: u64,
    /// Waiting to run.
    pub(super) queued: u64,
    /// Held by a worker.
    pub(super) running: u64,
    /// Finished with a result.
    pub(super) succeeded: u64,
    /// Failed for good.
    pub(super) dead: u64,
    /// Cancelled.
    pub(super) cancelled: u64,
}

impl From<crate::state::StateTally> for StateCountsView {
    fn from(t: crate::state::StateTally) -> Self {
        Self {
            pending: t.pending,
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
    "jobs": {"pending": 0, "queued": 15, "running": 4, "succeeded": 980, "dead": 1, "cancelled": 0},
    "jobs_per_kind": {"echo": {"pending": 0, "queued": 15, "running": 4, "succeeded": 980, "dead": 1, "cancelled": 0}},
    "retried": 37
}))]
pub(crate) struct StatsView {
    /// Due and waiting.
    pub(super) ready: u64,
    /// Waiting for their `run_at`.
    pub(super) delayed: u64,
    /// Leased to a worker.
    pub(super) in_flight: u64,
    /// Dead-lettered.
    pub(super) dead: u64,
    /// The same delivery counts per kind.
    pub(super) per_kind: BTreeMap<String, QueueCounts>,
    /// Job records by state (finished ones while retained).
    pub(super) jobs: StateCountsView,
    /// Job records by state, per kind.
    pub(super) jobs_per_kind: BTreeMap<String, StateCountsView>,
    /// Attempts that failed and were queued for another, since the store began: a running
    /// total, so two readings give the retries between them.
    pub(super) retried: u64,
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
            retried: s.jobs.retried,
            jobs_per_kind: s
                .jobs
                .per_kind
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect(),
        }
    }
}

/// Jobs waiting in one queue.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "queue": "default", "ready": [{"priority": 10, "ready": 3}, {"priority": 0, "ready": 120}],
    "delayed": 7, "at_least": false
}))]
pub(crate) struct QueueDepthView {
    /// The queue.
    pub(super) queue: String,
    /// Due jobs per priority, highest priority first.
    pub(super) ready: Vec<PriorityDepthView>,
    /// Jobs waiting for their time, all priorities.
    pub(super) delayed: u64,
    /// The store stopped counting at its budget: the counts are at least these.
    pub(super) at_least: bool,
}

/// Due jobs of one priority.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PriorityDepthView {
    /// The priority.
    pub(super) priority: i16,
    /// How many are due.
    pub(super) ready: u64,
}

impl From<crate::queue::QueueDepth> for QueueDepthView {
    fn from(d: crate::queue::QueueDepth) -> Self {
        Self {
            queue: d.queue,
            ready: d
                .ready
                .into_iter()
                .map(|p| PriorityDepthView {
                    priority: p.priority,
                    ready: p.ready,
                })
                .collect(),
            delayed: d.delayed,
            at_least: d.at_least,
        }
    }
}

/// The queues' depths, by name.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"queues": [{
    "queue": "default", "ready": [{"priority": 10, "ready": 3}, {"priority": 0, "ready": 120}],
    "delayed": 7, "at_least": false
}]}))]
pub(crate) struct QueueDepthsView {
    /// One entry per queue with jobs waiting.
    pub(super) queues: Vec<QueueDepthView>,
}

/// The paused queues.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PausedView {
    /// Their names, in order.
    pub(super) paused: Vec<String>,
}

/// What a pause or resume did.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"queue": "reports", "paused": true, "changed": true}))]
pub(crate) struct QueuePauseView {
    /// The queue.
    pub(super) queue: String,
    /// Whether it is paused now.
    pub(super) paused: bool,
    /// Whether this call changed that (`false` when it already was).
    pub(super) changed: bool,
}
