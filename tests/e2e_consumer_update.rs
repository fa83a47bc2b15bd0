//! Consumer updates: after a function's `subscribe`, `timeout` and `concurrency` change and
//! `sluice up` restarts, its durable consumer follows (filter subjects, ack_wait = timeout +
//! 5 s, max_ack_pending = concurrency): the new topic reaches it, the old one no longer does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::dispatch::consumer_info;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_function_updates_its_consumer() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("mover", "flaky", "subscribe = [\"old\"]\ntimeout = \"1s\"\nconcurrency = 2");
    let mut up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "mover").await;

    let before = consumer_info(&js, "mover").await.config;
    assert_eq!(before.filter_subjects, ["sluice.events.old", "sluice.direct.mover"]);
    assert_eq!(before.ack_wait, Duration::from_secs(6));
    assert_eq!(before.max_ack_pending, 2);
    publish_event(&js, "sluice.events.old", "before-1", "{}").await.await.unwrap();
    results.wait_for(1, Duration::from_secs(30)).await;
    wait_idle(&js, "mover", Duration::from_secs(30)).await;
    assert!(up.terminate().success(), "{}", up.log());

    project.function("mover", "flaky", "subscribe = [\"new\"]\ntimeout = \"3s\"\nconcurrency = 5");
    let up = project.up(Some(&nats.url()));
    let after = consumer_info(&js, "mover").await.config;
    assert_eq!(after.filter_subjects, ["sluice.events.new", "sluice.direct.mover"], "{}", up.log());
    assert_eq!(after.ack_wait, Duration::from_secs(8), "timeout 3 s + 5 s");
    assert_eq!(after.max_ack_pending, 5, "the new concurrency");

    // The old topic first: had the consumer kept it, it would be delivered before the new one.
    publish_event(&js, "sluice.events.old", "old-2", "{}").await.await.unwrap();
    publish_event(&js, "sluice.events.new", "new-1", "{}").await.await.unwrap();
    results.wait_for(2, Duration::from_secs(30)).await;
    wait_idle(&js, "mover", Duration::from_secs(30)).await;
    results.drain(Duration::from_millis(300)).await;
    let ids: Vec<&str> = results.received.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["before-1", "new-1"]);
    let consumer = consumer_info(&js, "mover").await;
    assert_eq!(consumer.delivered.consumer_sequence, 2, "only before-1 and new-1 were delivered: {consumer:?}");
}
