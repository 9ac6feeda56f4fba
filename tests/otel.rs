//! OpenTelemetry (feature `otel`): one trace from an HTTP submit through every attempt of
//! the job to its finish, recorded by an in-process exporter.
#![cfg(all(feature = "otel", feature = "http"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use jobforge::http::{HttpConfig, router};
use jobforge::orchestrator::{KindConfig, WorkerConfig};
use jobforge::prelude::*;
use jobforge::strategy::RetryPolicy;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_submit_and_both_attempts_form_one_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // (global: the workers' tasks run on the runtime's threads)
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    // Fails its first attempt, succeeds at the second.
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let orchestrator = Orchestrator::builder()
        .kind(
            "flaky",
            KindConfig::new(move |_ctx: JobContext| {
                let seen = Arc::clone(&seen);
                async move {
                    if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                        Err(JobError::retryable("first attempt fails"))
                    } else {
                        Ok(serde_json::json!("done"))
                    }
                }
            })
            .retry(RetryPolicy::new(3).with_base(Duration::from_millis(10))),
        )
        .build()
        .expect("orchestrator");
    let pool = orchestrator
        .start_workers(WorkerConfig::default())
        .expect("workers");
    let app = router(Arc::new(orchestrator.clone()), HttpConfig::default());
    let answer = app
        .oneshot(
            Request::post("/v1/jobs")
                .header("content-type", "application/json")
                .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
                .body(Body::from(r#"{"kind": "flaky"}"#))
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(answer.status(), StatusCode::CREATED);
    let body = axum::body::to_bytes(answer.into_body(), 1 << 20)
        .await
        .expect("body");
    let id: JobId = serde_json::from_slice::<serde_json::Value>(&body).expect("json")["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("a job id");
    let mut done = None;
    for _ in 0..200 {
        match orchestrator.get(id).await.expect("get") {
            Some(job) if job.state == JobState::Succeeded => {
                done = Some(job);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let done = done.expect("the job succeeded");
    assert_eq!(done.attempt, 2);
    assert_eq!(
        done.traceparent.as_deref(),
        Some(format!("00-{TRACE}-{PARENT}-01").as_str()),
        "the job kept the request's trace context"
    );
    pool.shutdown(Duration::from_secs(5)).await;
    provider.force_flush().expect("flush");

    let spans = exporter.get_finished_spans().expect("spans");
    let attempts: Vec<_> = spans.iter().filter(|s| s.name == "job").collect();
    assert_eq!(attempts.len(), 2, "a span per attempt: {spans:#?}");
    let attr = |s: &opentelemetry_sdk::trace::SpanData, k: &str| {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
    };
    let mut seen: Vec<(String, String)> = Vec::new();
    for span in &attempts {
        assert_eq!(
            span.span_context.trace_id(),
            TraceId::from_hex(TRACE).expect("hex"),
            "every attempt is in the submitter's trace"
        );
        assert_eq!(span.parent_span_id, SpanId::from_hex(PARENT).expect("hex"));
        assert_eq!(attr(span, "kind").as_deref(), Some("flaky"));
        assert_eq!(attr(span, "queue").as_deref(), Some("default"));
        assert!(attr(span, "worker").is_some());
        seen.push((
            attr(span, "attempt").expect("attempt"),
            attr(span, "outcome").expect("outcome"),
        ));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("1".to_owned(), "retry".to_owned()),
            ("2".to_owned(), "succeeded".to_owned())
        ],
        "the first attempt was retried, the second finished the job"
    );
}
