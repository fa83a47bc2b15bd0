//! SIGKILL of `sluice up` in the middle of 5,000 events, then a restart: every event is
//! handled, none lost; an event handled twice is one that was in flight at the kill and came
//! back as a redelivery (a higher attempt).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;

const EVENTS: usize = 5_000;
const CONCURRENCY: usize = 8;

fn distinct(received: &[(String, serde_json::Value)]) -> BTreeSet<String> {
    received.iter().map(|(id, _)| id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_up_loses_no_event_of_many() {
    let started = Instant::now();
    let nats = NatsServer::start();
    let project = Project::new();
    project.function(
        "worker",
        "flaky",
        &format!(
            "subscribe = [\"jobs\"]\ntimeout = \"2s\"\nconcurrency = {CONCURRENCY}\n\
             [retry]\nmax_attempts = 10\nbackoff = {{ initial = \"100ms\", factor = 2.0, max = \"1s\", jitter = true }}"
        ),
    );
    let mut first = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "worker").await;

    let all: BTreeSet<String> = (0..EVENTS).map(|i| format!("job-{i}")).collect();
    let mut acks = Vec::new();
    for id in &all {
        acks.push(publish_event(&js, "sluice.events.jobs", id, r#"{"sleep_ms":1}"#).await);
        if acks.len() == 512 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }

    results.wait_for(EVENTS / 5, Duration::from_secs(120)).await;
    first.kill();
    let killed = Instant::now();
    // Whatever the killed process published is delivered to us before the restart.
    results.drain(Duration::from_millis(500)).await;
    let boundary = results.received.len();
    let done_before = distinct(&results.received).len();
    assert!(done_before > 0 && done_before < EVENTS, "the kill must land mid-stream: {done_before} of {EVENTS} done");

    let _second = project.up(Some(&nats.url()));
    let limit = Instant::now() + Duration::from_secs(120);
    while distinct(&results.received).len() < EVENTS {
        assert!(
            Instant::now() < limit,
            "{} of {EVENTS} events handled 120 s after the restart",
            distinct(&results.received).len()
        );
        results.drain(Duration::from_millis(200)).await;
    }
    let recovered = killed.elapsed();
    wait_idle(&js, "worker", Duration::from_secs(60)).await;
    results.drain(Duration::from_millis(500)).await;

    assert_eq!(distinct(&results.received), all, "every event handled");
    let dups = duplicates(&results.received);
    let before: BTreeSet<String> = distinct(&results.received[..boundary]);
    for (id, attempts) in &dups {
        let unique: BTreeSet<u64> = attempts.iter().copied().collect();
        assert_eq!(unique.len(), attempts.len(), "{id} handled twice in the same attempt: {attempts:?}");
        assert!(before.contains(id), "{id} handled twice although the killed process never finished it: {attempts:?}");
    }
    // Events the killed process held came back with a higher delivery count.
    let redelivered = results.received[boundary..].iter().filter(|(_, body)| body["attempt"].as_u64() > Some(1)).count();
    assert!(redelivered > 0, "no event in flight at the kill was redelivered");
    assert!(
        dups.len() <= CONCURRENCY,
        "{} duplicates, more than the {CONCURRENCY} events that can be in flight: {dups:?}",
        dups.len()
    );
    println!(
        "killed after {done_before} of {EVENTS} events; {redelivered} redelivered; {} duplicates (event: attempts) {dups:?}; \
         all handled {:.1} s after the kill; test took {:.1} s",
        dups.len(),
        recovered.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
