//! A message published by a plain NATS client, without CloudEvents headers, is still an
//! event: its id comes from its stream sequence and its type is `sluice.raw`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn plain_messages_are_invoked_with_a_derived_identity() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("hello", "hello", "subscribe = [\"greetings\"]");
    let _up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "hello").await;

    let ack = js.publish("sluice.events.greetings", r#"{"name":"Plain"}"#.into()).await.unwrap().await.unwrap();
    results.wait_for(1, Duration::from_secs(30)).await;
    let (id, body) = &results.received[0];
    assert_eq!(id, &format!("SLUICE_EVENTS-{}", ack.sequence));
    assert_eq!(body["message"], "Hello, Plain!");
    assert_eq!(body["event_id"], id.as_str(), "the function sees the same id");
}
