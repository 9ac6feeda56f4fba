use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use super::engine::{Engine, NameMap, Orchestrator};
use super::kind::KindConfig;
use super::running::RunningJobs;
use crate::handler::Handler;
use crate::job::Limits;
use crate::memory::{InMemoryMemory, Memory};
use crate::queue::QueueManager;
use crate::state::{InMemoryState, StateManager};
use crate::store::{IntoJobStore, JobStore, Split};
use crate::strategy::{Direct, RetryPolicy, Strategy};
use crate::{Error, ErrorKind, Result};

/// Wires a store, memory, strategies and handlers into an [`Orchestrator`]. Every part
/// defaults to the embedded in-memory one.
#[derive(Default)]
pub struct OrchestratorBuilder {
    store: Option<Arc<dyn JobStore>>,
    queue: Option<Arc<dyn QueueManager>>,
    state: Option<Arc<dyn StateManager>>,
    memory: Option<Arc<dyn Memory>>,
    kinds: HashMap<String, KindConfig>,
    strategies: Vec<Arc<dyn Strategy>>,
    default_strategy: Option<String>,
    default_retry: Option<RetryPolicy>,
    limits: Option<Limits>,
    duplicate_kinds: Vec<String>,
}

impl OrchestratorBuilder {
    /// The store: job records that are their own queue (default: the embedded
    /// [`InMemoryState`]). `PostgresState` (feature `postgres`) and `RedisState` (feature
    /// `redis`) are stores shared by every process that uses the same server; so are the
    /// safety wrappers ([`Timeout`](crate::safety::Timeout),
    /// [`CircuitBreaker`](crate::safety::CircuitBreaker)) around a store.
    #[must_use]
    pub fn store(mut self, store: impl IntoJobStore) -> Self {
        self.store = Some(store.into_job_store());
        self
    }

    /// A queue that delivers the jobs of the state given with [`state`](Self::state): the two
    /// make a [`Split`] store (Redis Streams beside a PostgreSQL state, say). Not with
    /// [`store`](Self::store).
    #[must_use]
    pub fn queue(mut self, queue: Arc<dyn QueueManager>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// The state whose jobs the queue given with [`queue`](Self::queue) delivers. A state
    /// without a queue cannot deliver: a store that is its own queue goes to
    /// [`store`](Self::store).
    #[must_use]
    pub fn state(mut self, state: Arc<dyn StateManager>) -> Self {
        self.state = Some(state);
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
        let store: Arc<dyn JobStore> = match (self.store, self.queue, self.state) {
            (Some(store), None, None) => store,
            // The embedded default: one in-memory store that is its own queue.
            (None, None, None) => Arc::new(InMemoryState::new()),
            (None, Some(queue), Some(state)) => Arc::new(Split::new(queue, state)),
            (Some(_), _, _) => {
                return Err(Error::new(
                    ErrorKind::Configuration,
                    "both a store and a queue or state were given: use `.store(..)` alone, or `.queue(..)` with `.state(..)` (which make a Split store)",
                ));
            }
            (None, None, Some(_)) => {
                return Err(Error::new(
                    ErrorKind::Configuration,
                    "a state without a queue cannot deliver its jobs to other processes: give a store that is its own queue with `.store(..)` (InMemoryState, PostgresState and RedisState are, and so are Timeout and CircuitBreaker around one), or the queue that delivers the state's jobs with `.queue(..)`",
                ));
            }
            (None, Some(_), None) => {
                return Err(Error::new(
                    ErrorKind::Configuration,
                    "a queue without a state: add the state that keeps the jobs' records with `.state(..)`",
                ));
            }
        };
        Ok(Orchestrator::from_engine(Engine {
            store,
            memory: self
                .memory
                .unwrap_or_else(|| Arc::new(InMemoryMemory::new())),
            kinds: self.kinds.into_iter().collect(),
            strategies,
            default_strategy,
            default,
            default_retry,
            limits,
            running: RunningJobs::default(),
            scheduler: crate::schedule::SchedulerMetrics::default(),
            queues_changed: tokio::sync::watch::Sender::new(0),
        }))
    }
}
