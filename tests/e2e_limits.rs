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
    // The loops' timeout is the window in which the neighbour must answer: 5 s, so that five
    // quick invocations fit on a loaded 2-core machine, short enough to keep the test quick.
    project
        .function("looper", "flaky", "subscribe = [\"loops\"]\ntimeout = \"5s\"\nconcurrency = 2\n[retry]\nmax_attempts = 1")
        .function("hog", "flaky", "subscribe = [\"hogs\"]\nmemory_mb = 16\n[retry]\nmax_attempts = 1")
        .function("hello", "hello", "subscribe = [\"greetings\"]");
    let _up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut hello = Results::subscribe(&client, "hello").await;
    let mut hog_results = Results::subscribe(&client, "hog").await;

    // Events are published from here, not with `sluice publish`: the window below must not
    // depend on how fast processes spawn. The memory bomb first, and done with, so that
    // nothing but the two loops holds a sandbox when the neighbour's events arrive.
    publish_event(&js, "sluice.events.hogs", "hog-64", r#"{"alloc_mb":64}"#).await.await.unwrap();
    // Within its limit the same function works.
    publish_event(&js, "sluice.events.hogs", "hog-4", r#"{"alloc_mb":4}"#).await.await.unwrap();
    hog_results.wait_for(1, Duration::from_secs(30)).await;
    wait_stream_count(&js, "SLUICE_DLQ", 1, Duration::from_secs(30)).await;
    for i in 0..2 {
        publish_event(&js, "sluice.events.loops", &format!("loop-{i}"), r#"{"loop":true}"#).await.await.unwrap();
    }

    // Both loops are spinning once the consumer reports them in flight (nothing else waits
    // for a sandbox, so each starts as soon as it is fetched) ...
    let started = std::time::Instant::now();
    while consumer_backlog(&js, "looper").await != (0, 2) {
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", consumer_backlog(&js, "looper").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and the neighbour answers while they still are.
    for i in 0..5 {
        let id = format!("greeting-{i}");
        js.publish_with_headers("sluice.events.greetings", event_headers(&id), format!(r#"{{"name":"n{i}"}}"#).into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    hello.wait_for(5, Duration::from_secs(30)).await;
    let loops_dead = stream_messages(&js, "SLUICE_DLQ")
        .await
        .iter()
        .filter(|m| header(m, "sluice-function") == Some("looper"))
        .count();
    assert_eq!(loops_dead, 0, "the neighbour answered before the loops timed out");
    assert_eq!(consumer_backlog(&js, "looper").await, (0, 2), "the loops were still running");

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

    assert_eq!(hog_results.received[0].1["allocated_mb"], 4);
}
