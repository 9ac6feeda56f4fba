use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use governor::Quota;
use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use serde_json::Value;

use crate::handler::{Handler, JobContext, JobError};
use crate::safety::key::KeyBy;
use crate::safety::keyed_map::Hasher;
use crate::safety::layer::Layer;
use crate::{Error, Result};

/// One call in this many (at random, so no counter is shared between threads) checks
/// whether a cleanup is due.
const CLEANUP_CHECK_ONE_IN: u32 = 1024;

type Keyed = governor::RateLimiter<String, DefaultKeyedStateStore<String, Hasher>, DefaultClock>;

/// Settings of a rate limit: `count` calls per `per`, with bursts of up to `burst` (default
/// `count`), per key (default: per kind).
///
/// ```
/// use std::time::Duration;
/// use jobforge::safety::{KeyBy, RateLimitConfig};
///
/// // 100 calls a minute per tenant, at most 10 at once.
/// let config = RateLimitConfig::per_minute(100)
///     .with_burst(10)
///     .with_key(KeyBy::tenant());
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    count: u32,
    per: Duration,
    burst: Option<u32>,
    key: KeyBy,
    jitter: Duration,
    cleanup_every: Duration,
}

impl RateLimitConfig {
    /// `count` calls per `per`: one call every `per / count` on average.
    #[must_use]
    pub fn new(count: u32, per: Duration) -> Self {
        Self {
            count,
            per,
            burst: None,
            key: KeyBy::kind(),
            jitter: Duration::ZERO,
            cleanup_every: Duration::from_secs(60),
        }
    }

    /// `count` calls a second.
    #[must_use]
    pub fn per_second(count: u32) -> Self {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` calls a minute.
    #[must_use]
    pub fn per_minute(count: u32) -> Self {
        Self::new(count, Duration::from_secs(60))
    }

    /// At most `burst` calls at once after a quiet period (default: `count`).
    #[must_use]
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Which limit a job counts against (default: one per kind).
    #[must_use]
    pub fn with_key(mut self, key: KeyBy) -> Self {
        self.key = key;
        self
    }

    /// Add a random delay in `[0, jitter]` to each deferral (default: none; refused jobs are
    /// already spread out, one emission interval apart, see [`RateLimiter::check`]).
    #[must_use]
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// How often keys indistinguishable from fresh ones are dropped from memory (default
    /// 60 s; checked on the calls themselves, no task is spawned).
    #[must_use]
    pub fn with_cleanup_every(mut self, every: Duration) -> Self {
        self.cleanup_every = every;
        self
    }

    /// Check the settings; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        self.quota().map(|_| ())
    }

    fn quota(&self) -> Result<Quota> {
        let count = NonZeroU32::new(self.count)
            .ok_or_else(|| Error::invalid_input("count", "must be at least 1"))?;
        let burst = NonZeroU32::new(self.burst.unwrap_or(self.count))
            .ok_or_else(|| Error::invalid_input("burst", "must be at least 1"))?;
        let period = self.per / count.get();
        Quota::with_period(period)
            .map(|q| q.allow_burst(burst))
            .ok_or_else(|| {
                Error::invalid_input(
                    "per",
                    format!("{:?} per {} calls is too short a period", self.per, count),
                )
            })
    }
}

/// A keyed GCRA rate limiter (governor's, with its default concurrent keyed store, hashed with
/// a seeded foldhash). Shared
/// by a [`RateLimitLayer`], its clones and every [`RateLimit`] they build.
///
/// Memory stays bounded by the keys in use: every so often (see
/// [`RateLimitConfig::with_cleanup_every`]) keys whose state is indistinguishable from a
/// fresh key are dropped.
pub struct RateLimiter {
    limiter: Keyed,
    /// One call's share of the period: `per / count`.
    interval: Duration,
    /// Per key, the next free slot handed to a refused call (only touched on refusals).
    slots: parking_lot::Mutex<Slots>,
    key: KeyBy,
    jitter: Duration,
    origin: Instant,
    cleanup_every_nanos: u64,
    next_cleanup_nanos: AtomicU64,
}

struct Slots {
    next: HashMap<String, Instant, Hasher>,
    sweep_at: usize,
}

impl RateLimiter {
    /// A limiter with these settings (checked first).
    pub fn new(config: RateLimitConfig) -> Result<Self> {
        let quota = config.quota()?;
        let interval = quota.replenish_interval();
        let cleanup_every_nanos =
            u64::try_from(config.cleanup_every.as_nanos()).unwrap_or(u64::MAX);
        Ok(Self {
            limiter: governor::RateLimiter::dashmap_with_clock_and_hasher(
                quota,
                DefaultClock::default(),
                Hasher::default(),
            ),
            interval,
            slots: parking_lot::Mutex::new(Slots {
                next: HashMap::with_hasher(Hasher::default()),
                sweep_at: 1024,
            }),
            key: config.key,
            jitter: config.jitter,
            origin: Instant::now(),
            cleanup_every_nanos,
            next_cleanup_nanos: AtomicU64::new(cleanup_every_nanos),
        })
    }

    /// Take one call from `key`'s allowance: `Ok` if it may go now, or how long to wait.
    ///
    /// A refused call is given the key's next free slot: at least GCRA's wait, and one
    /// emission interval (`per / count`) after the slot given to the previous refused call.
    /// Callers refused together thus come back spread out, like a queue, instead of all at the
    /// same instant (where all but one would be refused again). Builds a `String` from `key`;
    /// the [`RateLimit`] wrapper does not.
    pub fn check(&self, key: &str) -> std::result::Result<(), Duration> {
        self.check_key(&key.to_owned())
    }

    #[allow(clippy::ptr_arg)] // governor's keyed store is searched with `&K`
    fn check_key(&self, key: &String) -> std::result::Result<(), Duration> {
        self.maybe_cleanup();
        match self.limiter.check_key(key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                Err(self.reserve(key, not_until.wait_time_from(self.limiter.clock().now())))
            }
        }
    }

    /// The delay until `key`'s next free slot, at least `wait` from now; takes the slot.
    #[cold]
    fn reserve(&self, key: &str, wait: Duration) -> Duration {
        let now = Instant::now();
        let earliest = now + wait;
        let mut slots = self.slots.lock();
        if slots.next.len() >= slots.sweep_at {
            slots.next.retain(|_, slot| *slot > now);
            slots.sweep_at = (slots.next.len() * 2).max(1024);
        }
        let at = match slots.next.get_mut(key) {
            Some(next) => {
                let at = (*next).max(earliest);
                *next = at + self.interval;
                at
            }
            None => {
                slots.next.insert(key.to_owned(), earliest + self.interval);
                earliest
            }
        };
        at.saturating_duration_since(now)
    }

    fn maybe_cleanup(&self) {
        if fastrand::u32(..CLEANUP_CHECK_ONE_IN) != 0 {
            return;
        }
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let due = self.next_cleanup_nanos.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_cleanup_nanos
                .compare_exchange(
                    due,
                    now.saturating_add(self.cleanup_every_nanos),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.retain_recent();
        }
    }

    /// Drop keys whose state is indistinguishable from a fresh key's, and give back memory.
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let now = Instant::now();
        let mut slots = self.slots.lock();
        slots.next.retain(|_, slot| *slot > now);
        slots.next.shrink_to_fit();
    }

    /// How many keys the limiter holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Whether the limiter holds no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("key", &self.key)
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

/// Builds [`RateLimit`]s over one shared [`RateLimiter`] (clones of the layer share it too).
///
/// ```
/// use jobforge::safety::{HandlerExt, RateLimitConfig, RateLimitLayer};
/// use jobforge::{handler_fn, JobContext, KindConfig};
///
/// let limit = RateLimitLayer::new(RateLimitConfig::per_second(50).with_burst(10))?;
/// let handler = handler_fn(|_ctx: JobContext| async { Ok(serde_json::Value::Null) })
///     .layer(limit.clone());
/// let config = KindConfig::new(handler);
/// # drop(config);
/// # Ok::<(), jobforge::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: Arc<RateLimiter>,
}

impl RateLimitLayer {
    /// A layer with a new limiter with these settings (checked first).
    pub fn new(config: RateLimitConfig) -> Result<Self> {
        Ok(Self {
            limiter: Arc::new(RateLimiter::new(config)?),
        })
    }

    /// The shared limiter.
    #[must_use]
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: Arc::clone(&self.limiter),
        }
    }
}

/// Lets a call through to the wrapped handler only within its key's rate; otherwise the job
/// is deferred (class `rate_limited`, attempt not spent) until the key's next free slot (see
/// [`RateLimiter::check`]), plus the configured jitter.
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<RateLimiter>,
}

impl<S> RateLimit<S> {
    /// The wrapped value.
    #[must_use]
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The shared limiter.
    #[must_use]
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }
}

#[async_trait]
impl<H: Handler> Handler for RateLimit<H> {
    async fn handle(&self, ctx: &JobContext) -> std::result::Result<Value, JobError> {
        let limiter = &self.limiter;
        let key = limiter.key.key_string(ctx);
        if let Err(wait) = limiter.check_key(&key) {
            let jitter = if limiter.jitter.is_zero() {
                Duration::ZERO
            } else {
                limiter.jitter.mul_f64(fastrand::f64())
            };
            let after = wait.max(Duration::from_millis(1)) + jitter;
            return Err(
                JobError::defer(after, format_args!("rate limit reached for {key}"))
                    .with_class("rate_limited"),
            );
        }
        self.inner.handle(ctx).await
    }
}
