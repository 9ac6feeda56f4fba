use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ::redis::Value;
use ::redis::aio::MultiplexedConnection;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_redis::Pool;

use super::client::{Link, LinkConfig, Lua, connection_settings, validate_namespace};
use super::reply::{array, int, need_int, need_text, owned, text, unexpected};
use crate::job::{JobId, WorkerId};
use crate::queue::{
    DeadLetter, Envelope, KindQueueStats, Lease, QueueInspect, QueueManager, QueueStats, Release,
    Reserve,
};
use crate::{Error, ErrorKind, Result};

macro_rules! queue_script {
    ($name:literal) => {
        Lua::new(
            $name,
            concat!(
                include_str!("lua/batch.lua"),
                "\n",
                include_str!("lua/queue/common.lua"),
                "\n",
                include_str!(concat!("lua/queue/", $name, ".lua"))
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
    release: Lua,
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
    release: queue_script!("release"),
    dead: queue_script!("dead"),
    stats: queue_script!("stats"),
    contains: queue_script!("contains"),
    ensure: queue_script!("ensure"),
    lock: Lua::new("lock", include_str!("lua/queue/lock.lua")),
});

/// Settings of a [`RedisStreamsQueue`].
///
/// ```
/// use std::time::Duration;
/// use jobforge::redis::RedisQueueConfig;
///
/// let config = RedisQueueConfig::new("redis://:secret@127.0.0.1:6379")
///     .with_namespace("billing")
///     .with_pool_size(8)
///     .with_max_lane_wait(Duration::from_secs(30));
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
// `Debug` is derived: the URL sits in `LinkConfig`, whose `Debug` hides the password.
#[derive(Clone, Debug)]
pub struct RedisQueueConfig {
    link: LinkConfig,
    namespace: String,
    dead_letter_capacity: usize,
    max_lane_wait: Duration,
    promote_batch: usize,
    chunk_size: usize,
}

impl Default for RedisQueueConfig {
    /// `redis://127.0.0.1:6379`, namespace `jobforge`.
    fn default() -> Self {
        Self::new("redis://127.0.0.1:6379")
    }
}

connection_settings!(RedisQueueConfig);

impl RedisQueueConfig {
    /// Settings for the server at `url` (`redis://[user:password@]host[:port][/db]`), with
    /// namespace `jobforge`, a pool of 8 connections, 5 s connect and 10 s response
    /// timeouts, 10,000 dead letters kept per queue, lanes served out of priority order once
    /// their oldest job waited 60 s, and 1,000 items per script call.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            link: LinkConfig::new(url.into(), 8, Duration::from_secs(10)),
            namespace: "jobforge".to_owned(),
            dead_letter_capacity: 10_000,
            max_lane_wait: Duration::from_secs(60),
            promote_batch: 1_000,
            chunk_size: 1_000,
        }
    }

    /// Dead letters kept per queue; the oldest are dropped past this (default 10,000).
    #[must_use]
    pub fn with_dead_letter_capacity(mut self, capacity: usize) -> Self {
        self.dead_letter_capacity = capacity;
        self
    }

    /// Anti-starvation: a lower-priority lane whose oldest ready job has waited longer than
    /// this is served (a quarter of a batch) ahead of strict priority. Zero turns it off, for
    /// strict priority always. Default 60 s.
    #[must_use]
    pub fn with_max_lane_wait(mut self, wait: Duration) -> Self {
        self.max_lane_wait = wait;
        self
    }

    /// Most delayed jobs moved to their lane per reserve call (default 1,000; at least the
    /// reserve's batch is always moved).
    #[must_use]
    pub fn with_promote_batch(mut self, n: usize) -> Self {
        self.promote_batch = n;
        self
    }

    /// Most jobs handled by one script call (default 1,000): larger batches are split, so no
    /// call handles an unbounded number of items.
    #[must_use]
    pub fn with_chunk_size(mut self, n: usize) -> Self {
        self.chunk_size = n;
        self
    }

    fn validate(&self) -> Result<()> {
        validate_namespace(&self.namespace)?;
        if self.chunk_size == 0 || self.chunk_size > 5_000 {
            return Err(Error::invalid_input(
                "chunk_size",
                format!("{} is out of range; use 1 to 5,000", self.chunk_size),
            ));
        }
        Ok(())
    }
}

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

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn arg(s: impl ToString) -> Vec<u8> {
    s.to_string().into_bytes()
}

const BLOCKERS_KEPT: usize = 16;

struct Attempt {
    leases: Vec<Lease>,
    next_due_ms: Option<u64>,
    lanes: Vec<String>,
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

    fn from_link(link: Link, config: RedisQueueConfig) -> Self {
        Self {
            link,
            config,
            blockers: parking_lot::Mutex::new(Vec::new()),
            seen_queues: parking_lot::Mutex::new(HashSet::new()),
            rotate: AtomicUsize::new(0),
        }
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
        format!("{{{}}}:queues", self.config.namespace)
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

    /// Every queue of the namespace that has been used.
    pub async fn queues(&self) -> Result<Vec<String>> {
        let mut cmd = ::redis::cmd("SMEMBERS");
        cmd.arg(self.registry());
        let reply = self.link.query("list queues", &cmd).await?;
        let mut names: Vec<String> = array("SMEMBERS", reply)?.iter().filter_map(owned).collect();
        names.extend(self.seen_queues.lock().iter().cloned());
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The dead letters of `queue`, oldest first (at most `limit`): the envelope's id, kind
    /// and attempt, and the reason.
    pub async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<(JobId, String, u32, String)>> {
        let mut cmd = ::redis::cmd("XRANGE");
        cmd.arg(format!("{}:dead", self.key_prefix(queue)))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1));
        let reply = self.link.query("read dead letters", &cmd).await?;
        let mut out = Vec::new();
        for entry in array("XRANGE", reply)? {
            let parts = array("XRANGE entry", entry)?;
            let Some(fields) = parts.into_iter().nth(1) else {
                continue;
            };
            let fields = array("XRANGE fields", fields)?;
            let mut map = HashMap::new();
            for pair in fields.chunks(2) {
                if let [k, v] = pair {
                    if let (Some(k), Some(v)) = (text(k), owned(v)) {
                        map.insert(k.to_owned(), v);
                    }
                }
            }
            let Some(id) = map.get("j").and_then(|s| s.parse::<JobId>().ok()) else {
                continue;
            };
            out.push((
                id,
                map.remove("k").unwrap_or_default(),
                map.get("a").and_then(|a| a.parse().ok()).unwrap_or(0),
                map.remove("r").unwrap_or_default(),
            ));
        }
        Ok(out)
    }

    /// Counts of one queue: ready and in flight from `XLEN` and `XPENDING` of its lanes,
    /// delayed from `ZCARD`, dead from its dead-letter stream, per kind from its counters.
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        let prefix = self.key_prefix(queue);
        let reply = self.link.eval(&SCRIPTS.stats, &[&prefix], &[]).await?;
        let parts = array("stats", reply)?;
        let [ready, in_flight, delayed, dead, counters] = parts.as_slice() else {
            return Err(unexpected("stats", &Value::Array(parts)));
        };
        let count = |v: &Value| u64::try_from(int(v).unwrap_or(0)).unwrap_or(0);
        let mut stats = QueueStats {
            ready: count(ready),
            in_flight: count(in_flight),
            delayed: count(delayed),
            dead: count(dead),
            per_kind: BTreeMap::new(),
        };
        let counters = array("stats counters", counters.clone())?;
        let mut per: HashMap<String, (i64, i64, i64, i64)> = HashMap::new();
        for pair in counters.chunks(2) {
            let [field, value] = pair else { continue };
            let (Some(field), Some(value)) = (text(field), int(value)) else {
                continue;
            };
            let Some((what, kind)) = field.split_once('|') else {
                continue;
            };
            let slot = per.entry(kind.to_owned()).or_default();
            match what {
                "n" => slot.0 += value,
                "f" => slot.1 += value,
                "d" => slot.2 += value,
                "x" => slot.3 += value,
                _ => {}
            }
        }
        let pos = |v: i64| u64::try_from(v.max(0)).unwrap_or(0);
        for (kind, (n, f, d, x)) in per {
            let k = KindQueueStats {
                ready: pos(n - f),
                in_flight: pos(f),
                delayed: pos(d),
                dead: pos(x),
            };
            if k != KindQueueStats::default() {
                stats.per_kind.insert(kind, k);
            }
        }
        Ok(stats)
    }

    fn parse_leases(
        &self,
        queue: &str,
        worker: &WorkerId,
        lease: Duration,
        flat: Vec<Value>,
    ) -> Result<Vec<Lease>> {
        let expires_at =
            Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let mut out = Vec::with_capacity(flat.len() / 7);
        for item in flat.chunks(7) {
            let [id, pri, eid, token, attempt, run_at, kind] = item else {
                return Err(unexpected("reserve (lease)", &Value::Array(item.to_vec())));
            };
            let id: JobId = need_text("job id", id)?.parse()?;
            let pri_text = need_text("priority", pri)?;
            let priority = pri_text.parse().map_err(|_| unexpected("priority", pri))?;
            let eid = need_text("entry id", eid)?;
            let token = u64::try_from(need_int("token", token)?).unwrap_or(0);
            let attempt = u32::try_from(need_int("attempt", attempt)?).unwrap_or(0);
            let run_at = from_micros(need_int("run_at", run_at)?);
            out.push(Lease {
                envelope: Envelope {
                    id,
                    kind: need_text("kind", kind)?.into(),
                    queue: queue.into(),
                    priority,
                    run_at,
                    attempt,
                },
                worker: worker.clone(),
                token,
                receipt: Some(format!("{pri_text}:{eid}")),
                expires_at,
            });
        }
        Ok(out)
    }

    async fn reserve_from(&self, queue: &str, req: &Reserve<'_>, max: usize) -> Result<Attempt> {
        let lease_ms = millis(req.lease).max(1);
        let reclaim_every = (lease_ms / 4).clamp(10, 1_000);
        let args = [
            arg(req.worker.as_str()),
            arg(max),
            arg(lease_ms),
            arg(self.config.promote_batch.max(max)),
            arg(reclaim_every),
            arg(millis(self.config.max_lane_wait)),
        ];
        let prefix = self.key_prefix(queue);
        let reply = self.link.eval(&SCRIPTS.reserve, &[&prefix], &args).await?;
        let mut parts = array("reserve", reply)?.into_iter();
        let leases = array("reserve leases", parts.next().unwrap_or(Value::Nil))?;
        let next_due = parts.next().as_ref().and_then(int).unwrap_or(-1);
        let deleted = array("reserve deleted", parts.next().unwrap_or(Value::Nil))?;
        let lanes: Vec<String> = array("reserve lanes", parts.next().unwrap_or(Value::Nil))?
            .iter()
            .filter_map(owned)
            .collect();
        if !deleted.is_empty() {
            let ids: Vec<String> = deleted.iter().filter_map(owned).collect();
            tracing::warn!(
                queue,
                entries = ?ids,
                "XAUTOCLAIM reported pending entries whose stream entry was deleted (trimmed or lost); \
                 they are dropped from the pending list, and the reconciler re-enqueues their jobs from state"
            );
        }
        Ok(Attempt {
            leases: self.parse_leases(queue, req.worker, req.lease, leases)?,
            next_due_ms: u64::try_from(next_due).ok(),
            lanes,
        })
    }

    async fn take_blocker(&self) -> Result<MultiplexedConnection> {
        if let Some(conn) = self.blockers.lock().pop() {
            return Ok(conn);
        }
        self.link
            .blocking_conn(self.config.link.connect_timeout)
            .await
    }

    fn put_blocker(&self, conn: MultiplexedConnection) {
        let mut blockers = self.blockers.lock();
        if blockers.len() < BLOCKERS_KEPT {
            blockers.push(conn);
        }
    }

    /// Wait up to `block` on every lane of `queues` with a blocking `XREADGROUP` on a
    /// dedicated connection; turn what arrives into leases.
    async fn block_read(
        &self,
        req: &Reserve<'_>,
        queues: &[(String, Vec<String>)],
        block: Duration,
    ) -> Result<Vec<Lease>> {
        let mut keys: HashMap<String, (usize, String)> = HashMap::new();
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg("jobforge")
            .arg(req.worker.as_str())
            .arg("COUNT")
            .arg(req.max.min(self.config.chunk_size))
            .arg("BLOCK")
            .arg(millis(block).max(1))
            .arg("STREAMS");
        let mut n = 0;
        for (qi, (queue, lanes)) in queues.iter().enumerate() {
            let prefix = self.key_prefix(queue);
            let mut lanes = lanes.clone();
            if !lanes.iter().any(|l| l == "0") {
                lanes.push("0".to_owned());
            }
            for lane in lanes {
                let key = format!("{prefix}:s:{lane}");
                cmd.arg(&key);
                keys.insert(key, (qi, lane));
                n += 1;
            }
        }
        for _ in 0..n {
            cmd.arg(">");
        }
        let mut conn = self.take_blocker().await?;
        self.link.count_round_trip();
        let limit = block + self.config.link.response_timeout;
        let reply = match tokio::time::timeout(limit, cmd.query_async::<Value>(&mut conn)).await {
            Ok(Ok(value)) => {
                self.put_blocker(conn);
                value
            }
            Ok(Err(err)) if err.code() == Some("NOGROUP") => {
                self.put_blocker(conn);
                // A stream or group is gone (Redis restarted or was flushed): recreate them.
                for (queue, lanes) in queues {
                    let prefix = self.key_prefix(queue);
                    let args: Vec<Vec<u8>> = lanes.iter().map(arg).collect();
                    self.link.eval(&SCRIPTS.ensure, &[&prefix], &args).await?;
                }
                return Ok(Vec::new());
            }
            Ok(Err(err)) => {
                // The server went away (or restarted): the idle blocking connections are as
                // dead as this one; open fresh ones next time.
                self.blockers.lock().clear();
                return Err(self.link.error("blocking read", err));
            }
            Err(_) => {
                self.blockers.lock().clear();
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "blocking read on the Redis queue got no answer within {limit:?}; the connection was dropped"
                    ),
                ));
            }
        };
        // Group what arrived per queue: (priority, entry id, job id).
        let mut per_queue: BTreeMap<usize, Vec<[String; 3]>> = BTreeMap::new();
        for stream in array("XREADGROUP", reply)? {
            let mut parts = array("XREADGROUP stream", stream)?.into_iter();
            let key = parts.next().as_ref().and_then(owned).unwrap_or_default();
            let Some((qi, lane)) = keys.get(&key) else {
                continue;
            };
            for entry in array("XREADGROUP entries", parts.next().unwrap_or(Value::Nil))? {
                let mut e = array("XREADGROUP entry", entry)?.into_iter();
                let eid = e.next().as_ref().and_then(owned).unwrap_or_default();
                let fields = array("XREADGROUP fields", e.next().unwrap_or(Value::Nil))?;
                let job = fields.get(1).and_then(owned).unwrap_or_default();
                per_queue
                    .entry(*qi)
                    .or_default()
                    .push([lane.clone(), eid, job]);
            }
        }
        let mut leases = Vec::new();
        for (qi, entries) in per_queue {
            let queue = &queues[qi].0;
            let prefix = self.key_prefix(queue);
            let args: Vec<Vec<u8>> = std::iter::once(arg(millis(req.lease).max(1)))
                .chain(
                    entries
                        .iter()
                        .flat_map(|[lane, eid, job]| [arg(lane), arg(eid), arg(job)]),
                )
                .collect();
            let reply = self.link.eval(&SCRIPTS.adopt, &[&prefix], &args).await?;
            let flat = array("adopt", reply)?;
            leases.extend(self.parse_leases(queue, req.worker, req.lease, flat)?);
        }
        if leases.len() > req.max {
            // A blocking read counts per stream; give back what is over the batch.
            let extra = leases.split_off(req.max);
            let now = Utc::now();
            let items: Vec<Release> = extra
                .into_iter()
                .map(|lease| Release {
                    run_at: now,
                    attempt: lease.envelope.attempt,
                    lease,
                })
                .collect();
            self.release(&items).await?;
        }
        Ok(leases)
    }

    async fn lease_script(
        &self,
        lua: &Lua,
        head: &[Vec<u8>],
        queue: &str,
        items: &[Vec<Vec<u8>>],
    ) -> Result<Vec<Value>> {
        let prefix = self.key_prefix(queue);
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(self.config.chunk_size) {
            let mut args: Vec<Vec<u8>> = head.to_vec();
            for item in chunk {
                args.extend(item.iter().cloned());
            }
            let reply = self.link.eval(lua, &[&prefix], &args).await?;
            match reply {
                Value::Array(values) => out.extend(values),
                other => out.push(other),
            }
        }
        Ok(out)
    }
}

/// A lease as the scripts check it: id, priority, entry id, the job's metadata exactly as
/// this delivery left it (entry, token, priority, attempt, run_at, kind), kind, attempt.
fn lease_quad(lease: &Lease) -> Option<Vec<Vec<u8>>> {
    let (pri, eid) = receipt(lease)?;
    let env = &lease.envelope;
    Some(vec![
        arg(env.id),
        arg(pri),
        arg(eid),
        arg(format!(
            "{eid}|{}|{pri}|{}|{}|{}",
            lease.token,
            env.attempt,
            micros(env.run_at),
            env.kind
        )),
        arg(&env.kind),
        arg(env.attempt),
    ])
}

#[async_trait]
impl QueueManager for RedisStreamsQueue {
    async fn enqueue(&self, jobs: &[Envelope]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut groups: BTreeMap<&str, Vec<&Envelope>> = BTreeMap::new();
        for job in jobs {
            groups.entry(&*job.queue).or_default().push(job);
        }
        for (queue, mut group) in groups {
            self.register(queue).await?;
            // Within a lane, ready jobs are delivered in stream order: add them by run_at.
            group.sort_by_key(|e| e.run_at);
            let items: Vec<Vec<Vec<u8>>> = group
                .iter()
                .map(|e| {
                    vec![
                        arg(e.id),
                        arg(e.priority),
                        arg(e.attempt),
                        arg(micros(e.run_at)),
                        arg(&e.kind),
                    ]
                })
                .collect();
            self.lease_script(&SCRIPTS.enqueue, &[], queue, &items)
                .await?;
        }
        Ok(())
    }

    async fn reserve(&self, req: &Reserve<'_>) -> Result<Vec<Lease>> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + req.wait;
        let reclaim_every = Duration::from_millis((millis(req.lease) / 4).clamp(10, 1_000));
        loop {
            // Start at a different queue each call, so no listed queue is starved.
            let n = req.queues.len();
            let start = self.rotate.fetch_add(1, Ordering::Relaxed) % n;
            let mut leases = Vec::new();
            let mut next_due: Option<u64> = None;
            let mut lanes = Vec::with_capacity(n);
            for i in 0..n {
                let queue = &req.queues[(start + i) % n];
                let want = (req.max - leases.len()).min(self.config.chunk_size);
                if want == 0 {
                    break;
                }
                let got = self.reserve_from(queue, req, want).await?;
                leases.extend(got.leases);
                if let Some(due) = got.next_due_ms {
                    next_due = Some(next_due.map_or(due, |d| d.min(due)));
                }
                lanes.push((queue.clone(), got.lanes));
            }
            if !leases.is_empty() {
                return Ok(leases);
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() || lanes.len() < n {
                return Ok(leases);
            }
            let mut block = remaining.min(reclaim_every);
            if let Some(due) = next_due {
                block = block.min(Duration::from_millis(due.max(1)));
            }
            let leases = self.block_read(req, &lanes, block).await?;
            if !leases.is_empty() {
                return Ok(leases);
            }
        }
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>> {
        let mut out = vec![false; leases.len()];
        // Per queue and worker (the consumer that owns the pending entries).
        let mut groups: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
        for (i, lease) in leases.iter().enumerate() {
            if receipt(lease).is_some() {
                groups
                    .entry((&*lease.envelope.queue, lease.worker.as_str()))
                    .or_default()
                    .push(i);
            }
        }
        for ((queue, worker), idx) in groups {
            let items: Vec<Vec<Vec<u8>>> =
                idx.iter().filter_map(|&i| lease_quad(&leases[i])).collect();
            let held = self
                .lease_script(
                    &SCRIPTS.extend,
                    &[arg(worker), arg(millis(lease).max(1))],
                    queue,
                    &items,
                )
                .await?;
            for (&i, ok) in idx.iter().zip(held) {
                out[i] = int(&ok) == Some(1);
            }
        }
        Ok(out)
    }

    async fn ack(&self, leases: &[Lease]) -> Result<()> {
        let mut groups: BTreeMap<&str, Vec<Vec<Vec<u8>>>> = BTreeMap::new();
        for lease in leases {
            if let Some(quad) = lease_quad(lease) {
                groups.entry(&*lease.envelope.queue).or_default().push(quad);
            }
        }
        for (queue, items) in groups {
            self.lease_script(&SCRIPTS.ack, &[], queue, &items).await?;
        }
        Ok(())
    }

    async fn release(&self, items: &[Release]) -> Result<()> {
        let mut groups: BTreeMap<&str, Vec<Vec<Vec<u8>>>> = BTreeMap::new();
        for item in items {
            if let Some(mut quad) = lease_quad(&item.lease) {
                quad.push(arg(micros(item.run_at)));
                quad.push(arg(item.attempt));
                groups
                    .entry(&*item.lease.envelope.queue)
                    .or_default()
                    .push(quad);
            }
        }
        for (queue, items) in groups {
            self.lease_script(&SCRIPTS.release, &[], queue, &items)
                .await?;
        }
        Ok(())
    }

    async fn dead_letter(&self, items: &[DeadLetter]) -> Result<()> {
        let mut groups: BTreeMap<&str, Vec<Vec<Vec<u8>>>> = BTreeMap::new();
        for item in items {
            if let Some(mut quad) = lease_quad(&item.lease) {
                quad.push(arg(&item.reason));
                groups
                    .entry(&*item.lease.envelope.queue)
                    .or_default()
                    .push(quad);
            }
        }
        let cap = [arg(self.config.dead_letter_capacity)];
        for (queue, items) in groups {
            self.lease_script(&SCRIPTS.dead, &cap, queue, &items)
                .await?;
        }
        Ok(())
    }

    async fn stats(&self) -> Result<QueueStats> {
        let mut stats = QueueStats::default();
        for queue in self.queues().await? {
            let one = self.queue_stats(&queue).await?;
            stats.ready += one.ready;
            stats.in_flight += one.in_flight;
            stats.delayed += one.delayed;
            stats.dead += one.dead;
            for (kind, k) in one.per_kind {
                let all = stats.per_kind.entry(kind).or_default();
                all.ready += k.ready;
                all.in_flight += k.in_flight;
                all.delayed += k.delayed;
                all.dead += k.dead;
            }
        }
        Ok(stats)
    }

    async fn ping(&self) -> Result<()> {
        self.link.ping().await
    }
}

#[async_trait]
impl QueueInspect for RedisStreamsQueue {
    async fn contains(&self, jobs: &[Envelope]) -> Result<Vec<bool>> {
        let mut out = vec![false; jobs.len()];
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, job) in jobs.iter().enumerate() {
            groups.entry(&*job.queue).or_default().push(i);
        }
        for (queue, idx) in groups {
            let items: Vec<Vec<Vec<u8>>> = idx.iter().map(|&i| vec![arg(jobs[i].id)]).collect();
            let held = self
                .lease_script(&SCRIPTS.contains, &[], queue, &items)
                .await?;
            for (&i, there) in idx.iter().zip(held) {
                out[i] = int(&there) == Some(1);
            }
        }
        Ok(out)
    }

    async fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let key = format!("{{{}}}:lock:{name}", self.config.namespace);
        let reply = self
            .link
            .eval(
                &SCRIPTS.lock,
                &[&key],
                &[arg(holder), arg(millis(ttl).max(1))],
            )
            .await?;
        Ok(int(&reply) == Some(1))
    }
}
