//! Statistics and recommendations from execution history. (Filled in by the memory work.)

use std::time::Duration;

use super::types::{ExecutionRecord, Recommendation, Reflection, StrategyChoice};

/// Latency percentiles of a set of executions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    /// Median.
    pub p50: Option<Duration>,
    /// 95th percentile.
    pub p95: Option<Duration>,
    /// 99th percentile.
    pub p99: Option<Duration>,
}

/// Reflect on the executions of `kind` (already cut to the window).
#[must_use]
pub fn reflect_on(kind: &str, runs: &[&ExecutionRecord]) -> Reflection {
    Reflection {
        kind: kind.to_owned(),
        count: runs.len() as u64,
        succeeded: 0,
        retried: 0,
        failed: 0,
        deferred: 0,
        cancelled: 0,
        success_rate: None,
        deferred_rate: None,
        p50: None,
        p95: None,
        p99: None,
        retry_rescue_rate: None,
        top_errors: Vec::new(),
        recommendation: Recommendation {
            strategy: StrategyChoice::Direct,
            timeout: None,
            max_attempts: 1,
            inline_retries: 0,
            hedge_delay: None,
            confident: false,
            rationale: String::new(),
        },
    }
}
