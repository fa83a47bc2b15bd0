//! Replay: after the cause is fixed a replayed entry runs once, only in the failed function;
//! `--to-topic` reaches every subscriber; a replay that fails again comes back to the DLQ
//! with its history (`sluice-replays`, `sluice-replay-of`); `--dry-run` says where each entry
//! would go and changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::*;

fn worker_toml(project: &Project, broken: bool) {
    let env = if broken { "env = { FLAKY_FAIL = \"1\" }\n" } else { "" };
    project.function("worker", "flaky", &format!("subscribe = [\"orders\"]\n{env}[retry]\nmax_attempts = 1"));
}

fn dlq_ids(project: &Project, url: &str) -> Vec<(u64, String)> {
    let out = project.sluice(&["--nats", url, "--json", "dlq", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_u64().unwrap(), e["event_id"].as_str().unwrap().to_owned()))
        .collect()
}

fn id_of(ids: &[(u64, String)], event: &str) -> String {
    ids.iter().find(|(_, e)| e == event).map(|(id, _)| id.to_string()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_reach_only_the_failed_function_unless_told_otherwise() {
    let nats = NatsServer::start();
    let url = nats.url();
    let project = Project::new();
    worker_toml(&project, true);
    project.function("other", "hello", "subscribe = [\"orders\"]");
    let mut up = project.up(Some(&url));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut worker = Results::subscribe(&client, "worker").await;
    let mut other = Results::subscribe(&client, "other").await;

    for id in ["a", "b", "c"] {
        let out = project.sluice(&["--nats", &url, "publish", "orders", "--data", r#"{"name":"x"}"#, "--id", id]);
        assert!(out.status.success());
    }
    wait_stream_count(&js, "SLUICE_DLQ", 3, Duration::from_secs(30)).await;
    other.wait_for(3, Duration::from_secs(30)).await;

    // Replayed while still broken: it comes back as a new entry that shows its history.
    let ids = dlq_ids(&project, &url);
    let c = id_of(&ids, "c");
    let out = project.sluice(&["--nats", &url, "--json", "dlq", "show", &c]);
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first_request_id = first["headers"]["sluice-request-id"].clone();
    assert!(first_request_id[0].is_string(), "{first}");
    let out = project.sluice(&["--nats", &url, "dlq", "replay", &c]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let started = std::time::Instant::now();
    let ids = loop {
        let ids = dlq_ids(&project, &url);
        if ids.iter().any(|(id, event)| event == "c" && id.to_string() != c) {
            break ids;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the failed replay never came back: {ids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    wait_idle(&js, "worker", Duration::from_secs(10)).await;
    assert_eq!(ids.len(), 3, "c left the DLQ and came back: {ids:?}");
    let c_again = id_of(&ids, "c");
    assert_ne!(c_again, c);
    let out = project.sluice(&["--nats", &url, "--json", "dlq", "show", &c_again]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["replays"], 1);
    assert_eq!(shown["replay_of"].to_string(), c);
    assert_eq!(shown["headers"]["sluice-replays"][0], "1");
    assert_eq!(shown["event_id"], "c", "the event keeps its id");
    assert_eq!(shown["original_subject"], "sluice.direct.worker");
    // The re-delivered event carried the replay bookkeeping but none of the old failure
    // headers (the function would see them, and a stale one could outlive the next failure).
    let events = stream_messages(&js, "SLUICE_EVENTS").await;
    let replayed = events.iter().find(|m| m.subject.as_str() == "sluice.direct.worker").expect("the re-delivery");
    assert_eq!(header(replayed, "sluice-replay-of"), Some(c.as_str()));
    for name in ["sluice-function", "sluice-error", "sluice-error-kind", "sluice-attempts", "sluice-request-id", "sluice-failed-at"] {
        assert_eq!(header(replayed, name), None, "{name} was re-delivered with the event");
    }
    assert_ne!(
        shown["headers"]["sluice-request-id"], first_request_id,
        "the new dead letter names the attempt that failed this time"
    );

    // Fix the cause: redeploy without the failure switch.
    assert!(up.terminate().success());
    worker_toml(&project, false);
    let _up = project.up(Some(&url));

    let a = id_of(&ids, "a");
    let out = project.sluice(&["--nats", &url, "--json", "dlq", "replay", &a]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replayed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(replayed["replayed"][0]["subject"], "sluice.direct.worker");
    worker.wait_for(1, Duration::from_secs(30)).await;
    wait_idle(&js, "worker", Duration::from_secs(10)).await;
    wait_idle(&js, "other", Duration::from_secs(10)).await;
    other.drain(Duration::from_millis(300)).await;
    assert_eq!(worker.received[0].0, "a");
    assert_eq!(other.received.len(), 3, "the other subscriber was not re-invoked");

    // --to-topic: every subscriber gets it again.
    let b = id_of(&ids, "b");
    let out = project.sluice(&["--nats", &url, "dlq", "replay", "--to-topic", &b]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    worker.wait_for(2, Duration::from_secs(30)).await;
    other.wait_for(4, Duration::from_secs(30)).await;
    assert_eq!(worker.received[1].0, "b");
    assert_eq!(other.received[3].0, "b");

    // The replayed-and-failed-again entry still knows its topic.
    let out = project.sluice(&["--nats", &url, "dlq", "replay", "--to-topic", &c_again]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    worker.wait_for(3, Duration::from_secs(30)).await;
    other.wait_for(5, Duration::from_secs(30)).await;

    for function in ["worker", "other"] {
        wait_idle(&js, function, Duration::from_secs(10)).await;
    }
    worker.drain(Duration::from_millis(300)).await;
    assert_eq!(worker.received.len(), 3, "each replay ran once: {:?}", worker.received);
    assert!(dlq_ids(&project, &url).is_empty(), "the DLQ is empty");
    let out = project.sluice(&["--nats", &url, "dlq", "replay", "12345"]);
    assert_eq!(out.status.code(), Some(2), "unknown id");
}

/// A dry run names the subject each entry would go to: its function's direct subject, or with
/// `--to-topic` its topic; a direct delivery has no topic and is reported as failed (exit 1).
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_names_each_target_and_changes_nothing() {
    let (_nats, url, project, js) = common::cli::dlq_world().await;
    let now = chrono::Utc::now();
    let on_topic = common::cli::seed_dead_letter(&js, "a", "e1", "boom", now).await;
    let direct = common::cli::seed_dead_letter_with(&js, "a", "e2", "boom", now, &[("sluice-original-subject", "sluice.direct.a")]).await;
    let dry_run = |to_topic: bool| {
        let mut args = vec!["--nats", url.as_str(), "--json", "dlq", "replay", "--all", "--dry-run"];
        if to_topic {
            args.push("--to-topic");
        }
        let out = project.sluice(&args);
        (out.status.code(), serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap())
    };
    let targets = |report: &serde_json::Value| -> Vec<(u64, String)> {
        report["replayed"].as_array().unwrap().iter().map(|r| (r["id"].as_u64().unwrap(), r["subject"].as_str().unwrap().to_owned())).collect()
    };

    let (code, report) = dry_run(false);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(targets(&report), [(on_topic, "sluice.direct.a".to_owned()), (direct, "sluice.direct.a".to_owned())]);
    let (code, report) = dry_run(true);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["to_topic"], true);
    assert_eq!(targets(&report), [(on_topic, "sluice.events.orders".to_owned())]);
    assert_eq!(report["failed"][0]["id"], direct);
    assert!(report["failed"][0]["error"].as_str().unwrap().contains("no topic"), "{report}");
    assert_eq!(common::cli::remaining_ids(&js).await, [on_topic, direct], "the dry runs removed nothing");
    assert_eq!(stream_count(&js, "SLUICE_EVENTS").await, 0, "and re-delivered nothing");
}
