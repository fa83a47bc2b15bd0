//! `on_success` when the chained event cannot be stored: the cause is not acked but handed
//! back and run again, and once the events stream takes messages again the chain is stored
//! (once) and the cause acked. Guards "ack only after the chained event was stored".
//!
//! The fault is a full stream: `SLUICE_EVENTS` limited to the one message it holds, with
//! `discard = new`, refuses the chained publish as a stream at its limits would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream::DiscardPolicy};
use common::dispatch::{consumer_info, runs_of};
use common::*;

/// Sets `SLUICE_EVENTS`' message limit and discard policy.
async fn limit_events(js: &jetstream::Context, max_messages: i64, discard: DiscardPolicy) {
    let mut stream = js.get_stream("SLUICE_EVENTS").await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.max_messages = max_messages;
    config.discard = discard;
    js.update_stream(config).await.unwrap();
}

async fn chained_count(js: &jetstream::Context) -> usize {
    stream_messages(js, "SLUICE_EVENTS").await.iter().filter(|m| m.subject.as_str() == "sluice.events.chained").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cause_is_acked_only_after_the_chained_event_is_stored() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function(
        "relay",
        "flaky",
        "subscribe = [\"jobs\"]\non_success = \"chained\"\n[retry]\nmax_attempts = 10\nbackoff = { initial = \"200ms\", factor = 1.0, max = \"200ms\", jitter = false }",
    );
    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = jetstream::new(client.clone());

    // The stream is full once it holds the cause.
    limit_events(&js, 1, DiscardPolicy::New).await;
    publish_event(&js, "sluice.events.jobs", "cause-2", "{}").await.await.unwrap();

    // From the first run's success until the dispatcher gives up on its publish, and after,
    // the cause is held.
    let started = Instant::now();
    while runs_of(&up.log(), "cause-2").is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "the cause never ran:\n{}", up.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        let given_up = up.log().contains("Cannot publish the on_success event");
        let consumer = consumer_info(&js, "relay").await;
        assert_eq!(consumer.num_ack_pending, 1, "the cause is not acked while its chained event is not stored: {consumer:?}");
        assert_eq!(consumer.ack_floor.stream_sequence, 0, "{consumer:?}");
        if given_up {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the refused publish was never reported:\n{}", up.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(chained_count(&js).await, 0);

    // Handed back and run again.
    let started = Instant::now();
    while !runs_of(&up.log(), "cause-2").iter().any(|run| run.attempt >= 2) {
        assert!(started.elapsed() < Duration::from_secs(30), "the cause never ran again:\n{}", up.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(chained_count(&js).await, 0);
    assert_eq!(consumer_info(&js, "relay").await.ack_floor.stream_sequence, 0, "still not acked");

    // Room again: the next attempt stores the chain, then the cause is acked.
    limit_events(&js, -1, DiscardPolicy::Old).await;
    wait_stream_count(&js, "SLUICE_EVENTS", 2, Duration::from_secs(30)).await;
    wait_idle(&js, "relay", Duration::from_secs(30)).await;
    assert_eq!(chained_count(&js).await, 1);
    let consumer = consumer_info(&js, "relay").await;
    assert_eq!(consumer.ack_floor.stream_sequence, 1, "the cause is acked: {consumer:?}");
    let runs = runs_of(&up.log(), "cause-2");
    assert!(runs.iter().all(|run| run.succeeded), "{runs:?}");
    assert!(stream_messages(&js, "SLUICE_DLQ").await.is_empty(), "no dead letter");
}
