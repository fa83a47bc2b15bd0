//! Graceful shutdown: SIGTERM stops fetching, lets in-flight invocations finish and acks
//! them, and exits 0; events not yet fetched stay pending in the consumer, unrun, for the
//! next worker (none is fetched during the drain, none redelivered).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_invocations_and_leaves_the_rest_pending() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("worker", "flaky", "subscribe = [\"jobs\"]\nconcurrency = 3\ntimeout = \"5s\"");
    let mut up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "worker").await;

    // Three slow events fill the function's concurrency. Each runs close to the 5 s timeout,
    // so at SIGTERM more than the timeout less 3 s is left of it: a drain bounded by less
    // than the timeout would give up on them.
    for i in 0..3 {
        publish_event(&js, "sluice.events.jobs", &format!("running-{i}"), r#"{"sleep_ms":4000}"#).await.await.unwrap();
    }
    let started = std::time::Instant::now();
    while consumer_backlog(&js, "worker").await != (0, 3) {
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", consumer_backlog(&js, "worker").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Four quick ones wait unfetched (max_ack_pending = concurrency = 3). They are
    // quick so that a drain that fetched them would run them before the process exits.
    for i in 0..4 {
        publish_event(&js, "sluice.events.jobs", &format!("waiting-{i}"), r#"{"quick":true}"#).await.await.unwrap();
    }
    assert_eq!(consumer_backlog(&js, "worker").await, (4, 3), "three running, four waiting");

    let status = up.terminate();
    assert!(status.success(), "exit status {status}: {}", up.log());
    // The process is gone: whatever it published has been sent. A short quiet period lets
    // the last results reach this subscriber (local loopback; nothing else can arrive).
    results.drain(Duration::from_millis(300)).await;
    let ran: BTreeSet<&str> = results.received.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ran,
        ["running-0", "running-1", "running-2"].into_iter().collect(),
        "the in-flight invocations finished, and no waiting event was fetched and run during the drain: {}",
        up.log()
    );
    // Each logged the time it ran: the 4 s it slept, not a unit off.
    for run in common::dispatch::runs(&up.log()) {
        let ms = (run.end - run.start).num_milliseconds();
        assert!((4000..5000).contains(&ms), "duration_ms of {}: {ms}", run.event_id);
    }
    assert_eq!(common::dispatch::runs(&up.log()).len(), 3);
    assert_eq!(consumer_backlog(&js, "worker").await, (4, 0), "the three were acked; the four still pending");
    let info = js.get_stream("SLUICE_EVENTS").await.unwrap().consumer_info("worker").await.unwrap();
    assert_eq!(info.ack_floor.stream_sequence, 3, "exactly the first three acked");
    assert_eq!(info.num_redelivered, 0, "nothing fetched and handed back");
}
