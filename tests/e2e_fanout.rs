//! Fan-out: one event on a topic with two subscribed functions runs each exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_subscriber_gets_its_own_copy_once() {
    let nats = NatsServer::start();
    let project = Project::new();
    project
        .function("hello", "hello", "subscribe = [\"greetings\"]")
        .function("second", "flaky", "subscribe = [\"greetings\", \"other.*\"]")
        .function("bystander", "hello", "subscribe = [\"unrelated\"]");
    let _up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut hello = Results::subscribe(&client, "hello").await;
    let mut second = Results::subscribe(&client, "second").await;
    let mut bystander = Results::subscribe(&client, "bystander").await;

    let out = project.sluice(&["--nats", &nats.url(), "--json", "publish", "greetings", "--data", r#"{"name":"Alice"}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let published: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = published["id"].as_str().unwrap().to_owned();
    assert_eq!(published["stream"], "SLUICE_EVENTS");
    assert_eq!(published["subject"], "sluice.events.greetings");
    assert!(published["seq"].as_u64().unwrap() >= 1);

    hello.wait_for(1, Duration::from_secs(30)).await;
    second.wait_for(1, Duration::from_secs(30)).await;
    for function in ["hello", "second", "bystander"] {
        wait_idle(&js, function, Duration::from_secs(30)).await;
    }
    // Anything extra would have arrived by now: both consumers are idle.
    hello.drain(Duration::from_millis(500)).await;
    second.drain(Duration::from_millis(500)).await;
    bystander.drain(Duration::from_millis(100)).await;

    assert_eq!(hello.received.len(), 1, "{:?}", hello.received);
    assert_eq!(second.received.len(), 1, "{:?}", second.received);
    assert!(bystander.received.is_empty(), "{:?}", bystander.received);
    assert_eq!(hello.received[0].0, id);
    assert_eq!(hello.received[0].1["message"], "Hello, Alice!");
    assert_eq!(second.received[0].1["ok"], true);
}
