//! The ready ring: where claims find queued jobs, in three slots emptied in turn by
//! `TRUNCATE` (migration `20261204000003_ready_ring.sql` says why).

use std::time::Duration;

use sqlx::AssertSqlSafe;

use super::PostgresState;
use crate::postgres::db_error;
use crate::util::dur_micros;
use crate::{Error, ErrorKind, Result};

/// Most live rows a slot may still hold when its turn comes; they are written back after the
/// `TRUNCATE`, under a lock every claim waits for. More than this (a backlog nobody drains
/// yet) and the ring stays where it is until the claims have taken them.
const MOST_CARRIED: i64 = 10_000;

/// What [`PostgresState::rotate_ready`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RingMove {
    /// The ring moved on to `slot`, emptied first; `carried` rows it still held (jobs queued
    /// but not yet due, or not yet claimed) were written back.
    Moved {
        /// The slot new rows now go to.
        slot: i16,
        /// Live rows written back after the `TRUNCATE`.
        carried: u64,
    },
    /// Another process moved it, or found a backlog in its way, less than the interval asked
    /// for ago, or is moving it now.
    NotDue,
    /// The claims under way held the next slot past the lock timeout; try again later.
    Busy,
    /// The next slot still holds more live rows than a move carries (a backlog): the ring
    /// stays until the claims have drained it.
    Backlog,
}

impl PostgresState {
    /// Move the ready ring on to its next slot now, whenever it last moved: what the backend
    /// does by itself every [`PostgresConfig::ring_interval`]. Claims then meet only the
    /// dead rows of the last few intervals, however long another transaction keeps vacuum
    /// from removing them.
    ///
    /// ```no_run
    /// # async fn run() -> jobforge::Result<()> {
    /// use jobforge::postgres::{PostgresBackend, RingMove};
    ///
    /// let pg = PostgresBackend::connect("postgres://localhost/app").await?;
    /// if let RingMove::Moved { slot, carried } = pg.store().rotate_ready().await? {
    ///     println!("new jobs go to slot {slot}; {carried} queued jobs carried over");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`PostgresConfig::ring_interval`]: crate::postgres::PostgresConfig::ring_interval
    pub async fn rotate_ready(&self) -> Result<RingMove> {
        self.rotate_ready_after(Duration::ZERO).await
    }

    /// Move the ring on if it last moved at least `interval` ago (by any process): one call
    /// of the function `ring_rotate` (see the migration `20261204000003_ready_ring.sql`), so
    /// the lock every claim waits for is held for that call only. Then, in a statement of its
    /// own (each move holds its lock only for itself), the lease slots likewise
    /// (`lease_rotate`, migration `20261205000004_leases.sql`), whatever the ready ring did.
    pub(crate) async fn rotate_ready_after(&self, interval: Duration) -> Result<RingMove> {
        let ring = self.rotate_ring_after(interval).await;
        self.shared.count_statement();
        sqlx::query_scalar::<_, bool>(AssertSqlSafe(format!(
            "SELECT {}.lease_rotate($1 * interval '1 microsecond')",
            self.shared.quoted_schema()
        )))
        .bind(dur_micros(interval))
        .fetch_one(&self.shared.pool)
        .await
        .map_err(|e| db_error("move the lease slots on", e))?;
        ring
    }

    async fn rotate_ring_after(&self, interval: Duration) -> Result<RingMove> {
        self.shared.count_statement();
        let (outcome, slot, carried): (String, Option<i16>, i64) =
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT outcome, new_slot, carried \
                 FROM {}.ring_rotate($1 * interval '1 microsecond', $2)",
                self.shared.quoted_schema()
            )))
            .bind(dur_micros(interval))
            .bind(MOST_CARRIED)
            .fetch_one(&self.shared.pool)
            .await
            .map_err(|e| db_error("move the ready ring on", e))?;
        match (outcome.as_str(), slot) {
            ("moved", Some(slot)) => Ok(RingMove::Moved {
                slot,
                carried: u64::try_from(carried).unwrap_or(0),
            }),
            ("not_due", _) => Ok(RingMove::NotDue),
            ("busy", _) => Ok(RingMove::Busy),
            ("backlog", _) => Ok(RingMove::Backlog),
            _ => Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "moving the ready ring on answered `{outcome}` (slot {slot:?}); the schema's \
                     migrations may be newer than this version of jobforge"
                ),
            )),
        }
    }
}
