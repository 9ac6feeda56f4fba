//! The Redis state store: job records in hashes, Lua compare-and-set transitions, indexes
//! for listing, retention.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use ::redis::Value;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_redis::Pool;
use serde::{Deserialize, Serialize};

use super::types::{
    CancelOutcome, Claim, Created, Finish, Heartbeat, JobFilter, Order, Page, Paged, StateCounts,
    StateManager, StateTally, Transition, TransitionResult,
};
use crate::job::{JobEvent, JobId, JobRecord, JobState, Payload, WorkerId};
use crate::queue::client::{Link, LinkConfig, Lua, connection_settings, validate_namespace};
use crate::queue::reply::{array, int, need_int, need_text, owned, text, unexpected};
use crate::{Error, ErrorKind, Result};

macro_rules! state_script {
    ($name:literal) => {
        Lua::new(
            $name,
            concat!(
                include_str!("redis/common.lua"),
                "\n",
                include_str!(concat!("redis/", $name, ".lua"))
            ),
        )
    };
}

struct Scripts {
    create: Lua,
    claim: Lua,
    heartbeat: Lua,
    finish: Lua,
    cancel: Lua,
    list: Lua,
    counts: Lua,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    create: state_script!("create"),
    claim: state_script!("claim"),
    heartbeat: state_script!("heartbeat"),
    finish: state_script!("finish"),
    cancel: state_script!("cancel"),
    list: state_script!("list"),
    counts: state_script!("counts"),
});

/// Settings of a [`RedisState`].
///
/// ```
/// use std::time::Duration;
/// use jobforge::state::RedisStateConfig;
///
/// let config = RedisStateConfig::new("redis://127.0.0.1:6379")
///     .with_namespace("billing")
///     .with_retention(Duration::from_secs(3600));
/// assert_eq!(config.retention(), Duration::from_secs(3600));
/// ```
// `Debug` is derived: the URL sits in `LinkConfig`, whose `Debug` hides the password.
#[derive(Clone, Debug)]
pub struct RedisStateConfig {
    link: LinkConfig,
    namespace: String,
    retention: Duration,
    dead_retention: Duration,
    max_events_per_job: usize,
    chunk_size: usize,
    sweep_batch: usize,
    list_scan_budget: usize,
}

impl Default for RedisStateConfig {
    /// `redis://127.0.0.1:6379`, namespace `jobforge`.
    fn default() -> Self {
        Self::new("redis://127.0.0.1:6379")
    }
}

connection_settings!(RedisStateConfig);

impl RedisStateConfig {
    /// Settings for the server at `url`, with namespace `jobforge`, a pool of 8 connections,
    /// 5 s connect and 10 s response timeouts, finished jobs kept 24 h (dead ones 7 days), 64
    /// events per job, and 1,000 jobs per script call.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            link: LinkConfig::new(url.into(), 8, Duration::from_secs(10)),
            namespace: "jobforge".to_owned(),
            retention: Duration::from_secs(24 * 3600),
            dead_retention: Duration::from_secs(7 * 24 * 3600),
            max_events_per_job: 64,
            chunk_size: 1_000,
            sweep_batch: 1_000,
            list_scan_budget: 5_000,
        }
    }

    /// How long succeeded and cancelled jobs (and their idempotency keys) are kept
    /// (default 24 h).
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How long dead jobs are kept (default 7 days).
    #[must_use]
    pub fn with_dead_retention(mut self, retention: Duration) -> Self {
        self.dead_retention = retention;
        self
    }

    /// Events kept per job, creation included (default 64): the first transition and the
    /// latest ones.
    #[must_use]
    pub fn with_max_events_per_job(mut self, max: usize) -> Self {
        self.max_events_per_job = max;
        self
    }

    /// Most jobs handled by one script call (default 1,000).
    #[must_use]
    pub fn with_chunk_size(mut self, n: usize) -> Self {
        self.chunk_size = n;
        self
    }

    /// Most expired records dropped per call that sweeps (default 1,000).
    #[must_use]
    pub fn with_sweep_batch(mut self, n: usize) -> Self {
        self.sweep_batch = n;
        self
    }

    /// Most index entries one `list` call examines (default 5,000; at least a page). A
    /// filtered listing that runs out returns a short page and a cursor to continue.
    #[must_use]
    pub fn with_list_scan_budget(mut self, n: usize) -> Self {
        self.list_scan_budget = n;
        self
    }

    /// How long finished jobs are kept.
    #[must_use]
    pub fn retention(&self) -> Duration {
        self.retention
    }

    fn validate(&self) -> Result<()> {
        validate_namespace(&self.namespace)?;
        if self.chunk_size == 0 || self.chunk_size > 5_000 {
            return Err(Error::invalid_input(
                "chunk_size",
                format!("{} is out of range; use 1 to 5,000", self.chunk_size),
            ));
        }
        if self.max_events_per_job < 2 {
            return Err(Error::invalid_input(
                "max_events_per_job",
                "must be at least 2 (creation and one transition)",
            ));
        }
        Ok(())
    }
}

/// The Redis state store: with it (and [`RedisStreamsQueue`](crate::queue::RedisStreamsQueue))
/// a Redis-only deployment works end to end.
///
/// Each job is one hash; every transition is a Lua compare-and-set on its state, lease owner
/// and attempt, so two workers never both finish a job and a worker whose lease was taken
/// over cannot overwrite the new owner's result. Idempotency keys are `SET NX`; history is
/// capped per job; sorted-set indexes by state and kind give keyset pagination; finished jobs
/// expire after the retention (default 24 h, dead ones 7 days), so memory stays bounded.
/// All keys of a namespace share the hash tag `{<namespace>}`.
///
/// ```no_run
/// use std::sync::Arc;
/// use jobforge::prelude::*;
/// use jobforge::state::{RedisState, RedisStateConfig};
///
/// # async fn run() -> jobforge::Result<()> {
/// let state = RedisState::connect(RedisStateConfig::new("redis://127.0.0.1:6379")).await?;
/// let orchestrator = Orchestrator::builder().state(Arc::new(state)).build()?;
/// # drop(orchestrator);
/// # Ok(())
/// # }
/// ```
pub struct RedisState {
    link: Link,
    config: RedisStateConfig,
    prefix: String,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("config", &self.config)
            .field("round_trips", &self.link.round_trips())
            .finish_non_exhaustive()
    }
}

/// What a record keeps that never changes, stored as one JSON field `d`.
#[derive(Serialize)]
struct BlobOut<'a> {
    payload: &'a Payload,
    queue: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    priority: i16,
    created_at: i64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strategy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &i16) -> bool {
    *n == 0
}

#[derive(Deserialize)]
struct BlobIn {
    payload: Payload,
    queue: String,
    #[serde(default)]
    priority: i16,
    created_at: i64,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    strategy: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// The changing part of a record, field `m`, packed little-endian so the scripts read and
/// write it with one `struct.unpack`/`struct.pack` call: state code (u8: 1 queued, 2 running,
/// 3 succeeded, 4 dead, 5 cancelled), flags (u8: 1 started, 2 finished, 4 lease expiry,
/// 8 cancel requested), version (f64), attempt (u32), max attempts (u32), run_at, updated,
/// started, finished, lease expiry (f64 microseconds), last event (u32), oldest kept event
/// (u32), owner (u32 length, then the bytes).
fn encode_m(r: &JobRecord) -> Vec<u8> {
    let owner = r.lease_owner.as_ref().map_or("", WorkerId::as_str);
    let mut out = Vec::with_capacity(70 + owner.len());
    out.push(state_code(r.state));
    let flags = u8::from(r.started_at.is_some())
        | (u8::from(r.finished_at.is_some()) << 1)
        | (u8::from(r.lease_expires_at.is_some()) << 2)
        | (u8::from(r.cancel_requested) << 3);
    out.push(flags);
    #[allow(clippy::cast_precision_loss)] // versions stay far below 2^53
    out.extend_from_slice(&(r.version as f64).to_le_bytes());
    out.extend_from_slice(&r.attempt.to_le_bytes());
    out.extend_from_slice(&r.max_attempts.to_le_bytes());
    for at in [
        Some(r.run_at),
        Some(r.updated_at),
        r.started_at,
        r.finished_at,
        r.lease_expires_at,
    ] {
        #[allow(clippy::cast_precision_loss)] // microseconds since 1970 stay below 2^53
        out.extend_from_slice(&(at.map_or(0, micros) as f64).to_le_bytes());
    }
    out.extend_from_slice(&0u32.to_le_bytes()); // last event
    out.extend_from_slice(&2u32.to_le_bytes()); // oldest kept event after the first
    out.extend_from_slice(&u32::try_from(owner.len()).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(owner.as_bytes());
    out
}

fn state_code(state: JobState) -> u8 {
    match state {
        JobState::Queued => 1,
        JobState::Running => 2,
        JobState::Succeeded => 3,
        JobState::Dead => 4,
        JobState::Cancelled => 5,
    }
}

struct Mutable {
    state: JobState,
    version: u64,
    attempt: u32,
    max_attempts: u32,
    run_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    lease_expires_at: Option<DateTime<Utc>>,
    cancel_requested: bool,
    lease_owner: Option<WorkerId>,
}

fn decode_m(m: &[u8]) -> Option<Mutable> {
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
            let (head, rest) = self.0.split_first_chunk::<N>()?;
            self.0 = rest;
            Some(*head)
        }
        fn u8(&mut self) -> Option<u8> {
            self.take::<1>().map(|[b]| b)
        }
        fn u32(&mut self) -> Option<u32> {
            self.take().map(u32::from_le_bytes)
        }
        fn f64(&mut self) -> Option<f64> {
            self.take().map(f64::from_le_bytes)
        }
        #[allow(clippy::cast_possible_truncation)] // written from whole microseconds
        fn time(&mut self) -> Option<DateTime<Utc>> {
            self.f64().map(|us| from_micros(us as i64))
        }
    }
    let mut r = Reader(m);
    let state = match r.u8()? {
        1 => JobState::Queued,
        2 => JobState::Running,
        3 => JobState::Succeeded,
        4 => JobState::Dead,
        5 => JobState::Cancelled,
        _ => return None,
    };
    let flags = r.u8()?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // whole, non-negative
    let version = r.f64()? as u64;
    let attempt = r.u32()?;
    let max_attempts = r.u32()?;
    let run_at = r.time()?;
    let updated_at = r.time()?;
    let started_at = r.time()?;
    let finished_at = r.time()?;
    let lease_expires_at = r.time()?;
    let _events = (r.u32()?, r.u32()?);
    let len = usize::try_from(r.u32()?).ok()?;
    let owner = std::str::from_utf8(r.0.get(..len)?).ok()?;
    Some(Mutable {
        state,
        version,
        attempt,
        max_attempts,
        run_at,
        updated_at,
        started_at: (flags & 1 != 0).then_some(started_at),
        finished_at: (flags & 2 != 0).then_some(finished_at),
        lease_expires_at: (flags & 4 != 0).then_some(lease_expires_at),
        cancel_requested: flags & 8 != 0,
        lease_owner: (!owner.is_empty()).then(|| WorkerId::new(owner)),
    })
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn dur_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn arg(s: impl ToString) -> Vec<u8> {
    s.to_string().into_bytes()
}

fn bad_record(id: &str, what: &str) -> Error {
    Error::new(
        ErrorKind::Backend,
        format!(
            "job {id} in Redis has a malformed `{what}` field; was it written by another program?"
        ),
    )
}

/// Build a record from `[id, d, k, m, res, le]`.
fn parse_record(values: &[Value]) -> Result<JobRecord> {
    let [id, d, k, m, res, le, ..] = values else {
        return Err(unexpected("job record", &Value::Array(values.to_vec())));
    };
    let id_text = need_text("job id", id)?;
    let id: JobId = id_text.parse()?;
    let blob: BlobIn = serde_json::from_str(text(d).ok_or_else(|| bad_record(id_text, "d"))?)
        .map_err(|_| bad_record(id_text, "d"))?;
    let m = match m {
        Value::BulkString(bytes) => decode_m(bytes),
        _ => None,
    }
    .ok_or_else(|| bad_record(id_text, "m"))?;
    Ok(JobRecord {
        id,
        kind: owned(k).ok_or_else(|| bad_record(id_text, "k"))?,
        queue: blob.queue,
        payload: blob.payload,
        state: m.state,
        priority: blob.priority,
        attempt: m.attempt,
        max_attempts: m.max_attempts,
        timeout: blob.timeout_ms.map(Duration::from_millis),
        idempotency_key: blob.idempotency_key,
        tags: blob.tags,
        tenant: blob.tenant,
        strategy: blob.strategy,
        run_at: m.run_at,
        created_at: from_micros(blob.created_at),
        updated_at: m.updated_at,
        started_at: m.started_at,
        finished_at: m.finished_at,
        result: match text(res) {
            Some(json) => Some(Payload::from_json(json).map_err(|_| bad_record(id_text, "res"))?),
            None => None,
        },
        last_error: owned(le),
        lease_owner: m.lease_owner,
        lease_expires_at: m.lease_expires_at,
        cancel_requested: m.cancel_requested,
        version: m.version,
    })
}

/// One history line: `<at>|<from>|<to>|<attempt>|<worker length>|<worker><+reason | ->`.
fn parse_event(id: JobId, line: &str) -> Option<JobEvent> {
    let mut parts = line.splitn(5, '|');
    let at = from_micros(parts.next()?.parse().ok()?);
    let from: JobState = parts.next()?.parse().ok()?;
    let to: JobState = parts.next()?.parse().ok()?;
    let attempt: u32 = parts.next()?.parse().ok()?;
    let rest = parts.next()?;
    let (wlen, rest) = rest.split_once('|')?;
    let wlen: i64 = wlen.parse().ok()?;
    let (worker, rest) = if wlen < 0 {
        (None, rest)
    } else {
        let n = usize::try_from(wlen).ok()?;
        if !rest.is_char_boundary(n) {
            return None;
        }
        let (w, r) = rest.split_at(n);
        (Some(WorkerId::new(w)), r)
    };
    let reason = rest.strip_prefix('+').map(str::to_owned);
    Some(JobEvent {
        job_id: id,
        at,
        from: Some(from),
        to,
        attempt,
        worker,
        reason,
    })
}

impl RedisState {
    /// Connect with a pool of its own. Fails at once, saying what to check, when the URL is
    /// malformed or the server does not answer.
    pub async fn connect(config: RedisStateConfig) -> Result<Self> {
        config.validate()?;
        let link = Link::connect(&config.link, "state").await?;
        Ok(Self::from_link(link, config))
    }

    /// Use a pool the host built (shared with the queue, say).
    pub fn with_pool(pool: Pool, config: RedisStateConfig) -> Result<Self> {
        config.validate()?;
        let link = Link::with_pool(pool, &config.link.url, "state")?;
        Ok(Self::from_link(link, config))
    }

    fn from_link(link: Link, config: RedisStateConfig) -> Self {
        let prefix = format!("{{{}}}", config.namespace);
        Self {
            link,
            config,
            prefix,
        }
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &Pool {
        self.link.pool()
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &RedisStateConfig {
        &self.config
    }

    /// Requests sent to Redis so far (a script call counts once).
    #[must_use]
    pub fn round_trips(&self) -> u64 {
        self.link.round_trips()
    }

    /// Drop records whose retention ran out now (at most the sweep batch). It also happens
    /// as jobs are claimed and finished, and at every `counts`. Returns how many went.
    pub async fn sweep(&self) -> Result<usize> {
        let (swept, _) = self.counts_raw().await?;
        Ok(swept)
    }

    fn job_key(&self, id: JobId) -> String {
        format!("{}:j:{id}", self.prefix)
    }

    async fn counts_raw(&self) -> Result<(usize, Vec<Value>)> {
        let reply = self
            .link
            .eval(
                &SCRIPTS.counts,
                &[&self.prefix],
                &[arg(self.config.sweep_batch)],
            )
            .await?;
        let mut parts = array("counts", reply)?.into_iter();
        let swept = parts.next().as_ref().and_then(int).unwrap_or(0);
        let flat = array("counts", parts.next().unwrap_or(Value::Nil))?;
        Ok((usize::try_from(swept).unwrap_or(0), flat))
    }

    async fn chunks(
        &self,
        lua: &Lua,
        head: &[Vec<u8>],
        items: Vec<Vec<Vec<u8>>>,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(self.config.chunk_size) {
            let mut args: Vec<Vec<u8>> = head.to_vec();
            for item in chunk {
                args.extend(item.iter().cloned());
            }
            let reply = self.link.eval(lua, &[&self.prefix], &args).await?;
            out.extend(array(lua.name, reply)?);
        }
        Ok(out)
    }

    fn record_fields(record: &JobRecord) -> Result<Vec<Vec<u8>>> {
        let blob = serde_json::to_vec(&BlobOut {
            payload: &record.payload,
            queue: &record.queue,
            priority: record.priority,
            created_at: micros(record.created_at),
            tags: &record.tags,
            tenant: record.tenant.as_deref(),
            strategy: record.strategy.as_deref(),
            timeout_ms: record
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            idempotency_key: record.idempotency_key.as_deref(),
        })?;
        Ok(vec![
            arg(record.id),
            arg(record.idempotency_key.as_deref().unwrap_or("")),
            arg(&record.kind),
            arg(record.state),
            blob,
            encode_m(record),
            arg(record.result.as_ref().map_or("", Payload::as_str)),
            arg(record.last_error.as_deref().unwrap_or("")),
        ])
    }
}

fn finish_args(t: &Transition) -> Vec<Vec<u8>> {
    let (code, run_at, text): (&str, Option<DateTime<Utc>>, &str) = match &t.finish {
        Finish::Succeeded { result } => ("ok", None, result.as_ref().map_or("", Payload::as_str)),
        Finish::Retry { run_at, error } => ("retry", Some(*run_at), error),
        Finish::Defer { run_at, reason } => ("defer", Some(*run_at), reason),
        Finish::Dead { error } => ("dead", None, error),
        Finish::Cancelled { reason } => ("cancel", None, reason),
        Finish::Release { reason } => ("release", None, reason),
    };
    vec![
        arg(t.id),
        arg(&t.worker),
        arg(t.attempt),
        arg(code),
        run_at.map_or_else(Vec::new, |at| arg(micros(at))),
        arg(text),
    ]
}

#[async_trait]
impl StateManager for RedisState {
    async fn create(&self, jobs: Vec<JobRecord>) -> Result<Vec<Created>> {
        let items = jobs
            .iter()
            .map(Self::record_fields)
            .collect::<Result<Vec<_>>>()?;
        let replies = self.chunks(&SCRIPTS.create, &[], items).await?;
        replies
            .into_iter()
            .map(|r| {
                let parts = array("create", r)?;
                let [what, id] = parts.as_slice() else {
                    return Err(unexpected("create", &Value::Array(parts)));
                };
                let id: JobId = need_text("job id", id)?.parse()?;
                Ok(match text(what) {
                    Some("new") => Created::New(id),
                    _ => Created::Existing(id),
                })
            })
            .collect()
    }

    async fn claim(&self, ids: &[JobId], worker: &WorkerId, lease: Duration) -> Result<Vec<Claim>> {
        let head = [
            arg(worker),
            arg(dur_micros(lease)),
            arg(self.config.max_events_per_job - 1),
            arg(self.config.sweep_batch),
            arg(dur_micros(self.config.dead_retention)),
        ];
        let items = ids.iter().map(|id| vec![arg(id)]).collect();
        let replies = self.chunks(&SCRIPTS.claim, &head, items).await?;
        replies
            .into_iter()
            .map(|r| {
                let parts = array("claim", r)?;
                let what = parts.first().and_then(text).unwrap_or("");
                let id = || -> Result<JobId> {
                    need_text("job id", parts.get(1).unwrap_or(&Value::Nil))?.parse()
                };
                Ok(match what {
                    "claimed" => Claim::Claimed(parse_record(&parts[1..])?),
                    "notdue" => Claim::NotDue {
                        id: id()?,
                        run_at: from_micros(need_int(
                            "run_at",
                            parts.get(2).unwrap_or(&Value::Nil),
                        )?),
                    },
                    "exhausted" => Claim::Exhausted {
                        id: id()?,
                        reason: parts.get(2).and_then(owned).unwrap_or_default(),
                    },
                    "skipped" => Claim::Skipped {
                        id: id()?,
                        state: parts.get(2).and_then(text).and_then(|s| s.parse().ok()),
                    },
                    _ => return Err(unexpected("claim", &Value::Array(parts))),
                })
            })
            .collect()
    }

    async fn heartbeat(
        &self,
        ids: &[JobId],
        worker: &WorkerId,
        lease: Duration,
    ) -> Result<Vec<Heartbeat>> {
        let head = [arg(worker), arg(dur_micros(lease))];
        let items = ids.iter().map(|id| vec![arg(id)]).collect();
        let replies = self.chunks(&SCRIPTS.heartbeat, &head, items).await?;
        Ok(replies
            .iter()
            .map(|r| match text(r) {
                Some("held") => Heartbeat::Held {
                    cancel_requested: false,
                },
                Some("cancel") => Heartbeat::Held {
                    cancel_requested: true,
                },
                _ => Heartbeat::Lost,
            })
            .collect())
    }

    async fn finish(&self, transitions: Vec<Transition>) -> Result<Vec<TransitionResult>> {
        let head = [
            arg(self.config.max_events_per_job - 1),
            arg(dur_micros(self.config.retention)),
            arg(dur_micros(self.config.dead_retention)),
            arg(self.config.sweep_batch),
        ];
        let items = transitions.iter().map(finish_args).collect();
        let replies = self.chunks(&SCRIPTS.finish, &head, items).await?;
        replies
            .into_iter()
            .map(|r| {
                let parts = array("finish", r)?;
                let state = parts
                    .get(1)
                    .and_then(text)
                    .and_then(|s| s.parse::<JobState>().ok());
                match parts.first().and_then(text) {
                    Some("applied") => Ok(TransitionResult::Applied {
                        state: state
                            .ok_or_else(|| unexpected("finish", &Value::Array(parts.clone())))?,
                        version: u64::try_from(need_int(
                            "version",
                            parts.get(2).unwrap_or(&Value::Nil),
                        )?)
                        .unwrap_or(0),
                    }),
                    Some("conflict") => Ok(TransitionResult::Conflict {
                        current: state,
                        reason: parts.get(2).and_then(owned).unwrap_or_default(),
                    }),
                    _ => Err(unexpected("finish", &Value::Array(parts))),
                }
            })
            .collect()
    }

    async fn cancel(&self, id: JobId, reason: &str) -> Result<CancelOutcome> {
        let args = [
            arg(id),
            arg(reason),
            arg(self.config.max_events_per_job - 1),
            arg(dur_micros(self.config.retention)),
        ];
        let reply = self
            .link
            .eval(&SCRIPTS.cancel, &[&self.prefix], &args)
            .await?;
        let parts = array("cancel", reply)?;
        match parts.first().and_then(text) {
            Some("cancelled") => Ok(CancelOutcome::Cancelled),
            Some("requested") => Ok(CancelOutcome::Requested),
            Some("finished") => {
                let state = parts
                    .get(1)
                    .and_then(text)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| unexpected("cancel", &Value::Array(parts.clone())))?;
                Ok(CancelOutcome::AlreadyFinished(state))
            }
            Some("missing") => Err(Error::new(ErrorKind::NotFound, format!("no job {id}"))),
            _ => Err(unexpected("cancel", &Value::Array(parts))),
        }
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>> {
        let mut cmd = ::redis::cmd("HMGET");
        cmd.arg(self.job_key(id))
            .arg(&["d", "k", "m", "res", "le"][..]);
        let reply = self.link.query("get", &cmd).await?;
        let mut values = array("HMGET", reply)?;
        if values.get(2).is_none_or(|m| *m == Value::Nil) {
            return Ok(None);
        }
        values.insert(0, Value::BulkString(arg(id)));
        parse_record(&values).map(Some)
    }

    async fn list(&self, filter: &JobFilter, page: &Page) -> Result<Paged<JobRecord>> {
        page.validate()?;
        let index = match (&filter.state, &filter.kind) {
            (Some(state), _) => format!("s:{state}"),
            (None, Some(kind)) => format!("k:{kind}"),
            (None, None) => "all".to_owned(),
        };
        let args = [
            arg(index),
            page.after.map_or_else(Vec::new, arg),
            arg(page.limit),
            arg(match page.order {
                Order::Asc => "asc",
                Order::Desc => "desc",
            }),
            arg(self.config.list_scan_budget.max(page.limit + 1)),
            filter.state.map_or_else(Vec::new, arg),
            filter.kind.as_deref().map_or_else(Vec::new, arg),
            filter.queue.as_deref().map_or_else(Vec::new, arg),
            filter.tenant.as_deref().map_or_else(Vec::new, arg),
        ];
        let reply = self
            .link
            .eval(&SCRIPTS.list, &[&self.prefix], &args)
            .await?;
        let mut parts = array("list", reply)?.into_iter();
        let items = array("list items", parts.next().unwrap_or(Value::Nil))?
            .into_iter()
            .map(|r| parse_record(&array("list item", r)?))
            .collect::<Result<Vec<_>>>()?;
        let next = match parts.next().as_ref().and_then(text) {
            Some(id) => Some(id.parse()?),
            None => None,
        };
        Ok(Paged { items, next })
    }

    async fn events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(self.job_key(id));
        let reply = self.link.query("events", &cmd).await?;
        let flat = array("HGETALL", reply)?;
        if flat.is_empty() {
            return Ok(Vec::new());
        }
        let mut created = None;
        let mut lines: BTreeMap<u64, String> = BTreeMap::new();
        for pair in flat.chunks(2) {
            let [field, value] = pair else { continue };
            let Some(field) = text(field) else { continue };
            if field == "d" {
                created = text(value)
                    .and_then(|d| serde_json::from_str::<BlobIn>(d).ok())
                    .map(|b| from_micros(b.created_at));
            } else if let Some(n) = field.strip_prefix('e').and_then(|n| n.parse::<u64>().ok()) {
                if let Some(line) = owned(value) {
                    lines.insert(n, line);
                }
            }
        }
        let mut events = Vec::with_capacity(lines.len() + 1);
        events.push(JobEvent {
            job_id: id,
            at: created.unwrap_or_else(Utc::now),
            from: None,
            to: JobState::Queued,
            attempt: 0,
            worker: None,
            reason: Some("submitted".to_owned()),
        });
        for line in lines.values() {
            match parse_event(id, line) {
                Some(event) => events.push(event),
                None => tracing::warn!(job_id = %id, line, "skipping a malformed history entry"),
            }
        }
        Ok(events)
    }

    async fn counts(&self) -> Result<StateCounts> {
        let (_, flat) = self.counts_raw().await?;
        let mut counts = StateCounts::default();
        for pair in flat.chunks(2) {
            let [field, value] = pair else { continue };
            let (Some(field), Some(n)) = (text(field), int(value)) else {
                continue;
            };
            let Some((state, kind)) = field.split_once(':') else {
                continue;
            };
            let Ok(state) = state.parse::<JobState>() else {
                continue;
            };
            let n = u64::try_from(n.max(0)).unwrap_or(0);
            *counts.total.get_mut(state) += n;
            *counts
                .per_kind
                .entry(kind.to_owned())
                .or_insert_with(StateTally::default)
                .get_mut(state) += n;
        }
        counts.per_kind.retain(|_, t| t.total() > 0);
        Ok(counts)
    }

    async fn ping(&self) -> Result<()> {
        self.link.ping().await
    }
}
