//! The Redis state store: job records in two shared hashes, Lua compare-and-set
//! transitions, indexes for listing, retention; and its own queue (lanes per priority).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::Value;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_redis::Pool;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::client::{Link, LinkConfig, Lua, connection_settings, validate_namespace};
use super::reply::{array, int, need_int, need_text, owned, text, unexpected};
use crate::job::{JobEvent, JobId, JobRecord, JobState, Payload, WorkerId, clamp_delay};
use crate::queue::{KindQueueStats, QueueStats, Reserve};
use crate::state::{
    CancelOutcome, Claim, Created, Finish, Heartbeat, Held, JobFilter, Order, Page, Paged,
    StateCounts, StateManager, StateTally, Transition, TransitionResult,
};
use crate::store::JobStore;
use crate::{Error, ErrorKind, Result};

macro_rules! state_script {
    ($name:literal) => {
        Lua::new(
            $name,
            concat!(
                include_str!("lua/batch.lua"),
                "\n",
                include_str!("lua/state/common.lua"),
                "\n",
                include_str!(concat!("lua/state/", $name, ".lua"))
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
    get: Lua,
    stats: Lua,
    settle: Lua,
    handback: Lua,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    create: state_script!("create"),
    claim: state_script!("claim"),
    heartbeat: state_script!("heartbeat"),
    finish: state_script!("finish"),
    cancel: state_script!("cancel"),
    list: state_script!("list"),
    counts: state_script!("counts"),
    get: state_script!("get"),
    stats: state_script!("stats"),
    settle: state_script!("settle"),
    handback: state_script!("handback"),
});

/// Most claimed records remembered for settling (see [`RedisState::finish`]); past it the
/// memory starts over and finishes take the script's path.
const HELD_CAP: usize = 1 << 16;

/// Settings of a [`RedisState`].
///
/// ```
/// use std::time::Duration;
/// use jobforge::redis::RedisStateConfig;
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
    poll_interval: Duration,
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
            poll_interval: Duration::from_millis(500),
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

    /// How often a waiting [`JobStore::claim_due`] looks again when nothing woke it
    /// (default 500 ms). New and retried jobs wake waiting claims at once, in this process and
    /// in others (through a Redis channel), and a claim knows when the next delayed job comes
    /// due; the poll is the fallback while that channel reconnects.
    #[must_use]
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every.max(Duration::from_millis(1));
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

/// The Redis state store, and its own queue: with it alone
/// ([`OrchestratorBuilder::store`](crate::OrchestratorBuilder::store)) a
/// Redis-only deployment works end to end.
///
/// A job is two fields of two hashes shared by every job (what never changes, and the rest
/// packed), so a script reads or writes a whole batch with one command. Every transition is
/// a Lua compare-and-set on the job's state, lease owner and attempt, so two workers never
/// both finish a job and a worker whose lease was taken over cannot overwrite the new
/// owner's result. As a queue, due jobs wait in a list per queue and priority and one script
/// claims a batch; a finish is settled from the record the claim returned. Idempotency keys
/// are `SET NX`; history is capped per job; sorted-set indexes give keyset pagination;
/// finished jobs go after the retention (default 24 h, dead ones 7 days), so memory stays
/// bounded. All keys of a namespace share the hash tag `{<namespace>}`. The layout, order and
/// guarantees are in `docs/backends.md`.
///
/// ```no_run
/// use std::sync::Arc;
/// use jobforge::prelude::*;
/// use jobforge::redis::{RedisState, RedisStateConfig};
///
/// # async fn run() -> jobforge::Result<()> {
/// let state = RedisState::connect(RedisStateConfig::new("redis://127.0.0.1:6379")).await?;
/// let orchestrator = Orchestrator::builder()
///     .store(Arc::new(state))
///     .build()?;
/// # drop(orchestrator);
/// # Ok(())
/// # }
/// ```
pub struct RedisState {
    core: Arc<Core>,
    wake: Arc<Notify>,
    listener: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

/// A claim as `handback.lua` finds it: the name its lease batches carry, and who claimed
/// what for how long.
struct NamedClaim {
    name: String,
    worker: WorkerId,
    lease: Duration,
    queues: Vec<String>,
}

/// What the store's calls share with the tasks they start (a claim runs in a task of its
/// own, so a caller that stops waiting cannot strand what it claimed).
struct Core {
    link: Link,
    config: RedisStateConfig,
    prefix: String,
    /// Records as this store's claims left them, by claim: a finish computes the next record
    /// from it and the settle script only compares and writes.
    held: parking_lot::Mutex<HashMap<Held, Vec<u8>>>,
    /// Redis's clock minus ours (microseconds), read at each claim.
    clock_offset: AtomicI64,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("config", &self.core.config)
            .field("round_trips", &self.core.link.round_trips())
            .finish_non_exhaustive()
    }
}

/// What a record keeps that never changes and the scripts do not read, stored as JSON in
/// the hash `d` (kind, queue and priority are in `m`, where the scripts need them).
#[derive(Serialize)]
struct BlobOut<'a> {
    payload: &'a Payload,
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

#[derive(Deserialize)]
struct BlobIn {
    payload: Payload,
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

// Flags in `m` (see common.lua).
const F_STARTED: u8 = 1;
const F_FINISHED: u8 = 2;
const F_LEASE: u8 = 4;
const F_CANCEL: u8 = 8;
const F_LE: u8 = 16;
const F_RES: u8 = 32;
const F_DK: u8 = 64;

/// A record's `m` taken apart: the changing part of a record and what the scripts need of
/// the rest, one field of the hash `m`, packed little-endian so a script reads and writes it
/// with one `struct.unpack`/`struct.pack` call: state code (u8: 1 queued, 2 running,
/// 3 succeeded, 4 dead, 5 cancelled), flags (u8: 1 started, 2 finished, 4 lease, 8 cancel
/// requested, 16 last error, 32 result, 64 filed as delayed), version (f64), attempt (u32),
/// max attempts (u32), run_at, updated, started, finished, lease expiry (f64 microseconds),
/// priority (i16), events kept (u32), claim token (f64: the version the latest claim made),
/// then six strings, each a u32 length and its bytes:
/// lease owner, kind, queue, idempotency key, last error, result; then the events (see
/// [`decode_events`]).
#[derive(Clone)]
struct Packed<'a> {
    state: u8,
    flags: u8,
    version: f64,
    attempt: u32,
    max_attempts: u32,
    run_at: f64,
    updated: f64,
    started: f64,
    finished: f64,
    lease: f64,
    priority: i16,
    events_kept: u32,
    claim: f64,
    owner: &'a str,
    kind: &'a str,
    queue: &'a str,
    key: &'a str,
    error: &'a str,
    result: &'a str,
    events: &'a [u8],
}

impl<'a> Packed<'a> {
    fn read(m: &'a [u8]) -> Option<Self> {
        let mut r = Reader(m);
        Some(Self {
            state: r.u8()?,
            flags: r.u8()?,
            version: r.f64()?,
            attempt: r.u32()?,
            max_attempts: r.u32()?,
            run_at: r.f64()?,
            updated: r.f64()?,
            started: r.f64()?,
            finished: r.f64()?,
            lease: r.f64()?,
            priority: r.i16()?,
            events_kept: r.u32()?,
            claim: r.f64()?,
            owner: r.str()?,
            kind: r.str()?,
            queue: r.str()?,
            key: r.str()?,
            error: r.str()?,
            result: r.str()?,
            events: r.0,
        })
    }

    /// The packed form, with `event` (packed) added after the events kept.
    fn write(&self, event: &[u8]) -> Vec<u8> {
        let strings = [
            self.owner,
            self.kind,
            self.queue,
            self.key,
            self.error,
            self.result,
        ];
        let mut out = Vec::with_capacity(
            96 + strings.iter().map(|s| s.len()).sum::<usize>() + self.events.len() + event.len(),
        );
        out.push(self.state);
        out.push(self.flags);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.attempt.to_le_bytes());
        out.extend_from_slice(&self.max_attempts.to_le_bytes());
        for at in [
            self.run_at,
            self.updated,
            self.started,
            self.finished,
            self.lease,
        ] {
            out.extend_from_slice(&at.to_le_bytes());
        }
        out.extend_from_slice(&self.priority.to_le_bytes());
        out.extend_from_slice(&self.events_kept.to_le_bytes());
        out.extend_from_slice(&self.claim.to_le_bytes());
        for s in strings {
            out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(self.events);
        out.extend_from_slice(event);
        out
    }
}

#[allow(clippy::cast_precision_loss)] // microseconds since 1970 stay below 2^53
fn us(at: Option<DateTime<Utc>>) -> f64 {
    at.map_or(0, micros) as f64
}

/// A new record's `m` (no events yet: its creation is implied). Whether it waits for its
/// `run_at` is for the create script to say, by Redis's clock.
fn encode_m(r: &JobRecord) -> Vec<u8> {
    let flags = (if r.started_at.is_some() { F_STARTED } else { 0 })
        | (if r.finished_at.is_some() {
            F_FINISHED
        } else {
            0
        })
        | (if r.lease_expires_at.is_some() {
            F_LEASE
        } else {
            0
        })
        | (if r.cancel_requested { F_CANCEL } else { 0 })
        | (if r.last_error.is_some() { F_LE } else { 0 })
        | (if r.result.is_some() { F_RES } else { 0 });
    Packed {
        state: state_code(r.state),
        flags,
        #[allow(clippy::cast_precision_loss)] // versions stay far below 2^53
        version: r.version as f64,
        attempt: r.attempt,
        max_attempts: r.max_attempts,
        run_at: us(Some(r.run_at)),
        updated: us(Some(r.updated_at)),
        started: us(r.started_at),
        finished: us(r.finished_at),
        lease: us(r.lease_expires_at),
        priority: r.priority,
        events_kept: 0,
        #[allow(clippy::cast_precision_loss)] // versions stay far below 2^53
        claim: if r.state == JobState::Running {
            r.version as f64
        } else {
            0.0
        },
        owner: r.lease_owner.as_ref().map_or("", WorkerId::as_str),
        kind: &r.kind,
        queue: &r.queue,
        key: r.idempotency_key.as_deref().unwrap_or(""),
        error: r.last_error.as_deref().unwrap_or(""),
        result: r.result.as_ref().map_or("", Payload::as_str),
        events: &[],
    }
    .write(&[])
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

fn state_of(code: u8) -> Option<JobState> {
    Some(match code {
        1 => JobState::Queued,
        2 => JobState::Running,
        3 => JobState::Succeeded,
        4 => JobState::Dead,
        5 => JobState::Cancelled,
        _ => return None,
    })
}

/// Reads the little-endian values the scripts pack.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
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
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_le_bytes)
    }
    fn f64(&mut self) -> Option<f64> {
        self.take().map(f64::from_le_bytes)
    }
    #[allow(clippy::cast_possible_truncation)] // written from whole microseconds
    fn time(&mut self) -> Option<DateTime<Utc>> {
        self.f64().map(|us| from_micros(us as i64))
    }
    fn str(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.u32()?).ok()?;
        if self.0.len() < len {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        std::str::from_utf8(s).ok()
    }
}

struct Mutable<'a> {
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
    priority: i16,
    lease_owner: Option<WorkerId>,
    kind: &'a str,
    queue: &'a str,
    last_error: Option<&'a str>,
    result: Option<&'a str>,
    events: &'a [u8],
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // whole, non-negative
fn decode_m(m: &[u8]) -> Option<Mutable<'_>> {
    let p = Packed::read(m)?;
    let time = |us: f64| from_micros(us as i64);
    let flags = p.flags;
    Some(Mutable {
        state: state_of(p.state)?,
        version: p.version as u64,
        attempt: p.attempt,
        max_attempts: p.max_attempts,
        run_at: time(p.run_at),
        updated_at: time(p.updated),
        started_at: (flags & F_STARTED != 0).then(|| time(p.started)),
        finished_at: (flags & F_FINISHED != 0).then(|| time(p.finished)),
        lease_expires_at: (flags & F_LEASE != 0).then(|| time(p.lease)),
        cancel_requested: flags & F_CANCEL != 0,
        priority: p.priority,
        lease_owner: (!p.owner.is_empty()).then(|| WorkerId::new(p.owner)),
        kind: p.kind,
        queue: p.queue,
        last_error: (flags & F_LE != 0).then_some(p.error),
        result: (flags & F_RES != 0).then_some(p.result),
        events: p.events,
    })
}

/// The length of the first packed event in `events`.
fn event_len(events: &[u8]) -> Option<usize> {
    let mut r = Reader(events);
    r.take::<15>()?; // at, from, to, flags, attempt
    r.str()?;
    r.str()?;
    Some(events.len() - r.0.len())
}

/// What a settled transition writes (see [`settle`]).
struct Settled {
    m: Vec<u8>,
    state: JobState,
    version: u64,
    kind: String,
    queue: String,
    key: String,
    priority: i16,
    /// The lane score of a job put back in its queue.
    score: Option<i64>,
}

/// The record `finish` writes for `t` when the stored one is `old` (as this store's claim
/// returned it): the transition of the finish script, computed here so that the settle
/// script only compares and writes. `now` is Redis's clock (microseconds), `keep` the events
/// kept besides creation. `None` where the script must decide: the job is not held by `t`'s
/// claim as far as `old` says, or a cancel was asked for.
#[allow(clippy::cast_precision_loss)] // microseconds since 1970 stay below 2^53
fn settle(old: &[u8], t: &Transition, now: i64, keep: usize) -> Option<Settled> {
    let mut p = Packed::read(old)?;
    if p.state != 2 || p.claim != t.token as f64 || p.flags & F_CANCEL != 0 {
        return None;
    }
    let now_f = now as f64;
    let effect = t.finish.effect(p.attempt, false, from_micros(now));
    if let Some(result) = effect.result.filter(|r| !r.as_str().is_empty()) {
        p.result = result.as_str();
        p.flags |= F_RES;
    }
    if let Some(run_at) = effect.run_at {
        p.run_at = micros(run_at) as f64;
    }
    if let Some(error) = effect.last_error {
        p.error = error;
        p.flags |= F_LE;
    }
    p.attempt = effect.attempt;
    let (to, reason) = (effect.to, effect.reason);
    p.version += 1.0;
    // The event, as push_event packs it.
    let worker = t.worker.as_str();
    let why = reason.unwrap_or("");
    let mut event = Vec::with_capacity(23 + worker.len() + why.len());
    event.extend_from_slice(&now_f.to_le_bytes());
    event.push(2);
    event.push(state_code(to));
    event.push(1 | if reason.is_some() { 2 } else { 0 });
    event.extend_from_slice(&p.attempt.to_le_bytes());
    event.extend_from_slice(&u32::try_from(worker.len()).ok()?.to_le_bytes());
    event.extend_from_slice(worker.as_bytes());
    event.extend_from_slice(&u32::try_from(why.len()).ok()?.to_le_bytes());
    event.extend_from_slice(why.as_bytes());
    let kept: Vec<u8>;
    if usize::try_from(p.events_kept).ok()? >= keep {
        // Keep the first transition and the latest.
        let first = event_len(p.events)?;
        kept = if keep >= 2 {
            let second = event_len(&p.events[first..])?;
            [&p.events[..first], &p.events[first + second..]].concat()
        } else {
            p.events[first..].to_vec()
        };
        p.events = &kept;
    } else {
        p.events_kept += 1;
    }
    p.state = state_code(to);
    p.updated = now_f;
    p.owner = "";
    p.lease = 0.0;
    p.flags &= !F_LEASE;
    #[allow(clippy::cast_possible_truncation)] // whole microseconds
    let score = if to == JobState::Queued {
        if p.run_at > now_f {
            p.flags |= F_DK;
        }
        Some(p.run_at as i64)
    } else {
        p.finished = now_f;
        p.flags |= F_FINISHED;
        None
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // whole, non-negative
    let version = p.version as u64;
    Some(Settled {
        m: p.write(&event),
        state: to,
        version,
        kind: p.kind.to_owned(),
        queue: p.queue.to_owned(),
        key: p.key.to_owned(),
        priority: p.priority,
        score,
    })
}

/// The history kept in `m`: events of `at` (f64 us), from and to (u8 state codes), flags
/// (u8: 1 worker, 2 reason), attempt (u32), worker and reason (u32 length + bytes each).
fn decode_events(id: JobId, mut bytes: &[u8]) -> Option<Vec<JobEvent>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let mut r = Reader(bytes);
        let at = r.time()?;
        let from = state_of(r.u8()?)?;
        let to = state_of(r.u8()?)?;
        let flags = r.u8()?;
        let attempt = r.u32()?;
        let worker = r.str()?;
        let reason = r.str()?;
        out.push(JobEvent {
            job_id: id,
            at,
            from: Some(from),
            to,
            attempt,
            worker: (flags & 1 != 0).then(|| WorkerId::new(worker)),
            reason: (flags & 2 != 0).then(|| reason.to_owned()),
        });
        bytes = r.0;
    }
    Some(out)
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

/// Build a record from `[id, d, m]`.
fn parse_record(values: &[Value]) -> Result<JobRecord> {
    let [id, d, m, ..] = values else {
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
        kind: m.kind.to_owned(),
        queue: m.queue.to_owned(),
        payload: blob.payload,
        state: m.state,
        priority: m.priority,
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
        result: match m.result {
            Some(json) => Some(Payload::from_json(json).map_err(|_| bad_record(id_text, "m"))?),
            None => None,
        },
        last_error: m.last_error.map(str::to_owned),
        lease_owner: m.lease_owner,
        lease_expires_at: m.lease_expires_at,
        cancel_requested: m.cancel_requested,
        version: m.version,
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
            core: Arc::new(Core {
                link,
                config,
                prefix,
                held: parking_lot::Mutex::new(HashMap::new()),
                clock_offset: AtomicI64::new(0),
            }),
            wake: Arc::new(Notify::new()),
            listener: parking_lot::Mutex::new(None),
        }
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &Pool {
        self.core.link.pool()
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &RedisStateConfig {
        &self.core.config
    }

    /// Requests sent to Redis so far (a script call counts once).
    #[must_use]
    pub fn round_trips(&self) -> u64 {
        self.core.link.round_trips()
    }

    /// Drop records whose retention ran out now (at most the sweep batch), and lease batches
    /// whose leases all expired. It also happens as jobs are claimed and finished, and at
    /// every `counts`. Returns how many records and batches went (call it until it answers
    /// 0 to drop everything due).
    pub async fn sweep(&self) -> Result<usize> {
        let (swept, _) = self.core.counts_raw().await?;
        Ok(swept)
    }
}

impl Core {
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

    /// A new job's arguments to the create script: its due time goes as a delay from its
    /// `created_at`, which the script counts from Redis's clock.
    fn record_fields(record: &JobRecord) -> Result<Vec<Vec<u8>>> {
        let blob = serde_json::to_vec(&BlobOut {
            payload: &record.payload,
            created_at: micros(record.created_at),
            tags: &record.tags,
            tenant: record.tenant.as_deref(),
            strategy: record.strategy.as_deref(),
            timeout_ms: record
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            idempotency_key: record.idempotency_key.as_deref(),
        })?;
        let delay = micros(record.run_at).saturating_sub(micros(record.created_at));
        Ok(vec![
            arg(record.id),
            arg(record.idempotency_key.as_deref().unwrap_or("")),
            arg(&record.kind),
            arg(&record.queue),
            arg(record.priority),
            arg(delay),
            blob,
            encode_m(record),
        ])
    }

    /// The claim script's head: mode, worker, lease, events kept, sweep limit, dead
    /// retention, retention.
    fn claim_head(&self, mode: &str, worker: &WorkerId, lease: Duration) -> Vec<Vec<u8>> {
        vec![
            arg(mode),
            arg(worker),
            arg(dur_micros(lease)),
            arg(self.config.max_events_per_job - 1),
            arg(self.config.sweep_batch),
            arg(dur_micros(self.config.dead_retention)),
            arg(dur_micros(self.config.retention)),
        ]
    }

    /// One pass of [`JobStore::claim_due`]: the claims, and when nothing was claimed,
    /// when something comes due next (by Redis's clock).
    ///
    /// The script runs in a task of its own, so nothing is stranded whatever happens to the
    /// caller: a caller that stops waiting (drops the future) has what the script claimed for
    /// it handed back at once, and a call whose answer is lost (a reply timeout, a killed
    /// connection) hands back, by the name it gave the script for its lease batches,
    /// whatever it took; each due now, attempt not spent.
    async fn claim_due_once(
        self: &Arc<Self>,
        req: &Reserve<'_>,
    ) -> Result<(Vec<Claim>, Option<i64>)> {
        let mut args = self.claim_head("due", req.worker, req.lease);
        args.push(arg(req.max.min(self.config.chunk_size)));
        args.extend(req.queues.iter().map(arg));
        let name = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        args.push(arg(&name));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let core = Arc::clone(self);
        let claim = NamedClaim {
            name,
            worker: req.worker.clone(),
            lease: req.lease,
            queues: req.queues.to_vec(),
        };
        tokio::spawn(async move {
            let answer = core.claim_due_call(&args).await;
            let lost = answer.is_err();
            if let Err(Ok((claims, _))) = tx.send(answer) {
                // The caller is gone: forget what it would have settled, and give it back.
                {
                    let mut held = core.held.lock();
                    for claim in &claims {
                        if let Claim::Claimed(r) = claim {
                            held.remove(&Held::of(r));
                        }
                    }
                }
                core.hand_back_named(&claim).await;
            } else if lost {
                core.hand_back_named(&claim).await;
            }
        });
        rx.await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Backend,
                "the claim task ended without an answer; try again",
            ))
        })
    }

    async fn claim_due_call(&self, args: &[Vec<u8>]) -> Result<(Vec<Claim>, Option<i64>)> {
        let reply = self
            .link
            .eval(&SCRIPTS.claim, &[&self.prefix], args)
            .await?;
        let mut parts = array("claim", reply)?.into_iter();
        let claims = self.claimed(&array("claim", parts.next().unwrap_or(Value::Nil))?)?;
        let next = parts.next().as_ref().and_then(int);
        self.note_clock(parts.next().as_ref());
        Ok((claims, next))
    }

    /// Hand back the jobs `claim` took and still holds (see `claim_due_once`), trying for as
    /// long as their leases last; after that their leases expire and they are taken over all
    /// the same.
    async fn hand_back_named(&self, claim: &NamedClaim) {
        let deadline = tokio::time::Instant::now() + claim.lease;
        let mut pause = Duration::from_millis(100);
        let mut args = vec![
            arg(&claim.name),
            arg(&claim.worker),
            arg(dur_micros(claim.lease)),
            arg(self.config.max_events_per_job - 1),
            arg(dur_micros(self.config.retention)),
            arg(dur_micros(self.config.dead_retention)),
            arg(self.config.sweep_batch),
            arg("claimed for a caller that never got the answer; handed back"),
        ];
        args.extend(claim.queues.iter().map(arg));
        loop {
            match self
                .link
                .eval(&SCRIPTS.handback, &[&self.prefix], &args)
                .await
            {
                Ok(back) => {
                    if int(&back).is_some_and(|n| n > 0) {
                        tracing::debug!(jobs = ?int(&back), "handed back jobs claimed for a caller that never got them");
                    }
                    return;
                }
                Err(err) if tokio::time::Instant::now() + pause < deadline => {
                    tracing::debug!(error = %err, "could not hand back a lost claim yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not hand back the jobs of a claim whose answer was lost; they run again when their leases expire");
                    return;
                }
            }
        }
    }

    /// Parse claim answers and remember the records claimed, for settling.
    fn claimed(&self, replies: &[Value]) -> Result<Vec<Claim>> {
        let claims = parse_claims(replies)?;
        let mut held = self.held.lock();
        if held.len() + claims.len() > HELD_CAP {
            held.clear();
        }
        for (claim, group) in claims.iter().zip(replies.chunks(4)) {
            if let (Claim::Claimed(r), Some(Value::BulkString(m))) = (claim, group.get(3)) {
                held.insert(Held::of(r), m.clone());
            }
        }
        Ok(claims)
    }

    /// Remember how far Redis's clock (as a script read it) is from ours.
    fn note_clock(&self, redis_now: Option<&Value>) {
        if let Some(now) = redis_now.and_then(int) {
            self.clock_offset
                .store(now - micros(Utc::now()), Ordering::Relaxed);
        }
    }

    /// Redis's clock now, as far as the last claim told.
    fn redis_now(&self) -> i64 {
        micros(Utc::now()) + self.clock_offset.load(Ordering::Relaxed)
    }

    /// Settle what can be settled from the records remembered at claim time; answers per
    /// transition, `None` where the finish script must decide.
    async fn settle_known(
        &self,
        transitions: &[Transition],
    ) -> Result<Vec<Option<TransitionResult>>> {
        let mut out = vec![None; transitions.len()];
        let now = self.redis_now();
        let keep = self.config.max_events_per_job - 1;
        let mut items = Vec::new();
        let mut answers = Vec::new();
        {
            let mut held = self.held.lock();
            for (i, t) in transitions.iter().enumerate() {
                let Some(old) = held.remove(&t.held()) else {
                    continue;
                };
                let Some(s) = settle(&old, t, now, keep) else {
                    continue;
                };
                items.push(vec![
                    arg(t.id),
                    arg(s.version - 1),
                    s.m,
                    arg(&s.kind),
                    arg(&s.queue),
                    arg(s.priority),
                    s.score.map_or_else(Vec::new, arg),
                    arg(&s.key),
                ]);
                answers.push((i, s.state, s.version));
            }
        }
        if items.is_empty() {
            return Ok(out);
        }
        let head = [
            arg(dur_micros(self.config.retention)),
            arg(dur_micros(self.config.dead_retention)),
            arg(self.config.sweep_batch),
        ];
        let replies = self.chunks(&SCRIPTS.settle, &head, items).await?;
        for (reply, (i, state, version)) in replies.iter().zip(answers) {
            if int(reply) == Some(1) {
                out[i] = Some(TransitionResult::Applied { state, version });
            }
        }
        Ok(out)
    }

    /// Finish by the script, which decides on the stored records.
    async fn finish_by_script(
        &self,
        transitions: Vec<Transition>,
    ) -> Result<Vec<TransitionResult>> {
        let head = [
            arg(self.config.max_events_per_job - 1),
            arg(dur_micros(self.config.retention)),
            arg(dur_micros(self.config.dead_retention)),
            arg(self.config.sweep_batch),
        ];
        let items = transitions.iter().map(finish_args).collect();
        let replies = self.chunks(&SCRIPTS.finish, &head, items).await?;
        replies
            .chunks(3)
            .map(|parts| {
                let state = parts
                    .get(1)
                    .and_then(text)
                    .and_then(|s| s.parse::<JobState>().ok());
                match parts.first().and_then(text) {
                    Some("applied") => Ok(TransitionResult::Applied {
                        state: state
                            .ok_or_else(|| unexpected("finish", &Value::Array(parts.to_vec())))?,
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
                    _ => Err(unexpected("finish", &Value::Array(parts.to_vec()))),
                }
            })
            .collect()
    }

    /// Settle what the claims' records allow, and the rest by the script.
    async fn finish_all(&self, transitions: Vec<Transition>) -> Result<Vec<TransitionResult>> {
        let settled = self.settle_known(&transitions).await?;
        if settled.iter().all(Option::is_some) {
            return Ok(settled.into_iter().flatten().collect());
        }
        let (rest, slots): (Vec<Transition>, Vec<usize>) = transitions
            .into_iter()
            .zip(0..)
            .filter(|(_, i)| settled[*i].is_none())
            .unzip();
        let mut decided = self.finish_by_script(rest).await?.into_iter();
        let mut out = settled;
        for i in slots {
            out[i] = decided.next();
        }
        out.into_iter()
            .map(|r| {
                r.ok_or_else(|| {
                    Error::new(
                        ErrorKind::Backend,
                        "the finish script answered too few transitions",
                    )
                })
            })
            .collect()
    }
}

impl RedisState {
    /// Listen for the wake-ups the scripts publish when they file due work, so a claim
    /// waiting in another process starts at once. Started by the first waiting claim; it
    /// reconnects by itself and ends with the store.
    fn ensure_listener(&self) {
        let mut slot = self.listener.lock();
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let client = self.core.link.client().clone();
        let channel = format!("{}:wake", self.core.prefix);
        let wake = Arc::downgrade(&self.wake);
        let task = tokio::spawn(async move {
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(&channel).await.is_ok() {
                            let mut messages = pubsub.on_message();
                            while messages.next().await.is_some() {
                                let Some(wake) = wake.upgrade() else { return };
                                wake.notify_waiters();
                            }
                        }
                    }
                    Err(err) => {
                        tracing::debug!(%err, "Redis wake-up channel unavailable; retrying");
                    }
                }
                let Some(wake) = wake.upgrade() else { return };
                // Lost the connection: whatever was published meanwhile, look again.
                wake.notify_waiters();
                drop(wake);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        *slot = Some(task);
    }
}

impl Drop for RedisState {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get_mut().take() {
            task.abort();
        }
    }
}

/// Claim answers, four values each: `claimed, id, d, m` | `notdue, id, run_at, -` |
/// `exhausted, id, reason, -` | `cancelled, id, reason, -` | `skipped, id, state, -`.
fn parse_claims(replies: &[Value]) -> Result<Vec<Claim>> {
    replies
        .chunks(4)
        .map(|parts| {
            let what = parts.first().and_then(text).unwrap_or("");
            let id = || -> Result<JobId> {
                need_text("job id", parts.get(1).unwrap_or(&Value::Nil))?.parse()
            };
            Ok(match what {
                "claimed" => Claim::Claimed(parse_record(&parts[1..])?),
                "notdue" => Claim::NotDue {
                    id: id()?,
                    run_at: from_micros(need_int("run_at", parts.get(2).unwrap_or(&Value::Nil))?),
                },
                "exhausted" => Claim::Exhausted {
                    id: id()?,
                    reason: parts.get(2).and_then(owned).unwrap_or_default(),
                },
                "cancelled" => Claim::Cancelled {
                    id: id()?,
                    reason: parts.get(2).and_then(owned).unwrap_or_default(),
                },
                "skipped" => Claim::Skipped {
                    id: id()?,
                    state: parts.get(2).and_then(text).and_then(|s| s.parse().ok()),
                },
                _ => return Err(unexpected("claim", &Value::Array(parts.to_vec()))),
            })
        })
        .collect()
}

fn finish_args(t: &Transition) -> Vec<Vec<u8>> {
    let (code, delay, text): (&str, Option<Duration>, &str) = match &t.finish {
        Finish::Succeeded { result } => ("ok", None, result.as_ref().map_or("", Payload::as_str)),
        Finish::Retry { delay, error } => ("retry", Some(*delay), error),
        Finish::Defer { delay, reason } => ("defer", Some(*delay), reason),
        Finish::Dead { error } => ("dead", None, error),
        Finish::Cancelled { reason } => ("cancel", None, reason),
        Finish::Release { reason } => ("release", None, reason),
    };
    vec![
        arg(t.id),
        arg(&t.worker),
        arg(t.token),
        arg(code),
        delay.map_or_else(Vec::new, |d| arg(dur_micros(clamp_delay(d)))),
        arg(text),
    ]
}

#[async_trait]
impl StateManager for RedisState {
    async fn create(&self, jobs: Vec<JobRecord>) -> Result<Vec<Created>> {
        if let Some(bad) = jobs.iter().find(|j| j.state != JobState::Queued) {
            return Err(Error::invalid_input(
                "state",
                format!(
                    "job {} is {}; only queued jobs are created (submit new jobs)",
                    bad.id, bad.state
                ),
            ));
        }
        let items = jobs
            .iter()
            .map(Core::record_fields)
            .collect::<Result<Vec<_>>>()?;
        let replies = self.core.chunks(&SCRIPTS.create, &[], items).await?;
        let created = replies
            .chunks(2)
            .map(|parts| {
                let [what, id] = parts else {
                    return Err(unexpected("create", &Value::Array(parts.to_vec())));
                };
                let id: JobId = need_text("job id", id)?.parse()?;
                Ok(match text(what) {
                    Some("new") => Created::New(id),
                    _ => Created::Existing(id),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if created.iter().any(|c| matches!(c, Created::New(_))) {
            self.wake.notify_waiters();
        }
        Ok(created)
    }

    async fn claim(&self, ids: &[JobId], worker: &WorkerId, lease: Duration) -> Result<Vec<Claim>> {
        let head = self.core.claim_head("ids", worker, lease);
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(self.core.config.chunk_size) {
            let mut args = head.clone();
            args.extend(chunk.iter().map(arg));
            let reply = self
                .core
                .link
                .eval(&SCRIPTS.claim, &[&self.core.prefix], &args)
                .await?;
            let mut parts = array("claim", reply)?.into_iter();
            out.extend(
                self.core
                    .claimed(&array("claim", parts.next().unwrap_or(Value::Nil))?)?,
            );
            parts.next();
            self.core.note_clock(parts.next().as_ref());
        }
        Ok(out)
    }

    async fn heartbeat(&self, held: &[Held], lease: Duration) -> Result<Vec<Heartbeat>> {
        let head = [arg(dur_micros(lease))];
        let items = held.iter().map(|h| vec![arg(h.id), arg(h.token)]).collect();
        let replies = self.core.chunks(&SCRIPTS.heartbeat, &head, items).await?;
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

    /// Most transitions are settled from the record this store's claim returned: the next
    /// record is computed here and one script compares and writes it. The rest (the record
    /// changed since: a heartbeat, a cancel request, a takeover) go through the finish
    /// script, which decides on what is stored.
    async fn finish(&self, transitions: Vec<Transition>) -> Result<Vec<TransitionResult>> {
        let requeues = transitions
            .iter()
            .any(|t| t.finish.target() == JobState::Queued);
        let result = self.core.finish_all(transitions).await;
        if requeues {
            self.wake.notify_waiters();
        }
        result
    }

    async fn cancel(&self, id: JobId, reason: &str) -> Result<CancelOutcome> {
        let args = [
            arg(id),
            arg(reason),
            arg(self.core.config.max_events_per_job - 1),
            arg(dur_micros(self.core.config.retention)),
        ];
        let reply = self
            .core
            .link
            .eval(&SCRIPTS.cancel, &[&self.core.prefix], &args)
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
        let reply = self
            .core
            .link
            .eval(&SCRIPTS.get, &[&self.core.prefix], &[arg(id)])
            .await?;
        let mut values = array("get", reply)?;
        if values
            .get(1)
            .is_none_or(|m| !matches!(m, Value::BulkString(_)))
        {
            return Ok(None);
        }
        values.insert(0, Value::BulkString(arg(id)));
        parse_record(&values).map(Some)
    }

    async fn list(&self, filter: &JobFilter, page: &Page) -> Result<Paged<JobRecord>> {
        page.validate()?;
        // Dead and cancelled jobs have indexes of their own (they are few among many); other
        // states are filtered while walking the kind's index or the index of all jobs.
        let index = match (&filter.state, &filter.kind) {
            (Some(state @ (JobState::Dead | JobState::Cancelled)), _) => format!("s:{state}"),
            (_, Some(kind)) => format!("k:{kind}"),
            (_, None) => "all".to_owned(),
        };
        let args = [
            arg(index),
            page.after.map_or_else(Vec::new, arg),
            arg(page.limit),
            arg(match page.order {
                Order::Asc => "asc",
                Order::Desc => "desc",
            }),
            arg(self.core.config.list_scan_budget.max(page.limit + 1)),
            filter.state.map_or_else(Vec::new, arg),
            filter.kind.as_deref().map_or_else(Vec::new, arg),
            filter.queue.as_deref().map_or_else(Vec::new, arg),
            filter.tenant.as_deref().map_or_else(Vec::new, arg),
        ];
        let reply = self
            .core
            .link
            .eval(&SCRIPTS.list, &[&self.core.prefix], &args)
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
        let reply = self
            .core
            .link
            .eval(&SCRIPTS.get, &[&self.core.prefix], &[arg(id)])
            .await?;
        let values = array("events", reply)?;
        let (Some(Value::BulkString(d)), Some(Value::BulkString(m))) =
            (values.first(), values.get(1))
        else {
            return Ok(Vec::new());
        };
        let created = serde_json::from_slice::<BlobIn>(d)
            .map(|b| from_micros(b.created_at))
            .map_err(|_| bad_record(&id.to_string(), "d"))?;
        let m = decode_m(m).ok_or_else(|| bad_record(&id.to_string(), "m"))?;
        let kept = decode_events(id, m.events).ok_or_else(|| bad_record(&id.to_string(), "m"))?;
        let mut events = Vec::with_capacity(kept.len() + 1);
        events.push(JobEvent {
            job_id: id,
            at: created,
            from: None,
            to: JobState::Queued,
            attempt: 0,
            worker: None,
            reason: Some("submitted".to_owned()),
        });
        events.extend(kept);
        Ok(events)
    }

    async fn counts(&self) -> Result<StateCounts> {
        let (_, flat) = self.core.counts_raw().await?;
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
        self.core.link.ping().await
    }
}

/// The Redis store is its own queue: each queue's jobs wait in lanes (one sorted set per
/// priority, by `run_at`), running jobs in a set ordered by lease expiry, and one script
/// call claims a batch — takeovers of expired leases first, then due jobs, highest priority
/// first — while [`StateManager::finish`] settles it.
#[async_trait]
impl JobStore for RedisState {
    async fn claim_due(&self, req: &Reserve<'_>) -> Result<Vec<Claim>> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + req.wait;
        if !req.wait.is_zero() {
            self.ensure_listener();
        }
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (claims, next) = self.core.claim_due_once(req).await?;
            let now = tokio::time::Instant::now();
            if !claims.is_empty() || now >= deadline {
                return Ok(claims);
            }
            let mut nap = (deadline - now).min(self.core.config.poll_interval);
            if let Some(next) = next {
                // `next` is by Redis's clock: so is the wait.
                let until = u64::try_from(next - self.core.redis_now()).unwrap_or(0);
                nap = nap.min(Duration::from_micros(until).max(Duration::from_millis(1)));
            }
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn stats(&self) -> Result<QueueStats> {
        let reply = self
            .core
            .link
            .eval(&SCRIPTS.stats, &[&self.core.prefix], &[])
            .await?;
        let flat = array("queue stats", reply)?;
        let number = |v: &Value| int(v).and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        let mut stats = QueueStats::default();
        for k in flat.chunks(5) {
            let [kind, queued, delayed, running, dead] = k else {
                continue;
            };
            let Some(kind) = owned(kind) else { continue };
            let (queued, delayed) = (number(queued), number(delayed));
            let entry = KindQueueStats {
                ready: queued.saturating_sub(delayed),
                delayed: delayed.min(queued),
                in_flight: number(running),
                dead: number(dead),
            };
            stats.ready += entry.ready;
            stats.delayed += entry.delayed;
            stats.in_flight += entry.in_flight;
            stats.dead += entry.dead;
            if entry != KindQueueStats::default() {
                stats.per_kind.insert(kind, entry);
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewJob;

    /// Every key of the test's namespace goes.
    async fn drop_namespace(state: &RedisState, ns: &str) {
        let mut conn = state.core.link.conn().await.expect("conn");
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{{{ns}}}*"))
            .query_async(&mut conn)
            .await
            .expect("keys");
        let _: () = ::redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .expect("del");
    }

    /// With a server at `REDIS_URL`: a finish of a job this store claimed is settled in one
    /// call (no fallback to the finish script), and the claim's copy is let go.
    #[tokio::test]
    async fn a_finish_after_a_claim_is_settled_in_one_call() {
        let Ok(url) = std::env::var("REDIS_URL") else {
            eprintln!("skipped: REDIS_URL is not set");
            return;
        };
        let ns = format!("jft-unit-settle-{}", uuid::Uuid::now_v7().simple());
        let state = RedisState::connect(RedisStateConfig::new(url.as_str()).with_namespace(&ns))
            .await
            .expect("connect");
        let mut record = JobRecord::from_job(NewJob::new("k"));
        record.state = JobState::Queued;
        record.attempt = 0;
        record.started_at = None;
        let id = record.id;
        state.create(vec![record]).await.expect("create");
        let worker = WorkerId::new("w");
        let claims = state
            .claim(&[id], &worker, Duration::from_secs(30))
            .await
            .expect("claim");
        let [Claim::Claimed(claimed)] = &claims[..] else {
            panic!("{claims:?}")
        };
        let held = Held::of(claimed);
        assert!(state.core.held.lock().contains_key(&held));
        // The settle script, loaded (a server that never ran it answers NOSCRIPT first).
        state
            .core
            .link
            .eval(
                &SCRIPTS.settle,
                &[&state.core.prefix],
                &[arg(0), arg(0), arg(0)],
            )
            .await
            .expect("load the settle script");
        let before = state.round_trips();
        let done = state
            .finish(vec![Transition {
                id,
                worker,
                token: held.token,
                finish: Finish::Succeeded { result: None },
            }])
            .await
            .expect("finish");
        let [TransitionResult::Applied { state: to, version }] = done[..] else {
            panic!("{done:?}")
        };
        assert_eq!(to, JobState::Succeeded);
        assert_eq!(state.round_trips() - before, 1, "settled, no fallback");
        assert!(state.core.held.lock().is_empty());
        let stored = state.get(id).await.expect("get").expect("kept");
        assert_eq!(
            (stored.state, stored.version),
            (JobState::Succeeded, version)
        );
        drop_namespace(&state, &ns).await;
    }

    /// With a server at `REDIS_URL`: a claim whose answer never reached its caller (a reply
    /// timeout, a killed connection) is handed back by the name it gave its lease batches:
    /// its jobs are due again at once, attempt not spent. Before, they waited out their
    /// lease and a takeover spent an attempt.
    #[tokio::test]
    async fn a_claim_whose_answer_was_lost_is_handed_back_by_name() {
        let Ok(url) = std::env::var("REDIS_URL") else {
            eprintln!("skipped: REDIS_URL is not set");
            return;
        };
        let ns = format!("jft-unit-lost-{}", uuid::Uuid::now_v7().simple());
        let state = RedisState::connect(RedisStateConfig::new(url.as_str()).with_namespace(&ns))
            .await
            .expect("connect");
        let records: Vec<JobRecord> = (0..5)
            .map(|_| {
                let mut r = JobRecord::from_job(NewJob::new("k"));
                r.state = JobState::Queued;
                r.attempt = 0;
                r.started_at = None;
                r
            })
            .collect();
        state.create(records).await.expect("create");
        let claim = NamedClaim {
            name: "lost-answer".to_owned(),
            worker: WorkerId::new("w"),
            lease: Duration::from_secs(30),
            queues: vec!["default".to_owned()],
        };
        let mut args = state.core.claim_head("due", &claim.worker, claim.lease);
        args.push(arg(10));
        args.push(arg("default"));
        args.push(arg(&claim.name));
        // The script runs; its answer is dropped, as a lost reply would be.
        let (claims, _) = state.core.claim_due_call(&args).await.expect("claim");
        assert_eq!(claims.len(), 5);
        assert_eq!(state.counts().await.expect("counts").total.running, 5);
        state.core.hand_back_named(&claim).await;
        let counts = state.counts().await.expect("counts");
        assert_eq!((counts.total.running, counts.total.queued), (0, 5));
        let queues = vec!["default".to_owned()];
        let again = state
            .claim_due(&Reserve {
                worker: &claim.worker,
                queues: &queues,
                max: 10,
                lease: claim.lease,
                wait: Duration::ZERO,
            })
            .await
            .expect("claim again");
        assert_eq!(again.len(), 5);
        for c in &again {
            let Claim::Claimed(r) = c else {
                panic!("{c:?}")
            };
            assert_eq!(r.attempt, 1, "the attempt was not spent");
            let events = state.events(r.id).await.expect("events");
            assert!(
                events.iter().any(|e| e
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.contains("handed back"))),
                "{events:?}"
            );
        }
        drop_namespace(&state, &ns).await;
    }
}
