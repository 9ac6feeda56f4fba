//! The store contract, one test per clause per deployment, so a failure names both: run
//! `cargo test --all-features --test store_contract postgres::state_cancel` to see one.
//!
//! Every store the engine can hold (in-memory, PostgreSQL, Redis, and Redis Streams beside a
//! PostgreSQL state as a `Split`) keeps the state clauses and the `JobStore` clauses; every
//! delivery queue (in-memory, PostgreSQL, Redis Streams) keeps the queue clauses.

mod conformance;
mod deploy;

/// One `#[tokio::test]` per clause, each on a fresh deployment cleaned up after it.
macro_rules! clauses {
    ($deployment:ident, $handle:ident: $($clause:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $clause() {
                let Some(d) = Deployed::new(Deployment::$deployment, stringify!($clause)).await
                else {
                    return;
                };
                conformance::$clause(d.$handle()).await;
            }
        )*
    };
}

/// The clauses every store keeps.
macro_rules! store_contract {
    ($deployment:ident) => {
        clauses!($deployment, state:
            state_claim_is_exclusive_and_counts_attempts,
            state_finish_is_fenced,
            state_retry_defer_and_not_due,
            state_lease_expiry_with_attempts_spent_is_dead,
            state_idempotency_keys,
            state_an_id_twice_in_one_batch_counts_once,
            state_cancel,
            state_events_record_every_transition,
            state_pagination_and_filters,
            state_lists_filter_by_tag,
            state_counts,
            state_batch_answers_in_order,
            state_fence_is_the_claim_token,
            state_takeover_of_a_cancel_requested_job_cancels_it,
            state_a_submitter_clock_ahead_delays_nothing,
            state_history_of_a_live_job_is_bounded,
            state_every_finish_means_one_thing,
            state_progress_is_fenced_and_read_back,
            state_keeps_the_trace_context,
        );
        clauses!($deployment, store:
            queuing_state_claims_by_priority_and_waits_for_due_jobs,
            queuing_state_claim_due_is_cancel_safe,
            queuing_state_finish_and_claim_settles_then_claims,
            queuing_state_stats_split_the_queue_by_kind,
        );
    };
}

/// The clauses a store that keeps workflows keeps (`JobStore::supports_workflows`), and
/// deletes finished jobs (every store but a `Split`).
macro_rules! workflow_contract {
    ($deployment:ident) => {
        clauses!($deployment, store:
            workflow_a_step_waits_for_every_dependency,
            workflow_failure_policies,
            workflow_cancel_and_takeover_settle_dependents,
            workflow_a_long_chain_is_cancelled_in_one_step,
            store_deletes_finished_jobs,
            store_reports_queue_depths,
        );
    };
}

/// The clauses every delivery queue keeps.
macro_rules! queue_contract {
    ($deployment:ident) => {
        clauses!($deployment, queue:
            queue_orders_by_priority_then_run_at_then_fifo,
            queue_holds_delayed_jobs_until_due,
            queue_redelivers_after_lease_expiry,
            queue_heartbeat_keeps_lease,
            queue_batch_reserve_and_ack,
            queue_requeue_and_dead_letter,
            queue_discard_drops_only_waiting_deliveries,
            queue_serves_only_named_queues,
            queue_wakes_a_waiting_reserve,
        );
    };
}

mod in_memory {
    use super::conformance;
    use super::deploy::{Deployed, Deployment};
    store_contract!(InMemory);
    queue_contract!(InMemory);
    workflow_contract!(InMemory);
}

mod postgres {
    use super::conformance;
    use super::deploy::{Deployed, Deployment};
    store_contract!(Postgres);
    queue_contract!(Postgres);
    workflow_contract!(Postgres);
}

mod redis {
    use super::conformance;
    use super::deploy::{Deployed, Deployment};
    store_contract!(Redis);
    queue_contract!(Redis);
    workflow_contract!(Redis);
}

/// Redis Streams delivery beside a PostgreSQL state: the `Split` store.
mod streams_postgres {
    use super::conformance;
    use super::deploy::{Deployed, Deployment};
    store_contract!(StreamsPostgres);
}
