//! Per-call cost of the safety layers when they let the call through, uncontended, around a
//! trivial handler. Subtract `bare handler` to get a layer's own cost.
//!
//! `cargo bench --bench safety -- --warm-up-time 1 --measurement-time 3`
//!
//! Each figure is measured twice: in wall-clock time (`wall/..`), and in the CPU time of the
//! benchmark thread (`cpu/..`, `CLOCK_THREAD_CPUTIME_ID` on Unix), which a loaded or shared
//! machine does not inflate with time spent waiting for a core.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, criterion_group, criterion_main};
use jobforge::memory::InMemoryMemory;
use jobforge::safety::{
    BreakerRegistry, BulkheadConfig, BulkheadLayer, CircuitBreakerConfig, CircuitBreakerLayer,
    HandlerExt, RateLimitConfig, RateLimitLayer, TimeoutLayer,
};
use jobforge::{Handler, JobContext, JobError, JobId, JobRecord, JobState, Payload, WorkerId};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

struct Noop;

#[async_trait]
impl Handler for Noop {
    async fn handle(&self, _ctx: &JobContext) -> Result<Value, JobError> {
        Ok(Value::Null)
    }
}

fn ctx() -> JobContext {
    let now = Utc::now();
    let record = JobRecord {
        id: JobId::new(),
        kind: "send-email".to_owned(),
        queue: "default".to_owned(),
        payload: Payload::null(),
        state: JobState::Running,
        priority: 0,
        attempt: 1,
        max_attempts: 3,
        timeout: None,
        idempotency_key: None,
        tags: Vec::new(),
        tenant: Some("acme".to_owned()),
        strategy: None,
        traceparent: None,
        run_at: now,
        created_at: now,
        updated_at: now,
        started_at: Some(now),
        finished_at: None,
        result: None,
        last_error: None,
        lease_owner: None,
        lease_expires_at: None,
        cancel_requested: false,
        version: 1,
        step: None,
        progress: None,
    };
    JobContext::new(
        record,
        WorkerId::new("bench"),
        Arc::new(InMemoryMemory::new()),
        CancellationToken::new(),
    )
}

/// CPU time of the current thread (wall-clock time off Unix).
struct CpuTime;

#[cfg(unix)]
fn thread_cpu_nanos() -> Option<u64> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(t.tv_sec).ok()?;
    let nanos = u64::try_from(t.tv_nsec).ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

#[cfg(not(unix))]
fn thread_cpu_nanos() -> Option<u64> {
    None
}

impl Measurement for CpuTime {
    type Intermediate = (Option<u64>, std::time::Instant);
    type Value = Duration;

    fn start(&self) -> Self::Intermediate {
        (thread_cpu_nanos(), std::time::Instant::now())
    }
    fn end(&self, (cpu, wall): Self::Intermediate) -> Duration {
        match (cpu, thread_cpu_nanos()) {
            (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
            _ => wall.elapsed(),
        }
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

static WALL: WallTime = WallTime;

fn wall(c: &mut Criterion) {
    layers(c, "wall");
}

fn cpu(c: &mut Criterion<CpuTime>) {
    layers(c, "cpu");
}

fn layers<M: Measurement<Value = Duration> + 'static>(c: &mut Criterion<M>, group: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let ctx = ctx();
    // Generous limits: every call is let through.
    let breaker =
        || CircuitBreakerLayer::new(CircuitBreakerConfig::default()).expect("valid breaker config");
    let limit = || {
        RateLimitLayer::new(RateLimitConfig::per_second(1_000_000_000).with_burst(1_000_000_000))
            .expect("valid rate limit")
    };
    let bulkhead = || BulkheadLayer::new(BulkheadConfig::new(1024)).expect("valid bulkhead");

    let mut group = c.benchmark_group(group);
    let bare = Noop;
    group.bench_function("bare handler", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(bare.handle(&ctx).await) })
    });
    let h = Noop.layer(breaker());
    group.bench_function("circuit breaker (closed)", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(h.handle(&ctx).await) })
    });
    let h = Noop.layer(limit());
    group.bench_function("rate limit (under quota)", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(h.handle(&ctx).await) })
    });
    let h = Noop.layer(bulkhead());
    group.bench_function("bulkhead (free)", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(h.handle(&ctx).await) })
    });
    let h = Noop.layer(TimeoutLayer::new(Duration::from_secs(30)));
    group.bench_function("timeout", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(h.handle(&ctx).await) })
    });
    let h = Noop
        .layer(TimeoutLayer::new(Duration::from_secs(30)))
        .layer(breaker())
        .layer(bulkhead())
        .layer(limit());
    group.bench_function("all four stacked", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(h.handle(&ctx).await) })
    });
    // The breaker's bookkeeping alone, without the async wrapper.
    let registry = BreakerRegistry::new(CircuitBreakerConfig::default()).expect("valid");
    group.bench_function("breaker acquire + record (sync)", |b| {
        b.iter(|| {
            if let Ok(permit) = registry.try_acquire(black_box("send-email")) {
                permit.success();
            }
        })
    });
    group.finish();
}

/// Reference points on this machine, to read the figures above against (a shared or loaded
/// machine inflates every figure alike).
fn reference(c: &mut Criterion) {
    let mut g = c.benchmark_group("reference");
    g.bench_function("Instant::now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    let m = parking_lot::Mutex::new(0u64);
    g.bench_function("uncontended mutex lock + add", |b| {
        b.iter(|| {
            *m.lock() += 1;
        })
    });
    g.finish();
}

criterion_group!(benches, wall, reference);
criterion_group! {
    name = cpu_benches;
    config = Criterion::default().with_measurement(CpuTime);
    targets = cpu
}
criterion_main!(benches, cpu_benches);
