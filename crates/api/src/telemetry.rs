//! Logging: JSON lines (or text) on stdout, filtered by `BULKHEAD_LOG`. Tracing: with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `BULKHEAD_OTLP_ENDPOINT`), spans go to an OpenTelemetry
//! collector over OTLP/HTTP (protobuf), as `OTEL_SERVICE_NAME` (default `bulkhead`) with the
//! attributes of `OTEL_RESOURCE_ATTRIBUTES`, sampled as `OTEL_TRACES_SAMPLER(_ARG)` say:
//! `request` (the whole call), `authenticate`, `route` (alias, operation) and one
//! `upstream attempt` per try (member, attempt number, outcome, status), with a `retrying`
//! event between attempts. The trace filter is its own (`info` for the gateway's crates), so
//! `BULKHEAD_LOG=warn` keeps logs quiet without losing traces.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// Flushes the spans still buffered when dropped (at the end of `main`).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                tracing::warn!(%error, "flushing traces failed");
            }
        }
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync + 'static>;

/// Installs logging, and tracing over OTLP when `otlp_endpoint` (the collector's base URL,
/// like `OTEL_EXPORTER_OTLP_ENDPOINT`: `http://collector:4318`) is given.
pub fn init(
    filter: &str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
    service_name: &str,
) -> Telemetry {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs: BoxedLayer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().with_filter(filter).boxed(),
    };
    let mut layers = vec![logs];
    let mut provider = None;
    let mut failure = None;
    if let Some(endpoint) = otlp_endpoint {
        match tracer_provider(endpoint, service_name) {
            Ok(built) => {
                TRACING.store(true, Ordering::Relaxed);
                let tracer = built.tracer("bulkhead");
                let only_ours = Targets::new()
                    .with_target("bulkhead_api", Level::INFO)
                    .with_target("openai_router", Level::INFO)
                    .with_target("search_router", Level::INFO);
                layers.push(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(only_ours)
                        .boxed(),
                );
                provider = Some(built);
            }
            Err(error) => failure = Some(error),
        }
    }
    let _ = tracing_subscriber::registry().with(layers).try_init();
    if let Some(error) = failure {
        tracing::error!(%error, "OTLP exporter not started; no traces will be sent");
    }
    Telemetry { provider }
}

fn tracer_provider(endpoint: &str, service_name: &str) -> Result<SdkTracerProvider, String> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_secs(1))
                .build(),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build())
}

/// Whether spans are exported (set once, at start).
static TRACING: AtomicBool = AtomicBool::new(false);

/// The W3C `traceparent` a call carries upstream: the gateway's own span in the caller's trace
/// when traces are exported, else the caller's header as it came (a proxy that does not trace
/// passes it on). Put in the request's extensions by the gate.
#[derive(Debug, Clone)]
pub struct TraceParent(pub HeaderValue);

/// Continues the caller's trace (`traceparent`, `tracestate`) in `span`, and says what goes
/// upstream. Costs nothing when traces are off and the caller sent no `traceparent`.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) -> Option<TraceParent> {
    if !TRACING.load(Ordering::Relaxed) {
        return headers
            .get("traceparent")
            .filter(|v| v.len() <= 128)
            .cloned()
            .map(TraceParent);
    }
    let propagator = TraceContextPropagator::new();
    if headers.contains_key("traceparent") {
        let parent = propagator.extract(&Carrier::Read(headers));
        span.set_parent(parent);
    }
    let mut out = HeaderMap::new();
    propagator.inject_context(&span.context(), &mut Carrier::Write(&mut out));
    out.get("traceparent").cloned().map(TraceParent)
}

enum Carrier<'a> {
    Read(&'a HeaderMap),
    Write(&'a mut HeaderMap),
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self {
            Self::Read(headers) => headers.get(key).and_then(|v| v.to_str().ok()),
            Self::Write(_) => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        match self {
            Self::Read(headers) => headers.keys().map(|k| k.as_str()).collect(),
            Self::Write(_) => Vec::new(),
        }
    }
}

impl Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Self::Write(headers), Ok(name), Ok(value)) = (
            self,
            axum::http::HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
}
