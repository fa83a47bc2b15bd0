//! Dedup: publishing the same event id twice within the duplicate window invokes once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_same_id_is_delivered_once() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("hello", "hello", "subscribe = [\"greetings\"]");
    let _up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "hello").await;

    let publish = || project.sluice(&["--nats", &nats.url(), "--json", "publish", "greetings", "--data", r#"{"name":"Dup"}"#, "--id", "order-7"]);
    let first: serde_json::Value = serde_json::from_slice(&publish().stdout).unwrap();
    let second: serde_json::Value = serde_json::from_slice(&publish().stdout).unwrap();
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["seq"], second["seq"], "the duplicate points at the stored event");
    let text = project.sluice(&["--nats", &nats.url(), "publish", "greetings", "--data", "{}", "--id", "order-7"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("duplicate"));

    results.wait_for(1, Duration::from_secs(30)).await;
    wait_idle(&js, "hello", Duration::from_secs(10)).await;
    results.drain(Duration::from_millis(500)).await;
    assert_eq!(results.received.len(), 1);
    assert_eq!(results.received[0].0, "order-7");
}
