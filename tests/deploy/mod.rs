//! Every deployment the crate supports, set up fresh for one test and cleaned up after it:
//! the in-memory store, PostgreSQL alone, Redis alone, and Redis Streams delivery beside a
//! PostgreSQL state (a `Split` store). Tests of the store contract and the engine scenarios
//! run on each of them through [`Deployed`].
//!
//! A deployment whose server's URL (`DATABASE_URL`, `REDIS_URL`) is unset is skipped with a
//! printed reason; a URL that is set but does not answer fails the test.

#![allow(dead_code)] // each test file uses part of it

#[path = "../support/pg_schema.rs"]
mod pg_schema;

use std::sync::Arc;
use std::time::Duration;

use jobforge::postgres::{PostgresBackend, PostgresConfig};
use jobforge::queue::{InMemoryQueue, QueueManager};
use jobforge::redis::{RedisQueueConfig, RedisState, RedisStateConfig, RedisStreamsQueue};
use jobforge::state::{InMemoryState, StateManager};
use jobforge::store::{JobStore, Split};
use jobforge::{Orchestrator, OrchestratorBuilder};

/// Which deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deployment {
    InMemory,
    Postgres,
    Redis,
    StreamsPostgres,
}

/// A deployment set up for one test: its store, and what to remove when the test ends (also
/// when it fails: the guards clean up on drop).
pub(crate) struct Deployed {
    pub(crate) deployment: Deployment,
    store: Arc<dyn JobStore>,
    /// A delivery queue on the same server (in-memory, PostgreSQL, Redis Streams), for the
    /// queue contract.
    queue: Arc<dyn QueueManager>,
    /// The queue and state of a `Split` deployment, for the builder.
    split: Option<(Arc<dyn QueueManager>, Arc<dyn StateManager>)>,
    _schema: Option<PgSchema>,
    _namespace: Option<RedisNamespace>,
    /// How to open the same storage again over connections of its own.
    reopen: Option<Reopen>,
}

/// The storage of a deployment, to open again as another process would.
#[derive(Clone)]
enum Reopen {
    Postgres { url: String, schema: String },
    Redis { url: String, namespace: String },
}

fn env_url(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!(
                "{test}: skipped: {var} is not set (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379)"
            );
            None
        }
    }
}

impl Deployed {
    /// The deployment for `test`, or `None` (after printing why) when its server is not
    /// configured.
    pub(crate) async fn new(deployment: Deployment, test: &str) -> Option<Self> {
        let mut deployed = Self {
            deployment,
            store: Arc::new(InMemoryState::new()),
            queue: Arc::new(InMemoryQueue::new()),
            split: None,
            _schema: None,
            _namespace: None,
            reopen: None,
        };
        match deployment {
            Deployment::InMemory => {}
            Deployment::Postgres => {
                let url = env_url("DATABASE_URL", test)?;
                let (schema, pg) = PgSchema::connect(&url).await;
                deployed.store = pg.store();
                deployed.queue = pg.queue();
                deployed.reopen = Some(Reopen::Postgres {
                    url: url.clone(),
                    schema: schema.name.clone(),
                });
                deployed._schema = Some(schema);
            }
            Deployment::Redis => {
                let url = env_url("REDIS_URL", test)?;
                let ns = RedisNamespace::new(&url, test);
                let state =
                    RedisState::connect(RedisStateConfig::new(&url).with_namespace(&ns.name))
                        .await
                        .unwrap_or_else(|e| {
                            panic!("REDIS_URL is set but Redis is not usable: {e}")
                        });
                deployed.store = Arc::new(state);
                deployed.reopen = Some(Reopen::Redis {
                    url: url.clone(),
                    namespace: ns.name.clone(),
                });
                deployed.queue = Arc::new(
                    RedisStreamsQueue::connect(
                        RedisQueueConfig::new(&url).with_namespace(&ns.name),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("REDIS_URL is set but Redis is not usable: {e}")),
                );
                deployed._namespace = Some(ns);
            }
            Deployment::StreamsPostgres => {
                let pg_url = env_url("DATABASE_URL", test)?;
                let redis_url = env_url("REDIS_URL", test)?;
                let (schema, pg) = PgSchema::connect(&pg_url).await;
                let ns = RedisNamespace::new(&redis_url, test);
                let queue = RedisStreamsQueue::connect(
                    RedisQueueConfig::new(&redis_url).with_namespace(&ns.name),
                )
                .await
                .unwrap_or_else(|e| panic!("REDIS_URL is set but Redis is not usable: {e}"));
                let queue: Arc<dyn QueueManager> = Arc::new(queue);
                let state: Arc<dyn StateManager> = pg.store();
                deployed.store = Arc::new(Split::new(Arc::clone(&queue), Arc::clone(&state)));
                deployed.queue = Arc::clone(&queue);
                deployed.split = Some((queue, state));
                deployed._schema = Some(schema);
                deployed._namespace = Some(ns);
            }
        }
        Some(deployed)
    }

    /// The store, as the engine sees it.
    pub(crate) fn store(&self) -> Arc<dyn JobStore> {
        Arc::clone(&self.store)
    }

    /// The same store opened again over connections of its own, as another process would
    /// (the in-memory store is shared as it is).
    pub(crate) async fn reopen(&self) -> Arc<dyn JobStore> {
        match self.reopen.clone() {
            None => Arc::clone(&self.store),
            Some(Reopen::Postgres { url, schema }) => {
                let config = PostgresConfig::default()
                    .with_schema(&schema)
                    .with_max_connections(4)
                    .with_purge_interval(None)
                    .with_poll_interval(Duration::from_millis(200))
                    .with_application_name(&schema);
                PostgresBackend::connect_with(&url, config)
                    .await
                    .unwrap_or_else(|e| panic!("reconnecting to PostgreSQL failed: {e}"))
                    .store()
            }
            Some(Reopen::Redis { url, namespace }) => Arc::new(
                RedisState::connect(RedisStateConfig::new(&url).with_namespace(&namespace))
                    .await
                    .unwrap_or_else(|e| panic!("reconnecting to Redis failed: {e}")),
            ),
        }
    }

    /// The `jobforge-server` flags that open this deployment's storage (`None` in memory:
    /// no other process can share it).
    #[allow(dead_code)] // only tests that spawn servers use it
    pub(crate) fn server_args(&self) -> Option<Vec<String>> {
        match self.reopen.clone()? {
            Reopen::Postgres { url, schema } => Some(vec![
                "--database-url".into(),
                url,
                "--pg-schema".into(),
                schema,
            ]),
            Reopen::Redis { url, namespace } => Some(vec![
                "--redis-url".into(),
                url,
                "--redis-namespace".into(),
                namespace,
            ]),
        }
    }

    /// The delivery queue of this deployment's server.
    pub(crate) fn queue(&self) -> Arc<dyn QueueManager> {
        Arc::clone(&self.queue)
    }

    /// The store, as a state (every store is one).
    pub(crate) fn state(&self) -> Arc<dyn StateManager> {
        Arc::clone(&self.store) as Arc<dyn StateManager>
    }

    /// A builder on this deployment's storage, as a user would write it: `.store(..)`, or
    /// `.queue(..).state(..)` for the split deployment.
    pub(crate) fn builder(&self) -> OrchestratorBuilder {
        match &self.split {
            Some((queue, state)) => Orchestrator::builder()
                .queue(Arc::clone(queue))
                .state(Arc::clone(state)),
            None => Orchestrator::builder().store(Arc::clone(&self.store)),
        }
    }
}

/// A PostgreSQL schema of its own, dropped when the guard goes.
struct PgSchema {
    url: String,
    name: String,
}

impl PgSchema {
    async fn connect(url: &str) -> (Self, PostgresBackend) {
        let schema = Self {
            url: url.to_owned(),
            name: format!("jf_d_{}", &uuid::Uuid::now_v7().simple().to_string()[16..]),
        };
        let config = PostgresConfig::default()
            .with_schema(&schema.name)
            .with_max_connections(4)
            .with_purge_interval(None)
            .with_poll_interval(Duration::from_millis(200))
            .with_application_name(&schema.name);
        let backend = PostgresBackend::connect_with(url, config)
            .await
            .unwrap_or_else(|e| panic!("DATABASE_URL is set but connecting failed: {e}"));
        (schema, backend)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        pg_schema::run_cleanup(&self.url, vec![sql]);
    }
}

/// A Redis namespace of its own; every key under it is removed when the guard goes.
struct RedisNamespace {
    url: String,
    name: String,
}

impl RedisNamespace {
    fn new(url: &str, test: &str) -> Self {
        let short: String = test.chars().take(24).collect();
        Self {
            url: url.to_owned(),
            name: format!("jfd-{short}-{}", uuid::Uuid::now_v7().simple()),
        }
    }
}

impl Drop for RedisNamespace {
    fn drop(&mut self) {
        let url = self.url.clone();
        let pattern = format!("{{{}*", self.name);
        let _ = std::thread::spawn(move || {
            let client = redis::Client::open(url.as_str()).ok()?;
            let mut conn = client.get_connection().ok()?;
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut conn)
                    .ok()?;
                if !keys.is_empty() {
                    let _: usize = redis::cmd("UNLINK").arg(&keys).query(&mut conn).ok()?;
                }
                if next == 0 {
                    return Some(());
                }
                cursor = next;
            }
        })
        .join();
    }
}
