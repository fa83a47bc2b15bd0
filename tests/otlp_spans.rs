//! With an OTLP endpoint configured (`OTEL_EXPORTER_OTLP_ENDPOINT`), every invocation's span
//! `sluice.invoke` reaches the collector as a child of the event's W3C `traceparent`, with
//! the function and request id as attributes. Guards trace context flowing from the
//! publisher through the dispatcher to the exported span.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    parent_span_id: String,
    attributes: Vec<(String, String)>,
}

async fn collector() -> (u16, tokio::sync::mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                for span in request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), format!("{:?}", kv.value.as_ref().and_then(|v| v.value.clone()))))
                        .collect();
                    let _ = tx.send(Received { name: span.name.clone(), trace_id: hex::encode(&span.trace_id), parent_span_id: hex::encode(&span.parent_span_id), attributes });
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn invocations_are_exported_as_children_of_the_event_trace() {
    let (port, mut spans) = collector().await;
    let nats = NatsServer::start();
    let url = nats.url();
    let project = Project::new();
    project.function("hello", "hello", "subscribe = [\"greetings\"]");
    let endpoint = format!("http://127.0.0.1:{port}");
    let up = project.up_with_env(Some(&url), &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "100")]);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let traceparent = format!("traceparent=00-{trace_id}-{parent}-01");
    let out = project.sluice(&["--nats", &url, "publish", "greetings", "--data", r#"{"name":"Ada"}"#, "--header", &traceparent]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    up.wait_log("greeting Ada", Duration::from_secs(30));

    let span = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let span = spans.recv().await.unwrap();
            if span.name == "sluice.invoke" {
                return span;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no sluice.invoke span reached the collector; the node's log:\n{}", up.log()));
    assert_eq!(span.trace_id, trace_id, "{span:?}");
    assert_eq!(span.parent_span_id, parent, "{span:?}");
    let attribute = |key: &str| span.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    assert!(attribute("function").contains("hello"), "{span:?}");
    assert!(!attribute("request_id").is_empty(), "{span:?}");
}
