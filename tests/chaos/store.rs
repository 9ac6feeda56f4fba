//! The stores under test: how any process connects to one (`StoreSpec`), and the private
//! servers the suite runs and breaks (`ScenarioStore`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jobforge::Orchestrator;
use jobforge::orchestrator::KindConfig;
use jobforge::postgres::{PostgresBackend, PostgresConfig};
use jobforge::redis::{RedisState, RedisStateConfig};
use sqlx::Connection;

use crate::jobs::KIND;
use crate::pg_cluster::Cluster;
use crate::private_redis::PrivateRedis;

/// `application_name` prefix of the workers' PostgreSQL connections (what `conn_kill` cuts).
pub(crate) const WORKER_APP_PREFIX: &str = "jfchaos_w_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    Postgres,
    Redis,
}

impl StoreKind {
    pub(crate) const ALL: [StoreKind; 2] = [StoreKind::Postgres, StoreKind::Redis];

    pub(crate) fn name(self) -> &'static str {
        match self {
            StoreKind::Postgres => "postgres",
            StoreKind::Redis => "redis",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Enough for any process to reach a store: kind, URL, and the PostgreSQL schema or Redis
/// namespace of the scenario.
#[derive(Debug, Clone)]
pub(crate) struct StoreSpec {
    pub(crate) kind: StoreKind,
    pub(crate) url: String,
    pub(crate) ns: String,
}

/// An orchestrator and what keeps its store's connections alive.
pub(crate) struct Connected {
    pub(crate) orch: Orchestrator,
    _pg: Option<PostgresBackend>,
}

impl StoreSpec {
    /// Build an orchestrator over the store, the state being its own queue, with the chaos
    /// kind configured as `kind`. `app` names the PostgreSQL connections.
    pub(crate) async fn connect(&self, app: &str, kind: KindConfig) -> Result<Connected, String> {
        let builder = Orchestrator::builder();
        let (builder, pg) = match self.kind {
            StoreKind::Postgres => {
                let pg = PostgresBackend::connect_with(
                    &self.url,
                    PostgresConfig::default()
                        .with_schema(&self.ns)
                        .with_application_name(app)
                        .with_purge_interval(None),
                )
                .await
                .map_err(|e| format!("connect to PostgreSQL {}: {e}", self.url))?;
                (builder.store(pg.store()), Some(pg))
            }
            StoreKind::Redis => {
                let state = RedisState::connect(
                    RedisStateConfig::new(self.url.clone()).with_namespace(&self.ns),
                )
                .await
                .map_err(|e| format!("connect to Redis {}: {e}", self.url))?;
                (builder.store(Arc::new(state)), None)
            }
        };
        let orch = builder
            .kind(KIND, kind)
            .build()
            .map_err(|e| format!("build the orchestrator: {e}"))?;
        Ok(Connected { orch, _pg: pg })
    }

    /// `connect`, tried again for up to `within` (a store still starting, or down).
    pub(crate) async fn connect_patiently(
        &self,
        app: &str,
        kind: impl Fn() -> KindConfig,
        within: Duration,
    ) -> Result<Connected, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.connect(app, kind()).await {
                Ok(c) => return Ok(c),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

/// A scenario's store: a fresh schema on the suite's private PostgreSQL cluster, or a
/// private `redis-server` of its own. The suite breaks it on purpose.
pub(crate) struct ScenarioStore {
    pub(crate) spec: StoreSpec,
    server: Server,
}

enum Server {
    Postgres(Arc<Cluster>),
    Redis {
        port: u16,
        /// The append-only file's folder when the scenario restarts the server.
        dir: Option<TempDir>,
        server: Option<PrivateRedis>,
    },
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl ScenarioStore {
    /// A fresh schema on `cluster`.
    pub(crate) fn postgres(cluster: Arc<Cluster>, schema: &str) -> Self {
        Self {
            spec: StoreSpec {
                kind: StoreKind::Postgres,
                url: cluster.url(),
                ns: schema.to_owned(),
            },
            server: Server::Postgres(cluster),
        }
    }

    /// A private `redis-server`; with `durable`, an append-only file synced at every write
    /// so that a restart keeps everything.
    pub(crate) fn redis(namespace: &str, durable: bool) -> Result<Self, String> {
        let port = PrivateRedis::spare_port();
        let dir = durable.then(|| {
            TempDir(std::env::temp_dir().join(format!(
                "jobforge-chaos-redis-{}",
                uuid::Uuid::now_v7().simple()
            )))
        });
        let server = match &dir {
            Some(dir) => PrivateRedis::start_durable(port, &dir.0)?,
            None => PrivateRedis::try_start(port)?,
        };
        Ok(Self {
            spec: StoreSpec {
                kind: StoreKind::Redis,
                url: server.url(),
                ns: namespace.to_owned(),
            },
            server: Server::Redis {
                port,
                dir,
                server: Some(server),
            },
        })
    }

    /// Stop the server (PostgreSQL `pg_ctl stop -m fast`, Redis `SHUTDOWN`).
    pub(crate) async fn stop(&mut self) -> Result<(), String> {
        match &mut self.server {
            Server::Postgres(cluster) => {
                let cluster = Arc::clone(cluster);
                blocking(move || cluster.try_pg_ctl("stop")).await
            }
            Server::Redis { server, .. } => {
                if let Some(mut s) = server.take() {
                    s.shutdown().await;
                }
                Ok(())
            }
        }
    }

    /// Start it again on the same port (Redis: from its append-only file).
    pub(crate) async fn start(&mut self) -> Result<(), String> {
        match &mut self.server {
            Server::Postgres(cluster) => {
                let cluster = Arc::clone(cluster);
                blocking(move || cluster.try_pg_ctl("start")).await
            }
            Server::Redis { port, dir, server } => {
                let (port, dir) = (*port, dir.as_ref().map(|d| d.0.clone()));
                let started = blocking(move || match dir {
                    Some(dir) => PrivateRedis::start_durable(port, &dir),
                    None => PrivateRedis::try_start(port),
                })
                .await?;
                *server = Some(started);
                Ok(())
            }
        }
    }

    /// Restart: PostgreSQL `pg_ctl restart -m fast`; Redis `SHUTDOWN`, then start again.
    pub(crate) async fn restart(&mut self) -> Result<(), String> {
        match &self.server {
            Server::Postgres(cluster) => {
                let cluster = Arc::clone(cluster);
                blocking(move || cluster.try_pg_ctl("restart")).await
            }
            Server::Redis { .. } => {
                self.stop().await?;
                self.start().await
            }
        }
    }

    /// Cut the workers' connections: PostgreSQL `pg_terminate_backend` of every backend whose
    /// `application_name` is a worker's; Redis `CLIENT KILL` of every normal and pub/sub
    /// client but this one (the suite's own watcher is cut too and reconnects). Answers how
    /// many were cut.
    pub(crate) async fn kill_connections(&self) -> Result<u64, String> {
        match &self.server {
            Server::Postgres(cluster) => {
                let mut admin = sqlx::PgConnection::connect(&cluster.url())
                    .await
                    .map_err(|e| format!("admin connection: {e}"))?;
                let killed: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name LIKE $1 AND pid <> pg_backend_pid()) k",
                )
                .bind(format!("{WORKER_APP_PREFIX}%"))
                .fetch_one(&mut admin)
                .await
                .map_err(|e| format!("pg_terminate_backend: {e}"))?;
                let _ = admin.close().await;
                Ok(u64::try_from(killed).unwrap_or(0))
            }
            Server::Redis { .. } => {
                let client = redis::Client::open(self.spec.url.as_str())
                    .map_err(|e| format!("redis url: {e}"))?;
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| format!("admin connection: {e}"))?;
                let mut killed = 0u64;
                for kind in ["normal", "pubsub"] {
                    let n: u64 = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg(kind)
                        .arg("SKIPME")
                        .arg("yes")
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| format!("CLIENT KILL TYPE {kind}: {e}"))?;
                    killed += n;
                }
                Ok(killed)
            }
        }
    }

    /// Drop the scenario's schema (PostgreSQL; the cluster is the suite's and lives on).
    /// A Redis server goes with the value.
    pub(crate) async fn cleanup(&self) {
        if let Server::Postgres(cluster) = &self.server {
            if let Ok(mut admin) = sqlx::PgConnection::connect(&cluster.url()).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                    self.spec.ns
                )))
                .execute(&mut admin)
                .await;
                let _ = admin.close().await;
            }
        }
    }
}

/// Run blocking work (process management) off the runtime's threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("blocking task failed: {e}"))?
}
