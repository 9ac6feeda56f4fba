//! Rows as PostgreSQL answers them, and their mapping to the crate's types.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};
use uuid::Uuid;

use crate::job::{JobId, JobRecord, JobState, Payload, WorkerId};
use crate::state::Claim;
use crate::{Error, ErrorKind, Result};

/// A job row as stored.
#[derive(FromRow)]
pub(super) struct JobRow {
    pub(super) id: Uuid,
    pub(super) kind: String,
    pub(super) queue: String,
    pub(super) payload: String,
    pub(super) state: String,
    pub(super) priority: i16,
    pub(super) attempt: i32,
    pub(super) max_attempts: i32,
    pub(super) timeout_ms: Option<i64>,
    pub(super) idempotency_key: Option<String>,
    pub(super) tags: Vec<String>,
    pub(super) tenant: Option<String>,
    pub(super) strategy: Option<String>,
    pub(super) run_at: DateTime<Utc>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) started_at: Option<DateTime<Utc>>,
    pub(super) finished_at: Option<DateTime<Utc>>,
    pub(super) result: Option<String>,
    pub(super) last_error: Option<String>,
    pub(super) lease_owner: Option<String>,
    pub(super) lease_expires_at: Option<DateTime<Utc>>,
    pub(super) cancel_requested: bool,
    pub(super) version: i64,
    /// A workflow step's link (JSON), NULL for a plain job.
    pub(super) step: Option<String>,
    pub(super) waiting_on: Option<i32>,
    /// The latest progress report (JSON).
    pub(super) progress: Option<String>,
    /// The W3C trace context it was submitted in.
    pub(super) traceparent: Option<String>,
}

pub(super) fn stored_payload(text: String, id: Uuid) -> Result<Payload> {
    Payload::from_json(text).map_err(|e| {
        Error::new(
            ErrorKind::Serialization,
            format!("job {id}: stored JSON could not be read back: {e}"),
        )
    })
}

pub(super) fn parse_state(text: &str) -> Result<JobState> {
    text.parse().map_err(|_| {
        Error::new(
            ErrorKind::Backend,
            format!("the jobs table holds an unknown state `{text}`"),
        )
    })
}

pub(super) fn count_u32(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

pub(super) fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl JobRow {
    pub(super) fn into_record(self) -> Result<JobRecord> {
        Ok(JobRecord {
            id: JobId::from_uuid(self.id),
            state: parse_state(&self.state)?,
            payload: stored_payload(self.payload, self.id)?,
            result: self
                .result
                .map(|r| stored_payload(r, self.id))
                .transpose()?,
            kind: self.kind,
            queue: self.queue,
            priority: self.priority,
            attempt: count_u32(self.attempt),
            max_attempts: count_u32(self.max_attempts),
            timeout: self
                .timeout_ms
                .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
            idempotency_key: self.idempotency_key,
            tags: self.tags,
            tenant: self.tenant,
            strategy: self.strategy,
            traceparent: self.traceparent,
            run_at: self.run_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            last_error: self.last_error,
            lease_owner: self.lease_owner.map(WorkerId::new),
            lease_expires_at: self.lease_expires_at,
            cancel_requested: self.cancel_requested,
            version: u64::try_from(self.version).unwrap_or(0),
            step: match self.step {
                None => None,
                Some(text) => {
                    let mut link: Box<crate::workflow::StepLink> = serde_json::from_str(&text)
                        .map_err(|e| {
                            Error::new(
                                ErrorKind::Serialization,
                                format!(
                                    "job {}: its stored workflow step could not be read back: {e}",
                                    self.id
                                ),
                            )
                        })?;
                    link.waiting_on = self.waiting_on.map_or(0, count_u32);
                    Some(link)
                }
            },
            progress: match self.progress {
                None => None,
                Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
                    Error::new(
                        ErrorKind::Serialization,
                        format!(
                            "job {}: its stored progress could not be read back: {e}",
                            self.id
                        ),
                    )
                })?),
            },
        })
    }
}

/// One answer of a claim statement.
pub(super) struct ClaimRow {
    pub(super) input_id: Uuid,
    pub(super) outcome: String,
    pub(super) found_state: Option<String>,
    pub(super) found_run_at: Option<DateTime<Utc>>,
    pub(super) found_reason: Option<String>,
    pub(super) job: Option<JobRow>,
}

impl<'r> FromRow<'r, PgRow> for ClaimRow {
    fn from_row(row: &'r PgRow) -> std::result::Result<Self, sqlx::Error> {
        let outcome: String = row.try_get("outcome")?;
        let job = if outcome == "claimed" {
            Some(JobRow::from_row(row)?)
        } else {
            None
        };
        Ok(Self {
            input_id: row.try_get("input_id")?,
            outcome,
            found_state: row.try_get("found_state")?,
            found_run_at: row.try_get("found_run_at")?,
            found_reason: row.try_get("found_reason")?,
            job,
        })
    }
}

/// One answer of a finish-and-claim statement: the finish's answers (on the first row
/// only), and a job claimed (on every row but the one answering a claim that took nothing).
pub(super) struct FinishAndClaimRow {
    pub(super) finished: Option<Vec<FinishRow>>,
    pub(super) claim: Option<ClaimRow>,
}

impl<'r> FromRow<'r, PgRow> for FinishAndClaimRow {
    fn from_row(row: &'r PgRow) -> std::result::Result<Self, sqlx::Error> {
        let states: Option<Vec<Option<String>>> = row.try_get("f_cur_state")?;
        let finished = match states {
            None => None,
            Some(states) => {
                let claims: Vec<Option<i64>> = row.try_get("f_cur_claim")?;
                let owners: Vec<Option<String>> = row.try_get("f_cur_owner")?;
                let new_states: Vec<Option<String>> = row.try_get("f_new_state")?;
                let new_versions: Vec<Option<i64>> = row.try_get("f_new_version")?;
                Some(
                    states
                        .into_iter()
                        .zip(claims)
                        .zip(owners)
                        .zip(new_states)
                        .zip(new_versions)
                        .map(
                            |((((cur_state, cur_claim), cur_owner), new_state), new_version)| {
                                FinishRow {
                                    cur_state,
                                    cur_claim,
                                    cur_owner,
                                    new_state,
                                    new_version,
                                }
                            },
                        )
                        .collect(),
                )
            }
        };
        let outcome: Option<String> = row.try_get("outcome")?;
        let claim = match outcome {
            Some(_) => Some(ClaimRow::from_row(row)?),
            None => None,
        };
        Ok(Self { finished, claim })
    }
}

impl ClaimRow {
    /// Whether the claim took the job over from a worker whose lease expired (the row was
    /// locked while `running`).
    pub(super) fn took_over(&self) -> bool {
        self.found_state.as_deref() == Some("running")
    }

    pub(super) fn into_claim(self) -> Result<Claim> {
        let id = JobId::from_uuid(self.input_id);
        Ok(match (self.outcome.as_str(), self.job) {
            ("claimed", Some(job)) => Claim::Claimed(job.into_record()?),
            ("exhausted", _) => Claim::Exhausted {
                id,
                reason: self.found_reason.unwrap_or_default(),
            },
            ("cancelled", _) => Claim::Cancelled {
                id,
                reason: self.found_reason.unwrap_or_default(),
            },
            ("not_due", _) => Claim::NotDue {
                id,
                run_at: self.found_run_at.unwrap_or_else(Utc::now),
            },
            _ => Claim::Skipped {
                id,
                state: self.found_state.as_deref().map(parse_state).transpose()?,
            },
        })
    }
}

/// A job `create` did not store (all `None` in the one row answered when none was skipped).
#[derive(FromRow)]
pub(super) struct SkippedRow {
    /// Its place in the batch, from 1.
    pub(super) ord: Option<i64>,
    pub(super) holder: Option<Uuid>,
    /// Whether a job with its id exists (as the statement saw the table).
    pub(super) id_taken: Option<bool>,
}

#[derive(FromRow)]
pub(super) struct FinishRow {
    pub(super) cur_state: Option<String>,
    pub(super) cur_claim: Option<i64>,
    pub(super) cur_owner: Option<String>,
    pub(super) new_state: Option<String>,
    pub(super) new_version: Option<i64>,
}

#[derive(FromRow)]
pub(super) struct EventRow {
    pub(super) at: DateTime<Utc>,
    pub(super) from_state: Option<String>,
    pub(super) to_state: String,
    pub(super) attempt: i32,
    pub(super) worker: Option<String>,
    pub(super) reason: Option<String>,
}

#[derive(FromRow)]
pub(super) struct CountRow {
    pub(super) kind: String,
    pub(super) state: String,
    pub(super) n: i64,
}

/// Split a batch so no chunk names the same job twice: each chunk is one statement, and
/// chunks run in order, so repeated ids are answered as if the items ran one by one.
pub(super) fn distinct_chunks<T>(items: Vec<T>, id: impl Fn(&T) -> JobId) -> Vec<Vec<T>> {
    let mut chunks: Vec<Vec<T>> = Vec::new();
    let mut seen: HashSet<JobId> = HashSet::new();
    let mut current = Vec::new();
    for item in items {
        if !seen.insert(id(&item)) {
            chunks.push(std::mem::take(&mut current));
            seen.clear();
            seen.insert(id(&item));
        }
        current.push(item);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}
