//! The PostgreSQL schedule store: one row per schedule, each change one statement (an
//! upsert reads its row under a lock first, in one transaction).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::FromRow;
use sqlx::types::Json;

use super::shared::{Shared, db_error, stmt};
use crate::Result;
use crate::schedule::{Advance, Fire, HISTORY, Schedule, ScheduleRecord, ScheduleStore, Upserted};

const COLUMNS: &str =
    "id, definition, paused, next_run_at, version, created_at, updated_at, fired, skipped, history";

const GET: &str = "SELECT {c} FROM {s}.schedules WHERE id = $1";
const GET_FOR_UPDATE: &str = "SELECT {c} FROM {s}.schedules WHERE id = $1 FOR UPDATE";
const LIST: &str = "SELECT {c} FROM {s}.schedules ORDER BY id";
const DELETE: &str = "DELETE FROM {s}.schedules WHERE id = $1";
const DUE: &str = "SELECT {c} FROM {s}.schedules \
    WHERE NOT paused AND next_run_at IS NOT NULL AND next_run_at <= $1 \
    ORDER BY next_run_at LIMIT $2";
const PUT: &str = "INSERT INTO {s}.schedules AS t (id, definition, paused, next_run_at, version, \
    created_at, updated_at, fired, skipped, history) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
    ON CONFLICT (id) DO UPDATE SET definition = excluded.definition, paused = excluded.paused, \
    next_run_at = excluded.next_run_at, version = excluded.version, \
    updated_at = excluded.updated_at";
const SET_PAUSED: &str = "UPDATE {s}.schedules SET paused = $2, next_run_at = $3, \
    version = version + 1, updated_at = $4 WHERE id = $1 RETURNING {c}";
/// The history gains `$n` fires, keeping the latest `HISTORY`.
const HISTORY_APPEND: &str = "(SELECT coalesce(jsonb_agg(e ORDER BY n), '[]'::jsonb) FROM \
    (SELECT e, n FROM jsonb_array_elements(history || $H::jsonb) WITH ORDINALITY AS x(e, n) \
     ORDER BY n DESC LIMIT {keep}) kept)";
const ADVANCE_MANY: &str = "UPDATE {s}.schedules AS t SET next_run_at = u.next_run_at, \
    fired = t.fired + u.nf, skipped = t.skipped + u.skipped, \
    history = (SELECT coalesce(jsonb_agg(e ORDER BY n), '[]'::jsonb) FROM \
        (SELECT e, n FROM jsonb_array_elements(t.history || u.fires::jsonb) \
         WITH ORDINALITY AS x(e, n) ORDER BY n DESC LIMIT {keep}) kept), \
    version = t.version + 1, updated_at = $7 \
    FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::bigint[], $5::bigint[], \
                $6::text[]) AS u(id, version, next_run_at, nf, skipped, fires) \
    WHERE t.id = u.id AND t.version = u.version AND NOT t.paused \
    RETURNING t.id";
const TRIGGER: &str = "UPDATE {s}.schedules SET fired = fired + 1, history = {history}, \
    version = version + 1, updated_at = $3 WHERE id = $1";

#[derive(FromRow)]
struct Row {
    id: String,
    definition: Json<Schedule>,
    paused: bool,
    next_run_at: Option<DateTime<Utc>>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    fired: i64,
    skipped: i64,
    history: Json<Vec<Fire>>,
}

impl Row {
    fn record(self) -> ScheduleRecord {
        let mut schedule = self.definition.0;
        schedule.id = self.id;
        schedule.paused = self.paused;
        ScheduleRecord {
            schedule,
            next_run_at: self.next_run_at,
            version: u64::try_from(self.version).unwrap_or(0),
            created_at: self.created_at,
            updated_at: self.updated_at,
            fired: u64::try_from(self.fired).unwrap_or(0),
            skipped: u64::try_from(self.skipped).unwrap_or(0),
            history: self.history.0,
        }
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

struct Statements {
    get: Arc<str>,
    get_for_update: Arc<str>,
    list: Arc<str>,
    delete: Arc<str>,
    due: Arc<str>,
    put: Arc<str>,
    set_paused: Arc<str>,
    advance_many: Arc<str>,
    trigger: Arc<str>,
}

/// Schedules in PostgreSQL, in the backend's schema (table `schedules`).
pub struct PostgresSchedules {
    shared: Arc<Shared>,
    sql: Statements,
}

impl std::fmt::Debug for PostgresSchedules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSchedules")
            .field("schema", &self.shared.config.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresSchedules {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let with = |t: &str, h: &str| {
            shared.sql(
                &t.replace("{c}", COLUMNS).replace(
                    "{history}",
                    &HISTORY_APPEND
                        .replace("$H", h)
                        .replace("{keep}", &HISTORY.to_string()),
                ),
            )
        };
        let sql = Statements {
            get: with(GET, ""),
            get_for_update: with(GET_FOR_UPDATE, ""),
            list: with(LIST, ""),
            delete: with(DELETE, ""),
            due: with(DUE, ""),
            put: with(PUT, ""),
            set_paused: with(SET_PAUSED, ""),
            advance_many: shared.sql(&ADVANCE_MANY.replace("{keep}", &HISTORY.to_string())),
            trigger: with(TRIGGER, "$2"),
        };
        Self { shared, sql }
    }

    /// Advance the schedules given column by column in one statement; the ids whose
    /// version still matched.
    #[allow(clippy::too_many_arguments)]
    async fn advance_rows(
        &self,
        ids: Vec<&str>,
        versions: Vec<i64>,
        next_run_at: Vec<Option<DateTime<Utc>>>,
        fired: Vec<i64>,
        skipped: Vec<i64>,
        fires: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<std::collections::HashSet<String>> {
        self.shared.count_statement();
        let won: Vec<(String,)> = sqlx::query_as(stmt(&self.sql.advance_many))
            .bind(ids)
            .bind(versions)
            .bind(next_run_at)
            .bind(fired)
            .bind(skipped)
            .bind(fires)
            .bind(now)
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("advance schedules", e))?;
        Ok(won.into_iter().map(|(id,)| id).collect())
    }
}

fn fires_json(id: &str, fires: &[Fire]) -> Result<String> {
    serde_json::to_string(fires).map_err(|e| {
        crate::Error::new(
            crate::ErrorKind::Serialization,
            format!("fires of schedule `{id}`: {e}"),
        )
    })
}

#[async_trait]
impl ScheduleStore for PostgresSchedules {
    async fn upsert(
        &self,
        schedule: Schedule,
        next_run_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(ScheduleRecord, Upserted)> {
        let what = "upsert a schedule";
        self.shared.count_statement();
        let mut tx = self
            .shared
            .pool
            .begin()
            .await
            .map_err(|e| db_error(what, e))?;
        let stored = sqlx::query_as::<_, Row>(stmt(&self.sql.get_for_update))
            .bind(&schedule.id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| db_error(what, e))?
            .map(Row::record);
        let (record, done) = crate::schedule::upserted(stored.as_ref(), schedule, next_run_at, now);
        if done != Upserted::Unchanged {
            sqlx::query(stmt(&self.sql.put))
                .bind(&record.schedule.id)
                .bind(Json(&record.schedule))
                .bind(record.schedule.paused)
                .bind(record.next_run_at)
                .bind(int(record.version))
                .bind(record.created_at)
                .bind(record.updated_at)
                .bind(int(record.fired))
                .bind(int(record.skipped))
                .bind(Json(&record.history))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(what, e))?;
        }
        tx.commit().await.map_err(|e| db_error(what, e))?;
        Ok((record, done))
    }

    async fn get(&self, id: &str) -> Result<Option<ScheduleRecord>> {
        self.shared.count_statement();
        Ok(sqlx::query_as::<_, Row>(stmt(&self.sql.get))
            .bind(id)
            .fetch_optional(&self.shared.pool)
            .await
            .map_err(|e| db_error("read a schedule", e))?
            .map(Row::record))
    }

    async fn list(&self) -> Result<Vec<ScheduleRecord>> {
        self.shared.count_statement();
        Ok(sqlx::query_as::<_, Row>(stmt(&self.sql.list))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("list schedules", e))?
            .into_iter()
            .map(Row::record)
            .collect())
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        self.shared.count_statement();
        Ok(sqlx::query(stmt(&self.sql.delete))
            .bind(id)
            .execute(&self.shared.pool)
            .await
            .map_err(|e| db_error("delete a schedule", e))?
            .rows_affected()
            > 0)
    }

    async fn set_paused(
        &self,
        id: &str,
        paused: bool,
        next_run_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<ScheduleRecord>> {
        self.shared.count_statement();
        Ok(sqlx::query_as::<_, Row>(stmt(&self.sql.set_paused))
            .bind(id)
            .bind(paused)
            .bind(if paused { None } else { next_run_at })
            .bind(now)
            .fetch_optional(&self.shared.pool)
            .await
            .map_err(|e| db_error("pause or resume a schedule", e))?
            .map(Row::record))
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<ScheduleRecord>> {
        self.shared.count_statement();
        Ok(sqlx::query_as::<_, Row>(stmt(&self.sql.due))
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("read due schedules", e))?
            .into_iter()
            .map(Row::record)
            .collect())
    }

    async fn advance(
        &self,
        id: &str,
        version: u64,
        next_run_at: Option<DateTime<Utc>>,
        fires: &[Fire],
        skipped: u64,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let won = self
            .advance_rows(
                vec![id],
                vec![int(version)],
                vec![next_run_at],
                vec![i64::try_from(fires.len()).unwrap_or(i64::MAX)],
                vec![int(skipped)],
                vec![fires_json(id, fires)?],
                now,
            )
            .await?;
        Ok(won.contains(id))
    }

    async fn advance_many(&self, items: &[Advance<'_>], now: DateTime<Utc>) -> Result<Vec<bool>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let won = self
            .advance_rows(
                items
                    .iter()
                    .map(|i| i.record.schedule.id.as_str())
                    .collect(),
                items.iter().map(|i| int(i.record.version)).collect(),
                items.iter().map(|i| i.next_run_at).collect(),
                items
                    .iter()
                    .map(|i| i64::try_from(i.fires.len()).unwrap_or(i64::MAX))
                    .collect(),
                items.iter().map(|i| int(i.skipped)).collect(),
                items
                    .iter()
                    .map(|i| fires_json(&i.record.schedule.id, &i.fires))
                    .collect::<Result<_>>()?,
                now,
            )
            .await?;
        Ok(items
            .iter()
            .map(|i| won.contains(&i.record.schedule.id))
            .collect())
    }

    async fn record_trigger(&self, id: &str, fire: Fire, now: DateTime<Utc>) -> Result<bool> {
        self.shared.count_statement();
        Ok(sqlx::query(stmt(&self.sql.trigger))
            .bind(id)
            .bind(Json([fire]))
            .bind(now)
            .execute(&self.shared.pool)
            .await
            .map_err(|e| db_error("record a trigger", e))?
            .rows_affected()
            > 0)
    }
}
