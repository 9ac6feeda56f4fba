//! The heartbeat: extends the leases of the claims a pool holds, and fires the tokens of
//! jobs cancelled or lost meanwhile.

use std::sync::Arc;

use super::fetch::backend_backoff;
use super::{PoolShared, stop};
use crate::state::{Heartbeat, Held};

/// Extend the leases of every claim held, every third of a lease; a heartbeat that fails is
/// tried again soon, not a third of a lease later. Each answer is applied to the claim it is
/// about, so an answer about an earlier attempt never reaches a later one.
pub(super) async fn heartbeat_loop(shared: Arc<PoolShared>) {
    let every = shared.config.lease / 3;
    let engine = Arc::clone(&shared.engine);
    let mut failures = 0u32;
    loop {
        let pause = if failures == 0 {
            every
        } else {
            backend_backoff(failures).min(every / 2)
        };
        tokio::time::sleep(pause).await;
        let held: Vec<Held> = shared
            .running
            .lock()
            .keys()
            .map(|&(id, token)| Held { id, token })
            .collect();
        if held.is_empty() {
            failures = 0;
            continue;
        }
        let state = match engine.store.heartbeat(&held, shared.config.lease).await {
            Ok(state) if state.len() == held.len() => state,
            Ok(_) => {
                tracing::error!(
                    "the store answered a heartbeat with the wrong count; trying again"
                );
                failures += 1;
                continue;
            }
            Err(err) => {
                failures += 1;
                tracing::warn!(error = %err, jobs = held.len(), "heartbeat failed; trying again soon");
                continue;
            }
        };
        failures = 0;
        let running = shared.running.lock();
        for (h, beat) in held.iter().zip(state) {
            let Some(job) = running.get(&(h.id, h.token)) else {
                continue;
            };
            match beat {
                Heartbeat::Held {
                    cancel_requested: true,
                } => {
                    if !job.stop.token.is_cancelled() {
                        tracing::info!(job_id = %h.id, "cancel requested; signalling the handler");
                    }
                    job.stop.fire(stop::CANCEL_REQUESTED);
                }
                Heartbeat::Held { .. } => {}
                Heartbeat::Lost => {
                    if !job.stop.token.is_cancelled() {
                        tracing::warn!(job_id = %h.id, attempt = job.attempt, "lease lost; abandoning the attempt");
                    }
                    job.stop.fire(stop::LEASE_LOST);
                }
            }
        }
    }
}
