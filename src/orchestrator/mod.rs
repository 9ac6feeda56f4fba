//! The public face: the [`JobOrchestrator`] trait, the [`Orchestrator`] that implements it over
//! any queue, state and memory, and the worker pool that runs handlers.

mod api;
mod builder;
mod engine;
mod kind;
mod running;
mod schedules;
mod worker;

pub use api::{JobOrchestrator, Stats, Submitted};
pub use builder::OrchestratorBuilder;
pub use engine::Orchestrator;
pub use kind::KindConfig;
pub use schedules::Schedules;
pub use worker::{ShutdownReport, WorkerConfig, WorkerPool};
