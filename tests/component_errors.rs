//! A Python handler's exception in a component goes through retries into the dead-letter
//! stream with its type and message, as under the `lambda` runtime; what it prints is in
//! the function's log with the request id of its invocation. Guards the adapter's error
//! mapping, the runtime's classification, and the log capture of stdout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use common::component::probe_source;
use common::*;

/// `sluice logs probe --json`: every line and record.
fn logs(project: &Project, url: &str) -> Vec<serde_json::Value> {
    let out = project.sluice(&["--nats", url, "logs", "probe", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_exception_is_dead_lettered_and_prints_are_logged() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.component_function(
        "probe",
        "handler = \"app.lambda_handler\"\nsubscribe = [\"probe\"]\n[retry]\nmax_attempts = 2\nbackoff = { initial = \"100ms\", factor = 1.0, max = \"100ms\", jitter = false }",
        &[("app.py", &probe_source())],
    );
    project.build(&["probe"]);
    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "probe").await;

    publish_event(&js, "sluice.events.probe", "raise-1", r#"{"action":"raise"}"#).await.await.unwrap();
    publish_event(&js, "sluice.events.probe", "print-1", r#"{"action":"print"}"#).await.await.unwrap();
    wait_stream_count(&js, "SLUICE_DLQ", 1, Duration::from_secs(60)).await;
    let dead = stream_messages(&js, "SLUICE_DLQ").await;
    assert_eq!(header(&dead[0], "sluice-function"), Some("probe"));
    assert_eq!(header(&dead[0], "sluice-attempts"), Some("2"));
    assert_eq!(header(&dead[0], "sluice-error-kind"), Some("error"));
    assert_eq!(header(&dead[0], "sluice-error-type"), Some("ValueError"));
    assert_eq!(header(&dead[0], "sluice-error"), Some("ValueError: the order has no items"));
    results.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(results.received[0].1, serde_json::json!({"printed": true}));

    // Each printed line is recorded with the request id of the invocation that printed it,
    // and the failed attempts' records hold the traceback.
    let deadline = Instant::now() + Duration::from_secs(30);
    let records = loop {
        let records = logs(&project, &nats.url());
        let reports = records.iter().filter(|r| r["type"] == "invocation").count();
        if reports >= 3 {
            break records;
        }
        assert!(Instant::now() < deadline, "three invocation records did not arrive: {records:?}\n{}", up.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let report_of = |request_id: &serde_json::Value| {
        records.iter().find(|r| r["type"] == "invocation" && &r["request_id"] == request_id).unwrap_or_else(|| panic!("no record of {request_id}: {records:?}"))
    };
    let line = |text: &str| records.iter().filter(|r| r["type"] == "line" && r["message"] == text).collect::<Vec<_>>();
    let hello = line("probe says hello");
    assert_eq!(hello.len(), 1, "{records:?}");
    assert_eq!(report_of(&hello[0]["request_id"])["outcome"], "success");
    assert_eq!(hello[0]["event_id"], "print-1");
    let failing = line("probe is about to fail");
    assert_eq!(failing.len(), 2, "one line per attempt: {records:?}");
    assert_ne!(failing[0]["request_id"], failing[1]["request_id"]);
    for attempt in failing {
        assert_eq!(attempt["event_id"], "raise-1");
        assert_eq!(report_of(&attempt["request_id"])["outcome"], "error");
    }
    assert!(
        records.iter().any(|r| r["type"] == "line" && r["message"].as_str().is_some_and(|m| m.contains("in lambda_handler"))),
        "the traceback is in the log: {records:?}"
    );
    drop(up);
}
