use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ::redis::Value;
use ::redis::aio::MultiplexedConnection;
use chrono::Utc;

use super::{RedisStreamsQueue, SCRIPTS, arg};
use crate::job::{JobId, WorkerId};
use crate::queue::{Envelope, Lease, QueueManager, Requeue, Reserve};
use crate::redis::reply::{array, int, need_int, need_text, owned, unexpected};
use crate::util::dur_millis;
use crate::util::from_micros;
use crate::{Error, ErrorKind, Result};

const BLOCKERS_KEPT: usize = 16;

pub(super) struct Attempt {
    pub(super) leases: Vec<Lease>,
    pub(super) next_due_ms: Option<u64>,
    pub(super) lanes: Vec<String>,
}

impl RedisStreamsQueue {
    pub(super) fn parse_leases(
        &self,
        queue: &str,
        worker: &WorkerId,
        lease: Duration,
        flat: Vec<Value>,
    ) -> Result<Vec<Lease>> {
        let expires_at =
            Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let mut out = Vec::with_capacity(flat.len() / 7);
        for item in flat.chunks(7) {
            let [id, pri, eid, token, attempt, run_at, kind] = item else {
                return Err(unexpected("reserve (lease)", &Value::Array(item.to_vec())));
            };
            let id: JobId = need_text("job id", id)?.parse()?;
            let pri_text = need_text("priority", pri)?;
            let priority = pri_text.parse().map_err(|_| unexpected("priority", pri))?;
            let eid = need_text("entry id", eid)?;
            let token = u64::try_from(need_int("token", token)?).unwrap_or(0);
            let attempt = u32::try_from(need_int("attempt", attempt)?).unwrap_or(0);
            let run_at = from_micros(need_int("run_at", run_at)?);
            out.push(Lease {
                envelope: Envelope {
                    id,
                    kind: need_text("kind", kind)?.into(),
                    queue: queue.into(),
                    priority,
                    run_at,
                    attempt,
                },
                worker: worker.clone(),
                token,
                receipt: Some(format!("{pri_text}:{eid}")),
                expires_at,
            });
        }
        Ok(out)
    }

    pub(super) async fn reserve_from(
        &self,
        queue: &str,
        req: &Reserve<'_>,
        max: usize,
    ) -> Result<Attempt> {
        let lease_ms = dur_millis(req.lease).max(1);
        let reclaim_every = (lease_ms / 4).clamp(10, 1_000);
        let args = [
            arg(req.worker.as_str()),
            arg(max),
            arg(lease_ms),
            arg(self.config.promote_batch.max(max)),
            arg(reclaim_every),
            arg(dur_millis(self.config.max_lane_wait)),
        ];
        let prefix = self.key_prefix(queue);
        let reply = self.link.eval(&SCRIPTS.reserve, &[&prefix], &args).await?;
        let mut parts = array("reserve", reply)?.into_iter();
        let leases = array("reserve leases", parts.next().unwrap_or(Value::Nil))?;
        let next_due = parts.next().as_ref().and_then(int).unwrap_or(-1);
        let deleted = array("reserve deleted", parts.next().unwrap_or(Value::Nil))?;
        let lanes: Vec<String> = array("reserve lanes", parts.next().unwrap_or(Value::Nil))?
            .iter()
            .filter_map(owned)
            .collect();
        if !deleted.is_empty() {
            let ids: Vec<String> = deleted.iter().filter_map(owned).collect();
            tracing::warn!(
                queue,
                entries = ?ids,
                "XAUTOCLAIM reported pending entries whose stream entry was deleted (trimmed or lost); \
                 they are dropped from the pending list, and the reconciler re-enqueues their jobs from state"
            );
        }
        Ok(Attempt {
            leases: self.parse_leases(queue, req.worker, req.lease, leases)?,
            next_due_ms: u64::try_from(next_due).ok(),
            lanes,
        })
    }

    pub(super) async fn take_blocker(&self) -> Result<MultiplexedConnection> {
        if let Some(conn) = self.blockers.lock().pop() {
            return Ok(conn);
        }
        self.link
            .blocking_conn(self.config.link.connect_timeout)
            .await
    }

    pub(super) fn put_blocker(&self, conn: MultiplexedConnection) {
        let mut blockers = self.blockers.lock();
        if blockers.len() < BLOCKERS_KEPT {
            blockers.push(conn);
        }
    }

    /// Wait up to `block` on every lane of `queues` with a blocking `XREADGROUP` on a
    /// dedicated connection; turn what arrives into leases.
    pub(super) async fn block_read(
        &self,
        req: &Reserve<'_>,
        queues: &[(String, Vec<String>)],
        block: Duration,
    ) -> Result<Vec<Lease>> {
        let mut keys: HashMap<String, (usize, String)> = HashMap::new();
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg("jobforge")
            .arg(req.worker.as_str())
            .arg("COUNT")
            .arg(req.max.min(self.config.chunk_size))
            .arg("BLOCK")
            .arg(dur_millis(block).max(1))
            .arg("STREAMS");
        let mut n = 0;
        for (qi, (queue, lanes)) in queues.iter().enumerate() {
            let prefix = self.key_prefix(queue);
            let mut lanes = lanes.clone();
            if !lanes.iter().any(|l| l == "0") {
                lanes.push("0".to_owned());
            }
            for lane in lanes {
                let key = format!("{prefix}:s:{lane}");
                cmd.arg(&key);
                keys.insert(key, (qi, lane));
                n += 1;
            }
        }
        for _ in 0..n {
            cmd.arg(">");
        }
        let mut conn = self.take_blocker().await?;
        self.link.count_round_trip();
        let limit = block + self.config.link.response_timeout;
        let reply = match tokio::time::timeout(limit, cmd.query_async::<Value>(&mut conn)).await {
            Ok(Ok(value)) => {
                self.put_blocker(conn);
                value
            }
            Ok(Err(err)) if err.code() == Some("NOGROUP") => {
                self.put_blocker(conn);
                // A stream or group is gone (Redis restarted or was flushed): recreate them.
                for (queue, lanes) in queues {
                    let prefix = self.key_prefix(queue);
                    let args: Vec<Vec<u8>> = lanes.iter().map(arg).collect();
                    self.link.eval(&SCRIPTS.ensure, &[&prefix], &args).await?;
                }
                return Ok(Vec::new());
            }
            Ok(Err(err)) => {
                // The server went away (or restarted): the idle blocking connections are as
                // dead as this one; open fresh ones next time.
                self.blockers.lock().clear();
                return Err(self.link.error("blocking read", err));
            }
            Err(_) => {
                self.blockers.lock().clear();
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "blocking read on the Redis queue got no answer within {limit:?}; the connection was dropped"
                    ),
                ));
            }
        };
        // Group what arrived per queue: (priority, entry id, job id).
        let mut per_queue: BTreeMap<usize, Vec<[String; 3]>> = BTreeMap::new();
        for stream in array("XREADGROUP", reply)? {
            let mut parts = array("XREADGROUP stream", stream)?.into_iter();
            let key = parts.next().as_ref().and_then(owned).unwrap_or_default();
            let Some((qi, lane)) = keys.get(&key) else {
                continue;
            };
            for entry in array("XREADGROUP entries", parts.next().unwrap_or(Value::Nil))? {
                let mut e = array("XREADGROUP entry", entry)?.into_iter();
                let eid = e.next().as_ref().and_then(owned).unwrap_or_default();
                let fields = array("XREADGROUP fields", e.next().unwrap_or(Value::Nil))?;
                let job = fields.get(1).and_then(owned).unwrap_or_default();
                per_queue
                    .entry(*qi)
                    .or_default()
                    .push([lane.clone(), eid, job]);
            }
        }
        let mut leases = Vec::new();
        for (qi, entries) in per_queue {
            let queue = &queues[qi].0;
            let prefix = self.key_prefix(queue);
            let args: Vec<Vec<u8>> = std::iter::once(arg(dur_millis(req.lease).max(1)))
                .chain(
                    entries
                        .iter()
                        .flat_map(|[lane, eid, job]| [arg(lane), arg(eid), arg(job)]),
                )
                .collect();
            let reply = self.link.eval(&SCRIPTS.adopt, &[&prefix], &args).await?;
            let flat = array("adopt", reply)?;
            leases.extend(self.parse_leases(queue, req.worker, req.lease, flat)?);
        }
        if leases.len() > req.max {
            // A blocking read counts per stream; give back what is over the batch.
            let extra = leases.split_off(req.max);
            let now = Utc::now();
            let items: Vec<Requeue> = extra
                .into_iter()
                .map(|lease| Requeue {
                    run_at: now,
                    attempt: lease.envelope.attempt,
                    lease,
                })
                .collect();
            self.requeue(&items).await?;
        }
        Ok(leases)
    }
}
