//! The workflow builder and its check: names, references, cycles.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{OnDependencyFailure, StepLink, WorkflowId};
use crate::job::{JobId, JobRecord, JobState, NewJob};
use crate::{Error, Result};

/// Most steps in one workflow: the whole graph is stored in one round trip.
pub const MAX_STEPS: usize = 100_000;

/// A workflow being built: add steps with [`add`](Self::add) and
/// [`add_many`](Self::add_many), order them with [`Step::after`], then submit it with
/// [`Orchestrator::submit_workflow`](crate::JobOrchestrator::submit_workflow). See the
/// [module documentation](crate::workflow).
///
/// Cheap to clone; the clones and the [`Step`]s it hands out share one graph.
#[derive(Clone)]
pub struct Workflow {
    graph: Arc<Mutex<Graph>>,
}

struct Graph {
    id: WorkflowId,
    name: String,
    steps: Vec<StepDef>,
    /// References the builder could not record (a step of another workflow), reported at
    /// submit.
    errors: Vec<String>,
    /// Whether it was handed to a store already (its steps are gone from here then).
    submitted: bool,
}

#[derive(Clone)]
struct StepDef {
    job: NewJob,
    name: Option<String>,
    after: Vec<usize>,
    on_failure: OnDependencyFailure,
}

/// One step of a [`Workflow`], as [`Workflow::add`] returns it: a handle to order it after
/// other steps, name it, and set its failure policy. Cheap to clone.
#[derive(Clone)]
pub struct Step {
    graph: Arc<Mutex<Graph>>,
    index: usize,
    id: JobId,
}

/// Steps added together ([`Workflow::add_many`]): a fan-out, ordered together, and a
/// dependency of a fan-in as a whole.
#[derive(Clone, Default)]
pub struct Steps(Vec<Step>);

/// What a step can come after: one step (`&a`), several (`(&a, &b)`, `&[a, b]`, `&vec`), or
/// the steps of an [`add_many`](Workflow::add_many) (`&fan_out`).
pub trait Dependencies {
    /// The steps.
    fn steps(&self) -> Vec<&Step>;
}

impl Dependencies for &Step {
    fn steps(&self) -> Vec<&Step> {
        vec![*self]
    }
}

impl Dependencies for &Steps {
    fn steps(&self) -> Vec<&Step> {
        self.0.iter().collect()
    }
}

impl Dependencies for &[Step] {
    fn steps(&self) -> Vec<&Step> {
        self.iter().collect()
    }
}

impl Dependencies for &Vec<Step> {
    fn steps(&self) -> Vec<&Step> {
        self.iter().collect()
    }
}

impl<const N: usize> Dependencies for &[Step; N] {
    fn steps(&self) -> Vec<&Step> {
        self.iter().collect()
    }
}

macro_rules! tuple_dependencies {
    ($($name:ident),+) => {
        impl<$($name: Dependencies),+> Dependencies for ($($name,)+) {
            #[allow(non_snake_case)]
            fn steps(&self) -> Vec<&Step> {
                let ($($name,)+) = self;
                let mut all = Vec::new();
                $(all.extend($name.steps());)+
                all
            }
        }
    };
}
tuple_dependencies!(A, B);
tuple_dependencies!(A, B, C);
tuple_dependencies!(A, B, C, D);
tuple_dependencies!(A, B, C, D, E);
tuple_dependencies!(A, B, C, D, E, F);

impl Workflow {
    /// An empty workflow named `name` (a label shown with its steps; need not be unique).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            graph: Arc::new(Mutex::new(Graph {
                id: JobId::new(),
                name: name.into(),
                steps: Vec::new(),
                errors: Vec::new(),
                submitted: false,
            })),
        }
    }

    /// The workflow's id (fixed when it was made).
    #[must_use]
    pub fn id(&self) -> WorkflowId {
        self.graph.lock().id
    }

    /// Steps so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.graph.lock().steps.len()
    }

    /// Whether no step was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add a step that runs `job`. It depends on nothing until [`Step::after`] says so.
    pub fn add(&self, job: NewJob) -> Step {
        let mut graph = self.graph.lock();
        let id = job.id();
        graph.steps.push(StepDef {
            job,
            name: None,
            after: Vec::new(),
            on_failure: OnDependencyFailure::default(),
        });
        Step {
            graph: Arc::clone(&self.graph),
            index: graph.steps.len() - 1,
            id,
        }
    }

    /// Add a step per job (a fan-out), ordered together with [`Steps::after`].
    pub fn add_many(&self, jobs: impl IntoIterator<Item = NewJob>) -> Steps {
        Steps(jobs.into_iter().map(|job| self.add(job)).collect())
    }

    /// A batch: a step per job, and `callback` after all of them, run whatever they ended
    /// as ([`OnDependencyFailure::Run`]). The callback reads their outcomes with
    /// [`JobContext::dependencies`](crate::JobContext::dependencies). Answers the jobs' steps
    /// and the callback's.
    ///
    /// ```
    /// use jobforge::NewJob;
    /// use jobforge::workflow::Workflow;
    ///
    /// let wf = Workflow::new("nightly-emails");
    /// let (emails, report) = wf.add_batch(
    ///     (0..100).map(|i| NewJob::new("email").payload(&i)),
    ///     NewJob::new("email.report"),
    /// );
    /// assert_eq!((emails.len(), wf.len()), (100, 101));
    /// # let _ = report;
    /// ```
    pub fn add_batch(
        &self,
        jobs: impl IntoIterator<Item = NewJob>,
        callback: NewJob,
    ) -> (Steps, Step) {
        let jobs = self.add_many(jobs);
        let callback = self
            .add(callback)
            .after(&jobs)
            .on_dependency_failure(OnDependencyFailure::Run);
        (jobs, callback)
    }

    /// Mark the workflow stored: submitting it again is refused (its ids are taken).
    pub(crate) fn mark_submitted(&self) {
        self.graph.lock().submitted = true;
    }

    /// The checked graph as records to store: each step's name, its links both ways, and
    /// its state (`Pending` with dependencies, else `Queued`). `prepare` validates each job
    /// and makes its record, as a plain submit would.
    pub(crate) fn to_records(
        &self,
        mut prepare: impl FnMut(NewJob) -> Result<JobRecord>,
    ) -> Result<(WorkflowId, Vec<JobRecord>)> {
        // A copy (payloads are shared, not copied): a workflow the store refused, or could
        // not be reached for, can be submitted again as it is.
        let (id, workflow_name, steps, errors) = {
            let guard = self.graph.lock();
            if guard.submitted {
                return Err(Error::invalid_input(
                    "steps",
                    "this workflow was submitted already; build a new Workflow to submit another",
                ));
            }
            (
                guard.id,
                guard.name.clone(),
                guard.steps.clone(),
                guard.errors.clone(),
            )
        };
        if let Some(error) = errors.into_iter().next() {
            return Err(Error::invalid_input("after", error));
        }
        if workflow_name.is_empty()
            || workflow_name.len() > 256
            || workflow_name.chars().any(char::is_control)
        {
            return Err(Error::invalid_input(
                "name",
                "a workflow's name must be 1 to 256 bytes without control characters",
            ));
        }
        if steps.is_empty() {
            return Err(Error::invalid_input(
                "steps",
                "the workflow has no steps; add at least one",
            ));
        }
        if steps.len() > MAX_STEPS {
            return Err(Error::invalid_input(
                "steps",
                format!(
                    "{} steps is over the limit of {MAX_STEPS}; split the work into workflows",
                    steps.len()
                ),
            ));
        }
        let names = step_names(&steps)?;
        check_acyclic(&steps, &names)?;
        let ids: Vec<JobId> = steps.iter().map(|s| s.job.id()).collect();
        let mut dependents: Vec<Vec<JobId>> = vec![Vec::new(); steps.len()];
        for (i, step) in steps.iter().enumerate() {
            for &dep in &step.after {
                dependents[dep].push(ids[i]);
            }
        }
        let mut records = Vec::with_capacity(steps.len());
        for ((step, name), dependents) in steps.into_iter().zip(names).zip(dependents) {
            if step.job.key().is_some() {
                return Err(Error::invalid_input(
                    "idempotency_key",
                    "a workflow step cannot have its own idempotency key; the workflow is submitted once, as a whole",
                )
                .about(format_args!("step `{name}`")));
            }
            let depends_on: Vec<JobId> = step.after.iter().map(|&d| ids[d]).collect();
            let mut record =
                prepare(step.job).map_err(|e| e.about(format_args!("step `{name}`")))?;
            let waiting_on = u32::try_from(depends_on.len()).unwrap_or(u32::MAX);
            if waiting_on > 0 {
                record.state = JobState::Pending;
            }
            record.step = Some(Box::new(StepLink {
                workflow: id,
                workflow_name: workflow_name.clone(),
                name,
                depends_on,
                dependents,
                waiting_on,
                on_dependency_failure: step.on_failure,
            }));
            records.push(record);
        }
        // A workflow belongs to one tenant (or none): reading or cancelling it is checked
        // against one.
        if let Some(other) = records.iter().find(|r| r.tenant != records[0].tenant) {
            let name = other.step.as_deref().map_or("", |l| l.name.as_str());
            return Err(Error::invalid_input(
                "tenant",
                format!(
                    "step `{name}` has tenant {:?} and the first step {:?}; a workflow's steps share one tenant",
                    other.tenant, records[0].tenant
                ),
            ));
        }
        Ok((id, records))
    }
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let graph = self.graph.lock();
        f.debug_struct("Workflow")
            .field("id", &graph.id)
            .field("name", &graph.name)
            .field("steps", &graph.steps.len())
            .finish()
    }
}

impl Step {
    /// Run this step only after every step of `deps` succeeded (a fan-in when they are
    /// several). Calls add up. A step of another workflow is reported when the workflow is
    /// submitted. The graph records it: the handle returned is for chaining, and may be
    /// dropped.
    pub fn after(self, deps: impl Dependencies) -> Self {
        let mut graph = self.graph.lock();
        for dep in deps.steps() {
            if !Arc::ptr_eq(&dep.graph, &self.graph) {
                let error = format!(
                    "step {} comes after a step of another workflow; a step can only wait for steps of its own workflow",
                    self.index
                );
                graph.errors.push(error);
                continue;
            }
            if let Some(step) = graph.steps.get_mut(self.index) {
                if !step.after.contains(&dep.index) {
                    step.after.push(dep.index);
                }
            }
        }
        drop(graph);
        self
    }

    /// Name the step (default: its kind, or `kind#n` when several steps share the kind).
    /// Names are unique in a workflow; handlers find their dependencies' results by them.
    pub fn name(self, name: impl Into<String>) -> Self {
        if let Some(step) = self.graph.lock().steps.get_mut(self.index) {
            step.name = Some(name.into());
        }
        self
    }

    /// What the step does when a dependency ends dead or cancelled (default: cancelled).
    pub fn on_dependency_failure(self, policy: OnDependencyFailure) -> Self {
        if let Some(step) = self.graph.lock().steps.get_mut(self.index) {
            step.on_failure = policy;
        }
        self
    }

    /// The id the step's job will have.
    #[must_use]
    pub fn id(&self) -> JobId {
        self.id
    }
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step").field("index", &self.index).finish()
    }
}

impl Steps {
    /// Run each of these steps only after every step of `deps` succeeded.
    pub fn after(self, deps: impl Dependencies) -> Self {
        let deps: Vec<Step> = deps.steps().into_iter().cloned().collect();
        Self(self.0.into_iter().map(|s| s.after(&deps)).collect())
    }

    /// Set the failure policy of each of these steps.
    pub fn on_dependency_failure(self, policy: OnDependencyFailure) -> Self {
        Self(
            self.0
                .into_iter()
                .map(|s| s.on_dependency_failure(policy))
                .collect(),
        )
    }

    /// The steps, in the order they were added.
    #[must_use]
    pub fn as_slice(&self) -> &[Step] {
        &self.0
    }

    /// How many.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steps").field("len", &self.0.len()).finish()
    }
}

/// Each step's name: its own, else its kind, else `kind#n` when the kind repeats. Two steps
/// named alike are refused.
fn step_names(steps: &[StepDef]) -> Result<Vec<String>> {
    let mut per_kind: HashMap<&str, usize> = HashMap::new();
    for step in steps.iter().filter(|s| s.name.is_none()) {
        *per_kind.entry(step.job.kind()).or_default() += 1;
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut names = Vec::with_capacity(steps.len());
    for step in steps {
        let name = match &step.name {
            Some(name) => name.clone(),
            None if per_kind.get(step.job.kind()).copied().unwrap_or(0) > 1 => {
                let n = seen.entry(step.job.kind()).or_default();
                *n += 1;
                format!("{}#{n}", step.job.kind())
            }
            None => step.job.kind().to_owned(),
        };
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(Error::invalid_input(
                "steps",
                format!("step name {name:?} must be 1 to 256 bytes without control characters"),
            ));
        }
        names.push(name);
    }
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        if let Some(first) = index.insert(name, i) {
            return Err(Error::invalid_input(
                "steps",
                format!(
                    "two steps are named `{name}` (steps {first} and {i}); step names are unique in a workflow"
                ),
            ));
        }
    }
    Ok(names)
}

/// Refuse a cycle, naming the steps on it (Kahn's algorithm: what is left is on or after one).
fn check_acyclic(steps: &[StepDef], names: &[String]) -> Result<()> {
    let mut waiting: Vec<usize> = steps.iter().map(|s| s.after.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (i, step) in steps.iter().enumerate() {
        for &dep in &step.after {
            dependents[dep].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..steps.len()).filter(|&i| waiting[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(d);
            }
        }
    }
    if done == steps.len() {
        return Ok(());
    }
    let stuck: Vec<&str> = (0..steps.len())
        .filter(|&i| waiting[i] > 0)
        .take(8)
        .map(|i| names[i].as_str())
        .collect();
    Err(Error::invalid_input(
        "after",
        format!(
            "the steps form a cycle, so none of them could ever run (among: {})",
            stuck.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobRecord;

    fn prepare(job: NewJob) -> Result<JobRecord> {
        let mut record = JobRecord::from_job(job);
        record.state = JobState::Queued;
        Ok(record)
    }

    fn field(wf: Workflow) -> Option<&'static str> {
        wf.to_records(prepare).err().and_then(|e| e.field())
    }

    #[test]
    fn a_diamond_links_both_ways() {
        let wf = Workflow::new("diamond");
        let a = wf.add(NewJob::new("a"));
        let fan = wf.add_many((0..3).map(|_| NewJob::new("b"))).after(&a);
        let c = wf.add(NewJob::new("c")).after(&fan).name("join");
        let (a_id, c_id) = (a.id(), c.id());
        let (_, records) = wf.to_records(prepare).unwrap();
        let link = |i: usize| records[i].step.as_deref().unwrap();
        assert_eq!(records[0].state, JobState::Queued);
        assert_eq!(link(0).dependents.len(), 3);
        assert_eq!(link(0).name, "a");
        assert_eq!(
            (link(1).name.as_str(), link(3).name.as_str()),
            ("b#1", "b#3")
        );
        assert_eq!(link(1).depends_on, vec![a_id]);
        assert_eq!(records[4].state, JobState::Pending);
        assert_eq!((link(4).name.as_str(), link(4).waiting_on), ("join", 3));
        assert!(
            records[1..4]
                .iter()
                .all(|r| r.step.as_ref().unwrap().dependents == vec![c_id])
        );
        assert!(
            records
                .iter()
                .all(|r| r.step.as_ref().unwrap().workflow_name == "diamond")
        );
    }

    #[test]
    fn bad_graphs_are_refused_naming_what_is_wrong() {
        assert_eq!(field(Workflow::new("empty")), Some("steps"));
        assert_eq!(field(Workflow::new("")), Some("name"));

        let wf = Workflow::new("cycle");
        let a = wf.add(NewJob::new("a"));
        let b = wf.add(NewJob::new("b")).after(&a);
        let _ = a.after(&b);
        let err = wf.to_records(prepare).err().unwrap();
        assert_eq!(err.field(), Some("after"));
        assert!(err.to_string().contains("cycle"), "{err}");

        let wf = Workflow::new("self");
        let a = wf.add(NewJob::new("a"));
        let _ = a.clone().after(&a);
        assert_eq!(field(wf), Some("after"));

        let wf = Workflow::new("dupes");
        let _ = wf.add(NewJob::new("a")).name("x");
        let _ = wf.add(NewJob::new("b")).name("x");
        let err = wf.to_records(prepare).err().unwrap();
        assert!(err.to_string().contains("`x`"), "{err}");

        let other = Workflow::new("other");
        let foreign = other.add(NewJob::new("a"));
        let wf = Workflow::new("dangling");
        let _ = wf.add(NewJob::new("b")).after(&foreign);
        assert_eq!(field(wf), Some("after"));

        let wf = Workflow::new("keyed");
        let _ = wf.add(NewJob::new("a").idempotency_key("k"));
        assert_eq!(field(wf), Some("idempotency_key"));

        let wf = Workflow::new("tenants");
        let _ = wf.add(NewJob::new("a").tenant("acme"));
        let _ = wf.add(NewJob::new("b").tenant("globex"));
        assert_eq!(field(wf), Some("tenant"));
    }

    /// A step's handle outlives the submit (its id is asked for afterwards); a workflow is
    /// stored once, and can be tried again until it is. Before, `Step::id` after a submit
    /// panicked (the graph was emptied).
    #[test]
    fn handles_outlive_the_submit_and_a_workflow_goes_once() {
        let wf = Workflow::new("w");
        let a = wf.add(NewJob::new("a"));
        let b = wf.add(NewJob::new("b")).after(&a);
        let (_, records) = wf.to_records(prepare).unwrap();
        assert_eq!((a.id(), b.id()), (records[0].id, records[1].id));
        // Not stored yet (the store was down, say): it can go again, as it was.
        let (_, again) = wf.to_records(prepare).unwrap();
        assert_eq!(again[1].id, records[1].id);
        wf.mark_submitted();
        let b = b.name("late").after(&a);
        assert_eq!(b.id(), records[1].id);
        let err = wf.to_records(prepare).err().unwrap();
        assert!(err.to_string().contains("submitted already"), "{err}");
    }

    #[test]
    fn a_step_error_names_the_step() {
        let wf = Workflow::new("w");
        let _ = wf.add(NewJob::new("a")).name("charge");
        let err = wf
            .to_records(|_| Err(Error::invalid_input("payload", "too big")))
            .err()
            .unwrap();
        assert_eq!(err.field(), Some("payload"));
        assert!(err.to_string().contains("charge"), "{err}");
    }
}
