use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::attempt::{attempt, describe};
use super::{Outcome, Strategy};
use crate::handler::{Handler, JobContext};

/// The kind's own handler first, then its alternates in order, until one succeeds.
///
/// For kinds with more than one way to do the work (a second provider, a degraded path, a
/// cache). Alternates are registered per kind; kinds without alternates run like
/// [`Direct`](super::Direct).
///
/// **When an alternate is tried**: after a *retryable or permanent* failure of the handler
/// before it (a different implementation may well accept what the first refused). Use
/// [`Fallback::only_on_retryable`] to try alternates after transient failures only.
/// A deferral or a cancellation is returned at once, as is; nothing more is tried once the
/// job is cancelled.
///
/// **When every handler fails**: the outcome is an [`Outcome::Retry`] (the last retryable
/// error) if any handler failed retryably, since a later delivery may succeed; otherwise the
/// last permanent [`Outcome::Failed`].
///
/// The decision recorded with the execution says which handler succeeded (`primary`,
/// `alternate 1`, ...) and how each one before it failed.
///
/// ```
/// use std::sync::Arc;
/// use jobforge::strategy::Fallback;
/// use jobforge::{handler_fn, JobContext, JobError, KindConfig, Orchestrator};
/// use serde_json::json;
///
/// let primary = handler_fn(|_ctx: JobContext| async { Err(JobError::retryable("provider A down")) });
/// let backup = handler_fn(|_ctx: JobContext| async { Ok(json!("sent via B")) });
///
/// let orchestrator = Orchestrator::builder()
///     .kind("sms.send", KindConfig::new(primary).strategy("fallback"))
///     .strategy(Arc::new(Fallback::new().alternates("sms.send", vec![backup])))
///     .build()?;
/// # drop(orchestrator);
/// # Ok::<(), jobforge::Error>(())
/// ```
#[derive(Clone)]
pub struct Fallback {
    name: String,
    alternates: HashMap<String, Vec<Arc<dyn Handler>>>,
    on_permanent: bool,
}

impl Default for Fallback {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<(&str, usize)> = self
            .alternates
            .iter()
            .map(|(kind, handlers)| (kind.as_str(), handlers.len()))
            .collect();
        kinds.sort_unstable();
        f.debug_struct("Fallback")
            .field("name", &self.name)
            .field("alternates", &kinds)
            .field("on_permanent", &self.on_permanent)
            .finish()
    }
}

impl Fallback {
    /// The name it is registered under unless renamed with [`Fallback::with_name`].
    pub const NAME: &'static str = "fallback";

    /// No alternates yet; tries them after retryable and permanent failures.
    #[must_use]
    pub fn new() -> Self {
        Self {
            name: Self::NAME.to_owned(),
            alternates: HashMap::new(),
            on_permanent: true,
        }
    }

    /// Register under another name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Handlers to try, in order, when the handler of `kind` fails. Calling it again for the
    /// same kind appends.
    #[must_use]
    pub fn alternates(
        mut self,
        kind: impl Into<String>,
        handlers: impl IntoIterator<Item = Arc<dyn Handler>>,
    ) -> Self {
        self.alternates
            .entry(kind.into())
            .or_default()
            .extend(handlers);
        self
    }

    /// Try alternates only after retryable failures; a permanent failure is returned as is.
    #[must_use]
    pub fn only_on_retryable(mut self) -> Self {
        self.on_permanent = false;
        self
    }

    /// The alternates registered for `kind`.
    #[must_use]
    pub fn alternates_for(&self, kind: &str) -> &[Arc<dyn Handler>] {
        self.alternates.get(kind).map_or(&[], Vec::as_slice)
    }

    fn falls_through(&self, outcome: &Outcome) -> bool {
        match outcome {
            Outcome::Retry { .. } => true,
            Outcome::Failed(_) => self.on_permanent,
            Outcome::Succeeded(_) | Outcome::Deferred { .. } | Outcome::Cancelled(_) => false,
        }
    }
}

fn label(index: usize) -> String {
    if index == 0 {
        "primary".to_owned()
    } else {
        format!("alternate {index}")
    }
}

#[async_trait]
impl Strategy for Fallback {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, ctx: &JobContext, handler: &dyn Handler) -> Outcome {
        let alternates = self.alternates_for(ctx.kind());
        let handlers = std::iter::once(handler).chain(alternates.iter().map(|h| h.as_ref()));
        let mut trail: Vec<String> = Vec::new();
        let mut last_retry: Option<Outcome> = None;
        let mut last: Option<Outcome> = None;
        for (index, current) in handlers.enumerate() {
            if index > 0 && ctx.is_cancelled() {
                trail.push("job cancelled; no more alternates".to_owned());
                break;
            }
            let outcome = attempt(ctx, current, None).await;
            if !self.falls_through(&outcome) {
                trail.push(format!("{} {}", label(index), describe(&outcome)));
                ctx.set_decision(format!("{}: {}", self.name, trail.join("; ")));
                return outcome;
            }
            trail.push(format!("{} failed: {}", label(index), describe(&outcome)));
            if matches!(outcome, Outcome::Retry { .. }) {
                last_retry = Some(outcome.clone());
            }
            last = Some(outcome);
        }
        let outcome = match (last_retry, last) {
            (Some(retry), _) => retry,
            (None, Some(last)) => last,
            // Unreachable in practice: the primary always runs.
            (None, None) => Outcome::Cancelled("cancelled before any handler ran".to_owned()),
        };
        let alternates_note = if alternates.is_empty() {
            "no alternates for this kind"
        } else {
            "every handler failed"
        };
        ctx.set_decision(format!(
            "{}: {}; {alternates_note}",
            self.name,
            trail.join("; ")
        ));
        outcome
    }
}
