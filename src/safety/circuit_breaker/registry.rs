use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::config::{CallOutcome, CircuitBreakerConfig, DroppedCall};
use super::core::{BreakerState, Change, Core, Grant, Record, Refusal, closed_grant};
use crate::Result;
use crate::safety::keyed_map::KeyedMap;

/// One breaker per key, with shared settings. Cheap to query; share it with `Arc`.
///
/// [`CircuitBreakerLayer`](super::CircuitBreakerLayer) makes one; use it directly to guard code
/// of your own:
///
/// ```
/// use jobforge::safety::{BreakerRegistry, BreakerState, CircuitBreakerConfig};
///
/// let breakers = BreakerRegistry::new(
///     CircuitBreakerConfig::default().with_minimum_calls(2).with_sliding_window(
///         jobforge::safety::SlidingWindow::count(2),
///     ),
/// )?;
/// for _ in 0..2 {
///     let permit = breakers.try_acquire("smtp").expect("closed");
///     permit.failure(); // the call failed
/// }
/// assert_eq!(breakers.state("smtp"), BreakerState::Open);
/// let refused = breakers.try_acquire("smtp").unwrap_err();
/// assert!(refused.retry_after > std::time::Duration::ZERO);
/// assert_eq!(breakers.state("other"), BreakerState::Closed);
/// # Ok::<(), jobforge::Error>(())
/// ```
pub struct BreakerRegistry {
    config: Arc<CircuitBreakerConfig>,
    breakers: KeyedMap<KeyBreaker>,
}

pub(crate) struct KeyBreaker {
    key: Box<str>,
    config: Arc<CircuitBreakerConfig>,
    /// `core.gate()` as of the last change: lets calls through a closed breaker without
    /// taking the lock.
    gate: AtomicU64,
    core: Mutex<Core>,
}

impl BreakerRegistry {
    /// Breakers with these settings (checked first).
    pub fn new(config: CircuitBreakerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config: Arc::new(config),
            breakers: KeyedMap::new(),
        })
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    pub(crate) fn breaker(&self, key: &str) -> Arc<KeyBreaker> {
        self.breakers.get_or_insert_with(
            key,
            |key| {
                let core = Core::new(&self.config, self.config.clock.instant());
                KeyBreaker {
                    key: key.into(),
                    config: Arc::clone(&self.config),
                    gate: AtomicU64::new(core.gate()),
                    core: Mutex::new(core),
                }
            },
            |b| Arc::strong_count(b) > 1 || !b.is_idle(self.config.idle_eviction),
        )
    }

    /// Ask to make a call under `key`: a [`Permit`] to record its outcome with, or why not.
    /// A key never seen before gets a closed breaker.
    pub fn try_acquire(&self, key: &str) -> std::result::Result<Permit, CallNotPermitted> {
        KeyBreaker::acquire(self.breaker(key)).map(Permit)
    }

    /// The state of the breaker for `key` (`Closed` for a key never seen). An open breaker
    /// whose wait is over is reported, and moved, to half-open.
    #[must_use]
    pub fn state(&self, key: &str) -> BreakerState {
        match self.breakers.get(key) {
            Some(breaker) => breaker.tick().0,
            None => BreakerState::Closed,
        }
    }

    /// A snapshot of the breaker for `key`, if it has been used.
    #[must_use]
    pub fn snapshot(&self, key: &str) -> Option<BreakerSnapshot> {
        self.breakers.get(key).map(|b| b.snapshot())
    }

    /// Snapshots of every breaker, by key.
    #[must_use]
    pub fn snapshot_all(&self) -> Vec<BreakerSnapshot> {
        let mut all: Vec<BreakerSnapshot> = self
            .breakers
            .entries()
            .iter()
            .map(|b| b.snapshot())
            .collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// Close the breaker for `key` and forget its window (an operator's override). Whether
    /// there was one.
    pub fn reset(&self, key: &str) -> bool {
        match self.breakers.get(key) {
            Some(breaker) => {
                let now = self.config.clock.instant();
                let change = {
                    let mut core = breaker.core.lock();
                    let change = core.reset(now);
                    breaker.gate.store(core.gate(), Ordering::Release);
                    change
                };
                if let Some(change) = change {
                    breaker.emit(change, now);
                }
                true
            }
            None => false,
        }
    }

    /// Forget closed breakers unused for `idle` with no call in flight. (The registry also
    /// does this by itself, with the configured idle time, as keys pile up.)
    pub fn evict_idle(&self, idle: Duration) {
        self.breakers
            .retain(|b| Arc::strong_count(b) > 1 || !b.is_idle(idle));
    }

    /// How many keys have a breaker.
    #[must_use]
    pub fn len(&self) -> usize {
        self.breakers.len()
    }

    /// Whether no key has a breaker yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for BreakerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerRegistry")
            .field("config", &self.config)
            .field("keys", &self.len())
            .finish()
    }
}

impl KeyBreaker {
    /// Ask to make a call. A closed breaker answers from its gate, without the lock.
    #[inline]
    pub(crate) fn acquire<B: Deref<Target = KeyBreaker>>(
        breaker: B,
    ) -> std::result::Result<PermitOn<B>, CallNotPermitted> {
        let now = breaker.config.clock.instant();
        let grant = match closed_grant(breaker.gate.load(Ordering::Acquire)) {
            Some(grant) => grant,
            None => breaker.acquire_slow(now)?,
        };
        Ok(PermitOn {
            breaker,
            grant,
            started: now,
            armed: true,
        })
    }

    #[cold]
    fn acquire_slow(&self, now: Instant) -> std::result::Result<Grant, CallNotPermitted> {
        let (result, change) = {
            let mut core = self.core.lock();
            let answer = core.acquire(&self.config, now);
            self.gate.store(core.gate(), Ordering::Release);
            answer
        };
        if let Some(change) = change {
            self.emit(change, now);
        }
        result.map_err(|Refusal { state, retry_after }| CallNotPermitted { state, retry_after })
    }

    fn tick(&self) -> (BreakerState, Option<Change>) {
        let now = self.config.clock.instant();
        let (state, change) = {
            let mut core = self.core.lock();
            let change = core.tick(&self.config, now);
            self.gate.store(core.gate(), Ordering::Release);
            (core.state(), change)
        };
        if let Some(change) = change {
            self.emit(change, now);
        }
        (state, change)
    }

    fn is_idle(&self, idle: Duration) -> bool {
        let now = self.config.clock.instant();
        self.core.lock().is_idle(now, idle)
    }

    fn snapshot(&self) -> BreakerSnapshot {
        self.tick();
        let now = self.config.clock.instant();
        let core = self.core.lock();
        let totals = core.totals(now);
        BreakerSnapshot {
            key: self.key.to_string(),
            state: core.state(),
            calls: totals.calls,
            failures: totals.failures,
            slow_calls: totals.slow,
            failure_rate: totals.failure_rate(),
            slow_call_rate: totals.slow_rate(),
            probes_in_flight: core.probes_out(),
            not_permitted: core.not_permitted(),
            dropped: core.dropped(),
            consecutive_opens: core.opens(),
            retry_after: core.retry_after(now),
        }
    }

    fn finish(&self, grant: Grant, record: Record, now: Instant) {
        let change = {
            let mut core = self.core.lock();
            let change = core.record(&self.config, grant, record, now);
            if change.is_some() {
                self.gate.store(core.gate(), Ordering::Release);
            }
            change
        };
        if let Some(change) = change {
            self.emit(change, now);
        }
    }

    fn emit(&self, change: Change, at: Instant) {
        let event = StateChange {
            key: self.key.to_string(),
            from: change.from,
            to: change.to,
            at,
            calls: change.totals.calls,
            failure_rate: change.totals.failure_rate(),
            slow_call_rate: change.totals.slow_rate(),
            open_for: change.open_for,
        };
        let (failure_rate, slow_call_rate) = (
            event.failure_rate.unwrap_or(0.0),
            event.slow_call_rate.unwrap_or(0.0),
        );
        match event.to {
            BreakerState::Open => tracing::warn!(
                breaker = %event.key,
                from = %event.from,
                calls = event.calls,
                failure_rate,
                slow_call_rate,
                open_for = ?event.open_for,
                "circuit breaker opened"
            ),
            BreakerState::HalfOpen => tracing::info!(
                breaker = %event.key,
                from = %event.from,
                "circuit breaker half-open: letting probe calls through"
            ),
            BreakerState::Closed => tracing::info!(
                breaker = %event.key,
                from = %event.from,
                calls = event.calls,
                failure_rate,
                slow_call_rate,
                "circuit breaker closed"
            ),
        }
        if let Some(listener) = &self.config.on_state_change {
            listener(&event);
        }
    }
}

/// A breaker's state change, as passed to
/// [`CircuitBreakerConfig::with_on_state_change`] (and logged through `tracing`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StateChange {
    /// The breaker's key.
    pub key: String,
    /// The state it left.
    pub from: BreakerState,
    /// The state it entered.
    pub to: BreakerState,
    /// When (by the breaker's clock).
    pub at: Instant,
    /// Calls the decision was made on (the window's, or the probes').
    pub calls: u32,
    /// Their failure rate, in percent.
    pub failure_rate: Option<f64>,
    /// Their slow-call rate, in percent.
    pub slow_call_rate: Option<f64>,
    /// For a change to `Open`: how long it stays open.
    pub open_for: Option<Duration>,
}

/// What a breaker looks like now.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The key.
    pub key: String,
    /// The state.
    pub state: BreakerState,
    /// Calls recorded: in the window (closed, open), or probes finished (half-open).
    pub calls: u32,
    /// How many of them failed.
    pub failures: u32,
    /// How many of them were slow.
    pub slow_calls: u32,
    /// Failures as a percentage of calls (`None` without calls).
    pub failure_rate: Option<f64>,
    /// Slow calls as a percentage of calls (`None` without calls).
    pub slow_call_rate: Option<f64>,
    /// Half-open probe calls let through and not finished yet.
    pub probes_in_flight: u32,
    /// Calls refused since the breaker was made.
    pub not_permitted: u64,
    /// Permits dropped without an outcome (cancelled calls) since the breaker was made.
    pub dropped: u64,
    /// Consecutive openings without a close in between (drives the growing open wait).
    pub consecutive_opens: u32,
    /// While open: how long until probes are let through.
    pub retry_after: Option<Duration>,
}

/// A call refused by an open breaker, or by a half-open one whose probe permits are all out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallNotPermitted {
    /// The breaker's state.
    pub state: BreakerState,
    /// When to try again: the rest of the open wait, or the configured half-open retry delay.
    pub retry_after: Duration,
}

impl CallNotPermitted {
    /// `circuit open for <key>` (or `circuit half-open for <key>: every probe permit is out`).
    #[must_use]
    pub fn message(&self, key: &str) -> String {
        match self.state {
            BreakerState::HalfOpen => {
                format!("circuit half-open for {key}: every probe permit is out")
            }
            _ => format!("circuit open for {key}"),
        }
    }
}

impl fmt::Display for CallNotPermitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state {
            BreakerState::HalfOpen => {
                f.write_str("circuit half-open, every probe permit is out")?
            }
            _ => f.write_str("circuit open")?,
        }
        write!(f, "; retry after {:?}", self.retry_after)
    }
}

impl std::error::Error for CallNotPermitted {}

/// Leave to make one call: record how it went with [`success`](Permit::success),
/// [`failure`](Permit::failure), [`ignore`](Permit::ignore) or [`record`](Permit::record).
///
/// A permit dropped without an outcome (its call was cancelled) counts as the configured
/// [`DroppedCall`]: by default it is not counted, and a half-open probe permit is given back.
/// The duration of the call, for the slow-call rate, runs from the acquisition to the record.
#[must_use = "a permit records nothing until its outcome is given; dropping it counts as a cancelled call"]
pub struct Permit(PermitOn<Arc<KeyBreaker>>);

/// A permit on a breaker held any way: owned by a [`Permit`], or borrowed by a wrapper that
/// keeps the breaker alive for the call (no reference count to touch).
pub(crate) struct PermitOn<B: Deref<Target = KeyBreaker>> {
    breaker: B,
    grant: Grant,
    started: Instant,
    armed: bool,
}

impl<B: Deref<Target = KeyBreaker>> PermitOn<B> {
    pub(crate) fn is_probe(&self) -> bool {
        self.grant.probe
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.breaker
            .config
            .clock
            .instant()
            .saturating_duration_since(self.started)
    }

    /// Record the outcome, timed from the acquisition unless `took` is given.
    pub(crate) fn record(mut self, outcome: CallOutcome, took: Option<Duration>) {
        self.armed = false;
        let config = &self.breaker.config;
        let now = config.clock.instant();
        let took = took.unwrap_or_else(|| now.saturating_duration_since(self.started));
        let slow = took >= config.slow_call_duration;
        let record = match outcome {
            CallOutcome::Success => Record::Call {
                failure: false,
                slow,
            },
            CallOutcome::Failure => Record::Call {
                failure: true,
                slow,
            },
            CallOutcome::Ignored => Record::Ignored,
        };
        self.breaker.finish(self.grant, record, now);
    }
}

impl<B: Deref<Target = KeyBreaker>> Drop for PermitOn<B> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let config = &self.breaker.config;
        let now = config.clock.instant();
        let record = match config.dropped {
            DroppedCall::Ignore => Record::Dropped,
            DroppedCall::Failure => Record::DroppedFailure {
                slow: now.saturating_duration_since(self.started) >= config.slow_call_duration,
            },
        };
        self.breaker.finish(self.grant, record, now);
    }
}

impl Permit {
    /// The breaker's key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.0.breaker.key
    }

    /// Whether this is a half-open probe.
    #[must_use]
    pub fn is_probe(&self) -> bool {
        self.0.is_probe()
    }

    /// How long since the permit was given.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }

    /// The call succeeded.
    pub fn success(self) {
        self.record(CallOutcome::Success);
    }

    /// The call failed.
    pub fn failure(self) {
        self.record(CallOutcome::Failure);
    }

    /// The call's outcome says nothing about the downstream: do not count it.
    pub fn ignore(self) {
        self.record(CallOutcome::Ignored);
    }

    /// Record the outcome, timing the call from the permit's acquisition.
    pub fn record(self, outcome: CallOutcome) {
        self.0.record(outcome, None);
    }

    /// Record the outcome with a duration of your own (for instance without a long poll's
    /// deliberate wait).
    pub fn record_with_duration(self, outcome: CallOutcome, took: Duration) {
        self.0.record(outcome, Some(took));
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("key", &self.key())
            .field("probe", &self.is_probe())
            .finish_non_exhaustive()
    }
}
