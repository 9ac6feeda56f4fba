//! The Redis state store: job records in two shared hashes, Lua compare-and-set
//! transitions, indexes for listing, retention; and its own queue (lanes per priority).

mod claim;
mod codec;
mod config;
mod settle;
mod store;
mod wake;

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::Value;
use deadpool_redis::Pool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::client::{Link, Lua, arg};
use super::reply::{array, int};
use crate::job::{JobRecord, JobState, WorkerId};
use crate::state::{Created, Held};
use crate::{Error, ErrorKind, Result};

pub use config::RedisStateConfig;

macro_rules! state_script {
    ($name:literal) => {
        Lua::new(
            $name,
            concat!(
                include_str!("../lua/batch.lua"),
                "\n",
                include_str!("../lua/state/common.lua"),
                "\n",
                include_str!(concat!("../lua/state/", $name, ".lua"))
            ),
        )
    };
}

struct Scripts {
    settle_claim: Lua,
    create_steps: Lua,
    progress: Lua,
    create: Lua,
    claim: Lua,
    heartbeat: Lua,
    finish: Lua,
    cancel: Lua,
    delete: Lua,
    depths: Lua,
    list: Lua,
    counts: Lua,
    get: Lua,
    stats: Lua,
    settle: Lua,
    handback: Lua,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    // `settle` then `claim` in one call: each body runs as a function of its own arguments
    // (ARGV[1] says how many are the settle's), sharing the common part's buffers.
    settle_claim: Lua::new(
        "settle_claim",
        concat!(
            include_str!("../lua/batch.lua"),
            "\n",
            include_str!("../lua/state/common.lua"),
            "\nlocal function run_settle(ARGV)\n",
            include_str!("../lua/state/settle.lua"),
            "\nend\nlocal function run_claim(ARGV)\n",
            include_str!("../lua/state/claim.lua"),
            "\nend\n",
            include_str!("../lua/state/settle_claim.lua"),
        ),
    ),
    create: state_script!("create"),
    create_steps: state_script!("create_steps"),
    progress: state_script!("progress"),
    claim: state_script!("claim"),
    heartbeat: state_script!("heartbeat"),
    finish: state_script!("finish"),
    cancel: state_script!("cancel"),
    delete: state_script!("delete"),
    depths: state_script!("depths"),
    list: state_script!("list"),
    counts: state_script!("counts"),
    get: state_script!("get"),
    stats: state_script!("stats"),
    settle: state_script!("settle"),
    handback: state_script!("handback"),
});

/// Most claimed records remembered for settling (see [`RedisState::finish`]); past it the
/// memory starts over and finishes take the script's path.
const HELD_CAP: usize = 1 << 16;

/// The Redis state store, and its own queue: with it alone
/// ([`OrchestratorBuilder::store`](crate::OrchestratorBuilder::store)) a
/// Redis-only deployment works end to end.
///
/// A job is two fields of two hashes shared by every job (what never changes, and the rest
/// packed), so a script reads or writes a whole batch with one command. Every transition is
/// a Lua compare-and-set on the job's state, lease owner and attempt, so two workers never
/// both finish a job and a worker whose lease was taken over cannot overwrite the new
/// owner's result. As a queue, due jobs wait in a list per queue and priority and one script
/// claims a batch; a finish is settled from the record the claim returned. Idempotency keys
/// are `SET NX`; history is capped per job; sorted-set indexes give keyset pagination;
/// finished jobs go after the retention (default 24 h, dead ones 7 days), so memory stays
/// bounded. All keys of a namespace share the hash tag `{<namespace>}`. The layout, order and
/// guarantees are in `docs/backends.md`.
///
/// ```no_run
/// use std::sync::Arc;
/// use jobforge::prelude::*;
/// use jobforge::redis::{RedisState, RedisStateConfig};
///
/// # async fn run() -> jobforge::Result<()> {
/// let state = RedisState::connect(RedisStateConfig::new("redis://127.0.0.1:6379")).await?;
/// let orchestrator = Orchestrator::builder()
///     .store(Arc::new(state))
///     .build()?;
/// # drop(orchestrator);
/// # Ok(())
/// # }
/// ```
pub struct RedisState {
    core: Arc<Core>,
    /// The schedules kept beside the jobs, on the same connections.
    pub(super) schedules: Arc<super::RedisSchedules>,
    wake: Arc<Notify>,
    listener: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

/// A claim as `handback.lua` finds it: the name its lease batches carry, and who claimed
/// what for how long.
struct NamedClaim {
    name: String,
    worker: WorkerId,
    lease: Duration,
    queues: Vec<String>,
}

/// What the store's calls share with the tasks they start (a claim runs in a task of its
/// own, so a caller that stops waiting cannot strand what it claimed).
struct Core {
    link: Link,
    config: RedisStateConfig,
    prefix: String,
    /// Records as this store's claims left them, by claim: a finish computes the next record
    /// from it and the settle script only compares and writes.
    held: parking_lot::Mutex<HashMap<Held, Vec<u8>>>,
    /// Redis's clock minus ours (microseconds), read at each claim.
    clock_offset: AtomicI64,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("config", &self.core.config)
            .field("round_trips", &self.core.link.round_trips())
            .finish_non_exhaustive()
    }
}

impl RedisState {
    /// Store a workflow's steps in one script call, all or none (`create_steps.lua`).
    async fn create_steps(&self, jobs: &[JobRecord]) -> Result<Vec<Created>> {
        if let Some(bad) = jobs.iter().find(|j| {
            j.idempotency_key.is_some()
                || !matches!(j.state, JobState::Queued | JobState::Pending)
                || (j.state == JobState::Pending && j.step.is_none())
        }) {
            return Err(Error::invalid_input(
                "state",
                format!(
                    "job {}: a batch with workflow steps holds new queued jobs and pending steps, without idempotency keys",
                    bad.id
                ),
            ));
        }
        let mut args = Vec::with_capacity(jobs.len() * 11);
        for job in jobs {
            args.extend(Core::step_fields(job)?);
        }
        let reply = self
            .core
            .link
            .eval(&SCRIPTS.create_steps, &[&self.core.prefix], &args)
            .await?;
        let stored = crate::redis::reply::need_int("create_steps", &reply)?;
        if usize::try_from(stored).ok() != Some(jobs.len()) {
            return Err(Error::new(
                ErrorKind::Backend,
                format!("Redis stored {stored} of a workflow's {} steps", jobs.len()),
            ));
        }
        self.wake.notify_waiters();
        Ok(jobs.iter().map(|j| Created::New(j.id)).collect())
    }

    /// Connect with a pool of its own. Fails at once, saying what to check, when the URL is
    /// malformed or the server does not answer.
    pub async fn connect(config: RedisStateConfig) -> Result<Self> {
        config.validate()?;
        let link = Link::connect(&config.link, "state").await?;
        Ok(Self::from_link(link, config))
    }

    /// Use a pool the host built (shared with the queue, say).
    pub fn with_pool(pool: Pool, config: RedisStateConfig) -> Result<Self> {
        config.validate()?;
        let link = Link::with_pool(pool, &config.link.url, "state")?;
        Ok(Self::from_link(link, config))
    }

    /// On `link` (shared with the other parts of a [`RedisBackend`](super::RedisBackend), say);
    /// `config` is already validated.
    pub(in crate::redis) fn from_link(link: Link, config: RedisStateConfig) -> Self {
        let prefix = format!("{{{}}}", config.namespace);
        Self {
            schedules: Arc::new(super::RedisSchedules::new(
                link.share("schedules"),
                prefix.clone(),
            )),
            core: Arc::new(Core {
                link,
                config,
                prefix,
                held: parking_lot::Mutex::new(HashMap::new()),
                clock_offset: AtomicI64::new(0),
            }),
            wake: Arc::new(Notify::new()),
            listener: parking_lot::Mutex::new(None),
        }
    }

    #[cfg(test)]
    pub(in crate::redis) fn link(&self) -> &Link {
        &self.core.link
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &Pool {
        self.core.link.pool()
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &RedisStateConfig {
        &self.core.config
    }

    /// Requests sent to Redis so far (a script call counts once).
    #[must_use]
    pub fn round_trips(&self) -> u64 {
        self.core.link.round_trips()
    }

    /// Drop records whose retention ran out now (at most the sweep batch), and lease batches
    /// whose leases all expired. It also happens as jobs are claimed and finished, and at
    /// every `counts`. Returns how many records and batches went (call it until it answers
    /// 0 to drop everything due).
    pub async fn sweep(&self) -> Result<usize> {
        let (swept, _) = self.core.counts_raw().await?;
        Ok(swept)
    }
}

impl Core {
    async fn counts_raw(&self) -> Result<(usize, Vec<Value>)> {
        let reply = self
            .link
            .eval(
                &SCRIPTS.counts,
                &[&self.prefix],
                &[arg(self.config.sweep_batch)],
            )
            .await?;
        let mut parts = array("counts", reply)?.into_iter();
        let swept = parts.next().as_ref().and_then(int).unwrap_or(0);
        let flat = array("counts", parts.next().unwrap_or(Value::Nil))?;
        Ok((usize::try_from(swept).unwrap_or(0), flat))
    }

    async fn chunks(
        &self,
        lua: &Lua,
        head: &[Vec<u8>],
        items: Vec<Vec<Vec<u8>>>,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(self.config.chunk_size) {
            let mut args: Vec<Vec<u8>> = head.to_vec();
            for item in chunk {
                args.extend(item.iter().cloned());
            }
            let reply = self.link.eval(lua, &[&self.prefix], &args).await?;
            out.extend(array(lua.name, reply)?);
        }
        Ok(out)
    }
}

impl Drop for RedisState {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get_mut().take() {
            task.abort();
        }
    }
}

/// Every key of the test's namespace goes.
#[cfg(test)]
async fn drop_namespace(state: &RedisState, ns: &str) {
    let mut conn = state.core.link.conn().await.expect("conn");
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{{{ns}}}*"))
        .query_async(&mut conn)
        .await
        .expect("keys");
    let _: () = ::redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .expect("del");
}
