//! Workflows: jobs that depend on jobs, with fan-out, fan-in and outputs.
//!
//! A [`Workflow`] is a named graph of steps, each step a job ([`NewJob`](crate::NewJob)) that runs once
//! every step it comes [`after`](Step::after) has succeeded. The whole graph is submitted at
//! once ([`Orchestrator::submit_workflow`](crate::JobOrchestrator::submit_workflow)): every step
//! is stored or none is, and a cycle, a step of another workflow or an empty workflow is
//! refused with an error that names the step. A step with dependencies waits in
//! [`JobState::Pending`](crate::JobState::Pending); the store makes it `Queued` in the same
//! step (lock, transaction) that finishes its last dependency, so a crash can neither leave
//! a ready step pending nor start it twice. A handler reads its dependencies' results with
//! [`JobContext::dependency`](crate::JobContext::dependency).
//!
//! When a dependency ends `Dead` or `Cancelled`, each step after it follows its
//! [`OnDependencyFailure`] policy: cancelled (the default), skipped (it ends `Succeeded` with
//! no result, and the steps after it go on), or run anyway.
//!
//! ```
//! use jobforge::NewJob;
//! use jobforge::workflow::Workflow;
//!
//! let wf = Workflow::new("order-42");
//! let charge = wf.add(NewJob::new("charge"));
//! let ship = wf.add(NewJob::new("ship")).after(&charge);
//! let email = wf.add(NewJob::new("email")).after(&charge);
//! let labels = wf.add_many((0..3).map(|i| NewJob::new("label").payload(&i))).after(&ship);
//! wf.add(NewJob::new("close")).after((&email, &labels));
//! assert_eq!(wf.len(), 7);
//! ```

mod graph;
mod status;

use serde::{Deserialize, Serialize};

use crate::job::JobId;

pub use graph::{Dependencies, MAX_STEPS, Step, Steps, Workflow};
pub use status::{WorkflowStatus, WorkflowStep};

/// A workflow's id: the id it was submitted under, shared by all its steps.
pub type WorkflowId = JobId;

/// What a step does when one of its dependencies ends `Dead` or `Cancelled`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDependencyFailure {
    /// The step is cancelled, and so are the steps after it that cancel (the default).
    #[default]
    Cancel,
    /// The step is skipped: it ends `Succeeded` with no result, without running, and the
    /// steps after it count it as succeeded.
    Skip,
    /// The step runs anyway once its other dependencies settle (a batch's callback that
    /// counts outcomes).
    Run,
}

impl OnDependencyFailure {
    /// The policy's stable lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OnDependencyFailure::Cancel => "cancel",
            OnDependencyFailure::Skip => "skip",
            OnDependencyFailure::Run => "run",
        }
    }

    /// The policy named `name` (`cancel`, `skip`, `run`).
    pub fn parse(name: &str) -> crate::Result<Self> {
        match name {
            "cancel" => Ok(Self::Cancel),
            "skip" => Ok(Self::Skip),
            "run" => Ok(Self::Run),
            other => Err(crate::Error::invalid_input(
                "on_dependency_failure",
                format!("`{other}` is not a policy; expected one of cancel, skip, run"),
            )),
        }
    }
}

/// Where a job stands in its workflow, kept on its record
/// ([`JobRecord::step`](crate::JobRecord::step)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepLink {
    /// The workflow.
    pub workflow: WorkflowId,
    /// The workflow's name.
    pub workflow_name: String,
    /// The step's name, unique in its workflow.
    pub name: String,
    /// The steps it runs after.
    pub depends_on: Vec<JobId>,
    /// The steps that run after it.
    pub dependents: Vec<JobId>,
    /// Dependencies not settled yet: the step is `Pending` while this is above 0.
    pub waiting_on: u32,
    /// What it does when a dependency fails.
    pub on_dependency_failure: OnDependencyFailure,
}

/// A dependency of a step, as it ended ([`JobContext::dependencies`](crate::JobContext::dependencies)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dependency {
    /// The dependency's job.
    pub id: JobId,
    /// Its step name.
    pub name: String,
    /// How it ended (or where it is, for a dependency kept no longer: `None`).
    pub state: Option<crate::JobState>,
    /// Its result, if it succeeded with one.
    pub result: Option<crate::Payload>,
    /// Its last error, if any.
    pub last_error: Option<String>,
}

/// Above this many dependencies a step reads them by listing its workflow (pages of 1,000)
/// instead of one `get` each.
const GET_EACH_UP_TO: usize = 16;

/// The dependencies of the step `link`, in its order, read from `store`. A dependency no
/// longer kept (past the store's retention) is answered with no state.
pub(crate) async fn read_dependencies(
    store: &dyn crate::state::StateManager,
    link: &StepLink,
) -> crate::Result<Vec<Dependency>> {
    use crate::state::{JobFilter, Page};
    let mut found: std::collections::HashMap<JobId, crate::JobRecord> =
        std::collections::HashMap::with_capacity(link.depends_on.len());
    if link.depends_on.len() <= GET_EACH_UP_TO {
        for id in &link.depends_on {
            if let Some(record) = store.get(*id).await? {
                found.insert(*id, record);
            }
        }
    } else {
        let wanted: std::collections::HashSet<JobId> = link.depends_on.iter().copied().collect();
        let filter = JobFilter {
            workflow: Some(link.workflow),
            ..JobFilter::default()
        };
        let mut page = Page::first(Page::MAX_LIMIT);
        loop {
            let listed = store.list(&filter, &page).await?;
            found.extend(
                listed
                    .items
                    .into_iter()
                    .filter(|r| wanted.contains(&r.id))
                    .map(|r| (r.id, r)),
            );
            match listed.next {
                Some(next) if found.len() < wanted.len() => page = page.after(next),
                _ => break,
            }
        }
    }
    Ok(link
        .depends_on
        .iter()
        .map(|id| match found.remove(id) {
            Some(record) => Dependency {
                id: *id,
                name: record.step.map(|s| s.name).unwrap_or_default(),
                state: Some(record.state),
                result: record.result,
                last_error: record.last_error,
            },
            None => Dependency {
                id: *id,
                name: String::new(),
                state: None,
                result: None,
                last_error: None,
            },
        })
        .collect())
}

/// Each step's depth in its workflow (0 for a step that waits for nothing; else one more than
/// its deepest dependency), for `records` (a workflow's steps); a dependency not among them
/// counts as depth 0. Ordering by depth follows the graph whatever the order of ids.
pub(crate) fn depths(records: &[crate::JobRecord]) -> Vec<usize> {
    let at: std::collections::HashMap<JobId, usize> =
        records.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    let mut depth: Vec<Option<usize>> = vec![None; records.len()];
    for start in 0..records.len() {
        // Iterative depth-first: a stack of (step, whether its dependencies were pushed).
        let mut stack = vec![(start, false)];
        while let Some((i, expanded)) = stack.pop() {
            if depth[i].is_some() {
                continue;
            }
            let deps: Vec<usize> = records[i]
                .step
                .as_deref()
                .map(|l| {
                    l.depends_on
                        .iter()
                        .filter_map(|d| at.get(d).copied())
                        .collect()
                })
                .unwrap_or_default();
            if expanded {
                let d = deps
                    .iter()
                    .map(|&j| depth[j].map_or(0, |x| x + 1))
                    .max()
                    .unwrap_or(0);
                depth[i] = Some(d);
            } else {
                stack.push((i, true));
                // (a cycle cannot be stored; `expanded` ends the walk if one were)
                stack.extend(
                    deps.into_iter()
                        .filter(|&j| depth[j].is_none())
                        .map(|j| (j, false)),
                );
            }
        }
    }
    depth.into_iter().map(|d| d.unwrap_or(0)).collect()
}

/// What a settled dependency means for a step after it: go on (counts down `waiting_on`),
/// or the step ends here in `to` (cancelled, or skipped as succeeded). The one decision
/// every store applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Count the dependency as done.
    CountDown,
    /// End the step in this state, with this reason's prefix.
    End(crate::JobState),
}

/// How a step with `policy` takes a dependency that ended in `dependency` (a terminal state;
/// `Succeeded` covers a skipped step).
pub(crate) fn settle(policy: OnDependencyFailure, dependency: crate::JobState) -> Settle {
    use crate::JobState;
    match (dependency, policy) {
        (JobState::Succeeded, _) | (_, OnDependencyFailure::Run) => Settle::CountDown,
        (_, OnDependencyFailure::Skip) => Settle::End(JobState::Succeeded),
        (_, OnDependencyFailure::Cancel) => Settle::End(JobState::Cancelled),
    }
}

/// The reason recorded on a step that `settle` ended.
pub(crate) fn ended_reason(
    to: crate::JobState,
    dependency: JobId,
    state: crate::JobState,
) -> String {
    let what = if to == crate::JobState::Succeeded {
        "skipped"
    } else {
        "cancelled"
    };
    format!("{what}: dependency {dependency} ended {state}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JobState;

    #[test]
    fn every_policy_against_every_outcome() {
        use OnDependencyFailure::*;
        for policy in [Cancel, Skip, Run] {
            assert_eq!(settle(policy, JobState::Succeeded), Settle::CountDown);
        }
        for failed in [JobState::Dead, JobState::Cancelled] {
            assert_eq!(settle(Cancel, failed), Settle::End(JobState::Cancelled));
            assert_eq!(settle(Skip, failed), Settle::End(JobState::Succeeded));
            assert_eq!(settle(Run, failed), Settle::CountDown);
        }
    }

    #[test]
    fn depth_follows_the_graph_not_the_ids() {
        use crate::{JobRecord, NewJob};
        let wf = graph::Workflow::new("w");
        // The join is added first: its id is the oldest.
        let join = wf.add(NewJob::new("join"));
        let root = wf.add(NewJob::new("root"));
        let mid = wf.add_many((0..2).map(|_| NewJob::new("mid"))).after(&root);
        let _ = join.after(&mid);
        let (_, records) = wf.to_records(|job| Ok(JobRecord::from_job(job))).unwrap();
        assert_eq!(depths(&records), vec![2, 0, 1, 1]);
    }

    #[test]
    fn policies_parse_by_name() {
        for policy in [
            OnDependencyFailure::Cancel,
            OnDependencyFailure::Skip,
            OnDependencyFailure::Run,
        ] {
            assert_eq!(
                OnDependencyFailure::parse(policy.as_str()).ok(),
                Some(policy)
            );
        }
        let err = OnDependencyFailure::parse("retry").err();
        assert_eq!(err.and_then(|e| e.field()), Some("on_dependency_failure"));
    }
}
