//! Progress acks and `[runtime] max_concurrent`: with one sandbox slot on the node, events
//! that wait for it longer than their `ack_wait` (timeout + 5 s) are not redelivered
//! meanwhile: each runs exactly once, and never two at the same time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::dispatch::{consumer_info, millis_between, runs, runtime_settings};
use common::*;

const EVENTS: usize = 6;

#[tokio::test(flavor = "multi_thread")]
async fn events_waiting_for_a_sandbox_slot_keep_their_delivery() {
    let nats = NatsServer::start();
    let project = Project::new();
    runtime_settings(&project, "max_concurrent = 1");
    // ack_wait = 2 s + 5 s = 7 s; six runs of 1.5 s, one at a time, take 9 s.
    project.function("slow", "flaky", &format!("subscribe = [\"jobs\"]\ntimeout = \"2s\"\nconcurrency = {EVENTS}"));
    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "slow").await;
    let ack_wait = consumer_info(&js, "slow").await.config.ack_wait;
    assert_eq!(ack_wait, Duration::from_secs(7));

    for i in 1..=EVENTS {
        publish_event(&js, "sluice.events.jobs", &format!("slow-{i}"), r#"{"sleep_ms":1500}"#).await.await.unwrap();
    }
    results.wait_for(EVENTS, Duration::from_secs(60)).await;
    wait_idle(&js, "slow", Duration::from_secs(30)).await;
    results.drain(Duration::from_millis(300)).await;

    let log = up.log();
    let mut runs = runs(&log);
    runs.sort_by_key(|run| run.start);
    // One sandbox at a time: no two runs overlap (allowing for the delay between a run's
    // end and its log line).
    for pair in runs.windows(2) {
        let overlap = millis_between(pair[1].start, pair[0].end);
        assert!(overlap < 250, "{} and {} ran at the same time ({overlap} ms) with max_concurrent = 1\n{log}", pair[0].event_id, pair[1].event_id);
    }

    // The scenario holds the last events past their ack_wait.
    let held = millis_between(runs[0].start, runs[runs.len() - 1].end);
    assert!(held > 7000, "the runs took {held} ms, not longer than ack_wait; the test proves nothing\n{log}");

    // Each event ran once, on its first delivery, and the server redelivered nothing.
    let mut ran: Vec<(String, u32, bool)> = runs.iter().map(|run| (run.event_id.clone(), run.attempt, run.succeeded)).collect();
    ran.sort();
    let expected: Vec<(String, u32, bool)> = (1..=EVENTS).map(|i| (format!("slow-{i}"), 1, true)).collect();
    assert_eq!(ran, expected, "{log}");
    assert_eq!(results.received.len(), EVENTS, "{:?}", results.received);
    let consumer = consumer_info(&js, "slow").await;
    assert_eq!(consumer.num_redelivered, 0, "{consumer:?}");
    assert_eq!(consumer.delivered.consumer_sequence, EVENTS as u64, "deliveries: {consumer:?}");
}
