//! Crash safety: a `sluice up` killed with SIGKILL mid-flight loses nothing; a second
//! process finishes every accepted event, as a result or a dead letter.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_loses_no_event() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function(
        "worker",
        "flaky",
        "subscribe = [\"jobs\"]\ntimeout = \"2s\"\nconcurrency = 4\n[retry]\nmax_attempts = 2\nbackoff = { initial = \"100ms\", factor = 2.0, max = \"1s\", jitter = true }",
    );
    let mut first = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "worker").await;

    // 60 events that succeed slowly, 10 that always fail.
    let mut good = BTreeSet::new();
    let mut poison = BTreeSet::new();
    for i in 0..70 {
        let (id, data) = if i % 7 == 3 {
            poison.insert(format!("poison-{i}"));
            (format!("poison-{i}"), r#"{"fail":true,"sleep_ms":30}"#)
        } else {
            good.insert(format!("good-{i}"));
            (format!("good-{i}"), r#"{"sleep_ms":60}"#)
        };
        publish_event(&js, "sluice.events.jobs", &id, data).await.await.unwrap();
    }

    // Kill the first worker while it is busy.
    results.wait_for(8, Duration::from_secs(30)).await;
    first.kill();
    let done_before = results.received.len();
    assert!(done_before < good.len(), "the kill must land mid-flight");

    let _second = project.up(Some(&nats.url()));
    wait_stream_count(&js, "SLUICE_DLQ", poison.len() as u64, Duration::from_secs(60)).await;
    wait_idle(&js, "worker", Duration::from_secs(60)).await;
    results.drain(Duration::from_millis(500)).await;

    let succeeded: BTreeSet<String> = results.received.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(succeeded, good, "every good event produced a result");
    let dead: Vec<String> = stream_messages(&js, "SLUICE_DLQ")
        .await
        .iter()
        .map(|m| header(m, "ce-id").unwrap().to_owned())
        .collect();
    let dead_set: BTreeSet<String> = dead.iter().cloned().collect();
    assert_eq!(dead_set, poison, "every poison event is in the DLQ");
    assert_eq!(dead.len(), poison.len(), "no poison event dead-lettered twice");
}
