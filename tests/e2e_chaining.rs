//! `on_success` chaining: the response is stored on `sluice.events.<topic>` as an event with id
//! `<cause id>:<function>` (also its `Nats-Msg-Id`), `sluice-caused-by` and a child
//! traceparent of the cause's; running the same cause again stores no second chained event.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::*;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_SPAN: &str = "b7ad6b7169203331";

/// The chained events stored so far.
async fn chained(js: &jetstream::Context) -> Vec<jetstream::message::StreamMessage> {
    stream_messages(js, "SLUICE_EVENTS").await.into_iter().filter(|m| m.subject.as_str() == "sluice.events.chained").collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chained_event_is_stored_once_with_its_cause_and_trace() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("relay", "flaky", "subscribe = [\"jobs\"]\non_success = \"chained\"");
    let _up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "relay").await;

    let mut headers = event_headers("cause-1");
    headers.insert("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN}-01").as_str());
    js.publish_with_headers("sluice.events.jobs", headers, "{}".into()).await.unwrap().await.unwrap();
    results.wait_for(1, Duration::from_secs(30)).await;
    wait_idle(&js, "relay", Duration::from_secs(30)).await;

    let stored = chained(&js).await;
    assert_eq!(stored.len(), 1, "one chained event");
    let event = &stored[0];
    assert_eq!(header(event, "ce-id"), Some("cause-1:relay"));
    // The publish carries the derived id, so JetStream drops a retried publish.
    assert_eq!(header(event, "Nats-Msg-Id"), Some("cause-1:relay"));
    assert_eq!(header(event, "sluice-caused-by"), Some("cause-1"));
    assert_eq!(header(event, "ce-type"), Some("sluice.function.result"));
    assert_eq!(header(event, "ce-source"), Some("sluice:function:relay"));
    let traceparent = header(event, "traceparent").unwrap();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1], TRACE_ID, "the chain shares the cause's trace: {traceparent}");
    assert_eq!(parts[2].len(), 16, "{traceparent}");
    assert_ne!(parts[2], PARENT_SPAN, "the chained event is a new span: {traceparent}");
    let body: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(body, results.received[0].1, "the body is the response");

    // The same cause runs again (as a redelivery or a replay to the function would): the
    // function succeeds again, the second chained publish is a duplicate.
    let mut again = event_headers("cause-1");
    again.insert("Nats-Msg-Id", "cause-1-replayed");
    js.publish_with_headers("sluice.direct.relay", again, "{}".into()).await.unwrap().await.unwrap();
    results.wait_for(2, Duration::from_secs(30)).await;
    wait_idle(&js, "relay", Duration::from_secs(30)).await;
    assert_eq!(results.received[1].0, "cause-1", "{:?}", results.received);
    let stored = chained(&js).await;
    assert_eq!(stored.len(), 1, "the second run's chained event is deduplicated: {:?}", stored.iter().map(|m| &m.headers).collect::<Vec<_>>());
}
