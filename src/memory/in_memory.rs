//! The embedded [`Memory`]: entries and execution history in process memory, bounded.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use super::reflection::{RunFacts, reflect_runs};
use super::types::{
    Entry, EntryQuery, ExecutionRecord, Memory, NewEntry, OutcomeClass, Reflection, Window,
};
use super::validate::{self, EntryLimits};
use crate::clock::{Clock, SystemClock};
use crate::job::JobId;
use crate::{Error, ErrorKind, Result};

/// Expired entries removed per operation, on top of the ones an operation meets: enough
/// to keep up with any write rate, small enough to keep every call short.
const SWEEP_PER_CALL: usize = 32;

/// Distinct strings (strategy, error class, decision) remembered per kind for sharing.
const INTERNED_PER_KIND: usize = 16;

/// How an [`InMemoryMemory`] is bounded, and where it reads the time.
///
/// ```
/// use std::time::Duration;
/// use jobforge::memory::{InMemoryMemory, InMemoryMemoryConfig, ManualClock};
///
/// let clock = ManualClock::default();
/// let memory = InMemoryMemory::with_config(
///     InMemoryMemoryConfig::default()
///         .with_max_entries(10_000)
///         .with_max_executions_per_kind(50_000)
///         .with_clock(clock.clone()),
/// );
/// # let _ = memory;
/// ```
#[derive(Clone)]
pub struct InMemoryMemoryConfig {
    max_entries: usize,
    max_total_value_bytes: usize,
    max_value_bytes: usize,
    max_tags: usize,
    max_tag_bytes: usize,
    max_executions_per_kind: usize,
    max_kinds: usize,
    clock: Arc<dyn Clock>,
}

impl Default for InMemoryMemoryConfig {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_total_value_bytes: 256 * 1024 * 1024,
            max_value_bytes: 64 * 1024,
            max_tags: 32,
            max_tag_bytes: 128,
            max_executions_per_kind: 100_000,
            max_kinds: 64,
            clock: Arc::new(SystemClock),
        }
    }
}

impl InMemoryMemoryConfig {
    /// Most entries held at once (default 100,000). A `put` of a new key beyond it fails
    /// with [`ErrorKind::LimitExceeded`] once expired entries are swept.
    #[must_use]
    pub fn with_max_entries(mut self, max: usize) -> Self {
        self.max_entries = max;
        self
    }

    /// Most bytes of JSON held across all entry values (default 256 MiB); beyond it a write
    /// fails with [`ErrorKind::LimitExceeded`].
    #[must_use]
    pub fn with_max_total_value_bytes(mut self, max: usize) -> Self {
        self.max_total_value_bytes = max;
        self
    }

    /// Largest value of one entry, in bytes of JSON (default 64 KiB); larger is
    /// [`ErrorKind::InvalidInput`] naming `value`.
    #[must_use]
    pub fn with_max_value_bytes(mut self, max: usize) -> Self {
        self.max_value_bytes = max;
        self
    }

    /// Most tags on one entry or query (default 32).
    #[must_use]
    pub fn with_max_tags(mut self, max: usize) -> Self {
        self.max_tags = max;
        self
    }

    /// Longest tag, in bytes (default 128).
    #[must_use]
    pub fn with_max_tag_bytes(mut self, max: usize) -> Self {
        self.max_tag_bytes = max;
        self
    }

    /// Executions kept per kind (default 100,000): a ring buffer, the oldest dropped first.
    #[must_use]
    pub fn with_max_executions_per_kind(mut self, max: usize) -> Self {
        self.max_executions_per_kind = max;
        self
    }

    /// Kinds whose executions are kept (default 64). Recording a new kind beyond it drops
    /// the history of the kind recorded least recently.
    #[must_use]
    pub fn with_max_kinds(mut self, max: usize) -> Self {
        self.max_kinds = max;
        self
    }

    /// Where to read the time (default [`SystemClock`]); a
    /// [`ManualClock`](super::ManualClock) lets tests expire entries without sleeping.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    fn entry_limits(&self) -> EntryLimits {
        EntryLimits {
            max_value_bytes: self.max_value_bytes,
            max_tags: self.max_tags,
            max_tag_bytes: self.max_tag_bytes,
        }
    }
}

impl fmt::Debug for InMemoryMemoryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryMemoryConfig")
            .field("max_entries", &self.max_entries)
            .field("max_total_value_bytes", &self.max_total_value_bytes)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("max_tags", &self.max_tags)
            .field("max_tag_bytes", &self.max_tag_bytes)
            .field("max_executions_per_kind", &self.max_executions_per_kind)
            .field("max_kinds", &self.max_kinds)
            .finish_non_exhaustive()
    }
}

/// The embedded [`Memory`]: entries and execution history in process memory, lost when the
/// process ends.
///
/// Bounded everywhere (see [`InMemoryMemoryConfig`]): entries by count and total value size;
/// expired entries are never returned and are swept as operations pass (a few per call, all
/// of them when the store is full), so they do not pile up; executions in a ring buffer per
/// kind, for a bounded number of kinds. An execution costs about 104 bytes, its strategy,
/// error class and decision strings shared with the executions before it when they repeat:
/// a full ring of 100,000 executions takes about 10 MB, so the defaults (64 kinds) bound
/// execution history near 670 MB in the worst case, and a handful of kinds to a few tens.
///
/// ```
/// use jobforge::memory::{EntryQuery, InMemoryMemory, NewEntry};
/// use jobforge::Memory;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> jobforge::Result<()> {
/// let memory = InMemoryMemory::new();
/// let first = memory.put(NewEntry::new("crm", "customer:42", json!({"tier": "gold"})).tag("vip")).await?;
/// assert_eq!(first.version, 1);
///
/// // Compare-and-set: only if nobody wrote it since we read version 1.
/// let second = memory.update("crm", "customer:42", json!({"tier": "platinum"}), Some(1)).await?;
/// assert_eq!(second.version, 2);
///
/// let vips = memory.search(&EntryQuery::namespace("crm").prefix("customer:").tag("vip")).await?;
/// assert_eq!(vips.len(), 1);
/// assert!(memory.delete("crm", "customer:42").await?);
/// # Ok(())
/// # }
/// ```
pub struct InMemoryMemory {
    config: InMemoryMemoryConfig,
    limits: EntryLimits,
    entries: Mutex<Entries>,
    executions: RwLock<Executions>,
}

impl Default for InMemoryMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemoryMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryMemory")
            .field("config", &self.config)
            .field("stored_entries", &self.stored_entries())
            .field("kinds", &self.executions.read().kinds.len())
            .finish_non_exhaustive()
    }
}

impl InMemoryMemory {
    /// An empty memory with the default configuration.
    #[must_use]
    pub fn new() -> Self {
        Self::with_config(InMemoryMemoryConfig::default())
    }

    /// An empty memory with `config`.
    #[must_use]
    pub fn with_config(config: InMemoryMemoryConfig) -> Self {
        Self {
            limits: config.entry_limits(),
            config,
            entries: Mutex::new(Entries::default()),
            executions: RwLock::new(Executions::default()),
        }
    }

    /// Entries held right now, counting expired ones not yet swept.
    #[must_use]
    pub fn stored_entries(&self) -> usize {
        self.entries.lock().len
    }

    /// Executions of `kind` held right now.
    #[must_use]
    pub fn stored_executions(&self, kind: &str) -> usize {
        self.executions
            .read()
            .kinds
            .get(kind)
            .map_or(0, |log| log.runs.len())
    }

    fn now(&self) -> DateTime<Utc> {
        self.config.clock.now()
    }

    fn full(&self, what: &str, limit: usize, setter: &str) -> Error {
        Error::new(
            ErrorKind::LimitExceeded,
            format!(
                "memory is full: it holds its limit of {limit} {what}; delete entries, give \
                 them a TTL, or raise InMemoryMemoryConfig::{setter}"
            ),
        )
    }
}

// ---------------------------------------------------------------------------------------
// Entries

struct Stored {
    entry: Entry,
    size: usize,
}

impl Stored {
    fn live(&self, now: DateTime<Utc>) -> bool {
        self.entry.expires_at.is_none_or(|at| now < at)
    }
}

#[derive(Default)]
struct Entries {
    namespaces: HashMap<String, BTreeMap<String, Stored>>,
    /// Every entry with an expiry, soonest first; kept exactly in step with `namespaces`.
    expiry: BTreeSet<(DateTime<Utc>, String, String)>,
    len: usize,
    bytes: usize,
}

impl Entries {
    /// Remove up to `budget` expired entries, soonest first.
    fn sweep(&mut self, now: DateTime<Utc>, budget: usize) {
        for _ in 0..budget {
            match self.expiry.first() {
                Some((at, _, _)) if *at <= now => {}
                _ => return,
            }
            if let Some((_, ns, key)) = self.expiry.pop_first() {
                self.remove(&ns, &key);
            }
        }
    }

    fn remove(&mut self, ns: &str, key: &str) -> Option<Stored> {
        let keys = self.namespaces.get_mut(ns)?;
        let stored = keys.remove(key)?;
        if keys.is_empty() {
            self.namespaces.remove(ns);
        }
        if let Some(at) = stored.entry.expires_at {
            self.expiry.remove(&(at, ns.to_owned(), key.to_owned()));
        }
        self.len -= 1;
        self.bytes -= stored.size;
        Some(stored)
    }

    /// The live entry at `ns`/`key`; an expired one found there is removed.
    fn live_mut(&mut self, ns: &str, key: &str, now: DateTime<Utc>) -> Option<&mut Stored> {
        let live = self
            .namespaces
            .get(ns)
            .and_then(|keys| keys.get(key))
            .map(|stored| stored.live(now))?;
        if !live {
            self.remove(ns, key);
            return None;
        }
        self.namespaces.get_mut(ns)?.get_mut(key)
    }

    fn insert(&mut self, stored: Stored) {
        let entry = &stored.entry;
        if let Some(at) = entry.expires_at {
            self.expiry
                .insert((at, entry.namespace.clone(), entry.key.clone()));
        }
        self.len += 1;
        self.bytes += stored.size;
        self.namespaces
            .entry(entry.namespace.clone())
            .or_default()
            .insert(entry.key.clone(), stored);
    }
}

// ---------------------------------------------------------------------------------------
// Executions

/// One execution as kept: the kind is the log's, repeated strings are shared.
struct StoredRun {
    job_id: JobId,
    outcome: OutcomeClass,
    attempt: u32,
    inline_retries: u32,
    duration: Duration,
    at: DateTime<Utc>,
    strategy: Arc<str>,
    error_class: Option<Arc<str>>,
    decision: Option<Arc<str>>,
}

impl RunFacts for StoredRun {
    fn job_id(&self) -> JobId {
        self.job_id
    }
    fn outcome(&self) -> OutcomeClass {
        self.outcome
    }
    fn duration(&self) -> Duration {
        self.duration
    }
    fn inline_retries(&self) -> u32 {
        self.inline_retries
    }
    fn error_class(&self) -> Option<&str> {
        self.error_class.as_deref()
    }
}

impl StoredRun {
    fn to_record(&self, kind: &str) -> ExecutionRecord {
        ExecutionRecord {
            job_id: self.job_id,
            kind: kind.to_owned(),
            strategy: self.strategy.to_string(),
            outcome: self.outcome,
            duration: self.duration,
            attempt: self.attempt,
            inline_retries: self.inline_retries,
            error_class: self.error_class.as_deref().map(str::to_owned),
            at: self.at,
            decision: self.decision.as_deref().map(str::to_owned),
        }
    }
}

/// A few recently seen strings, so that repeated ones are stored once.
#[derive(Default)]
struct Interner {
    recent: Vec<Arc<str>>,
    next: usize,
}

impl Interner {
    fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(found) = self.recent.iter().find(|s| ***s == *text) {
            return Arc::clone(found);
        }
        let shared: Arc<str> = Arc::from(text);
        if self.recent.len() < INTERNED_PER_KIND {
            self.recent.push(Arc::clone(&shared));
        } else if let Some(slot) = self.recent.get_mut(self.next) {
            *slot = Arc::clone(&shared);
            self.next = (self.next + 1) % INTERNED_PER_KIND;
        }
        shared
    }
}

#[derive(Default)]
struct KindLog {
    runs: VecDeque<StoredRun>,
    /// When this kind was last recorded to (the store's record counter).
    last_recorded: u64,
    strings: Interner,
}

#[derive(Default)]
struct Executions {
    kinds: HashMap<String, KindLog>,
    /// Counts `record` calls; orders kinds by recency.
    tick: u64,
}

impl Executions {
    /// The log of `kind`, made room for when new.
    fn log_for(&mut self, kind: &str, max_kinds: usize) -> Option<&mut KindLog> {
        if !self.kinds.contains_key(kind) {
            if max_kinds == 0 {
                return None;
            }
            while self.kinds.len() >= max_kinds {
                let oldest = self
                    .kinds
                    .iter()
                    .min_by_key(|(_, log)| log.last_recorded)
                    .map(|(name, _)| name.clone())?;
                tracing::debug!(kind = %oldest, "dropping the execution history of the least recently recorded kind");
                self.kinds.remove(&oldest);
            }
            self.kinds.insert(kind.to_owned(), KindLog::default());
        }
        self.kinds.get_mut(kind)
    }
}

// ---------------------------------------------------------------------------------------

#[async_trait]
impl Memory for InMemoryMemory {
    async fn put(&self, new: NewEntry) -> Result<Entry> {
        let size = validate::new_entry(&new, &self.limits)?;
        let now = self.now();
        let expires_at = match new.ttl {
            None => None,
            Some(ttl) => Some(
                chrono::Duration::from_std(ttl)
                    .ok()
                    .and_then(|ttl| now.checked_add_signed(ttl))
                    .ok_or_else(|| Error::invalid_input("ttl", format!("{ttl:?} is too long")))?,
            ),
        };
        let mut tags: Vec<String> = Vec::with_capacity(new.tags.len());
        for tag in new.tags {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }

        let mut entries = self.entries.lock();
        entries.sweep(now, SWEEP_PER_CALL);
        let (old_size, previous) = match entries.live_mut(&new.namespace, &new.key, now) {
            Some(old) => (old.size, Some((old.entry.created_at, old.entry.version))),
            None => (0, None),
        };
        let max_entries = self.config.max_entries;
        let max_bytes = self.config.max_total_value_bytes;
        let fits = |e: &Entries| {
            let count_ok = previous.is_some() || e.len < max_entries;
            let bytes_ok = e.bytes - old_size + size <= max_bytes;
            (count_ok, bytes_ok)
        };
        if fits(&entries) != (true, true) {
            entries.sweep(now, usize::MAX);
            match fits(&entries) {
                (false, _) => return Err(self.full("entries", max_entries, "with_max_entries")),
                (_, false) => {
                    return Err(self.full(
                        "bytes of entry values",
                        max_bytes,
                        "with_max_total_value_bytes",
                    ));
                }
                (true, true) => {}
            }
        }
        let (created_at, version) = match previous {
            Some((created_at, version)) => (created_at, version + 1),
            None => (now, 1),
        };
        entries.remove(&new.namespace, &new.key);
        let entry = Entry {
            namespace: new.namespace,
            key: new.key,
            value: new.value,
            tags,
            created_at,
            updated_at: now,
            expires_at,
            version,
        };
        entries.insert(Stored {
            entry: entry.clone(),
            size,
        });
        Ok(entry)
    }

    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Entry>> {
        validate::namespace(namespace)?;
        validate::key(key)?;
        let now = self.now();
        let mut entries = self.entries.lock();
        entries.sweep(now, SWEEP_PER_CALL);
        Ok(entries
            .live_mut(namespace, key, now)
            .map(|stored| stored.entry.clone()))
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
        let size = validate::value(&value, &self.limits)?;
        let now = self.now();
        let mut entries = self.entries.lock();
        entries.sweep(now, SWEEP_PER_CALL);
        let bytes = entries.bytes;
        let max_bytes = self.config.max_total_value_bytes;
        let Some(stored) = entries.live_mut(namespace, key, now) else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no entry `{key}` in namespace `{namespace}` (never written, deleted or expired)"
                ),
            ));
        };
        if let Some(expected) = expected_version {
            if stored.entry.version != expected {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "entry `{key}` in namespace `{namespace}` is at version {}, not {expected}: \
                         someone wrote it since; read it again and decide",
                        stored.entry.version
                    ),
                ));
            }
        }
        let old_size = stored.size;
        if bytes - old_size + size > max_bytes {
            return Err(self.full(
                "bytes of entry values",
                max_bytes,
                "with_max_total_value_bytes",
            ));
        }
        stored.size = size;
        stored.entry.value = value;
        stored.entry.updated_at = now;
        stored.entry.version += 1;
        let entry = stored.entry.clone();
        entries.bytes = bytes - old_size + size;
        Ok(entry)
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<bool> {
        validate::namespace(namespace)?;
        validate::key(key)?;
        let now = self.now();
        let mut entries = self.entries.lock();
        entries.sweep(now, SWEEP_PER_CALL);
        let existed = entries.live_mut(namespace, key, now).is_some();
        entries.remove(namespace, key);
        Ok(existed)
    }

    async fn search(&self, query: &EntryQuery) -> Result<Vec<Entry>> {
        validate::query(query, &self.limits)?;
        let now = self.now();
        let mut entries = self.entries.lock();
        entries.sweep(now, SWEEP_PER_CALL);
        let Some(keys) = entries.namespaces.get(&query.namespace) else {
            return Ok(Vec::new());
        };
        let prefix = query.key_prefix.as_deref().unwrap_or("");
        Ok(keys
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, stored)| stored)
            .filter(|stored| stored.live(now))
            .filter(|stored| query.tags.iter().all(|t| stored.entry.tags.contains(t)))
            .take(query.limit)
            .map(|stored| stored.entry.clone())
            .collect())
    }

    async fn record(&self, runs: &[ExecutionRecord]) -> Result<()> {
        let per_kind = self.config.max_executions_per_kind;
        if runs.is_empty() || per_kind == 0 {
            return Ok(());
        }
        let mut executions = self.executions.write();
        executions.tick += 1;
        let tick = executions.tick;
        for run in runs {
            let Some(log) = executions.log_for(&run.kind, self.config.max_kinds) else {
                continue;
            };
            log.last_recorded = tick;
            let stored = StoredRun {
                job_id: run.job_id,
                outcome: run.outcome,
                attempt: run.attempt,
                inline_retries: run.inline_retries,
                duration: run.duration,
                at: run.at,
                strategy: log.strings.intern(&run.strategy),
                error_class: run.error_class.as_deref().map(|c| log.strings.intern(c)),
                decision: run.decision.as_deref().map(|d| log.strings.intern(d)),
            };
            while log.runs.len() >= per_kind {
                log.runs.pop_front();
            }
            if log.runs.len() == log.runs.capacity() {
                // Grow by doubling, but never past the bound: a full ring holds no slack.
                let target = (log.runs.len() * 2).max(16).min(per_kind);
                log.runs
                    .reserve_exact(target.saturating_sub(log.runs.len()));
            }
            log.runs.push_back(stored);
        }
        Ok(())
    }

    async fn reflect(&self, kind: &str, window: Window) -> Result<Reflection> {
        validate::kind(kind)?;
        let now = self.now();
        let executions = self.executions.read();
        let Some(log) = executions.kinds.get(kind) else {
            return Ok(reflect_runs::<StoredRun, _>(kind, std::iter::empty()));
        };
        let runs = &log.runs;
        Ok(match window {
            Window::All => reflect_runs(kind, runs.iter()),
            Window::Last(n) => reflect_runs(kind, runs.range(runs.len().saturating_sub(n)..)),
            Window::Since(span) => {
                match chrono::Duration::from_std(span)
                    .ok()
                    .and_then(|span| now.checked_sub_signed(span))
                {
                    Some(cutoff) => {
                        reflect_runs(kind, runs.iter().filter(move |run| run.at >= cutoff))
                    }
                    None => reflect_runs(kind, runs.iter()),
                }
            }
        })
    }
}

impl InMemoryMemory {
    /// The executions of `kind` held right now, oldest first (copies; for inspection and
    /// tests, not the hot path).
    #[must_use]
    pub fn executions(&self, kind: &str) -> Vec<ExecutionRecord> {
        self.executions
            .read()
            .kinds
            .get(kind)
            .map(|log| log.runs.iter().map(|run| run.to_record(kind)).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_execution_is_compact() {
        assert!(std::mem::size_of::<StoredRun>() <= 104);
    }

    #[tokio::test]
    async fn a_full_ring_holds_no_slack() {
        let memory = InMemoryMemory::with_config(
            InMemoryMemoryConfig::default().with_max_executions_per_kind(1_100),
        );
        let run = ExecutionRecord {
            job_id: JobId::new(),
            kind: "k".into(),
            strategy: "direct".into(),
            outcome: OutcomeClass::Succeeded,
            duration: Duration::from_millis(1),
            attempt: 1,
            inline_retries: 0,
            error_class: None,
            at: Utc::now(),
            decision: None,
        };
        let batch = vec![run; 3_000];
        memory.record(&batch).await.unwrap();
        let executions = memory.executions.read();
        let log = executions.kinds.get("k").unwrap();
        assert_eq!(log.runs.len(), 1_100);
        // Plain doubling would have reached 2,048.
        assert!(log.runs.capacity() < 1_200, "{}", log.runs.capacity());
    }

    #[test]
    fn interner_shares_repeats_and_stays_bounded() {
        let mut strings = Interner::default();
        let a = strings.intern("direct");
        let b = strings.intern("direct");
        assert!(Arc::ptr_eq(&a, &b));
        for i in 0..100 {
            strings.intern(&format!("class-{i}"));
        }
        assert_eq!(strings.recent.len(), INTERNED_PER_KIND);
        assert_eq!(&*strings.intern("class-99"), "class-99");
    }

    #[tokio::test]
    async fn expiry_index_stays_in_step_with_entries() {
        let clock = crate::memory::ManualClock::default();
        let memory =
            InMemoryMemory::with_config(InMemoryMemoryConfig::default().with_clock(clock.clone()));
        for i in 0..10 {
            memory
                .put(NewEntry::new("ns", format!("k{i}"), Value::Null).ttl(Duration::from_secs(5)))
                .await
                .unwrap();
        }
        // Replace half without a TTL: their index rows must go.
        for i in 0..5 {
            memory
                .put(NewEntry::new("ns", format!("k{i}"), Value::Null))
                .await
                .unwrap();
        }
        assert_eq!(memory.entries.lock().expiry.len(), 5);
        memory.delete("ns", "k7").await.unwrap();
        assert_eq!(memory.entries.lock().expiry.len(), 4);
        clock.advance(Duration::from_secs(6));
        memory.get("ns", "k0").await.unwrap();
        let entries = memory.entries.lock();
        assert!(entries.expiry.is_empty());
        assert_eq!(entries.len, 5);
        assert_eq!(entries.bytes, 5 * 4);
    }
}
