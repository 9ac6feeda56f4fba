use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Result;
use crate::job::JobId;

/// An entry to store (or replace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEntry {
    /// The namespace (non-empty, at most 128 bytes).
    pub namespace: String,
    /// The key within the namespace (non-empty, at most 256 bytes).
    pub key: String,
    /// Any JSON value (size-limited by the memory's configuration).
    pub value: Value,
    /// Tags to search by.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Expire this long after the write; `None` keeps it until deleted.
    #[serde(default, with = "crate::memory::types::opt_secs")]
    pub ttl: Option<Duration>,
}

impl NewEntry {
    /// An entry with no tags and no expiry.
    pub fn new(namespace: impl Into<String>, key: impl Into<String>, value: Value) -> Self {
        Self {
            namespace: namespace.into(),
            key: key.into(),
            value,
            tags: Vec::new(),
            ttl: None,
        }
    }

    /// Add a tag.
    #[must_use]
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Expire after `ttl`.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// The value.
    pub value: Value,
    /// Its tags.
    pub tags: Vec<String>,
    /// First written.
    pub created_at: DateTime<Utc>,
    /// Last written.
    pub updated_at: DateTime<Utc>,
    /// When it expires, if it does.
    pub expires_at: Option<DateTime<Utc>>,
    /// Bumped on every write.
    pub version: u64,
}

/// A search over one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryQuery {
    /// The namespace to search.
    pub namespace: String,
    /// Only keys starting with this.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// Only entries carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// At most this many (1 to 1,000), in key order.
    pub limit: usize,
}

impl EntryQuery {
    /// Everything in `namespace`, up to 100 entries.
    pub fn namespace(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            key_prefix: None,
            tags: Vec::new(),
            limit: 100,
        }
    }

    /// Only keys starting with `prefix`.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = Some(prefix.into());
        self
    }

    /// Only entries with `tag`.
    #[must_use]
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// At most `limit` entries.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
}

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeClass {
    /// It succeeded.
    Succeeded,
    /// It failed and will be retried.
    Retried,
    /// It failed for good (permanent error, or attempts spent).
    Failed,
    /// A safety layer or the handler deferred it; no attempt spent.
    Deferred,
    /// It was cancelled.
    Cancelled,
}

/// One execution of one job, as the engine records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// The job.
    pub job_id: JobId,
    /// Its kind.
    pub kind: String,
    /// The strategy that ran it.
    pub strategy: String,
    /// How it ended.
    pub outcome: OutcomeClass,
    /// Wall time of the execution, strategy retries and hedges included.
    #[serde(with = "crate::memory::types::millis_f64")]
    pub duration: Duration,
    /// The job's attempt number.
    pub attempt: u32,
    /// In-process retries the strategy made inside this execution.
    pub inline_retries: u32,
    /// The error class, when it did not succeed.
    pub error_class: Option<String>,
    /// When it finished.
    pub at: DateTime<Utc>,
    /// Why the strategy ran it as it did (settings and rationale), if it said.
    pub decision: Option<String>,
}

/// Which executions a reflection looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Every recorded execution still kept.
    All,
    /// The latest `n` executions of the kind.
    Last(usize),
    /// Executions that finished within this long before now.
    #[serde(with = "crate::memory::types::secs")]
    Since(Duration),
}

/// A strategy the recommendation may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyChoice {
    /// Run once per delivery.
    Direct,
    /// Retry transient failures in process.
    InlineRetry,
    /// Start a second attempt after the hedge delay.
    Hedged,
}

/// What the history suggests for a kind, with the reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// The strategy to use.
    pub strategy: StrategyChoice,
    /// Deadline per attempt, from observed tail latency.
    #[serde(with = "crate::memory::types::opt_millis")]
    pub timeout: Option<Duration>,
    /// Attempts worth spending (retries only where they have rescued failures).
    pub max_attempts: u32,
    /// In-process retries worth making per delivery.
    pub inline_retries: u32,
    /// When to start a hedge, for `Hedged`.
    #[serde(with = "crate::memory::types::opt_millis")]
    pub hedge_delay: Option<Duration>,
    /// Whether enough executions were seen to trust this.
    pub confident: bool,
    /// Why, in plain language, citing the numbers.
    pub rationale: String,
    /// Error classes retries have never rescued (at least
    /// [`NO_RETRY_MIN_JOBS`](crate::memory::reflection::NO_RETRY_MIN_JOBS) jobs failed with one, none
    /// of them succeeded later): retrying them spends attempts for nothing, so
    /// [`Adaptive`](crate::strategy::Adaptive) fails them at once. Per class, not per kind:
    /// the kind's other failures keep their retries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_retry_classes: Vec<String>,
}

/// How often one error class was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorClassCount {
    /// The class.
    pub class: String,
    /// Executions that ended with it.
    pub count: u64,
    /// Jobs that failed with it at least once.
    #[serde(default)]
    pub jobs: u64,
    /// Of those jobs, the ones that succeeded later: retries rescued them.
    #[serde(default)]
    pub rescued: u64,
    /// Of `count`, the executions that failed for good (the rest were retried).
    #[serde(default)]
    pub failed: u64,
}

/// What the history of one kind says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reflection {
    /// The kind.
    pub kind: String,
    /// Executions looked at.
    pub count: u64,
    /// Of those, succeeded.
    pub succeeded: u64,
    /// Failed and retried.
    pub retried: u64,
    /// Failed for good.
    pub failed: u64,
    /// Deferred.
    pub deferred: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// `succeeded / (count - deferred - cancelled)`; `None` with no such executions.
    pub success_rate: Option<f64>,
    /// `deferred / count`; `None` with no executions.
    pub deferred_rate: Option<f64>,
    /// Latency percentiles of executions that ran (deferred ones excluded).
    #[serde(with = "crate::memory::types::opt_millis")]
    pub p50: Option<Duration>,
    /// 90th percentile.
    #[serde(with = "crate::memory::types::opt_millis")]
    pub p90: Option<Duration>,
    /// 95th percentile.
    #[serde(with = "crate::memory::types::opt_millis")]
    pub p95: Option<Duration>,
    /// 99th percentile.
    #[serde(with = "crate::memory::types::opt_millis")]
    pub p99: Option<Duration>,
    /// Of the jobs (by id) that failed at least once — an execution that ended `Retried`,
    /// or any execution with `inline_retries > 0` — the fraction that also have a
    /// `Succeeded` execution; `None` when none failed.
    pub retry_rescue_rate: Option<f64>,
    /// `retry_rescue_rate` over the failed jobs none of whose failures is of a class
    /// retries never rescued (see
    /// [`Recommendation::no_retry_classes`]): what retries do for the failures still worth
    /// retrying. The same as `retry_rescue_rate` when no class is hopeless.
    #[serde(default)]
    pub transient_rescue_rate: Option<f64>,
    /// The most frequent error classes among failed executions (`Retried` or `Failed`),
    /// most frequent first, ties by class name, at most 5.
    pub top_errors: Vec<ErrorClassCount>,
    /// What to do about it.
    pub recommendation: Recommendation,
}

/// Memory: entries (CRUD), execution history, and reflection.
///
/// Implementations must be usable as `Arc<dyn Memory>`, validate input alike (namespace
/// up to [`MAX_NAMESPACE_BYTES`](crate::memory::MAX_NAMESPACE_BYTES), key up to
/// [`MAX_KEY_BYTES`](crate::memory::MAX_KEY_BYTES), no control characters, search limit 1
/// to [`MAX_SEARCH_LIMIT`](crate::memory::MAX_SEARCH_LIMIT); errors name the field), and
/// reflect through [`reflect_on`](crate::memory::reflect_on) or
/// [`recommend`](crate::memory::recommend) so that every backend gives the same answers.
/// The shared conformance suite in `tests/memory_suite` is the contract; see
/// [`InMemoryMemory`](crate::memory::InMemoryMemory) for the embedded one.
///
/// ```
/// use std::sync::Arc;
/// use jobforge::memory::{InMemoryMemory, NewEntry, Window};
/// use jobforge::Memory;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> jobforge::Result<()> {
/// let memory: Arc<dyn Memory> = Arc::new(InMemoryMemory::new());
/// memory.put(NewEntry::new("billing", "last-run", serde_json::json!("2024-05-01"))).await?;
/// assert!(memory.get("billing", "last-run").await?.is_some());
///
/// let reflection = memory.reflect("send-invoice", Window::Last(1_000)).await?;
/// assert_eq!(reflection.count, 0);
/// assert!(!reflection.recommendation.confident);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Memory: Send + Sync + 'static {
    /// Store an entry, replacing any entry at the same namespace and key.
    async fn put(&self, entry: NewEntry) -> Result<Entry>;

    /// Read an entry; expired entries are not returned.
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Entry>>;

    /// Replace an existing entry's value, keeping its tags and expiry. With
    /// `expected_version`, only if the entry is still at that version
    /// ([`ErrorKind::Conflict`](crate::ErrorKind::Conflict) otherwise). A missing entry is
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound).
    async fn update(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
        expected_version: Option<u64>,
    ) -> Result<Entry>;

    /// Delete an entry; whether it existed.
    async fn delete(&self, namespace: &str, key: &str) -> Result<bool>;

    /// Entries of a namespace by key prefix and tags, in key order.
    async fn search(&self, query: &EntryQuery) -> Result<Vec<Entry>>;

    /// Record executions (the engine calls this in batches, off the hot path).
    async fn record(&self, runs: &[ExecutionRecord]) -> Result<()>;

    /// What the history of `kind` within `window` says.
    async fn reflect(&self, kind: &str, window: Window) -> Result<Reflection>;
}

pub(crate) mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_some(&(d.as_secs_f64() * 1000.0)),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?
            .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)))
    }
}

pub(crate) mod millis_f64 {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(value.as_secs_f64() * 1000.0)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(
            f64::deserialize(deserializer)?.max(0.0) / 1000.0,
        ))
    }
}

pub(crate) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_secs())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(deserializer)?))
    }
}

pub(crate) mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_some(&d.as_secs()),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_secs))
    }
}
