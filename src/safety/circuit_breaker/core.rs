//! The state machine of one breaker, free of locks and clocks: every method takes `now`.

use std::fmt;
use std::time::{Duration, Instant};

use super::config::CircuitBreakerConfig;
use super::window::{Totals, Window};

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; their outcomes are recorded in the sliding window.
    Closed,
    /// Calls are refused until the open wait ends.
    Open,
    /// A limited number of probe calls go through; their outcomes decide between closing and
    /// re-opening.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change, with the figures that caused it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Change {
    pub(crate) from: BreakerState,
    pub(crate) to: BreakerState,
    pub(crate) totals: Totals,
    /// For a change to `Open`: how long it stays open.
    pub(crate) open_for: Option<Duration>,
}

/// A call let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) epoch: u64,
    pub(crate) probe: bool,
}

/// A call refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) state: BreakerState,
    pub(crate) retry_after: Duration,
}

/// How a finished call is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    /// Counted: failed or not, slow or not.
    Call { failure: bool, slow: bool },
    /// Not counted (ignored outcome).
    Ignored,
    /// Not counted: the permit was dropped without an outcome.
    Dropped,
    /// The permit was dropped without an outcome, counted as a failure.
    DroppedFailure { slow: bool },
}

pub(crate) struct Core {
    state: BreakerState,
    /// Bumped on every state change: outcomes of calls let through in an earlier state are
    /// not counted in the new one.
    epoch: u64,
    window: Window,
    /// Consecutive openings without a close in between (1 after the first).
    opens: u32,
    open_until: Instant,
    half_open_since: Instant,
    /// Probe permits out or recorded in this half-open period.
    probes_taken: u32,
    probe_totals: Totals,
    not_permitted: u64,
    dropped: u64,
    last_used: Instant,
}

impl Core {
    pub(crate) fn new(config: &CircuitBreakerConfig, now: Instant) -> Self {
        Self {
            state: BreakerState::Closed,
            epoch: 0,
            window: Window::new(config.window, now),
            opens: 0,
            open_until: now,
            half_open_since: now,
            probes_taken: 0,
            probe_totals: Totals::default(),
            not_permitted: 0,
            dropped: 0,
            last_used: now,
        }
    }

    /// Ask to make a call.
    pub(crate) fn acquire(
        &mut self,
        config: &CircuitBreakerConfig,
        now: Instant,
    ) -> (Result<Grant, Refusal>, Option<Change>) {
        self.last_used = now;
        let mut change = self.tick(config, now);
        let result = match self.state {
            BreakerState::Closed => Ok(Grant {
                epoch: self.epoch,
                probe: false,
            }),
            BreakerState::Open => Err(Refusal {
                state: BreakerState::Open,
                retry_after: self.open_until.saturating_duration_since(now),
            }),
            BreakerState::HalfOpen => {
                if self.probes_taken < config.permitted_in_half_open {
                    self.probes_taken += 1;
                    Ok(Grant {
                        epoch: self.epoch,
                        probe: true,
                    })
                } else if config
                    .max_wait_in_half_open
                    .is_some_and(|max| now.saturating_duration_since(self.half_open_since) >= max)
                {
                    // The probes are taking too long: give up on them and open again.
                    change = Some(self.open(config, now, self.probe_totals));
                    Err(Refusal {
                        state: BreakerState::Open,
                        retry_after: self.open_until.saturating_duration_since(now),
                    })
                } else {
                    Err(Refusal {
                        state: BreakerState::HalfOpen,
                        retry_after: config.half_open_retry_after,
                    })
                }
            }
        };
        if result.is_err() {
            self.not_permitted = self.not_permitted.saturating_add(1);
        }
        (result, change)
    }

    /// Apply the passage of time: an open breaker whose wait is over is half-open.
    pub(crate) fn tick(&mut self, _config: &CircuitBreakerConfig, now: Instant) -> Option<Change> {
        if self.state == BreakerState::Open && now >= self.open_until {
            let totals = self.window.totals(now);
            self.enter(BreakerState::HalfOpen);
            self.half_open_since = now;
            self.probes_taken = 0;
            self.probe_totals = Totals::default();
            return Some(Change {
                from: BreakerState::Open,
                to: BreakerState::HalfOpen,
                totals,
                open_for: None,
            });
        }
        None
    }

    /// Record the outcome of a call let through with `grant`.
    pub(crate) fn record(
        &mut self,
        config: &CircuitBreakerConfig,
        grant: Grant,
        record: Record,
        now: Instant,
    ) -> Option<Change> {
        let record = match record {
            Record::Dropped => {
                self.dropped = self.dropped.saturating_add(1);
                Record::Dropped
            }
            Record::DroppedFailure { slow } => {
                self.dropped = self.dropped.saturating_add(1);
                Record::Call {
                    failure: true,
                    slow,
                }
            }
            other => other,
        };
        self.last_used = now;
        if grant.epoch != self.epoch {
            // Let through in an earlier state: it says nothing about this one.
            return None;
        }
        match (self.state, record) {
            (BreakerState::Closed, Record::Call { failure, slow }) => {
                let totals = self.window.record(now, failure, slow);
                if totals.calls >= config.effective_minimum_calls() && exceeds(config, totals) {
                    return Some(self.open(config, now, totals));
                }
                None
            }
            (BreakerState::HalfOpen, Record::Call { failure, slow }) if grant.probe => {
                let mut totals = self.probe_totals;
                totals.calls += 1;
                totals.failures += u32::from(failure);
                totals.slow += u32::from(slow);
                self.probe_totals = totals;
                if totals.calls < config.permitted_in_half_open {
                    return None;
                }
                if exceeds(config, totals) {
                    Some(self.open(config, now, totals))
                } else {
                    self.enter(BreakerState::Closed);
                    self.opens = 0;
                    self.window.reset(now);
                    Some(Change {
                        from: BreakerState::HalfOpen,
                        to: BreakerState::Closed,
                        totals,
                        open_for: None,
                    })
                }
            }
            (BreakerState::HalfOpen, Record::Ignored | Record::Dropped) if grant.probe => {
                // The probe decided nothing: give its permit back.
                self.probes_taken = self.probes_taken.saturating_sub(1);
                None
            }
            _ => None,
        }
    }

    /// Back to closed with an empty window, as if new.
    pub(crate) fn reset(&mut self, now: Instant) -> Option<Change> {
        let from = self.state;
        let totals = self.window.totals(now);
        self.enter(BreakerState::Closed);
        self.opens = 0;
        self.window.reset(now);
        self.probes_taken = 0;
        self.probe_totals = Totals::default();
        (from != BreakerState::Closed).then_some(Change {
            from,
            to: BreakerState::Closed,
            totals,
            open_for: None,
        })
    }

    fn open(&mut self, config: &CircuitBreakerConfig, now: Instant, totals: Totals) -> Change {
        let from = self.state;
        self.enter(BreakerState::Open);
        self.opens = self.opens.saturating_add(1);
        let wait = config.open_wait(self.opens);
        self.open_until = now + wait;
        Change {
            from,
            to: BreakerState::Open,
            totals,
            open_for: Some(wait),
        }
    }

    fn enter(&mut self, state: BreakerState) {
        self.state = state;
        self.epoch = self.epoch.wrapping_add(1) & EPOCH_MASK;
    }

    /// State and epoch in one word, published for the lock-free closed-state fast path.
    pub(crate) fn gate(&self) -> u64 {
        (self.epoch << 2) | state_code(self.state)
    }

    pub(crate) fn state(&self) -> BreakerState {
        self.state
    }

    /// The figures a snapshot reports: the window's while closed or open, the probes' while
    /// half-open.
    pub(crate) fn totals(&self, now: Instant) -> Totals {
        match self.state {
            BreakerState::HalfOpen => self.probe_totals,
            _ => self.window.totals(now),
        }
    }

    pub(crate) fn retry_after(&self, now: Instant) -> Option<Duration> {
        (self.state == BreakerState::Open).then(|| self.open_until.saturating_duration_since(now))
    }

    pub(crate) fn opens(&self) -> u32 {
        self.opens
    }

    pub(crate) fn probes_out(&self) -> u32 {
        self.probes_taken.saturating_sub(self.probe_totals.calls)
    }

    pub(crate) fn not_permitted(&self) -> u64 {
        self.not_permitted
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// A closed breaker unused since `idle` ago.
    pub(crate) fn is_idle(&self, now: Instant, idle: Duration) -> bool {
        self.state == BreakerState::Closed && now.saturating_duration_since(self.last_used) >= idle
    }
}

const EPOCH_MASK: u64 = u64::MAX >> 2;
const CLOSED: u64 = 0;

fn state_code(state: BreakerState) -> u64 {
    match state {
        BreakerState::Closed => CLOSED,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
    }
}

/// A call let through on the fast path, if `gate` says the breaker is closed.
#[inline]
pub(crate) fn closed_grant(gate: u64) -> Option<Grant> {
    (gate & 3 == CLOSED).then_some(Grant {
        epoch: gate >> 2,
        probe: false,
    })
}

fn exceeds(config: &CircuitBreakerConfig, totals: Totals) -> bool {
    // `part / calls * 100 >= threshold`, without dividing.
    let calls = f64::from(totals.calls);
    totals.calls > 0
        && (f64::from(totals.failures) * 100.0 >= config.failure_rate_threshold * calls
            || f64::from(totals.slow) * 100.0 >= config.slow_call_rate_threshold * calls)
}
