mod config;
mod inspect;
mod manager;
mod reserve;

use std::collections::HashSet;
use std::sync::LazyLock;
use std::sync::atomic::AtomicUsize;

use ::redis::aio::MultiplexedConnection;
use deadpool_redis::Pool;

use super::client::{Link, Lua, arg};
use crate::Result;
use crate::queue::Lease;

pub use config::RedisQueueConfig;

macro_rules! queue_script {
    ($name:literal) => {
        Lua::new(
            $name,
            concat!(
                include_str!("../lua/batch.lua"),
                "\n",
                include_str!("../lua/queue/common.lua"),
                "\n",
                include_str!(concat!("../lua/queue/", $name, ".lua"))
            ),
        )
    };
}

struct Scripts {
    enqueue: Lua,
    reserve: Lua,
    adopt: Lua,
    extend: Lua,
    ack: Lua,
    requeue: Lua,
    discard: Lua,
    dead: Lua,
    stats: Lua,
    contains: Lua,
    ensure: Lua,
    lock: Lua,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: queue_script!("enqueue"),
    reserve: queue_script!("reserve"),
    adopt: queue_script!("adopt"),
    extend: queue_script!("extend"),
    ack: queue_script!("ack"),
    requeue: queue_script!("requeue"),
    discard: queue_script!("discard"),
    dead: queue_script!("dead"),
    stats: queue_script!("stats"),
    contains: queue_script!("contains"),
    ensure: queue_script!("ensure"),
    lock: Lua::new("lock", include_str!("../lua/queue/lock.lua")),
});

/// The distributed queue: Redis Streams with a consumer group, so many worker processes on
/// many hosts share one queue.
///
/// One stream per queue and priority lane, delayed jobs in a sorted set moved into their
/// lane by a Lua script, leases as pending entries (reclaimed with `XAUTOCLAIM` when idle
/// longer than the lease, extended with `XCLAIM ... JUSTID`), acknowledgements that delete
/// the entry, and a dead-letter stream. Every key of a queue shares the hash tag
/// `{<namespace>:<queue>}`. See `docs/backends.md` for the layout and guarantees.
///
/// The server must run with `maxmemory-policy noeviction`: an evicted key is a lost job.
///
/// ```no_run
/// use std::sync::Arc;
/// use jobforge::prelude::*;
/// use jobforge::redis::{RedisQueueConfig, RedisStreamsQueue};
///
/// # async fn run() -> jobforge::Result<()> {
/// let queue = RedisStreamsQueue::connect(RedisQueueConfig::new("redis://127.0.0.1:6379")).await?;
/// let orchestrator = Orchestrator::builder()
///     .queue(Arc::new(queue))
///     .handler("noop", |_ctx: JobContext| async { Ok(serde_json::Value::Null) })
///     .build()?;
/// # drop(orchestrator);
/// # Ok(())
/// # }
/// ```
pub struct RedisStreamsQueue {
    link: Link,
    config: RedisQueueConfig,
    blockers: parking_lot::Mutex<Vec<MultiplexedConnection>>,
    seen_queues: parking_lot::Mutex<HashSet<String>>,
    rotate: AtomicUsize,
}

impl std::fmt::Debug for RedisStreamsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamsQueue")
            .field("config", &self.config)
            .field("round_trips", &self.link.round_trips())
            .finish_non_exhaustive()
    }
}

/// A lease's handle on its stream entry: `<priority>:<entry id>`.
fn receipt(lease: &Lease) -> Option<(&str, &str)> {
    lease.receipt.as_deref()?.split_once(':')
}

impl RedisStreamsQueue {
    /// Connect with a pool of its own. Fails at once, saying what to check, when the URL is
    /// malformed or the server does not answer.
    pub async fn connect(config: RedisQueueConfig) -> Result<Self> {
        config.validate()?;
        let link = Link::connect(&config.link, "queue").await?;
        Ok(Self::from_link(link, config))
    }

    /// Use a pool the host built (shared with [`RedisState`](crate::redis::RedisState), say).
    /// The config's URL is still used for the connections dedicated to blocking reads.
    pub fn with_pool(pool: Pool, config: RedisQueueConfig) -> Result<Self> {
        config.validate()?;
        let link = Link::with_pool(pool, &config.link.url, "queue")?;
        Ok(Self::from_link(link, config))
    }

    /// On `link` (shared with the other parts of a [`RedisBackend`](super::RedisBackend), say);
    /// `config` is already validated.
    pub(in crate::redis) fn from_link(link: Link, config: RedisQueueConfig) -> Self {
        Self {
            link,
            config,
            blockers: parking_lot::Mutex::new(Vec::new()),
            seen_queues: parking_lot::Mutex::new(HashSet::new()),
            rotate: AtomicUsize::new(0),
        }
    }

    #[cfg(test)]
    pub(in crate::redis) fn link(&self) -> &Link {
        &self.link
    }

    /// The connection pool (to share it with other backends).
    #[must_use]
    pub fn pool(&self) -> &Pool {
        self.link.pool()
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &RedisQueueConfig {
        &self.config
    }

    /// Requests sent to Redis so far (a pipelined batch or a script call counts once).
    #[must_use]
    pub fn round_trips(&self) -> u64 {
        self.link.round_trips()
    }

    /// The key prefix (and hash tag) of `queue`: `{<namespace>:<queue>}`.
    #[must_use]
    pub fn key_prefix(&self, queue: &str) -> String {
        format!("{{{}:{}}}", self.config.namespace, queue)
    }

    fn registry(&self) -> String {
        format!("{{{}}}:streams", self.config.namespace)
    }

    /// Remember `queue` in the namespace's registry (for stats), once per process.
    async fn register(&self, queue: &str) -> Result<()> {
        if self.seen_queues.lock().contains(queue) {
            return Ok(());
        }
        let mut cmd = ::redis::cmd("SADD");
        cmd.arg(self.registry()).arg(queue);
        self.link.query("register queue", &cmd).await?;
        self.seen_queues.lock().insert(queue.to_owned());
        Ok(())
    }
}
