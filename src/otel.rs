//! OpenTelemetry (feature `otel`): one trace from the request that submitted a job to the
//! handler that ran it.
//!
//! - A job keeps the W3C trace context it was submitted in ([`NewJob::traceparent`]; with
//!   this feature, a job submitted without one takes the current `tracing` span's, see
//!   [`current_traceparent`]). The HTTP API takes it from the request's `traceparent`
//!   header.
//! - Each attempt runs in a `job` span (kind, queue, attempt, worker, outcome) whose parent
//!   is that context, so every attempt of a job is a span of the submitter's trace. The
//!   spans are `tracing` spans: a subscriber with a [`tracing_opentelemetry`] layer exports
//!   them (the host's, or [`init_from_env`]'s in `jobforge-server`).
//! - [`init_from_env`] configures the OTLP exporter from the standard `OTEL_*` variables, for
//!   spans and for metrics ([`Gauges`] records the job counts).
//!
//! [`NewJob::traceparent`]: crate::NewJob::traceparent

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C `traceparent` of the current `tracing` span, when it belongs to a trace that an
/// OpenTelemetry layer records; `None` otherwise.
///
/// ```
/// // No OpenTelemetry layer in this subscriber: no trace to join.
/// assert_eq!(jobforge::otel::current_traceparent(), None);
/// ```
#[must_use]
pub fn current_traceparent() -> Option<String> {
    let span = tracing::Span::current();
    // Outside any span (most submits), nothing to read: no context, no allocation.
    if span.is_none() || span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Make `traceparent` the parent of `span` (an attempt's span): its trace continues there.
pub(crate) fn set_parent(span: &tracing::Span, traceparent: &str) {
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// The exporters [`init_from_env`] started; dropping it flushes and stops them.
pub struct OtelGuard {
    tracer: opentelemetry_sdk::trace::SdkTracerProvider,
    meter: opentelemetry_sdk::metrics::SdkMeterProvider,
}

impl OtelGuard {
    /// A `tracing` layer that exports spans through this guard's tracer (add it to the
    /// subscriber).
    #[must_use]
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.tracer.tracer("jobforge"))
    }

    /// The meter provider, for [`Gauges`].
    #[must_use]
    pub fn meter_provider(&self) -> &opentelemetry_sdk::metrics::SdkMeterProvider {
        &self.meter
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        let _ = self.tracer.shutdown();
        let _ = self.meter.shutdown();
    }
}

impl std::fmt::Debug for OtelGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelGuard").finish_non_exhaustive()
    }
}

/// Whether the `OTEL_*` variables ask for export: an OTLP endpoint is set and
/// `OTEL_SDK_DISABLED` is not `true`.
#[must_use]
pub fn configured_by_env() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    !std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Start the OTLP exporters (HTTP/protobuf) as the standard variables say, when an endpoint
/// is set: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), and
/// `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, ... as the
/// OpenTelemetry SDK reads them. `None` when no endpoint is set or `OTEL_SDK_DISABLED=true`.
/// Also installs the W3C trace-context propagator globally.
///
/// # Errors
///
/// An exporter that cannot be built from the variables (a malformed endpoint, say).
pub fn init_from_env() -> crate::Result<Option<OtelGuard>> {
    if !configured_by_env() {
        return Ok(None);
    }
    let config = |e: &dyn std::fmt::Display| {
        crate::Error::new(
            crate::ErrorKind::Configuration,
            format!("the OTLP exporter could not be built from the OTEL_* variables: {e}"),
        )
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| config(&e))?;
    let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .build();
    opentelemetry::global::set_tracer_provider(tracer.clone());
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .build()
        .map_err(|e| config(&e))?;
    let meter = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_periodic_exporter(metrics)
        .build();
    opentelemetry::global::set_meter_provider(meter.clone());
    Ok(Some(OtelGuard { tracer, meter }))
}

/// Job counts as OpenTelemetry gauges (`jobforge.jobs` by state, `jobforge.queue.depth`
/// ready/delayed/in flight) and the running total of retries (`jobforge.jobs.retried`): the
/// figures `/metrics` serves to Prometheus, recorded from [`crate::orchestrator::Stats`].
#[derive(Debug, Clone)]
pub struct Gauges {
    jobs: opentelemetry::metrics::Gauge<u64>,
    queue: opentelemetry::metrics::Gauge<u64>,
    retried: opentelemetry::metrics::Gauge<u64>,
}

impl Gauges {
    /// The instruments, on `provider`'s meter `jobforge`.
    #[must_use]
    pub fn new(provider: &dyn opentelemetry::metrics::MeterProvider) -> Self {
        let meter = provider.meter("jobforge");
        Self {
            jobs: meter
                .u64_gauge("jobforge.jobs")
                .with_description("Jobs kept, by state")
                .build(),
            queue: meter
                .u64_gauge("jobforge.queue.depth")
                .with_description("Jobs ready, delayed and in flight")
                .build(),
            retried: meter
                .u64_gauge("jobforge.jobs.retried")
                .with_description(
                    "Attempts that failed and were queued again, since the store began",
                )
                .build(),
        }
    }

    /// Record `stats` now.
    pub fn record(&self, stats: &crate::orchestrator::Stats) {
        use opentelemetry::KeyValue;
        for state in crate::JobState::ALL {
            self.jobs.record(
                stats.jobs.total.get(state),
                &[KeyValue::new("state", state.as_str())],
            );
        }
        for (name, n) in [
            ("ready", stats.queue.ready),
            ("delayed", stats.queue.delayed),
            ("in_flight", stats.queue.in_flight),
        ] {
            self.queue.record(n, &[KeyValue::new("kind", name)]);
        }
        self.retried.record(stats.jobs.retried, &[]);
    }
}
