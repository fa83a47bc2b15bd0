//! Helpers for tests of the `sluice` command line: dead letters written straight into
//! `SLUICE_DLQ` (with chosen functions, errors and failure times, no failing function
//! needed), and the ids a `dlq list` prints.

use std::process::Output;

use async_nats::jetstream;
use chrono::{DateTime, Utc};

use super::{NatsServer, Project};

/// Runs `sluice --nats URL ARGS...` and fails the test, with its stderr, unless it succeeded.
pub fn sluice_ok(project: &Project, url: &str, args: &[&str]) -> Output {
    let mut all = vec!["--nats", url];
    all.extend_from_slice(args);
    let out = project.sluice(&all);
    assert!(
        out.status.success(),
        "`sluice {}` failed ({:?}): {}",
        all.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A DLQ test's world: its own nats-server (and URL), a project, Sluice's streams created
/// there, and a JetStream context.
pub async fn dlq_world() -> (NatsServer, String, Project, jetstream::Context) {
    let nats = NatsServer::start();
    let url = nats.url();
    let project = Project::new();
    create_streams(&project, &url);
    let js = jetstream::new(nats.client().await);
    (nats, url, project, js)
}

/// Creates Sluice's streams on the server at `url`, as any command does at connect.
pub fn create_streams(project: &Project, url: &str) {
    sluice_ok(project, url, &["dlq", "list"]);
}

/// A dead letter as the dispatcher writes it: function `function` failed event `event_id`
/// (published to topic `orders`) with `error` at `failed_at`. Returns its DLQ id.
pub async fn seed_dead_letter(
    js: &jetstream::Context,
    function: &str,
    event_id: &str,
    error: &str,
    failed_at: DateTime<Utc>,
) -> u64 {
    seed_dead_letter_with(js, function, event_id, error, failed_at, &[]).await
}

/// Like [`seed_dead_letter`], with `extra` headers set over the usual ones (a direct
/// delivery's `sluice-original-subject`, `sluice-replays`, an event's own headers).
pub async fn seed_dead_letter_with(
    js: &jetstream::Context,
    function: &str,
    event_id: &str,
    error: &str,
    failed_at: DateTime<Utc>,
    extra: &[(&str, &str)],
) -> u64 {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("ce-specversion", "1.0");
    headers.insert("ce-id", event_id);
    headers.insert("ce-type", "test.order");
    headers.insert("ce-source", "tests");
    headers.insert("ce-time", failed_at.to_rfc3339().as_str());
    headers.insert("content-type", "application/json");
    headers.insert("sluice-function", function);
    headers.insert("sluice-error", error);
    headers.insert("sluice-error-kind", "error");
    headers.insert("sluice-attempts", "3");
    headers.insert("sluice-original-subject", "sluice.events.orders");
    headers.insert("sluice-original-seq", "1");
    headers.insert("sluice-first-attempt", failed_at.to_rfc3339().as_str());
    headers.insert("sluice-failed-at", failed_at.to_rfc3339().as_str());
    for (name, value) in extra {
        headers.insert(*name, *value);
    }
    let ack = js
        .publish_with_headers(format!("sluice.dlq.{function}"), headers, format!(r#"{{"event":"{event_id}"}}"#).into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.stream, "SLUICE_DLQ");
    ack.sequence
}

/// The ids `sluice --json dlq list ARGS...` prints, in order.
pub fn listed_ids_json(project: &Project, url: &str, args: &[&str]) -> Vec<u64> {
    let mut all = vec!["--json", "dlq", "list"];
    all.extend_from_slice(args);
    let out = sluice_ok(project, url, &all);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list["entries"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect()
}

/// The ids of the table `sluice dlq list ARGS...` prints (its first column), in order.
pub fn listed_ids_text(project: &Project, url: &str, args: &[&str]) -> Vec<u64> {
    let mut all = vec!["dlq", "list"];
    all.extend_from_slice(args);
    let out = sluice_ok(project, url, &all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.contains("no matching entries") {
        return Vec::new();
    }
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("ID"), "not a table: {text}");
    lines
        .filter_map(|line| line.split_whitespace().next())
        .map(|id| id.parse().unwrap_or_else(|_| panic!("row without an id: {text}")))
        .collect()
}

/// The ids left in `SLUICE_DLQ`, in order.
pub async fn remaining_ids(js: &jetstream::Context) -> Vec<u64> {
    super::stream_messages(js, "SLUICE_DLQ").await.iter().map(|m| m.sequence).collect()
}
