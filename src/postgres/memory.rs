use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use crate::memory::reflection::{interpolate, recommend};
use crate::memory::validate::{self, EntryLimits};
use crate::memory::{
    Entry, EntryQuery, ErrorClassCount, ExecutionRecord, Memory, NewEntry, OutcomeClass,
    Recommendation, Reflection, StrategyChoice, Window,
};
use crate::postgres::{Shared, db_error, stmt};
use crate::util::dur_micros;
use crate::{Error, ErrorKind, Result};

const ENTRY_COLUMNS: &str =
    "namespace, key, value::text AS value, tags, created_at, updated_at, expires_at, version";

/// Store or replace an entry. An expired entry at the same key counts as absent: the new one
/// starts again at version 1.
const PUT: &str = r"
INSERT INTO {s}.memory_entries AS e
    (namespace, key, value, tags, created_at, updated_at, expires_at, version)
VALUES ($1, $2, $3::json, $4, now(), now(),
        CASE WHEN $5::bigint IS NULL THEN NULL ELSE now() + $5 * interval '1 microsecond' END,
        1)
ON CONFLICT (namespace, key) DO UPDATE SET
    value = excluded.value,
    tags = excluded.tags,
    updated_at = excluded.updated_at,
    expires_at = excluded.expires_at,
    created_at = CASE WHEN e.expires_at <= now() THEN excluded.created_at ELSE e.created_at END,
    version = CASE WHEN e.expires_at <= now() THEN 1 ELSE e.version + 1 END
RETURNING {entry_columns}";

const GET: &str = r"
SELECT {entry_columns} FROM {s}.memory_entries
WHERE namespace = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > now())";

/// Compare-and-set on the version when one is given.
const UPDATE: &str = r"
UPDATE {s}.memory_entries SET value = $3::json, updated_at = now(), version = version + 1
WHERE namespace = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > now())
  AND ($4::bigint IS NULL OR version = $4)
RETURNING {entry_columns}";

const VERSION: &str = r"
SELECT version FROM {s}.memory_entries
WHERE namespace = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > now())";

const DELETE: &str = r"
DELETE FROM {s}.memory_entries WHERE namespace = $1 AND key = $2
RETURNING (expires_at IS NULL OR expires_at > now()) AS live";

/// A key-prefix search is a range of the primary key (keys sort bytewise); tags use the GIN
/// index.
const SEARCH: &str = r"
SELECT {entry_columns} FROM {s}.memory_entries
WHERE namespace = $1 AND key >= $2 AND starts_with(key, $2) AND tags @> $3
  AND (expires_at IS NULL OR expires_at > now())
ORDER BY key LIMIT $4";

const RECORD: &str = r"
INSERT INTO {s}.memory_executions
    (kind, job_id, strategy, outcome, duration_ns, attempt, inline_retries, error_class, at,
     decision)
SELECT kind, job_id, strategy, outcome, duration_ns, attempt, inline_retries, error_class, at,
       decision
FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::int[],
            $7::int[], $8::text[], $9::timestamptz[], $10::text[])
    WITH ORDINALITY AS t(kind, job_id, strategy, outcome, duration_ns, attempt, inline_retries,
                         error_class, at, decision, ord)
ORDER BY ord";

/// The numbers of a reflection over the executions in CTE `runs`, computed in the database:
/// counts by outcome; for each percentile, `percentile_cont`'s two neighbours (positions
/// `⌊x⌋` and `⌈x⌉` of the sorted durations that ran, `x = p·(n−1)`) and the fraction between
/// them, which the shared interpolation turns into nanoseconds (rounding exactly as the
/// in-memory reflection does); the retry rescue rate by job; the most frequent error
/// classes of failed executions.
const REFLECT_TAIL: &str = r#"
stats AS (
    SELECT count(*) AS count,
        count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
        count(*) FILTER (WHERE outcome = 'retried') AS retried,
        count(*) FILTER (WHERE outcome = 'failed') AS failed,
        count(*) FILTER (WHERE outcome = 'deferred') AS deferred,
        count(*) FILTER (WHERE outcome = 'cancelled') AS cancelled
    FROM runs
),
ran AS (
    SELECT duration_ns, row_number() OVER (ORDER BY duration_ns) - 1 AS i, count(*) OVER () AS n
    FROM runs WHERE outcome <> 'deferred'
),
points AS (
    SELECT k, floor(x)::bigint AS lo, ceil(x)::bigint AS hi, x - floor(x) AS frac
    FROM (
        SELECT k, p * ((SELECT max(n) FROM ran) - 1)::float8 AS x
        FROM unnest(ARRAY[0.5, 0.9, 0.95, 0.99]::float8[]) WITH ORDINALITY AS t(p, k)
    ) q
    WHERE x IS NOT NULL
),
percentiles AS (
    SELECT array_agg(a.duration_ns ORDER BY k) AS lows,
           array_agg(b.duration_ns ORDER BY k) AS highs,
           array_agg(frac ORDER BY k) AS fracs
    FROM points JOIN ran a ON a.i = points.lo JOIN ran b ON b.i = points.hi
),
failed_jobs AS (
    SELECT job_id, bool_or(outcome = 'succeeded') AS rescued FROM runs
    GROUP BY job_id
    HAVING bool_or(outcome = 'retried' OR inline_retries > 0)
),
succeeded_jobs AS (
    SELECT DISTINCT job_id FROM runs WHERE outcome = 'succeeded'
),
errors AS (
    -- Per class: failed executions, the jobs they were of, and of those the jobs that
    -- succeeded later (retries rescued them).
    SELECT r.error_class, count(*) AS n, count(DISTINCT r.job_id) AS jobs,
           count(DISTINCT s.job_id) AS rescued,
           count(*) FILTER (WHERE r.outcome = 'failed') AS failed_n
    FROM runs r LEFT JOIN succeeded_jobs s ON s.job_id = r.job_id
    WHERE r.outcome IN ('retried', 'failed') AND r.error_class IS NOT NULL
    GROUP BY r.error_class
    ORDER BY n DESC, r.error_class COLLATE "C"
    LIMIT 5
),
hopeless_jobs AS (
    -- Jobs that failed with a class retries never rescued (as `recommend` judges it).
    SELECT DISTINCT r.job_id FROM runs r JOIN errors e ON e.error_class = r.error_class
    WHERE r.outcome IN ('retried', 'failed')
      AND e.jobs >= {no_retry_min_jobs} AND e.rescued = 0
)
SELECT s.*, p.lows, p.highs, p.fracs,
    (SELECT count(*) FROM failed_jobs) AS failed_jobs,
    (SELECT count(*) FILTER (WHERE rescued) FROM failed_jobs) AS rescued_jobs,
    (SELECT count(*) FROM failed_jobs f
        WHERE NOT EXISTS (SELECT 1 FROM hopeless_jobs h WHERE h.job_id = f.job_id))
        AS transient_failed_jobs,
    (SELECT array_agg(error_class ORDER BY n DESC, error_class COLLATE "C") FROM errors)
        AS error_classes,
    (SELECT array_agg(n ORDER BY n DESC, error_class COLLATE "C") FROM errors) AS error_counts,
    (SELECT array_agg(jobs ORDER BY n DESC, error_class COLLATE "C") FROM errors) AS error_jobs,
    (SELECT array_agg(rescued ORDER BY n DESC, error_class COLLATE "C") FROM errors)
        AS error_rescued,
    (SELECT array_agg(failed_n ORDER BY n DESC, error_class COLLATE "C") FROM errors)
        AS error_failed
FROM stats s, percentiles p"#;

const RUNS_ALL: &str = r"
WITH runs AS (
    SELECT job_id, outcome, duration_ns, inline_retries, error_class
    FROM {s}.memory_executions WHERE kind = $1
),";

const RUNS_LAST: &str = r"
WITH runs AS (
    SELECT job_id, outcome, duration_ns, inline_retries, error_class
    FROM {s}.memory_executions WHERE kind = $1
    ORDER BY seq DESC LIMIT $2
),";

const RUNS_SINCE: &str = r"
WITH runs AS (
    SELECT job_id, outcome, duration_ns, inline_retries, error_class
    FROM {s}.memory_executions
    WHERE kind = $1 AND at >= now() - $2 * interval '1 microsecond'
),";

const PURGE_EXECUTIONS: &str = r"
DELETE FROM {s}.memory_executions WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM {s}.memory_executions
    WHERE at < now() - $1 * interval '1 microsecond'
    LIMIT $2
))";

const PURGE_ENTRIES: &str = r"
WITH victims AS (
    SELECT namespace, key FROM {s}.memory_entries WHERE expires_at <= now()
    LIMIT $1 FOR UPDATE SKIP LOCKED
)
DELETE FROM {s}.memory_entries e USING victims v
WHERE e.namespace = v.namespace AND e.key = v.key";

struct Statements {
    put: Arc<str>,
    get: Arc<str>,
    update: Arc<str>,
    version: Arc<str>,
    delete: Arc<str>,
    search: Arc<str>,
    record: Arc<str>,
    reflect_all: Arc<str>,
    reflect_last: Arc<str>,
    reflect_since: Arc<str>,
    purge_executions: Arc<str>,
    purge_entries: Arc<str>,
}

/// The memory in PostgreSQL: entries (namespace, key, JSON value, tags with a GIN index,
/// TTL) in `memory_entries`, and every execution in `memory_executions`, kept for
/// [`PostgresConfig::execution_retention`](crate::postgres::PostgresConfig::execution_retention)
/// and deleted in batches.
///
/// `reflect` computes its numbers in SQL — counts by outcome; for each percentile, the two
/// sorted durations `percentile_cont` interpolates between and the fraction (the last
/// rounding step is the shared interpolation's, since SQL's float arithmetic can land a
/// nanosecond off); the retry rescue rate by job; the top error classes — and hands them to
/// [`recommend`](crate::memory::recommend), so it answers exactly as
/// [`InMemoryMemory`](crate::memory::InMemoryMemory) does on the same history (tested). Input is
/// checked by the same rules (and the same default limits: values up to 64 KiB of JSON, 32
/// tags of up to 128 bytes). Expiry uses the server's clock.
///
/// Get one from [`PostgresBackend::memory`](crate::postgres::PostgresBackend::memory).
pub struct PostgresMemory {
    shared: Arc<Shared>,
    sql: Statements,
    limits: EntryLimits,
}

impl std::fmt::Debug for PostgresMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresMemory")
            .field("schema", &self.shared.config.schema)
            .finish_non_exhaustive()
    }
}

#[derive(FromRow)]
struct EntryRow {
    namespace: String,
    key: String,
    value: String,
    tags: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    version: i64,
}

impl EntryRow {
    fn into_entry(self) -> Result<Entry> {
        let value: Value = serde_json::from_str(&self.value).map_err(|e| {
            Error::new(
                ErrorKind::Serialization,
                format!(
                    "entry `{}` in namespace `{}`: the stored JSON could not be read back: {e}",
                    self.key, self.namespace
                ),
            )
        })?;
        Ok(Entry {
            namespace: self.namespace,
            key: self.key,
            value,
            tags: self.tags,
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
            version: u64::try_from(self.version).unwrap_or(0),
        })
    }
}

#[derive(FromRow)]
struct StatsRow {
    count: i64,
    succeeded: i64,
    retried: i64,
    failed: i64,
    deferred: i64,
    cancelled: i64,
    lows: Option<Vec<i64>>,
    highs: Option<Vec<i64>>,
    fracs: Option<Vec<f64>>,
    failed_jobs: i64,
    rescued_jobs: i64,
    transient_failed_jobs: i64,
    error_classes: Option<Vec<String>>,
    error_counts: Option<Vec<i64>>,
    error_jobs: Option<Vec<i64>>,
    error_rescued: Option<Vec<i64>>,
    error_failed: Option<Vec<i64>>,
}

fn outcome_name(outcome: OutcomeClass) -> &'static str {
    match outcome {
        OutcomeClass::Succeeded => "succeeded",
        OutcomeClass::Retried => "retried",
        OutcomeClass::Failed => "failed",
        OutcomeClass::Deferred => "deferred",
        OutcomeClass::Cancelled => "cancelled",
    }
}

fn count_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[allow(clippy::cast_precision_loss)]
fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The percentiles from their neighbours and fractions, in order (p50, p90, p95, p99).
fn percentiles(row: &StatsRow) -> Vec<Duration> {
    let (Some(lows), Some(highs), Some(fracs)) = (&row.lows, &row.highs, &row.fracs) else {
        return Vec::new();
    };
    lows.iter()
        .zip(highs)
        .zip(fracs)
        .map(|((lo, hi), frac)| {
            interpolate(
                u64::try_from(*lo).unwrap_or(0),
                u64::try_from(*hi).unwrap_or(0),
                *frac,
            )
        })
        .collect()
}

impl PostgresMemory {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let entry =
            |template: &str| shared.sql(&template.replace("{entry_columns}", ENTRY_COLUMNS));
        let reflect = |runs: &str| {
            shared.sql(&format!("{runs}{REFLECT_TAIL}").replace(
                "{no_retry_min_jobs}",
                &crate::memory::reflection::NO_RETRY_MIN_JOBS.to_string(),
            ))
        };
        let sql = Statements {
            put: entry(PUT),
            get: entry(GET),
            update: entry(UPDATE),
            version: shared.sql(VERSION),
            delete: shared.sql(DELETE),
            search: entry(SEARCH),
            record: shared.sql(RECORD),
            reflect_all: reflect(RUNS_ALL),
            reflect_last: reflect(RUNS_LAST),
            reflect_since: reflect(RUNS_SINCE),
            purge_executions: shared.sql(PURGE_EXECUTIONS),
            purge_entries: shared.sql(PURGE_ENTRIES),
        };
        let limits = EntryLimits {
            max_value_bytes: shared.config.max_value_bytes,
            max_tags: 32,
            max_tag_bytes: 128,
        };
        Self {
            shared,
            sql,
            limits,
        }
    }

    /// Delete executions older than the configured retention and expired entries, in batches;
    /// returns how many rows were deleted.
    pub async fn purge(&self) -> Result<u64> {
        let config = &self.shared.config;
        let batch = i64::try_from(config.purge_batch).unwrap_or(i64::MAX);
        let retention = dur_micros(config.execution_retention);
        let mut total = 0;
        loop {
            self.shared.count_statement();
            let deleted = sqlx::query(stmt(&self.sql.purge_executions))
                .bind(retention)
                .bind(batch)
                .execute(&self.shared.pool)
                .await
                .map_err(|e| db_error("delete old executions", e))?
                .rows_affected();
            total += deleted;
            if deleted < config.purge_batch as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
        loop {
            self.shared.count_statement();
            let deleted = sqlx::query(stmt(&self.sql.purge_entries))
                .bind(batch)
                .execute(&self.shared.pool)
                .await
                .map_err(|e| db_error("delete expired entries", e))?
                .rows_affected();
            total += deleted;
            if deleted < config.purge_batch as u64 {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    fn reflection(kind: &str, row: StatsRow) -> Reflection {
        let (count, succeeded, deferred, cancelled) = (
            count_u64(row.count),
            count_u64(row.succeeded),
            count_u64(row.deferred),
            count_u64(row.cancelled),
        );
        let percentiles = percentiles(&row);
        let top_errors = row
            .error_classes
            .unwrap_or_default()
            .into_iter()
            .zip(row.error_counts.unwrap_or_default())
            .zip(
                row.error_jobs
                    .unwrap_or_default()
                    .into_iter()
                    .zip(row.error_rescued.unwrap_or_default()),
            )
            .zip(row.error_failed.unwrap_or_default())
            .map(|(((class, n), (jobs, rescued)), failed)| ErrorClassCount {
                class,
                count: count_u64(n),
                jobs: count_u64(jobs),
                rescued: count_u64(rescued),
                failed: count_u64(failed),
            })
            .collect();
        let ended = count.saturating_sub(deferred + cancelled);
        let mut reflection = Reflection {
            kind: kind.to_owned(),
            count,
            succeeded,
            retried: count_u64(row.retried),
            failed: count_u64(row.failed),
            deferred,
            cancelled,
            success_rate: ratio(succeeded, ended),
            deferred_rate: ratio(deferred, count),
            p50: percentiles.first().copied(),
            p90: percentiles.get(1).copied(),
            p95: percentiles.get(2).copied(),
            p99: percentiles.get(3).copied(),
            retry_rescue_rate: ratio(count_u64(row.rescued_jobs), count_u64(row.failed_jobs)),
            transient_rescue_rate: ratio(
                count_u64(row.rescued_jobs),
                count_u64(row.transient_failed_jobs),
            ),
            top_errors,
            recommendation: Recommendation {
                strategy: StrategyChoice::Direct,
                timeout: None,
                max_attempts: 0,
                inline_retries: 0,
                hedge_delay: None,
                confident: false,
                rationale: String::new(),
                no_retry_classes: Vec::new(),
            },
        };
        reflection.recommendation = recommend(&reflection);
        reflection
    }
}

#[async_trait]
impl Memory for PostgresMemory {
    async fn put(&self, new: NewEntry) -> Result<Entry> {
        validate::new_entry(&new, &self.limits)?;
        let ttl = match new.ttl {
            None => None,
            Some(ttl) => {
                // The same bound as the in-memory memory: the expiry must be a representable time.
                chrono::Duration::from_std(ttl)
                    .ok()
                    .and_then(|d| Utc::now().checked_add_signed(d))
                    .ok_or_else(|| Error::invalid_input("ttl", format!("{ttl:?} is too long")))?;
                Some(dur_micros(ttl))
            }
        };
        let mut tags: Vec<String> = Vec::with_capacity(new.tags.len());
        for tag in new.tags {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        let value = serde_json::to_string(&new.value)?;
        self.shared.count_statement();
        sqlx::query_as::<_, EntryRow>(stmt(&self.sql.put))
            .bind(&new.namespace)
            .bind(&new.key)
            .bind(value)
            .bind(tags)
            .bind(ttl)
            .fetch_one(&self.shared.pool)
            .await
            .map_err(|e| db_error("store a memory entry", e))?
            .into_entry()
    }

    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Entry>> {
        validate::namespace(namespace)?;
        validate::key(key)?;
        self.shared.count_statement();
        sqlx::query_as::<_, EntryRow>(stmt(&self.sql.get))
            .bind(namespace)
            .bind(key)
            .fetch_optional(&self.shared.pool)
            .await
            .map_err(|e| db_error("read a memory entry", e))?
            .map(EntryRow::into_entry)
            .transpose()
    }

    async fn update(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
        expected_version: Option<u64>,
    ) -> Result<Entry> {
        validate::namespace(namespace)?;
        validate::key(key)?;
        validate::value(&value, &self.limits)?;
        let expected = expected_version.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        self.shared.count_statement();
        let updated = sqlx::query_as::<_, EntryRow>(stmt(&self.sql.update))
            .bind(namespace)
            .bind(key)
            .bind(serde_json::to_string(&value)?)
            .bind(expected)
            .fetch_optional(&self.shared.pool)
            .await
            .map_err(|e| db_error("update a memory entry", e))?;
        if let Some(row) = updated {
            return row.into_entry();
        }
        // Not updated: missing, or at another version. Say which.
        self.shared.count_statement();
        let current: Option<i64> = sqlx::query_scalar(stmt(&self.sql.version))
            .bind(namespace)
            .bind(key)
            .fetch_optional(&self.shared.pool)
            .await
            .map_err(|e| db_error("read a memory entry's version", e))?;
        Err(match (current, expected_version) {
            (Some(version), Some(expected)) => Error::new(
                ErrorKind::Conflict,
                format!(
                    "entry `{key}` in namespace `{namespace}` is at version {version}, not {expected}: \
                     someone wrote it since; read it again and decide"
                ),
            ),
            _ => Error::new(
                ErrorKind::NotFound,
                format!(
                    "no entry `{key}` in namespace `{namespace}` (never written, deleted or expired)"
                ),
            ),
        })
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<bool> {
        validate::namespace(namespace)?;
        validate::key(key)?;
        self.shared.count_statement();
        let live: Option<bool> = sqlx::query_scalar(stmt(&self.sql.delete))
            .bind(namespace)
            .bind(key)
            .fetch_optional(&self.shared.pool)
            .await
            .map_err(|e| db_error("delete a memory entry", e))?;
        Ok(live == Some(true))
    }

    async fn search(&self, query: &EntryQuery) -> Result<Vec<Entry>> {
        validate::query(query, &self.limits)?;
        self.shared.count_statement();
        let rows = sqlx::query_as::<_, EntryRow>(stmt(&self.sql.search))
            .bind(&query.namespace)
            .bind(query.key_prefix.as_deref().unwrap_or(""))
            .bind(&query.tags)
            .bind(i64::try_from(query.limit).unwrap_or(i64::MAX))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("search memory entries", e))?;
        rows.into_iter().map(EntryRow::into_entry).collect()
    }

    async fn record(&self, runs: &[ExecutionRecord]) -> Result<()> {
        if runs.is_empty() {
            return Ok(());
        }
        let kinds: Vec<&str> = runs.iter().map(|r| r.kind.as_str()).collect();
        let jobs: Vec<Uuid> = runs.iter().map(|r| *r.job_id.as_uuid()).collect();
        let strategies: Vec<&str> = runs.iter().map(|r| r.strategy.as_str()).collect();
        let outcomes: Vec<&str> = runs.iter().map(|r| outcome_name(r.outcome)).collect();
        let durations: Vec<i64> = runs
            .iter()
            .map(|r| i64::try_from(r.duration.as_nanos()).unwrap_or(i64::MAX))
            .collect();
        let attempts: Vec<i32> = runs
            .iter()
            .map(|r| i32::try_from(r.attempt).unwrap_or(i32::MAX))
            .collect();
        let inline: Vec<i32> = runs
            .iter()
            .map(|r| i32::try_from(r.inline_retries).unwrap_or(i32::MAX))
            .collect();
        let classes: Vec<Option<&str>> = runs.iter().map(|r| r.error_class.as_deref()).collect();
        let ats: Vec<DateTime<Utc>> = runs.iter().map(|r| r.at).collect();
        let decisions: Vec<Option<&str>> = runs.iter().map(|r| r.decision.as_deref()).collect();
        self.shared.count_statement();
        sqlx::query(stmt(&self.sql.record))
            .bind(kinds)
            .bind(jobs)
            .bind(strategies)
            .bind(outcomes)
            .bind(durations)
            .bind(attempts)
            .bind(inline)
            .bind(classes)
            .bind(ats)
            .bind(decisions)
            .execute(&self.shared.pool)
            .await
            .map_err(|e| db_error("record executions", e))?;
        Ok(())
    }

    async fn reflect(&self, kind: &str, window: Window) -> Result<Reflection> {
        validate::kind(kind)?;
        let query = match window {
            Window::All => sqlx::query_as::<_, StatsRow>(stmt(&self.sql.reflect_all)).bind(kind),
            Window::Last(n) => sqlx::query_as::<_, StatsRow>(stmt(&self.sql.reflect_last))
                .bind(kind)
                .bind(i64::try_from(n).unwrap_or(i64::MAX)),
            // A span reaching before any representable time is the whole history.
            Window::Since(span) if span > Duration::from_secs(100 * 365 * 24 * 3600) => {
                sqlx::query_as::<_, StatsRow>(stmt(&self.sql.reflect_all)).bind(kind)
            }
            Window::Since(span) => sqlx::query_as::<_, StatsRow>(stmt(&self.sql.reflect_since))
                .bind(kind)
                .bind(dur_micros(span)),
        };
        self.shared.count_statement();
        let row = query
            .fetch_one(&self.shared.pool)
            .await
            .map_err(|e| db_error("reflect on executions", e))?;
        Ok(Self::reflection(kind, row))
    }
}
