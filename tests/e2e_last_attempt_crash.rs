//! A worker killed during an event's last attempt: the event still reaches the DLQ (as
//! `lost`) once JetStream redelivers it, and the function is not run past its budget.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_event_whose_last_attempt_died_is_dead_lettered() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("worker", "flaky", "subscribe = [\"jobs\"]\ntimeout = \"1s\"\n[retry]\nmax_attempts = 1");
    let mut first = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "worker").await;

    let out = project.sluice(&["--nats", &nats.url(), "publish", "jobs", "--data", r#"{"sleep_ms":900}"#, "--id", "last-1"]);
    assert!(out.status.success());
    let started = std::time::Instant::now();
    while consumer_backlog(&js, "worker").await != (0, 1) {
        assert!(started.elapsed() < Duration::from_secs(20), "the event never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill();

    let second = project.up(Some(&nats.url()));
    wait_stream_count(&js, "SLUICE_DLQ", 1, Duration::from_secs(60)).await;
    let dlq = stream_messages(&js, "SLUICE_DLQ").await;
    assert_eq!(header(&dlq[0], "ce-id"), Some("last-1"));
    assert_eq!(header(&dlq[0], "sluice-error-kind"), Some("lost"));
    assert_eq!(header(&dlq[0], "sluice-attempts"), Some("1"));
    assert_eq!(&dlq[0].payload[..], br#"{"sleep_ms":900}"#);
    wait_idle(&js, "worker", Duration::from_secs(10)).await;
    results.drain(Duration::from_millis(300)).await;
    assert!(results.received.is_empty(), "not run again past its budget");
    assert!(!second.log().contains("Invocation succeeded"), "{}", second.log());
}
