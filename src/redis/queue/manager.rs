use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ::redis::Value;
use async_trait::async_trait;

use super::{RedisStreamsQueue, SCRIPTS, arg, receipt};
use crate::Result;
use crate::job::JobId;
use crate::queue::{DeadLetter, Envelope, Lease, QueueManager, QueueStats, Requeue, Reserve};
use crate::redis::client::Lua;
use crate::redis::reply::int;
use crate::util::dur_millis;
use crate::util::micros;

impl RedisStreamsQueue {
    pub(super) async fn lease_script(
        &self,
        lua: &Lua,
        head: &[Vec<u8>],
        queue: &str,
        items: &[Vec<Vec<u8>>],
    ) -> Result<Vec<Value>> {
        let prefix = self.key_prefix(queue);
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(self.config.chunk_size) {
            let mut args: Vec<Vec<u8>> = head.to_vec();
            for item in chunk {
                args.extend(item.iter().cloned());
            }
            let reply = self.link.eval(lua, &[&prefix], &args).await?;
            match reply {
                Value::Array(values) => out.extend(values),
                other => out.push(other),
            }
        }
        Ok(out)
    }
}

/// A lease as the scripts check it: id, priority, entry id, the job's metadata exactly as
/// this delivery left it (entry, token, priority, attempt, run_at, kind), kind, attempt.
fn lease_quad(lease: &Lease) -> Option<Vec<Vec<u8>>> {
    let (pri, eid) = receipt(lease)?;
    let env = &lease.envelope;
    Some(vec![
        arg(env.id),
        arg(pri),
        arg(eid),
        arg(format!(
            "{eid}|{}|{pri}|{}|{}|{}",
            lease.token,
            env.attempt,
            micros(env.run_at),
            env.kind
        )),
        arg(&env.kind),
        arg(env.attempt),
    ])
}

#[async_trait]
impl QueueManager for RedisStreamsQueue {
    async fn enqueue(&self, jobs: &[Envelope]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut groups: BTreeMap<&str, Vec<&Envelope>> = BTreeMap::new();
        for job in jobs {
            groups.entry(&*job.queue).or_default().push(job);
        }
        for (queue, mut group) in groups {
            self.register(queue).await?;
            // Within a lane, ready jobs are delivered in stream order: add them by run_at.
            group.sort_by_key(|e| e.run_at);
            let items: Vec<Vec<Vec<u8>>> = group
                .iter()
                .map(|e| {
                    vec![
                        arg(e.id),
                        arg(e.priority),
                        arg(e.attempt),
                        arg(micros(e.run_at)),
                        arg(&e.kind),
                    ]
                })
                .collect();
            self.lease_script(&SCRIPTS.enqueue, &[], queue, &items)
                .await?;
        }
        Ok(())
    }

    async fn reserve(&self, req: &Reserve<'_>) -> Result<Vec<Lease>> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + req.wait;
        let reclaim_every = Duration::from_millis((dur_millis(req.lease) / 4).clamp(10, 1_000));
        loop {
            // Start at a different queue each call, so no listed queue is starved.
            let n = req.queues.len();
            let start = self.rotate.fetch_add(1, Ordering::Relaxed) % n;
            let mut leases = Vec::new();
            let mut next_due: Option<u64> = None;
            let mut lanes = Vec::with_capacity(n);
            for i in 0..n {
                let queue = &req.queues[(start + i) % n];
                let want = (req.max - leases.len()).min(self.config.chunk_size);
                if want == 0 {
                    break;
                }
                let got = self.reserve_from(queue, req, want).await?;
                leases.extend(got.leases);
                if let Some(due) = got.next_due_ms {
                    next_due = Some(next_due.map_or(due, |d| d.min(due)));
                }
                lanes.push((queue.clone(), got.lanes));
            }
            if !leases.is_empty() {
                return Ok(leases);
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() || lanes.len() < n {
                return Ok(leases);
            }
            let mut block = remaining.min(reclaim_every);
            if let Some(due) = next_due {
                block = block.min(Duration::from_millis(due.max(1)));
            }
            let leases = self.block_read(req, &lanes, block).await?;
            if !leases.is_empty() {
                return Ok(leases);
            }
        }
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>> {
        let mut out = vec![false; leases.len()];
        // Per queue and worker (the consumer that owns the pending entries).
        let mut groups: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
        for (i, lease) in leases.iter().enumerate() {
            if receipt(lease).is_some() {
                groups
                    .entry((&*lease.envelope.queue, lease.worker.as_str()))
                    .or_default()
                    .push(i);
            }
        }
        for ((queue, worker), idx) in groups {
            let items: Vec<Vec<Vec<u8>>> =
                idx.iter().filter_map(|&i| lease_quad(&leases[i])).collect();
            let held = self
                .lease_script(
                    &SCRIPTS.extend,
                    &[arg(worker), arg(dur_millis(lease).max(1))],
                    queue,
                    &items,
                )
                .await?;
            for (&i, ok) in idx.iter().zip(held) {
                out[i] = int(&ok) == Some(1);
            }
        }
        Ok(out)
    }

    async fn ack(&self, leases: &[Lease]) -> Result<()> {
        let mut groups: BTreeMap<&str, Vec<Vec<Vec<u8>>>> = BTreeMap::new();
        for lease in leases {
            if let Some(quad) = lease_quad(lease) {
                groups.entry(&*lease.envelope.queue).or_default().push(quad);
            }
        }
        for (queue, items) in groups {
            self.lease_script(&SCRIPTS.ack, &[], queue, &items).await?;
        }
        Ok(())
    }

    async fn requeue(&self, items: &[Requeue]) -> Result<()> {
        let mut groups: BTreeMap<&str, Vec<Vec<Vec<u8>>>> = BTreeMap::new();
        for item in items {
            if let Some(mut quad) = lease_quad(&item.lease) {
                quad.push(arg(micros(item.run_at)));
                quad.push(arg(item.attempt));
                groups
                    .entry(&*item.lease.envelope.queue)
                    .or_default()
                    .push(quad);
            }
        }
        for (queue, items) in groups {
            self.lease_script(&SCRIPTS.requeue, &[], queue, &items)
                .await?;
        }
        Ok(())
    }

    async fn discard(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        let items: Vec<Vec<Vec<u8>>> = ids.iter().map(|id| vec![arg(id)]).collect();
        let replies = self
            .lease_script(&SCRIPTS.discard, &[], queue, &items)
            .await?;
        Ok(replies
            .iter()
            .filter_map(|v| int(v).and_then(|n| usize::try_from(n).ok()))
            .sum())
    }

    async fn dead_letter(&self, items: &[DeadLetter]) -> Result<()> {
        let mut groups: BTreeMap<&str, Vec<Vec<Vec<u8>>>> = BTreeMap::new();
        for item in items {
            if let Some(mut quad) = lease_quad(&item.lease) {
                quad.push(arg(&item.reason));
                groups
                    .entry(&*item.lease.envelope.queue)
                    .or_default()
                    .push(quad);
            }
        }
        let cap = [arg(self.config.dead_letter_capacity)];
        for (queue, items) in groups {
            self.lease_script(&SCRIPTS.dead, &cap, queue, &items)
                .await?;
        }
        Ok(())
    }

    async fn stats(&self) -> Result<QueueStats> {
        let mut stats = QueueStats::default();
        for queue in self.queues().await? {
            let one = self.queue_stats(&queue).await?;
            stats.ready += one.ready;
            stats.in_flight += one.in_flight;
            stats.delayed += one.delayed;
            stats.dead += one.dead;
            for (kind, k) in one.per_kind {
                let all = stats.per_kind.entry(kind).or_default();
                all.ready += k.ready;
                all.in_flight += k.in_flight;
                all.delayed += k.delayed;
                all.dead += k.dead;
            }
        }
        Ok(stats)
    }

    async fn ping(&self) -> Result<()> {
        self.link.ping().await
    }
}
