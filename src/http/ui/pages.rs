//! The console's pages and actions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::render::{self, Section, layout};
use super::{Ctx, page, same_origin, see_other, svg};
use crate::http::AppState;
use crate::job::{JobId, JobRecord, JobState};
use crate::state::{CancelOutcome, JobFilter, Order, Page, StateTally};
use crate::{Error, ErrorKind};

/// Rows per page of the jobs list.
const LIST_PAGE: usize = 50;
/// Jobs of a kind the latency histogram is drawn from.
const HISTOGRAM_JOBS: usize = 500;
/// Most kinds `/ui/live` reports on (the overview's table shows every kind on a reload).
const LIVE_KINDS: usize = 200;
/// Running jobs looked at to find the workers holding them.
const WORKER_SCAN: usize = 1_000;

fn not_found(ctx: &Ctx, section: Section, what: &str) -> Response {
    page(
        StatusCode::NOT_FOUND,
        layout(
            ctx,
            section,
            "Not found",
            &html! { (render::heading("Not found", None)) p.error { (what) } },
        ),
    )
}

fn failed(ctx: &Ctx, section: Section, what: &str, err: &Error) -> Response {
    let status = match err.kind() {
        ErrorKind::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Configuration => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    page(
        status,
        layout(ctx, section, "Error", &render::failure(what, err)),
    )
}

/// The job, if it exists and the caller's tenant may see it.
async fn visible(state: &AppState, ctx: &Ctx, id: JobId) -> crate::Result<Option<JobRecord>> {
    Ok(state
        .shared
        .orchestrator
        .get(id)
        .await?
        .filter(|r| ctx.tenant.is_none() || r.tenant == ctx.tenant))
}

fn tally_rows(t: &StateTally) -> [(JobState, u64); 6] {
    JobState::ALL.map(|s| (s, t.get(s)))
}

/// `GET /ui`: counts by state and kind, live charts, workers, breakers.
pub(crate) async fn overview(ctx: Ctx, State(state): State<AppState>) -> Response {
    let stats = match state.shared.orchestrator.stats().await {
        Ok(s) => s,
        Err(e) => return failed(&ctx, Section::Overview, "the counts", &e),
    };
    let running = state
        .shared
        .orchestrator
        .list(
            &JobFilter {
                state: Some(JobState::Running),
                tenant: ctx.tenant.clone(),
                ..JobFilter::default()
            },
            &Page::first(WORKER_SCAN),
        )
        .await;
    let mut workers: BTreeMap<String, u64> = BTreeMap::new();
    if let Ok(running) = &running {
        for r in &running.items {
            if let Some(w) = &r.lease_owner {
                *workers.entry(w.to_string()).or_default() += 1;
            }
        }
    }
    let breakers: Vec<_> = state
        .shared
        .breakers
        .iter()
        .flat_map(|r| r.snapshot_all())
        .collect();
    let base = &ctx.base;
    let body = html! {
        (render::heading("Overview", Some("Live: the counts and charts refresh every 2 seconds.")))
        div.grid {
            section.panel {
                h2 { "Jobs by state" }
                table #state-counts {
                    tbody {
                        @for (s, n) in tally_rows(&stats.jobs.total) {
                            tr {
                                th { a href={ (base) "/jobs?state=" (s.as_str()) } { (render::state_badge(s)) } }
                                td.num data-count=(s.as_str()) { (n) }
                            }
                        }
                    }
                }
            }
            section.panel {
                h2 { "Jobs per second" }
                svg #chart-throughput.chart viewBox="0 0 300 120" preserveAspectRatio="none" role="img"
                    aria-label="jobs succeeded, failed for good, retried and cancelled per second" {}
                p.legend {
                    span.key-succeeded { "succeeded" } " " span.key-dead { "failed (dead)" } " "
                    span.key-retried { "retried" } " " span.key-cancelled { "cancelled" }
                }
            }
            section.panel {
                h2 { "Queue depth" }
                svg #chart-depth.chart viewBox="0 0 300 120" preserveAspectRatio="none" role="img"
                    aria-label="queued and running jobs" {}
                p.legend { span.key-queued { "queued" } " " span.key-running { "running" } }
            }
        }
        section.panel {
            h2 { "By kind" }
            div.scroll {
                table #kind-counts {
                    thead { tr { th { "kind" } @for s in JobState::ALL { th.num { (s.as_str()) } } } }
                    tbody {
                        @for (kind, t) in &stats.jobs.per_kind {
                            tr data-kind=(kind) {
                                td { a href={ (base) "/kinds/" (urlencode(kind)) } { (kind) } }
                                @for (s, n) in tally_rows(t) { td.num data-kind-count=(s.as_str()) { (n) } }
                            }
                        }
                    }
                }
            }
            @if stats.jobs.per_kind.is_empty() { p.empty { "No jobs yet." } }
        }
        div.grid {
            section.panel {
                h2 { "Workers holding jobs" }
                @match &running {
                    Ok(_) if workers.is_empty() => p.empty { "No job is running." },
                    Ok(page) => {
                        table #workers {
                            thead { tr { th { "worker" } th.num { "running" } } }
                            tbody { @for (w, n) in &workers { tr { td.mono { (w) } td.num { (n) } } } }
                        }
                        @if page.next.is_some() { p.hint { "From the first " (WORKER_SCAN) " running jobs." } }
                    },
                    Err(e) => (render::failure("the running jobs", e)),
                }
            }
            section.panel {
                h2 { "Circuit breakers" }
                @if breakers.is_empty() {
                    p.empty { "No breaker has seen a call (or none is configured)." }
                } @else {
                    table #breakers {
                        thead { tr { th { "key" } th { "state" } th.num { "calls" } th.num { "failure rate" } } }
                        tbody {
                            @for b in &breakers {
                                tr {
                                    td { (b.key) }
                                    td { span class={ "breaker breaker-" (format!("{:?}", b.state).to_lowercase()) } { (format!("{:?}", b.state)) } }
                                    td.num { (b.calls) }
                                    td.num { (b.failure_rate.map_or_else(|| "–".to_owned(), |r| format!("{r:.1}%"))) }
                                }
                            }
                        }
                    }
                }
            }
            section.panel {
                h2 { "Delivery" }
                table #delivery {
                    tbody {
                        tr { th { "ready" } td.num data-queue-count="ready" { (stats.queue.ready) } }
                        tr { th { "delayed" } td.num data-queue-count="delayed" { (stats.queue.delayed) } }
                        tr { th { "in flight" } td.num data-queue-count="in_flight" { (stats.queue.in_flight) } }
                        tr { th { "dead-lettered" } td.num data-queue-count="dead" { (stats.queue.dead) } }
                    }
                }
            }
        }
    };
    page(
        StatusCode::OK,
        layout(&ctx, Section::Overview, "Overview", &body),
    )
}

/// What `/ui/live` answers: the counts the overview's script draws.
#[derive(Serialize)]
pub(crate) struct Live {
    /// Milliseconds since the epoch, on the server's clock.
    at: i64,
    counts: StateTally,
    /// Attempts retried since the store began (a running total: the chart draws its rate).
    retried: u64,
    /// Per kind, for the overview's table (at most [`LIVE_KINDS`] kinds).
    per_kind: BTreeMap<String, StateTally>,
    ready: u64,
    delayed: u64,
    in_flight: u64,
}

/// `GET /ui/live`: the counts now, for the overview's charts.
pub(crate) async fn live(State(state): State<AppState>) -> Response {
    match state.shared.orchestrator.stats().await {
        Ok(stats) => Json(Live {
            at: chrono::Utc::now().timestamp_millis(),
            counts: stats.jobs.total,
            retried: stats.jobs.retried,
            per_kind: stats.jobs.per_kind.into_iter().take(LIVE_KINDS).collect(),
            ready: stats.queue.ready,
            delayed: stats.queue.delayed,
            in_flight: stats.queue.in_flight,
        })
        .into_response(),
        Err(e) => crate::http::Problem::from(e).into_response(),
    }
}

/// The jobs list's query: every field optional; empty means no filter.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    order: Option<String>,
    /// Created at or after (UTC, `YYYY-MM-DDTHH:MM[:SS]` or RFC 3339).
    #[serde(default)]
    from: Option<String>,
    /// Created before (UTC).
    #[serde(default)]
    to: Option<String>,
    /// What a bulk action just did, to show above the list.
    #[serde(default)]
    done: Option<String>,
}

fn nonempty(v: Option<&String>) -> Option<&str> {
    v.map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// A window of creation times. Job ids are UUID v7, which carry their creation millisecond
/// and sort by it, so the window is a range of ids: every store's keyset listing serves it
/// without an index of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Window {
    /// Created at or after this millisecond since the epoch.
    from_ms: Option<u64>,
    /// Created before this one.
    to_ms: Option<u64>,
}

fn parse_time(field: &'static str, raw: &str) -> crate::Result<u64> {
    let at = chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M"))
                .map(|t| t.and_utc())
        })
        .map_err(|_| {
            Error::invalid_input(
                field,
                format!("`{raw}` is not a time; use 2026-12-05T14:30 (UTC) or RFC 3339"),
            )
        })?;
    u64::try_from(at.timestamp_millis())
        .map_err(|_| Error::invalid_input(field, format!("`{raw}` is before 1970")))
}

/// The creation millisecond an id carries.
fn id_ms(id: JobId) -> u64 {
    id.as_uuid().get_timestamp().map_or(0, |t| {
        let (secs, nanos) = t.to_unix();
        secs.saturating_mul(1_000)
            .saturating_add(u64::from(nanos / 1_000_000))
    })
}

/// The smallest (`fill` 0x00) or largest (0xFF) id of a millisecond.
fn edge_id(ms: u64, fill: u8) -> JobId {
    JobId::from_uuid(uuid::Builder::from_unix_timestamp_millis(ms, &[fill; 10]).into_uuid())
}

impl Window {
    fn parse(from: Option<&String>, to: Option<&String>) -> crate::Result<Self> {
        let w = Window {
            from_ms: nonempty(from).map(|f| parse_time("from", f)).transpose()?,
            to_ms: nonempty(to).map(|t| parse_time("to", t)).transpose()?,
        };
        if let (Some(f), Some(t)) = (w.from_ms, w.to_ms) {
            if f >= t {
                return Err(Error::invalid_input("to", "`to` must be after `from`"));
            }
        }
        Ok(w)
    }

    /// Where a walk in `order` starts when no cursor is given.
    fn start(self, order: Order) -> Option<JobId> {
        match order {
            Order::Desc => self.to_ms.map(|t| edge_id(t, 0x00)),
            Order::Asc => self.from_ms.map(|f| edge_id(f.saturating_sub(1), 0xFF)),
        }
    }

    fn contains(self, id: JobId) -> bool {
        let ms = id_ms(id);
        self.from_ms.is_none_or(|f| ms >= f) && self.to_ms.is_none_or(|t| ms < t)
    }

    /// Keep the items inside the window (a walk past its end ends there).
    fn cut(self, found: &mut crate::state::Paged<JobRecord>) {
        let before = found.items.len();
        found.items.retain(|r| self.contains(r.id));
        if found.items.len() < before {
            found.next = None;
        }
    }
}

impl ListQuery {
    fn window(&self) -> crate::Result<Window> {
        Window::parse(self.from.as_ref(), self.to.as_ref())
    }

    /// The filter, the first page and the time window this query asks for.
    fn filter_and_page(&self, tenant: Option<String>) -> crate::Result<(JobFilter, Page, Window)> {
        let state = nonempty(self.state.as_ref())
            .map(str::parse::<JobState>)
            .transpose()?;
        let after = nonempty(self.after.as_ref())
            .map(|a| {
                a.parse::<JobId>().map_err(|_| {
                    Error::invalid_input("after", format!("`{a}` is not a job id (a UUID)"))
                })
            })
            .transpose()?;
        let order = match nonempty(self.order.as_ref()) {
            None | Some("desc") => Order::Desc,
            Some("asc") => Order::Asc,
            Some(other) => {
                return Err(Error::invalid_input(
                    "order",
                    format!("`{other}` is not an order; use asc or desc"),
                ));
            }
        };
        let window = self.window()?;
        let after = after.or(window.start(order));
        Ok((
            JobFilter {
                state,
                kind: nonempty(self.kind.as_ref()).map(str::to_owned),
                queue: nonempty(self.queue.as_ref()).map(str::to_owned),
                tenant,
                workflow: None,
                tag: nonempty(self.tag.as_ref()).map(str::to_owned),
            },
            Page {
                after,
                limit: LIST_PAGE,
                order,
            },
            window,
        ))
    }

    /// This query's link with `after` set to `cursor`.
    fn next_link(&self, base: &str, cursor: JobId) -> String {
        format!("{base}/jobs?{}after={cursor}", self.query_prefix())
    }

    /// The filters as `k=v&` pairs.
    fn query_prefix(&self) -> String {
        let mut q = String::new();
        for (k, v) in [
            ("state", &self.state),
            ("kind", &self.kind),
            ("queue", &self.queue),
            ("tag", &self.tag),
            ("order", &self.order),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if let Some(v) = nonempty(v.as_ref()) {
                q.push_str(k);
                q.push('=');
                q.push_str(&urlencode(v));
                q.push('&');
            }
        }
        q
    }
}

pub(crate) fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn jobs_table(ctx: &Ctx, items: &[JobRecord], table_id: &str) -> Markup {
    let base = &ctx.base;
    html! {
        div.scroll {
            table id=(table_id) {
                thead { tr { th { "job" } th { "kind" } th { "queue" } th { "state" } th.num { "attempt" } th { "created" } th { "updated" } } }
                tbody {
                    @for r in items {
                        tr.job data-id=(r.id) data-kind=(r.kind) data-state=(r.state.as_str()) {
                            td.mono { a.job-link href={ (base) "/jobs/" (r.id) } { (short_id(r.id)) } }
                            td { (r.kind) }
                            td { (r.queue) }
                            td { (render::state_badge(r.state)) }
                            td.num { (r.attempt) "/" (r.max_attempts) }
                            td { (render::time(r.created_at)) }
                            td { (render::time(r.updated_at)) }
                        }
                    }
                }
            }
        }
    }
}

/// The id's last 12 hex digits: enough to tell jobs apart on a page (the title has it all).
fn short_id(id: JobId) -> String {
    let s = id.to_string();
    let tail = s.len().saturating_sub(12);
    format!("…{}", s.get(tail..).unwrap_or(&s))
}

/// `GET /ui/jobs`: the filtered list, newest first, a page at a time.
pub(crate) async fn jobs(
    ctx: Ctx,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Response {
    let base = &ctx.base;
    let (filter, page_req, window) = match q.filter_and_page(ctx.tenant.clone()) {
        Ok(found) => found,
        Err(e) => return failed(&ctx, Section::Jobs, "the filter", &e),
    };
    let listed = fill_page(&state, &filter, page_req.clone(), window).await;
    let selected = filter.state.map(JobState::as_str);
    let body = html! {
        (render::heading("Jobs", Some("Newest first. Filters combine.")))
        form #filter.filter method="get" action={ (base) "/jobs" } {
            label { "state "
                select name="state" {
                    option value="" selected[selected.is_none()] { "any" }
                    @for s in JobState::ALL {
                        option value=(s.as_str()) selected[selected == Some(s.as_str())] { (s.as_str()) }
                    }
                }
            }
            label { "kind " input name="kind" value=(filter.kind.as_deref().unwrap_or_default()) placeholder="any"; }
            label { "queue " input name="queue" value=(filter.queue.as_deref().unwrap_or_default()) placeholder="any"; }
            label { "tag " input name="tag" value=(filter.tag.as_deref().unwrap_or_default()) placeholder="any"; }
            label { "created from (UTC) " input type="datetime-local" name="from" value=(q.from.as_deref().unwrap_or_default()); }
            label { "to " input type="datetime-local" name="to" value=(q.to.as_deref().unwrap_or_default()); }
            label { "order "
                select name="order" {
                    option value="desc" selected[page_req.order == Order::Desc] { "newest first" }
                    option value="asc" selected[page_req.order == Order::Asc] { "oldest first" }
                }
            }
            button #apply-filter type="submit" { "Apply" }
        }
        @if let Some(done) = nonempty(q.done.as_ref()) { p #bulk-done.notice role="status" { (done) } }
        @if ctx.can_write && listed.as_ref().is_ok_and(|p| !p.items.is_empty()) {
            (bulk_form(base, &filter, &q))
        }
        @match &listed {
            Ok(found) => {
                @if found.items.is_empty() && found.next.is_none() { p.empty { "No job matches." } }
                @else if !found.items.is_empty() { (jobs_table(&ctx, &found.items, "jobs")) }
                @if found.next.is_some() && found.items.len() < LIST_PAGE {
                    p.hint #partial { "The store looks at a bounded number of jobs per page; more may match further on." }
                }
                @if let Some(next) = found.next {
                    p.pager { a #next-page href=(q.next_link(base, next)) { "Next page →" } }
                }
            },
            Err(e) => (render::failure("the jobs", e)),
        }
    };
    let status = if listed.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    page(status, layout(&ctx, Section::Jobs, "Jobs", &body))
}

/// Most store calls one page of the list makes to fill itself.
const MOST_WALKS: usize = 8;

/// A page of the list, filled from as many store calls as it takes (at most
/// [`MOST_WALKS`]): a store looks at a bounded number of jobs per call, so a filter that
/// matches few of them answers short pages with a cursor.
async fn fill_page(
    state: &AppState,
    filter: &JobFilter,
    mut page: Page,
    window: Window,
) -> crate::Result<crate::state::Paged<JobRecord>> {
    let mut filled = crate::state::Paged {
        items: Vec::with_capacity(LIST_PAGE),
        next: None,
    };
    for _ in 0..MOST_WALKS {
        page.limit = LIST_PAGE - filled.items.len();
        let mut found = state.shared.orchestrator.list(filter, &page).await?;
        window.cut(&mut found);
        filled.items.append(&mut found.items);
        filled.next = found.next;
        match found.next {
            Some(next) if filled.items.len() < LIST_PAGE => page.after = Some(next),
            _ => break,
        }
    }
    Ok(filled)
}

/// Most jobs one bulk action touches.
const BULK_MOST: usize = 1_000;

/// The bulk actions a filtered list offers: cancel what has not finished, retry what died,
/// delete what finished (a list filtered to one finished state).
fn bulk_form(base: &str, filter: &JobFilter, q: &ListQuery) -> Markup {
    let cancellable = filter
        .state
        .is_none_or(|s| matches!(s, JobState::Pending | JobState::Queued | JobState::Running));
    let retryable = filter.state == Some(JobState::Dead);
    let deletable = filter.state.is_some_and(JobState::is_terminal);
    html! {
        @if cancellable || retryable || deletable {
            form #bulk-form.bulk method="post" action={ (base) "/jobs/bulk" } {
                @if let Some(s) = filter.state { input type="hidden" name="state" value=(s.as_str()); }
                @if let Some(k) = &filter.kind { input type="hidden" name="kind" value=(k); }
                @if let Some(q) = &filter.queue { input type="hidden" name="queue" value=(q); }
                @if let Some(t) = &filter.tag { input type="hidden" name="tag" value=(t); }
                @if let Some(f) = nonempty(q.from.as_ref()) { input type="hidden" name="from" value=(f); }
                @if let Some(t) = nonempty(q.to.as_ref()) { input type="hidden" name="to" value=(t); }
                span { "Every matching job (at most " (BULK_MOST) "): " }
                label.confirm { input type="checkbox" name="confirm" value="yes" required; " I mean it" }
                @if cancellable {
                    button #bulk-cancel.danger type="submit" name="action" value="cancel" { "Cancel them" }
                }
                @if retryable {
                    button #bulk-retry type="submit" name="action" value="retry" { "Retry them" }
                }
                @if deletable {
                    button #bulk-delete.danger type="submit" name="action" value="delete" { "Delete them" }
                }
            }
        }
    }
}

/// What a bulk action does to each matching job.
#[derive(Clone, Copy)]
enum Bulk {
    Cancel,
    Retry,
    Delete,
}

/// A bulk action's form.
#[derive(Debug, Deserialize)]
pub(crate) struct BulkForm {
    action: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    confirm: Option<String>,
}

/// `POST /ui/jobs/bulk`: cancel (or retry, for dead jobs; or delete, for finished ones)
/// every job the filter matches, up to [`BULK_MOST`], then show the list again with what
/// was done.
pub(crate) async fn bulk(
    ctx: Ctx,
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<BulkForm>,
) -> Response {
    if !same_origin(&headers) || !ctx.can_write {
        return StatusCode::FORBIDDEN.into_response();
    }
    let q = ListQuery {
        state: form.state.clone(),
        kind: form.kind.clone(),
        queue: form.queue.clone(),
        tag: form.tag.clone(),
        order: Some("asc".to_owned()),
        from: form.from.clone(),
        to: form.to.clone(),
        ..ListQuery::default()
    };
    let (filter, mut page_req, window) = match q.filter_and_page(ctx.tenant.clone()) {
        Ok(found) => found,
        Err(e) => return failed(&ctx, Section::Jobs, "the filter", &e),
    };
    if form.confirm.as_deref() != Some("yes") {
        let e = Error::invalid_input("confirm", "tick the box to confirm a bulk action");
        return failed(&ctx, Section::Jobs, "the bulk action", &e);
    }
    let action = match form.action.as_str() {
        "cancel" => Bulk::Cancel,
        "retry" if filter.state == Some(JobState::Dead) => Bulk::Retry,
        "delete" if filter.state.is_some_and(JobState::is_terminal) => Bulk::Delete,
        other => {
            let e = Error::invalid_input(
                "action",
                format!(
                    "`{other}` is not a bulk action here; cancel, retry on dead jobs, or \
                     delete on jobs of one finished state"
                ),
            );
            return failed(&ctx, Section::Jobs, "the bulk action", &e);
        }
    };
    page_req.limit = 200;
    let orchestrator = &state.shared.orchestrator;
    let (mut touched, mut seen) = (0_usize, 0_usize);
    'pages: loop {
        let found = match orchestrator.list(&filter, &page_req).await {
            Ok(f) => f,
            Err(e) => return failed(&ctx, Section::Jobs, "the jobs", &e),
        };
        for r in &found.items {
            if seen >= BULK_MOST || !window.contains(r.id) {
                break 'pages;
            }
            seen += 1;
            let done = match action {
                Bulk::Retry => {
                    r.state == JobState::Dead
                        && r.step.is_none()
                        && orchestrator.retry(r.id).await.is_ok_and(|s| s.created)
                }
                Bulk::Cancel => {
                    matches!(
                        r.state,
                        JobState::Pending | JobState::Queued | JobState::Running
                    ) && matches!(
                        orchestrator.cancel(r.id).await,
                        Ok(CancelOutcome::Cancelled | CancelOutcome::Requested)
                    )
                }
                Bulk::Delete => {
                    r.state.is_terminal()
                        && r.step.is_none()
                        && orchestrator.delete(r.id).await.is_ok()
                }
            };
            touched += usize::from(done);
        }
        match found.next {
            Some(next) => page_req.after = Some(next),
            None => break,
        }
    }
    let what = match action {
        Bulk::Retry => format!("Retried {touched} of {seen} matching jobs as new jobs."),
        Bulk::Cancel => {
            format!("Cancelled (or asked to cancel) {touched} of {seen} matching jobs.")
        }
        Bulk::Delete => format!("Deleted {touched} of {seen} matching jobs."),
    };
    let back = ListQuery { order: None, ..q };
    see_other(&format!(
        "{}/jobs?{}done={}",
        ctx.base,
        back.query_prefix(),
        urlencode(&what)
    ))
}

/// A payload or result, pretty-printed when it parses.
fn pretty(raw: &str) -> String {
    serde_json::from_str::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| raw.to_owned())
}

fn parse_job_id(raw: &str) -> Option<JobId> {
    raw.parse::<JobId>().ok()
}

/// `GET /ui/jobs/{id}`: everything about one job, and what may be done to it.
pub(crate) async fn job(
    ctx: Ctx,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Response {
    let Some(id) = parse_job_id(&id) else {
        return not_found(&ctx, Section::Jobs, "That is not a job id (a UUID).");
    };
    let record = match visible(&state, &ctx, id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return not_found(
                &ctx,
                Section::Jobs,
                "No such job: it may never have existed, or have left retention after it finished.",
            );
        }
        Err(e) => return failed(&ctx, Section::Jobs, "the job", &e),
    };
    let events = state.shared.orchestrator.events(id).await;
    let base = &ctx.base;
    let r = &record;
    let cancellable = matches!(
        r.state,
        JobState::Pending | JobState::Queued | JobState::Running
    );
    let body = html! {
        div.heading {
            h1 { "Job " span.mono { (r.id) } }
            p.sub { span #job-state data-state=(r.state.as_str()) { (r.state.as_str()) } " · " (r.kind) " on " (r.queue) }
        }
        @if ctx.can_write && (cancellable || r.state.is_terminal()) {
            div.actions {
                @if cancellable {
                    form #cancel-form method="post" action={ (base) "/jobs/" (r.id) "/cancel" } {
                        button #cancel-button.danger type="submit" {
                            @if r.state == JobState::Running { "Ask to cancel" } @else { "Cancel" }
                        }
                    }
                }
                @if r.state == JobState::Dead && r.step.is_none() {
                    form #retry-form method="post" action={ (base) "/jobs/" (r.id) "/retry" } {
                        button #retry-button type="submit" { "Retry as a new job" }
                    }
                }
                @if r.state.is_terminal() && r.step.is_none() {
                    form #delete-form method="post" action={ (base) "/jobs/" (r.id) "/delete" } {
                        button #delete-button.danger type="submit" { "Delete" }
                    }
                }
            }
        }
        div.grid {
            section.panel {
                h2 { "Record" }
                table.fields {
                    tbody {
                        tr { th { "state" } td { (render::state_badge(r.state)) @if r.cancel_requested { " (cancel asked)" } } }
                        tr { th { "kind" } td { a href={ (base) "/kinds/" (urlencode(&r.kind)) } { (r.kind) } } }
                        tr { th { "queue" } td { (r.queue) } }
                        tr { th { "priority" } td { (r.priority) } }
                        tr { th { "attempt" } td { (r.attempt) " of " (r.max_attempts) } }
                        tr { th { "run at" } td { (render::time(r.run_at)) } }
                        tr { th { "created" } td { (render::time(r.created_at)) } }
                        tr { th { "started" } td { (render::opt_time(r.started_at)) } }
                        tr { th { "finished" } td { (render::opt_time(r.finished_at)) } }
                        @if let Some(owner) = &r.lease_owner { tr { th { "worker" } td.mono { (owner.to_string()) } } }
                        @if let Some(key) = &r.idempotency_key { tr { th { "idempotency key" } td.mono { (key) } } }
                        @if !r.tags.is_empty() { tr { th { "tags" } td { @for t in &r.tags { span.tag { (t) } " " } } } }
                        @if let Some(t) = &r.tenant { tr { th { "tenant" } td { (t) } } }
                        @if let Some(s) = &r.strategy { tr { th { "strategy" } td { (s) } } }
                        @if let Some(step) = &r.step {
                            tr { th { "workflow" } td { a href={ (base) "/workflows/" (step.workflow) } { (step.workflow_name) } " · step " (step.name) } }
                        }
                        @if let Some(p) = &r.progress {
                            tr { th { "progress" } td {
                                progress max="1" value=(format!("{:.3}", p.fraction)) {}
                                " " (format!("{:.0}%", p.fraction * 100.0))
                                @if let Some(m) = &p.message { " · " (m) }
                            } }
                        }
                    }
                }
            }
            section.panel.wide {
                h2 { "Payload" }
                pre #payload { (pretty(r.payload.as_str())) }
                @if let Some(result) = &r.result {
                    h2 { "Result" }
                    pre #result { (pretty(result.as_str())) }
                }
                @if let Some(err) = &r.last_error {
                    h2 { "Last error" }
                    pre #last-error.error { (err) }
                }
            }
        }
        section.panel {
            h2 { "History" }
            @match &events {
                Ok(events) => {
                    div.scroll {
                        table #events {
                            thead { tr { th { "at" } th { "from" } th { "to" } th.num { "attempt" } th { "worker" } th { "reason" } } }
                            tbody {
                                @for e in events {
                                    tr.event {
                                        td { (render::time(e.at)) }
                                        td { @if let Some(f) = e.from { (render::state_badge(f)) } @else { "–" } }
                                        td { (render::state_badge(e.to)) }
                                        td.num { (e.attempt) }
                                        td.mono { (e.worker.as_ref().map(ToString::to_string).unwrap_or_default()) }
                                        td { (e.reason.as_deref().unwrap_or_default()) }
                                    }
                                }
                            }
                        }
                    }
                },
                Err(e) => (render::failure("the history", e)),
            }
        }
    };
    page(StatusCode::OK, layout(&ctx, Section::Jobs, "Job", &body))
}

/// Checks shared by the actions: a same-origin post by a caller that may write, on a job it
/// may see.
async fn action_target(
    ctx: &Ctx,
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<JobRecord, Response> {
    if !same_origin(headers) || !ctx.can_write {
        return Err(StatusCode::FORBIDDEN.into_response());
    }
    let Some(id) = parse_job_id(id) else {
        return Err(not_found(
            ctx,
            Section::Jobs,
            "That is not a job id (a UUID).",
        ));
    };
    match visible(state, ctx, id).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(not_found(ctx, Section::Jobs, "No such job.")),
        Err(e) => Err(failed(ctx, Section::Jobs, "the job", &e)),
    }
}

/// `POST /ui/jobs/{id}/cancel`.
pub(crate) async fn cancel(
    ctx: Ctx,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let record = match action_target(&ctx, &state, &headers, &id).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    match state.shared.orchestrator.cancel(record.id).await {
        // Whatever it did, the job's page says what the job is now.
        Ok(_) => see_other(&format!("{}/jobs/{}", ctx.base, record.id)),
        Err(e) => failed(&ctx, Section::Jobs, "the cancel", &e),
    }
}

/// `POST /ui/jobs/{id}/retry`: a dead job runs again as a new job; shows the new one.
pub(crate) async fn retry(
    ctx: Ctx,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let record = match action_target(&ctx, &state, &headers, &id).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    match state.shared.orchestrator.retry(record.id).await {
        Ok(copy) => see_other(&format!("{}/jobs/{}", ctx.base, copy.id)),
        Err(e) => action_failed(&ctx, "Not retried", "the retry", &e),
    }
}

/// A job action that failed: a refusal (the job is not in a state for it) answers 409 with
/// the reason, anything else as [`failed`] does.
fn action_failed(ctx: &Ctx, title: &str, what: &str, e: &Error) -> Response {
    if e.kind() == ErrorKind::Conflict {
        page(
            StatusCode::CONFLICT,
            layout(ctx, Section::Jobs, title, &render::failure(what, e)),
        )
    } else {
        failed(ctx, Section::Jobs, what, e)
    }
}

/// `POST /ui/jobs/{id}/delete`: a finished job goes now, with its history; back to the list
/// with what was done.
pub(crate) async fn delete(
    ctx: Ctx,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let record = match action_target(&ctx, &state, &headers, &id).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    match state.shared.orchestrator.delete(record.id).await {
        Ok(()) => see_other(&format!(
            "{}/jobs?done={}",
            ctx.base,
            urlencode(&format!("Deleted job {}.", record.id))
        )),
        Err(e) => action_failed(&ctx, "Not deleted", "the delete", &e),
    }
}

/// Every kind the console knows: registered ones and those with jobs.
async fn kind_names(
    state: &AppState,
) -> crate::Result<(BTreeSet<String>, crate::orchestrator::Stats)> {
    let stats = state.shared.orchestrator.stats().await?;
    let mut kinds: BTreeSet<String> = stats.jobs.per_kind.keys().cloned().collect();
    if let Some(known) = &state.shared.known_kinds {
        kinds.extend(known.iter().cloned());
    }
    Ok((kinds, stats))
}

/// `GET /ui/kinds`: every kind with its counts and, with a memory, its reflection in brief.
pub(crate) async fn kinds(ctx: Ctx, State(state): State<AppState>) -> Response {
    let (names, stats) = match kind_names(&state).await {
        Ok(found) => found,
        Err(e) => return failed(&ctx, Section::Kinds, "the kinds", &e),
    };
    let mut reflections = BTreeMap::new();
    if let Some(memory) = &state.shared.memory {
        for kind in &names {
            if let Ok(r) = memory.reflect(kind, state.shared.reflection_window).await {
                reflections.insert(kind.clone(), r);
            }
        }
    }
    let base = &ctx.base;
    let body = html! {
        (render::heading("Kinds", Some("What each kind's history says, and what the adaptive strategy makes of it.")))
        div.scroll {
            table #kinds {
                thead { tr { th { "kind" } th.num { "queued" } th.num { "running" } th.num { "succeeded" } th.num { "dead" }
                    th.num { "success rate" } th.num { "p50" } th.num { "p99" } th { "recommended" } } }
                tbody {
                    @for kind in &names {
                        @let t = stats.jobs.per_kind.get(kind).copied().unwrap_or_default();
                        @let r = reflections.get(kind);
                        tr data-kind=(kind) {
                            td { a.kind-link href={ (base) "/kinds/" (urlencode(kind)) } { (kind) } }
                            td.num { (t.queued) } td.num { (t.running) } td.num { (t.succeeded) } td.num { (t.dead) }
                            td.num { (render::percent(r.and_then(|r| r.success_rate))) }
                            td.num { (render::duration(r.and_then(|r| r.p50))) }
                            td.num { (render::duration(r.and_then(|r| r.p99))) }
                            td { (r.map_or_else(|| "–".to_owned(), |r| strategy_name(&r.recommendation))) }
                        }
                    }
                }
            }
        }
        @if names.is_empty() { p.empty { "No kind has jobs yet." } }
        @if state.shared.memory.is_none() { p.hint { "No memory is configured, so there are no reflections." } }
    };
    page(StatusCode::OK, layout(&ctx, Section::Kinds, "Kinds", &body))
}

fn strategy_name(r: &crate::memory::Recommendation) -> String {
    let name = match r.strategy {
        crate::memory::StrategyChoice::Direct => "direct",
        crate::memory::StrategyChoice::InlineRetry => "inline retry",
        crate::memory::StrategyChoice::Hedged => "hedged",
    };
    if r.confident {
        name.to_owned()
    } else {
        format!("{name} (not confident yet)")
    }
}

/// `GET /ui/kinds/{kind}`: the reflection, the recommendation and why, the latency histogram
/// of recent jobs, and those jobs.
pub(crate) async fn kind(
    ctx: Ctx,
    State(state): State<AppState>,
    Path(kind): Path<String>,
) -> Response {
    let recent = state
        .shared
        .orchestrator
        .list(
            &JobFilter {
                kind: Some(kind.clone()),
                tenant: ctx.tenant.clone(),
                ..JobFilter::default()
            },
            &Page {
                after: None,
                limit: HISTOGRAM_JOBS,
                order: Order::Desc,
            },
        )
        .await;
    let (reflection, last_change) = match &state.shared.memory {
        Some(memory) => {
            // Two independent reads of the memory, at once.
            let (reflection, change) = futures_util::join!(
                memory.reflect(&kind, state.shared.reflection_window),
                crate::strategy::Adaptive::last_change(memory.as_ref(), &kind)
            );
            (Some(reflection), change.ok().flatten())
        }
        None => (None, None),
    };
    let durations: Vec<Duration> = recent
        .as_ref()
        .map(|p| {
            p.items
                .iter()
                .filter(|r| r.state == JobState::Succeeded)
                .filter_map(|r| (r.finished_at? - r.started_at?).to_std().ok())
                .collect()
        })
        .unwrap_or_default();
    let body = html! {
        (render::heading(&kind, Some("A job kind")))
        div.grid {
            section.panel #reflection {
                h2 { "Reflection" }
                @match &reflection {
                    None => p.hint { "No memory is configured: executions are not recorded." },
                    Some(Err(e)) => (render::failure("the reflection", e)),
                    Some(Ok(r)) => {
                        table.fields {
                            tbody {
                                tr { th { "executions" } td.num data-field="count" { (r.count) } }
                                tr { th { "succeeded" } td.num { (r.succeeded) } }
                                tr { th { "retried" } td.num { (r.retried) } }
                                tr { th { "failed" } td.num { (r.failed) } }
                                tr { th { "success rate" } td.num data-field="success_rate" { (render::percent(r.success_rate)) } }
                                tr { th { "retry rescue rate" } td.num data-field="retry_rescue_rate" { (render::percent(r.retry_rescue_rate)) } }
                                tr { th { "p50" } td.num data-field="p50" { (render::duration(r.p50)) } }
                                tr { th { "p95" } td.num data-field="p95" { (render::duration(r.p95)) } }
                                tr { th { "p99" } td.num data-field="p99" { (render::duration(r.p99)) } }
                            }
                        }
                        @if !r.top_errors.is_empty() {
                            h3 { "Top errors" }
                            table #top-errors { tbody { @for e in &r.top_errors { tr { td { (e.class) } td.num { (e.count) } } } } }
                        }
                    },
                }
            }
            section.panel #decision-panel {
                h2 { "Adaptive decision" }
                @match &reflection {
                    Some(Ok(r)) => {
                        @let rec = &r.recommendation;
                        div #decision {
                            p.decision { strong { (strategy_name(rec)) } }
                            table.fields {
                                tbody {
                                    tr { th { "timeout" } td { (render::duration(rec.timeout)) } }
                                    tr { th { "attempts" } td { (rec.max_attempts) } }
                                    tr { th { "inline retries" } td { (rec.inline_retries) } }
                                    tr { th { "hedge after" } td { (render::duration(rec.hedge_delay)) } }
                                    @if !rec.no_retry_classes.is_empty() {
                                        tr { th { "fail at once" } td { (rec.no_retry_classes.join(", ")) } }
                                    }
                                }
                            }
                            p.rationale { (rec.rationale) }
                        }
                        @if let Some(change) = &last_change {
                            div #last-change {
                                h3 { "Last change" }
                                p {
                                    (change.at.format("%Y-%m-%d %H:%M:%S UTC")) ": "
                                    (change.from) " → " strong { (change.to) }
                                    " (from " (change.executions) " executions)"
                                }
                                p.rationale { (change.why) }
                            }
                        }
                    },
                    _ => p #decision.hint { "No decision without a reflection." },
                }
            }
        }
        section.panel {
            h2 { "Latency of the latest " (durations.len()) " successes" }
            (svg::histogram(&durations))
        }
        section.panel {
            h2 { "Recent jobs" }
            @match &recent {
                Ok(p) => {
                    @let shown: Vec<JobRecord> = p.items.iter().take(20).cloned().collect();
                    @if shown.is_empty() { p.empty { "No job of this kind is kept." } }
                    @else {
                        (jobs_table(&ctx, &shown, "recent"))
                    }
                },
                Err(e) => (render::failure("the jobs", e)),
            }
        }
    };
    page(StatusCode::OK, layout(&ctx, Section::Kinds, &kind, &body))
}

/// `GET /ui/queues`: delivery counts, overall and per kind.
pub(crate) async fn queues(ctx: Ctx, State(state): State<AppState>) -> Response {
    // Three independent reads of the store, at once.
    let orchestrator = &state.shared.orchestrator;
    let (stats, paused, depths) = futures_util::join!(
        orchestrator.stats(),
        orchestrator.paused_queues(),
        orchestrator.queue_depths()
    );
    let stats = match stats {
        Ok(s) => s,
        Err(e) => return failed(&ctx, Section::Queues, "the queues", &e),
    };
    let q = &stats.queue;
    let paused_now = paused.as_ref().ok();
    let body = html! {
        (render::heading("Queues", Some("Delivery: due, waiting for their time, held by workers, dead-lettered.")))
        section.panel #depths {
            h2 { "Depth per queue and priority" }
            @match &depths {
                Ok(d) if d.is_empty() => p.empty { "No job is waiting in any queue (or this store cannot count them per queue)." },
                Ok(d) => {
                    div.scroll {
                        table #queue-depths {
                            thead { tr { th { "queue" } th.num { "due" } th { "due by priority" } th.num { "waiting for their time" } } }
                            tbody {
                                @for depth in d {
                                    @let more = if depth.at_least { "+" } else { "" };
                                    tr data-depth-queue=(depth.queue) {
                                        td {
                                            (depth.queue)
                                            @if paused_now.is_some_and(|p| p.contains(&depth.queue)) { " " span.tag { "paused" } }
                                        }
                                        td.num data-depth="ready" { (depth.ready_total()) (more) }
                                        td {
                                            @for p in &depth.ready {
                                                span.tag data-priority=(p.priority) { "priority " (p.priority) ": " (p.ready) (more) } " "
                                            }
                                        }
                                        td.num data-depth="delayed" { (depth.delayed) (more) }
                                    }
                                }
                            }
                        }
                    }
                    @if d.iter().any(|x| x.at_least) {
                        p.hint { "+: the store stopped counting a long queue at its budget; there are at least this many." }
                    }
                }
                Err(e) => (render::failure("the depths", e)),
            }
        }
        h2 { "By kind" }
        div.scroll {
            table #queues {
                thead { tr { th { "" } th.num { "ready" } th.num { "delayed" } th.num { "in flight" } th.num { "dead-lettered" } } }
                tbody {
                    tr data-queue="all" { th { "all" } td.num { (q.ready) } td.num { (q.delayed) } td.num { (q.in_flight) } td.num { (q.dead) } }
                    @for (kind, k) in &q.per_kind {
                        tr data-queue-kind=(kind) { td { (kind) } td.num { (k.ready) } td.num { (k.delayed) } td.num { (k.in_flight) } td.num { (k.dead) } }
                    }
                }
            }
        }
        p.hint { "Counts per kind, as the store keeps them." }
        section.panel #pausing {
            h2 { "Paused queues" }
            p.hint { "No worker claims from a paused queue (every pool reads them about once a second); jobs can still be submitted to it, and jobs already running finish." }
            @match &paused {
                Ok(p) if p.is_empty() => p #paused.empty { "None: every queue runs." },
                Ok(p) => {
                    table #paused {
                        tbody {
                            @for q in p {
                                tr data-paused=(q) {
                                    td { (q) }
                                    @if ctx.is_admin {
                                        td { form method="post" action={ (ctx.base) "/queues/resume" } {
                                            input type="hidden" name="queue" value=(q);
                                            button.resume type="submit" { "Resume" }
                                        } }
                                    }
                                }
                            }
                        }
                    }
                },
                Err(e) if e.kind() == ErrorKind::Configuration => p.hint { "This store cannot pause queues." },
                Err(e) => (render::failure("the paused queues", e)),
            }
            @if ctx.is_admin && paused.is_ok() {
                form #pause-form.filter method="post" action={ (ctx.base) "/queues/pause" } {
                    label { "queue " input name="queue" required placeholder="default"; }
                    button #pause-button.danger type="submit" { "Pause" }
                }
            }
        }
    };
    page(
        StatusCode::OK,
        layout(&ctx, Section::Queues, "Queues", &body),
    )
}

/// The pause form's body.
#[derive(Debug, Deserialize)]
pub(crate) struct QueueForm {
    queue: String,
}

/// `POST /ui/queues/{pause|resume}`.
pub(crate) async fn queue_action(
    ctx: Ctx,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(action): Path<String>,
    axum::Form(form): axum::Form<QueueForm>,
) -> Response {
    let pause = match action.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return not_found(&ctx, Section::Queues, "No such action: pause or resume."),
    };
    set_queue(ctx, state, headers, form, pause).await
}

async fn set_queue(
    ctx: Ctx,
    state: AppState,
    headers: HeaderMap,
    form: QueueForm,
    pause: bool,
) -> Response {
    if !same_origin(&headers) || !ctx.is_admin {
        return StatusCode::FORBIDDEN.into_response();
    }
    let queue = form.queue.trim();
    let orchestrator = &state.shared.orchestrator;
    let done = if pause {
        orchestrator.pause_queue(queue).await
    } else {
        orchestrator.resume_queue(queue).await
    };
    match done {
        Ok(_) => see_other(&format!("{}/queues", ctx.base)),
        Err(e) => failed(&ctx, Section::Queues, "the queue", &e),
    }
}

/// `GET /ui/schedules`.
pub(crate) async fn schedules(ctx: Ctx, State(state): State<AppState>) -> Response {
    if !ctx.can_see_schedules {
        let body = html! {
            (render::heading("Schedules", None))
            p #schedules.error { "Schedules are the fleet's: a credential bound to a tenant, or without schedules:read, does not see them." }
        };
        return page(
            StatusCode::FORBIDDEN,
            layout(&ctx, Section::Schedules, "Schedules", &body),
        );
    }
    let Some(schedules) = &state.shared.schedules else {
        let body = html! {
            (render::heading("Schedules", None))
            p #schedules.empty { "No schedules are configured on this server." }
        };
        return page(
            StatusCode::OK,
            layout(&ctx, Section::Schedules, "Schedules", &body),
        );
    };
    let list = match schedules.list().await {
        Ok(l) => l,
        Err(e) => return failed(&ctx, Section::Schedules, "the schedules", &e),
    };
    let base = &ctx.base;
    let body = html! {
        (render::heading("Schedules", Some("Jobs submitted on a timetable.")))
        @if list.is_empty() { p #schedules.empty { "No schedule is declared." } }
        @else {
            div.scroll {
                table #schedules {
                    thead { tr { th { "schedule" } th { "timing" } th { "kind" } th { "next run" } th.num { "fired" } th.num { "skipped" } th { "last job" } th { "" } @if ctx.can_schedule { th { "" } } } }
                    tbody {
                        @for s in &list {
                            tr data-schedule=(s.schedule.id) {
                                td { (s.schedule.id) }
                                td.mono { (serde_json::to_string(&s.schedule.timing).unwrap_or_default()) }
                                td { (s.schedule.job.kind) }
                                td { (render::opt_time(s.next_run_at)) }
                                td.num { (s.fired) }
                                td.num { (s.skipped) }
                                td { @if let Some(j) = s.last_job() { a.mono href={ (base) "/jobs/" (j) } { (short_id(j)) } } @else { "–" } }
                                td { @if s.paused() { span.badge { "paused" } } }
                                @if ctx.can_schedule {
                                    td.actions {
                                        @let at = format!("{base}/schedules/{}", urlencode(&s.schedule.id));
                                        @if s.paused() {
                                            form method="post" action={ (at) "/resume" } { button.resume type="submit" { "Resume" } }
                                        } @else {
                                            form method="post" action={ (at) "/pause" } { button.pause type="submit" { "Pause" } }
                                        }
                                        form method="post" action={ (at) "/trigger" } { button.trigger type="submit" { "Run now" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(
        StatusCode::OK,
        layout(&ctx, Section::Schedules, "Schedules", &body),
    )
}

/// `POST /ui/schedules/{id}/{pause|resume|trigger}`; back to the schedules (a trigger shows
/// the job it submitted).
pub(crate) async fn schedule_action(
    ctx: Ctx,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    if !same_origin(&headers) || !ctx.can_schedule {
        return StatusCode::FORBIDDEN.into_response();
    }
    let Some(schedules) = &state.shared.schedules else {
        return not_found(
            &ctx,
            Section::Schedules,
            "No schedules are configured on this server.",
        );
    };
    let back = format!("{}/schedules", ctx.base);
    let done = match action.as_str() {
        "pause" => schedules.pause(&id).await.map(|_| back),
        "resume" => schedules.resume(&id).await.map(|_| back),
        "trigger" => schedules
            .trigger(&id)
            .await
            .map(|job| format!("{}/jobs/{job}", ctx.base)),
        _ => {
            return not_found(
                &ctx,
                Section::Schedules,
                "No such action: pause, resume or trigger.",
            );
        }
    };
    match done {
        Ok(to) => see_other(&to),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            not_found(&ctx, Section::Schedules, &e.to_string())
        }
        Err(e) => failed(&ctx, Section::Schedules, "the schedule", &e),
    }
}

/// `GET /ui/workflows/{id}`: the graph, coloured by state, and its steps.
/// How many of the newest jobs the workflows page looks through for workflow steps.
const WORKFLOW_SCAN: usize = 500;

/// The workflows page's query: an id to open.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WorkflowQuery {
    #[serde(default)]
    id: Option<String>,
}

/// `GET /ui/workflows`: open a workflow by id, and the workflows that the newest jobs belong
/// to (one bounded read: stores keep no list of workflows, only their steps).
pub(crate) async fn workflows(
    ctx: Ctx,
    State(state): State<AppState>,
    Query(q): Query<WorkflowQuery>,
) -> Response {
    if let Some(raw) = nonempty(q.id.as_ref()) {
        return match parse_job_id(raw.trim()) {
            Some(id) => see_other(&format!("{}/workflows/{id}", ctx.base)),
            None => not_found(
                &ctx,
                Section::Workflows,
                "That is not a workflow id (a UUID, as POST /v1/workflows answered).",
            ),
        };
    }
    let newest = state
        .shared
        .orchestrator
        .list(
            &JobFilter {
                tenant: ctx.tenant.clone(),
                ..JobFilter::default()
            },
            &Page {
                after: None,
                limit: WORKFLOW_SCAN,
                order: crate::state::Order::Desc,
            },
        )
        .await;
    let newest = match newest {
        Ok(n) => n.items,
        Err(e) => return failed(&ctx, Section::Workflows, "the newest jobs", &e),
    };
    // Each workflow met, in the order first met (newest first), with its steps' states.
    let mut seen: Vec<(JobId, String, StateTally)> = Vec::new();
    for r in &newest {
        let Some(step) = &r.step else { continue };
        let at = match seen.iter().position(|(id, ..)| *id == step.workflow) {
            Some(at) => at,
            None => {
                seen.push((
                    step.workflow,
                    step.workflow_name.clone(),
                    StateTally::default(),
                ));
                seen.len() - 1
            }
        };
        if let Some((_, _, tally)) = seen.get_mut(at) {
            *tally.get_mut(r.state) += 1;
        }
    }
    let base = &ctx.base;
    let body = html! {
        (render::heading("Workflows", Some("A workflow's page draws its steps as a graph, coloured by state.")))
        form.filter #workflow-open method="get" action={ (base) "/workflows" } {
            label { "workflow id" input type="text" name="id" placeholder="0190..." required; }
            button type="submit" { "Open" }
        }
        section.panel {
            h2 { "Among the newest " (WORKFLOW_SCAN) " jobs" }
            @if seen.is_empty() {
                p.empty { "No workflow step among them." }
            } @else {
                div.scroll {
                    table #workflows {
                        thead { tr { th { "workflow" } th { "id" } th { "steps among them, by state" } } }
                        tbody {
                            @for (id, name, tally) in &seen {
                                tr data-workflow=(id) {
                                    td { a.workflow-link href={ (base) "/workflows/" (id) } { (name) } }
                                    td.mono { (id) }
                                    td { @for (s, n) in tally_rows(tally) { @if n > 0 { (render::state_badge(s)) " " (n) " " } } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(
        StatusCode::OK,
        layout(&ctx, Section::Workflows, "Workflows", &body),
    )
}

pub(crate) async fn workflow(
    ctx: Ctx,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Response {
    let Some(id) = parse_job_id(&id) else {
        return not_found(
            &ctx,
            Section::Workflows,
            "That is not a workflow id (a UUID).",
        );
    };
    let status = match state.shared.orchestrator.workflow(id).await {
        Ok(Some(s))
            if s.steps
                .iter()
                .all(|st| ctx.tenant.is_none() || st.tenant == ctx.tenant) =>
        {
            s
        }
        Ok(_) => return not_found(&ctx, Section::Workflows, "No such workflow."),
        Err(e) => return failed(&ctx, Section::Workflows, "the workflow", &e),
    };
    let base = ctx.base.clone();
    let body = html! {
        div.heading {
            h1 { "Workflow " (status.name) }
            p.sub { span.mono { (status.id) } " · " (status.steps.len()) " steps · "
                @if status.finished { "finished" } @else { "running" } }
        }
        section.panel {
            table #workflow-counts { tbody { tr { @for (s, n) in tally_rows(&status.counts) { td { (render::state_badge(s)) " " (n) } } } } }
        }
        section.panel.graph {
            @if status.steps.len() <= svg::MAX_DRAWN_STEPS {
                (svg::workflow_graph(&status.steps, |s| format!("{base}/jobs/{}", s.id)))
            } @else {
                p.hint { "Too many steps to draw (" (status.steps.len()) "); the table lists them." }
            }
        }
        section.panel {
            div.scroll {
                table #steps {
                    thead { tr { th { "step" } th { "kind" } th { "state" } th { "after" } th.num { "waiting on" } th { "last error" } } }
                    tbody {
                        @for s in status.steps.iter().take(1_000) {
                            tr.step data-step=(s.name) data-state=(s.state.as_str()) {
                                td { a href={ (base) "/jobs/" (s.id) } { (s.name) } }
                                td { (s.kind) }
                                td { (render::state_badge(s.state)) }
                                td { (s.after.join(", ")) }
                                td.num { (s.waiting_on) }
                                td { (s.last_error.as_deref().unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
        }
    };
    page(
        StatusCode::OK,
        layout(&ctx, Section::Jobs, "Workflow", &body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_window_is_a_range_of_ids() {
        let w = Window::parse(
            Some(&"2026-12-05T10:00".to_owned()),
            Some(&"2026-12-05T11:00:30".to_owned()),
        )
        .unwrap_or_default();
        let ten = 1_796_464_800_000_u64; // 2026-12-05T10:00:00Z
        assert_eq!(w.from_ms, Some(ten));
        assert_eq!(w.to_ms, Some(ten + 3_630_000));
        let at = |ms: u64| edge_id(ms, 0x42);
        assert!(!w.contains(at(ten - 1)));
        assert!(w.contains(at(ten)));
        assert!(w.contains(at(ten + 3_629_999)));
        assert!(!w.contains(at(ten + 3_630_000)));
        // Walks start just outside the window, so the first page is its first jobs.
        let start_asc = w.start(Order::Asc).map(id_ms);
        assert_eq!(start_asc, Some(ten - 1));
        assert!(w.start(Order::Asc).is_some_and(|s| s < at(ten)));
        assert!(
            w.start(Order::Desc)
                .is_some_and(|s| s <= edge_id(ten + 3_630_000, 0))
        );
        assert!(
            w.start(Order::Desc)
                .is_some_and(|s| s > at(ten + 3_629_999))
        );
        // Errors name the field.
        let bad = Window::parse(Some(&"yesterday".to_owned()), None).err();
        assert_eq!(
            bad.and_then(|e| e.field().map(str::to_owned)).as_deref(),
            Some("from")
        );
        let reversed = Window::parse(
            Some(&"2026-12-05T11:00".to_owned()),
            Some(&"2026-12-05T10:00".to_owned()),
        )
        .err();
        assert_eq!(
            reversed
                .and_then(|e| e.field().map(str::to_owned))
                .as_deref(),
            Some("to")
        );
        assert_eq!(
            Window::parse(Some(&"2026-12-05T10:00:00+01:00".to_owned()), None)
                .ok()
                .and_then(|w| w.from_ms),
            Some(ten - 3_600_000)
        );
    }
}
