//! A per-second schedule with two `sluice up` processes on one NATS: every tick is invoked
//! exactly once, and the handler receives the EventBridge Scheduled Event shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn each_tick_fires_once_across_workers() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("echo", "flaky", "subscribe = [\"ticks\"]\nenv = { FLAKY_ECHO = \"1\" }");
    std::fs::create_dir_all(project.path().join("triggers")).unwrap();
    std::fs::write(
        project.path().join("triggers/second.toml"),
        "kind = \"cron\"\nschedule = \"* * * * * *\"\ntimezone = \"Europe/Berlin\"\ntopic = \"ticks\"\npayload = { job = \"tick\" }\n",
    )
    .unwrap();
    let client = nats.client().await;
    let mut results = Results::subscribe(&client, "echo").await;
    let first = project.up(Some(&nats.url()));
    let second = project.up(Some(&nats.url()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    drop(first);
    drop(second);
    results.drain(Duration::from_millis(500)).await;

    let mut per_tick: BTreeMap<String, usize> = BTreeMap::new();
    for (id, _) in &results.received {
        *per_tick.entry(id.clone()).or_default() += 1;
    }
    assert!(per_tick.len() >= 8, "a tick per second over 10 s: {per_tick:?}");
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
