use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};

use super::PostgresConfig;
use super::shared::{Shared, db_error};
use super::{PostgresMemory, PostgresQueue, PostgresState};
use crate::{Error, ErrorKind, Result};

/// Connections `connect` opens and warms before the first job: about as many as one worker
/// pool and a submitter use at once (a claim, two finish round trips, a submit). Warming all
/// ten of the default pool kept ten connections in rotation afterwards, and the steady-state
/// submit-to-start p50 at 12,000 jobs/s rose from 1.3 to 2.0 ms; with four it stays at 1.4.
const WARM_CONNECTIONS: u32 = 4;

/// The crate's migrations, embedded at build time from `migrations/`.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The name of jobforge's own migrations table, inside its schema.
const MIGRATIONS_TABLE: &str = "_jobforge_migrations";

/// One PostgreSQL database as jobforge's state, queue and memory. Cheap to clone; clones
/// share the pool, the `LISTEN` connection and the background purge, which stop when the
/// last clone (and the last state, queue or memory handed out) is dropped.
///
/// Connecting checks everything it can at once, so a bad URL, an unreachable server or a
/// schema the role may not use is a clear error here rather than a failure later:
///
/// ```no_run
/// use jobforge::postgres::{PostgresBackend, PostgresConfig};
///
/// # async fn run() -> jobforge::Result<()> {
/// let pg = PostgresBackend::connect_with(
///     "postgres://app:secret@db.internal:5432/app",
///     PostgresConfig::default().with_schema("jobs"),
/// )
/// .await?;
/// let state = pg.store();
/// # drop(state);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresBackend {
    shared: Arc<Shared>,
    state: Arc<PostgresState>,
    queue: Arc<PostgresQueue>,
    memory: Arc<PostgresMemory>,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("schema", &self.shared.config.schema)
            .field("statements", &self.shared.statements())
            .finish_non_exhaustive()
    }
}

impl PostgresBackend {
    /// Connect to `url` (`postgres://user:password@host:port/database`) with the default
    /// [`PostgresConfig`]: open a pool, run the migrations, start listening.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PostgresConfig::default()).await
    }

    /// Connect to `url` with `config`.
    pub async fn connect_with(url: &str, config: PostgresConfig) -> Result<Self> {
        config.validate()?;
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| {
                Error::invalid_input(
                    "url",
                    format!(
                        "not a PostgreSQL URL ({e}); expected postgres://user:password@host:5432/database"
                    ),
                )
            })?
            .application_name(&config.application_name)
            // The batch statements bind arrays of thousands of values; planning them anew
            // for those values (PostgreSQL's first five runs of a prepared statement) costs
            // more than running them, and the generic plan is as good. Every statement is
            // built for an index, but a generic plan made while the tables are still small
            // (a new schema; statistics lag behind by up to a minute) would scan whole
            // tables that then grow: seq scans are for when no index applies.
            // And no JIT compilation: these statements run in a millisecond or two, and
            // compiling one (which a plan's cost can trigger on a server's defaults) takes
            // longer than a second. No parallel plans either: starting workers for a
            // statement of a few milliseconds costs more than it saves, and a generic plan
            // that chose a parallel scan of `jobs` (the finish joined with its leases, once
            // `jobs` had grown) held a burn-down to a few hundred jobs a second.
            .options([
                ("plan_cache_mode", "force_generic_plan"),
                ("enable_seqscan", "off"),
                ("jit", "off"),
                ("max_parallel_workers_per_gather", "0"),
            ]);
        let target = format!(
            "{}:{} (database `{}`, user `{}`)",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username()),
            options.get_username()
        );
        let unreachable = |e: sqlx::Error| {
            Error::backend(
                format!(
                    "could not connect to PostgreSQL at {target}: check that the server is running and reachable and that the URL's credentials and database are right"
                ),
                e,
            )
        };
        // One direct connection first: a pool would only say it timed out, this says why
        // (refused, unknown host, authentication, no such database).
        match tokio::time::timeout(config.acquire_timeout, PgConnection::connect_with(&options))
            .await
        {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => return Err(unreachable(e)),
            Err(_) => return Err(unreachable(sqlx::Error::PoolTimedOut)),
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        Self::from_pool(pool, config).await
    }

    /// Use an existing pool (the host application's, say). jobforge's statements name their
    /// schema explicitly, so the pool's `search_path` does not matter. `LISTEN` gets a
    /// connection of its own, opened with the pool's options. Before it returns it opens up
    /// to four of the pool's connections and plans jobforge's hot statements on them (see
    /// docs/backends.md, *Connecting*).
    ///
    /// For batch speed, open the pool with `plan_cache_mode=force_generic_plan`,
    /// `enable_seqscan=off`, `jit=off` and `max_parallel_workers_per_gather=0`
    /// (`PgConnectOptions::options`), as
    /// [`connect`](Self::connect) does: otherwise PostgreSQL plans each of the first five
    /// runs of a statement for its bound values (planning a batch of thousands of values
    /// costs more than running it), a generic plan made while the tables are new and small
    /// can scan whole tables that then grow, until autovacuum's statistics catch up, and a
    /// plan's cost can set off JIT compilation that takes longer than the statement. These
    /// settings would apply to every query on the pool, so a pool of jobforge's own is the
    /// better choice.
    pub async fn from_pool(pool: PgPool, config: PostgresConfig) -> Result<Self> {
        config.validate()?;
        migrate(&pool, &config.schema).await?;
        check_privileges(&pool, &config.schema).await?;
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(config.acquire_timeout)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with((*pool.connect_options()).clone());
        let shared = Arc::new(Shared::new(pool, config));
        let mut listener = PgListener::connect_with(&listen_pool)
            .await
            .map_err(|e| db_error("open the LISTEN connection", e))?;
        listener
            .listen(&shared.channel)
            .await
            .map_err(|e| db_error("LISTEN for new jobs", e))?;
        let task = tokio::spawn(listen_loop(Arc::downgrade(&shared), listener));
        shared.add_task(task.abort_handle());

        let state = Arc::new(PostgresState::new(Arc::clone(&shared)));
        // Ready before the first job: connections open, hot statements planned.
        let connections = shared
            .pool
            .options()
            .get_max_connections()
            .min(WARM_CONNECTIONS);
        state
            .warm_up(usize::try_from(connections).unwrap_or(1))
            .await;
        let queue = Arc::new(PostgresQueue::new(Arc::clone(&shared)));
        let memory = Arc::new(PostgresMemory::new(Arc::clone(&shared)));
        if let Some(every) = shared.config.purge_interval {
            let task = tokio::spawn(purge_loop(
                Arc::downgrade(&state),
                Arc::downgrade(&queue),
                Arc::downgrade(&memory),
                every,
            ));
            shared.add_task(task.abort_handle());
        }
        let task = tokio::spawn(ring_loop(
            Arc::downgrade(&state),
            shared.config.ring_interval,
        ));
        shared.add_task(task.abort_handle());
        tracing::info!(schema = %shared.config.schema, "PostgreSQL backend ready");
        Ok(Self {
            shared,
            state,
            queue,
            memory,
        })
    }

    /// The store: job records, history, counts, and their delivery (hand it to
    /// [`OrchestratorBuilder::store`](crate::OrchestratorBuilder::store)); also a
    /// [`StateManager`](crate::state::StateManager) for a [`Split`](crate::store::Split).
    #[must_use]
    pub fn store(&self) -> Arc<PostgresState> {
        Arc::clone(&self.state)
    }

    /// The standalone queue, for deployments whose state lives elsewhere. With Postgres as
    /// state too, prefer [`store`](Self::store).
    #[must_use]
    pub fn queue(&self) -> Arc<PostgresQueue> {
        Arc::clone(&self.queue)
    }

    /// The schedules, kept beside the jobs ([`crate::schedule`]): what
    /// [`store`](Self::store) serves through [`JobStore::schedules`](crate::store::JobStore),
    /// for a [`Split`](crate::store::Split) whose state is this store
    /// ([`Split::with_schedules`](crate::store::Split::with_schedules)).
    #[must_use]
    pub fn schedules(&self) -> Arc<crate::postgres::PostgresSchedules> {
        Arc::clone(&self.state.schedules)
    }

    /// The memory: entries, execution history and reflection.
    #[must_use]
    pub fn memory(&self) -> Arc<PostgresMemory> {
        Arc::clone(&self.memory)
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.shared.pool
    }

    /// The settings in use.
    #[must_use]
    pub fn config(&self) -> &PostgresConfig {
        &self.shared.config
    }

    /// Statements sent so far by this backend's state, queue and memory (for measuring
    /// batching: statements per job).
    #[must_use]
    pub fn statements(&self) -> u64 {
        self.shared.statements()
    }

    /// Delete now what is past retention (finished jobs with their history, old dead
    /// letters and executions, expired memory entries), in batches of [`PostgresConfig::purge_batch`] rows. Returns the rows
    /// deleted. The background purge does the same every
    /// [`PostgresConfig::purge_interval`].
    pub async fn purge(&self) -> Result<u64> {
        purge_all(&self.state, &self.queue, &self.memory).await
    }
}

async fn purge_all(
    state: &PostgresState,
    queue: &PostgresQueue,
    memory: &PostgresMemory,
) -> Result<u64> {
    Ok(state.purge_finished().await? + queue.purge_dead_letters().await? + memory.purge().await?)
}

async fn listen_loop(shared: Weak<Shared>, mut listener: PgListener) {
    let mut failures = 0u32;
    loop {
        let received = listener.try_recv().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match received {
            Ok(Some(notification)) => {
                failures = 0;
                shared.on_notification(notification.payload());
            }
            Ok(None) => {
                // The connection dropped and was replaced: whatever was sent meanwhile is lost,
                // so let every waiter look again.
                tracing::info!("LISTEN connection re-established");
                shared.wake_all();
            }
            Err(err) => {
                failures += 1;
                let pause = Duration::from_millis(100)
                    .saturating_mul(1 << failures.min(6))
                    .min(Duration::from_secs(5));
                tracing::warn!(error = %err, ?pause, "LISTEN connection failed; polling meanwhile");
                shared.wake_all();
                drop(shared);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

async fn purge_loop(
    state: Weak<PostgresState>,
    queue: Weak<PostgresQueue>,
    memory: Weak<PostgresMemory>,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let (Some(state), Some(queue), Some(memory)) =
            (state.upgrade(), queue.upgrade(), memory.upgrade())
        else {
            return;
        };
        match purge_all(&state, &queue, &memory).await {
            Ok(0) => {}
            Ok(rows) => tracing::debug!(rows, "purged rows past retention"),
            Err(err) => tracing::warn!(error = %err, "purge failed; will try again"),
        }
    }
}

/// Move the ready ring on every `every` (whichever process of those sharing the schema comes
/// first: the others find it moved).
async fn ring_loop(state: Weak<PostgresState>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(state) = state.upgrade() else {
            return;
        };
        // (A move due by a few milliseconds less than `every` still counts: the processes'
        // timers and the database's clock never agree exactly.)
        let interval = every.saturating_sub(every / 10);
        match state.rotate_ready_after(interval).await {
            Ok(crate::postgres::RingMove::Backlog) => {
                tracing::debug!("the ready ring's next slot still holds a backlog; it stays");
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, "moving the ready ring on failed; will try again")
            }
        }
    }
}

/// Run the migrations in `schema` once, whoever starts first: on a connection of its own
/// (its `search_path` is changed, so it never goes back to the pool), under an advisory lock
/// keyed by the schema.
async fn migrate(pool: &PgPool, schema: &str) -> Result<()> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| db_error("open a connection to run migrations", e))?
        .detach();
    let result = migrate_on(&mut conn, schema).await;
    let _ = conn.close().await;
    result
}

async fn migrate_on(conn: &mut PgConnection, schema: &str) -> Result<()> {
    let quoted = format!("\"{schema}\"");
    let table = format!("{quoted}.{MIGRATIONS_TABLE}");
    if up_to_date(conn, &table).await? {
        return Ok(());
    }
    let key = format!("jobforge-migrations:{schema}");
    sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
        .bind(&key)
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("take the migration lock", e))?;
    let result = async {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(schema)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| db_error("look up the schema", e))?;
        if !exists {
            sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {quoted}")))
                .execute(&mut *conn)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.code().as_deref() == Some("42501") => {
                        Error::new(
                            ErrorKind::Configuration,
                            format!(
                                "cannot create schema `{schema}`: {}; have an administrator create it (CREATE SCHEMA {schema} AUTHORIZATION <role>), grant the role CREATE on the database, or choose an existing schema the role owns (PostgresConfig::with_schema)",
                                db.message()
                            ),
                        )
                        .with_source(e)
                    }
                    _ => db_error(&format!("create schema `{schema}`"), e),
                })?;
        }
        sqlx::query(AssertSqlSafe(format!("SET search_path TO {quoted}")))
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("set the search path for migrations", e))?;
        apply_migrations(conn, &table)
            .await
            .map_err(|e| migrate_error(schema, e))
    }
    .await;
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(&key)
        .execute(&mut *conn)
        .await;
    if result.is_ok() {
        tracing::info!(schema, "jobforge migrations applied");
    }
    result
}

/// What `Migrator::run` does, through the `Migrate` trait so the future stays `Send`: create
/// the migrations table, refuse a dirty or altered history, apply what is missing.
async fn apply_migrations(conn: &mut PgConnection, table: &str) -> Result<(), MigrateError> {
    conn.ensure_migrations_table(table).await?;
    if let Some(version) = conn.dirty_version(table).await? {
        return Err(MigrateError::Dirty(version));
    }
    let applied = conn.list_applied_migrations(table).await?;
    for migration in MIGRATOR.iter() {
        if migration.migration_type.is_down_migration() {
            continue;
        }
        match applied.iter().find(|a| a.version == migration.version) {
            Some(done) if done.checksum != migration.checksum => {
                return Err(MigrateError::VersionMismatch(migration.version));
            }
            Some(_) => {}
            None => {
                conn.apply(table, migration).await?;
            }
        }
    }
    Ok(())
}

/// Whether every embedded migration is already applied (then no lock is needed, and a role
/// without CREATE rights can still connect to a schema an administrator set up).
async fn up_to_date(conn: &mut PgConnection, table: &str) -> Result<bool> {
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(table)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("look for the migrations table", e))?;
    if exists.is_none() {
        return Ok(false);
    }
    let applied: Vec<(i64, Vec<u8>)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT version, checksum FROM {table} WHERE success ORDER BY version"
    )))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("read the migrations table", e))?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .all(|m| {
            applied
                .iter()
                .any(|(v, sum)| *v == m.version && sum.as_slice() == m.checksum.as_ref())
        }))
}

fn migrate_error(schema: &str, err: MigrateError) -> Error {
    match err {
        MigrateError::Execute(e) => db_error(&format!("migrate schema `{schema}`"), e),
        other => Error::new(
            ErrorKind::Configuration,
            format!(
                "jobforge's migrations in schema `{schema}` cannot be applied: {other}; the schema may belong to a different jobforge version"
            ),
        )
        .with_source(other),
    }
}

/// Check at connect that the role may read and write every jobforge table, so a missing
/// grant is a clear error now rather than a failing worker later.
async fn check_privileges(pool: &PgPool, schema: &str) -> Result<()> {
    // (has_table_privilege with a list answers whether *any* is held: ask one by one.)
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname <> '_jobforge_migrations' AND (
             (c.relkind = 'r' AND NOT (has_table_privilege(c.oid, 'SELECT')
                 AND has_table_privilege(c.oid, 'INSERT')
                 AND has_table_privilege(c.oid, 'UPDATE')
                 AND has_table_privilege(c.oid, 'DELETE')))
             OR (c.relkind = 'S' AND NOT has_sequence_privilege(c.oid, 'USAGE')))
         ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error("check privileges", e))?;
    if tables.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Configuration,
        format!(
            "the PostgreSQL role may not use {}; grant SELECT, INSERT, UPDATE, DELETE on the tables and USAGE on the sequences of schema `{schema}`, or choose another schema",
            tables.join(", ")
        ),
    ))
}
