use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use super::direct::RecordQueue;
use super::engine::{Engine, NameMap, Orchestrator};
use crate::handler::Handler;
use crate::job::Limits;
use crate::memory::{InMemoryMemory, Memory};
use crate::queue::{InMemoryQueue, QueueManager};
use crate::state::{InMemoryState, QueuingState, StateManager};
use crate::strategy::{Direct, RetryPolicy, Strategy};
use crate::{Error, ErrorKind, Result};

/// How one kind of job runs: its handler, retries, timeout and strategy.
///
/// ```
/// use std::time::Duration;
/// use jobforge::{handler_fn, JobContext, KindConfig, RetryPolicy};
///
/// let config = KindConfig::new(handler_fn(|_ctx: JobContext| async { Ok(serde_json::Value::Null) }))
///     .retry(RetryPolicy::new(3).with_base(Duration::from_millis(50)))
///     .timeout(Duration::from_secs(30))
///     .idempotent(true);
/// # drop(config);
/// ```
#[derive(Clone)]
pub struct KindConfig {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) strategy: Option<String>,
    pub(crate) idempotent: bool,
}

impl KindConfig {
    /// A kind run by `handler`, with the orchestrator's default retries and strategy.
    pub fn new(handler: impl Handler) -> Self {
        Self {
            handler: Arc::new(handler),
            retry: None,
            timeout: None,
            strategy: None,
            idempotent: false,
        }
    }

    /// Retries for this kind.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Deadline of one attempt (a job's own timeout wins).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The strategy this kind runs with by default.
    #[must_use]
    pub fn strategy(mut self, name: impl Into<String>) -> Self {
        self.strategy = Some(name.into());
        self
    }

    /// Whether running a job of this kind twice at once is harmless (required for hedging).
    #[must_use]
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// The handler.
    #[must_use]
    pub fn handler(&self) -> &Arc<dyn Handler> {
        &self.handler
    }

    /// Whether the kind is marked idempotent.
    #[must_use]
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }
}

impl std::fmt::Debug for KindConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindConfig")
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("strategy", &self.strategy)
            .field("idempotent", &self.idempotent)
            .finish_non_exhaustive()
    }
}

/// Wires queue, state, memory, strategies and handlers into an [`Orchestrator`]. Every part
/// defaults to the embedded in-memory one.
#[derive(Default)]
pub struct OrchestratorBuilder {
    queue: Option<Arc<dyn QueueManager>>,
    state: Option<Arc<dyn StateManager>>,
    queuing_state: Option<Arc<dyn QueuingState>>,
    memory: Option<Arc<dyn Memory>>,
    kinds: HashMap<String, KindConfig>,
    strategies: Vec<Arc<dyn Strategy>>,
    default_strategy: Option<String>,
    default_retry: Option<RetryPolicy>,
    limits: Option<Limits>,
    duplicate_kinds: Vec<String>,
}

impl OrchestratorBuilder {
    /// The queue backend (default [`InMemoryQueue`]).
    #[must_use]
    pub fn queue(mut self, queue: Arc<dyn QueueManager>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// The state backend (default [`InMemoryState`]).
    #[must_use]
    pub fn state(mut self, state: Arc<dyn StateManager>) -> Self {
        self.state = Some(state);
        self
    }

    /// One store as both queue and state (a [`QueuingState`], such as
    /// `PostgresState` (feature `postgres`)): its job records are the queue, so a
    /// worker claims a batch of due jobs in one step and a finish needs no separate
    /// acknowledgement. A queue set with [`queue`](Self::queue) as well takes over delivery,
    /// and `store` is then the state only; a later [`state`](Self::state) replaces it.
    #[must_use]
    pub fn queue_and_state<S: QueuingState>(mut self, store: Arc<S>) -> Self {
        self.state = Some(Arc::clone(&store) as Arc<dyn StateManager>);
        self.queuing_state = Some(store);
        self
    }

    /// The memory (default [`InMemoryMemory`]).
    #[must_use]
    pub fn memory(mut self, memory: Arc<dyn Memory>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// Run jobs of `kind` with `handler` and the default settings.
    #[must_use]
    pub fn handler(self, kind: impl Into<String>, handler: impl Handler) -> Self {
        self.kind(kind, KindConfig::new(handler))
    }

    /// Run jobs of `kind` as `config` says. Registering a kind twice is an error at `build`.
    #[must_use]
    pub fn kind(mut self, kind: impl Into<String>, config: KindConfig) -> Self {
        let kind = kind.into();
        match self.kinds.entry(kind) {
            Entry::Occupied(taken) => self.duplicate_kinds.push(taken.key().clone()),
            Entry::Vacant(free) => {
                free.insert(config);
            }
        }
        self
    }

    /// Make a strategy selectable by its name (`direct` is always there).
    #[must_use]
    pub fn strategy(mut self, strategy: Arc<dyn Strategy>) -> Self {
        self.strategies.push(strategy);
        self
    }

    /// The strategy kinds use when they name none (default `direct`).
    #[must_use]
    pub fn default_strategy(mut self, name: impl Into<String>) -> Self {
        self.default_strategy = Some(name.into());
        self
    }

    /// Retries for kinds that set none (default [`RetryPolicy::default`]).
    #[must_use]
    pub fn default_retry(mut self, policy: RetryPolicy) -> Self {
        self.default_retry = Some(policy);
        self
    }

    /// Submission limits (default [`Limits::default`]).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Check the configuration and build.
    pub fn build(self) -> Result<Orchestrator> {
        if let Some(kind) = self.duplicate_kinds.first() {
            return Err(Error::new(
                ErrorKind::Configuration,
                format!("kind `{kind}` is registered twice; register each kind once"),
            ));
        }
        let limits = self.limits.unwrap_or_default();
        let default_retry = self.default_retry.unwrap_or_default();
        default_retry.validate()?;
        let mut strategies: NameMap<Arc<dyn Strategy>> = NameMap::default();
        strategies.insert(Direct::NAME.to_owned(), Arc::new(Direct));
        for s in self.strategies {
            strategies.insert(s.name().to_owned(), s);
        }
        let default_strategy = self
            .default_strategy
            .unwrap_or_else(|| Direct::NAME.to_owned());
        let known = |name: &str| -> Result<()> {
            if strategies.contains_key(name) {
                Ok(())
            } else {
                let mut names: Vec<&str> = strategies.keys().map(String::as_str).collect();
                names.sort_unstable();
                Err(Error::new(
                    ErrorKind::Configuration,
                    format!(
                        "strategy `{name}` is not registered; register it with `.strategy(..)` (registered: {})",
                        names.join(", ")
                    ),
                ))
            }
        };
        known(&default_strategy)?;
        let default = strategies
            .get(&default_strategy)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::Configuration, "default strategy missing"))?;
        for (kind, config) in &self.kinds {
            let probe = crate::NewJob::new(kind.clone());
            probe.validate(&limits).map_err(|e| {
                Error::new(
                    ErrorKind::Configuration,
                    format!("kind `{kind}`: {}", e.message()),
                )
            })?;
            if let Some(retry) = &config.retry {
                retry.validate()?;
            }
            if let Some(name) = &config.strategy {
                known(name)?;
            }
            if config.timeout.is_some_and(|t| t.is_zero()) {
                return Err(Error::invalid_input(
                    "timeout",
                    format!("kind `{kind}`: must be greater than zero"),
                ));
            }
        }
        // The store is the queue only if nothing else delivers and it is still the state.
        let direct = match (&self.queue, self.queuing_state, &self.state) {
            (None, Some(store), Some(state))
                if std::ptr::addr_eq(Arc::as_ptr(&store), Arc::as_ptr(state)) =>
            {
                Some(store)
            }
            _ => None,
        };
        let queue: Arc<dyn QueueManager> = match (self.queue, &direct) {
            (Some(queue), _) => queue,
            (None, Some(store)) => Arc::new(RecordQueue::new(Arc::clone(store))),
            (None, None) => Arc::new(InMemoryQueue::new()),
        };
        Ok(Orchestrator::from_engine(Engine {
            queue,
            state: self.state.unwrap_or_else(|| Arc::new(InMemoryState::new())),
            direct,
            memory: self
                .memory
                .unwrap_or_else(|| Arc::new(InMemoryMemory::new())),
            kinds: self.kinds.into_iter().collect(),
            strategies,
            default_strategy,
            default,
            default_retry,
            limits,
            pools: parking_lot::Mutex::new(Vec::new()),
        }))
    }
}
