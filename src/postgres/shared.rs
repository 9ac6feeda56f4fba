use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use parking_lot::Mutex;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgPool;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::PostgresConfig;
use crate::{Error, ErrorKind, Result};

/// Future due times heard of through notifications are remembered up to this many.
const UPCOMING_CAP: usize = 256;

/// What the state, queue and memory of one backend share: the pool, the schema, the
/// notification wake-up, and the background tasks (stopped when the last user goes).
pub(crate) struct Shared {
    pub(crate) pool: PgPool,
    pub(crate) config: PostgresConfig,
    /// The schema, quoted for SQL.
    quoted: String,
    /// The `NOTIFY` channel of this schema.
    pub(crate) channel: String,
    notify: Notify,
    /// Future due times (Unix micros) announced by notifications, earliest first.
    upcoming: Mutex<BTreeSet<i64>>,
    statements: AtomicU64,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Shared {
    pub(crate) fn new(pool: PgPool, config: PostgresConfig) -> Self {
        let quoted = format!("\"{}\"", config.schema);
        let channel = format!("{}_jobforge", config.schema);
        Self {
            pool,
            config,
            quoted,
            channel,
            notify: Notify::new(),
            upcoming: Mutex::new(BTreeSet::new()),
            statements: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// A statement template with `{s}` replaced by the quoted schema.
    pub(crate) fn sql(&self, template: &str) -> Arc<str> {
        Arc::from(template.replace("{s}", &self.quoted))
    }

    /// The quoted schema.
    pub(crate) fn quoted_schema(&self) -> &str {
        &self.quoted
    }

    /// Count one statement sent (reported by `PostgresBackend::statements`).
    pub(crate) fn count_statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    pub(crate) fn add_task(&self, task: AbortHandle) {
        self.tasks.lock().push(task);
    }

    /// A notification arrived: `queue` for jobs due now, `queue <micros>` for jobs due later.
    pub(crate) fn on_notification(&self, payload: &str) {
        if let Some(at) = payload
            .rsplit_once(' ')
            .and_then(|(_, micros)| micros.parse::<i64>().ok())
        {
            let mut upcoming = self.upcoming.lock();
            upcoming.insert(at);
            while upcoming.len() > UPCOMING_CAP {
                upcoming.pop_last();
            }
        }
        self.notify.notify_waiters();
    }

    /// Wake every waiter (after a reconnect, notifications may have been missed).
    pub(crate) fn wake_all(&self) {
        self.notify.notify_waiters();
    }

    /// How long until the earliest announced future due time, forgetting those passed.
    fn until_upcoming(&self) -> Option<Duration> {
        let now = Utc::now().timestamp_micros();
        let mut upcoming = self.upcoming.lock();
        let later = upcoming.split_off(&now.saturating_add(1));
        *upcoming = later;
        let first = *upcoming.first()?;
        Some(Duration::from_micros(
            u64::try_from(first - now).unwrap_or(0),
        ))
    }

    /// Run `attempt` until it finds something or `wait` has passed. Between attempts, sleep
    /// until a notification, an announced due time, or the poll interval, whichever is first.
    pub(crate) async fn poll<T, F, Fut>(&self, wait: Duration, mut attempt: F) -> Result<Vec<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Vec<T>>>,
    {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let found = attempt().await?;
            let now = tokio::time::Instant::now();
            if !found.is_empty() || now >= deadline {
                return Ok(found);
            }
            let mut nap = (deadline - now).min(self.config.poll_interval);
            if let Some(until) = self.until_upcoming() {
                nap = nap.min(until.max(Duration::from_millis(1)));
            }
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().drain(..) {
            task.abort();
        }
    }
}

/// A prepared statement's text for sqlx (audited: only the schema name, which
/// `PostgresConfig` restricts to `[a-z0-9_]`, is spliced in).
pub(crate) fn stmt(sql: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(Arc::clone(sql))
}

/// A sqlx error as a jobforge error that says what failed and what to do.
pub(crate) fn db_error(what: &str, err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = db.message().to_owned();
            match code.as_str() {
                "42501" => Error::new(
                    ErrorKind::Configuration,
                    format!(
                        "PostgreSQL refused to {what}: {message}; grant the role USAGE and CREATE on jobforge's schema and SELECT, INSERT, UPDATE, DELETE on its tables, or choose a schema it may use (PostgresConfig::with_schema)"
                    ),
                )
                .with_source(err),
                "42P01" | "3F000" => Error::new(
                    ErrorKind::Configuration,
                    format!(
                        "could not {what}: {message}; jobforge's tables are missing (was the schema dropped?); connect again to re-create them"
                    ),
                )
                .with_source(err),
                _ => Error::backend(format!("PostgreSQL failed to {what}: {message}"), err),
            }
        }
        sqlx::Error::PoolTimedOut => Error::backend(
            format!(
                "could not {what}: no PostgreSQL connection became available in time; the server may be down or the pool too small (PostgresConfig::with_max_connections)"
            ),
            err,
        ),
        sqlx::Error::PoolClosed => Error::new(
            ErrorKind::ShuttingDown,
            format!("could not {what}: the PostgreSQL pool was closed"),
        )
        .with_source(err),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => Error::backend(
            format!(
                "could not {what}: the connection to PostgreSQL failed; the operation can be retried once the server is reachable"
            ),
            err,
        ),
        _ => Error::backend(format!("PostgreSQL failed to {what}"), err),
    }
}
