//! Model test: random sequences of submit / reserve / finish / worker death (lease expiry) /
//! cancel against the in-memory queue and state, driven the way the worker pool drives them.
//! Checks: no job is lost, no job is finished by two holders, every job ends in exactly one
//! terminal state, and the queue ends empty.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use jobforge::queue::{DeadLetter, InMemoryQueue, Lease, QueueManager, Requeue, Reserve};
use jobforge::state::{
    CancelOutcome, Claim, Finish, InMemoryState, StateManager, Transition, TransitionResult,
};
use jobforge::{JobId, JobRecord, JobState, NewJob, WorkerId};
use proptest::prelude::*;

mod conformance;

const LEASE: Duration = Duration::from_millis(40);

#[derive(Debug, Clone)]
enum Op {
    Submit(u8),
    Reserve {
        worker: usize,
        max: u8,
    },
    Finish {
        worker: usize,
        pick: u8,
        outcome: u8,
    },
    Die {
        worker: usize,
    },
    Cancel(u8),
    Pause,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..6).prop_map(Op::Submit),
        4 => (0usize..3, 1u8..5).prop_map(|(worker, max)| Op::Reserve { worker, max }),
        4 => (0usize..3, any::<u8>(), 0u8..4).prop_map(|(worker, pick, outcome)| Op::Finish { worker, pick, outcome }),
        1 => (0usize..3).prop_map(|worker| Op::Die { worker }),
        1 => any::<u8>().prop_map(Op::Cancel),
        1 => Just(Op::Pause),
    ]
}

struct Held {
    lease: Lease,
    attempt: u32,
    /// The claim's token (its record's version): finishes are fenced on it.
    token: u64,
}

struct World {
    queue: InMemoryQueue,
    state: InMemoryState,
    workers: Vec<(WorkerId, Vec<Held>)>,
    submitted: Vec<JobId>,
    /// Applied transitions into a terminal state, per job.
    terminal_finishes: HashMap<JobId, u32>,
}

impl World {
    async fn reserve(&mut self, w: usize, max: usize) {
        let queues = vec!["default".to_owned()];
        let worker = self.workers[w].0.clone();
        let leases = self
            .queue
            .reserve(&Reserve {
                worker: &worker,
                queues: &queues,
                max,
                lease: LEASE,
                wait: Duration::ZERO,
            })
            .await
            .unwrap();
        if leases.is_empty() {
            return;
        }
        let ids: Vec<JobId> = leases.iter().map(Lease::id).collect();
        let claims = self.state.claim(&ids, &worker, LEASE).await.unwrap();
        for (lease, claim) in leases.into_iter().zip(claims) {
            match claim {
                Claim::Claimed(r) => self.workers[w].1.push(Held {
                    lease,
                    attempt: r.attempt,
                    token: r.version,
                }),
                Claim::NotDue { run_at, .. } => self
                    .queue
                    .requeue(&[Requeue {
                        attempt: lease.envelope.attempt,
                        lease,
                        run_at,
                    }])
                    .await
                    .unwrap(),
                Claim::Exhausted { reason, id } | Claim::Cancelled { reason, id } => {
                    *self.terminal_finishes.entry(id).or_default() += 1;
                    self.queue
                        .dead_letter(&[DeadLetter { lease, reason }])
                        .await
                        .unwrap();
                }
                Claim::Skipped { .. } => self.queue.ack(&[lease]).await.unwrap(),
            }
        }
        // No job is held by two live holders: among holdings the state still accepts, ids
        // are unique.
        let mut live = HashSet::new();
        for (worker, held) in &self.workers {
            for h in held {
                let r = self.state.get(h.lease.id()).await.unwrap().unwrap();
                if r.state == JobState::Running
                    && r.lease_owner.as_ref() == Some(worker)
                    && r.attempt == h.attempt
                {
                    assert!(live.insert(h.lease.id()), "job {} held twice", h.lease.id());
                }
            }
        }
    }

    async fn finish(&mut self, w: usize, pick: usize, outcome: u8) {
        if self.workers[w].1.is_empty() {
            return;
        }
        let idx = pick % self.workers[w].1.len();
        let held = self.workers[w].1.swap_remove(idx);
        let worker = self.workers[w].0.clone();
        let finish = match outcome {
            0 | 1 => Finish::Succeeded { result: None },
            2 => Finish::Retry {
                delay: Duration::ZERO,
                error: "flaky".into(),
            },
            _ => Finish::Dead {
                error: "bad input".into(),
            },
        };
        let id = held.lease.id();
        let res = self
            .state
            .finish(vec![Transition {
                id,
                worker,
                token: held.token,
                finish: finish.clone(),
            }])
            .await
            .unwrap();
        match &res[0] {
            TransitionResult::Applied { state, .. } => {
                if state.is_terminal() {
                    *self.terminal_finishes.entry(id).or_default() += 1;
                    self.queue.ack(&[held.lease]).await.unwrap();
                } else {
                    self.queue
                        .requeue(&[Requeue {
                            attempt: held.attempt,
                            lease: held.lease,
                            run_at: Utc::now(),
                        }])
                        .await
                        .unwrap();
                }
            }
            TransitionResult::Conflict { current, .. } => {
                if current.is_some_and(JobState::is_terminal) {
                    self.queue.ack(&[held.lease]).await.unwrap();
                }
            }
        }
    }
}

async fn run(ops: Vec<Op>) {
    let mut world = World {
        queue: InMemoryQueue::new(),
        state: InMemoryState::new(),
        workers: (0..3)
            .map(|i| (WorkerId::new(format!("w{i}")), Vec::new()))
            .collect(),
        submitted: Vec::new(),
        terminal_finishes: HashMap::new(),
    };
    for op in ops {
        match op {
            Op::Submit(n) => {
                let recs: Vec<JobRecord> = (0..n)
                    .map(|_| conformance::record(NewJob::new("k")))
                    .collect();
                let envs: Vec<_> = recs
                    .iter()
                    .map(jobforge::queue::Envelope::from_record)
                    .collect();
                world.submitted.extend(recs.iter().map(|r| r.id));
                world.state.create(recs).await.unwrap();
                world.queue.enqueue(&envs).await.unwrap();
            }
            Op::Reserve { worker, max } => world.reserve(worker, usize::from(max)).await,
            Op::Finish {
                worker,
                pick,
                outcome,
            } => world.finish(worker, usize::from(pick), outcome).await,
            Op::Die { worker } => world.workers[worker].1.clear(),
            Op::Cancel(pick) => {
                if !world.submitted.is_empty() {
                    let id = world.submitted[usize::from(pick) % world.submitted.len()];
                    if world.state.cancel(id, "model").await.unwrap() == CancelOutcome::Cancelled {
                        *world.terminal_finishes.entry(id).or_default() += 1;
                    }
                }
            }
            Op::Pause => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    // Drain: live workers finish what they hold; then one worker runs everything to success.
    for w in 0..3 {
        while !world.workers[w].1.is_empty() {
            world.finish(w, 0, 0).await;
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let counts = world.state.counts().await.unwrap();
        if counts.total.active() == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jobs never finished: {counts:?}"
        );
        world.reserve(0, 64).await;
        while !world.workers[0].1.is_empty() {
            world.finish(0, 0, 0).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in &world.submitted {
        let r = world.state.get(*id).await.unwrap().expect("no job is lost");
        assert!(r.state.is_terminal(), "job {id} ended {}", r.state);
        assert_eq!(
            world.terminal_finishes.get(id).copied(),
            Some(1),
            "job {id}: exactly one terminal transition"
        );
        let events = world.state.events(*id).await.unwrap();
        assert_eq!(events.iter().filter(|e| e.to.is_terminal()).count(), 1);
        assert_eq!(events.last().map(|e| e.to), Some(r.state));
    }
    // Deliveries of jobs that finished elsewhere (a queued job cancelled, a stale duplicate)
    // stay in the queue until delivered; a worker then drops them. Deliver what is left.
    for _ in 0..100 {
        world.reserve(0, 64).await;
        assert!(
            world.workers[0].1.is_empty(),
            "a finished job was claimed again"
        );
        if world.queue.stats().await.unwrap().ready == 0 {
            break;
        }
    }
    let stats = world.queue.stats().await.unwrap();
    assert_eq!(
        (stats.ready, stats.delayed, stats.in_flight),
        (0, 0, 0),
        "queue drained"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_job_lost_or_finished_twice(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}
