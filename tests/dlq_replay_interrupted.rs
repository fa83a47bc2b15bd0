//! Killing the CLI in the middle of a bulk replay leaves every entry either still in the DLQ
//! or re-delivered: never lost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replay_loses_nothing() {
    let nats = NatsServer::start();
    let url = nats.url();
    let project = Project::new();
    project.function("worker", "flaky", "subscribe = [\"jobs\"]\nenv = { FLAKY_FAIL = \"1\" }\n[retry]\nmax_attempts = 1");
    let mut up = project.up(Some(&url));
    let js = async_nats::jetstream::new(nats.client().await);
    let mut all = BTreeSet::new();
    for i in 0..300 {
        let id = format!("job-{i}");
        publish_event(&js, "sluice.events.jobs", &id, "{}").await.await.unwrap();
        all.insert(id);
    }
    wait_stream_count(&js, "SLUICE_DLQ", 300, Duration::from_secs(60)).await;
    // Nobody consumes the re-deliveries: they stay in SLUICE_EVENTS to be counted.
    assert!(up.terminate().success());

    let mut replay = std::process::Command::new(SLUICE)
        .args(["--dir", project.path().to_str().unwrap(), "--nats", &url, "dlq", "replay", "--all", "--rate", "150"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some, but not all, entries went.
    let started = std::time::Instant::now();
    loop {
        let redelivered = stream_messages(&js, "SLUICE_EVENTS").await.iter().filter(|m| m.subject.starts_with("sluice.direct.")).count();
        if redelivered >= 30 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the replay did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replay.kill().unwrap();
    replay.wait().unwrap();

    let remaining: BTreeSet<String> =
        stream_messages(&js, "SLUICE_DLQ").await.iter().map(|m| header(m, "ce-id").unwrap().to_owned()).collect();
    let redelivered: BTreeSet<String> = stream_messages(&js, "SLUICE_EVENTS")
        .await
        .iter()
        .filter(|m| m.subject.as_str() == "sluice.direct.worker")
        .map(|m| {
            assert!(header(m, "sluice-replay-of").is_some());
            header(m, "ce-id").unwrap().to_owned()
        })
        .collect();
    assert!(!remaining.is_empty() && !redelivered.is_empty(), "the kill landed mid-way");
    let covered: BTreeSet<String> = remaining.union(&redelivered).cloned().collect();
    assert_eq!(covered, all, "every entry is still in the DLQ or was re-delivered");

    // Running the replay again finishes the job without delivering anything twice.
    let out = project.sluice(&["--nats", &url, "dlq", "replay", "--all"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stream_messages(&js, "SLUICE_DLQ").await.is_empty());
    let direct: Vec<String> = stream_messages(&js, "SLUICE_EVENTS")
        .await
        .iter()
        .filter(|m| m.subject.as_str() == "sluice.direct.worker")
        .map(|m| header(m, "ce-id").unwrap().to_owned())
        .collect();
    assert_eq!(direct.len(), all.len(), "each entry re-delivered exactly once");
}
