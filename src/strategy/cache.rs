//! A per-kind cache of [`Memory::reflect`](crate::Memory::reflect) answers, so strategies that
//! steer by history do not make a memory round trip per job.
//!
//! The first job of a kind loads the reflection (concurrent first jobs share that one load).
//! After that the hot path is a read lock and an `Arc` clone. Once the cached answer is older
//! than the refresh interval (or has served the configured number of executions), the first
//! job to notice starts one background refresh and carries on with the stale answer; nobody
//! waits for it. A failed load is cached like an answer (as "no history"), so a memory that is
//! down is asked again once per interval, not per job.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::handler::JobContext;
use crate::memory::reflection::{DRIFT_WINDOW, steer};
use crate::memory::{Reflection, Window};

/// How a [`ReflectionCache`] asks and how often it asks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CacheConfig {
    /// The window passed to `reflect`.
    pub(super) window: Window,
    /// Refresh an answer older than this.
    pub(super) interval: Duration,
    /// Also refresh after serving this many executions of the kind.
    pub(super) after_runs: Option<u64>,
    /// Also reflect on the latest [`DRIFT_WINDOW`] executions and steer by them when they
    /// drifted from the window ([`steer`]): two reflections per refresh.
    pub(super) drift: bool,
}

impl Default for CacheConfig {
    /// The latest 500 executions, refreshed every 30 s.
    fn default() -> Self {
        Self {
            window: Window::Last(500),
            interval: Duration::from_secs(30),
            after_runs: None,
            drift: false,
        }
    }
}

#[derive(Default)]
pub(super) struct ReflectionCache {
    pub(super) config: CacheConfig,
    slots: parking_lot::RwLock<HashMap<String, Arc<Slot>>>,
}

struct Slot {
    loaded: tokio::sync::OnceCell<()>,
    current: parking_lot::RwLock<Cached>,
    refreshing: AtomicBool,
    runs: AtomicU64,
}

struct Cached {
    reflection: Option<Arc<Reflection>>,
    fetched_at: Instant,
}

impl Slot {
    fn store(&self, reflection: Option<Arc<Reflection>>) {
        let mut current = self.current.write();
        // Keep the previous answer when a refresh fails: stale beats none.
        if reflection.is_some() || current.reflection.is_none() {
            current.reflection = reflection;
        }
        current.fetched_at = Instant::now();
        self.runs.store(0, Ordering::Relaxed);
    }
}

/// Clears the slot's `refreshing` flag however the refresh ends (even if its task is dropped).
struct RefreshGuard(Arc<Slot>);

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for ReflectionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReflectionCache")
            .field("config", &self.config)
            .field("kinds", &self.slots.read().len())
            .finish()
    }
}

impl ReflectionCache {
    pub(super) fn new(config: CacheConfig) -> Self {
        Self {
            config,
            slots: parking_lot::RwLock::new(HashMap::new()),
        }
    }

    fn slot(&self, kind: &str) -> Arc<Slot> {
        if let Some(slot) = self.slots.read().get(kind) {
            return Arc::clone(slot);
        }
        let mut slots = self.slots.write();
        Arc::clone(slots.entry(kind.to_owned()).or_insert_with(|| {
            Arc::new(Slot {
                loaded: tokio::sync::OnceCell::new(),
                current: parking_lot::RwLock::new(Cached {
                    reflection: None,
                    fetched_at: Instant::now(),
                }),
                refreshing: AtomicBool::new(false),
                runs: AtomicU64::new(0),
            })
        }))
    }

    /// The reflection on `ctx`'s kind: cached, loaded on first use, refreshed in the background
    /// when stale. `None` when the memory could not answer.
    pub(super) async fn get(&self, ctx: &JobContext) -> Option<Arc<Reflection>> {
        let slot = self.slot(ctx.kind());
        slot.loaded
            .get_or_init(|| async {
                slot.store(fetch(ctx, self.config.window, self.config.drift).await);
            })
            .await;
        let (reflection, age) = {
            let current = slot.current.read();
            (current.reflection.clone(), current.fetched_at.elapsed())
        };
        let runs = slot.runs.fetch_add(1, Ordering::Relaxed) + 1;
        let stale =
            age >= self.config.interval || self.config.after_runs.is_some_and(|m| runs >= m);
        if stale && !slot.refreshing.swap(true, Ordering::AcqRel) {
            let guard = RefreshGuard(Arc::clone(&slot));
            let ctx = ctx.clone();
            let (window, drift) = (self.config.window, self.config.drift);
            let refresh = async move {
                let reflection = fetch(&ctx, window, drift).await;
                guard.0.store(reflection);
                drop(guard);
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(refresh);
                }
                // Not on a Tokio runtime: refresh in line (rare; the engine always runs on one).
                Err(_) => refresh.await,
            }
        }
        reflection
    }
}

/// The kind's reflection over `window`, or over its latest [`DRIFT_WINDOW`] executions when
/// those drifted from it ([`steer`]), so a change is acted on within [`DRIFT_WINDOW`]
/// executions instead of being averaged away.
async fn fetch(ctx: &JobContext, window: Window, check_drift: bool) -> Option<Arc<Reflection>> {
    let long = match ctx.memory().reflect(ctx.kind(), window).await {
        Ok(reflection) => reflection,
        Err(err) => {
            tracing::warn!(kind = ctx.kind(), error = %err, "could not reflect on the kind's history; steering without it until the next refresh");
            return None;
        }
    };
    if !check_drift || matches!(window, Window::Last(n) if n <= DRIFT_WINDOW) {
        return Some(Arc::new(long));
    }
    let Ok(recent) = ctx
        .memory()
        .reflect(ctx.kind(), Window::Last(DRIFT_WINDOW))
        .await
    else {
        return Some(Arc::new(long));
    };
    let (steering, drifted) = steer(long, recent);
    if let Some(why) = drifted {
        tracing::info!(kind = ctx.kind(), %why, "the kind drifted; steering by its latest executions");
    }
    Some(Arc::new(steering))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use serde_json::Value;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::job::{JobRecord, NewJob, WorkerId};
    use crate::memory::{Entry, EntryQuery, ExecutionRecord, Memory, NewEntry};
    use crate::{Error, ErrorKind, Result};

    /// A memory whose `reflect` always fails, counting the calls.
    #[derive(Default)]
    struct Down(AtomicUsize);

    fn down() -> Error {
        Error::new(ErrorKind::Backend, "memory down")
    }

    #[async_trait]
    impl Memory for Down {
        async fn put(&self, _: NewEntry) -> Result<Entry> {
            Err(down())
        }
        async fn get(&self, _: &str, _: &str) -> Result<Option<Entry>> {
            Err(down())
        }
        async fn update(&self, _: &str, _: &str, _: Value, _: Option<u64>) -> Result<Entry> {
            Err(down())
        }
        async fn delete(&self, _: &str, _: &str) -> Result<bool> {
            Err(down())
        }
        async fn search(&self, _: &EntryQuery) -> Result<Vec<Entry>> {
            Err(down())
        }
        async fn record(&self, _: &[ExecutionRecord]) -> Result<()> {
            Err(down())
        }
        async fn reflect(&self, _: &str, _: Window) -> Result<Reflection> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(down())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_memory_is_asked_once_per_interval_not_per_job() {
        let memory = Arc::new(Down::default());
        let cache = ReflectionCache::new(CacheConfig {
            interval: Duration::from_secs(5),
            ..CacheConfig::default()
        });
        let ctx = JobContext::new(
            JobRecord::from_job(NewJob::new("k")),
            WorkerId::new("w"),
            memory.clone(),
            CancellationToken::new(),
        );
        for _ in 0..20 {
            assert!(cache.get(&ctx).await.is_none());
        }
        assert_eq!(memory.0.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(6)).await;
        for _ in 0..20 {
            assert!(cache.get(&ctx).await.is_none());
            tokio::task::yield_now().await;
        }
        assert_eq!(memory.0.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_first_jobs_share_one_load() {
        let memory = Arc::new(Down::default());
        let cache = ReflectionCache::default();
        let ctx = JobContext::new(
            JobRecord::from_job(NewJob::new("k")),
            WorkerId::new("w"),
            memory.clone(),
            CancellationToken::new(),
        );
        let gets: Vec<_> = (0..16).map(|_| cache.get(&ctx)).collect();
        futures_util::future::join_all(gets).await;
        assert_eq!(memory.0.load(Ordering::SeqCst), 1);
    }
}
