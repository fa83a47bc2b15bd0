//! Shutdown is bounded in every state: with NATS unreachable SIGTERM still exits within the
//! drain bound; a second signal exits at once and the unfinished event is redelivered; an
//! idle function does not report phantom in-flight invocations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_nats_down_exits_within_the_bound() {
    let mut nats = NatsServer::start();
    let project = Project::new();
    project.function("worker", "hello", "subscribe = [\"jobs\"]\ntimeout = \"1s\"\nconcurrency = 32");
    let mut up = project.up(Some(&nats.url()));
    nats.stop();
    up.wait_log("Lost the connection to NATS", Duration::from_secs(15));
    up.signal(libc::SIGTERM);
    // Drain bound: the longest timeout (1 s) + 10 s; generous slack for a loaded machine.
    let status = up.wait_exit(Duration::from_secs(40));
    assert!(status.is_some(), "`sluice up` hung on SIGTERM with NATS down; its log:\n{}", up.log());
    let log = up.log();
    assert!(!log.contains("Draining in-flight"), "nothing was running: {log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_exits_at_once_and_the_event_comes_back() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("worker", "flaky", "subscribe = [\"jobs\"]\ntimeout = \"12s\"\nconcurrency = 4");
    let mut up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    publish_event(&js, "sluice.events.jobs", "slow-1", r#"{"sleep_ms":10000}"#).await.await.unwrap();
    let started = std::time::Instant::now();
    while consumer_backlog(&js, "worker").await != (0, 1) {
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", consumer_backlog(&js, "worker").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    up.signal(libc::SIGTERM);
    up.wait_log("Shutting down", Duration::from_secs(10));
    up.wait_log("in_flight=1", Duration::from_secs(10));
    up.signal(libc::SIGINT);
    // The invocation has ~10 s to go; only the second-signal path exits with 130.
    let status = up.wait_exit(Duration::from_secs(10)).unwrap_or_else(|| panic!("a second signal did not exit; log:\n{}", up.log()));
    assert_eq!(status.code(), Some(130), "{}", up.log());
    assert!(up.log().contains("Second signal"), "{}", up.log());

    // Not acknowledged, so JetStream hands it to the next worker.
    let (_, ack_pending) = consumer_backlog(&js, "worker").await;
    assert_eq!(ack_pending, 1, "the unfinished event is still pending");
    let mut results = Results::subscribe(&client, "worker").await;
    let _second = project.up(Some(&nats.url()));
    results.wait_for(1, Duration::from_secs(120)).await;
    assert_eq!(results.received[0].0, "slow-1");
}
