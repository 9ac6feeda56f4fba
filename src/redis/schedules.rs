//! The Redis schedule store: each schedule a JSON record in one hash, its version in
//! another, and the active ones in a sorted set by next tick. Every write is a
//! compare-and-set script on the version.
//!
//! Keys, under the state store's namespace (one hash tag, so one cluster slot):
//!   `P:sch`      HASH id -> the record (JSON)
//!   `P:schv`     HASH id -> its version
//!   `P:sch:due`  ZSET id, score the next tick (us): active schedules only

use std::sync::LazyLock;

use ::redis::Value;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::client::{Link, Lua, arg};
use super::reply::{array, unexpected};
use crate::schedule::{Advance, Fire, Schedule, ScheduleRecord, ScheduleStore, Upserted};
use crate::{Error, ErrorKind, Result};

static PUT: LazyLock<Lua> =
    LazyLock::new(|| Lua::new("schedule put", include_str!("lua/schedule/put.lua")));
static DELETE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new("schedule delete", include_str!("lua/schedule/delete.lua")));

/// How many times a read-modify-write that lost a race is tried again.
const RETRIES: usize = 16;

/// Schedules in Redis, beside a [`RedisState`](super::RedisState)'s jobs.
pub struct RedisSchedules {
    link: Link,
    prefix: String,
}

impl std::fmt::Debug for RedisSchedules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSchedules")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn decode(id: &str, bytes: &[u8]) -> Result<ScheduleRecord> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            format!("the stored record of schedule `{id}` does not read: {e}"),
        )
    })
}

impl RedisSchedules {
    pub(crate) fn new(link: Link, prefix: String) -> Self {
        Self { link, prefix }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    /// Write each record whose stored version is still the one read (0: none stored), in
    /// one script call; answered in order.
    async fn put_many(&self, items: &[(&ScheduleRecord, u64)]) -> Result<Vec<bool>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = Vec::with_capacity(items.len() * 5);
        for (record, read) in items {
            let json = serde_json::to_vec(record).map_err(|e| {
                Error::new(
                    ErrorKind::Serialization,
                    format!("schedule `{}`: {e}", record.schedule.id),
                )
            })?;
            let due = match record.next_run_at {
                Some(t) if !record.schedule.paused => t.timestamp_micros().to_string(),
                _ => String::new(),
            };
            args.extend([
                arg(&record.schedule.id),
                arg(read),
                json,
                arg(record.version),
                arg(due),
            ]);
        }
        let reply = self.link.eval(&PUT, &[&self.prefix], &args).await?;
        Ok(array("schedule writes", reply)?
            .iter()
            .map(|v| matches!(v, Value::Int(1)))
            .collect())
    }

    /// Write `record` if the stored version is still `read` (0: none stored).
    async fn put(&self, record: &ScheduleRecord, read: u64) -> Result<bool> {
        Ok(self.put_many(&[(record, read)]).await?.first() == Some(&true))
    }

    /// Read, change with `f` (`None`: no change), write if nobody wrote meanwhile; again
    /// when somebody did. Returns the record written (or read, when unchanged).
    async fn update(
        &self,
        id: &str,
        mut f: impl FnMut(Option<ScheduleRecord>) -> Option<ScheduleRecord>,
    ) -> Result<Option<ScheduleRecord>> {
        for _ in 0..RETRIES {
            let stored = self.get(id).await?;
            let read = stored.as_ref().map_or(0, |r| r.version);
            let Some(next) = f(stored.clone()) else {
                return Ok(stored);
            };
            if self.put(&next, read).await? {
                return Ok(Some(next));
            }
        }
        Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "schedule `{id}` kept changing under {RETRIES} attempts to update it; try again"
            ),
        ))
    }
}

#[async_trait]
impl ScheduleStore for RedisSchedules {
    async fn upsert(
        &self,
        schedule: Schedule,
        next_run_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(ScheduleRecord, Upserted)> {
        let id = schedule.id.clone();
        let mut what = Upserted::Unchanged;
        let record = self
            .update(&id, |stored| {
                let (record, done) =
                    crate::schedule::upserted(stored.as_ref(), schedule.clone(), next_run_at, now);
                what = done;
                (done != Upserted::Unchanged).then_some(record)
            })
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Backend, format!("schedule `{id}` vanished")))?;
        Ok((record, what))
    }

    async fn get(&self, id: &str) -> Result<Option<ScheduleRecord>> {
        let reply = self
            .link
            .query(
                "read a schedule",
                ::redis::cmd("HGET").arg(self.key("sch")).arg(id),
            )
            .await?;
        match reply {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => decode(id, &bytes).map(Some),
            other => Err(unexpected("a schedule", &other)),
        }
    }

    async fn list(&self) -> Result<Vec<ScheduleRecord>> {
        let reply = self
            .link
            .query("list schedules", ::redis::cmd("HVALS").arg(self.key("sch")))
            .await?;
        let mut out = Vec::new();
        for value in array("schedules", reply)? {
            let Value::BulkString(bytes) = value else {
                return Err(unexpected("a schedule", &value));
            };
            out.push(decode("?", &bytes)?);
        }
        out.sort_by(|a, b| a.schedule.id.cmp(&b.schedule.id));
        Ok(out)
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        let reply = self.link.eval(&DELETE, &[&self.prefix], &[arg(id)]).await?;
        Ok(matches!(reply, Value::Int(1)))
    }

    async fn set_paused(
        &self,
        id: &str,
        paused: bool,
        next_run_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<ScheduleRecord>> {
        self.update(id, |stored| {
            let mut record = stored?;
            record.schedule.paused = paused;
            record.next_run_at = if paused { None } else { next_run_at };
            record.version = record.version.saturating_add(1);
            record.updated_at = now;
            Some(record)
        })
        .await
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<ScheduleRecord>> {
        let reply = self
            .link
            .query(
                "read due schedules",
                ::redis::cmd("ZRANGE")
                    .arg(self.key("sch:due"))
                    .arg("-inf")
                    .arg(now.timestamp_micros())
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        let ids: Vec<Vec<u8>> = array("due schedules", reply)?
            .into_iter()
            .filter_map(|v| match v {
                Value::BulkString(id) => Some(id),
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let reply = self
            .link
            .query(
                "read due schedules",
                ::redis::cmd("HMGET").arg(self.key("sch")).arg(&ids),
            )
            .await?;
        let mut out = Vec::new();
        for value in array("due schedules", reply)? {
            // (deleted since the first read: gone)
            if let Value::BulkString(bytes) = value {
                let record = decode("?", &bytes)?;
                if !record.schedule.paused && record.next_run_at.is_some_and(|t| t <= now) {
                    out.push(record);
                }
            }
        }
        out.sort_by_key(|r| r.next_run_at);
        Ok(out)
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
        let Some(record) = self.get(id).await? else {
            return Ok(false);
        };
        if record.version != version || record.schedule.paused {
            return Ok(false);
        }
        let item = Advance {
            record: &record,
            next_run_at,
            fires: fires.to_vec(),
            skipped,
        };
        Ok(self.advance_many(&[item], now).await?.first() == Some(&true))
    }

    async fn advance_many(&self, items: &[Advance<'_>], now: DateTime<Utc>) -> Result<Vec<bool>> {
        // Each computed from the record as read; the script writes it only if the version
        // is still the one read (a pause bumps it, so a paused schedule is not advanced).
        let advanced: Vec<ScheduleRecord> = items.iter().map(|item| item.advanced(now)).collect();
        let pairs: Vec<(&ScheduleRecord, u64)> = advanced
            .iter()
            .zip(items)
            .map(|(record, item)| (record, item.record.version))
            .collect();
        self.put_many(&pairs).await
    }

    async fn record_trigger(&self, id: &str, fire: Fire, now: DateTime<Utc>) -> Result<bool> {
        let written = self
            .update(id, |stored| {
                let record = stored?;
                Some(Advance::trigger(&record, fire.clone()).advanced(now))
            })
            .await?;
        Ok(written.is_some())
    }
}
