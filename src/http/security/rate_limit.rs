//! Per-client rate limits for the HTTP API: GCRA (`governor`), keyed by client address and by
//! principal, with bounded memory.
//!
//! Answers carry the IETF draft's header fields (draft-ietf-httpapi-ratelimit-headers, the
//! `-07` form with one field per value), on allowed and refused requests alike:
//!
//! | header | value |
//! |---|---|
//! | `RateLimit-Limit` | the burst: requests allowed at once |
//! | `RateLimit-Remaining` | requests still allowed now |
//! | `RateLimit-Reset` | seconds until the allowance is full again (refused: until the next request may go) |
//! | `RateLimit-Policy` | `<burst>;w=<seconds to refill the burst>` |
//! | `Retry-After` | refused only: whole seconds to wait, rounded up |

use std::fmt;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use parking_lot::RwLock;

use super::problem::problem;
use crate::{Error, Result};

/// `RateLimit-Limit`.
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`.
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`.
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
/// `RateLimit-Policy`.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// How often (in checks) a limiter drops keys whose state is back to that of a fresh key.
const SWEEP_EVERY_CHECKS: u64 = 4096;

/// One quota: `requests` per `per`, with bursts of up to `burst`.
///
/// Parsed from `<n>/s`, `<n>/min` or `<n>/h`, with an optional `:<burst>` (the burst defaults
/// to `n`):
///
/// ```
/// use std::time::Duration;
/// use jobforge::http::security::RateQuota;
///
/// let q: RateQuota = "600/min:50".parse()?;
/// assert_eq!(q, RateQuota::per_minute(600).with_burst(50));
/// assert_eq!(q.to_string(), "600/min:50");
/// assert_eq!(q.interval(), Duration::from_millis(100));
/// assert!("0/s".parse::<RateQuota>().is_err());
/// # Ok::<(), jobforge::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateQuota {
    /// Requests allowed per period, on average.
    pub requests: u32,
    /// The period.
    pub per: Duration,
    /// Requests allowed at once.
    pub burst: u32,
}

impl RateQuota {
    /// `n` requests a second, bursts of `n`.
    #[must_use]
    pub const fn per_second(n: u32) -> Self {
        Self {
            requests: n,
            per: Duration::from_secs(1),
            burst: n,
        }
    }

    /// `n` requests a minute, bursts of `n`.
    #[must_use]
    pub const fn per_minute(n: u32) -> Self {
        Self {
            requests: n,
            per: Duration::from_secs(60),
            burst: n,
        }
    }

    /// Set the burst.
    #[must_use]
    pub const fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// The time one request's allowance takes to come back: `per / requests`.
    #[must_use]
    pub fn interval(&self) -> Duration {
        self.per / self.requests.max(1)
    }

    /// Check the quota; the error names the offending part.
    pub fn validate(&self) -> Result<()> {
        self.governor().map(|_| ())
    }

    fn governor(&self) -> Result<Quota> {
        let burst = NonZeroU32::new(self.burst)
            .ok_or_else(|| Error::invalid_input("rate limit burst", "must be at least 1"))?;
        if self.requests == 0 {
            return Err(Error::invalid_input(
                "rate limit",
                "must allow at least 1 request per period",
            ));
        }
        Quota::with_period(self.interval())
            .map(|q| q.allow_burst(burst))
            .ok_or_else(|| {
                Error::invalid_input(
                    "rate limit",
                    format!("{self} is too fast: one request per less than a nanosecond"),
                )
            })
    }

    fn refill_secs(&self) -> u64 {
        ceil_secs(self.interval().saturating_mul(self.burst))
    }
}

impl fmt::Display for RateQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per {
            p if p == Duration::from_secs(1) => "s".to_owned(),
            p if p == Duration::from_secs(60) => "min".to_owned(),
            p if p == Duration::from_secs(3600) => "h".to_owned(),
            p => format!("{p:?}"),
        };
        write!(f, "{}/{unit}", self.requests)?;
        if self.burst != self.requests {
            write!(f, ":{}", self.burst)?;
        }
        Ok(())
    }
}

impl FromStr for RateQuota {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid_input(
                "rate limit",
                format!(
                    "{s:?}: expected <n>/s, <n>/min or <n>/h, optionally :<burst>, like 50/s:100"
                ),
            )
        };
        let (rate, burst) = match s.trim().split_once(':') {
            Some((rate, burst)) => (rate, Some(burst.trim().parse::<u32>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let (n, unit) = rate.split_once('/').ok_or_else(bad)?;
        let requests: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let quota = Self {
            requests,
            per,
            burst: burst.unwrap_or(requests),
        };
        quota.validate()?;
        Ok(quota)
    }
}

/// The quotas of the HTTP API.
///
/// Every request counts against its client address's `per_ip` quota (before authentication,
/// so credential guessing is limited too). An authenticated request also counts against its
/// principal's quota for the tier of the route: `read`, `write` or `admin` (see
/// [`Scope::tier`](super::Scope::tier)); each tier is a separate allowance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Per client address (IPv6: per /64). Default 50/s, bursts of 100.
    pub per_ip: RateQuota,
    /// Per principal, read routes. Default 100/s, bursts of 200.
    pub read: RateQuota,
    /// Per principal, write routes. Default 20/s, bursts of 40.
    pub write: RateQuota,
    /// Per principal, admin routes. Default 5/s, bursts of 10.
    pub admin: RateQuota,
    /// The most clients (or principals) each limiter keeps state for; past it, idle clients
    /// are dropped and, if that is not enough, the limiter starts afresh. Default 100,000.
    pub max_tracked_keys: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_ip: RateQuota::per_second(50).with_burst(100),
            read: RateQuota::per_second(100).with_burst(200),
            write: RateQuota::per_second(20).with_burst(40),
            admin: RateQuota::per_second(5).with_burst(10),
            max_tracked_keys: 100_000,
        }
    }
}

impl RateLimits {
    /// Check every quota and the key cap.
    pub fn validate(&self) -> Result<()> {
        for q in [self.per_ip, self.read, self.write, self.admin] {
            q.validate()?;
        }
        if self.max_tracked_keys < 16 {
            return Err(Error::invalid_input(
                "rate limit max tracked keys",
                "must be at least 16",
            ));
        }
        Ok(())
    }
}

type Limiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// What a limiter said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// The request may go.
    Allowed {
        /// The burst size.
        limit: u32,
        /// Requests still allowed now.
        remaining: u32,
        /// Until the allowance is full again.
        reset: Duration,
        /// Seconds to refill the burst (the policy window).
        window_secs: u64,
    },
    /// The request is over the limit.
    Refused {
        /// The burst size.
        limit: u32,
        /// Until the next request may go.
        retry_after: Duration,
        /// Seconds to refill the burst (the policy window).
        window_secs: u64,
    },
}

impl RateDecision {
    /// Whether the request may go.
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        matches!(self, RateDecision::Allowed { .. })
    }

    /// Write the `RateLimit-*` fields (and, refused, `Retry-After`) into `headers`, keeping any
    /// already there (the more specific limiter's, set first).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let (limit, remaining, reset, window) = match *self {
            RateDecision::Allowed {
                limit,
                remaining,
                reset,
                window_secs,
            } => (limit, remaining, ceil_secs(reset), window_secs),
            RateDecision::Refused {
                limit,
                retry_after,
                window_secs,
            } => {
                let secs = ceil_secs(retry_after).max(1);
                set_if_absent(headers, header::RETRY_AFTER, secs.to_string());
                (limit, 0, secs, window_secs)
            }
        };
        set_if_absent(headers, RATELIMIT_LIMIT, limit.to_string());
        set_if_absent(headers, RATELIMIT_REMAINING, remaining.to_string());
        set_if_absent(headers, RATELIMIT_RESET, reset.to_string());
        set_if_absent(headers, RATELIMIT_POLICY, format!("{limit};w={window}"));
    }

    /// The `429` problem+json answer for a refusal (with its headers); `None` when allowed.
    #[must_use]
    pub fn refusal(&self, who: &str) -> Option<Response> {
        let RateDecision::Refused { retry_after, .. } = self else {
            return None;
        };
        let secs = ceil_secs(*retry_after).max(1);
        let mut response = problem(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too Many Requests",
            &format!("too many requests from this {who}; retry after {secs} s"),
        );
        self.write_headers(response.headers_mut());
        Some(response)
    }
}

fn set_if_absent(headers: &mut HeaderMap, name: HeaderName, value: String) {
    if headers.contains_key(&name) {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A keyed GCRA limiter whose memory stays bounded however many distinct keys it sees.
///
/// Every 4096 checks, keys whose state is back to a fresh key's are dropped. A check that
/// finds `max_keys` keys tracked sweeps at once; if the sweep leaves more than three quarters
/// of the cap (a flood of distinct clients all active within their window), the limiter
/// starts afresh: every client's allowance is full again. That is the price of a hard bound
/// on memory, and it is logged at `warn`.
///
/// ```
/// use jobforge::http::security::{KeyedLimiter, RateQuota};
///
/// let limiter = KeyedLimiter::new(RateQuota::per_second(1).with_burst(2), 1000)?;
/// assert!(limiter.check(&"a").is_allowed());
/// assert!(limiter.check(&"a").is_allowed());
/// assert!(!limiter.check(&"a").is_allowed());
/// assert!(limiter.check(&"b").is_allowed());
/// # Ok::<(), jobforge::Error>(())
/// ```
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    current: RwLock<Arc<Limiter<K>>>,
    quota: RateQuota,
    governor_quota: Quota,
    max_keys: usize,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// A limiter with this quota, tracking at most `max_keys` keys.
    pub fn new(quota: RateQuota, max_keys: usize) -> Result<Self> {
        let governor_quota = quota.governor()?;
        Ok(Self {
            current: RwLock::new(Arc::new(Self::fresh(governor_quota))),
            quota,
            governor_quota,
            max_keys: max_keys.max(1),
            checks: AtomicU64::new(0),
        })
    }

    fn fresh(quota: Quota) -> Limiter<K> {
        RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>()
    }

    /// Take one request from `key`'s allowance.
    pub fn check(&self, key: &K) -> RateDecision {
        let mut limiter = self.current.read().clone();
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        if limiter.len() >= self.max_keys {
            self.make_room();
            limiter = self.current.read().clone();
        } else if n % SWEEP_EVERY_CHECKS == SWEEP_EVERY_CHECKS - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let window_secs = self.quota.refill_secs();
        let limit = self.quota.burst;
        match limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                RateDecision::Allowed {
                    limit,
                    remaining,
                    reset: self
                        .quota
                        .interval()
                        .saturating_mul(limit.saturating_sub(remaining)),
                    window_secs,
                }
            }
            Err(not_until) => RateDecision::Refused {
                limit,
                retry_after: not_until.wait_time_from(limiter.clock().now()),
                window_secs,
            },
        }
    }

    #[cold]
    fn make_room(&self) {
        let mut current = self.current.write();
        if current.len() < self.max_keys {
            return; // another thread made room meanwhile
        }
        current.retain_recent();
        current.shrink_to_fit();
        if current.len() > self.max_keys / 4 * 3 {
            tracing::warn!(
                tracked = current.len(),
                max = self.max_keys,
                "rate limiter full of active clients; starting afresh to bound its memory"
            );
            *current = Arc::new(Self::fresh(self.governor_quota));
        }
    }

    /// How many keys are tracked now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.current.read().len()
    }

    /// Whether no key is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The quota.
    #[must_use]
    pub fn quota(&self) -> RateQuota {
        self.quota
    }
}

impl<K: Hash + Eq + Clone> fmt::Debug for KeyedLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("quota", &self.quota)
            .field("tracked", &self.len())
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    #[test]
    fn quotas_parse() {
        assert_eq!(
            "50/s".parse::<RateQuota>().ok(),
            Some(RateQuota::per_second(50))
        );
        assert_eq!(
            "50/s:100".parse::<RateQuota>().ok(),
            Some(RateQuota::per_second(50).with_burst(100))
        );
        assert_eq!(
            "10/h".parse::<RateQuota>().map(|q| q.per).ok(),
            Some(Duration::from_secs(3600))
        );
        for bad in ["", "50", "50/d", "x/s", "5/s:0", "5/s:x", "0/min"] {
            assert!(bad.parse::<RateQuota>().is_err(), "{bad}");
        }
        assert_eq!(RateQuota::per_second(5).to_string(), "5/s");
        assert!(RateLimits::default().validate().is_ok());
    }

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limiter = KeyedLimiter::new(RateQuota::per_minute(60).with_burst(3), 100).unwrap();
        let mut remaining = Vec::new();
        for _ in 0..3 {
            match limiter.check(&1u32) {
                RateDecision::Allowed { remaining: r, .. } => remaining.push(r),
                refused => panic!("{refused:?}"),
            }
        }
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check(&1u32);
        let RateDecision::Refused { retry_after, .. } = refused else {
            panic!("{refused:?}")
        };
        assert!(retry_after <= Duration::from_secs(1) && retry_after > Duration::from_millis(900));
        let response = refused.refusal("client").unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = response.headers();
        assert_eq!(h.get(header::RETRY_AFTER).unwrap(), "1");
        assert_eq!(h.get(RATELIMIT_LIMIT).unwrap(), "3");
        assert_eq!(h.get(RATELIMIT_REMAINING).unwrap(), "0");
        assert_eq!(h.get(RATELIMIT_POLICY).unwrap(), "3;w=3");
        // Another key is unaffected.
        assert!(limiter.check(&2u32).is_allowed());
    }

    #[test]
    fn memory_stays_bounded_under_many_clients() {
        let cap = 10_000;
        let limiter = KeyedLimiter::new(RateQuota::per_second(1), cap).unwrap();
        let mut max_seen = 0;
        for i in 0..100_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            limiter.check(&ip);
            max_seen = max_seen.max(limiter.len());
        }
        assert!(max_seen <= cap, "tracked {max_seen} keys, cap {cap}");
        assert!(limiter.len() <= cap);
    }

    #[test]
    fn idle_keys_are_swept() {
        let limiter = KeyedLimiter::new(RateQuota::per_second(1000), 100).unwrap();
        for i in 0..50u32 {
            limiter.check(&i);
        }
        assert_eq!(limiter.len(), 50);
        std::thread::sleep(Duration::from_millis(20));
        // Reaching the cap sweeps the idle keys instead of starting afresh.
        for i in 50..150u32 {
            limiter.check(&i);
        }
        assert!(limiter.len() <= 100);
    }
}
