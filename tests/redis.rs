#![cfg(feature = "redis")]
//! The Redis backends against a real server (`REDIS_URL`, e.g. `redis://127.0.0.1:6379`).
//! Without `REDIS_URL` every test says it skipped and why; with it set and the server
//! unreachable, they fail. Each test works under its own namespace and deletes its keys.

mod conformance;

use std::sync::Arc;
use std::time::Duration;

use jobforge::queue::{QueueManager, RedisQueueConfig, RedisStreamsQueue};
use jobforge::state::{RedisState, RedisStateConfig, StateManager};

/// The server to test against, or `None` (with a note) when `REDIS_URL` is unset.
fn redis_url(test: &str) -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "{test}: skipped: REDIS_URL is not set (run e.g. `REDIS_URL=redis://127.0.0.1:6379 cargo test --features redis`)"
            );
            None
        }
    }
}

/// A namespace of its own for one test; `cleanup` deletes every key under it.
struct Namespaces {
    url: String,
    names: parking_lot::Mutex<Vec<String>>,
}

impl Namespaces {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            names: parking_lot::Mutex::new(Vec::new()),
        }
    }

    fn fresh(&self, test: &str) -> String {
        let name = format!("jft-{test}-{}", uuid::Uuid::now_v7().simple());
        self.names.lock().push(name.clone());
        name
    }

    fn pool(&self) -> deadpool_redis::Pool {
        deadpool_redis::Config::from_url(self.url.clone())
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .expect("pool")
    }

    async fn cleanup(&self) -> usize {
        let client = redis::Client::open(self.url.as_str()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect for cleanup");
        let mut deleted = 0;
        let names = self.names.lock().clone();
        for name in names {
            let keys = keys_of(&mut conn, &name).await;
            for chunk in keys.chunks(500) {
                let n: usize = redis::cmd("DEL")
                    .arg(chunk)
                    .query_async(&mut conn)
                    .await
                    .expect("DEL");
                deleted += n;
            }
        }
        deleted
    }
}

/// Every key of a namespace (`{<ns>` starts them all).
async fn keys_of(conn: &mut redis::aio::MultiplexedConnection, ns: &str) -> Vec<String> {
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{ns}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

async fn check_reachable(url: &str) {
    // Fails (does not skip) when REDIS_URL is set but the server does not answer.
    RedisStreamsQueue::connect(RedisQueueConfig::new(url))
        .await
        .unwrap_or_else(|e| panic!("REDIS_URL is set but Redis is not usable: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_queue_keeps_the_queue_contract() {
    let Some(url) = redis_url("redis_queue_keeps_the_queue_contract") else {
        return;
    };
    check_reachable(&url).await;
    let ns = Namespaces::new(&url);
    let pool = ns.pool();
    conformance::run_queue_suite(&|| {
        let config = RedisQueueConfig::new(url.clone()).with_namespace(ns.fresh("queue"));
        Arc::new(RedisStreamsQueue::with_pool(pool.clone(), config).expect("queue"))
            as Arc<dyn QueueManager>
    })
    .await;
    assert!(ns.cleanup().await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_state_keeps_the_state_contract() {
    let Some(url) = redis_url("redis_state_keeps_the_state_contract") else {
        return;
    };
    check_reachable(&url).await;
    let ns = Namespaces::new(&url);
    let pool = ns.pool();
    conformance::run_state_suite(&|| {
        let config = RedisStateConfig::new(url.clone()).with_namespace(ns.fresh("state"));
        Arc::new(RedisState::with_pool(pool.clone(), config).expect("state"))
            as Arc<dyn StateManager>
    })
    .await;
    assert!(ns.cleanup().await > 0);
}

#[tokio::test]
async fn bad_url_and_unreachable_server_fail_at_connect_with_clear_errors() {
    let err = RedisStreamsQueue::connect(RedisQueueConfig::new("http://nope"))
        .await
        .expect_err("bad scheme");
    assert_eq!(err.kind(), jobforge::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("url"), "{err}");
    // Nothing listens on port 1.
    let err = RedisState::connect(
        RedisStateConfig::new("redis://:hunter2@127.0.0.1:1")
            .with_connect_timeout(Duration::from_millis(500)),
    )
    .await
    .expect_err("unreachable");
    assert_eq!(err.kind(), jobforge::ErrorKind::Backend);
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(
        !text.contains("hunter2"),
        "the password is never shown: {text}"
    );
}
