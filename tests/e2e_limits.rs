//! Limits: an endless loop stops at its timeout and a memory bomb at its memory limit, each
//! into the DLQ, while a neighbour function keeps answering.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_and_memory_limits_are_enforced_without_disturbing_neighbours() {
    let nats = NatsServer::start();
    let project = Project::new();
    project
        .function("looper", "flaky", "subscribe = [\"loops\"]\ntimeout = \"3s\"\nconcurrency = 2\n[retry]\nmax_attempts = 1")
        .function("hog", "flaky", "subscribe = [\"hogs\"]\nmemory_mb = 16\n[retry]\nmax_attempts = 1")
        .function("hello", "hello", "subscribe = [\"greetings\"]");
    let _up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut hello = Results::subscribe(&client, "hello").await;
    let mut hog_results = Results::subscribe(&client, "hog").await;
    let url = nats.url();

    for _ in 0..2 {
        let out = project.sluice(&["--nats", &url, "publish", "loops", "--data", r#"{"loop":true}"#]);
        assert!(out.status.success());
    }
    let out = project.sluice(&["--nats", &url, "publish", "hogs", "--data", r#"{"alloc_mb":64}"#]);
    assert!(out.status.success());
    // Within its limit the same function works.
    let out = project.sluice(&["--nats", &url, "publish", "hogs", "--data", r#"{"alloc_mb":4}"#]);
    assert!(out.status.success());

    // The neighbour answers while both loops are still spinning.
    for i in 0..5 {
        let data = format!(r#"{{"name":"n{i}"}}"#);
        assert!(project.sluice(&["--nats", &url, "publish", "greetings", "--data", &data]).status.success());
    }
    hello.wait_for(5, Duration::from_secs(30)).await;
    let loops_dead = stream_messages(&js, "SLUICE_DLQ")
        .await
        .iter()
        .filter(|m| header(m, "sluice-function") == Some("looper"))
        .count();
    assert_eq!(loops_dead, 0, "the neighbour answered before the loops timed out");

    wait_stream_count(&js, "SLUICE_DLQ", 3, Duration::from_secs(30)).await;
    let dlq = stream_messages(&js, "SLUICE_DLQ").await;
    let kinds: Vec<(&str, &str)> = dlq
        .iter()
        .map(|m| (header(m, "sluice-function").unwrap(), header(m, "sluice-error-kind").unwrap()))
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == ("looper", "timeout")).count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == ("hog", "memory_limit")).count(), 1, "{kinds:?}");
    let hog = dlq.iter().find(|m| header(m, "sluice-function") == Some("hog")).unwrap();
    assert!(header(hog, "sluice-error").unwrap().contains("memory_mb = 16"));

    hog_results.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(hog_results.received[0].1["allocated_mb"], 4);
}
