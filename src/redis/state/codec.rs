use std::time::Duration;

use ::redis::Value;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Core, arg};
use crate::job::{JobEvent, JobId, JobRecord, JobState, Payload, WorkerId};
use crate::redis::reply::{need_text, text, unexpected};
use crate::util::{from_micros, micros};
use crate::{Error, ErrorKind, Result};

/// What a record keeps that never changes and the scripts do not read, stored as JSON in
/// the hash `d` (kind, queue and priority are in `m`, where the scripts need them).
#[derive(Serialize)]
pub(super) struct BlobOut<'a> {
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
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<&'a crate::workflow::StepLink>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
}

#[derive(Deserialize)]
pub(super) struct BlobIn {
    pub(super) payload: Payload,
    pub(super) created_at: i64,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    #[serde(default)]
    pub(super) tenant: Option<String>,
    #[serde(default)]
    pub(super) strategy: Option<String>,
    #[serde(default)]
    pub(super) timeout_ms: Option<u64>,
    #[serde(default)]
    pub(super) idempotency_key: Option<String>,
    #[serde(default)]
    pub(super) step: Option<Box<crate::workflow::StepLink>>,
    #[serde(default)]
    pub(super) traceparent: Option<String>,
}

// Flags in `m` (see common.lua).
pub(super) const F_STARTED: u8 = 1;
pub(super) const F_FINISHED: u8 = 2;
pub(super) const F_LEASE: u8 = 4;
pub(super) const F_CANCEL: u8 = 8;
pub(super) const F_LE: u8 = 16;
pub(super) const F_RES: u8 = 32;
pub(super) const F_DK: u8 = 64;
/// A workflow step (its link is in `d`; see `P:wf:*` in common.lua).
pub(super) const F_STEP: u8 = 128;

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
pub(super) struct Packed<'a> {
    pub(super) state: u8,
    pub(super) flags: u8,
    pub(super) version: f64,
    pub(super) attempt: u32,
    pub(super) max_attempts: u32,
    pub(super) run_at: f64,
    pub(super) updated: f64,
    pub(super) started: f64,
    pub(super) finished: f64,
    pub(super) lease: f64,
    pub(super) priority: i16,
    pub(super) events_kept: u32,
    pub(super) claim: f64,
    pub(super) owner: &'a str,
    pub(super) kind: &'a str,
    pub(super) queue: &'a str,
    pub(super) key: &'a str,
    pub(super) error: &'a str,
    pub(super) result: &'a str,
    pub(super) events: &'a [u8],
}

impl<'a> Packed<'a> {
    pub(super) fn read(m: &'a [u8]) -> Option<Self> {
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
    pub(super) fn write(&self, event: &[u8]) -> Vec<u8> {
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
pub(super) fn encode_m(r: &JobRecord) -> Vec<u8> {
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
        | (if r.result.is_some() { F_RES } else { 0 })
        | (if r.step.is_some() { F_STEP } else { 0 });
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

pub(super) fn state_code(state: JobState) -> u8 {
    match state {
        JobState::Queued => 1,
        JobState::Running => 2,
        JobState::Succeeded => 3,
        JobState::Dead => 4,
        JobState::Cancelled => 5,
        // Workflow steps are not kept by this store yet (`create` refuses them).
        JobState::Pending => 6,
    }
}

pub(super) fn state_of(code: u8) -> Option<JobState> {
    Some(match code {
        1 => JobState::Queued,
        2 => JobState::Running,
        3 => JobState::Succeeded,
        4 => JobState::Dead,
        5 => JobState::Cancelled,
        6 => JobState::Pending,
        _ => return None,
    })
}

/// Reads the little-endian values the scripts pack.
pub(super) struct Reader<'a>(&'a [u8]);

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

pub(super) struct Mutable<'a> {
    pub(super) state: JobState,
    pub(super) version: u64,
    pub(super) attempt: u32,
    pub(super) max_attempts: u32,
    pub(super) run_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) started_at: Option<DateTime<Utc>>,
    pub(super) finished_at: Option<DateTime<Utc>>,
    pub(super) lease_expires_at: Option<DateTime<Utc>>,
    pub(super) cancel_requested: bool,
    pub(super) priority: i16,
    pub(super) lease_owner: Option<WorkerId>,
    pub(super) kind: &'a str,
    pub(super) queue: &'a str,
    pub(super) last_error: Option<&'a str>,
    pub(super) result: Option<&'a str>,
    pub(super) events: &'a [u8],
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // whole, non-negative
pub(super) fn decode_m(m: &[u8]) -> Option<Mutable<'_>> {
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
pub(super) fn event_len(events: &[u8]) -> Option<usize> {
    let mut r = Reader(events);
    r.take::<15>()?; // at, from, to, flags, attempt
    r.str()?;
    r.str()?;
    Some(events.len() - r.0.len())
}

/// The history kept in `m`: events of `at` (f64 us), from and to (u8 state codes), flags
/// (u8: 1 worker, 2 reason), attempt (u32), worker and reason (u32 length + bytes each).
pub(super) fn decode_events(id: JobId, mut bytes: &[u8]) -> Option<Vec<JobEvent>> {
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

pub(super) fn bad_record(id: &str, what: &str) -> Error {
    Error::new(
        ErrorKind::Backend,
        format!(
            "job {id} in Redis has a malformed `{what}` field; was it written by another program?"
        ),
    )
}

/// Build a record from `[id, d, m]`, then a pending step's countdown and the latest progress
/// report where there are (false or missing: none).
pub(super) fn parse_record(values: &[Value]) -> Result<JobRecord> {
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
        traceparent: blob.traceparent,
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
        progress: match values.get(4) {
            Some(Value::BulkString(json)) => {
                Some(serde_json::from_slice(json).map_err(|_| bad_record(id_text, "progress"))?)
            }
            _ => None,
        },
        step: blob.step.map(|mut link| {
            // A pending step's countdown is kept apart (P:wf:s): dependencies left, after
            // the policy byte. Otherwise none is left.
            link.waiting_on = match values.get(3) {
                Some(Value::BulkString(s)) if m.state == JobState::Pending => s
                    .get(1..5)
                    .and_then(|b| b.try_into().ok())
                    .map_or(link.waiting_on, u32::from_le_bytes),
                _ if m.state == JobState::Pending => link.waiting_on,
                _ => 0,
            };
            link
        }),
    })
}

impl Core {
    /// A new job's arguments to the create script: its due time goes as a delay from its
    /// `created_at`, which the script counts from Redis's clock.
    /// A workflow step's arguments to the `create_steps` script: [`record_fields`]'s, then
    /// its workflow, the steps after it (ids concatenated) and, for a step that waits, its
    /// countdown (policy letter, dependencies left as u32 and its own delay in microseconds
    /// as f64, little-endian: `<c1Id`).
    ///
    /// [`record_fields`]: Self::record_fields
    pub(super) fn step_fields(record: &JobRecord) -> Result<Vec<Vec<u8>>> {
        let mut fields = Self::record_fields(record)?;
        let Some(link) = record.step.as_deref() else {
            fields.extend([arg(""), Vec::new(), Vec::new()]);
            return Ok(fields);
        };
        let deps: String = link.dependents.iter().map(ToString::to_string).collect();
        let waiting = if record.state == JobState::Pending {
            let policy = match link.on_dependency_failure {
                crate::workflow::OnDependencyFailure::Cancel => b'c',
                crate::workflow::OnDependencyFailure::Skip => b's',
                crate::workflow::OnDependencyFailure::Run => b'r',
            };
            #[allow(clippy::cast_precision_loss)] // microseconds of at most ten years
            let delay = micros(record.run_at).saturating_sub(micros(record.created_at)) as f64;
            let mut w = Vec::with_capacity(13);
            w.push(policy);
            w.extend_from_slice(&link.waiting_on.to_le_bytes());
            w.extend_from_slice(&delay.to_le_bytes());
            w
        } else {
            Vec::new()
        };
        fields.extend([arg(link.workflow), deps.into_bytes(), waiting]);
        Ok(fields)
    }

    pub(super) fn record_fields(record: &JobRecord) -> Result<Vec<Vec<u8>>> {
        let blob = serde_json::to_vec(&BlobOut {
            payload: &record.payload,
            created_at: micros(record.created_at),
            tags: &record.tags,
            tenant: record.tenant.as_deref(),
            strategy: record.strategy.as_deref(),
            timeout_ms: record.timeout.map(crate::util::dur_millis),
            idempotency_key: record.idempotency_key.as_deref(),
            step: record.step.as_deref(),
            traceparent: record.traceparent.as_deref(),
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
}
