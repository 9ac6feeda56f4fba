use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where a job is in its life. The transition rules live here, in
/// [`JobState::can_transition_to`], and every backend enforces them.
///
/// ```text
/// submit ──► Queued ──claim──► Running ──ok──► Succeeded
///              ▲                  │ ──permanent error / attempts spent──► Dead
///              └──retry / defer / release──┘
/// Queued | Running ──cancel──► Cancelled
/// Running (lease expired) ──claim by another worker──► Running
/// workflow step: Pending ──dependencies succeeded──► Queued
///                Pending ──a dependency failed──► Cancelled (or Succeeded: skipped)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// A workflow step waiting for its dependencies ([`crate::workflow`]): it becomes
    /// `Queued` in the same step that finishes its last dependency.
    Pending,
    /// Waiting to run (now or at its `run_at`).
    Queued,
    /// Held by a worker under a lease.
    Running,
    /// Finished with a result. Terminal.
    Succeeded,
    /// Failed for good: a permanent error, or attempts spent. Terminal.
    Dead,
    /// Cancelled before it finished. Terminal.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 6] = [
        JobState::Pending,
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// Whether the job has finished and will never change again.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }

    /// Whether a job in `self` may move to `next`.
    ///
    /// `Running → Running` is a lease takeover: another worker claims a job whose lease has
    /// expired (its worker died). Whether the lease really expired is the backend's check.
    /// `Pending → Succeeded` is a workflow step skipped (its policy when a dependency
    /// failed, [`OnDependencyFailure::Skip`](crate::workflow::OnDependencyFailure::Skip)).
    ///
    /// ```
    /// use jobforge::JobState::*;
    ///
    /// assert!(Queued.can_transition_to(Running));
    /// assert!(Running.can_transition_to(Queued)); // retry
    /// assert!(!Succeeded.can_transition_to(Queued)); // terminal
    /// assert!(!Queued.can_transition_to(Succeeded)); // must run first
    /// ```
    #[must_use]
    pub fn can_transition_to(self, next: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (Pending, Queued)
                | (Pending, Succeeded)
                | (Pending, Cancelled)
                | (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Running)
                | (Running, Queued)
                | (Running, Succeeded)
                | (Running, Dead)
                | (Running, Cancelled)
        )
    }

    /// The state's stable lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                Error::invalid_input(
                    "state",
                    format!(
                        "`{s}` is not a job state; expected one of pending, queued, running, succeeded, dead, cancelled"
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::JobState::{self, *};

    #[test]
    fn every_pair_of_states() {
        // The full table: rows are `from`, columns are `to` in JobState::ALL order.
        let table: [[bool; 6]; 6] = [
            // Pending Queued Running Succeeded Dead  Cancelled
            [false, true, false, true, false, true], // Pending
            [false, false, true, false, false, true], // Queued
            [false, true, true, true, true, true],   // Running
            [false, false, false, false, false, false], // Succeeded
            [false, false, false, false, false, false], // Dead
            [false, false, false, false, false, false], // Cancelled
        ];
        for (i, from) in JobState::ALL.into_iter().enumerate() {
            for (j, to) in JobState::ALL.into_iter().enumerate() {
                assert_eq!(from.can_transition_to(to), table[i][j], "{from} -> {to}");
            }
        }
    }

    #[test]
    fn terminal_states_have_no_way_out() {
        for from in JobState::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(JobState::ALL.iter().all(|to| !from.can_transition_to(*to)));
        }
        assert!(!Pending.is_terminal());
        assert!(!Queued.is_terminal());
        assert!(!Running.is_terminal());
    }

    #[test]
    fn parse_round_trip_and_error() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().ok(), Some(state));
        }
        let err = "done".parse::<JobState>().err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("state") && e.contains("done")));
    }
}
