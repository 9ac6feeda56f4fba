use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{Semaphore, TryAcquireError};

use super::key::KeyBy;
use super::keyed_map::{HotKey, KeyedMap};
use super::layer::Layer;
use crate::handler::{Handler, JobContext, JobError};
use crate::{Error, Result};

/// Settings of a bulkhead: at most `max_concurrent` calls at once per key (default: per
/// kind); a call that finds the bulkhead full waits up to `max_wait` (default: not at all)
/// for a place, then the job is deferred for `retry_after` (default 1 s).
///
/// ```
/// use std::time::Duration;
/// use jobforge::safety::{BulkheadConfig, KeyBy};
///
/// let config = BulkheadConfig::new(8)
///     .with_max_wait(Duration::from_millis(50))
///     .with_retry_after(Duration::from_millis(500))
///     .with_key(KeyBy::tenant());
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct BulkheadConfig {
    max_concurrent: u32,
    max_wait: Duration,
    retry_after: Duration,
    key: KeyBy,
}

impl BulkheadConfig {
    /// At most `max_concurrent` calls at once per key.
    #[must_use]
    pub fn new(max_concurrent: u32) -> Self {
        Self {
            max_concurrent,
            max_wait: Duration::ZERO,
            retry_after: Duration::from_secs(1),
            key: KeyBy::kind(),
        }
    }

    /// How long a call may wait for a place before its job is deferred (default zero).
    #[must_use]
    pub fn with_max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// How long a job that found no place is deferred (default 1 s).
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// Which bulkhead a job uses (default: one per kind).
    #[must_use]
    pub fn with_key(mut self, key: KeyBy) -> Self {
        self.key = key;
        self
    }

    /// Check the settings; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.max_concurrent == 0 {
            return Err(Error::invalid_input("max_concurrent", "must be at least 1"));
        }
        if usize::try_from(self.max_concurrent).map_or(true, |n| n > Semaphore::MAX_PERMITS) {
            return Err(Error::invalid_input(
                "max_concurrent",
                format!("must be at most {}", Semaphore::MAX_PERMITS),
            ));
        }
        Ok(())
    }
}

/// One semaphore per key, shared by a [`BulkheadLayer`], its clones and every [`Bulkhead`]
/// they build.
pub struct BulkheadRegistry {
    config: BulkheadConfig,
    semaphores: KeyedMap<Semaphore>,
}

impl BulkheadRegistry {
    /// A registry with these settings (checked first).
    pub fn new(config: BulkheadConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            semaphores: KeyedMap::new(),
        })
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &BulkheadConfig {
        &self.config
    }

    fn semaphore(&self, key: &str) -> Arc<Semaphore> {
        let max = self.max();
        self.semaphores.get_or_insert_with(
            key,
            |_| Semaphore::new(max),
            // Forget bulkheads with nothing running and no caller holding them.
            |s| Arc::strong_count(s) > 1 || s.available_permits() < max,
        )
    }

    fn max(&self) -> usize {
        usize::try_from(self.config.max_concurrent).unwrap_or(usize::MAX)
    }

    /// Calls running now under `key`.
    #[must_use]
    pub fn in_flight(&self, key: &str) -> usize {
        self.semaphores
            .get(key)
            .map_or(0, |s| self.max().saturating_sub(s.available_permits()))
    }

    /// How many keys have a bulkhead.
    #[must_use]
    pub fn len(&self) -> usize {
        self.semaphores.len()
    }

    /// Whether no key has a bulkhead yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for BulkheadRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadRegistry")
            .field("config", &self.config)
            .field("keys", &self.len())
            .finish()
    }
}

/// Builds [`Bulkhead`]s over one shared [`BulkheadRegistry`].
///
/// ```
/// use jobforge::safety::{BulkheadConfig, BulkheadLayer, HandlerExt};
/// use jobforge::{handler_fn, JobContext, KindConfig};
///
/// let bulkhead = BulkheadLayer::new(BulkheadConfig::new(4))?;
/// let handler = handler_fn(|_ctx: JobContext| async { Ok(serde_json::Value::Null) })
///     .layer(bulkhead.clone());
/// assert_eq!(bulkhead.registry().in_flight("resize"), 0);
/// # drop(KindConfig::new(handler));
/// # Ok::<(), jobforge::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    registry: Arc<BulkheadRegistry>,
}

impl BulkheadLayer {
    /// A layer with a new registry with these settings (checked first).
    pub fn new(config: BulkheadConfig) -> Result<Self> {
        Ok(Self {
            registry: Arc::new(BulkheadRegistry::new(config)?),
        })
    }

    /// The shared registry.
    #[must_use]
    pub fn registry(&self) -> &Arc<BulkheadRegistry> {
        &self.registry
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Bulkhead<S> {
        Bulkhead {
            inner,
            registry: Arc::clone(&self.registry),
            hot: HotKey::new(),
        }
    }
}

/// Runs at most the configured number of calls of the wrapped handler at once per key; a
/// job that finds no place within `max_wait` is deferred (class `bulkhead_full`, attempt not
/// spent).
#[derive(Clone)]
pub struct Bulkhead<S> {
    inner: S,
    registry: Arc<BulkheadRegistry>,
    hot: HotKey<Semaphore>,
}

impl<S: fmt::Debug> fmt::Debug for Bulkhead<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("inner", &self.inner)
            .field("registry", &self.registry)
            .finish()
    }
}

impl<S> Bulkhead<S> {
    /// The wrapped value.
    #[must_use]
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The shared registry.
    #[must_use]
    pub fn registry(&self) -> &Arc<BulkheadRegistry> {
        &self.registry
    }
}

#[async_trait]
impl<H: Handler> Handler for Bulkhead<H> {
    async fn handle(&self, ctx: &JobContext) -> std::result::Result<Value, JobError> {
        let config = &self.registry.config;
        let key = config.key.key(ctx);
        let semaphore = self.hot.get(&key, || self.registry.semaphore(&key));
        let _place = match semaphore.try_acquire() {
            Ok(place) => place,
            Err(TryAcquireError::NoPermits) if !config.max_wait.is_zero() => {
                match tokio::time::timeout(config.max_wait, semaphore.acquire()).await {
                    Ok(Ok(place)) => place,
                    _ => return Err(full(config, &key)),
                }
            }
            Err(_) => return Err(full(config, &key)),
        };
        self.inner.handle(ctx).await
    }
}

fn full(config: &BulkheadConfig, key: &str) -> JobError {
    JobError::defer(
        config.retry_after.max(Duration::from_millis(1)),
        format_args!(
            "bulkhead full for {key}: {} calls running",
            config.max_concurrent
        ),
    )
    .with_class("bulkhead_full")
}
