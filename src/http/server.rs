//! The `jobforge-server` binary: its flags and environment, backend selection, the demo
//! handlers, and startup with graceful shutdown. The binary's `main` only parses [`Cli`] and
//! calls [`run`].
//!
//! Backends follow the URLs that are set: none gives the in-memory engine; `DATABASE_URL`
//! gives PostgreSQL (state, queue and memory; feature `postgres`); `REDIS_URL` gives Redis
//! Streams as the queue and Redis as the state (feature `redis`); both give Redis as the queue
//! and PostgreSQL as the state and memory, with the reconciler.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use serde_json::json;

use super::security::{SecurityArgs, generate_key_command, load_server_config, serve_tls};
use super::{HttpConfig, openapi, router};
use crate::safety::{BreakerRegistry, CircuitBreakerConfig, CircuitBreakerLayer, HandlerExt};
use crate::store::{Reconciler, ReconcilerConfig, Split};
use crate::strategy::{Adaptive, Hedged, InlineRetry};
use crate::{
    Error, ErrorKind, JobContext, JobError, KindConfig, Orchestrator, OrchestratorBuilder,
    RetryPolicy, WorkerConfig, handler_fn,
};

/// A boxed error for startup failures.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The command line of `jobforge-server`.
#[derive(Debug, Parser)]
#[command(
    name = "jobforge-server",
    version,
    about = "Serve jobforge's HTTP API and run its workers",
    long_about = "Serve jobforge's HTTP API and run its workers.\n\nBackends follow the URLs that are set: none gives the in-memory engine, DATABASE_URL PostgreSQL, REDIS_URL Redis, both Redis as the queue and PostgreSQL as the state and memory."
)]
pub struct Cli {
    /// What to do instead of serving (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// How to serve.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands of `jobforge-server`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the OpenAPI document (JSON) and exit.
    Openapi,
    /// API keys.
    Keys {
        /// What to do with keys.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Ask a running server's `/health` and exit 0 if it answers 200 within 2 s, 1 otherwise:
    /// the container image's health check (it has no shell and no curl). Plain HTTP only.
    Health {
        /// The server's address (default: `--bind`/`JOBFORGE_BIND`, with an unspecified
        /// address such as 0.0.0.0 asked on loopback).
        #[arg(long)]
        addr: Option<SocketAddr>,
    },
}

/// `jobforge-server keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new API key, its SHA-256 hash and the flag that configures the server with it.
    /// The server is only ever given the hash.
    Generate,
}

/// How to serve: flags, each with an environment variable.
#[derive(Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, env = "JOBFORGE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Redis URL: Redis Streams queue and Redis state (feature `redis`).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// PostgreSQL URL: PostgreSQL state, queue and memory (feature `postgres`).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// The PostgreSQL schema jobforge's tables live in (default `jobforge`): several
    /// deployments (staging, a test run) can share one database.
    #[arg(long, env = "JOBFORGE_PG_SCHEMA")]
    pub pg_schema: Option<String>,
    /// The prefix of jobforge's Redis keys (default `jobforge`): several deployments can
    /// share one Redis.
    #[arg(long, env = "JOBFORGE_REDIS_NAMESPACE")]
    pub redis_namespace: Option<String>,
    /// Serve the API only; run no workers in this process.
    #[arg(long, env = "JOBFORGE_NO_WORKERS", conflicts_with = "workers_only")]
    pub no_workers: bool,
    /// Run workers only, with no HTTP server (scale workers out behind shared backends).
    #[arg(long, env = "JOBFORGE_WORKERS_ONLY")]
    pub workers_only: bool,
    /// Register the demo kinds `echo`, `sleep` and `fail_n_times`, for trials and load tests.
    #[arg(long, env = "JOBFORGE_DEMO_HANDLERS")]
    pub demo_handlers: bool,
    /// Accept submissions of kinds this server has no handler for (workers elsewhere may
    /// have them). By default, once handlers are registered, other kinds answer 422.
    #[arg(long, env = "JOBFORGE_ALLOW_UNKNOWN_KINDS")]
    pub allow_unknown_kinds: bool,
    /// Jobs run at once by this process's workers.
    #[arg(long, env = "JOBFORGE_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
    /// Queues the workers serve, comma-separated.
    #[arg(
        long,
        env = "JOBFORGE_QUEUES",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub queues: Vec<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "JOBFORGE_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// Longest a request may take, in milliseconds.
    #[arg(long, env = "JOBFORGE_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// How long running jobs get to finish at shutdown, in milliseconds.
    #[arg(long, env = "JOBFORGE_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// Schedules to declare at start: a JSON file, or the JSON itself (a value starting with
    /// `[`), holding an array of schedules such as
    /// `[{"id": "nightly", "cron": "0 3 * * *", "job": {"kind": "echo"}}]` (the body of
    /// `PUT /v1/schedules/{id}`, with its `id`). Each is upserted: the same definition
    /// changes nothing, so every process of a fleet may be given the same file.
    #[arg(long, env = "JOBFORGE_SCHEDULES")]
    pub schedules: Option<String>,
    /// Fire no schedules in this process's workers (others in the fleet do).
    #[arg(long, env = "JOBFORGE_NO_SCHEDULER")]
    pub no_scheduler: bool,
    /// Authentication, rate limits, CORS and TLS.
    #[command(flatten)]
    pub security: SecurityArgs,
}

fn redact(url: Option<&String>) -> Option<&'static str> {
    url.map(|_| "<set>")
}

impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs carry passwords: say whether they are set, never what they are.
        f.debug_struct("ServeArgs")
            .field("bind", &self.bind)
            .field("redis_url", &redact(self.redis_url.as_ref()))
            .field("database_url", &redact(self.database_url.as_ref()))
            .field("pg_schema", &self.pg_schema)
            .field("redis_namespace", &self.redis_namespace)
            .field("no_workers", &self.no_workers)
            .field("workers_only", &self.workers_only)
            .field("demo_handlers", &self.demo_handlers)
            .field("allow_unknown_kinds", &self.allow_unknown_kinds)
            .field("concurrency", &self.concurrency)
            .field("queues", &self.queues)
            .field("body_limit", &self.body_limit)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("shutdown_grace_ms", &self.shutdown_grace_ms)
            .field("schedules", &self.schedules.as_ref().map(|s| s.len()))
            .field("no_scheduler", &self.no_scheduler)
            .field("security", &self.security)
            .finish()
    }
}

/// Run the command line: serve, or print the OpenAPI document.
pub async fn run(cli: Cli) -> Result<(), BoxError> {
    match cli.command {
        Some(Command::Openapi) => {
            println!("{}", openapi_json()?);
            Ok(())
        }
        Some(Command::Keys {
            command: KeysCommand::Generate,
        }) => {
            println!("{}", generate_key_command()?);
            Ok(())
        }
        Some(Command::Health { addr }) => {
            let addr = loopback_if_unspecified(addr.unwrap_or(cli.serve.bind));
            let status = health_check(addr, Duration::from_secs(2)).await?;
            println!("{status}");
            Ok(())
        }
        None => serve(cli.serve).await,
    }
}

/// An unspecified address (`0.0.0.0`, `::`) is where a server listens, not where to ask it:
/// ask on loopback instead.
fn loopback_if_unspecified(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// `GET /health` on `addr` over plain HTTP/1.1; answers the status line of a 200, or an error
/// naming what went wrong.
async fn health_check(addr: SocketAddr, within: Duration) -> Result<String, BoxError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut answer = Vec::new();
        stream.take(4096).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(within, ask)
        .await
        .map_err(|_| format!("{addr} did not answer GET /health within {within:?}"))?
        .map_err(|e| format!("GET /health on {addr} failed: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().unwrap_or("").trim().to_owned();
    if status.starts_with("HTTP/1.1 200") {
        Ok(status)
    } else {
        Err(format!("GET /health on {addr} answered {status:?}, not 200").into())
    }
}

/// The OpenAPI document as pretty JSON with a final newline, as `docs/openapi.json` holds it.
pub fn openapi_json() -> Result<String, BoxError> {
    Ok(serde_json::to_string_pretty(&openapi())?)
}

/// What startup built.
struct Built {
    orchestrator: Orchestrator,
    reconciler: Option<Reconciler>,
    breakers: Option<Arc<BreakerRegistry>>,
    backends: &'static str,
}

/// Build the orchestrator on the backends the URLs select, with the demo kinds if asked.
async fn build(args: &ServeArgs) -> Result<Built, BoxError> {
    let mut builder = Orchestrator::builder()
        .strategy(Arc::new(InlineRetry::new(2)))
        .strategy(Arc::new(Hedged::new()))
        .strategy(Arc::new(Adaptive::new()));
    let mut breakers = None;
    if args.demo_handlers {
        let (b, registry) = demo_kinds(builder)?;
        builder = b;
        breakers = Some(registry);
    }
    let (builder, inspect, backends) = backends(builder, args).await?;
    let orchestrator = builder.build()?;
    let reconciler = match inspect {
        Some((split, inspect)) if !args.no_workers => {
            Some(split.start_reconciler(inspect, ReconcilerConfig::default())?)
        }
        _ => None,
    };
    Ok(Built {
        orchestrator,
        reconciler,
        breakers,
        backends,
    })
}

/// A split store and its queue's inspection side, for the reconciler.
type Inspect = Option<(Arc<Split>, Arc<dyn crate::queue::QueueInspect>)>;

#[allow(clippy::unused_async)]
async fn backends(
    builder: OrchestratorBuilder,
    args: &ServeArgs,
) -> Result<(OrchestratorBuilder, Inspect, &'static str), BoxError> {
    match (args.redis_url.as_deref(), args.database_url.as_deref()) {
        (None, None) => Ok((builder, None, "in-memory")),
        #[cfg(feature = "postgres")]
        (None, Some(url)) => {
            let pg = postgres(url, args).await?;
            Ok((
                builder.store(pg.store()).memory(pg.memory()),
                None,
                "postgres",
            ))
        }
        #[cfg(feature = "redis")]
        (Some(url), None) => {
            use crate::redis::{RedisState, RedisStateConfig};
            // Redis only: the state is its own queue (one script claims a batch, one settles it).
            let mut config = RedisStateConfig::new(url);
            if let Some(namespace) = &args.redis_namespace {
                config = config.with_namespace(namespace);
            }
            let state = Arc::new(RedisState::connect(config).await?);
            Ok((builder.store(state), None, "redis"))
        }
        #[cfg(all(feature = "redis", feature = "postgres"))]
        (Some(redis), Some(pg_url)) => {
            use crate::redis::{RedisQueueConfig, RedisStreamsQueue};
            let mut config = RedisQueueConfig::new(redis);
            if let Some(namespace) = &args.redis_namespace {
                config = config.with_namespace(namespace);
            }
            let queue = Arc::new(RedisStreamsQueue::connect(config).await?);
            let pg = postgres(pg_url, args).await?;
            let split = Arc::new(
                Split::new(Arc::clone(&queue) as _, pg.store()).with_schedules(pg.schedules()),
            );
            Ok((
                builder.store(Arc::clone(&split)).memory(pg.memory()),
                Some((split, queue as _)),
                "redis queue, postgres state and memory",
            ))
        }
        #[allow(unreachable_patterns)]
        (redis, pg) => {
            let mut missing = Vec::new();
            if redis.is_some() && !cfg!(feature = "redis") {
                missing
                    .push("REDIS_URL is set but this binary was built without the `redis` feature");
            }
            if pg.is_some() && !cfg!(feature = "postgres") {
                missing.push(
                    "DATABASE_URL is set but this binary was built without the `postgres` feature",
                );
            }
            Err(Error::new(
                ErrorKind::Configuration,
                format!(
                    "{}; rebuild with `--features http,redis,postgres` (or `full`), or unset the variable to run in memory",
                    missing.join("; ")
                ),
            )
            .into())
        }
    }
}

/// PostgreSQL at `url`, in `--pg-schema` when given.
#[cfg(feature = "postgres")]
async fn postgres(url: &str, args: &ServeArgs) -> crate::Result<crate::postgres::PostgresBackend> {
    let mut config = crate::postgres::PostgresConfig::default();
    if let Some(schema) = &args.pg_schema {
        config = config.with_schema(schema);
    }
    crate::postgres::PostgresBackend::connect_with(url, config).await
}

/// The payload of `sleep`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepFor {
    ms: u64,
}

/// The payload of `fail_n_times`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FailTimes {
    /// Fail this many first attempts (retryably), then succeed.
    #[serde(default)]
    times: u32,
    /// Fail permanently instead (dead at once).
    #[serde(default)]
    permanent: bool,
}

/// The demo kinds:
///
/// - `echo`: answers its payload.
/// - `sleep` (`{"ms": 50}`): sleeps, stops early when cancelled; behind a circuit breaker
///   (so `/metrics` shows a breaker).
/// - `fail_n_times` (`{"times": 2}` or `{"permanent": true}`): fails its first `times`
///   tries (attempts, plus a strategy's in-process retries) with a retryable error, then
///   succeeds; 5 attempts with short backoff, so `times >= 5` ends dead.
fn demo_kinds(
    builder: OrchestratorBuilder,
) -> Result<(OrchestratorBuilder, Arc<BreakerRegistry>), BoxError> {
    let quick = RetryPolicy::new(5)
        .with_base(Duration::from_millis(10))
        .with_cap(Duration::from_millis(100));
    let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default())?;
    let registry = Arc::clone(breaker.registry());
    let echo = handler_fn(|ctx: JobContext| async move {
        ctx.payload()
            .to_value()
            .map_err(|e| JobError::permanent(e.message()).with_class("bad_payload"))
    });
    let sleep = handler_fn(|ctx: JobContext| async move {
        let SleepFor { ms } = ctx.decode()?;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms.min(600_000))) => Ok(json!({ "slept_ms": ms })),
            () = ctx.cancellation_token().cancelled() => Err(JobError::cancelled("cancelled while sleeping")),
        }
    })
    .layer(breaker);
    let fail = handler_fn(|ctx: JobContext| async move {
        let spec: FailTimes = if ctx.payload().is_null() {
            FailTimes::default()
        } else {
            ctx.decode()?
        };
        if spec.permanent {
            return Err(
                JobError::permanent("asked to fail permanently").with_class("demo_permanent")
            );
        }
        // A try is an attempt, or a strategy's in-process retry within one.
        let tries = ctx.attempt() + ctx.inline_retries();
        if tries <= spec.times {
            return Err(JobError::retryable(format!(
                "failing try {tries} of the first {}",
                spec.times
            ))
            .with_class("demo_failure"));
        }
        Ok(json!({ "succeeded_on_attempt": ctx.attempt(), "try": tries }))
    });
    let builder = builder
        .kind("echo", KindConfig::new(echo).retry(quick).idempotent(true))
        .kind(
            "sleep",
            KindConfig::new(sleep).retry(quick).idempotent(true),
        )
        .kind("fail_n_times", KindConfig::new(fail).retry(quick));
    Ok((builder, registry))
}

/// Serve (and run workers) until SIGINT or SIGTERM, then shut down gracefully: stop taking
/// requests, finish those in flight, then give running jobs `shutdown_grace_ms` to finish.
pub async fn serve(args: ServeArgs) -> Result<(), BoxError> {
    if args.concurrency == 0 {
        return Err(Error::invalid_input("concurrency", "must be at least 1").into());
    }
    // Security first: a server that would listen on a public address with no authentication
    // refuses to start before it touches any backend.
    let security = if args.workers_only {
        None
    } else {
        let config = args.security.clone().into_config()?;
        config.check_bind(args.bind)?;
        let tls = config.tls.clone();
        let security = config.build()?;
        if !security.auth_enabled() {
            tracing::warn!(
                "no authentication configured: every caller may submit, read and cancel jobs; fine on loopback, see docs/AUTHENTICATION.md"
            );
        }
        Some((security, tls))
    };
    // Read before touching a backend: a mistake in the file stops the start, naming it.
    let declared = args.schedules.as_deref().map(read_schedules).transpose()?;
    let built = build(&args).await?;
    let orchestrator = built.orchestrator;
    if let Some(declared) = declared {
        declare_schedules(&orchestrator, declared).await?;
    }
    let kinds: Vec<String> = orchestrator
        .kinds()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let workers = if args.no_workers {
        None
    } else {
        if kinds.is_empty() {
            tracing::warn!(
                "workers run with no handlers: jobs will end dead with `no handler`; pass --demo-handlers, or embed jobforge::http::router in your own binary with your handlers"
            );
        }
        let mut config = WorkerConfig::default()
            .concurrency(args.concurrency)
            .queues(args.queues.clone());
        if args.no_scheduler {
            config = config.schedules(None);
        }
        Some(orchestrator.start_workers(config)?)
    };
    // Feature `otel`, exporting: the job counts as OpenTelemetry metrics every 10 s (the
    // figures /metrics serves), beside the spans of each attempt.
    #[cfg(feature = "otel")]
    if crate::otel::configured_by_env() {
        let gauges = crate::otel::Gauges::new(&*opentelemetry::global::meter_provider());
        let orchestrator = orchestrator.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            loop {
                every.tick().await;
                if let Ok(stats) = crate::JobOrchestrator::stats(&orchestrator).await {
                    gauges.record(&stats);
                }
            }
        });
    }
    tracing::info!(backends = built.backends, kinds = ?kinds, workers = workers.is_some(), "jobforge-server starting");
    if args.workers_only {
        println!(
            "jobforge-server running workers only ({} backend, kinds: {})",
            built.backends,
            kinds.join(", ")
        );
        shutdown_signal().await;
    } else if let Some((security, tls)) = security {
        let mut config = HttpConfig::default()
            .with_body_limit(args.body_limit)
            .with_request_timeout(Duration::from_millis(args.request_timeout_ms.max(1)))
            .with_memory(Arc::clone(orchestrator.memory()));
        if let Ok(schedules) = orchestrator.schedules() {
            config = config.with_schedules(schedules);
        }
        if let Some(registry) = built.breakers {
            config = config.with_breakers(registry);
        }
        if !args.allow_unknown_kinds && !kinds.is_empty() {
            config = config.with_known_kinds(kinds.iter().cloned());
        }
        let config = config.with_security(security);
        let app = router(Arc::new(orchestrator.clone()), config);
        // TLS settings are checked (files readable, key matching) before listening.
        let tls_config = tls.as_ref().map(load_server_config).transpose()?;
        let listener = std::net::TcpListener::bind(args.bind).map_err(|e| {
            Error::new(
                ErrorKind::Configuration,
                format!(
                    "cannot listen on {}: {e}; pick another address with --bind or JOBFORGE_BIND",
                    args.bind
                ),
            )
        })?;
        let addr = listener.local_addr()?;
        // One line on stdout that scripts and tests read to learn the port.
        println!(
            "jobforge-server listening on {}://{addr} ({} backend{})",
            if tls_config.is_some() {
                "https"
            } else {
                "http"
            },
            built.backends,
            if workers.is_some() {
                ", with workers"
            } else {
                ", no workers"
            }
        );
        let grace = Duration::from_millis(args.request_timeout_ms.max(1));
        match tls_config {
            Some(tls_config) => {
                serve_tls(listener, app, tls_config, shutdown_signal(), grace).await?;
            }
            None => {
                listener.set_nonblocking(true)?;
                let listener = tokio::net::TcpListener::from_std(listener)?;
                // Peer addresses feed the per-client rate limit.
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(shutdown_signal())
                .await?;
            }
        }
    }
    tracing::info!("shutting down");
    if let Some(workers) = workers {
        let report = workers
            .shutdown(Duration::from_millis(args.shutdown_grace_ms))
            .await;
        tracing::info!(?report, "workers stopped");
    }
    if let Some(reconciler) = built.reconciler {
        reconciler.shutdown().await;
    }
    Ok(())
}

/// The schedules of `--schedules`: the JSON itself when it starts with `[`, else a file.
fn read_schedules(value: &str) -> Result<Vec<crate::schedule::Schedule>, BoxError> {
    let (json, source) = if value.trim_start().starts_with('[') {
        (value.to_owned(), "--schedules".to_owned())
    } else {
        let text = std::fs::read_to_string(value).map_err(|e| {
            Error::new(
                ErrorKind::Configuration,
                format!("cannot read the schedules file `{value}` (--schedules): {e}"),
            )
        })?;
        (text, format!("the schedules file `{value}`"))
    };
    super::parse_schedules(&json)
        .map_err(|e| Error::new(ErrorKind::Configuration, format!("{source}: {e}")).into())
}

/// Upsert the declared schedules, saying what each one did.
async fn declare_schedules(
    orchestrator: &Orchestrator,
    declared: Vec<crate::schedule::Schedule>,
) -> Result<(), BoxError> {
    let schedules = orchestrator.schedules()?;
    for schedule in declared {
        let id = schedule.id.clone();
        let (record, outcome) = schedules.upsert(schedule).await.map_err(|e| {
            Error::new(
                ErrorKind::Configuration,
                format!("schedule `{id}` (--schedules): {e}"),
            )
        })?;
        tracing::info!(schedule = %id, ?outcome, next_run_at = ?record.next_run_at, "schedule declared");
    }
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;

    /// A server on a free port that answers every connection with `answer`.
    async fn answering(answer: &'static str) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn health_passes_only_on_a_200() {
        let ok = answering("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        assert_eq!(
            health_check(ok, Duration::from_secs(2)).await.unwrap(),
            "HTTP/1.1 200 OK"
        );
        let down = answering("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let err = health_check(down, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
        // Nothing listening: refused, said so.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let err = health_check(closed, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("failed"), "{err}");
    }

    #[test]
    fn an_unspecified_address_is_asked_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(loopback_if_unspecified(any).to_string(), "127.0.0.1:8080");
        let six: SocketAddr = "[::]:9".parse().unwrap();
        assert_eq!(loopback_if_unspecified(six).to_string(), "[::1]:9");
        let set: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert_eq!(loopback_if_unspecified(set), set);
    }
}
