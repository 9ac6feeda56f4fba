//! `/v1/memory/{namespace}[/{key}]` (entries) and `/v1/kinds/{kind}/reflection`.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::extract::ApiJson;
use super::problem::{ApiResult, Problem, ProblemType};
use super::{AppState, Tenant};
use crate::memory::{
    Entry, EntryQuery, MAX_SEARCH_LIMIT, Memory, NewEntry, Recommendation, Reflection,
    StrategyChoice, Window,
};
use crate::strategy::Adaptive;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/memory/{namespace}/{key}",
            get(get_entry).put(put_entry).delete(delete_entry),
        )
        .route("/v1/memory/{namespace}", get(search))
        .route("/v1/kinds/{kind}/reflection", get(reflection))
}

fn memory(state: &AppState) -> ApiResult<&Arc<dyn Memory>> {
    state.shared.memory.as_ref().ok_or_else(|| {
        Problem::new(
            ProblemType::MemoryNotConfigured,
            "this server has no memory configured, so entries and reflection are not served; configure one with `HttpConfig::with_memory`",
        )
    })
}

/// Where a caller's namespace lives in the store. A caller bound to a tenant gets namespaces
/// of its own, `tenant:<length of the tenant>:<tenant>:<namespace>`, which no other tenant's
/// can spell (the length makes the split unambiguous); callers bound to no tenant use the
/// namespace as given.
fn stored_namespace(tenant: Option<&Tenant>, namespace: String) -> String {
    match tenant {
        Some(Tenant(t)) => format!("tenant:{}:{t}:{namespace}", t.len()),
        None => namespace,
    }
}

/// An entry as its caller named it: the tenant's prefix taken off again.
fn view(tenant: Option<&Tenant>, mut entry: Entry) -> EntryView {
    if let Some(Tenant(t)) = tenant {
        let prefix = format!("tenant:{}:{t}:", t.len());
        if let Some(rest) = entry.namespace.strip_prefix(&prefix) {
            entry.namespace = rest.to_owned();
        }
    }
    EntryView::from(entry)
}

/// A memory error as a problem: fields that are path or query parameters (`namespace`,
/// `key`, and in a search `prefix`, `tag`, `limit`) answer 400 `invalid-parameter`.
fn memory_error(err: crate::Error, params_only: bool) -> Problem {
    let problem = Problem::from(err);
    let renamed = match problem.field.as_deref() {
        Some("namespace") => Some("namespace"),
        Some("key") => Some("key"),
        Some("key_prefix") if params_only => Some("prefix"),
        Some("tags") if params_only => Some("tag"),
        Some("limit") if params_only => Some("limit"),
        _ => None,
    };
    match renamed {
        Some(field) if problem.status == 422 => Problem::parameter(field, problem.detail),
        _ => problem,
    }
}

/// A stored entry.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "namespace": "billing",
    "key": "last-run",
    "value": {"at": "2025-01-01T00:00:00Z", "invoices": 42},
    "tags": ["nightly"],
    "created_at": "2025-01-01T00:00:01Z",
    "updated_at": "2025-01-01T00:00:01Z",
    "expires_at": null,
    "version": 1
}))]
pub(crate) struct EntryView {
    /// The namespace.
    namespace: String,
    /// The key.
    key: String,
    /// The value: any JSON.
    value: Value,
    /// Its tags.
    tags: Vec<String>,
    /// First written.
    created_at: DateTime<Utc>,
    /// Last written.
    updated_at: DateTime<Utc>,
    /// When it expires, if it does.
    expires_at: Option<DateTime<Utc>>,
    /// Bumped on every write.
    version: u64,
}

impl From<Entry> for EntryView {
    fn from(e: Entry) -> Self {
        Self {
            namespace: e.namespace,
            key: e.key,
            value: e.value,
            tags: e.tags,
            created_at: e.created_at,
            updated_at: e.updated_at,
            expires_at: e.expires_at,
            version: e.version,
        }
    }
}

/// An entry to store; it replaces whatever is at the namespace and key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"value": {"at": "2025-01-01T00:00:00Z", "invoices": 42}, "tags": ["nightly"], "ttl_secs": 86400}))]
pub(crate) struct PutEntry {
    /// Any JSON value (size-limited by the memory's configuration).
    value: Value,
    /// Tags to search by.
    #[serde(default)]
    tags: Vec<String>,
    /// Expire this many seconds after the write; absent keeps it until deleted.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 315_360_000_u64)]
    ttl_secs: Option<u64>,
}

/// Entries found, in key order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EntryList {
    /// The entries.
    items: Vec<EntryView>,
}

/// A memory entry's address. (Documents the path; axum extracts it as a tuple.)
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct EntryPath {
    /// The namespace: 1 to 128 bytes, no control characters.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        example = "billing"
    )]
    namespace: String,
    /// The key: 1 to 256 bytes, no control characters.
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        example = "last-run"
    )]
    key: String,
}

/// A memory namespace. (Documents the path.)
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct NamespacePath {
    /// The namespace: 1 to 128 bytes, no control characters.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        example = "billing"
    )]
    namespace: String,
}

/// Which entries of the namespace to return. (Documents the query; the handler parses the
/// pairs itself, to name a bad or unknown parameter.)
#[derive(Debug, Default, IntoParams)]
#[allow(dead_code)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// Only keys starting with this (no control characters).
    #[param(pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    prefix: Option<String>,
    /// Only entries carrying this tag (repeat the parameter for several: all must match).
    #[param(pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")]
    tag: Option<String>,
    /// At most this many, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Which executions a reflection looks at. (Documents the query; parsed by hand.)
#[derive(Debug, Default, IntoParams)]
#[allow(dead_code)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReflectionParams {
    /// `all`, `last:N` (the latest N executions) or `since:SECS` (those that finished
    /// within the last SECS seconds). Default: the server's window, `last:1000`.
    #[param(pattern = "^(all|last:[0-9]+|since:[0-9]+)$", example = "last:1000")]
    window: Option<String>,
}

fn param_pairs_only<'a>(
    pairs: &'a [(String, String)],
    allowed: &[&str],
) -> ApiResult<&'a [(String, String)]> {
    if let Some((name, _)) = pairs.iter().find(|(n, _)| !allowed.contains(&n.as_str())) {
        return Err(Problem::parameter(
            name,
            format!(
                "`{name}` is not a parameter of this route; use {}",
                allowed.join(", ")
            ),
        ));
    }
    Ok(pairs)
}

fn parse_window(raw: &str) -> ApiResult<Window> {
    let bad = || {
        Problem::parameter(
            "window",
            format!("`{raw}` is not a window; use `all`, `last:N` or `since:SECS`"),
        )
    };
    if raw == "all" {
        return Ok(Window::All);
    }
    let (what, n) = raw.split_once(':').ok_or_else(bad)?;
    let n: u64 = n.parse().map_err(|_| bad())?;
    match what {
        "last" if n > 0 => Ok(Window::Last(usize::try_from(n).map_err(|_| bad())?)),
        "since" if n > 0 => Ok(Window::Since(Duration::from_secs(n))),
        _ => Err(bad()),
    }
}

/// Read a memory entry
///
/// The entry at `namespace` and `key`; expired entries are gone.
#[utoipa::path(
    get,
    path = "/v1/memory/{namespace}/{key}",
    tag = "memory",
    operation_id = "getMemoryEntry",
    params(EntryPath),
    responses((status = 200, description = "The entry.", body = EntryView))
)]
pub(crate) async fn get_entry(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path((namespace, key)): Path<(String, String)>,
) -> ApiResult<Json<EntryView>> {
    let tenant = tenant.as_deref();
    let entry = memory(&state)?
        .get(&stored_namespace(tenant, namespace.clone()), &key)
        .await
        .map_err(|e| memory_error(e, true))?;
    entry.map(|e| Json(view(tenant, e))).ok_or_else(|| {
        Problem::not_found(format!(
            "no entry `{key}` in namespace `{namespace}` (or it expired)"
        ))
    })
}

/// Store a memory entry
///
/// Stores `value` (with tags and an optional time to live) at `namespace` and `key`, replacing
/// any entry there. Answers the stored entry: `201 Created` when there was none, else `200 OK`.
#[utoipa::path(
    put,
    path = "/v1/memory/{namespace}/{key}",
    tag = "memory",
    operation_id = "putMemoryEntry",
    params(EntryPath),
    request_body(content = PutEntry, description = "The value, tags and time to live."),
    responses(
        (status = 201, description = "The entry was created.", body = EntryView),
        (status = 200, description = "The entry was replaced.", body = EntryView),
    )
)]
pub(crate) async fn put_entry(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path((namespace, key)): Path<(String, String)>,
    ApiJson(body): ApiJson<PutEntry>,
) -> ApiResult<Response> {
    let memory = memory(&state)?;
    if body.ttl_secs.is_some_and(|t| t == 0 || t > 315_360_000) {
        return Err(Problem::validation(
            "ttl_secs",
            "must be 1 to 315360000 (ten years); leave it out to keep the entry until deleted",
        ));
    }
    let tenant = tenant.as_deref();
    let mut entry = NewEntry::new(stored_namespace(tenant, namespace), key, body.value);
    entry.tags = body.tags;
    entry.ttl = body.ttl_secs.map(Duration::from_secs);
    let stored = memory
        .put(entry)
        .await
        .map_err(|e| memory_error(e, false))?;
    let status = if stored.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(tenant, stored))).into_response())
}

/// Delete a memory entry
///
/// Removes the entry; `404` when there was none.
#[utoipa::path(
    delete,
    path = "/v1/memory/{namespace}/{key}",
    tag = "memory",
    operation_id = "deleteMemoryEntry",
    params(EntryPath),
    responses((status = 204, description = "The entry was deleted."))
)]
pub(crate) async fn delete_entry(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path((namespace, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let deleted = memory(&state)?
        .delete(
            &stored_namespace(tenant.as_deref(), namespace.clone()),
            &key,
        )
        .await
        .map_err(|e| memory_error(e, true))?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!(
            "no entry `{key}` in namespace `{namespace}` to delete"
        )))
    }
}

/// Search a memory namespace
///
/// Entries of the namespace in key order, filtered by key prefix and tags.
#[utoipa::path(
    get,
    path = "/v1/memory/{namespace}",
    tag = "memory",
    operation_id = "searchMemory",
    params(
        NamespacePath,
        SearchParams,
    ),
    responses((status = 200, description = "The entries found.", body = EntryList,
        example = json!({"items": []})))
)]
pub(crate) async fn search(
    State(state): State<AppState>,
    tenant: Option<Extension<Tenant>>,
    Path(namespace): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Json<EntryList>> {
    let memory = memory(&state)?;
    let tenant = tenant.as_deref();
    let mut query = EntryQuery::namespace(stored_namespace(tenant, namespace));
    for (name, value) in param_pairs_only(&pairs, &["prefix", "tag", "limit"])? {
        match name.as_str() {
            "prefix" => query = query.prefix(value.clone()),
            "tag" => query = query.tag(value.clone()),
            _ => {
                let limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_SEARCH_LIMIT).contains(l))
                    .ok_or_else(|| {
                        Problem::parameter(
                            "limit",
                            format!("`{value}` is not a limit; use a whole number from 1 to {MAX_SEARCH_LIMIT}"),
                        )
                    })?;
                query = query.limit(limit);
            }
        }
    }
    let entries = memory
        .search(&query)
        .await
        .map_err(|e| memory_error(e, true))?;
    Ok(Json(EntryList {
        items: entries.into_iter().map(|e| view(tenant, e)).collect(),
    }))
}

/// A strategy a recommendation may name.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StrategyName {
    /// Run once per delivery.
    Direct,
    /// Retry transient failures in process.
    InlineRetry,
    /// Start a second attempt after the hedge delay.
    Hedged,
}

/// What the history suggests for a kind, with the reasons.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RecommendationView {
    /// The strategy to use.
    strategy: StrategyName,
    /// Deadline per attempt in milliseconds, from observed tail latency.
    timeout_ms: Option<f64>,
    /// Attempts worth spending.
    max_attempts: u32,
    /// In-process retries worth making per delivery.
    inline_retries: u32,
    /// When to start a hedge, in milliseconds, for `hedged`.
    hedge_delay_ms: Option<f64>,
    /// Whether enough executions were seen to trust this.
    confident: bool,
    /// Why, in plain language, citing the numbers.
    rationale: String,
    /// Error classes retries have never rescued: the adaptive strategy fails them at once.
    no_retry_classes: Vec<String>,
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

impl From<Recommendation> for RecommendationView {
    fn from(r: Recommendation) -> Self {
        Self {
            strategy: match r.strategy {
                StrategyChoice::Direct => StrategyName::Direct,
                StrategyChoice::InlineRetry => StrategyName::InlineRetry,
                StrategyChoice::Hedged => StrategyName::Hedged,
            },
            timeout_ms: ms(r.timeout),
            max_attempts: r.max_attempts,
            inline_retries: r.inline_retries,
            hedge_delay_ms: ms(r.hedge_delay),
            confident: r.confident,
            rationale: r.rationale,
            no_retry_classes: r.no_retry_classes,
        }
    }
}

/// How often one error class was seen.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorClassView {
    /// The class.
    class: String,
    /// Executions that ended with it.
    count: u64,
    /// Jobs that failed with it at least once.
    jobs: u64,
    /// Of those jobs, the ones a retry rescued.
    rescued: u64,
    /// Of `count`, the executions that failed for good.
    failed: u64,
}

/// A change of what the adaptive strategy does for the kind.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DecisionChangeView {
    /// When it changed (RFC 3339).
    at: String,
    /// What it did before.
    from: String,
    /// What it does now.
    to: String,
    /// Why, citing the numbers it used.
    why: String,
    /// Executions the new decision was drawn from.
    executions: u64,
}

/// What the recorded executions of one kind say, and what to do about it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "kind": "fail_n_times",
    "count": 120, "succeeded": 80, "retried": 36, "failed": 4, "deferred": 0, "cancelled": 0,
    "success_rate": 0.6667, "deferred_rate": 0.0,
    "p50_ms": 1.2, "p90_ms": 2.8, "p95_ms": 3.5, "p99_ms": 7.9,
    "retry_rescue_rate": 0.9, "transient_rescue_rate": 0.9,
    "top_errors": [{"class": "flaky", "count": 40, "jobs": 40, "rescued": 36, "failed": 4}],
    "recommendation": {
        "strategy": "inline_retry", "timeout_ms": 40.0, "max_attempts": 3, "inline_retries": 1,
        "hedge_delay_ms": null, "confident": true,
        "rationale": "retries rescued 90% of failures; retry in process once before giving the job back",
        "no_retry_classes": []
    },
    "last_change": {
        "at": "2026-12-05T11:02:03Z", "from": "base strategy `direct`",
        "to": "no hedge; 2 inline retries", "executions": 120,
        "why": "InlineRetry: 90% of failed executions were transient and retries rescued 90% of failed jobs: retry in process up to 2 times"
    }
}))]
pub(crate) struct ReflectionView {
    /// The kind.
    kind: String,
    /// Executions looked at.
    count: u64,
    /// Of those, succeeded.
    succeeded: u64,
    /// Failed and retried.
    retried: u64,
    /// Failed for good.
    failed: u64,
    /// Deferred.
    deferred: u64,
    /// Cancelled.
    cancelled: u64,
    /// Succeeded over those that ran to an outcome; `null` without such executions.
    success_rate: Option<f64>,
    /// Deferred over all; `null` without executions.
    deferred_rate: Option<f64>,
    /// Median latency in milliseconds.
    p50_ms: Option<f64>,
    /// 90th percentile latency in milliseconds.
    p90_ms: Option<f64>,
    /// 95th percentile latency in milliseconds.
    p95_ms: Option<f64>,
    /// 99th percentile latency in milliseconds.
    p99_ms: Option<f64>,
    /// Of the jobs that failed at least once, the fraction that later succeeded.
    retry_rescue_rate: Option<f64>,
    /// The same, leaving out the jobs of classes retries never rescued.
    transient_rescue_rate: Option<f64>,
    /// The most frequent error classes, most frequent first.
    top_errors: Vec<ErrorClassView>,
    /// What to do about it.
    recommendation: RecommendationView,
    /// The adaptive strategy's latest change of decision for the kind, and why; `null`
    /// before the first.
    last_change: Option<DecisionChangeView>,
}

impl From<Reflection> for ReflectionView {
    fn from(r: Reflection) -> Self {
        Self {
            kind: r.kind,
            count: r.count,
            succeeded: r.succeeded,
            retried: r.retried,
            failed: r.failed,
            deferred: r.deferred,
            cancelled: r.cancelled,
            success_rate: r.success_rate,
            deferred_rate: r.deferred_rate,
            p50_ms: ms(r.p50),
            p90_ms: ms(r.p90),
            p95_ms: ms(r.p95),
            p99_ms: ms(r.p99),
            retry_rescue_rate: r.retry_rescue_rate,
            transient_rescue_rate: r.transient_rescue_rate,
            top_errors: r
                .top_errors
                .into_iter()
                .map(|e| ErrorClassView {
                    class: e.class,
                    count: e.count,
                    jobs: e.jobs,
                    rescued: e.rescued,
                    failed: e.failed,
                })
                .collect(),
            recommendation: r.recommendation.into(),
            last_change: None,
        }
    }
}

/// Reflect on a kind
///
/// What the memory's recorded executions of `kind` say: counts by outcome, success and
/// deferral rates, latency percentiles, how often retries rescued a failure, the top error
/// classes, and the recommendation the adaptive strategy acts on, with its rationale.
#[utoipa::path(
    get,
    path = "/v1/kinds/{kind}/reflection",
    tag = "kinds",
    operation_id = "getKindReflection",
    params(
        ("kind" = String, Path, description = "The job kind.", example = "echo"),
        ReflectionParams,
    ),
    responses((status = 200, description = "The reflection and recommendation.", body = ReflectionView))
)]
pub(crate) async fn reflection(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Json<ReflectionView>> {
    let memory = memory(&state)?;
    let mut window = state.shared.reflection_window;
    for (_, value) in param_pairs_only(&pairs, &["window"])? {
        window = parse_window(value)?;
    }
    if let Some(known) = &state.shared.known_kinds {
        if !known.contains(&kind) {
            let names: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err(Problem::new(
                ProblemType::NotFound,
                format!(
                    "no kind `{kind}` is registered on this server; registered kinds: {}",
                    names.join(", ")
                ),
            )
            .with_field("kind"));
        }
    }
    // Two independent reads of the memory, at once.
    let (reflection, last_change) = futures_util::join!(
        memory.reflect(&kind, window),
        Adaptive::last_change(memory.as_ref(), &kind)
    );
    let reflection = reflection.map_err(|e| {
        let p = Problem::from(e);
        match p.field.clone() {
            Some(field) if p.status == 422 => Problem::parameter(&field, p.detail),
            _ => p,
        }
    })?;
    let mut view: ReflectionView = reflection.into();
    // The latest decision change is shown when it can be read; the reflection stands without.
    view.last_change = match last_change {
        Ok(change) => change.map(|c| DecisionChangeView {
            at: c.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            from: c.from,
            to: c.to,
            why: c.why,
            executions: c.executions,
        }),
        Err(err) => {
            tracing::warn!(kind, error = %err, "could not read adaptive's latest decision change");
            None
        }
    };
    Ok(Json(view))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse() {
        assert_eq!(parse_window("all").ok(), Some(Window::All));
        assert_eq!(parse_window("last:10").ok(), Some(Window::Last(10)));
        assert_eq!(
            parse_window("since:60").ok(),
            Some(Window::Since(Duration::from_secs(60)))
        );
        for bad in ["", "last", "last:0", "last:x", "since:-1", "some:1"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }
}
