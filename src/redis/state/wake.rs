use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::RedisState;

impl RedisState {
    /// Listen for the wake-ups the scripts publish when they file due work, so a claim
    /// waiting in another process starts at once. Started by the first waiting claim; it
    /// reconnects by itself and ends with the store.
    pub(super) fn ensure_listener(&self) {
        let mut slot = self.listener.lock();
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let client = self.core.link.client().clone();
        let channel = format!("{}:wake", self.core.prefix);
        let wake = Arc::downgrade(&self.wake);
        let task = tokio::spawn(async move {
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(&channel).await.is_ok() {
                            let mut messages = pubsub.on_message();
                            while messages.next().await.is_some() {
                                let Some(wake) = wake.upgrade() else { return };
                                wake.notify_waiters();
                            }
                        }
                    }
                    Err(err) => {
                        tracing::debug!(%err, "Redis wake-up channel unavailable; retrying");
                    }
                }
                let Some(wake) = wake.upgrade() else { return };
                // Lost the connection: whatever was published meanwhile, look again.
                wake.notify_waiters();
                drop(wake);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        *slot = Some(task);
    }
}
