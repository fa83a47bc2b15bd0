//! `sluice events trace` of an event that failed twice, went to the DLQ, was replayed after
//! the cause was fixed and then succeeded (chaining an event) shows all of it, in order.
//! Guards the event timeline assembled from SLUICE_EVENTS, SLUICE_LOGS and SLUICE_DLQ.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use common::*;

fn worker(project: &Project, broken: bool) {
    let env = if broken { "env = { FLAKY_FAIL = \"1\" }\n" } else { "" };
    project.function(
        "worker",
        "flaky",
        &format!("subscribe = [\"orders\"]\non_success = \"receipts\"\n{env}[retry]\nmax_attempts = 2\nbackoff = {{ initial = \"100ms\", factor = 1.0, max = \"100ms\", jitter = false }}"),
    );
}

fn trace(project: &Project, url: &str) -> serde_json::Value {
    let out = project.sluice(&["--nats", url, "--json", "events", "trace", "order-1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_replayed_event_shows_its_whole_life() {
    let nats = NatsServer::start();
    let url = nats.url();
    let project = Project::new();
    worker(&project, true);
    let mut up = project.up(Some(&url));
    let js = async_nats::jetstream::new(nats.client().await);
    let out = project.sluice(&["--nats", &url, "publish", "orders", "--data", r#"{"item":"book"}"#, "--id", "order-1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_stream_count(&js, "SLUICE_DLQ", 1, Duration::from_secs(30)).await;

    // The cause is fixed, then the dead letter replayed.
    assert!(up.terminate().success());
    worker(&project, false);
    let _up = project.up(Some(&url));
    let out = project.sluice(&["--nats", &url, "dlq", "replay", "--all"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let deadline = Instant::now() + Duration::from_secs(30);
    let trace = loop {
        let trace = trace(&project, &url);
        let steps = trace["steps"].as_array().unwrap();
        if steps.iter().any(|s| s["step"] == "chained") && steps.iter().filter(|s| s["step"] == "attempt").count() == 3 {
            break trace;
        }
        assert!(Instant::now() < deadline, "the trace never showed the replay's success: {trace:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(trace["event_id"], "order-1");
    let steps = trace["steps"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["stored", "attempt", "attempt", "dead_letter", "replay", "attempt", "chained"], "{trace:#}");
    let at: Vec<&str> = steps.iter().map(|s| s["at"].as_str().unwrap()).collect();
    let times: Vec<chrono::DateTime<chrono::Utc>> = at.iter().map(|t| t.parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order: {at:?}");

    assert_eq!(steps[0]["topic"], "orders");
    assert_eq!(steps[0]["source"], "sluice.cli", "{:#}", steps[0]);
    assert_eq!((steps[1]["attempt"].as_u64(), steps[1]["outcome"].as_str()), (Some(1), Some("error")));
    assert_eq!((steps[2]["attempt"].as_u64(), steps[2]["outcome"].as_str()), (Some(2), Some("error")));
    for step in &steps[1..=5] {
        assert_eq!(step["function"], "worker", "{step:#}");
    }
    assert_eq!(steps[3]["attempts"], 2);
    assert_eq!(steps[3]["error_kind"], "error");
    assert_eq!(steps[3]["in_dlq"], false, "the replay removed the entry: {:#}", steps[3]);
    assert_eq!(steps[4]["dlq_id"], steps[3]["dlq_id"]);
    assert_eq!((steps[5]["attempt"].as_u64(), steps[5]["outcome"].as_str()), (Some(1), Some("success")));
    assert_eq!(steps[6]["event_id"], "order-1:worker");
    assert_eq!(steps[6]["topic"], "receipts");
    let requests: Vec<&str> = steps[1..=5].iter().filter(|s| s["step"] == "attempt").map(|s| s["request_id"].as_str().unwrap()).collect();
    assert_eq!(requests.len(), 3);
    assert!(requests[0] != requests[1] && requests[1] != requests[2], "each attempt is its own invocation");

    // For people: one line per step.
    let out = project.sluice(&["--nats", &url, "events", "trace", "order-1"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 8, "{text}");
    assert!(text.contains("dead letter  worker after 2 attempt(s): error"), "{text}");
    assert!(text.contains("replay       of DLQ entry"), "{text}");

    // An unknown id is an error that says where it looked.
    let out = project.sluice(&["--nats", &url, "events", "trace", "no-such-event"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No trace of event no-such-event"), "{}", String::from_utf8_lossy(&out.stderr));
}
