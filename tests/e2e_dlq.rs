//! Poison event: after exactly `max_attempts` failures the event is in `SLUICE_DLQ` with the
//! failure headers and its original attributes and body, and is no longer pending: exactly
//! three runs and three deliveries, no fourth (guards the attempt budget against off-by-ones).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::dispatch::{consumer_info, runs_of};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_event_lands_in_the_dead_letter_stream() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function(
        "worker",
        "flaky",
        "subscribe = [\"jobs.*\"]\n[retry]\nmax_attempts = 3\nbackoff = { initial = \"50ms\", factor = 2.0, max = \"1s\", jitter = true }",
    );
    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "worker").await;

    let body = r#"{"fail":true,"order":42}"#;
    let out = project.sluice(&[
        "--nats", &nats.url(), "publish", "jobs.poison", "--data", body, "--id", "poison-1", "--type", "com.example.job",
        "--source", "tests", "--header", "tenant=acme",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    wait_stream_count(&js, "SLUICE_DLQ", 1, Duration::from_secs(30)).await;
    wait_idle(&js, "worker", Duration::from_secs(10)).await;
    // Exactly max_attempts runs, attempts 1..=3, all failed; and the server delivered the
    // event exactly three times: no fourth delivery, not even one that is dead-lettered
    // without running.
    let log = up.log();
    let attempts: Vec<(u32, bool)> = runs_of(&log, "poison-1").iter().map(|run| (run.attempt, run.succeeded)).collect();
    assert_eq!(attempts, [(1, false), (2, false), (3, false)], "{log}");
    let consumer = consumer_info(&js, "worker").await;
    assert_eq!(consumer.delivered.consumer_sequence, 3, "deliveries of the poison event: {consumer:?}");
    assert_eq!(consumer.ack_floor.stream_sequence, 1, "the original is terminated: {consumer:?}");
    let dlq = stream_messages(&js, "SLUICE_DLQ").await;
    assert_eq!(dlq.len(), 1);
    let entry = &dlq[0];
    assert_eq!(entry.subject.as_str(), "sluice.dlq.worker");
    assert_eq!(&entry.payload[..], body.as_bytes(), "original body");
    assert_eq!(header(entry, "sluice-function"), Some("worker"));
    assert_eq!(header(entry, "sluice-attempts"), Some("3"));
    assert_eq!(header(entry, "sluice-error-kind"), Some("error"));
    assert!(header(entry, "sluice-error").unwrap().contains("exited with status 1"), "{:?}", header(entry, "sluice-error"));
    assert_eq!(header(entry, "sluice-original-subject"), Some("sluice.events.jobs.poison"));
    assert_eq!(header(entry, "sluice-original-seq"), Some("1"));
    for time in ["sluice-first-attempt", "sluice-failed-at"] {
        let value = header(entry, time).unwrap_or_else(|| panic!("{time} missing"));
        assert!(chrono::DateTime::parse_from_rfc3339(value).is_ok(), "{time}: {value}");
    }
    assert!(header(entry, "sluice-first-attempt") <= header(entry, "sluice-failed-at"));
    // The first attempt is the first run's start, not a later one's.
    let first_attempt = chrono::DateTime::parse_from_rfc3339(header(entry, "sluice-first-attempt").unwrap()).unwrap();
    let runs = runs_of(&log, "poison-1");
    assert!(first_attempt <= runs[0].end && first_attempt < runs[1].start, "first attempt {first_attempt}, runs {runs:?}");
    assert_eq!(header(entry, "ce-id"), Some("poison-1"));
    assert_eq!(header(entry, "ce-type"), Some("com.example.job"));
    assert_eq!(header(entry, "ce-source"), Some("tests"));
    assert_eq!(header(entry, "ce-specversion"), Some("1.0"));
    assert_eq!(header(entry, "content-type"), Some("application/json"));
    assert_eq!(header(entry, "tenant"), Some("acme"));
    assert!(header(entry, "traceparent").is_some());

    // The original is no longer pending: terminated, not redelivered.
    assert_eq!(consumer_backlog(&js, "worker").await, (0, 0));
    results.drain(Duration::from_millis(300)).await;
    assert!(results.received.is_empty());
    // Still three runs now that the consumer is idle.
    assert_eq!(runs_of(&up.log(), "poison-1").len(), 3, "exactly max_attempts attempts");
}

/// An event dead-lettered after its only attempt records when that attempt ran, not when
/// the event was published: here it waited in the stream while no worker ran.
#[tokio::test(flavor = "multi_thread")]
async fn a_single_attempt_records_when_it_ran() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("once", "flaky", "subscribe = [\"jobs\"]\nenv = { FLAKY_FAIL = \"1\" }\n[retry]\nmax_attempts = 1");
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    // The consumer exists (a new one sees only later events); then no worker runs.
    project.create_consumer(&nats.url());

    publish_event(&js, "sluice.events.jobs", "waited-1", "{}").await.await.unwrap();
    let published = stream_messages(&js, "SLUICE_EVENTS").await[0].time;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while chrono::Utc::now() <= published + chrono::Duration::milliseconds(5) {
        assert!(std::time::Instant::now() < deadline, "the clock does not move");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let worker_started = chrono::Utc::now();
    let _up = project.up(Some(&nats.url()));
    wait_stream_count(&js, "SLUICE_DLQ", 1, Duration::from_secs(30)).await;
    let entry = &stream_messages(&js, "SLUICE_DLQ").await[0];
    assert_eq!(header(entry, "sluice-attempts"), Some("1"));
    let first_attempt = chrono::DateTime::parse_from_rfc3339(header(entry, "sluice-first-attempt").unwrap()).unwrap();
    assert!(
        first_attempt >= worker_started - chrono::Duration::milliseconds(1),
        "first attempt {first_attempt} is when it ran, after the worker started at {worker_started} (published {published})"
    );
}
