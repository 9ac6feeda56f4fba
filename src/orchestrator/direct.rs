//! The queue face of a store that is its own queue ([`QueuingState`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::queue::{DeadLetter, Envelope, Lease, QueueManager, QueueStats, Release, Reserve};
use crate::state::QueuingState;
use crate::{Error, ErrorKind, Result};

/// What the engine holds as its queue when one store is both queue and state. The records
/// are the deliveries: a submitted record is already queued, `finish` already moved it, and
/// the state's heartbeat is the lease; so everything but the counts is a no-op here. Workers
/// claim through [`QueuingState::claim_due`], never through `reserve`.
pub(crate) struct RecordQueue {
    store: Arc<dyn QueuingState>,
}

impl RecordQueue {
    pub(crate) fn new(store: Arc<dyn QueuingState>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl QueueManager for RecordQueue {
    async fn enqueue(&self, _jobs: &[Envelope]) -> Result<()> {
        Ok(())
    }

    async fn reserve(&self, _req: &Reserve<'_>) -> Result<Vec<Lease>> {
        Err(Error::new(
            ErrorKind::Configuration,
            "this store is its own queue: claim jobs with QueuingState::claim_due, not QueueManager::reserve",
        ))
    }

    async fn extend(&self, leases: &[Lease], _lease: Duration) -> Result<Vec<bool>> {
        Ok(vec![true; leases.len()])
    }

    async fn ack(&self, _leases: &[Lease]) -> Result<()> {
        Ok(())
    }

    async fn release(&self, _items: &[Release]) -> Result<()> {
        Ok(())
    }

    async fn dead_letter(&self, _items: &[DeadLetter]) -> Result<()> {
        Ok(())
    }

    async fn stats(&self) -> Result<QueueStats> {
        self.store.queue_stats().await
    }

    async fn ping(&self) -> Result<()> {
        self.store.ping().await
    }
}
