//! Reflection over a full ring buffer: 100,000 recorded executions of one kind.
//!
//! `cargo bench --bench reflect -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use jobforge::memory::{ExecutionRecord, InMemoryMemory, OutcomeClass, Window, reflect_on};
use jobforge::{JobId, Memory};

const EXECUTIONS: usize = 100_000;

/// A realistic mix: mostly successes with a long tail, some retried jobs (half rescued),
/// permanent failures, deferrals, cancellations, a few error classes.
fn history() -> Vec<ExecutionRecord> {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut runs = Vec::with_capacity(EXECUTIONS);
    while runs.len() < EXECUTIONS {
        let job = JobId::new();
        let roll = rng.u32(0..100);
        let millis = if rng.u32(0..100) < 3 {
            rng.u64(1_000..5_000)
        } else {
            rng.u64(20..200)
        };
        let mut run = ExecutionRecord {
            job_id: job,
            kind: "resize".to_owned(),
            strategy: "adaptive".to_owned(),
            outcome: OutcomeClass::Succeeded,
            duration: Duration::from_millis(millis),
            attempt: 1,
            inline_retries: u32::from(roll < 5),
            error_class: None,
            at: Utc::now(),
            decision: Some("InlineRetry: retries rescued 80% of failed jobs".to_owned()),
        };
        let (outcome, class) = match roll {
            0..80 => (OutcomeClass::Succeeded, None),
            80..90 => (
                OutcomeClass::Retried,
                Some(["timeout", "http_503", "db"][rng.usize(0..3)]),
            ),
            90..95 => (OutcomeClass::Failed, Some("invalid_payload")),
            95..98 => (OutcomeClass::Deferred, Some("deferred")),
            _ => (OutcomeClass::Cancelled, Some("cancelled")),
        };
        run.outcome = outcome;
        run.error_class = class.map(str::to_owned);
        let rescued = outcome == OutcomeClass::Retried && roll % 2 == 0;
        runs.push(run.clone());
        if rescued {
            runs.push(ExecutionRecord {
                outcome: OutcomeClass::Succeeded,
                attempt: 2,
                error_class: None,
                ..run
            });
        }
    }
    runs.truncate(EXECUTIONS);
    runs
}

fn bench_reflect(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let runs = history();
    let memory = InMemoryMemory::new();
    runtime.block_on(async {
        for batch in runs.chunks(4_096) {
            memory.record(batch).await.expect("record");
        }
    });
    assert_eq!(memory.stored_executions("resize"), EXECUTIONS);

    let mut group = c.benchmark_group("reflect");
    group.bench_function("in_memory_100k_window_all", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(
                memory
                    .reflect("resize", Window::All)
                    .await
                    .expect("reflect"),
            )
        });
    });
    group.bench_function("in_memory_100k_window_since_1h", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(
                memory
                    .reflect("resize", Window::Since(Duration::from_secs(3600)))
                    .await
                    .expect("reflect"),
            )
        });
    });
    let refs: Vec<&ExecutionRecord> = runs.iter().collect();
    group.bench_function("reflect_on_100k_records", |b| {
        b.iter(|| black_box(reflect_on("resize", black_box(&refs))));
    });
    group.finish();
}

criterion_group!(benches, bench_reflect);
criterion_main!(benches);
