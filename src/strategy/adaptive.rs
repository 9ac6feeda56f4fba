use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::attempt::{attempt, describe, fmt_duration};
use super::cache::{CacheConfig, ReflectionCache};
use super::hedged::{HedgeReport, hedge, warn_not_idempotent};
use super::inline_retry::{Pause, retry_inline};
use super::{Direct, Outcome, Strategy};
use crate::handler::{Handler, JobContext, JobError};
use crate::memory::{Reflection, StrategyChoice, Window};

/// Chooses and tunes the other strategies per kind from its history
/// ([`Memory::reflect`](crate::Memory::reflect)).
///
/// For each job, `Adaptive` looks up its kind's [`Reflection`] in a per-kind cache (loaded on
/// the kind's first job, refreshed in the background every 30 s or, if set, every *M*
/// executions; never a memory round trip per job) and turns its
/// [`Recommendation`](crate::memory::Recommendation) into a [`AdaptivePlan`]:
///
/// | recommendation field | what `Adaptive` does with it |
/// |---|---|
/// | `confident == false` (or no reflection) | runs the **base strategy** ([`Direct`] unless set with [`Adaptive::with_base`]) unchanged |
/// | `timeout` | deadline of **each attempt** (`tokio::time::timeout`, ending in a retryable [`JobError::timeout`]); floored at 10 ms |
/// | `inline_retries` | in-process retries of retryable errors, as [`InlineRetry`](super::InlineRetry) does; capped at 3 |
/// | `strategy == Hedged` + `hedge_delay` (else `p95`) | **hedges** each attempt after that delay, *only if the kind is idempotent*; otherwise runs once and notes the refusal |
/// | `max_attempts` | not acted on by default (a job's stored attempts cannot change); with [`Adaptive::fail_fast`], see below |
/// | `no_retry_classes` | a failure of one of these error classes (retries never rescued it) is returned as permanent at once: per class, so the kind's other failures keep their retries ([`Adaptive::class_fail_fast`]; one job in ten still retries, to keep learning) |
/// | `rationale` | copied into the decision recorded with the execution |
///
/// The kind's (or job's) own timeout still bounds the whole delivery, retries and hedges
/// included; the recommended timeout bounds each attempt within it.
///
/// **Fail fast (opt-in).** With [`Adaptive::fail_fast`]`(true)`, when the confident
/// recommendation says `max_attempts == 1` *and* the reflection saw failures
/// (`retry_rescue_rate` is `Some`, so retries were tried and did not rescue them), a delivery
/// that still ends retryable is returned as a permanent [`Outcome::Failed`] (class kept,
/// message marked), instead of spending the job's remaining queue attempts. Off by default:
/// a new kind of transient failure the history has not seen would otherwise be dead-lettered
/// at once.
///
/// Every execution records its decision via [`JobContext::set_decision`]: the settings used,
/// what happened (inline retries used, which hedge attempt won) and the recommendation's
/// rationale.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use jobforge::strategy::{Adaptive, InlineRetry};
/// use jobforge::Orchestrator;
///
/// let orchestrator = Orchestrator::builder()
///     // Until history is confident, fall back to two quick inline retries.
///     .strategy(Arc::new(Adaptive::new().with_base(Arc::new(InlineRetry::new(2)))))
///     .default_strategy("adaptive")
///     .build()?;
/// assert_eq!(orchestrator.strategies(), vec!["adaptive", "direct"]);
/// # Ok::<(), jobforge::Error>(())
/// ```
pub struct Adaptive {
    name: String,
    base: Arc<dyn Strategy>,
    cache: ReflectionCache,
    pause: Pause,
    max_inline_retries: u32,
    min_timeout: Duration,
    fail_fast: bool,
    class_fail_fast: bool,
    hedge_budget: f64,
    /// Per kind: attempts and hedges, decayed (see [`Adaptive::with_hedge_budget`]).
    budgets: parking_lot::Mutex<HashMap<String, HedgeSpend>>,
    /// Per kind: the latest plan, to notice when its shape changes.
    last_plans: parking_lot::Mutex<HashMap<String, AdaptivePlan>>,
    warned: parking_lot::Mutex<HashSet<String>>,
}

impl fmt::Debug for Adaptive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adaptive")
            .field("name", &self.name)
            .field("base", &self.base.name())
            .field("cache", &self.cache)
            .field("pause", &self.pause)
            .field("max_inline_retries", &self.max_inline_retries)
            .field("min_timeout", &self.min_timeout)
            .field("fail_fast", &self.fail_fast)
            .field("class_fail_fast", &self.class_fail_fast)
            .field("hedge_budget", &self.hedge_budget)
            .finish_non_exhaustive()
    }
}

impl Default for Adaptive {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`Adaptive`] does for one job of a kind, given the kind's reflection
/// (see [`Adaptive::plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdaptivePlan {
    /// Run the base strategy: there is no confident recommendation.
    Base {
        /// Why (no reflection, or not confident, with the count seen).
        reason: String,
    },
    /// Run with settings taken from the recommendation.
    Tuned(Tuning),
}

/// The settings [`Adaptive`] runs a confidently-understood kind with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tuning {
    /// Deadline of each attempt.
    pub timeout: Option<Duration>,
    /// In-process retries of retryable errors.
    pub inline_retries: u32,
    /// Hedge each attempt after this delay.
    pub hedge_delay: Option<Duration>,
    /// Hedging was recommended but the kind is not idempotent, so it is not done.
    pub hedge_refused: bool,
    /// A retryable failure is returned as permanent (see [`Adaptive::fail_fast`]).
    pub fail_fast: bool,
    /// Error classes retries have never rescued: a failure of one of them is returned as
    /// permanent at once, neither retried in process nor given back to the queue
    /// ([`Recommendation::no_retry_classes`](crate::memory::Recommendation::no_retry_classes)).
    pub no_retry_classes: Vec<String>,
}

impl AdaptivePlan {
    /// Whether `other` does the same as this plan, numbers aside (see `shape`).
    fn same_shape(&self, other: &AdaptivePlan) -> bool {
        match (self, other) {
            (AdaptivePlan::Base { .. }, AdaptivePlan::Base { .. }) => true,
            (AdaptivePlan::Tuned(a), AdaptivePlan::Tuned(b)) => {
                a.hedge_delay.is_some() == b.hedge_delay.is_some()
                    && a.inline_retries == b.inline_retries
                    && a.fail_fast == b.fail_fast
                    && a.no_retry_classes == b.no_retry_classes
            }
            _ => false,
        }
    }

    /// What the plan does, without its numbers (which move with every refresh): whether
    /// it runs the base strategy, hedges, retries in process, and which classes fail fast.
    fn shape(&self, base: &str) -> String {
        let t = match self {
            AdaptivePlan::Base { .. } => return format!("base strategy `{base}`"),
            AdaptivePlan::Tuned(t) => t,
        };
        let mut parts = vec![
            if t.hedge_delay.is_some() {
                "hedge".to_owned()
            } else {
                "no hedge".to_owned()
            },
            match t.inline_retries {
                0 => "no inline retries".to_owned(),
                n => format!("{n} inline retries"),
            },
        ];
        if t.fail_fast {
            parts.push("fail fast".to_owned());
        }
        if !t.no_retry_classes.is_empty() {
            parts.push(format!("no retry of {}", t.no_retry_classes.join(", ")));
        }
        parts.join("; ")
    }
}

impl fmt::Display for Tuning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.timeout {
            Some(t) => write!(f, "timeout {}/attempt", fmt_duration(t))?,
            None => f.write_str("no timeout")?,
        }
        match self.inline_retries {
            0 => f.write_str(", no inline retries")?,
            n => write!(f, ", up to {n} inline retries")?,
        }
        match (self.hedge_delay, self.hedge_refused) {
            (Some(d), _) => write!(f, ", hedge after {}", fmt_duration(d))?,
            (None, true) => f.write_str(", hedging refused: kind not idempotent")?,
            (None, false) => f.write_str(", no hedge")?,
        }
        if self.fail_fast {
            f.write_str(", fail fast")?;
        }
        if !self.no_retry_classes.is_empty() {
            write!(f, ", no retry of {}", self.no_retry_classes.join(", "))?;
        }
        Ok(())
    }
}

/// Hedges allowed beyond the budget's share, so a kind's first slow attempts can be hedged
/// before it has many attempts to its name (see [`Adaptive::with_hedge_budget`]).
pub const HEDGE_RESERVE: f64 = 2.0;

/// The hedge budget is kept over about this many of a kind's latest attempts: both counts
/// decay by `1 − 1/HEDGE_BUDGET_WINDOW` per attempt.
pub const HEDGE_BUDGET_WINDOW: u32 = 1_000;

const HEDGE_DECAY: f64 = 1.0 - 1.0 / HEDGE_BUDGET_WINDOW as f64;

/// A kind's recent attempts and hedges, decayed per attempt.
#[derive(Debug, Default, Clone, Copy)]
struct HedgeSpend {
    attempts: f64,
    hedges: f64,
}

/// A change of what [`Adaptive`] does for a kind, recorded in the memory (see
/// [`Adaptive::last_change`]) and shown by `GET /v1/kinds/{kind}/reflection`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct DecisionChange {
    /// When it changed.
    pub at: chrono::DateTime<chrono::Utc>,
    /// What it did before, in short (for example `hedge; no inline retries`).
    pub from: String,
    /// What it does now.
    pub to: String,
    /// Why: the rationale of the recommendation it follows now, with its numbers.
    pub why: String,
    /// Executions the new decision was drawn from.
    pub executions: u64,
}

fn hopeless_class(plan: &Tuning, error: &JobError) -> bool {
    plan.no_retry_classes.iter().any(|c| c == error.class())
}

/// One job in this many keeps retrying the classes retries never rescued (see
/// [`Tuning::no_retry_classes`]).
const EXPLORE: u128 = 10;

impl Adaptive {
    /// The name it is registered under unless renamed with [`Adaptive::with_name`].
    pub const NAME: &'static str = "adaptive";

    /// The memory namespace its decision changes are recorded in, one entry per kind.
    pub const CHANGES_NAMESPACE: &'static str = "jobforge.adaptive";

    /// [`Direct`] until confident; reflections over the latest 500 executions, refreshed every
    /// 30 s; at most 3 inline retries, 10–50 ms apart; timeouts no shorter than 10 ms; no fail
    /// fast.
    #[must_use]
    pub fn new() -> Self {
        Self {
            name: Self::NAME.to_owned(),
            base: Arc::new(Direct),
            cache: ReflectionCache::new(CacheConfig {
                drift: true,
                ..CacheConfig::default()
            }),
            pause: Pause::default(),
            max_inline_retries: 3,
            min_timeout: Duration::from_millis(10),
            fail_fast: false,
            class_fail_fast: true,
            hedge_budget: 0.1,
            budgets: parking_lot::Mutex::new(HashMap::new()),
            last_plans: parking_lot::Mutex::new(HashMap::new()),
            warned: parking_lot::Mutex::new(HashSet::new()),
        }
    }

    /// Register under another name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The strategy to run while the recommendation is not confident (default [`Direct`]).
    #[must_use]
    pub fn with_base(mut self, base: Arc<dyn Strategy>) -> Self {
        self.base = base;
        self
    }

    /// The window of history to reflect on (default the latest 500 executions).
    #[must_use]
    pub fn with_window(mut self, window: Window) -> Self {
        self.cache.config.window = window;
        self
    }

    /// Ask the memory again after this long (default 30 s).
    #[must_use]
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        self.cache.config.interval = interval;
        self
    }

    /// Also ask the memory again after this many executions of a kind (default: only by
    /// time).
    #[must_use]
    pub fn with_refresh_after_runs(mut self, executions: u64) -> Self {
        self.cache.config.after_runs = Some(executions.max(1));
        self
    }

    /// The most inline retries made, whatever is recommended (default 3).
    #[must_use]
    pub fn with_max_inline_retries(mut self, retries: u32) -> Self {
        self.max_inline_retries = retries;
        self
    }

    /// The pause before an inline retry: `delay` plus a uniform `0..=jitter` (default 10 ms
    /// + 40 ms).
    #[must_use]
    pub fn with_inline_pause(mut self, delay: Duration, jitter: Duration) -> Self {
        self.pause = Pause { delay, jitter };
        self
    }

    /// The shortest per-attempt timeout applied, whatever is recommended (default 10 ms).
    #[must_use]
    pub fn with_min_timeout(mut self, min: Duration) -> Self {
        self.min_timeout = min;
        self
    }

    /// Return a retryable failure as permanent when the history says retries do not help
    /// (default off; see the [type docs](Adaptive)).
    #[must_use]
    pub fn fail_fast(mut self, enabled: bool) -> Self {
        self.fail_fast = enabled;
        self
    }

    /// Fail at once the error classes retries have never rescued
    /// ([`Recommendation::no_retry_classes`](crate::memory::Recommendation::no_retry_classes);
    /// on by default): a failure of such a class is returned as permanent instead of retried
    /// in process or given back to the queue, except in one job of ten, which keeps retrying
    /// so the history can show a class being rescued again.
    #[must_use]
    pub fn class_fail_fast(mut self, enabled: bool) -> Self {
        self.class_fail_fast = enabled;
        self
    }

    /// Hedges cost at most this share of extra calls per kind (default 0.1: 10%), whatever
    /// the recommendation: over the kind's latest [`HEDGE_BUDGET_WINDOW`] or so attempts
    /// (counts decay, so old spending is forgotten and idle time earns nothing), a hedge
    /// starts only while hedges stay within `budget ×` attempts, plus a reserve of
    /// [`HEDGE_RESERVE`] for a kind's first attempts. Past the budget an attempt that
    /// outlives the hedge delay is left to finish alone, and its decision says so. `0.0`
    /// hedges only the reserve; values are clamped to `0.0..=1.0`.
    #[must_use]
    pub fn with_hedge_budget(mut self, budget: f64) -> Self {
        self.hedge_budget = if budget.is_nan() {
            0.0
        } else {
            budget.clamp(0.0, 1.0)
        };
        self
    }

    /// The latest change of what `Adaptive` does for `kind`, as any process running it
    /// recorded it in `memory` (namespace [`Adaptive::CHANGES_NAMESPACE`], key the kind);
    /// `None` before the first change.
    ///
    /// # Errors
    /// What the memory returns on a failed read; an entry that does not parse is
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend).
    pub async fn last_change(
        memory: &dyn crate::Memory,
        kind: &str,
    ) -> crate::Result<Option<DecisionChange>> {
        let Some(entry) = memory.get(Self::CHANGES_NAMESPACE, kind).await? else {
            return Ok(None);
        };
        serde_json::from_value(entry.value).map(Some).map_err(|e| {
            crate::Error::new(
                crate::ErrorKind::Backend,
                format!(
                    "the memory entry {}/{kind} is not a decision change ({e}); delete it, \
                     the next change rewrites it",
                    Self::CHANGES_NAMESPACE
                ),
            )
        })
    }

    /// Start a hedge for `kind` if its budget allows one now (its attempt was counted first,
    /// by `count_attempt`).
    fn spend_hedge(&self, kind: &str) -> bool {
        let mut budgets = self.budgets.lock();
        let Some(spend) = budgets.get_mut(kind) else {
            return false;
        };
        if spend.hedges + 1.0 <= self.hedge_budget * spend.attempts + HEDGE_RESERVE {
            spend.hedges += 1.0;
            true
        } else {
            false
        }
    }

    /// Count an attempt of `kind` that may be hedged.
    fn count_attempt(&self, kind: &str) {
        let mut budgets = self.budgets.lock();
        if let Some(spend) = budgets.get_mut(kind) {
            spend.attempts = spend.attempts * HEDGE_DECAY + 1.0;
            spend.hedges *= HEDGE_DECAY;
        } else {
            budgets.insert(
                kind.to_owned(),
                HedgeSpend {
                    attempts: 1.0,
                    hedges: 0.0,
                },
            );
        }
    }

    /// Note the plan for `kind`; when its shape differs from the previous one this process
    /// ran, record the change in the memory (in the background).
    fn note_plan(&self, ctx: &JobContext, plan: &AdaptivePlan, reflection: Option<&Reflection>) {
        // Compared field by field: nothing is allocated unless the shape changed.
        let previous = {
            let mut last = self.last_plans.lock();
            match last.get_mut(ctx.kind()) {
                Some(previous) if previous.same_shape(plan) => return,
                Some(previous) => Some(std::mem::replace(previous, plan.clone())),
                None => {
                    last.insert(ctx.kind().to_owned(), plan.clone());
                    None
                }
            }
        };
        let Some(previous) = previous else { return };
        let change = DecisionChange {
            at: chrono::Utc::now(),
            from: previous.shape(self.base.name()),
            to: plan.shape(self.base.name()),
            why: match plan {
                AdaptivePlan::Base { reason } => reason.clone(),
                AdaptivePlan::Tuned(_) => reflection
                    .map(|r| r.recommendation.rationale.clone())
                    .unwrap_or_default(),
            },
            executions: reflection.map_or(0, |r| r.count),
        };
        tracing::info!(kind = ctx.kind(), from = %change.from, to = %change.to, why = %change.why, "adaptive changed its decision");
        let Ok(value) = serde_json::to_value(&change) else {
            return;
        };
        let ctx = ctx.clone();
        let write = async move {
            let entry = crate::memory::NewEntry::new(Self::CHANGES_NAMESPACE, ctx.kind(), value);
            if let Err(err) = ctx.memory().put(entry).await {
                tracing::warn!(kind = ctx.kind(), error = %err, "could not record adaptive's decision change");
            }
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(write);
        }
    }

    /// What this strategy does for a job of a kind with `reflection`, whose kind is
    /// `idempotent` or not. Pure: it is what [`Strategy::run`] follows, offered to inspect
    /// and test the choice.
    ///
    /// ```
    /// use jobforge::strategy::{Adaptive, AdaptivePlan};
    ///
    /// // Without history, the base strategy runs.
    /// assert!(matches!(Adaptive::new().plan(None, true), AdaptivePlan::Base { .. }));
    /// ```
    #[must_use]
    pub fn plan(&self, reflection: Option<&Reflection>, idempotent: bool) -> AdaptivePlan {
        let Some(reflection) = reflection else {
            return AdaptivePlan::Base {
                reason: "no reflection available".to_owned(),
            };
        };
        let rec = &reflection.recommendation;
        if !rec.confident {
            return AdaptivePlan::Base {
                reason: format!(
                    "recommendation not confident ({} executions seen)",
                    reflection.count
                ),
            };
        }
        let wants_hedge = rec.strategy == StrategyChoice::Hedged;
        let hedge_delay = rec.hedge_delay.or(reflection.p95);
        AdaptivePlan::Tuned(Tuning {
            timeout: rec.timeout.map(|t| t.max(self.min_timeout)),
            inline_retries: rec.inline_retries.min(self.max_inline_retries),
            hedge_delay: hedge_delay.filter(|_| wants_hedge && idempotent),
            hedge_refused: wants_hedge && !idempotent,
            fail_fast: self.fail_fast
                && rec.max_attempts <= 1
                && reflection.retry_rescue_rate.is_some(),
            no_retry_classes: if self.class_fail_fast {
                rec.no_retry_classes.clone()
            } else {
                Vec::new()
            },
        })
    }

    async fn run_base(&self, ctx: &JobContext, handler: &dyn Handler, reason: &str) -> Outcome {
        let outcome = self.base.run(ctx, handler).await;
        let inner = ctx.decision().map(|d| format!("; {d}")).unwrap_or_default();
        ctx.set_decision(format!(
            "{}: base strategy `{}` ({reason}): {}{inner}",
            self.name,
            self.base.name(),
            describe(&outcome)
        ));
        outcome
    }
}

#[async_trait]
impl Strategy for Adaptive {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, ctx: &JobContext, handler: &dyn Handler) -> Outcome {
        let reflection = self.cache.get(ctx).await;
        let plan = self.plan(reflection.as_deref(), ctx.is_idempotent());
        self.note_plan(ctx, &plan, reflection.as_deref());
        let tuning = match plan {
            AdaptivePlan::Base { reason } => return self.run_base(ctx, handler, &reason).await,
            AdaptivePlan::Tuned(tuning) => tuning,
        };
        if tuning.hedge_refused {
            warn_not_idempotent(&self.warned, ctx.kind(), &self.name);
        }
        let hedges = AtomicU32::new(0);
        let last_hedge: parking_lot::Mutex<Option<HedgeReport>> = parking_lot::Mutex::new(None);
        let kind = ctx.kind();
        let may_hedge = || self.spend_hedge(kind);
        let (hedges, last_hedge, plan, may_hedge) = (&hedges, &last_hedge, &tuning, &may_hedge);
        // One job in EXPLORE keeps retrying even the classes retries never rescued, so the
        // history keeps telling whether they still cannot be (a class that starts being
        // rescued leaves the list). It retries them through the queue only, with its backoff:
        // enough to tell, without a burst of in-process calls on top.
        let explore = ctx.id().as_uuid().as_u128() % EXPLORE == 0;
        let worth = |outcome: &Outcome| !matches!(outcome, Outcome::Retry { error, .. } if hopeless_class(plan, error));
        let (outcome, used) = retry_inline(
            ctx,
            tuning.inline_retries,
            self.pause,
            worth,
            || async move {
                let outcome = match plan.hedge_delay {
                    Some(delay) => {
                        self.count_attempt(kind);
                        let (outcome, report) =
                            hedge(ctx, handler, delay, plan.timeout, Some(may_hedge)).await;
                        if report.hedged() {
                            hedges.fetch_add(1, Ordering::Relaxed);
                        }
                        *last_hedge.lock() = Some(report);
                        outcome
                    }
                    None => attempt(ctx, handler, plan.timeout).await,
                };
                match outcome {
                    Outcome::Retry { error, .. } if !explore && hopeless_class(plan, &error) => {
                        Outcome::Failed(
                            JobError::permanent(format!(
                                "{} (adaptive: retries have never rescued class `{}` of this kind)",
                                error.message(),
                                error.class()
                            ))
                            .with_class(error.class().to_owned()),
                        )
                    }
                    other => other,
                }
            },
        )
        .await;
        let outcome = match outcome {
            Outcome::Retry { error, .. } if tuning.fail_fast => Outcome::Failed(
                JobError::permanent(format!(
                    "{} (adaptive fail-fast: retries have not rescued failures of this kind)",
                    error.message()
                ))
                .with_class(error.class().to_owned()),
            ),
            other => other,
        };
        let mut ran = Vec::new();
        if tuning.hedge_delay.is_some() {
            ran.push(format!(
                "hedge budget {:.0}% extra calls",
                self.hedge_budget * 100.0
            ));
        }
        if tuning.inline_retries > 0 {
            ran.push(format!("{used} inline retries used"));
        }
        if let Some(report) = last_hedge.lock().take() {
            if used == 0 {
                ran.push(report.to_string());
            } else {
                ran.push(format!(
                    "{} of {} attempts hedged; last: {report}",
                    hedges.load(Ordering::Relaxed),
                    used + 1
                ));
            }
        }
        let ran = if ran.is_empty() {
            String::new()
        } else {
            format!(" ({})", ran.join(", "))
        };
        let rationale = reflection
            .as_deref()
            .map(|r| r.recommendation.rationale.trim())
            .filter(|r| !r.is_empty())
            .map(|r| format!("; why: {r}"))
            .unwrap_or_default();
        ctx.set_decision(format!(
            "{}: {tuning}{ran}: {}{rationale}",
            self.name,
            describe(&outcome)
        ));
        outcome
    }
}
