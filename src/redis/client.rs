//! The connection plumbing the Redis backends share: a deadpool-redis pool, one cached
//! multiplexed connection taken from it (so a request is one round trip, not a pool check-out
//! ping plus the request), Lua scripts called by SHA with a reload on `NOSCRIPT`, dedicated
//! connections for blocking reads, and a round-trip counter. Several backends can share one
//! pool and its cached connection ([`Link::share`]), each keeping its own name and count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, Cmd, RedisError, Value};
use deadpool_redis::{Manager, Pool, PoolError, Runtime};

use crate::{Error, ErrorKind, Result};

/// Connection settings shared by the Redis backends' configs (queue, state, rate limit).
#[derive(Clone)]
pub(crate) struct LinkConfig {
    pub(crate) url: String,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
}

impl LinkConfig {
    /// `url` with a pool of `pool_size`, a 5 s connect timeout and `response_timeout`.
    pub(crate) fn new(url: String, pool_size: usize, response_timeout: Duration) -> Self {
        Self {
            url,
            pool_size,
            connect_timeout: Duration::from_secs(5),
            response_timeout,
        }
    }
}

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

/// The connection setters every Redis config shares. The type needs the fields
/// `link: LinkConfig` and `namespace: String`; its `new` documents the defaults.
macro_rules! connection_settings {
    ($ty:ty) => {
        impl $ty {
            /// Prefix of every key (default `jobforge`); deployments sharing a server use
            /// different ones.
            #[must_use]
            pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
                self.namespace = namespace.into();
                self
            }

            /// Most pooled connections (default in [`new`](Self::new)). Each is multiplexed:
            /// many requests share one.
            #[must_use]
            pub fn with_pool_size(mut self, size: usize) -> Self {
                self.link.pool_size = size;
                self
            }

            /// How long connecting may take (default 5 s).
            #[must_use]
            pub fn with_connect_timeout(mut self, timeout: std::time::Duration) -> Self {
                self.link.connect_timeout = timeout;
                self
            }

            /// How long one request may take on a pooled connection (default in
            /// [`new`](Self::new)). Blocking reads use connections of their own, bounded by
            /// the read's wait plus this.
            #[must_use]
            pub fn with_response_timeout(mut self, timeout: std::time::Duration) -> Self {
                self.link.response_timeout = timeout;
                self
            }

            /// The namespace.
            #[must_use]
            pub fn namespace(&self) -> &str {
                &self.namespace
            }
        }
    };
}
pub(crate) use connection_settings;

/// A namespace is the hash tag of every key: non-empty, without `{` or `}`.
/// A script or command argument as Redis takes it: its text.
pub(crate) fn arg(s: impl ToString) -> Vec<u8> {
    s.to_string().into_bytes()
}

pub(crate) fn validate_namespace(namespace: &str) -> Result<()> {
    if namespace.is_empty() || namespace.contains(['{', '}']) {
        return Err(Error::invalid_input(
            "namespace",
            "must be non-empty and contain no `{` or `}` (they delimit Redis Cluster hash tags)",
        ));
    }
    Ok(())
}

/// `redis://user:secret@host` → `redis://user:***@host`, for messages and `Debug`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_owned(),
    }
}

/// A Lua script: its source and SHA1, called with `EVALSHA` and loaded on `NOSCRIPT`.
pub(crate) struct Lua {
    script: ::redis::Script,
    pub(crate) name: &'static str,
}

impl Lua {
    pub(crate) fn new(name: &'static str, source: &str) -> Self {
        Self {
            script: ::redis::Script::new(source),
            name,
        }
    }
}

/// What the links made from one connect share: the pool, the client for connections of
/// their own, the cached multiplexed connection, and the round trips of them all.
struct Shared {
    pool: Pool,
    client: Client,
    cached: parking_lot::Mutex<Option<MultiplexedConnection>>,
    round_trips: AtomicU64,
    target: String,
}

/// One backend's way to the server: the shared pool and cached connection, with the
/// backend's own name (for errors) and round-trip count.
pub(crate) struct Link {
    shared: Arc<Shared>,
    round_trips: AtomicU64,
    what: &'static str,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("target", &self.shared.target)
            .field("round_trips", &self.round_trips.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn open_client(url: &str) -> Result<Client> {
    Client::open(url).map_err(|e| {
        Error::invalid_input(
            "url",
            format!(
                "`{}` is not a usable Redis URL ({e}); use the form redis://[user:password@]host[:port][/db]",
                redact(url)
            ),
        )
    })
}

impl Link {
    /// A pool of our own for `config`, checked with a `PING` so a bad address fails here.
    pub(crate) async fn connect(config: &LinkConfig, what: &'static str) -> Result<Self> {
        let client = open_client(&config.url)?;
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout));
        let manager = Manager::new_with_config(config.url.as_str(), conn_config)
            .map_err(|e| Error::invalid_input("url", format!("{e}")))?;
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .wait_timeout(Some(config.connect_timeout + config.response_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.response_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Configuration,
                    format!("could not build the Redis connection pool: {e}"),
                )
            })?;
        let link = Self::from_parts(pool, client, &config.url, what);
        link.ping().await?;
        Ok(link)
    }

    /// Use a pool the host built; `url` is still needed for the dedicated blocking connections.
    pub(crate) fn with_pool(pool: Pool, url: &str, what: &'static str) -> Result<Self> {
        let client = open_client(url)?;
        Ok(Self::from_parts(pool, client, url, what))
    }

    fn from_parts(pool: Pool, client: Client, url: &str, what: &'static str) -> Self {
        Self {
            shared: Arc::new(Shared {
                pool,
                client,
                cached: parking_lot::Mutex::new(None),
                round_trips: AtomicU64::new(0),
                target: redact(url),
            }),
            round_trips: AtomicU64::new(0),
            what,
        }
    }

    /// Another link on the same pool and cached connection, named `what`, counting its own
    /// round trips (and adding them to the shared count).
    pub(crate) fn share(&self, what: &'static str) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            round_trips: AtomicU64::new(0),
            what,
        }
    }

    /// Whether `other` shares this link's pool and cached connection.
    #[cfg(test)]
    pub(crate) fn shares_with(&self, other: &Link) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The client, for connections of their own (blocking reads, subscriptions).
    pub(crate) fn client(&self) -> &Client {
        &self.shared.client
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.shared.pool
    }

    /// Requests this link sent.
    pub(crate) fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Requests every link sharing this one's pool sent.
    pub(crate) fn shared_round_trips(&self) -> u64 {
        self.shared.round_trips.load(Ordering::Relaxed)
    }

    pub(crate) fn count_round_trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.shared.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// Turn a Redis error into ours, saying where and what to check; drop the cached
    /// connection when the error means it is broken, so the next call reconnects.
    pub(crate) fn error(&self, doing: &str, err: RedisError) -> Error {
        let broken = err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || err.is_unrecoverable_error();
        if broken {
            self.shared.cached.lock().take();
        }
        let hint = if err.is_connection_refusal() {
            "; check that Redis is running and the URL is right"
        } else if err.is_timeout() {
            "; Redis did not answer in time (overloaded, or a long script?)"
        } else if broken {
            "; the connection was lost and will be re-established on the next call"
        } else {
            ""
        };
        Error::backend(
            format!(
                "redis {} {doing} failed at {}{hint}",
                self.what, self.shared.target
            ),
            err,
        )
    }

    fn pool_error(&self, err: PoolError) -> Error {
        match err {
            PoolError::Backend(e) => self.error("connect", e),
            other => Error::new(
                ErrorKind::Backend,
                format!(
                    "redis {} could not get a connection to {} ({other}); check that Redis is running and reachable",
                    self.what, self.shared.target
                ),
            ),
        }
    }

    /// The shared multiplexed connection (cheap clone), taken from the pool on first use or
    /// after an error dropped the previous one.
    pub(crate) async fn conn(&self) -> Result<MultiplexedConnection> {
        if let Some(conn) = self.shared.cached.lock().as_ref() {
            return Ok(conn.clone());
        }
        let object = self
            .shared
            .pool
            .get()
            .await
            .map_err(|e| self.pool_error(e))?;
        let conn = deadpool_redis::Connection::take(object);
        let mut cached = self.shared.cached.lock();
        Ok(cached.get_or_insert(conn).clone())
    }

    /// One command, one round trip.
    pub(crate) async fn query(&self, doing: &str, cmd: &Cmd) -> Result<Value> {
        let mut conn = self.conn().await?;
        self.count_round_trip();
        cmd.query_async(&mut conn)
            .await
            .map_err(|e| self.error(doing, e))
    }

    /// `PING`, for readiness checks and to fail early at connect.
    pub(crate) async fn ping(&self) -> Result<()> {
        self.query("ping", &::redis::cmd("PING")).await.map(|_| ())
    }

    /// Run a script by SHA; on `NOSCRIPT` (first use, or after a Redis restart) load it and
    /// run it again.
    pub(crate) async fn eval(&self, lua: &Lua, keys: &[&str], args: &[Vec<u8>]) -> Result<Value> {
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(lua.script.get_hash()).arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        for arg in args {
            cmd.arg(arg.as_slice());
        }
        let mut conn = self.conn().await?;
        self.count_round_trip();
        match cmd.query_async::<Value>(&mut conn).await {
            Ok(value) => Ok(value),
            Err(err)
                if err.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript) =>
            {
                self.count_round_trip();
                lua.script
                    .load_async(&mut conn)
                    .await
                    .map_err(|e| self.error(lua.name, e))?;
                self.count_round_trip();
                cmd.query_async::<Value>(&mut conn)
                    .await
                    .map_err(|e| self.error(lua.name, e))
            }
            Err(err) => Err(self.error(lua.name, err)),
        }
    }

    /// A connection of its own for a blocking read (never the shared one, which a blocked
    /// command would stall). It has no response timeout: the caller bounds the wait itself.
    pub(crate) async fn blocking_conn(
        &self,
        connect_timeout: Duration,
    ) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(None);
        self.count_round_trip();
        self.shared
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error("blocking connect", e))
    }
}
