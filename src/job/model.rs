use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{JobId, JobState, Limits, Payload, WorkerId, nesting_depth};
use crate::{Error, Result};

pub use crate::strategy::RetryPolicy;

/// The queue a job goes to when its submitter names none.
pub const DEFAULT_QUEUE: &str = "default";

/// The longest delay jobforge schedules: ten years. A submission due later (or earlier) than
/// that from now is refused with an error naming `delay` or `run_at`; a longer retry delay or
/// deferral that a handler asks for is shortened to it. Every time computed from a delay
/// stays far inside what each store can hold, so no arithmetic on it can overflow.
pub const MAX_DELAY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `delay`, at most [`MAX_DELAY`].
pub(crate) fn clamp_delay(delay: Duration) -> Duration {
    delay.min(MAX_DELAY)
}

/// `now + delay`, the delay at most [`MAX_DELAY`]: never overflows.
pub(crate) fn after(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    let delay = chrono::Duration::from_std(clamp_delay(delay)).unwrap_or(chrono::Duration::zero());
    now.checked_add_signed(delay).unwrap_or(now)
}

/// Job priority: higher runs first among jobs that are due. The default is 0.
pub type Priority = i16;

/// A job to submit. Build it with [`NewJob::new`] and the `with_*`-style setters.
///
/// ```
/// use std::time::Duration;
/// use jobforge::NewJob;
///
/// let job = NewJob::new("email.send")
///     .payload(&serde_json::json!({"to": "ada@example.com"}))
///     .priority(10)
///     .delay(Duration::from_secs(30))
///     .max_attempts(5)
///     .timeout(Duration::from_secs(10))
///     .idempotency_key("welcome-ada")
///     .tag("onboarding");
/// assert_eq!(job.kind(), "email.send");
/// assert!(job.validate(&Default::default()).is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct NewJob {
    pub(crate) id: JobId,
    pub(crate) kind: String,
    /// `None` for the default queue (no allocation for the common case).
    pub(crate) queue: Option<String>,
    pub(crate) payload: Payload,
    pub(crate) priority: Priority,
    pub(crate) run_at: Option<DateTime<Utc>>,
    pub(crate) delay: Option<Duration>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) strategy: Option<String>,
    pub(crate) traceparent: Option<String>,
    /// A payload that failed to serialize in the builder; reported by `validate`.
    pub(crate) invalid_payload: Option<String>,
}

impl NewJob {
    /// A job of `kind` with a `null` payload on the default queue.
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            id: JobId::new(),
            kind: kind.into(),
            queue: None,
            payload: Payload::null(),
            priority: 0,
            run_at: None,
            delay: None,
            max_attempts: None,
            timeout: None,
            idempotency_key: None,
            tags: Vec::new(),
            tenant: None,
            strategy: None,
            traceparent: None,
            invalid_payload: None,
        }
    }

    /// Set the payload from any serializable value. A value that fails to serialize makes the
    /// submit fail with an error naming `payload`.
    #[must_use]
    pub fn payload<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match Payload::from_value(value) {
            Ok(payload) => {
                self.payload = payload;
                self.invalid_payload = None;
            }
            Err(err) => self.invalid_payload = Some(err.to_string()),
        }
        self
    }

    /// Set an already-built payload.
    #[must_use]
    pub fn raw_payload(mut self, payload: Payload) -> Self {
        self.payload = payload;
        self.invalid_payload = None;
        self
    }

    /// Send the job to a named queue (default `"default"`).
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Higher priority runs first among due jobs. Default 0.
    #[must_use]
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Run no earlier than `delay` after submission.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self.run_at = None;
        self
    }

    /// Run no earlier than `at`.
    #[must_use]
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self.delay = None;
        self
    }

    /// Attempts before the job is dead-lettered (default: the kind's retry policy).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Deadline for one attempt (default: the kind's, or none).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// A key that makes submission idempotent: a second submit with the same key returns the
    /// first job instead of creating another.
    #[must_use]
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Add a free-form tag (searchable, and usable as a rate-limit key).
    #[must_use]
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// The tenant the job belongs to (used for per-tenant limits and isolation).
    #[must_use]
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Run the job with a named strategy instead of its kind's default.
    #[must_use]
    pub fn strategy(mut self, name: impl Into<String>) -> Self {
        self.strategy = Some(name.into());
        self
    }

    /// The W3C trace context of the span that submits the job (a `traceparent` header value,
    /// `00-<trace id>-<parent id>-<flags>`): each attempt's span is its child, so a trace
    /// follows the job from the request that made it to the handler that ran it (feature
    /// `otel` records the spans; the value is kept with the job on every store whatever the
    /// features). With feature `otel`, a job submitted without one takes the current span's.
    ///
    /// ```
    /// use jobforge::NewJob;
    ///
    /// let job = NewJob::new("resize")
    ///     .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /// assert!(job.validate(&jobforge::Limits::default()).is_ok());
    /// let bad = NewJob::new("resize").traceparent("not a trace");
    /// let err = bad.validate(&jobforge::Limits::default()).unwrap_err();
    /// assert_eq!(err.field(), Some("traceparent"));
    /// ```
    #[must_use]
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// The trace context the job carries, if any.
    #[must_use]
    pub fn trace_context(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// The job's id, fixed when the builder was made.
    #[must_use]
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The job's kind.
    #[must_use]
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The queue the job goes to.
    #[must_use]
    pub fn queue_name(&self) -> &str {
        self.queue.as_deref().unwrap_or(DEFAULT_QUEUE)
    }

    /// The idempotency key, if any.
    #[must_use]
    pub fn key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// The strategy named for this job, if any.
    #[must_use]
    pub fn strategy_name(&self) -> Option<&str> {
        self.strategy.as_deref()
    }

    /// Check the job against `limits`. The error names the offending field.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        check_name("kind", &self.kind, limits.max_kind_len)?;
        check_name("queue", self.queue_name(), limits.max_queue_len)?;
        if let Some(reason) = &self.invalid_payload {
            return Err(Error::invalid_input("payload", reason.clone()));
        }
        if self.payload.len() > limits.max_payload_bytes {
            return Err(Error::invalid_input(
                "payload",
                format!(
                    "{} bytes is over the limit of {} bytes; store large data elsewhere and pass a reference",
                    self.payload.len(),
                    limits.max_payload_bytes
                ),
            ));
        }
        let max_depth = limits.max_payload_depth.min(Limits::DEPTH_CEILING);
        if nesting_depth(self.payload.as_str(), max_depth) > max_depth {
            return Err(Error::invalid_input(
                "payload",
                format!(
                    "job {} nests deeper than {max_depth} levels of arrays and objects; flatten it",
                    self.id
                ),
            ));
        }
        if let Some(delay) = self.delay {
            if delay > MAX_DELAY {
                return Err(Error::invalid_input(
                    "delay",
                    format!(
                        "{delay:?} is longer than the longest delay of {} days",
                        MAX_DELAY.as_secs() / 86_400
                    ),
                ));
            }
        }
        if let Some(at) = self.run_at {
            let off = (at - Utc::now()).abs();
            if off.to_std().map_or(true, |off| off > MAX_DELAY) {
                return Err(Error::invalid_input(
                    "run_at",
                    format!(
                        "{at} is more than {} days from now",
                        MAX_DELAY.as_secs() / 86_400
                    ),
                ));
            }
        }
        if let Some(attempts) = self.max_attempts {
            if attempts == 0 {
                return Err(Error::invalid_input(
                    "max_attempts",
                    "must be at least 1 (1 means no retries)",
                ));
            }
            if attempts > limits.max_attempts {
                return Err(Error::invalid_input(
                    "max_attempts",
                    format!("{attempts} is over the limit of {}", limits.max_attempts),
                ));
            }
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid_input(
                "timeout",
                "must be greater than zero; leave it unset for no timeout",
            ));
        }
        if let Some(key) = &self.idempotency_key {
            check_label("idempotency_key", key, limits.max_label_len)?;
        }
        if let Some(tenant) = &self.tenant {
            check_label("tenant", tenant, limits.max_label_len)?;
        }
        if let Some(strategy) = &self.strategy {
            check_label("strategy", strategy, limits.max_label_len)?;
        }
        if let Some(traceparent) = &self.traceparent {
            check_traceparent(traceparent)?;
        }
        if self.tags.len() > limits.max_tags {
            return Err(Error::invalid_input(
                "tags",
                format!(
                    "{} tags is over the limit of {}",
                    self.tags.len(),
                    limits.max_tags
                ),
            ));
        }
        for tag in &self.tags {
            check_label("tags", tag, limits.max_label_len)?;
        }
        Ok(())
    }

    /// When the job becomes due, given the time of submission.
    pub(crate) fn due_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match (self.run_at, self.delay) {
            (Some(at), _) => at,
            (None, Some(delay)) => after(now, delay),
            (None, None) => now,
        }
    }
}

/// Check a queue name as a submission would (field `queue`).
pub(crate) fn check_queue_name(queue: &str, limits: &crate::job::Limits) -> Result<()> {
    check_name("queue", queue, limits.max_queue_len)
}

/// A name (kind, queue): non-empty, at most `max` bytes, no whitespace or control characters.
fn check_name(field: &'static str, value: &str, max: usize) -> Result<()> {
    check_text(field, value, max, "whitespace or control characters", |c| {
        c.is_whitespace() || c.is_control()
    })
}

/// A W3C `traceparent` (version 00): `00-<32 hex>-<16 hex>-<2 hex>`, lower case, ids not all
/// zero.
fn check_traceparent(value: &str) -> Result<()> {
    let hex = |p: &str, n: usize| {
        p.len() == n && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let parts: Vec<&str> = value.split('-').collect();
    let ok = matches!(parts[..], [v, t, p, f]
        if v == "00" && hex(t, 32) && hex(p, 16) && hex(f, 2)
            && t.bytes().any(|b| b != b'0') && p.bytes().any(|b| b != b'0'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(
            "traceparent",
            format!(
                "`{}` is not a W3C traceparent; expected 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lower case",
                value.chars().take(80).collect::<String>()
            ),
        ))
    }
}

/// A label (tag, tenant, key): non-empty, at most `max` bytes, no control characters.
fn check_label(field: &'static str, value: &str, max: usize) -> Result<()> {
    check_text(field, value, max, "control characters", char::is_control)
}

fn check_text(
    field: &'static str,
    value: &str,
    max: usize,
    forbidden_what: &str,
    forbidden: impl Fn(char) -> bool,
) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid_input(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid_input(
            field,
            format!("{} bytes is over the limit of {max}", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|c| forbidden(*c)) {
        return Err(Error::invalid_input(
            field,
            format!("must not contain {forbidden_what} (found {c:?})"),
        ));
    }
    Ok(())
}

/// A job as stored: its definition, where it is in its life, and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id.
    pub id: JobId,
    /// Its kind (which handler runs it).
    pub kind: String,
    /// The queue it was submitted to.
    pub queue: String,
    /// Its JSON payload.
    pub payload: Payload,
    /// Where it is in its life.
    pub state: JobState,
    /// Higher runs first.
    pub priority: Priority,
    /// Attempts started so far (the running one included).
    pub attempt: u32,
    /// Attempts allowed before it is dead-lettered.
    pub max_attempts: u32,
    /// Deadline for one attempt, if any.
    #[serde(with = "opt_millis", default)]
    pub timeout: Option<Duration>,
    /// The idempotency key it was submitted with, if any.
    pub idempotency_key: Option<String>,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// The tenant it belongs to, if any.
    pub tenant: Option<String>,
    /// The W3C trace context of the span that submitted it ([`NewJob::traceparent`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The strategy named at submission, if any.
    pub strategy: Option<String>,
    /// When it is (or was) due to run.
    pub run_at: DateTime<Utc>,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// The handler's result, once it succeeded.
    pub result: Option<Payload>,
    /// The latest error, with its class (`class: message`).
    pub last_error: Option<String>,
    /// The worker holding its lease, while running.
    pub lease_owner: Option<WorkerId>,
    /// When that lease runs out, while running.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Whether a cancel was asked for while it ran (the handler sees it through its token).
    pub cancel_requested: bool,
    /// Bumped on every change; compare-and-set checks it.
    pub version: u64,
    /// Where the job stands in its workflow, if it is a workflow's step
    /// ([`crate::workflow`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Box<crate::workflow::StepLink>>,
    /// What its handler last reported of its progress
    /// ([`JobContext::progress`](crate::JobContext::progress)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// How far a running job has got, as its handler reported it
/// ([`JobContext::progress`](crate::JobContext::progress)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Done so far, from 0 to 1.
    pub fraction: f64,
    /// What it is doing, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it reported it.
    pub at: DateTime<Utc>,
}

impl Progress {
    /// Longest message kept (bytes); a longer one is cut at a character boundary.
    pub const MAX_MESSAGE: usize = 512;

    /// A report of `fraction` (clamped to 0..=1; NaN is 0) and `message` (cut to
    /// [`MAX_MESSAGE`](Self::MAX_MESSAGE) bytes), made now.
    #[must_use]
    pub fn new(fraction: f64, message: Option<&str>) -> Self {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        let message = message.map(|m| {
            let mut end = m.len().min(Self::MAX_MESSAGE);
            while !m.is_char_boundary(end) {
                end -= 1;
            }
            m[..end].to_owned()
        });
        Self {
            fraction,
            message,
            at: Utc::now(),
        }
    }
}

impl JobRecord {
    /// A fresh `Queued` record for a validated job, with its attempts decided.
    pub(crate) fn from_new(job: NewJob, max_attempts: u32, now: DateTime<Utc>) -> Self {
        let run_at = job.due_at(now);
        Self {
            id: job.id,
            kind: job.kind,
            queue: job.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_owned()),
            payload: job.payload,
            state: JobState::Queued,
            priority: job.priority,
            attempt: 0,
            max_attempts: job.max_attempts.unwrap_or(max_attempts),
            timeout: job.timeout,
            idempotency_key: job.idempotency_key,
            tags: job.tags,
            tenant: job.tenant,
            strategy: job.strategy,
            // (feature `otel`: a job submitted inside a trace joins it)
            #[cfg(feature = "otel")]
            traceparent: job.traceparent.or_else(crate::otel::current_traceparent),
            #[cfg(not(feature = "otel"))]
            traceparent: job.traceparent,
            run_at,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            result: None,
            last_error: None,
            lease_owner: None,
            lease_expires_at: None,
            cancel_requested: false,
            version: 1,
            step: None,
            progress: None,
        }
    }

    /// The record of `job` as a worker holds it while running its first attempt: state
    /// `Running`, attempt 1, `max_attempts` from the job or else [`RetryPolicy::default`]'s.
    ///
    /// For tests of handlers and strategies that build a [`JobContext`](crate::JobContext)
    /// without an engine; the engine itself makes records at submit and claim. The job is not
    /// validated.
    ///
    /// ```
    /// use jobforge::{JobRecord, JobState, NewJob};
    ///
    /// let record = JobRecord::from_job(NewJob::new("resize").max_attempts(3));
    /// assert_eq!((record.kind.as_str(), record.state), ("resize", JobState::Running));
    /// assert_eq!((record.attempt, record.max_attempts), (1, 3));
    /// ```
    #[must_use]
    pub fn from_job(job: NewJob) -> Self {
        let now = Utc::now();
        let mut record = Self::from_new(job, RetryPolicy::default().max_attempts, now);
        record.state = JobState::Running;
        record.attempt = 1;
        record.started_at = Some(now);
        record
    }

    /// Whether the job has finished for good.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }
}

/// One entry of a job's history: a transition, who made it, when and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The job.
    pub job_id: JobId,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The state before (`None` for creation).
    pub from: Option<JobState>,
    /// The state after.
    pub to: JobState,
    /// The attempt number at the time.
    pub attempt: u32,
    /// The worker that made the change, if a worker did.
    pub worker: Option<WorkerId>,
    /// Why (an error, "cancelled by request", "lease expired", ...).
    pub reason: Option<String>,
}

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_some(&(d.as_millis() as u64)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(job: &NewJob) -> Option<&'static str> {
        job.validate(&Limits::default())
            .err()
            .and_then(|e| e.field())
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(field_of(&NewJob::new("")), Some("kind"));
        assert_eq!(field_of(&NewJob::new("x".repeat(129))), Some("kind"));
        assert_eq!(field_of(&NewJob::new("has space")), Some("kind"));
        assert_eq!(field_of(&NewJob::new("k").queue("")), Some("queue"));
        assert_eq!(
            field_of(&NewJob::new("k").max_attempts(0)),
            Some("max_attempts")
        );
        assert_eq!(
            field_of(&NewJob::new("k").max_attempts(5_000)),
            Some("max_attempts")
        );
        assert_eq!(
            field_of(&NewJob::new("k").timeout(Duration::ZERO)),
            Some("timeout")
        );
        assert_eq!(
            field_of(&NewJob::new("k").idempotency_key("")),
            Some("idempotency_key")
        );
        assert_eq!(field_of(&NewJob::new("k").tag("a\u{0}b")), Some("tags"));
        assert_eq!(field_of(&NewJob::new("k").tenant("")), Some("tenant"));
        assert_eq!(field_of(&NewJob::new("k")), None);
    }

    #[test]
    fn payload_limit_is_configurable_and_inclusive() {
        let job = NewJob::new("k").payload(&"a".repeat(98)); // 100 bytes with quotes
        assert!(
            job.validate(&Limits::default().with_max_payload_bytes(100))
                .is_ok()
        );
        let err = job
            .validate(&Limits::default().with_max_payload_bytes(99))
            .err();
        assert_eq!(err.as_ref().and_then(|e| e.field()), Some("payload"));
        assert!(err.is_some_and(|e| e.to_string().contains("100 bytes")));
        // Default is 1 MiB.
        let big = NewJob::new("k").payload(&"a".repeat(1024 * 1024));
        assert_eq!(field_of(&big), Some("payload"));
    }

    #[test]
    fn unserializable_payload_is_reported_at_validation() {
        let mut map = std::collections::HashMap::new();
        map.insert(vec![1u8], 1); // non-string keys cannot be JSON
        let job = NewJob::new("k").payload(&map);
        assert_eq!(field_of(&job), Some("payload"));
    }

    #[test]
    fn payload_round_trips_and_rejects_bad_json() {
        let p = Payload::from_json(r#"{"a":1}"#).ok();
        assert_eq!(p.as_ref().map(Payload::as_str), Some(r#"{"a":1}"#));
        let json = serde_json::to_string(&p).ok();
        assert_eq!(json.as_deref(), Some(r#"{"a":1}"#));
        assert!(Payload::from_json("{nope").is_err());
        assert!(Payload::null().is_null());
    }

    #[test]
    fn progress_is_clamped_and_its_message_cut_on_a_character() {
        assert_eq!(Progress::new(1.5, None).fraction, 1.0);
        assert_eq!(Progress::new(-1.0, None).fraction, 0.0);
        assert_eq!(Progress::new(f64::NAN, None).fraction, 0.0);
        let long = "é".repeat(400); // 800 bytes
        let cut = Progress::new(0.5, Some(&long)).message.unwrap();
        assert!(cut.len() <= Progress::MAX_MESSAGE && cut.len() >= Progress::MAX_MESSAGE - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn due_at_prefers_run_at_then_delay() {
        let now = Utc::now();
        assert_eq!(NewJob::new("k").due_at(now), now);
        let delayed = NewJob::new("k").delay(Duration::from_secs(5)).due_at(now);
        assert_eq!((delayed - now).num_seconds(), 5);
        let at = now + chrono::Duration::seconds(60);
        assert_eq!(NewJob::new("k").run_at(at).due_at(now), at);
    }
}
