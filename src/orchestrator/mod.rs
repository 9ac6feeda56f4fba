//! The public face: the [`JobOrchestrator`] trait, the [`Orchestrator`] that implements it over
//! any queue, state and memory, and the worker pool that runs handlers.

mod api;
mod builder;
mod direct;
mod engine;
mod reconciler;
mod worker;

pub use api::{JobOrchestrator, Stats, Submitted};
pub use builder::{KindConfig, OrchestratorBuilder};
pub use engine::Orchestrator;
pub use reconciler::{ReconcileReport, Reconciler, ReconcilerConfig};
pub use worker::{ShutdownReport, WorkerConfig, WorkerPool};
