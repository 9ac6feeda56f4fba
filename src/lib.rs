//! # jobforge
//!
//! Background jobs inside your application, and across many machines when it outgrows one:
//! leases and at-least-once delivery, exactly-once state transitions, retries with backoff,
//! dead letters, cancellation, safety layers, and an execution strategy that learns from
//! history.
//!
//! The embedded in-memory engine needs no server. Register a handler per job *kind*,
//! start workers, submit jobs:
//!
//! ```
//! use jobforge::prelude::*;
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> jobforge::Result<()> {
//! let orchestrator = Orchestrator::builder()
//!     .handler("greet", |ctx: JobContext| async move {
//!         let name: String = ctx.decode()?;
//!         Ok(json!(format!("hello, {name}")))
//!     })
//!     .build()?;
//! let workers = orchestrator.start_workers(WorkerConfig::default())?;
//!
//! let job = orchestrator.submit(NewJob::new("greet").payload("Ada")).await?;
//! let done = orchestrator.wait_for(job.id, std::time::Duration::from_secs(5)).await?;
//! assert_eq!(done.state, JobState::Succeeded);
//! assert_eq!(done.result.map(|r| r.as_str().to_owned()), Some("\"hello, Ada\"".into()));
//!
//! workers.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```
//!
//! ## The pieces
//!
//! | concern | trait | embedded default |
//! |---|---|---|
//! | the public face | [`JobOrchestrator`] | [`Orchestrator`] |
//! | storage: records, state machine, history and delivery | [`JobStore`] | [`state::InMemoryState`] |
//! | delivery apart from the records (paired with a state by [`store::Split`]) | [`QueueManager`] | [`queue::InMemoryQueue`] |
//! | how one delivery runs | [`Strategy`] | [`strategy::Direct`]; also [`InlineRetry`](strategy::InlineRetry), [`Fallback`](strategy::Fallback), [`Hedged`](strategy::Hedged), [`Adaptive`](strategy::Adaptive) |
//! | entries, executions, reflection | [`Memory`] | [`memory::InMemoryMemory`] |
//! | safety: timeouts, breakers, rate limits, bulkheads | [`safety::Layer`] | [`safety::Timeout`], [`safety::CircuitBreaker`], [`safety::RateLimit`], [`safety::Bulkhead`] |
//!
//! ## Cargo features
//!
//! | feature | what it adds |
//! |---|---|
//! | *(none)* | the in-memory engine: everything above |
//! | `postgres` | `postgres::PostgresBackend`: `postgres::PostgresState` (also the queue, with [`OrchestratorBuilder::store`]), `postgres::PostgresQueue` and `postgres::PostgresMemory`, on sqlx |
//! | `redis` | `redis::RedisBackend`: `redis::RedisState` (its own queue: the Redis-only deployment), `redis::RedisStreamsQueue` (Redis delivery beside another state, in a [`store::Split`] with its reconciler), `redis::RedisRateLimit`, on one connection: many workers on many hosts share one Redis (7.0 or later, with `maxmemory-policy noeviction`) |
//! | `otel` | `otel`: a span per job attempt in the trace that submitted the job (W3C `traceparent` kept with it), the OTLP exporter from the `OTEL_*` variables, job counts as OpenTelemetry metrics |
//! | `full` | every optional backend |
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod clock;
mod error;
pub mod handler;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
pub mod job;
pub mod memory;
pub mod orchestrator;
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod otel;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
pub mod queue;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod safety;
pub mod schedule;
pub mod state;
pub mod store;
pub mod strategy;
mod util;
pub mod workflow;

/// The Redis connection pool crate the Redis backends use (and, through it, the `redis`
/// crate), to build a pool to share between them.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use deadpool_redis;

pub use error::{Error, ErrorKind, Result};
pub use handler::{Handler, JobContext, JobError, JobErrorKind, handler_fn};
pub use job::{JobEvent, JobId, JobRecord, JobState, Limits, NewJob, Payload, WorkerId};
pub use memory::Memory;
pub use orchestrator::{
    JobOrchestrator, KindConfig, Orchestrator, OrchestratorBuilder, Stats, Submitted, WorkerConfig,
    WorkerPool,
};
pub use queue::QueueManager;
pub use state::StateManager;
pub use store::JobStore;
pub use strategy::{RetryPolicy, Strategy};

/// `docs/strategies.md`, compiled as doctests so its examples stay true.
#[cfg(doctest)]
#[doc = include_str!("../docs/strategies.md")]
pub struct StrategiesGuide;

/// `docs/schedules.md`, compiled as doctests so its examples stay true.
#[cfg(doctest)]
#[doc = include_str!("../docs/schedules.md")]
pub struct SchedulesGuide;

/// `docs/workflows.md`, compiled as doctests so its examples stay true.
#[cfg(doctest)]
#[doc = include_str!("../docs/workflows.md")]
pub struct WorkflowsGuide;

/// The names most programs need: `use jobforge::prelude::*;`.
pub mod prelude {
    pub use crate::handler::{Handler, JobContext, JobError, handler_fn};
    pub use crate::job::{JobId, JobRecord, JobState, NewJob};
    pub use crate::orchestrator::{JobOrchestrator, KindConfig, Orchestrator, WorkerConfig};
    pub use crate::safety::HandlerExt;
    pub use crate::strategy::RetryPolicy;
}

/// README.md, compiled as doctests so its examples stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
