//! Bulk redrive: `replay --all --function F` of 1,500 entries (more than one read of the
//! stream takes: 1,000) loses none and duplicates none; `--dry-run` changes nothing; `purge`
//! without `--yes` on a non-terminal refuses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

const N: usize = 1500;

fn worker_toml(project: &Project, broken: bool) {
    let env = if broken { "env = { FLAKY_FAIL = \"1\" }\n" } else { "" };
    project.function("worker", "flaky", &format!("subscribe = [\"jobs\"]\nconcurrency = 64\n{env}[retry]\nmax_attempts = 1"));
}

async fn publish_many(js: &async_nats::jetstream::Context, prefix: &str, n: usize) {
    let mut acks = Vec::new();
    for i in 0..n {
        acks.push(publish_event(js, "sluice.events.jobs", &format!("{prefix}-{i}"), r#"{"n":1}"#).await);
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifteen_hundred_entries_replay_exactly_once() {
    let nats = NatsServer::start();
    let url = nats.url();
    let project = Project::new();
    worker_toml(&project, true);
    let mut up = project.up(Some(&url));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    publish_many(&js, "bulk", N).await;
    wait_stream_count(&js, "SLUICE_DLQ", N as u64, Duration::from_secs(120)).await;
    wait_idle(&js, "worker", Duration::from_secs(30)).await;

    // --dry-run changes nothing.
    let out = project.sluice(&["--nats", &url, "--json", "dlq", "replay", "--all", "--function", "worker", "--dry-run"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dry: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["replayed"].as_array().unwrap().len(), N);
    assert_eq!(stream_messages(&js, "SLUICE_DLQ").await.len(), N);
    assert_eq!(stream_messages(&js, "SLUICE_EVENTS").await.len(), N, "nothing was re-delivered");

    // Purge asks for confirmation; with no terminal and no --yes it refuses.
    let out = project.sluice(&["--nats", &url, "dlq", "purge", "--all", "--function", "worker"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert_eq!(stream_messages(&js, "SLUICE_DLQ").await.len(), N);
    // With --yes it removes what it is told to.
    let first = stream_messages(&js, "SLUICE_DLQ").await[0].sequence.to_string();
    let out = project.sluice(&["--nats", &url, "--json", "dlq", "purge", "--yes", &first]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let purged: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(purged["removed"], 1);
    let expected = N - 1;

    // Fix the cause and redrive everything.
    assert!(up.terminate().success());
    worker_toml(&project, false);
    let _up = project.up(Some(&url));
    let mut results = Results::subscribe(&client, "worker").await;
    let out = project.sluice(&["--nats", &url, "--json", "dlq", "replay", "--all", "--function", "worker"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replay: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(replay["replayed"].as_array().unwrap().len(), expected);
    assert!(replay["failed"].as_array().unwrap().is_empty());

    results.wait_for(expected, Duration::from_secs(120)).await;
    wait_idle(&js, "worker", Duration::from_secs(30)).await;
    results.drain(Duration::from_millis(500)).await;
    let distinct: BTreeSet<&str> = results.received.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(distinct.len(), expected, "none lost");
    assert_eq!(results.received.len(), expected, "none duplicated");
    assert!(stream_messages(&js, "SLUICE_DLQ").await.is_empty());
}
