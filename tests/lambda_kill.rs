//! kill -9 of `sluice up` while Lambda invocations are in flight loses no event and leaves
//! no handler process behind: the environments die with the worker, and the next `up`
//! runs what was not acknowledged. Guards the at-least-once contract for process-based
//! runtimes and against orphaned interpreters piling up after crashes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::lambda::process_alive;
use common::*;

const HANDLER: &str = r#"import os, time

# Every environment leaves its pid where the test can find it.
os.makedirs("../../pids", exist_ok=True)
open(f"../../pids/{os.getpid()}", "w").close()


def lambda_handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid()}
"#;

fn recorded_pids(project: &Project) -> BTreeSet<u32> {
    std::fs::read_dir(project.path().join("pids"))
        .map(|entries| entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_up_loses_no_lambda_event_and_leaves_no_handler() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.lambda_function(
        "slow",
        "runtime = \"python3.11\"\nhandler = \"app.lambda_handler\"\nconcurrency = 4\ntimeout = \"8s\"\nsubscribe = [\"jobs\"]",
        &[("app.py", HANDLER)],
    );
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "slow").await;
    let mut up = project.up(Some(&nats.url()));
    let ids: BTreeSet<String> = (0..12).map(|i| format!("job-{i}")).collect();
    for id in &ids {
        publish_event(&js, "sluice.events.jobs", id, r#"{"sleep":6}"#).await.await.unwrap();
    }
    // Four environments busy with the first events.
    let deadline = Instant::now() + Duration::from_secs(30);
    while recorded_pids(&project).len() < 4 || consumer_backlog(&js, "slow").await.1 < 4 {
        assert!(Instant::now() < deadline, "four invocations in flight:\n{}", up.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let handlers = recorded_pids(&project);
    assert!(handlers.iter().all(|pid| process_alive(*pid)));
    up.kill();
    // They die with the worker, not when their sleep ends and they find the Runtime API
    // gone (the clients exit then too): the deadline is well inside the 6 s sleep.
    let deadline = Instant::now() + Duration::from_secs(3);
    while handlers.iter().any(|pid| process_alive(*pid)) {
        let alive: Vec<&u32> = handlers.iter().filter(|pid| process_alive(**pid)).collect();
        assert!(Instant::now() < deadline, "handler processes outlived the killed worker: {alive:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The next `up` runs everything that was not acknowledged.
    let _up = project.up(Some(&nats.url()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let seen: BTreeSet<String> = results.received.iter().map(|(id, _)| id.clone()).collect();
        if seen == ids {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "lost events: {:?}", ids.difference(&seen).collect::<Vec<_>>());
        results.drain(Duration::from_millis(200)).await;
    }
    assert_eq!(stream_count(&js, "SLUICE_DLQ").await, 0);
}
