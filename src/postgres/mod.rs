//! PostgreSQL: one server as durable state, queue and memory, on [sqlx] with runtime queries
//! (building needs no database).
//!
//! [`PostgresBackend::connect`] opens a pool, runs the crate's embedded migrations in its own
//! schema (default `jobforge`) under an advisory lock, and starts a `LISTEN` connection that
//! wakes idle workers when jobs arrive. From it come [`PostgresState`], [`PostgresQueue`] and
//! [`PostgresMemory`].
//!
//! With one Postgres as both queue and state, hand the state to
//! [`OrchestratorBuilder::store`](crate::OrchestratorBuilder::store): the
//! job rows are then the queue, a worker claims a batch of due jobs in one statement and
//! finishes a batch in one statement.
//!
//! ```no_run
//! use jobforge::postgres::PostgresBackend;
//! use jobforge::prelude::*;
//!
//! # async fn run() -> jobforge::Result<()> {
//! let pg = PostgresBackend::connect("postgres://postgres@127.0.0.1:5432/app").await?;
//! let orchestrator = Orchestrator::builder()
//!     .store(pg.store())
//!     .memory(pg.memory())
//!     .handler("noop", |_ctx: JobContext| async { Ok(serde_json::Value::Null) })
//!     .build()?;
//! let workers = orchestrator.start_workers(WorkerConfig::default())?;
//! orchestrator.submit(NewJob::new("noop")).await?;
//! # workers.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```
//!

mod backend;
mod config;
mod memory;
mod queue;
mod schedules;
mod shared;
mod state;

pub use backend::PostgresBackend;
pub use config::PostgresConfig;
pub use memory::PostgresMemory;
pub use queue::PostgresQueue;
pub use schedules::PostgresSchedules;
pub(crate) use shared::{Shared, db_error, stmt};
pub use state::{PostgresState, RingMove};
