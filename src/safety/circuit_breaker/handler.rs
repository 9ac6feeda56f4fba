use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::config::{CallOutcome, CircuitBreakerConfig};
use super::registry::{BreakerRegistry, CallNotPermitted, KeyBreaker, PermitOn};
use crate::Result;
use crate::handler::{Handler, JobContext, JobError};
use crate::safety::keyed_map::{Found, HotKey};
use crate::safety::layer::Layer;

/// Builds [`CircuitBreaker`]s. The layer owns a [`BreakerRegistry`]: every wrapper it builds,
/// and every clone of it, shares the same breakers (keyed per kind by default), so one layer
/// applied to several handlers gives each kind its own breaker in one registry you can query.
///
/// ```
/// use std::time::Duration;
/// use jobforge::safety::{BreakerState, CircuitBreakerConfig, CircuitBreakerLayer, HandlerExt, TimeoutLayer};
/// use jobforge::{handler_fn, JobContext, KindConfig, Orchestrator};
///
/// let breaker = CircuitBreakerLayer::new(
///     CircuitBreakerConfig::default()
///         .with_minimum_calls(20)
///         .with_wait_in_open(Duration::from_secs(30)),
/// )?;
/// let handler = handler_fn(|_ctx: JobContext| async { Ok(serde_json::Value::Null) })
///     .layer(TimeoutLayer::new(Duration::from_secs(5)))
///     .layer(breaker.clone());
/// let orchestrator = Orchestrator::builder().kind("charge", KindConfig::new(handler)).build()?;
/// assert_eq!(breaker.registry().state("charge"), BreakerState::Closed);
/// # drop(orchestrator);
/// # Ok::<(), jobforge::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer {
    registry: Arc<BreakerRegistry>,
}

impl CircuitBreakerLayer {
    /// A layer with a new registry of breakers with these settings (checked first).
    pub fn new(config: CircuitBreakerConfig) -> Result<Self> {
        Ok(Self {
            registry: Arc::new(BreakerRegistry::new(config)?),
        })
    }

    /// A layer over an existing registry.
    #[must_use]
    pub fn from_registry(registry: Arc<BreakerRegistry>) -> Self {
        Self { registry }
    }

    /// The breakers: query their state, take snapshots, reset them.
    #[must_use]
    pub fn registry(&self) -> &Arc<BreakerRegistry> {
        &self.registry
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker {
            inner,
            registry: Arc::clone(&self.registry),
            hot: HotKey::new(),
        }
    }
}

/// Calls the wrapped handler (or backend) only while its key's breaker lets it.
///
/// - Around a [`Handler`]: the key comes from the configured [`KeyBy`](crate::safety::KeyBy).
///   A refused call does not run the handler: the job is deferred with
///   `JobError::defer(retry_after, "circuit open for <key>")`, class `circuit_open` (its
///   attempt is not spent). Outcomes are judged by the configured error classifier.
/// - Around a [`QueueManager`](crate::QueueManager) or [`StateManager`](crate::StateManager):
///   every call goes through the breaker of the key `queue backend` or `state backend`; a
///   refused call fails fast with an [`ErrorKind::Backend`](crate::ErrorKind::Backend) error
///   saying `circuit open for <key>, retry after ..`. (The worker backs off on backend errors,
///   and recovers by itself when the breaker closes.)
#[derive(Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    registry: Arc<BreakerRegistry>,
    hot: HotKey<KeyBreaker>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for CircuitBreaker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("registry", &self.registry)
            .finish()
    }
}

impl<S> CircuitBreaker<S> {
    /// The breaker for `key`, through the wrapper's hot key first.
    #[inline]
    pub(crate) fn breaker(&self, key: &str) -> Found<'_, KeyBreaker> {
        self.hot.get(key, || self.registry.breaker(key))
    }

    /// A permit on `breaker`, borrowing it for the call.
    #[inline]
    pub(crate) fn acquire<'a>(
        breaker: &'a Found<'_, KeyBreaker>,
    ) -> std::result::Result<PermitOn<&'a KeyBreaker>, CallNotPermitted> {
        KeyBreaker::acquire(&***breaker)
    }

    /// The wrapped value.
    #[must_use]
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The breakers.
    #[must_use]
    pub fn registry(&self) -> &Arc<BreakerRegistry> {
        &self.registry
    }
}

#[async_trait]
impl<H: Handler> Handler for CircuitBreaker<H> {
    async fn handle(&self, ctx: &JobContext) -> std::result::Result<Value, JobError> {
        let config = self.registry.config();
        let key = config.key().key(ctx);
        let breaker = self.breaker(&key);
        let permit = match Self::acquire(&breaker) {
            Ok(permit) => permit,
            Err(refused) => {
                // Never defer for zero: the job would come straight back, in a busy loop.
                let after = refused.retry_after.max(Duration::from_millis(1));
                return Err(
                    JobError::defer(after, refused.message(&key)).with_class("circuit_open")
                );
            }
        };
        let result = self.inner.handle(ctx).await;
        let outcome = match &result {
            Ok(_) => CallOutcome::Success,
            Err(error) => (config.classify)(error),
        };
        permit.record(outcome, None);
        result
    }
}
