//! A dead letter that cannot be written keeps the event pending, and the redelivery that
//! finally writes it carries the real cause of the failure, not `lost`: for every such
//! event, not only the latest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_real_cause_survives_a_failed_dead_letter_write() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function(
        "worker",
        "flaky",
        "subscribe = [\"jobs\"]\ntimeout = \"1s\"\nconcurrency = 2\nenv = { FLAKY_FAIL = \"1\" }\n[retry]\nmax_attempts = 1",
    );
    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = jetstream::new(client.clone());

    // No dead-letter stream: the write is refused.
    js.delete_stream("SLUICE_DLQ").await.unwrap();
    for id in ["doomed-1", "doomed-2"] {
        publish_event(&js, "sluice.events.jobs", id, "{}").await.await.unwrap();
    }
    for id in ["doomed-1", "doomed-2"] {
        let event = format!("event_id={id} ");
        up.wait_line(&format!("the refused dead letter of {id}"), Duration::from_secs(30), |line| {
            line.contains("Cannot write the dead letter") && line.contains(&event)
        });
    }
    assert_eq!(consumer_backlog(&js, "worker").await.1, 2, "the events stay pending");
    // Each write was tried five times (four retries) before it was given up.
    let log = up.log();
    let retries: Vec<&str> = log.lines().filter(|line| line.contains("Cannot store the dead letter; trying again.")).collect();
    assert!(retries.iter().any(|line| line.contains(" tries=4")), "{log}");
    assert!(!retries.iter().any(|line| line.contains(" tries=5")), "{log}");

    js.create_stream(stream::Config { name: "SLUICE_DLQ".into(), subjects: vec!["sluice.dlq.>".into()], ..Default::default() })
        .await
        .unwrap();
    wait_stream_count(&js, "SLUICE_DLQ", 2, Duration::from_secs(60)).await;
    let dead = stream_messages(&js, "SLUICE_DLQ").await;
    let mut ids: Vec<_> = dead.iter().map(|entry| header(entry, "ce-id").unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["doomed-1", "doomed-2"]);
    for entry in &dead {
        assert_eq!(header(entry, "sluice-error-kind"), Some("error"), "{:?}", entry.headers);
        assert!(header(entry, "sluice-error").unwrap().contains("status 1"), "{:?}", entry.headers);
        assert_eq!(header(entry, "sluice-attempts"), Some("1"));
    }
    wait_idle(&js, "worker", Duration::from_secs(30)).await;
}

/// A dead-letter write refused for a moment is retried at once (five tries over about
/// 1.5 s): the event is dead-lettered on that delivery, not left for a redelivery.
#[tokio::test(flavor = "multi_thread")]
async fn a_briefly_refused_dead_letter_is_written_by_the_retry() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("worker", "flaky", "subscribe = [\"jobs\"]\ntimeout = \"1s\"\nenv = { FLAKY_FAIL = \"1\" }\n[retry]\nmax_attempts = 1");
    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = jetstream::new(client.clone());

    js.delete_stream("SLUICE_DLQ").await.unwrap();
    publish_event(&js, "sluice.events.jobs", "doomed-1", "{}").await.await.unwrap();
    // The stream comes back after the fourth try failed, 0.8 s before the fifth (the delays
    // double from 0.1 s): only retries spaced as promised reach it.
    up.wait_line("the fourth failed try", Duration::from_secs(15), |line| {
        line.contains("Cannot store the dead letter; trying again.") && line.contains(" tries=4")
    });
    js.create_stream(stream::Config { name: "SLUICE_DLQ".into(), subjects: vec!["sluice.dlq.>".into()], ..Default::default() })
        .await
        .unwrap();
    wait_stream_count(&js, "SLUICE_DLQ", 1, Duration::from_secs(30)).await;
    wait_idle(&js, "worker", Duration::from_secs(10)).await;
    let log = up.log();
    assert!(!log.contains("Cannot write the dead letter"), "the retry wrote it: {log}");
    // The delays between tries double from 0.1 s: tries 1 to 4 failed over at least 0.7 s.
    let failed_at = |tries: &str| {
        let line = log
            .lines()
            .find(|line| line.contains("Cannot store the dead letter; trying again.") && line.contains(&format!(" tries={tries}")))
            .unwrap_or_else(|| panic!("no try {tries}: {log}"));
        chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next().unwrap()).unwrap()
    };
    let spread = (failed_at("4") - failed_at("1")).num_milliseconds();
    assert!(spread >= 650, "tries 1 to 4 failed within {spread} ms: {log}");
    let info = js.get_stream("SLUICE_EVENTS").await.unwrap().consumer_info("worker").await.unwrap();
    assert_eq!(info.num_redelivered, 0, "dead-lettered on its first delivery");
    let dead = stream_messages(&js, "SLUICE_DLQ").await;
    assert_eq!(header(&dead[0], "sluice-error-kind"), Some("error"));
    assert_eq!(header(&dead[0], "sluice-attempts"), Some("1"));
}
