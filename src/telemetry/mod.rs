//! Logging: `tracing` to stderr, fields first, then a short sentence; spans exported over
//! OTLP when an endpoint is configured.
//!
//! `SLUICE_LOG` (or `RUST_LOG`) sets the filter, e.g. `debug` or `sluice=debug,async_nats=warn`;
//! `SLUICE_LOG_FORMAT=json` switches to one JSON object per line.
//!
//! With `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` set (OTLP over
//! HTTP with protobuf, the OpenTelemetry convention), Sluice's spans (`sluice.invoke` for
//! every invocation, a child of the event's `traceparent`) go to that collector; with
//! neither, nothing is exported and no exporter runs.

pub mod cost;
pub mod logs;
pub mod metrics;
pub mod stats;
pub mod trace;

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt as _};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The span exporter, kept to flush it at exit.
static TRACER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber. `default_level` applies when no filter is set. With
/// `node_log`, what a default `sluice up` logs (its level, `info`) also goes to that file, as
/// a node's stderr written to a file: `sluice bench` pays what a node pays per event.
pub fn init(default_level: &str, node_log: Option<&std::path::Path>) {
    let filter_at = |level: &str| {
        user_filter().unwrap_or_else(|| EnvFilter::new(format!("{level},async_nats=warn,wasmtime=warn,cranelift=warn,pg_walstream=error")))
    };
    let json = std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let node_file = node_log.map(|path| {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::File::create(path).map_err(|error| format!("{}: {error}", path.display()))
    });
    let (node_file, node_error) = match node_file {
        Some(Ok(file)) => (Some(file), None),
        Some(Err(error)) => (None, Some(error)),
        None => (None, None),
    };
    // With a node log, one layer formats each line once at the node's level (`info`) into
    // the file, and copies to stderr what the command itself shows (its own level, or all
    // that SLUICE_LOG lets through): a line costs what it costs `sluice up`, whose one layer
    // writes to stderr.
    let (writer, ansi, filter) = match node_file {
        Some(file) => {
            let shown = if user_filter().is_some() { tracing::Level::TRACE } else { default_level.parse().unwrap_or(tracing::Level::WARN) };
            (BoxMakeWriter::new(std::sync::Mutex::new(file).and(std::io::stderr.with_max_level(shown))), false, filter_at("info"))
        }
        None => (BoxMakeWriter::new(std::io::stderr), std::io::stderr().is_terminal(), filter_at(default_level)),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi).with_target(false);
    let fmt = if json { fmt.json().boxed() } else { fmt.compact().boxed() };
    let (otlp, error) = match otlp_provider() {
        Some(Ok(provider)) => {
            let tracer = provider.tracer("sluice");
            let _ = TRACER.set(provider);
            // Sluice's own spans only, whatever the log filter says.
            (Some(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(EnvFilter::new("sluice=info"))), None)
        }
        Some(Err(error)) => (None, Some(error)),
        None => (None, None),
    };
    // A second init (tests) keeps the first subscriber. Without an exporter the filter is
    // global, so disabled spans and events cost nothing on the event path.
    let _ = match otlp {
        None => tracing_subscriber::registry().with(fmt).with(filter).try_init(),
        Some(otlp) => tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otlp).try_init(),
    };
    if let Some(error) = error {
        tracing::warn!(%error, "Cannot export spans over OTLP; continuing without.");
    }
    if let Some(error) = node_error {
        tracing::warn!(%error, "Cannot create the node log; what a node logs per event is not written.");
    }
}

/// The filter of `SLUICE_LOG` (or `RUST_LOG`), when one is set and valid.
fn user_filter() -> Option<EnvFilter> {
    std::env::var("SLUICE_LOG").ok().or_else(|| std::env::var("RUST_LOG").ok()).and_then(|spec| EnvFilter::try_new(spec).ok())
}

/// An OTLP span exporter when an endpoint is configured.
fn otlp_provider() -> Option<Result<SdkTracerProvider, String>> {
    let configured = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"].iter().any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()));
    if !configured {
        return None;
    }
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(opentelemetry_otlp::Protocol::HttpBinary).build() {
        Ok(exporter) => exporter,
        Err(error) => return Some(Err(error.to_string())),
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "sluice".to_owned());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
    // Spans are sent from the exporter's own thread, in batches: never on the event path.
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    Some(Ok(provider))
}

/// The `sluice.invoke` span of one invocation, a child of the event's W3C `traceparent`,
/// when spans are exported; otherwise a disabled span: one nobody exports would only add its
/// bookkeeping (field formatting, enter and exit at every poll) to every event.
pub fn invoke_span(function: &str, request_id: &str, event_id: &str, attempt: u32, traceparent: &str) -> tracing::Span {
    if TRACER.get().is_none() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("sluice.invoke", function = %function, request_id = %request_id, event_id = %event_id, attempt);
    set_parent(&span, traceparent);
    span
}

/// Makes `span` a child of the W3C `traceparent` (when spans are exported).
fn set_parent(span: &tracing::Span, traceparent: &str) {
    if TRACER.get().is_none() || traceparent.is_empty() {
        return;
    }
    use opentelemetry::propagation::TextMapPropagator as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// Sends the spans still buffered (at exit).
pub fn shutdown() {
    if let Some(provider) = TRACER.get() {
        let _ = provider.shutdown();
    }
}
