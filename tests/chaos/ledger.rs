//! The ledger: one row per successful execution, written by the handler before it returns
//! `Ok`, in the shared PostgreSQL (`DATABASE_URL`), a schema per scenario. It is the
//! outside witness of how often a job's work was done: the store's own records cannot tell
//! a job that ran twice from one that ran once.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use jobforge::JobId;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// A pool on the ledger's server. With `schema`, statements find the `ledger` table
/// unqualified. Commits are asynchronous (`synchronous_commit=off`): a row is visible at
/// once, and only a crash of the shared server, which the suite never causes, could lose it.
pub(crate) async fn pool(
    url: &str,
    schema: Option<&str>,
    max: u32,
    app: &str,
) -> Result<PgPool, String> {
    let mut options = PgConnectOptions::from_str(url)
        .map_err(|e| format!("DATABASE_URL is not a PostgreSQL URL: {e}"))?
        .application_name(app);
    options = match schema {
        Some(schema) => options.options([("synchronous_commit", "off"), ("search_path", schema)]),
        None => options.options([("synchronous_commit", "off")]),
    };
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .map_err(|e| format!("cannot connect to the ledger's PostgreSQL: {e}"))
}

/// Write one execution (the handler's success path).
pub(crate) async fn record(
    pool: &PgPool,
    id: JobId,
    attempt: u32,
    worker: &str,
    pid: u32,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO ledger (job_id, attempt, worker, pid) VALUES ($1, $2, $3, $4)")
        .bind(*id.as_uuid())
        .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
        .bind(worker)
        .bind(i32::try_from(pid).unwrap_or(i32::MAX))
        .execute(pool)
        .await
        .map(|_| ())
}

/// A scenario's ledger schema, dropped when the value goes (also on panic).
pub(crate) struct LedgerSchema {
    url: String,
    pub(crate) name: String,
}

impl LedgerSchema {
    pub(crate) async fn create(pool: &PgPool, url: &str, name: &str) -> Result<Self, String> {
        let schema = Self {
            url: url.to_owned(),
            name: name.to_owned(),
        };
        for sql in [
            format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"),
            format!("CREATE SCHEMA \"{name}\""),
            format!(
                "CREATE TABLE \"{name}\".ledger (
                    job_id uuid NOT NULL,
                    attempt int NOT NULL,
                    worker text NOT NULL,
                    pid int NOT NULL,
                    at timestamptz NOT NULL DEFAULT clock_timestamp()
                )"
            ),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(pool)
                .await
                .map_err(|e| format!("create the ledger schema {name}: {e}"))?;
        }
        Ok(schema)
    }

    /// Ledger rows per job.
    pub(crate) async fn counts(&self, pool: &PgPool) -> Result<HashMap<JobId, u32>, String> {
        let rows: Vec<(uuid::Uuid, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT job_id, count(*) FROM \"{}\".ledger GROUP BY job_id",
            self.name
        )))
        .fetch_all(pool)
        .await
        .map_err(|e| format!("read the ledger: {e}"))?;
        Ok(rows
            .into_iter()
            .map(|(id, n)| (JobId::from_uuid(id), u32::try_from(n).unwrap_or(u32::MAX)))
            .collect())
    }
}

impl Drop for LedgerSchema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        // A runtime of its own on a thread of its own: this runs inside the suite's runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
