//! Graceful shutdown: SIGTERM stops fetching, lets in-flight invocations finish and acks
//! them, and exits 0; nothing is left pending or redelivered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_invocations() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("worker", "flaky", "subscribe = [\"jobs\"]\nconcurrency = 3\ntimeout = \"5s\"");
    let mut up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "worker").await;

    for _ in 0..3 {
        let out = project.sluice(&["--nats", &nats.url(), "publish", "jobs", "--data", r#"{"sleep_ms":1500}"#]);
        assert!(out.status.success());
    }
    // All three are running once the consumer reports them in flight.
    let started = std::time::Instant::now();
    while consumer_backlog(&js, "worker").await != (0, 3) {
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", consumer_backlog(&js, "worker").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = up.terminate();
    assert!(status.success(), "exit status {status}: {}", up.log());
    results.drain(Duration::from_millis(300)).await;
    assert_eq!(results.received.len(), 3, "in-flight invocations finished: {}", up.log());
    assert_eq!(consumer_backlog(&js, "worker").await, (0, 0), "and were acked");
}
