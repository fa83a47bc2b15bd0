//! A Lambda function with `concurrency = 8` runs 8 concurrent events in 8 execution
//! environments at once (overlap measured from the handlers' own clocks), and later events
//! reuse those warm environments (their module-level counters grow). Guards the pool
//! against serialising invocations (the Runtime Interface Emulator's one reservation) and
//! against starting a process per event.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

const HANDLER: &str = r#"import os, time

count = 0


def lambda_handler(event, context):
    global count
    count += 1
    started = time.time()
    time.sleep(1.5)
    return {"pid": os.getpid(), "count": count, "started": started, "ended": time.time()}
"#;

/// The most intervals that hold one instant.
fn max_overlap(intervals: &[(f64, f64)]) -> usize {
    intervals.iter().map(|(start, _)| intervals.iter().filter(|(s, e)| s <= start && start < e).count()).max().unwrap_or(0)
}

#[test]
fn overlap_is_measured_by_instants() {
    assert_eq!(max_overlap(&[(0.0, 1.0), (0.5, 2.0), (1.0, 3.0)]), 2);
    assert_eq!(max_overlap(&[(0.0, 1.0), (1.0, 2.0)]), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_events_run_in_eight_warm_environments_at_once() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.lambda_function(
        "wide",
        "runtime = \"python3.11\"\nhandler = \"app.lambda_handler\"\nconcurrency = 8\ntimeout = \"20s\"\nsubscribe = [\"work\"]",
        &[("app.py", HANDLER)],
    );
    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let mut results = Results::subscribe(&client, "wide").await;

    let publish_round = |round: usize| {
        for i in 0..8 {
            let id = format!("r{round}-{i}");
            let out = project.sluice(&["--nats", &nats.url(), "publish", "work", "--data", "{}", "--id", &id]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    };
    publish_round(1);
    results.wait_for(8, Duration::from_secs(60)).await;
    let first: Vec<serde_json::Value> = results.received.iter().map(|(_, body)| body.clone()).collect();
    let intervals: Vec<(f64, f64)> = first.iter().map(|b| (b["started"].as_f64().unwrap(), b["ended"].as_f64().unwrap())).collect();
    assert_eq!(max_overlap(&intervals), 8, "all eight ran at once: {intervals:?}\n{}", up.log());
    let pids: BTreeSet<u64> = first.iter().map(|b| b["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids.len(), 8, "eight environments: {first:?}");
    assert!(first.iter().all(|b| b["count"] == 1), "each environment's first event: {first:?}");

    publish_round(2);
    results.wait_for(16, Duration::from_secs(60)).await;
    let second: Vec<serde_json::Value> = results.received[8..].iter().map(|(_, body)| body.clone()).collect();
    let reused: BTreeSet<u64> = second.iter().map(|b| b["pid"].as_u64().unwrap()).collect();
    assert!(reused.is_subset(&pids), "the second round ran in the same environments: {pids:?} vs {reused:?}");
    let counts: Vec<u64> = second.iter().map(|b| b["count"].as_u64().unwrap()).collect();
    assert!(counts.iter().all(|c| *c >= 2), "module state survived between events: {counts:?}");
    assert_eq!(counts.iter().sum::<u64>(), 16, "8 environments, 16 events in all: {counts:?}");
    let started = up.log().matches("Execution environment started.").count();
    assert_eq!(started, 8, "no environment beyond concurrency:\n{}", up.log());
}
