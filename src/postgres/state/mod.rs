//! The PostgreSQL store: [`PostgresState`], its SQL text (`sql`), row mapping (`rows`) and
//! trait impls (`store`).

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::job::{JobId, JobRecord, JobState, WorkerId};
use crate::postgres::{Shared, db_error, stmt};
use crate::queue::Reserve;
use crate::state::{Claim, Created, Finish, JobFilter, Order, Page, Transition, TransitionResult};
use crate::util::dur_micros;
use crate::{Error, ErrorKind, Result};

mod ring;
mod rows;
mod sql;
mod store;

pub use ring::RingMove;

use rows::*;
use sql::{JOB_COLUMNS, JOB_NOW, LIVE_LEASE, Statements};

/// Durable job records in PostgreSQL: the `jobs` table (with the indexes claiming, listing
/// and retention need), the `job_events` history, and counts kept as states change.
///
/// Every batch is one statement: `create` inserts with `UNNEST` (a taken idempotency key, also
/// under concurrent submits, answers the existing job); `claim`, `finish` and `heartbeat`
/// lock their rows in id order and apply compare-and-set rules fenced by lease owner and
/// attempt. Finished jobs are deleted after [`PostgresConfig::retention`] in small batches.
///
/// It is also a [`JobStore`](crate::store::JobStore): with
/// [`OrchestratorBuilder::store`](crate::OrchestratorBuilder::store) the
/// `jobs` table is the queue, and a worker claims a batch of due jobs in one statement
/// (`FOR UPDATE SKIP LOCKED`).
///
/// Get one from [`PostgresBackend::store`](crate::postgres::PostgresBackend::store).
///
/// [`PostgresConfig::retention`]: crate::postgres::PostgresConfig::retention
pub struct PostgresState {
    shared: Arc<Shared>,
    sql: Arc<Statements>,
    /// When `claim_due` next looks for expired leases, and what the last looks covered.
    takeover: parking_lot::Mutex<TakeoverLooks>,
    /// The schedules kept beside the jobs.
    pub(super) schedules: Arc<crate::postgres::PostgresSchedules>,
}

impl std::fmt::Debug for PostgresState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresState")
            .field("schema", &self.shared.config.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresState {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let sql = Arc::new(Statements::new(&shared));
        Self {
            schedules: Arc::new(crate::postgres::PostgresSchedules::new(Arc::clone(&shared))),
            shared,
            sql,
            takeover: parking_lot::Mutex::new(TakeoverLooks::new(tokio::time::Instant::now())),
        }
    }

    /// Delete finished jobs older than the configured retention, with their history, in
    /// batches; returns how many were deleted.
    pub async fn purge_finished(&self) -> Result<u64> {
        let config = &self.shared.config;
        let batch = i64::try_from(config.purge_batch).unwrap_or(i64::MAX);
        let mut total = 0u64;
        loop {
            self.shared.count_statement();
            let deleted: i64 = sqlx::query_scalar(stmt(&self.sql.purge))
                .bind(dur_micros(config.retention))
                .bind(batch)
                .fetch_one(&self.shared.pool)
                .await
                .map_err(|e| db_error("delete finished jobs past retention", e))?;
            total += u64::try_from(deleted).unwrap_or(0);
            if deleted < batch {
                return Ok(total);
            }
            // Let other work in between batches.
            tokio::task::yield_now().await;
        }
    }

    /// Open `connections` of the pool's connections and prepare and plan every statement a
    /// worker pool and a submitter run on each of them (submit, claim, finish, finish and
    /// claim, heartbeat, counts), with inputs that touch no row. Otherwise the first jobs
    /// after a start wait while connections open and each connection plans each batch
    /// statement on first use, several milliseconds apiece (a 12,000 jobs/s run began at
    /// 60 ms submit-to-start, against 1.3 ms in steady state). The connections are all held
    /// at once, so each is a different one and each gets every statement. A failure here is
    /// ignored: the real statements report their own.
    pub(crate) async fn warm_up(&self, connections: usize) {
        let claim = ClaimArgs {
            queues: Vec::new(),
            worker: WorkerId::new("jobforge-warm-up"),
            max: 0,
            lease: 0,
            takeovers: TakeoverLook::NONE,
        };
        // A host's pool (`from_pool`) may have fewer free than asked for: warm those it has
        // rather than wait for the others up to its acquire timeout.
        let held = futures_util::future::join_all(
            (0..connections.max(1))
                .map(|_| tokio::time::timeout(WARM_ACQUIRE_WAIT, self.shared.pool.acquire())),
        )
        .await;
        let (shared, sql) = (&self.shared, &self.sql);
        let claim = &claim;
        let held = held.into_iter().flatten().flatten();
        futures_util::future::join_all(held.map(|mut conn| async move {
            let _ = self.create_on(&mut *conn, &[]).await;
            let _ = claim_due_statement(&mut *conn, shared, sql, claim).await;
            let _ = finish_and_claim_statement(&mut *conn, shared, sql, &[], claim).await;
            let _ = finish_statement(&mut *conn, shared, sql, Vec::new()).await;
            let _ = self.heartbeat_on(&mut *conn, &[], Duration::ZERO).await;
            let _ = self.counts_on(&mut *conn).await;
        }))
        .await;
    }

    /// Extend the leases of `held` on `exec`: per lease still held, its id, token and whether
    /// a cancel was asked for.
    async fn heartbeat_on<'c, E: sqlx::PgExecutor<'c>>(
        &self,
        exec: E,
        held: &[crate::state::Held],
        lease: Duration,
    ) -> Result<Vec<(Uuid, i64, bool)>> {
        let uuids: Vec<Uuid> = held.iter().map(|h| *h.id.as_uuid()).collect();
        let tokens: Vec<i64> = held
            .iter()
            .map(|h| i64::try_from(h.token).unwrap_or(i64::MAX))
            .collect();
        self.shared.count_statement();
        sqlx::query_as(stmt(&self.sql.heartbeat))
            .bind(uuids)
            .bind(tokens)
            .bind(dur_micros(lease))
            .fetch_all(exec)
            .await
            .map_err(|e| db_error("extend leases", e))
    }

    /// The counts by state and kind, read on `exec`.
    async fn counts_on<'c, E: sqlx::PgExecutor<'c>>(&self, exec: E) -> Result<Vec<CountRow>> {
        self.shared.count_statement();
        sqlx::query_as::<_, CountRow>(stmt(&self.sql.counts))
            .fetch_all(exec)
            .await
            .map_err(|e| db_error("count jobs", e))
    }

    /// Store a batch that holds workflow steps, whole or not at all (`CREATE_STEPS`).
    async fn create_steps(&self, jobs: &[JobRecord]) -> Result<Vec<Created>> {
        let n = jobs.len();
        let mut states = Vec::with_capacity(n);
        let mut steps = Vec::with_capacity(n);
        for job in jobs {
            states.push(match job.state {
                JobState::Pending if job.step.is_some() => "pending",
                JobState::Queued => "queued",
                other => {
                    return Err(Error::invalid_input(
                        "state",
                        format!(
                            "job {}: a new job is queued, or pending as a workflow step; not {other}",
                            job.id
                        ),
                    ));
                }
            });
            steps.push(match &job.step {
                Some(link) => Some(serde_json::to_string(link)?),
                None => None,
            });
        }
        let mut columns = NewColumns::of(jobs.iter())?;
        let traceparents = std::mem::take(&mut columns.traceparents);
        self.shared.count_statement();
        let (stored, _notified): (i64, i64) = columns
            .bind(
                sqlx::query_as(stmt(&self.sql.create_steps)),
                &self.shared.channel,
            )
            .bind(states)
            .bind(steps)
            .bind(traceparents)
            .fetch_one(&self.shared.pool)
            .await
            .map_err(|e| db_error("store a workflow's steps", e))?;
        if usize::try_from(stored).ok() != Some(n) {
            return Err(Error::new(
                ErrorKind::Backend,
                format!("PostgreSQL stored {stored} of a workflow's {n} steps"),
            ));
        }
        Ok(jobs.iter().map(|j| Created::New(j.id)).collect())
    }

    async fn create_once(&self, jobs: &[&JobRecord]) -> Result<Vec<SkippedRow>> {
        self.create_on(&self.shared.pool, jobs).await
    }

    /// `create_once` on the connection (or pool) `exec`.
    async fn create_on<'c, E: sqlx::PgExecutor<'c>>(
        &self,
        exec: E,
        jobs: &[&JobRecord],
    ) -> Result<Vec<SkippedRow>> {
        let mut columns = NewColumns::of(jobs.iter().copied())?;
        let traceparents = std::mem::take(&mut columns.traceparents);
        self.shared.count_statement();
        columns
            .bind(
                sqlx::query_as::<_, SkippedRow>(stmt(&self.sql.create)),
                &self.shared.channel,
            )
            .bind(traceparents)
            .fetch_all(exec)
            .await
            .map_err(|e| db_error("store new jobs", e))
    }

    async fn claim_chunk(
        &self,
        ids: &[JobId],
        worker: &WorkerId,
        lease: Duration,
    ) -> Result<Vec<Claim>> {
        let uuids: Vec<Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
        self.shared.count_statement();
        let rows = sqlx::query_as::<_, ClaimRow>(stmt(&self.sql.claim_ids))
            .bind(uuids)
            .bind(worker.as_str())
            .bind(dur_micros(lease))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("claim jobs", e))?;
        rows.into_iter().map(ClaimRow::into_claim).collect()
    }

    /// One claim statement, run in a task of its own: if the caller stops waiting (a worker
    /// shutting down drops the future), the statement still completes and the jobs it took
    /// are handed back at once, attempt not spent, instead of waiting out their leases.
    async fn claim_due_once(&self, req: &Reserve<'_>) -> Result<Vec<Claim>> {
        let args = self.claim_args(req);
        let look = args.takeovers;
        let (taken_over, claims) = self
            .spawn_claim(args.worker.clone(), move |shared, sql| async move {
                claim_due_statement(&shared.pool, &shared, &sql, &args).await
            })
            .await?;
        self.takeover.lock().looked(&look, taken_over);
        Ok(claims)
    }

    /// What a claim statement binds for `req`.
    fn claim_args(&self, req: &Reserve<'_>) -> ClaimArgs {
        ClaimArgs {
            queues: req.queues.to_vec(),
            worker: WorkerId::clone(req.worker),
            max: i64::try_from(req.max).unwrap_or(i64::MAX),
            lease: dur_micros(req.lease),
            takeovers: self.takeover_look(req.max),
        }
    }

    /// Run a statement that claims (`call`, answering something and the claims) in a task of
    /// its own: if the caller stops waiting, the statement still completes and the jobs it
    /// claimed for `worker` are handed back at once, attempt not spent.
    async fn spawn_claim<T, F, Fut>(&self, worker: WorkerId, call: F) -> Result<(T, Vec<Claim>)>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>, Arc<Statements>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(T, Vec<Claim>)>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = Arc::clone(&self.shared);
        let sql = Arc::clone(&self.sql);
        tokio::spawn(async move {
            let answer = call(Arc::clone(&shared), Arc::clone(&sql)).await;
            if let Err(Ok((_, claims))) = tx.send(answer) {
                hand_back(&shared, &sql, &worker, claims).await;
            }
        });
        rx.await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Backend,
                "the claim task ended without an answer; try again",
            ))
        })
    }

    /// Whether a claim of at most `max` jobs looks for expired leases too, and how far back
    /// (at most once per poll interval: the look is kept off most claims; see
    /// [`TakeoverLooks`]).
    fn takeover_look(&self, max: usize) -> TakeoverLook {
        self.takeover.lock().look(
            tokio::time::Instant::now(),
            self.shared.config.poll_interval,
            max,
        )
    }

    /// [`JobStore::finish_and_claim`](crate::store::JobStore::finish_and_claim) in one
    /// statement, run in a task of its own as `claim_due_once` is: a caller that stops
    /// waiting has the jobs claimed for it handed back.
    async fn finish_and_claim_once(
        &self,
        transitions: Vec<Transition>,
        req: &Reserve<'_>,
    ) -> Result<(Vec<TransitionResult>, Vec<Claim>)> {
        let args = self.claim_args(req);
        let look = args.takeovers;
        let ((results, taken_over), claims) = self
            .spawn_claim(args.worker.clone(), move |shared, sql| async move {
                let (results, claims, taken_over) =
                    finish_and_claim_statement(&shared.pool, &shared, &sql, &transitions, &args)
                        .await?;
                Ok(((results, taken_over), claims))
            })
            .await?;
        self.takeover.lock().looked(&look, taken_over);
        Ok((results, claims))
    }

    async fn finish_chunk(&self, transitions: Vec<Transition>) -> Result<Vec<TransitionResult>> {
        finish_statement(&self.shared.pool, &self.shared, &self.sql, transitions).await
    }

    /// One page of `filter` (up to `limit + 1` rows, to tell whether more follow), and where
    /// the walk stopped when its scan budget ran out before the page filled.
    ///
    /// The conditions an index serves (a workflow, a tenant, the states with an index of
    /// their own, a kind among dead or cancelled jobs) narrow a walk by id that reads at most
    /// `list_scan_budget` rows; the other conditions filter what it read. The walk streams
    /// (`row_number` over an ordered scan), so a page that fills early stops early; without
    /// a budget a filter matching nothing would read the whole table for one page. The row
    /// at the budget's end is answered even when it does not match (`matched` false), as the
    /// place to continue from.
    async fn list_page(
        &self,
        filter: &JobFilter,
        page: &Page,
    ) -> Result<(Vec<JobRow>, Option<JobId>)> {
        let mut n = 0;
        let mut param = || {
            n += 1;
            n
        };
        let order = match page.order {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        };
        let cmp = if page.order == Order::Asc { ">" } else { "<" };
        let mut inner = String::from("true");
        let mut outer = String::from("true");
        if let Some(state) = filter.state {
            // A literal (one of six fixed names), so the planner can use the partial
            // indexes whose predicate names states. The walk reads rows (a running job's
            // row still says `queued`: its lease says it runs), the filter the job as shown.
            let cond = format!(" AND state = '{}'", state.as_str());
            if matches!(
                state,
                JobState::Queued | JobState::Dead | JobState::Cancelled
            ) {
                inner.push_str(&cond);
            }
            outer.push_str(&cond);
        }
        if filter.kind.is_some() {
            let cond = format!(" AND kind = ${}", param());
            if matches!(filter.state, Some(JobState::Dead | JobState::Cancelled)) {
                inner.push_str(&cond);
            } else {
                outer.push_str(&cond);
            }
        }
        if filter.queue.is_some() {
            outer.push_str(&format!(" AND queue = ${}", param()));
        }
        if filter.tenant.is_some() {
            inner.push_str(&format!(" AND tenant = ${}", param()));
        }
        if filter.workflow.is_some() {
            inner.push_str(&format!(" AND workflow_id = ${}", param()));
        }
        if filter.tag.is_some() {
            outer.push_str(&format!(" AND ${} = ANY(tags)", param()));
        }
        if page.after.is_some() {
            inner.push_str(&format!(" AND id {cmp} ${}", param()));
        }
        let budget_param = param();
        let limit_param = param();
        let schema = self.shared.quoted_schema();
        // No `ORDER BY` at the top: the rows come in the walk's order (an ordered scan, a
        // window over it, a filter), and a sort there would read the whole budget before
        // the first row (2.3 ms for every page, measured). The caller sorts what it gets.
        let live_lease = LIVE_LEASE.replace("{s}", schema);
        let sql = format!(
            "SELECT {JOB_COLUMNS}, matched FROM (
                 SELECT w.*, ({outer}) AS matched
                 FROM (SELECT {JOB_NOW}, row_number() OVER (ORDER BY j.id {order}) AS walked
                       FROM (SELECT * FROM {schema}.jobs WHERE {inner}
                             ORDER BY id {order} LIMIT ${budget_param}) j
                       {live_lease}) w
                 WHERE ({outer}) OR w.walked = ${budget_param}
             ) x
             LIMIT ${limit_param}"
        );
        let mut query = sqlx::query_as::<_, ListedRow>(sqlx::AssertSqlSafe(sql));
        if let Some(kind) = &filter.kind {
            query = query.bind(kind.as_str());
        }
        if let Some(queue) = &filter.queue {
            query = query.bind(queue.as_str());
        }
        if let Some(tenant) = &filter.tenant {
            query = query.bind(tenant.as_str());
        }
        if let Some(workflow) = filter.workflow {
            query = query.bind(*workflow.as_uuid());
        }
        if let Some(tag) = &filter.tag {
            query = query.bind(tag.as_str());
        }
        if let Some(after) = page.after {
            query = query.bind(*after.as_uuid());
        }
        let limit = i64::try_from(page.limit)
            .unwrap_or(i64::MAX)
            .saturating_add(1);
        let budget = i64::try_from(self.shared.config.list_scan_budget)
            .unwrap_or(i64::MAX)
            .max(limit);
        query = query.bind(budget).bind(limit);
        self.shared.count_statement();
        let rows = query
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|e| db_error("list jobs", e))?;
        // The budget's last row, when it was reached and did not match, says where to go on.
        let mut stopped = None;
        let mut found = Vec::with_capacity(rows.len());
        for r in rows {
            if r.matched {
                found.push(r.row);
            } else {
                stopped = Some(JobId::from_uuid(r.row.id));
            }
        }
        match page.order {
            Order::Asc => found.sort_unstable_by_key(|r| r.id),
            Order::Desc => found.sort_unstable_by_key(|r| std::cmp::Reverse(r.id)),
        }
        Ok((found, stopped))
    }
}

/// A listed row, and whether it matched the filter (the walk's last row may not).
#[derive(sqlx::FromRow)]
struct ListedRow {
    #[sqlx(flatten)]
    row: JobRow,
    matched: bool,
}

/// New jobs as the create statements take them: one array per column (`$1` to `$13`), the
/// notification channel `$14`.
struct NewColumns<'a> {
    ids: Vec<Uuid>,
    kinds: Vec<&'a str>,
    queues: Vec<&'a str>,
    payloads: Vec<&'a str>,
    priorities: Vec<i16>,
    max_attempts: Vec<i32>,
    timeouts: Vec<Option<i64>>,
    keys: Vec<Option<&'a str>>,
    tags: Vec<Option<String>>,
    tenants: Vec<Option<&'a str>>,
    strategies: Vec<Option<&'a str>>,
    run_ats: Vec<chrono::DateTime<chrono::Utc>>,
    created: Vec<chrono::DateTime<chrono::Utc>>,
    /// Bound apart, after the statement's own parameters (`$15` in `CREATE`, `$17` in
    /// `CREATE_STEPS`).
    traceparents: Vec<Option<&'a str>>,
}

impl<'a> NewColumns<'a> {
    fn of(jobs: impl ExactSizeIterator<Item = &'a JobRecord>) -> Result<Self> {
        let n = jobs.len();
        let mut c = Self {
            ids: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            queues: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            priorities: Vec::with_capacity(n),
            max_attempts: Vec::with_capacity(n),
            timeouts: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            tags: Vec::with_capacity(n),
            tenants: Vec::with_capacity(n),
            strategies: Vec::with_capacity(n),
            run_ats: Vec::with_capacity(n),
            created: Vec::with_capacity(n),
            traceparents: Vec::with_capacity(n),
        };
        for job in jobs {
            c.ids.push(*job.id.as_uuid());
            c.kinds.push(job.kind.as_str());
            c.queues.push(job.queue.as_str());
            c.payloads.push(job.payload.as_str());
            c.priorities.push(job.priority);
            c.max_attempts
                .push(i32::try_from(job.max_attempts).unwrap_or(i32::MAX));
            c.timeouts.push(job.timeout.map(millis_i64));
            c.keys.push(job.idempotency_key.as_deref());
            c.tags.push(if job.tags.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&job.tags)?)
            });
            c.tenants.push(job.tenant.as_deref());
            c.strategies.push(job.strategy.as_deref());
            c.run_ats.push(job.run_at);
            c.created.push(job.created_at);
            c.traceparents.push(job.traceparent.as_deref());
        }
        Ok(c)
    }

    /// Bind `$1` to `$14` of `query`.
    fn bind<O>(
        self,
        query: sqlx::query::QueryAs<'a, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
        channel: &'a str,
    ) -> sqlx::query::QueryAs<'a, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(self.ids)
            .bind(self.kinds)
            .bind(self.queues)
            .bind(self.payloads)
            .bind(self.priorities)
            .bind(self.max_attempts)
            .bind(self.timeouts)
            .bind(self.keys)
            .bind(self.tags)
            .bind(self.tenants)
            .bind(self.strategies)
            .bind(self.run_ats)
            .bind(self.created)
            .bind(channel)
    }
}

async fn claim_due_statement<'c, E: sqlx::PgExecutor<'c>>(
    exec: E,
    shared: &Shared,
    sql: &Statements,
    claim: &ClaimArgs,
) -> Result<(usize, Vec<Claim>)> {
    shared.count_statement();
    let rows = claim
        .bind(sqlx::query_as::<_, ClaimRow>(stmt(&sql.claim_due)))
        .fetch_all(exec)
        .await
        .map_err(|e| db_error("claim due jobs", e))?;
    let taken_over = rows.iter().filter(|r| r.took_over()).count();
    let claims = rows
        .into_iter()
        .map(ClaimRow::into_claim)
        .collect::<Result<_>>()?;
    Ok((taken_over, claims))
}

/// Give back jobs claimed for a caller that stopped waiting: due now, attempt not spent.
async fn hand_back(shared: &Shared, sql: &Statements, worker: &WorkerId, claims: Vec<Claim>) {
    let transitions = crate::store::hand_back_transitions(worker, claims);
    if transitions.is_empty() {
        return;
    }
    let n = transitions.len();
    match finish_statement(&shared.pool, shared, sql, transitions).await {
        Ok(_) => tracing::debug!(jobs = n, "handed back jobs claimed for a cancelled claim"),
        Err(err) => {
            tracing::warn!(error = %err, jobs = n, "could not hand back jobs claimed for a cancelled claim; they run again when their leases expire")
        }
    }
}

/// A finish batch as the statements' parameters `$1`–`$7`, in id order (so concurrent
/// batches lock shared rows in the same order), and that order.
struct FinishArgs {
    order: Vec<usize>,
    ids: Vec<Uuid>,
    workers: Vec<String>,
    tokens: Vec<i64>,
    ops: Vec<&'static str>,
    delays: Vec<Option<i64>>,
    messages: Vec<Option<String>>,
    results: Vec<Option<String>>,
}

impl FinishArgs {
    fn new(transitions: &[Transition]) -> Self {
        let n = transitions.len();
        let mut args = Self {
            order: (0..n).collect(),
            ids: Vec::with_capacity(n),
            workers: Vec::with_capacity(n),
            tokens: Vec::with_capacity(n),
            ops: Vec::with_capacity(n),
            delays: Vec::with_capacity(n),
            messages: Vec::with_capacity(n),
            results: Vec::with_capacity(n),
        };
        args.order.sort_unstable_by_key(|&i| transitions[i].id);
        for t in args.order.iter().map(|&i| &transitions[i]) {
            args.ids.push(*t.id.as_uuid());
            args.workers.push(t.worker.as_str().to_owned());
            args.tokens.push(i64::try_from(t.token).unwrap_or(i64::MAX));
            let (op, delay, message, result) = match &t.finish {
                Finish::Succeeded { result } => (
                    "succeeded",
                    None,
                    None,
                    result.as_ref().map(|r| r.as_str().to_owned()),
                ),
                Finish::Retry { delay, error } => ("retry", Some(*delay), Some(error), None),
                Finish::Defer { delay, reason } => ("defer", Some(*delay), Some(reason), None),
                Finish::Dead { error } => ("dead", None, Some(error), None),
                Finish::Cancelled { reason } => ("cancelled", None, Some(reason), None),
                Finish::Release { reason } => ("release", None, Some(reason), None),
            };
            args.ops.push(op);
            args.delays
                .push(delay.map(|d| dur_micros(crate::job::clamp_delay(d))));
            args.messages.push(message.cloned());
            args.results.push(result);
        }
        args
    }

    /// Bind `$1`–`$9` of a finish statement.
    fn bind<'q, O>(
        self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
        shared: &'q Shared,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(self.ids)
            .bind(self.workers)
            .bind(self.tokens)
            .bind(self.ops)
            .bind(self.delays)
            .bind(self.messages)
            .bind(self.results)
            .bind(&shared.channel)
            .bind(i64::try_from(shared.config.max_events_per_job).unwrap_or(i64::MAX))
    }
}

/// A finish statement's answers (`rows`, in id `order`) as the answers to `transitions`.
fn finish_answers(
    transitions: &[Transition],
    order: &[usize],
    rows: Vec<FinishRow>,
) -> Result<Vec<TransitionResult>> {
    let mut answers: Vec<Option<TransitionResult>> = vec![None; transitions.len()];
    for (&i, row) in order.iter().zip(rows) {
        let t = &transitions[i];
        answers[i] = Some(
            if let (Some(state), Some(version)) = (&row.new_state, row.new_version) {
                TransitionResult::Applied {
                    state: parse_state(state)?,
                    version: u64::try_from(version).unwrap_or(0),
                }
            } else {
                let current = row.cur_state.as_deref().map(parse_state).transpose()?;
                let reason = match current {
                    None => "no such job".to_owned(),
                    Some(state) => format!(
                        "not held by {}'s claim {} (state {state}, latest claim {}, owner {})",
                        t.worker,
                        t.token,
                        row.cur_claim.unwrap_or(0),
                        row.cur_owner.as_deref().unwrap_or("none"),
                    ),
                };
                TransitionResult::Conflict { current, reason }
            },
        );
    }
    answers
        .into_iter()
        .map(|a| {
            a.ok_or_else(|| {
                Error::new(
                    ErrorKind::Backend,
                    "PostgreSQL answered a finish batch with too few rows",
                )
            })
        })
        .collect()
}

async fn finish_statement<'c, E: sqlx::PgExecutor<'c>>(
    exec: E,
    shared: &Shared,
    sql: &Statements,
    transitions: Vec<Transition>,
) -> Result<Vec<TransitionResult>> {
    let mut args = FinishArgs::new(&transitions);
    let order = std::mem::take(&mut args.order);
    shared.count_statement();
    let rows = args
        .bind(sqlx::query_as::<_, FinishRow>(stmt(&sql.finish)), shared)
        .fetch_all(exec)
        .await
        .map_err(|e| db_error("finish jobs", e))?;
    finish_answers(&transitions, &order, rows)
}

/// How long the warm-up waits for each connection it opens: a pool with none free (or a
/// server slow to accept) is warmed as far as it goes, not waited for.
const WARM_ACQUIRE_WAIT: Duration = Duration::from_secs(2);

/// What a claim statement binds: the queues, most jobs, the worker, the lease (µs), and
/// the look for expired leases.
struct ClaimArgs {
    queues: Vec<String>,
    worker: WorkerId,
    max: i64,
    lease: i64,
    takeovers: TakeoverLook,
}

impl ClaimArgs {
    /// Bind the claim's parameters, in that order, after what `query` binds already.
    fn bind<'q, O>(
        &'q self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(&self.queues)
            .bind(self.max)
            .bind(self.worker.as_str())
            .bind(self.lease)
            .bind(self.takeovers.window_micros)
    }
}

/// Leases that expired up to this long before the last complete look began are looked at
/// again (statements commit after they begin, and the two clocks differ).
const TAKEOVER_MARGIN: Duration = Duration::from_secs(1);
/// Every this often a look covers every lease, however long ago it expired: the net under
/// the windows (a lease a look skipped because another statement held its row).
const FULL_LOOK_EVERY: Duration = Duration::from_secs(60);
/// The window of a look at every lease: a century, as far as `now() - window` can go.
const FULL_WINDOW_MICROS: i64 = 100 * 365 * 24 * 3600 * 1_000_000;

/// How claims look for expired leases (takeovers). A look walks the lease index from the
/// oldest expiry it covers up to now. While some transaction holds the xmin horizon, that
/// index keeps an entry for each lease of each job run since (vacuum may not remove them):
/// a look at every expired lease then walks all of them, 6.5 ms after a minute of a held
/// horizon at 500 jobs/s. So a look covers only the leases that expired since the last
/// complete look began (with [`TAKEOVER_MARGIN`]): what the earlier looks have not seen.
/// The first look, one after a look cut short by its limit, and one every
/// [`FULL_LOOK_EVERY`] cover all.
#[derive(Debug)]
struct TakeoverLooks {
    /// When the next look is due (one per poll interval).
    next: tokio::time::Instant,
    /// When the last complete look began (`None`: none yet, or the last was cut short).
    covered_since: Option<tokio::time::Instant>,
    /// When the next look at every lease is due.
    next_full: tokio::time::Instant,
}

/// One claim's look for expired leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TakeoverLook {
    /// How far back from now it looks, in microseconds (0: no look).
    window_micros: i64,
    /// When it began.
    began: Option<tokio::time::Instant>,
    /// Most jobs the claim takes, so most the look can take over.
    max: usize,
}

impl TakeoverLook {
    const NONE: Self = Self {
        window_micros: 0,
        began: None,
        max: 0,
    };
}

/// `by` after `now`, or a year after it if that is past what an instant holds (a poll
/// interval of `Duration::MAX`).
fn later(now: tokio::time::Instant, by: Duration) -> tokio::time::Instant {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    now.checked_add(by)
        .or_else(|| now.checked_add(YEAR))
        .unwrap_or(now)
}

impl TakeoverLooks {
    /// Looks from `now` on, the first due at once.
    fn new(now: tokio::time::Instant) -> Self {
        Self {
            next: now,
            covered_since: None,
            next_full: now,
        }
    }

    /// The look a claim of at most `max` jobs beginning `now` makes (at most one per
    /// `every`).
    fn look(&mut self, now: tokio::time::Instant, every: Duration, max: usize) -> TakeoverLook {
        if now < self.next {
            return TakeoverLook::NONE;
        }
        self.next = later(now, every);
        let window_micros = match self.covered_since {
            Some(since) if now < self.next_full => dur_micros(
                now.saturating_duration_since(since)
                    .saturating_add(TAKEOVER_MARGIN),
            )
            .max(1),
            _ => {
                self.next_full = later(now, FULL_LOOK_EVERY);
                FULL_WINDOW_MICROS
            }
        };
        TakeoverLook {
            window_micros,
            began: Some(now),
            max,
        }
    }

    /// Note that `look` took over `taken_over` jobs: it covered every lease in its window
    /// unless its limit may have cut it short (then the next look covers all).
    fn looked(&mut self, look: &TakeoverLook, taken_over: usize) {
        let Some(began) = look.began else {
            return;
        };
        if taken_over >= look.max {
            self.covered_since = None;
        } else if self.covered_since.is_none_or(|since| since < began) {
            self.covered_since = Some(began);
        }
    }
}

/// Finish `transitions` (ids distinct) and claim due jobs for `claim`, in one statement.
async fn finish_and_claim_statement<'c, E: sqlx::PgExecutor<'c>>(
    exec: E,
    shared: &Shared,
    sql: &Statements,
    transitions: &[Transition],
    claim: &ClaimArgs,
) -> Result<(Vec<TransitionResult>, Vec<Claim>, usize)> {
    let mut args = FinishArgs::new(transitions);
    let order = std::mem::take(&mut args.order);
    shared.count_statement();
    let rows = claim
        .bind(args.bind(
            sqlx::query_as::<_, FinishAndClaimRow>(stmt(&sql.finish_and_claim)),
            shared,
        ))
        .fetch_all(exec)
        .await
        .map_err(|e| db_error("finish jobs and claim the next", e))?;
    let mut finished = None;
    let mut claimed = Vec::with_capacity(rows.len());
    let mut taken_over = 0;
    for row in rows {
        if row.finished.is_some() {
            finished = row.finished;
        }
        if let Some(claim) = row.claim {
            taken_over += usize::from(claim.took_over());
            claimed.push(claim.into_claim()?);
        }
    }
    let finished = finished.ok_or_else(|| {
        Error::new(
            ErrorKind::Backend,
            "PostgreSQL answered a finish and claim without the finish's answers",
        )
    })?;
    let results = finish_answers(transitions, &order, finished)?;
    Ok((results, claimed, taken_over))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: Duration = Duration::from_secs(1);

    /// Looks whose first, at the returned start, took over nothing.
    fn after_a_first_complete_look() -> (tokio::time::Instant, TakeoverLooks) {
        let start = tokio::time::Instant::now();
        let mut looks = TakeoverLooks::new(start);
        let first = looks.look(start, POLL, 8);
        looks.looked(&first, 0);
        (start, looks)
    }

    #[test]
    fn the_first_look_covers_every_lease_and_the_next_only_what_is_new() {
        let start = tokio::time::Instant::now();
        let mut looks = TakeoverLooks::new(start);
        let first = looks.look(start, POLL, 8);
        assert_eq!(first.window_micros, FULL_WINDOW_MICROS);
        // Within the poll interval: no look at all.
        assert_eq!(looks.look(start + POLL / 2, POLL, 8), TakeoverLook::NONE);
        looks.looked(&first, 0);
        // The next covers what expired since the first began, and the margin.
        let second = looks.look(start + POLL, POLL, 8);
        assert_eq!(second.window_micros, dur_micros(POLL + TAKEOVER_MARGIN));
        looks.looked(&second, 3);
        let third = looks.look(start + POLL * 3, POLL, 8);
        assert_eq!(third.window_micros, dur_micros(POLL * 2 + TAKEOVER_MARGIN));
    }

    #[test]
    fn a_look_cut_short_by_its_limit_is_followed_by_one_at_every_lease() {
        let (start, mut looks) = after_a_first_complete_look();
        let second = looks.look(start + POLL, POLL, 8);
        assert!(second.window_micros < FULL_WINDOW_MICROS);
        // As many taken over as it could take: older expired leases may be left.
        looks.looked(&second, 8);
        let third = looks.look(start + POLL * 2, POLL, 8);
        assert_eq!(third.window_micros, FULL_WINDOW_MICROS);
    }

    #[test]
    fn a_look_whose_statement_failed_covers_nothing() {
        let (start, mut looks) = after_a_first_complete_look();
        // The second look's statement fails: `looked` is never called for it.
        let _ = looks.look(start + POLL, POLL, 8);
        let third = looks.look(start + POLL * 2, POLL, 8);
        assert_eq!(third.window_micros, dur_micros(POLL * 2 + TAKEOVER_MARGIN));
    }

    #[test]
    fn a_poll_interval_past_what_an_instant_holds_does_not_panic() {
        let start = tokio::time::Instant::now();
        let mut looks = TakeoverLooks::new(start);
        let first = looks.look(start, Duration::MAX, 8);
        assert_eq!(first.window_micros, FULL_WINDOW_MICROS);
        assert_eq!(
            looks.look(start + Duration::from_secs(3600), Duration::MAX, 8),
            TakeoverLook::NONE
        );
    }

    #[test]
    fn every_lease_is_looked_at_again_once_a_minute() {
        let start = tokio::time::Instant::now();
        let mut looks = TakeoverLooks::new(start);
        let mut at = start;
        let mut full = 0;
        while at < start + FULL_LOOK_EVERY * 2 {
            let look = looks.look(at, POLL, 8);
            if look.window_micros == FULL_WINDOW_MICROS {
                full += 1;
            } else {
                assert!(look.window_micros <= dur_micros(POLL + TAKEOVER_MARGIN));
            }
            looks.looked(&look, 0);
            at += POLL;
        }
        assert_eq!(full, 2, "one at the start and one a minute later");
    }
}
