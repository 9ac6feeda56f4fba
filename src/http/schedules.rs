//! `/v1/schedules`: declare, read, pause, resume, trigger and delete schedules
//! ([`crate::schedule`]), and read what each one fired.
//!
//! Schedules are the fleet's, not a tenant's: a caller bound to a tenant is refused them
//! (403 `forbidden`), whatever its scopes.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::extract::ApiJson;
use super::problem::{ApiResult, Problem, ProblemType};
use super::{AppState, Tenant};
use crate::job::{JobId, Payload};
use crate::orchestrator::Schedules;
use crate::schedule::{
    CatchUp, Fire, Overlap, Schedule, ScheduleRecord, ScheduledJob, SchedulerCounts, Timing,
    Upserted,
};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/schedules", get(list))
        .route(
            "/v1/schedules/{id}",
            get(get_schedule).put(put_schedule).delete(delete_schedule),
        )
        .route("/v1/schedules/{id}/pause", post(pause))
        .route("/v1/schedules/{id}/resume", post(resume))
        .route("/v1/schedules/{id}/trigger", post(trigger))
        .route("/v1/schedules/{id}/history", get(history))
}

/// The server's schedules, for a caller that may use them.
fn schedules(state: &AppState, tenant: Option<&Extension<Tenant>>) -> ApiResult<Schedules> {
    if tenant.is_some() {
        return Err(Problem::new(
            ProblemType::Forbidden,
            "schedules belong to the whole fleet, not to a tenant; use a credential bound to no tenant (with the scopes schedules:read or schedules:write)",
        ));
    }
    state.shared.schedules.clone().ok_or_else(|| {
        Problem::new(
            ProblemType::SchedulesNotConfigured,
            "this server keeps no schedules; configure them with `HttpConfig::with_schedules(orchestrator.schedules()?)` on a store that keeps schedules",
        )
    })
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!(
        "no schedule `{id}`; list them with GET /v1/schedules"
    ))
}

fn location(id: &str) -> String {
    /// Everything but the unreserved characters of RFC 3986 is encoded in a path segment.
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    format!(
        "/v1/schedules/{}",
        percent_encoding::utf8_percent_encode(id, SEGMENT)
    )
}

/// A library error about a schedule, with the field named as the API spells it: the path's
/// `id` answers 400 `invalid-parameter`, body fields 422 `validation`.
fn schedule_problem(err: crate::Error) -> Problem {
    let field = err.field().map(|f| match f {
        "schedule.cron" => "cron",
        "schedule.time_zone" => "time_zone",
        "schedule.interval" => "every_ms",
        "schedule.catch_up.max" => "catch_up_max",
        other => other.strip_prefix("schedule.").unwrap_or(other),
    });
    let problem = Problem::from(err);
    match field {
        Some("id") => Problem::parameter("id", problem.detail),
        Some(field) => problem.with_field(field),
        None => problem,
    }
}

/// Catch-up policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CatchUpName {
    /// Fire only ticks that are on time; missed ones are skipped.
    None,
    /// Fire the latest missed tick only.
    Latest,
    /// Fire each missed tick, up to the latest `catch_up_max`.
    All,
}

/// Overlap policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OverlapName {
    /// Submit at every tick.
    Allow,
    /// Skip a tick while the schedule's previous job is queued or running.
    Skip,
}

/// The job a schedule submits at each tick.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduledJobBody {
    /// The job's kind.
    #[schema(min_length = 1, max_length = 128)]
    pub(crate) kind: String,
    /// Any JSON value (default `null`).
    #[serde(default)]
    #[schema(value_type = Value)]
    pub(crate) payload: Option<Box<RawValue>>,
    /// Its queue (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) queue: Option<String>,
    /// Higher runs first among due jobs (default 0).
    #[serde(default)]
    pub(crate) priority: i16,
    /// Attempts before the job is dead-lettered (default: the kind's retry policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub(crate) max_attempts: Option<u32>,
    /// Its tags; the scheduler adds `schedule:<id>`.
    #[serde(default)]
    pub(crate) tags: Vec<String>,
}

/// A schedule to declare: exactly one of `cron` and `every_ms`, and the job. In
/// `jobforge-server --schedules` files each schedule also carries its `id`; over HTTP the
/// path names it (an `id` in the body must then be the same).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "cron": "0 3 * * *",
    "time_zone": "Europe/Paris",
    "job": {"kind": "echo", "payload": {"report": "nightly"}},
    "catch_up": "latest",
    "overlap": "skip"
}))]
pub struct ScheduleBody {
    /// The schedule's id (files only; over HTTP the path's).
    #[serde(default)]
    pub(crate) id: Option<String>,
    /// A cron expression: five fields (minute to day of week), six (seconds first), or a
    /// shortcut (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`).
    #[serde(default)]
    pub(crate) cron: Option<String>,
    /// Or a fixed period in milliseconds (at least 1,000), counted from `start_at` or from
    /// when the schedule was first stored.
    #[serde(default)]
    #[schema(minimum = 1000)]
    pub(crate) every_ms: Option<u64>,
    /// The IANA time zone a `cron` expression is read in (default `UTC`).
    #[serde(default)]
    pub(crate) time_zone: Option<String>,
    /// What each tick submits.
    pub(crate) job: ScheduledJobBody,
    /// Ticks missed while nothing fired them (default `none`).
    #[serde(default)]
    pub(crate) catch_up: Option<CatchUpName>,
    /// With `catch_up: all`, the most missed ticks fired at once (required there, only there).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub(crate) catch_up_max: Option<u32>,
    /// A tick while the previous job is unfinished (default `allow`).
    #[serde(default)]
    pub(crate) overlap: Option<OverlapName>,
    /// No tick before this time.
    #[serde(default)]
    pub(crate) start_at: Option<DateTime<Utc>>,
    /// No tick after this time.
    #[serde(default)]
    pub(crate) end_at: Option<DateTime<Utc>>,
    /// Declared paused (default `false`).
    #[serde(default)]
    pub(crate) paused: bool,
}

impl ScheduleBody {
    /// The schedule this body declares under `id`.
    ///
    /// # Errors
    ///
    /// A 422 problem naming the field: neither or both of `cron` and `every_ms`, `time_zone`
    /// with `every_ms`, `catch_up_max` missing with `catch_up: all` or given without it, an
    /// `id` other than the path's, a payload that is not JSON.
    pub fn into_schedule(self, id: &str) -> ApiResult<Schedule> {
        if self.id.as_deref().is_some_and(|own| own != id) {
            return Err(Problem::validation(
                "id",
                format!(
                    "the body names schedule `{}` but the path names `{id}`; leave `id` out of the body",
                    self.id.as_deref().unwrap_or_default()
                ),
            ));
        }
        let timing = match (self.cron, self.every_ms) {
            (Some(expression), None) => Timing::Cron {
                expression,
                time_zone: self.time_zone.unwrap_or_else(|| "UTC".to_owned()),
            },
            (None, Some(millis)) => {
                if self.time_zone.is_some() {
                    return Err(Problem::validation(
                        "time_zone",
                        "applies to `cron` only; an `every_ms` period is the same in every zone",
                    ));
                }
                Timing::Interval { millis }
            }
            (Some(_), Some(_)) => {
                return Err(Problem::validation(
                    "every_ms",
                    "give either `cron` or `every_ms`, not both",
                ));
            }
            (None, None) => {
                return Err(Problem::validation(
                    "cron",
                    "give `cron` (an expression such as `*/5 * * * *` or `@hourly`) or `every_ms` (a period in milliseconds)",
                ));
            }
        };
        let catch_up = match (
            self.catch_up.unwrap_or(CatchUpName::None),
            self.catch_up_max,
        ) {
            (CatchUpName::All, Some(max)) => CatchUp::All { max },
            (CatchUpName::All, None) => {
                return Err(Problem::validation(
                    "catch_up_max",
                    "required with `catch_up: all`: the most missed ticks fired at once",
                ));
            }
            (_, Some(_)) => {
                return Err(Problem::validation(
                    "catch_up_max",
                    "applies to `catch_up: all` only; leave it out",
                ));
            }
            (CatchUpName::None, None) => CatchUp::None,
            (CatchUpName::Latest, None) => CatchUp::Latest,
        };
        let body = self.job;
        let payload = match body.payload {
            Some(raw) => Payload::from_json(raw.get().to_owned())
                .map_err(|e| schedule_problem(e.in_field("schedule.job.payload")))?,
            None => Payload::null(),
        };
        let mut job = ScheduledJob::new(body.kind)
            .payload(payload)
            .priority(body.priority);
        if let Some(queue) = body.queue {
            job = job.queue(queue);
        }
        if let Some(attempts) = body.max_attempts {
            job = job.max_attempts(attempts);
        }
        for tag in body.tags {
            job = job.tag(tag);
        }
        let mut schedule = Schedule {
            id: id.to_owned(),
            timing,
            job,
            catch_up,
            overlap: match self.overlap.unwrap_or(OverlapName::Allow) {
                OverlapName::Allow => Overlap::Allow,
                OverlapName::Skip => Overlap::Skip,
            },
            start_at: None,
            end_at: None,
            paused: self.paused,
        };
        schedule.start_at = self.start_at;
        schedule.end_at = self.end_at;
        schedule.validate().map_err(schedule_problem)?;
        Ok(schedule)
    }
}

/// Read a list of schedules (a JSON array of [`ScheduleBody`], each with its `id`), as
/// `jobforge-server --schedules` takes them.
///
/// # Errors
///
/// A message naming the schedule (by position and id) and the field that is wrong.
pub fn parse_schedules(json: &str) -> std::result::Result<Vec<Schedule>, String> {
    let bodies: Vec<ScheduleBody> = serde_json::from_str(json).map_err(|e| {
        format!("not a JSON array of schedules ({{\"id\": ..., \"cron\" or \"every_ms\": ..., \"job\": {{\"kind\": ...}}}}): {e}")
    })?;
    let mut seen = std::collections::BTreeSet::new();
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let id = body
                .id
                .clone()
                .ok_or_else(|| format!("schedule [{i}]: `id` is missing"))?;
            if !seen.insert(id.clone()) {
                return Err(format!("schedule [{i}]: `{id}` is declared twice"));
            }
            body.into_schedule(&id).map_err(|p| {
                format!(
                    "schedule [{i}] `{id}`: {} (field `{}`)",
                    p.detail,
                    p.field.as_deref().unwrap_or("?")
                )
            })
        })
        .collect()
}

/// One job a schedule submitted.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FireView {
    /// The tick it was for (for a trigger, when it was triggered).
    tick: DateTime<Utc>,
    /// The job (read it at `/v1/jobs/{job_id}`).
    #[schema(value_type = String, format = Uuid)]
    job_id: JobId,
    /// Submitted by a trigger, not by a tick.
    triggered: bool,
}

impl From<Fire> for FireView {
    fn from(f: Fire) -> Self {
        Self {
            tick: f.tick,
            job_id: f.job_id,
            triggered: f.triggered,
        }
    }
}

/// A schedule as stored: its definition and its progress.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "nightly-report",
    "cron": "0 3 * * *",
    "time_zone": "Europe/Paris",
    "job": {"kind": "echo", "payload": {"report": "nightly"}, "priority": 0, "tags": []},
    "catch_up": "latest",
    "overlap": "skip",
    "paused": false,
    "next_run_at": "2026-12-05T02:00:00Z",
    "version": 3,
    "created_at": "2026-12-01T09:30:00Z",
    "updated_at": "2026-12-04T02:00:00.012Z",
    "fired": 3,
    "skipped": 0,
    "last_fire": {"tick": "2026-12-04T02:00:00Z", "job_id": "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4", "triggered": false}
}))]
pub(crate) struct ScheduleView {
    /// Its id.
    id: String,
    /// Its cron expression (or `every_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    cron: Option<String>,
    /// Its period in milliseconds (or `cron`).
    #[serde(skip_serializing_if = "Option::is_none")]
    every_ms: Option<u64>,
    /// The time zone its `cron` is read in.
    #[serde(skip_serializing_if = "Option::is_none")]
    time_zone: Option<String>,
    /// What each tick submits.
    job: ScheduledJobBody,
    /// Missed ticks.
    catch_up: CatchUpName,
    /// With `catch_up: all`, the most missed ticks fired at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    catch_up_max: Option<u32>,
    /// A tick while the previous job is unfinished.
    overlap: OverlapName,
    /// No tick before this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    start_at: Option<DateTime<Utc>>,
    /// No tick after this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    end_at: Option<DateTime<Utc>>,
    /// Whether it is paused.
    paused: bool,
    /// Its next tick; `null` while paused or once past `end_at`.
    next_run_at: Option<DateTime<Utc>>,
    /// Bumped by every change.
    version: u64,
    /// When it was first stored.
    created_at: DateTime<Utc>,
    /// When it last changed.
    updated_at: DateTime<Utc>,
    /// Ticks fired, by the whole fleet.
    fired: u64,
    /// Ticks skipped (overlap, or missed under its catch-up policy).
    skipped: u64,
    /// Its latest fire (all of them at `/v1/schedules/{id}/history`).
    last_fire: Option<FireView>,
}

impl From<ScheduleRecord> for ScheduleView {
    fn from(mut r: ScheduleRecord) -> Self {
        let s = r.schedule;
        let (cron, time_zone, every_ms) = match s.timing {
            Timing::Cron {
                expression,
                time_zone,
            } => (Some(expression), Some(time_zone), None),
            Timing::Interval { millis } => (None, None, Some(millis)),
        };
        let (catch_up, catch_up_max) = match s.catch_up {
            CatchUp::None => (CatchUpName::None, None),
            CatchUp::Latest => (CatchUpName::Latest, None),
            CatchUp::All { max } => (CatchUpName::All, Some(max)),
        };
        let payload = RawValue::from_string(s.job.payload.as_str().to_owned()).ok();
        Self {
            id: s.id,
            cron,
            every_ms,
            time_zone,
            job: ScheduledJobBody {
                kind: s.job.kind,
                payload,
                queue: s.job.queue,
                priority: s.job.priority,
                max_attempts: s.job.max_attempts,
                tags: s.job.tags,
            },
            catch_up,
            catch_up_max,
            overlap: match s.overlap {
                Overlap::Allow => OverlapName::Allow,
                Overlap::Skip => OverlapName::Skip,
            },
            start_at: s.start_at,
            end_at: s.end_at,
            paused: s.paused,
            next_run_at: r.next_run_at,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
            fired: r.fired,
            skipped: r.skipped,
            last_fire: r.history.pop().map(FireView::from),
        }
    }
}

/// Every schedule, by id.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "items": [{
        "id": "heartbeat", "every_ms": 30000,
        "job": {"kind": "echo", "payload": null, "priority": 0, "tags": []},
        "catch_up": "none", "overlap": "allow", "paused": false,
        "next_run_at": "2026-12-04T10:00:30Z", "version": 41,
        "created_at": "2026-12-04T09:40:00Z", "updated_at": "2026-12-04T10:00:00.004Z",
        "fired": 40, "skipped": 0,
        "last_fire": {"tick": "2026-12-04T10:00:00Z", "job_id": "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4", "triggered": false}
    }],
    "this_process": {"due": 40, "fired": 40, "caught_up": 0, "skipped_overlap": 0, "skipped_missed": 0, "raced": 3}
}))]
pub(crate) struct ScheduleList {
    /// The schedules.
    items: Vec<ScheduleView>,
    /// What this server's own schedulers did since it started (each process counts its own;
    /// `fired` and `skipped` of each schedule are the fleet's).
    this_process: SchedulerCounts,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum UpsertOutcome {
    /// The schedule is new.
    Created,
    /// Its definition changed: its next tick was computed again.
    Updated,
    /// The same definition was stored already: nothing changed.
    Unchanged,
}

/// The answer to an upsert.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "outcome": "created",
    "schedule": {
        "id": "nightly-report", "cron": "0 3 * * *", "time_zone": "Europe/Paris",
        "job": {"kind": "echo", "payload": {"report": "nightly"}, "priority": 0, "tags": []},
        "catch_up": "latest", "overlap": "skip", "paused": false,
        "next_run_at": "2026-12-05T02:00:00Z", "version": 1,
        "created_at": "2026-12-04T09:30:00Z", "updated_at": "2026-12-04T09:30:00Z",
        "fired": 0, "skipped": 0, "last_fire": null
    }
}))]
pub(crate) struct UpsertView {
    /// What the upsert did.
    outcome: UpsertOutcome,
    /// The schedule as stored now.
    schedule: ScheduleView,
}

/// The jobs a schedule submitted.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"items": [
    {"tick": "2026-12-03T02:00:00Z", "job_id": "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4", "triggered": false},
    {"tick": "2026-12-03T11:12:40.118Z", "job_id": "01890a5d-ac96-774b-b9aa-76a1c8c8a1f5", "triggered": true}
]}))]
pub(crate) struct HistoryView {
    /// Its latest fires, oldest first (at most 32).
    items: Vec<FireView>,
}

/// The job a trigger submitted.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "job_id": "01890a5d-ac96-774b-b9aa-76a1c8c8a1f4",
    "location": "/v1/jobs/01890a5d-ac96-774b-b9aa-76a1c8c8a1f4"
}))]
pub(crate) struct TriggeredView {
    /// The job.
    #[schema(value_type = String, format = Uuid)]
    job_id: JobId,
    /// Where to read it.
    location: String,
}

/// List schedules
///
/// Every schedule the server's store keeps, by id, with its next tick and counts; and what
/// this server's own schedulers did since it started.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    tag = "schedules",
    operation_id = "listSchedules",
    responses((status = 200, description = "Every schedule.", body = ScheduleList))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
) -> ApiResult<Json<ScheduleList>> {
    let schedules = schedules(&state, tenant.as_ref())?;
    let items = schedules.list().await?;
    Ok(Json(ScheduleList {
        items: items.into_iter().map(ScheduleView::from).collect(),
        this_process: schedules.counts(),
    }))
}

/// Get a schedule
///
/// Its definition, whether it is paused, its next tick, its version, how many ticks the
/// fleet fired and skipped, and its latest fire.
#[utoipa::path(
    get,
    path = "/v1/schedules/{id}",
    tag = "schedules",
    operation_id = "getSchedule",
    params(("id" = String, Path, description = "The schedule's id.", example = "nightly-report")),
    responses((status = 200, description = "The schedule.", body = ScheduleView))
)]
pub(crate) async fn get_schedule(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    let schedules = schedules(&state, tenant.as_ref())?;
    let record = schedules.get(&id).await?.ok_or_else(|| not_found(&id))?;
    Ok(Json(record.into()))
}

/// Declare a schedule
///
/// Create the schedule, or change its definition (its next tick is computed again; its
/// counts and history stay). The same definition again changes nothing (`outcome:
/// unchanged`), so a deployment can declare its schedules at every start. `201 Created` for
/// a new schedule, else `200 OK`.
#[utoipa::path(
    put,
    path = "/v1/schedules/{id}",
    tag = "schedules",
    operation_id = "putSchedule",
    params(("id" = String, Path, description = "The schedule's id: at most 128 bytes, no whitespace, control characters or `@`.", example = "nightly-report")),
    request_body = ScheduleBody,
    responses(
        (status = 201, description = "Created.", body = UpsertView),
        (status = 200, description = "Updated, or unchanged.", body = UpsertView),
    )
)]
pub(crate) async fn put_schedule(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ScheduleBody>,
) -> ApiResult<Response> {
    let schedules = schedules(&state, tenant.as_ref())?;
    let schedule = body.into_schedule(&id)?;
    if let Some(known) = &state.shared.known_kinds {
        if !known.contains(&schedule.job.kind) {
            return Err(Problem::new(
                ProblemType::UnknownKind,
                format!(
                    "no handler is registered for kind `{}` on this server; registered kinds: {}",
                    schedule.job.kind,
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
            .with_field("job.kind"));
        }
    }
    let (record, upserted) = schedules.upsert(schedule).await.map_err(schedule_problem)?;
    let (status, outcome) = match upserted {
        Upserted::Created => (StatusCode::CREATED, UpsertOutcome::Created),
        Upserted::Updated => (StatusCode::OK, UpsertOutcome::Updated),
        Upserted::Unchanged => (StatusCode::OK, UpsertOutcome::Unchanged),
    };
    let mut response = (
        status,
        Json(UpsertView {
            outcome,
            schedule: record.into(),
        }),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location(&id)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// Delete a schedule
///
/// No tick fires after this; the jobs it submitted stay.
#[utoipa::path(
    delete,
    path = "/v1/schedules/{id}",
    tag = "schedules",
    operation_id = "deleteSchedule",
    params(("id" = String, Path, description = "The schedule's id.", example = "nightly-report")),
    responses((status = 204, description = "Deleted."))
)]
pub(crate) async fn delete_schedule(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let schedules = schedules(&state, tenant.as_ref())?;
    if schedules.delete(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&id))
    }
}

/// Pause a schedule
///
/// No tick fires until it is resumed. Pausing a paused schedule changes nothing.
#[utoipa::path(
    post,
    path = "/v1/schedules/{id}/pause",
    tag = "schedules",
    operation_id = "pauseSchedule",
    params(("id" = String, Path, description = "The schedule's id.", example = "nightly-report")),
    responses((status = 200, description = "The schedule, paused.", body = ScheduleView))
)]
pub(crate) async fn pause(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    let schedules = schedules(&state, tenant.as_ref())?;
    Ok(Json(schedules.pause(&id).await?.into()))
}

/// Resume a schedule
///
/// The next tick after now fires; ticks that came due while it was paused do not.
#[utoipa::path(
    post,
    path = "/v1/schedules/{id}/resume",
    tag = "schedules",
    operation_id = "resumeSchedule",
    params(("id" = String, Path, description = "The schedule's id.", example = "nightly-report")),
    responses((status = 200, description = "The schedule, active.", body = ScheduleView))
)]
pub(crate) async fn resume(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    let schedules = schedules(&state, tenant.as_ref())?;
    Ok(Json(schedules.resume(&id).await?.into()))
}

/// Trigger a schedule now
///
/// Submit the schedule's job now, outside its ticks (paused or not); its next tick is
/// unchanged. `202 Accepted` with the job's id and address.
#[utoipa::path(
    post,
    path = "/v1/schedules/{id}/trigger",
    tag = "schedules",
    operation_id = "triggerSchedule",
    params(("id" = String, Path, description = "The schedule's id.", example = "nightly-report")),
    responses((status = 202, description = "The job submitted.", body = TriggeredView))
)]
pub(crate) async fn trigger(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let schedules = schedules(&state, tenant.as_ref())?;
    let job_id = schedules.trigger(&id).await?;
    state.shared.metrics.submitted(1, 1);
    let location = format!("/v1/jobs/{job_id}");
    let mut response = (
        StatusCode::ACCEPTED,
        Json(TriggeredView {
            job_id,
            location: location.clone(),
        }),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// Get a schedule's fires
///
/// The latest jobs it submitted (at most 32), oldest first; read each at `/v1/jobs/{job_id}`.
#[utoipa::path(
    get,
    path = "/v1/schedules/{id}/history",
    tag = "schedules",
    operation_id = "getScheduleHistory",
    params(("id" = String, Path, description = "The schedule's id.", example = "nightly-report")),
    responses((status = 200, description = "Its latest fires.", body = HistoryView))
)]
pub(crate) async fn history(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Json<HistoryView>> {
    let schedules = schedules(&state, tenant.as_ref())?;
    let fires = schedules.history(&id).await?;
    Ok(Json(HistoryView {
        items: fires.into_iter().map(FireView::from).collect(),
    }))
}

/// The scheduler part of `/metrics`: this process's counts, and the schedules kept.
pub(crate) async fn render_metrics(schedules: &Schedules, out: &mut String) -> crate::Result<()> {
    use std::fmt::Write as _;
    let c = schedules.counts();
    let records = schedules.list().await?;
    let now = Utc::now();
    let paused = records.iter().filter(|r| r.paused()).count();
    let due = records
        .iter()
        .filter(|r| !r.paused() && r.next_run_at.is_some_and(|t| t <= now))
        .count();
    out.push_str("# HELP jobforge_schedules Schedules kept, by state.\n");
    out.push_str("# TYPE jobforge_schedules gauge\n");
    let _ = writeln!(
        out,
        "jobforge_schedules{{state=\"active\"}} {}",
        records.len() - paused
    );
    let _ = writeln!(out, "jobforge_schedules{{state=\"paused\"}} {paused}");
    out.push_str("# HELP jobforge_schedules_due Active schedules whose next tick has come and not yet fired.\n");
    out.push_str("# TYPE jobforge_schedules_due gauge\n");
    let _ = writeln!(out, "jobforge_schedules_due {due}");
    let counters = [
        (
            "jobforge_schedule_due_total",
            "Due schedules this process found (one per schedule per look).",
            c.due,
        ),
        (
            "jobforge_schedule_fired_total",
            "Ticks this process fired.",
            c.fired,
        ),
        (
            "jobforge_schedule_caught_up_total",
            "Of the ticks this process fired, those fired late under a catch-up policy.",
            c.caught_up,
        ),
        (
            "jobforge_schedule_raced_total",
            "Due schedules another process advanced first.",
            c.raced,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {value}");
    }
    out.push_str("# HELP jobforge_schedule_skipped_total Ticks this process skipped, by reason: overlap (the previous job unfinished) or missed (dropped by the catch-up policy).\n");
    out.push_str("# TYPE jobforge_schedule_skipped_total counter\n");
    let _ = writeln!(
        out,
        "jobforge_schedule_skipped_total{{reason=\"overlap\"}} {}",
        c.skipped_overlap
    );
    let _ = writeln!(
        out,
        "jobforge_schedule_skipped_total{{reason=\"missed\"}} {}",
        c.skipped_missed
    );
    Ok(())
}
