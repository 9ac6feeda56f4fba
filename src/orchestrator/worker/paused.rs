//! Paused queues: the pool reads which of its queues are paused about once a second (at
//! once when this process paused or resumed one), and its claims (the fetcher's and the
//! finisher's) leave those out.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::PoolShared;

/// How often a pool reads the paused queues.
pub(super) const PAUSED_EVERY: Duration = Duration::from_secs(1);

/// Read the paused queues every [`PAUSED_EVERY`] until the pool stops. The first read
/// comes before the fetcher's first claim (it waits for `queues_known`).
pub(super) async fn paused_loop(shared: Arc<PoolShared>) {
    // A pause or resume in this process is read at once.
    let mut changed = shared.engine.queues_changed.subscribe();
    loop {
        match shared.engine.store.paused_queues().await {
            Ok(paused) => shared.set_paused(&paused),
            Err(err) => {
                tracing::debug!(worker = %shared.worker, error = %err, "could not read the paused queues; keeping the last known");
            }
        }
        if !shared
            .queues_known
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            shared.kick.notify_one();
        }
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            r = changed.changed() => {
                if r.is_err() {
                    // (The engine outlives its pools; never, in practice.)
                    tokio::time::sleep(PAUSED_EVERY).await;
                }
            }
            () = tokio::time::sleep(PAUSED_EVERY) => {}
        }
    }
}

impl PoolShared {
    /// The queues this pool claims from now: its own, less the paused ones.
    pub(super) fn active_queues(&self) -> Arc<[String]> {
        Arc::clone(&self.active_queues.read())
    }

    /// Take a new set of paused queues; log what changed for this pool, and wake the fetcher
    /// when a queue came back.
    pub(super) fn set_paused(&self, paused: &BTreeSet<String>) {
        let active: Vec<String> = self
            .config
            .queues
            .iter()
            .filter(|q| !paused.contains(*q))
            .cloned()
            .collect();
        let before = self.active_queues();
        if *before == *active {
            return;
        }
        for q in &self.config.queues {
            match (before.contains(q), active.contains(q)) {
                (true, false) => {
                    tracing::info!(worker = %self.worker, queue = %q, "queue paused: not claiming from it");
                }
                (false, true) => {
                    tracing::info!(worker = %self.worker, queue = %q, "queue resumed");
                }
                _ => {}
            }
        }
        let resumed = active.len() > before.len();
        *self.active_queues.write() = active.into();
        self.queues_epoch.send_modify(|e| *e = e.wrapping_add(1));
        if resumed {
            self.kick.notify_one();
        }
    }
}
