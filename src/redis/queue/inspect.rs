use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ::redis::Value;
use async_trait::async_trait;

use super::{RedisStreamsQueue, SCRIPTS, arg};
use crate::Result;
use crate::job::JobId;
use crate::queue::{Envelope, KindQueueStats, QueueInspect, QueueStats};
use crate::redis::reply::{array, int, owned, text, unexpected};
use crate::util::dur_millis;

impl RedisStreamsQueue {
    /// Every queue of the namespace that has been used.
    pub async fn queues(&self) -> Result<Vec<String>> {
        let mut cmd = ::redis::cmd("SMEMBERS");
        cmd.arg(self.registry());
        let reply = self.link.query("list queues", &cmd).await?;
        let mut names: Vec<String> = array("SMEMBERS", reply)?.iter().filter_map(owned).collect();
        names.extend(self.seen_queues.lock().iter().cloned());
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The dead letters of `queue`, oldest first (at most `limit`): the envelope's id, kind
    /// and attempt, and the reason.
    pub async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<(JobId, String, u32, String)>> {
        let mut cmd = ::redis::cmd("XRANGE");
        cmd.arg(format!("{}:dead", self.key_prefix(queue)))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1));
        let reply = self.link.query("read dead letters", &cmd).await?;
        let mut out = Vec::new();
        for entry in array("XRANGE", reply)? {
            let parts = array("XRANGE entry", entry)?;
            let Some(fields) = parts.into_iter().nth(1) else {
                continue;
            };
            let fields = array("XRANGE fields", fields)?;
            let mut map = HashMap::new();
            for pair in fields.chunks(2) {
                if let [k, v] = pair {
                    if let (Some(k), Some(v)) = (text(k), owned(v)) {
                        map.insert(k.to_owned(), v);
                    }
                }
            }
            let Some(id) = map.get("j").and_then(|s| s.parse::<JobId>().ok()) else {
                continue;
            };
            out.push((
                id,
                map.remove("k").unwrap_or_default(),
                map.get("a").and_then(|a| a.parse().ok()).unwrap_or(0),
                map.remove("r").unwrap_or_default(),
            ));
        }
        Ok(out)
    }

    /// Counts of one queue: ready and in flight from `XLEN` and `XPENDING` of its lanes,
    /// delayed from `ZCARD`, dead from its dead-letter stream, per kind from its counters.
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        let prefix = self.key_prefix(queue);
        let reply = self.link.eval(&SCRIPTS.stats, &[&prefix], &[]).await?;
        let parts = array("stats", reply)?;
        let [ready, in_flight, delayed, dead, counters] = parts.as_slice() else {
            return Err(unexpected("stats", &Value::Array(parts)));
        };
        let count = |v: &Value| u64::try_from(int(v).unwrap_or(0)).unwrap_or(0);
        let mut stats = QueueStats {
            ready: count(ready),
            in_flight: count(in_flight),
            delayed: count(delayed),
            dead: count(dead),
            per_kind: BTreeMap::new(),
        };
        let counters = array("stats counters", counters.clone())?;
        let mut per: HashMap<String, (i64, i64, i64, i64)> = HashMap::new();
        for pair in counters.chunks(2) {
            let [field, value] = pair else { continue };
            let (Some(field), Some(value)) = (text(field), int(value)) else {
                continue;
            };
            let Some((what, kind)) = field.split_once('|') else {
                continue;
            };
            let slot = per.entry(kind.to_owned()).or_default();
            match what {
                "n" => slot.0 += value,
                "f" => slot.1 += value,
                "d" => slot.2 += value,
                "x" => slot.3 += value,
                _ => {}
            }
        }
        let pos = |v: i64| u64::try_from(v.max(0)).unwrap_or(0);
        for (kind, (n, f, d, x)) in per {
            let k = KindQueueStats {
                ready: pos(n - f),
                in_flight: pos(f),
                delayed: pos(d),
                dead: pos(x),
            };
            if k != KindQueueStats::default() {
                stats.per_kind.insert(kind, k);
            }
        }
        Ok(stats)
    }
}

#[async_trait]
impl QueueInspect for RedisStreamsQueue {
    async fn contains(&self, jobs: &[Envelope]) -> Result<Vec<bool>> {
        let mut out = vec![false; jobs.len()];
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, job) in jobs.iter().enumerate() {
            groups.entry(&*job.queue).or_default().push(i);
        }
        for (queue, idx) in groups {
            let items: Vec<Vec<Vec<u8>>> = idx.iter().map(|&i| vec![arg(jobs[i].id)]).collect();
            let held = self
                .lease_script(&SCRIPTS.contains, &[], queue, &items)
                .await?;
            for (&i, there) in idx.iter().zip(held) {
                out[i] = int(&there) == Some(1);
            }
        }
        Ok(out)
    }

    async fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let key = format!("{{{}}}:lock:{name}", self.config.namespace);
        let reply = self
            .link
            .eval(
                &SCRIPTS.lock,
                &[&key],
                &[arg(holder), arg(dur_millis(ttl).max(1))],
            )
            .await?;
        Ok(int(&reply) == Some(1))
    }
}
