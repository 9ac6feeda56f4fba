//! What [`Orchestrator::workflow`](crate::JobOrchestrator::workflow) answers.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{OnDependencyFailure, WorkflowId};
use crate::job::{JobId, JobRecord, JobState};
use crate::state::StateTally;

/// A workflow as it stands: its steps with their states and edges, and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowStatus {
    /// The workflow.
    pub id: WorkflowId,
    /// Its name.
    pub name: String,
    /// Its steps, by id (the order their jobs were made, which is the order they were added
    /// unless jobs were made ahead of adding them).
    pub steps: Vec<WorkflowStep>,
    /// Steps by state: the workflow's progress.
    pub counts: StateTally,
    /// Whether every step has finished.
    pub finished: bool,
}

/// One step of a [`WorkflowStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowStep {
    /// The step's job.
    pub id: JobId,
    /// The step's name.
    pub name: String,
    /// Its job's kind.
    pub kind: String,
    /// Where it is.
    pub state: JobState,
    /// Attempts started.
    pub attempt: u32,
    /// The names of the steps it runs after.
    pub after: Vec<String>,
    /// Dependencies it still waits for.
    pub waiting_on: u32,
    /// What it does when a dependency fails.
    pub on_dependency_failure: OnDependencyFailure,
    /// Its latest error, if any.
    pub last_error: Option<String>,
    /// Its tenant (a workflow's steps share the submitter's).
    pub tenant: Option<String>,
}

impl WorkflowStatus {
    /// The status of the workflow whose steps are `records` (in id order); `None` when there
    /// are none.
    pub(crate) fn of(id: WorkflowId, records: &[JobRecord]) -> Option<Self> {
        let first = records.iter().find_map(|r| r.step.as_deref())?;
        let name = first.workflow_name.clone();
        let names: HashMap<JobId, &str> = records
            .iter()
            .filter_map(|r| r.step.as_deref().map(|s| (r.id, s.name.as_str())))
            .collect();
        let mut counts = StateTally::default();
        let mut steps = Vec::with_capacity(records.len());
        for record in records {
            let Some(link) = record.step.as_deref() else {
                continue;
            };
            *counts.get_mut(record.state) += 1;
            steps.push(WorkflowStep {
                id: record.id,
                name: link.name.clone(),
                kind: record.kind.clone(),
                state: record.state,
                attempt: record.attempt,
                after: link
                    .depends_on
                    .iter()
                    .map(|d| {
                        names
                            .get(d)
                            .map_or_else(|| d.to_string(), |n| (*n).to_owned())
                    })
                    .collect(),
                waiting_on: link.waiting_on,
                on_dependency_failure: link.on_dependency_failure,
                last_error: record.last_error.clone(),
                tenant: record.tenant.clone(),
            });
        }
        let finished = counts.active() == 0;
        Some(Self {
            id,
            name,
            steps,
            counts,
            finished,
        })
    }
}
