//! The recorder: writes execution records to the memory, holding them while it refuses.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::PoolShared;
use super::fetch::backend_backoff;
use crate::memory::ExecutionRecord;

/// Most execution records held while the memory's store refuses them; past it the oldest
/// go, counted in [`ShutdownReport::records_dropped`](super::ShutdownReport::records_dropped).
const MAX_HELD_RECORDS: usize = 100_000;

/// How long a stopping pool keeps trying to write the execution records it holds.
const RECORD_GRACE: Duration = Duration::from_secs(3);

/// Write execution records to the memory in batches. A batch the store refuses is kept and
/// tried again with backoff (later records join it, up to [`MAX_HELD_RECORDS`]); what has to
/// go is counted, never dropped quietly. Once the pool stops sending, what is held is tried
/// for [`RECORD_GRACE`] more.
pub(super) async fn record_loop(
    shared: Arc<PoolShared>,
    mut rx: mpsc::Receiver<Vec<ExecutionRecord>>,
) {
    let memory = Arc::clone(&shared.engine.memory);
    let mut held: Vec<ExecutionRecord> = Vec::new();
    let mut failures = 0u32;
    let mut closed_at: Option<Instant> = None;
    let mut open = true;
    loop {
        if held.is_empty() {
            match rx.recv().await {
                Some(batch) => held = batch,
                None => return,
            }
        }
        while open && held.len() < 4096 {
            match rx.try_recv() {
                Ok(more) => held.extend(more),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let err = match memory.record(&held).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(records = held.len(), "execution records written again");
                }
                failures = 0;
                held.clear();
                continue;
            }
            Err(err) => err,
        };
        failures += 1;
        if held.len() > MAX_HELD_RECORDS {
            let excess = held.len() - MAX_HELD_RECORDS;
            held.drain(..excess);
            shared
                .records_dropped
                .fetch_add(excess as u64, Ordering::Relaxed);
        }
        if !open {
            if closed_at.get_or_insert_with(Instant::now).elapsed() >= RECORD_GRACE {
                tracing::error!(error = %err, records = held.len(), "could not record executions before the pool stopped; they are lost");
                shared
                    .records_dropped
                    .fetch_add(held.len() as u64, Ordering::Relaxed);
                return;
            }
            tokio::time::sleep(backend_backoff(failures).min(Duration::from_millis(500))).await;
            continue;
        }
        let pause = backend_backoff(failures);
        tracing::warn!(error = %err, records = held.len(), ?pause, "could not record executions; keeping them and trying again");
        // Wait out the pause, still taking what comes (and noticing the pool stop).
        let wake = tokio::time::sleep(pause);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                () = &mut wake => break,
                more = rx.recv() => match more {
                    Some(more) => held.extend(more),
                    None => {
                        open = false;
                        break;
                    }
                },
            }
        }
    }
}
