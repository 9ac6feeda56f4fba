//! Per-call cost of the safety layers when they let the call through, uncontended, around a
//! trivial handler. Subtract `bare handler` to get a layer's own cost.
//!
//! `cargo bench --bench safety -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
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
    };
    JobContext::new(
        record,
        WorkerId::new("bench"),
        Arc::new(InMemoryMemory::new()),
        CancellationToken::new(),
    )
}

fn bench(c: &mut Criterion) {
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

    let mut group = c.benchmark_group("safety");
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

criterion_group!(benches, bench, reference);
criterion_main!(benches);
