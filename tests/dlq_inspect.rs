//! `sluice dlq list` and `show` report a poison event's function, error, attempts, topic and
//! body exactly as stored; JSON field names are stable (docs/dlq.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn list_and_show_report_the_entry_as_stored() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function(
        "worker",
        "flaky",
        "subscribe = [\"orders.created\"]\nenv = { FLAKY_FAIL = \"1\" }\n[retry]\nmax_attempts = 2\nbackoff = { initial = \"50ms\", jitter = false }",
    );
    let _up = project.up(Some(&nats.url()));
    let js = async_nats::jetstream::new(nats.client().await);
    let url = nats.url();
    let body = r#"{"fail":true,"order":7}"#;
    let out = project.sluice(&["--nats", &url, "publish", "orders.created", "--data", body, "--id", "order-7", "--header", "tenant=acme"]);
    assert!(out.status.success());
    // A binary body (published raw) is shown safely.
    let out = project.sluice(&["--nats", &url, "publish", "orders.created", "--raw", "--data", "not json {", "--id", "order-8"]);
    assert!(out.status.success());
    wait_stream_count(&js, "SLUICE_DLQ", 2, Duration::from_secs(30)).await;

    let out = project.sluice(&["--nats", &url, "--json", "dlq", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = list["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(list["more"], 0);
    let first = &entries[0];
    assert_eq!(first["function"], "worker");
    assert_eq!(first["topic"], "orders.created");
    assert_eq!(first["event_id"], "order-7");
    assert_eq!(first["attempts"], 2);
    assert_eq!(first["error_kind"], "error");
    assert!(first["error"].as_str().unwrap().contains("exited with status 1"));
    assert!(first["age_secs"].as_i64().unwrap() >= 0);
    let id = first["id"].as_u64().unwrap();
    assert!(entries[1]["id"].as_u64().unwrap() > id, "newest last");

    let out = project.sluice(&["--nats", &url, "--json", "dlq", "list", "--limit", "1"]);
    let limited: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(limited["entries"].as_array().unwrap().len(), 1);
    assert_eq!(limited["entries"][0]["event_id"], "order-8", "the newest is kept");
    assert_eq!(limited["more"], 1);
    let out = project.sluice(&["--nats", &url, "--json", "dlq", "list", "--error", "NO SUCH", "--since", "1h"]);
    let none: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(none["entries"].as_array().unwrap().is_empty());

    let out = project.sluice(&["--nats", &url, "--json", "dlq", "show", &id.to_string()]);
    assert!(out.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], id);
    assert_eq!(shown["body_encoding"], "json");
    assert_eq!(shown["body"], serde_json::from_str::<serde_json::Value>(body).unwrap());
    assert_eq!(shown["headers"]["tenant"][0], "acme");
    assert_eq!(shown["headers"]["sluice-attempts"][0], "2");
    assert_eq!(shown["headers"]["ce-id"][0], "order-7");
    assert_eq!(shown["trace_id"].as_str().unwrap().len(), 32);
    let stored = stream_messages(&js, "SLUICE_DLQ").await;
    assert_eq!(&stored[0].payload[..], body.as_bytes(), "the body is stored exactly");

    let out = project.sluice(&["--nats", &url, "dlq", "show", &id.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"order\": 7") && text.contains("sluice-error:") && text.contains("trace id"), "{text}");
    let out = project.sluice(&["--nats", &url, "--json", "dlq", "show", &entries[1]["id"].to_string()]);
    let raw: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(raw["body_encoding"], "text");
    assert_eq!(raw["body"], "not json {");

    let out = project.sluice(&["--nats", &url, "--json", "dlq", "stats"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats[0]["function"], "worker");
    assert_eq!(stats[0]["entries"], 2);
    assert!(stats[0]["top_errors"][0]["count"].as_u64().unwrap() >= 1);

    // Unknown id: bad usage.
    let out = project.sluice(&["--nats", &url, "dlq", "show", "9999"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no DLQ entry with id 9999"));
    // Unreachable NATS: operation failed, naming the URL.
    let out = project.sluice(&["--nats", "nats://127.0.0.1:1", "dlq", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nats://127.0.0.1:1"));
}
