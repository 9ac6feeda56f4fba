//! The shared backend contract, run on the in-memory queue and state.

mod conformance;

use std::sync::Arc;

use jobforge::queue::{InMemoryQueue, QueueManager};
use jobforge::state::{InMemoryState, StateManager};

#[tokio::test]
async fn in_memory_queue_keeps_the_queue_contract() {
    conformance::run_queue_suite(&|| Arc::new(InMemoryQueue::new()) as Arc<dyn QueueManager>).await;
}

#[tokio::test]
async fn in_memory_state_keeps_the_state_contract() {
    conformance::run_state_suite(&|| Arc::new(InMemoryState::new()) as Arc<dyn StateManager>).await;
}
