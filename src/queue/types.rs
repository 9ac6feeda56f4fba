use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::job::{JobId, JobRecord, Priority, WorkerId};

/// What a queue holds for one job: enough to order and route it, not the payload (the
/// [`StateManager`](crate::StateManager) keeps that).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The job.
    pub id: JobId,
    /// Its kind (shared text: cloning an envelope does not copy it).
    pub kind: Arc<str>,
    /// The queue it belongs to.
    pub queue: Arc<str>,
    /// Higher is delivered first among due jobs.
    pub priority: Priority,
    /// Not delivered before this time.
    pub run_at: DateTime<Utc>,
    /// Attempts already started (informational; the state store owns the count).
    pub attempt: u32,
}

impl Envelope {
    /// The envelope for a stored job.
    #[must_use]
    pub fn from_record(record: &JobRecord) -> Self {
        Self {
            id: record.id,
            kind: Arc::from(record.kind.as_str()),
            queue: Arc::from(record.queue.as_str()),
            priority: record.priority,
            run_at: record.run_at,
            attempt: record.attempt,
        }
    }
}

/// A delivery held by one worker until it is acknowledged, requeued, dead-lettered, or its
/// lease runs out (then the job is delivered again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// What was delivered.
    pub envelope: Envelope,
    /// Who holds it.
    pub worker: WorkerId,
    /// Identifies this delivery: a stale holder's ack cannot remove a newer delivery.
    pub token: u64,
    /// A backend's own handle for the delivery (a stream entry id, say), if it has one.
    pub receipt: Option<String>,
    /// When the lease runs out unless extended.
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// The leased job's id.
    #[must_use]
    pub fn id(&self) -> JobId {
        self.envelope.id
    }
}

/// Give a leased job back to the queue, due again at `run_at` (a retry or a deferral).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requeue {
    /// The delivery to give back.
    pub lease: Lease,
    /// When it is due again.
    pub run_at: DateTime<Utc>,
    /// The attempt count to carry with it.
    pub attempt: u32,
}

/// Move a leased job to the dead-letter list, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The delivery that died.
    pub lease: Lease,
    /// Why it died.
    pub reason: String,
}

/// A request for deliveries.
#[derive(Debug, Clone)]
pub struct Reserve<'a> {
    /// Who asks; the leases will name it.
    pub worker: &'a WorkerId,
    /// Which queues to take from.
    pub queues: &'a [String],
    /// At most this many deliveries.
    pub max: usize,
    /// How long each lease lasts before the job may be delivered again.
    pub lease: Duration,
    /// How long to wait for a first due job when none is due now (zero: do not wait).
    pub wait: Duration,
}

/// Counts for one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindQueueStats {
    /// Due and waiting.
    pub ready: u64,
    /// Waiting for their `run_at`.
    pub delayed: u64,
    /// Leased to a worker.
    pub in_flight: u64,
    /// Dead-lettered (kept, up to the queue's dead-letter capacity).
    pub dead: u64,
}

/// What a queue holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Due and waiting.
    pub ready: u64,
    /// Waiting for their `run_at`.
    pub delayed: u64,
    /// Leased to a worker.
    pub in_flight: u64,
    /// Dead-lettered (kept, up to the queue's dead-letter capacity).
    pub dead: u64,
    /// The same counts per kind.
    pub per_kind: BTreeMap<String, KindQueueStats>,
}

/// Jobs waiting in one queue ([`JobStore::queue_depths`](crate::store::JobStore::queue_depths)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDepth {
    /// The queue.
    pub queue: String,
    /// Due jobs per priority, highest priority first (priorities with none are left out).
    pub ready: Vec<PriorityDepth>,
    /// Jobs waiting for their `run_at`, all priorities.
    pub delayed: u64,
    /// The store stopped counting at its budget: the counts are at least these (a
    /// PostgreSQL lane past 10,000 jobs, say).
    pub at_least: bool,
}

impl QueueDepth {
    /// Every due job of the queue.
    #[must_use]
    pub fn ready_total(&self) -> u64 {
        self.ready.iter().map(|p| p.ready).sum()
    }
}

/// Due jobs of one priority in one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityDepth {
    /// The priority.
    pub priority: Priority,
    /// How many are due.
    pub ready: u64,
}

/// Delivery with leases, batch-first: one call reserves, extends or acknowledges many jobs.
///
/// Delivery is at-least-once: a job whose lease runs out is delivered again. The
/// [`StateManager`](crate::StateManager)'s compare-and-set decides who really runs it.
///
/// Implementations must be usable as `Arc<dyn QueueManager>`. A minimal one, delegating to the
/// in-memory queue:
///
/// ```
/// use std::time::Duration;
/// use async_trait::async_trait;
/// use jobforge::queue::{DeadLetter, Envelope, InMemoryQueue, Lease, QueueManager, QueueStats, Requeue, Reserve};
/// use jobforge::Result;
///
/// struct Logged(InMemoryQueue);
///
/// #[async_trait]
/// impl QueueManager for Logged {
///     async fn enqueue(&self, jobs: &[Envelope]) -> Result<()> {
///         println!("enqueue {}", jobs.len());
///         self.0.enqueue(jobs).await
///     }
///     async fn reserve(&self, req: &Reserve<'_>) -> Result<Vec<Lease>> { self.0.reserve(req).await }
///     async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>> { self.0.extend(leases, lease).await }
///     async fn ack(&self, leases: &[Lease]) -> Result<()> { self.0.ack(leases).await }
///     async fn requeue(&self, items: &[Requeue]) -> Result<()> { self.0.requeue(items).await }
///     async fn dead_letter(&self, items: &[DeadLetter]) -> Result<()> { self.0.dead_letter(items).await }
///     async fn stats(&self) -> Result<QueueStats> { self.0.stats().await }
/// }
///
/// let queue: std::sync::Arc<dyn QueueManager> = std::sync::Arc::new(Logged(InMemoryQueue::new()));
/// # drop(queue);
/// ```
#[async_trait]
pub trait QueueManager: Send + Sync + 'static {
    /// Add jobs. An id already in the queue is not added twice.
    async fn enqueue(&self, jobs: &[Envelope]) -> Result<()>;

    /// Lease up to `req.max` due jobs from `req.queues`: highest priority first, then earliest
    /// `run_at`, then first enqueued. Waits up to `req.wait` for a first one.
    async fn reserve(&self, req: &Reserve<'_>) -> Result<Vec<Lease>>;

    /// Heartbeat: push the leases' expiry to `lease` from now. Returns, per lease, whether it
    /// was still held (false: it ran out and was delivered again, or was acknowledged).
    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>>;

    /// Done: remove the jobs. A lease no longer held is ignored.
    async fn ack(&self, leases: &[Lease]) -> Result<()>;

    /// Give jobs back, due again at their `run_at` (retry or deferral).
    async fn requeue(&self, items: &[Requeue]) -> Result<()>;

    /// Remove jobs from delivery and keep them in the dead-letter list with their reason.
    async fn dead_letter(&self, items: &[DeadLetter]) -> Result<()>;

    /// Counts of ready, delayed, in-flight and dead jobs, in all and per kind.
    async fn stats(&self) -> Result<QueueStats>;

    /// Drop the deliveries of these jobs of `queue` that no worker holds (ready or delayed):
    /// they will never run (cancelled while they waited). A held delivery is left to its
    /// holder. Returns how many were dropped.
    ///
    /// The default drops nothing: the deliveries are then dropped when they are handed out,
    /// since the claim finds their jobs finished, and count as ready or delayed until then.
    async fn discard(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        let _ = (queue, ids);
        Ok(0)
    }

    /// Whether the backend is reachable (used by readiness checks).
    async fn ping(&self) -> Result<()> {
        self.stats().await.map(|_| ())
    }
}
