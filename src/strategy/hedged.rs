use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;

use super::attempt::{attempt, describe, fmt_duration};
use super::cache::{CacheConfig, ReflectionCache};
use super::{Outcome, Strategy};
use crate::handler::{Handler, JobContext};
use crate::memory::Window;

/// A second attempt when the first is slow; the first success wins. **Only for idempotent
/// kinds.**
///
/// The job starts as usual. If it has not finished after the *hedge delay*, a second attempt
/// starts beside it, on its own [child context](JobContext::child). The first attempt to
/// *succeed* wins: the other one's token is cancelled and its future dropped. If the first to
/// finish fails, the other one is awaited; if both fail, the first attempt's outcome is
/// returned (the decision records both).
///
/// **The hedge delay** is, in order: the delay set with [`Hedged::with_delay`]; else the
/// kind's observed p95 latency from
/// [`Memory::reflect`](crate::Memory::reflect)`(kind, Window::Last(500))` once at least
/// [`with_min_history`](Hedged::with_min_history) executions (default 20) are known; else the
/// fallback delay (default 250 ms, [`Hedged::with_fallback_delay`]). Reflections are cached per
/// kind and refreshed in the background every 30 s ([`Hedged::with_refresh_interval`]), never
/// asked per job.
///
/// **Idempotency rule.** Running a job twice at once is only harmless when its kind says so
/// ([`KindConfig::idempotent`](crate::KindConfig::idempotent), seen as
/// [`JobContext::is_idempotent`]). For any other kind `Hedged` refuses to hedge: it runs the
/// handler exactly once, like [`Direct`](super::Direct), records the decision
/// `hedging refused: kind not idempotent`, and logs a warning once per kind. It does not fail
/// the job: a misconfiguration should cost latency, not work.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use jobforge::strategy::Hedged;
/// use jobforge::{handler_fn, JobContext, KindConfig, Orchestrator};
///
/// let lookup = handler_fn(|_ctx: JobContext| async { Ok(serde_json::json!({"price": 42})) });
/// let orchestrator = Orchestrator::builder()
///     .kind("price.lookup", KindConfig::new(lookup).idempotent(true).strategy("hedged"))
///     .strategy(Arc::new(Hedged::new().with_fallback_delay(Duration::from_millis(100))))
///     .build()?;
/// # drop(orchestrator);
/// # Ok::<(), jobforge::Error>(())
/// ```
#[derive(Debug)]
pub struct Hedged {
    name: String,
    delay: Option<Duration>,
    fallback_delay: Duration,
    min_history: u64,
    cache: ReflectionCache,
    warned: parking_lot::Mutex<HashSet<String>>,
}

impl Default for Hedged {
    fn default() -> Self {
        Self::new()
    }
}

impl Hedged {
    /// The name it is registered under unless renamed with [`Hedged::with_name`].
    pub const NAME: &'static str = "hedged";

    /// Hedge after the kind's observed p95, or 250 ms without enough history.
    #[must_use]
    pub fn new() -> Self {
        Self {
            name: Self::NAME.to_owned(),
            delay: None,
            fallback_delay: Duration::from_millis(250),
            min_history: 20,
            cache: ReflectionCache::new(CacheConfig::default()),
            warned: parking_lot::Mutex::new(HashSet::new()),
        }
    }

    /// Register under another name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Always hedge after `delay`, whatever the history says (memory is then never asked).
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// The delay when the kind has too little history for a p95 (default 250 ms).
    #[must_use]
    pub fn with_fallback_delay(mut self, delay: Duration) -> Self {
        self.fallback_delay = delay;
        self
    }

    /// Executions the reflection must have seen before its p95 is trusted (default 20).
    #[must_use]
    pub fn with_min_history(mut self, executions: u64) -> Self {
        self.min_history = executions;
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

    /// The hedge delay for this job, and where it came from.
    async fn delay_for(&self, ctx: &JobContext) -> (Duration, &'static str) {
        if let Some(delay) = self.delay {
            return (delay, "configured");
        }
        let p95 = self
            .cache
            .get(ctx)
            .await
            .filter(|r| r.count >= self.min_history)
            .and_then(|r| r.p95);
        match p95 {
            Some(p95) => (p95, "observed p95"),
            None => (self.fallback_delay, "fallback, too little history"),
        }
    }
}

#[async_trait]
impl Strategy for Hedged {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, ctx: &JobContext, handler: &dyn Handler) -> Outcome {
        if !ctx.is_idempotent() {
            warn_not_idempotent(&self.warned, ctx.kind(), &self.name);
            let outcome = attempt(ctx, handler, None).await;
            ctx.set_decision(format!(
                "{}: hedging refused: kind not idempotent; ran once: {}",
                self.name,
                describe(&outcome)
            ));
            return outcome;
        }
        let (delay, source) = self.delay_for(ctx).await;
        let (outcome, report) = hedge(ctx, handler, delay, None, None).await;
        ctx.set_decision(format!(
            "{}: hedge delay {} ({source}); {report}",
            self.name,
            fmt_duration(delay)
        ));
        outcome
    }
}

/// Log, once per kind and strategy instance, that a kind was not hedged for want of
/// idempotency.
pub(super) fn warn_not_idempotent(
    warned: &parking_lot::Mutex<HashSet<String>>,
    kind: &str,
    strategy: &str,
) {
    let mut warned = warned.lock();
    if !warned.contains(kind) {
        warned.insert(kind.to_owned());
        tracing::warn!(
            kind,
            strategy,
            "hedging refused: the kind is not marked idempotent, so it runs once; mark it with KindConfig::idempotent(true) if running it twice at once is harmless"
        );
    }
}

/// How a hedged run went.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum HedgeReport {
    /// The first attempt finished before the delay.
    NotNeeded(String),
    /// The job was cancelled before the delay passed; no hedge started.
    Skipped(String),
    /// The delay passed but the kind's hedge budget was spent; no hedge started.
    OverBudget(String),
    /// Both ran; the first attempt succeeded first.
    PrimaryWon,
    /// Both ran; the hedge succeeded first.
    HedgeWon,
    /// Both ran and both failed.
    BothFailed { primary: String, hedge: String },
}

impl HedgeReport {
    pub(super) fn hedged(&self) -> bool {
        !matches!(
            self,
            HedgeReport::NotNeeded(_) | HedgeReport::Skipped(_) | HedgeReport::OverBudget(_)
        )
    }
}

impl std::fmt::Display for HedgeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HedgeReport::NotNeeded(outcome) => {
                write!(f, "first attempt finished before the delay: {outcome}")
            }
            HedgeReport::Skipped(outcome) => {
                write!(f, "cancelled before the delay; not hedged: {outcome}")
            }
            HedgeReport::OverBudget(outcome) => {
                write!(f, "hedge budget spent; not hedged: {outcome}")
            }
            HedgeReport::PrimaryWon => f.write_str("hedged; first attempt won"),
            HedgeReport::HedgeWon => f.write_str("hedged; hedge won"),
            HedgeReport::BothFailed { primary, hedge } => {
                write!(f, "hedged; both failed (first: {primary}; hedge: {hedge})")
            }
        }
    }
}

/// Run `handler`, and a second time beside it if the first has not finished after `delay`
/// (and `may_hedge`, if given, allows it then: a hedge budget). Each attempt runs on its own
/// child context, under `timeout` if set.
pub(super) async fn hedge(
    ctx: &JobContext,
    handler: &dyn Handler,
    delay: Duration,
    timeout: Option<Duration>,
    may_hedge: Option<&(dyn Fn() -> bool + Sync)>,
) -> (Outcome, HedgeReport) {
    let first_ctx = ctx.child();
    let first = attempt(&first_ctx, handler, timeout);
    tokio::pin!(first);
    tokio::select! {
        biased;
        outcome = &mut first => {
            let report = HedgeReport::NotNeeded(describe(&outcome));
            return (outcome, report);
        }
        () = tokio::time::sleep(delay) => {}
    }
    if ctx.is_cancelled() {
        let outcome = first.await;
        let report = HedgeReport::Skipped(describe(&outcome));
        return (outcome, report);
    }
    if may_hedge.is_some_and(|may| !may()) {
        let outcome = first.await;
        let report = HedgeReport::OverBudget(describe(&outcome));
        return (outcome, report);
    }
    let second_ctx = ctx.child();
    let second = attempt(&second_ctx, handler, timeout);
    tokio::pin!(second);
    tokio::select! {
        biased;
        outcome = &mut first => {
            if outcome.is_success() {
                second_ctx.cancellation_token().cancel();
                return (outcome, HedgeReport::PrimaryWon);
            }
            let other = second.await;
            if other.is_success() {
                return (other, HedgeReport::HedgeWon);
            }
            let report = HedgeReport::BothFailed { primary: describe(&outcome), hedge: describe(&other) };
            (outcome, report)
        }
        other = &mut second => {
            if other.is_success() {
                first_ctx.cancellation_token().cancel();
                return (other, HedgeReport::HedgeWon);
            }
            let outcome = first.await;
            if outcome.is_success() {
                return (outcome, HedgeReport::PrimaryWon);
            }
            let report = HedgeReport::BothFailed { primary: describe(&outcome), hedge: describe(&other) };
            (outcome, report)
        }
    }
}
