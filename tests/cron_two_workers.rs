//! A per-second schedule with two `sluice up` processes on one NATS: both publish every tick
//! (by design: no lease, the event id `cron:<trigger>:<tick>` is the `Nats-Msg-Id`), JetStream
//! stores one copy and tells the other it was a duplicate, so every tick is invoked exactly
//! once; the handler receives the EventBridge Scheduled Event shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::*;

/// Ticks both processes must have fired while they ran together.
const SHARED_TICKS: usize = 6;

/// `tick → duplicate` of every "Tick fired." line of a `sluice up` log (JSON format).
fn fired(up: &Up) -> BTreeMap<String, bool> {
    let mut ticks = BTreeMap::new();
    for fields in up.log_lines("Tick fired.") {
        let tick = fields["tick"].as_str().unwrap().to_owned();
        let duplicate = fields["duplicate"].as_bool().unwrap();
        assert!(ticks.insert(tick.clone(), duplicate).is_none(), "one process fired {tick} twice:\n{}", up.log());
    }
    ticks
}

#[tokio::test(flavor = "multi_thread")]
async fn each_tick_fires_once_across_workers() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("echo", "flaky", "subscribe = [\"ticks\"]\nenv = { FLAKY_ECHO = \"1\" }");
    project.trigger(
        "second",
        "kind = \"cron\"\nschedule = \"* * * * * *\"\ntimezone = \"Europe/Berlin\"\ntopic = \"ticks\"\npayload = { job = \"tick\" }\n",
    );
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "echo").await;
    let json_logs = [("SLUICE_LOG_FORMAT", "json")];
    let first = project.up_with_env(Some(&nats.url()), &json_logs);
    let second = project.up_with_env(Some(&nats.url()), &json_logs);

    // Until both have fired the same SHARED_TICKS ticks.
    let started = Instant::now();
    let shared = loop {
        let (a, b) = (fired(&first), fired(&second));
        let shared: BTreeSet<String> = a.keys().filter(|t| b.contains_key(*t)).cloned().collect();
        if shared.len() >= SHARED_TICKS {
            break shared;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the two processes fired {} ticks in common:\nfirst:\n{}\nsecond:\n{}",
            shared.len(),
            first.log(),
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (a, b) = (fired(&first), fired(&second));
    drop(first);
    drop(second);
    // Both are killed: a short quiet period lets results already sent reach the subscriber.
    results.drain(Duration::from_millis(500)).await;

    // Both published every shared tick; JetStream stored exactly one of the two publishes.
    for tick in &shared {
        let stored = [a[tick], b[tick]].iter().filter(|duplicate| !**duplicate).count();
        assert_eq!(stored, 1, "tick {tick}: duplicate flags {} and {}; first {a:?}, second {b:?}", a[tick], b[tick]);
    }
    // One stored event per tick fired by either process.
    let ticks: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let stored = stream_messages(&js, "SLUICE_EVENTS").await;
    let ids: Vec<&str> = stored.iter().map(|m| header(m, "ce-id").unwrap()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "a tick stored twice: {ids:?}");
    assert!(stored.len() >= ticks.len(), "every fired tick is stored: {ids:?} vs {ticks:?}");

    let mut per_tick: BTreeMap<String, usize> = BTreeMap::new();
    for (id, _) in &results.received {
        *per_tick.entry(id.clone()).or_default() += 1;
    }
    assert!(per_tick.len() >= SHARED_TICKS, "a tick per second: {per_tick:?}");
    assert!(per_tick.values().all(|n| *n == 1), "every tick invoked once: {per_tick:?}");
    // Consecutive seconds, none skipped while both ran.
    let times: Vec<DateTime<Utc>> = results
        .received
        .iter()
        .map(|(_, body)| DateTime::parse_from_rfc3339(body["time"].as_str().unwrap()).unwrap().with_timezone(&Utc))
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    for pair in sorted.windows(2) {
        assert_eq!((pair[1] - pair[0]).num_milliseconds(), 1000, "{sorted:?}");
    }

    // The Scheduled Event shape.
    let (id, body) = &results.received[0];
    assert_eq!(body["detail-type"], "Scheduled Event");
    assert_eq!(body["source"], "sluice.cron");
    assert_eq!(body["resources"][0], "second");
    assert_eq!(body["detail"]["job"], "tick");
    assert_eq!(body["version"], "0");
    assert_eq!(body["id"].as_str(), Some(id.as_str()));
    let time = body["time"].as_str().unwrap();
    assert!(id.ends_with(&DateTime::parse_from_rfc3339(time).unwrap().with_timezone(&Utc).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
}
