//! `sluice logs --follow` shows the lines of one function run by two `sluice up` nodes in
//! one stream, in order, with a REPORT per invocation; `--request-id` shows one invocation.
//! Guards the invocation records in `SLUICE_LOGS` being written by every node and read
//! cluster-wide.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

fn hello(project: &Project) {
    project.function("greeter", "hello", "subscribe = [\"greetings\"]\nconcurrency = 1");
}

/// Publishes a greeting for `name` and waits until `up` logged that it ran.
fn greet(project: &Project, url: &str, up: &Up, name: &str) {
    let data = format!(r#"{{"name":"{name}"}}"#);
    let out = project.sluice(&["--nats", url, "publish", "greetings", "--data", &data, "--id", name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    up.wait_log(&format!("greeting {name}"), Duration::from_secs(30));
}

#[test]
fn one_follow_shows_every_node_in_order() {
    let nats = NatsServer::start();
    let url = nats.url();
    let first = Project::new();
    hello(&first);
    let second = Project::new();
    hello(&second);

    let mut node_a = first.up(Some(&url));
    // Followed from before anything ran.
    let mut follow = first.command(&["--nats", &url, "logs", "greeter", "--follow", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")));
        }
    });

    for name in ["a1", "a2", "a3"] {
        greet(&first, &url, &node_a, name);
    }
    assert!(node_a.terminate().success());
    let node_b = second.up(Some(&url));
    for name in ["b1", "b2", "b3"] {
        greet(&second, &url, &node_b, name);
    }

    // Three lines per invocation: the function's line, then its report.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.iter().filter(|l: &&serde_json::Value| l["type"] == "invocation").count() < 6 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("`sluice logs --follow` showed only {seen:#?}"),
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let lines: Vec<&str> = seen.iter().filter(|l| l["type"] == "line").map(|l| l["message"].as_str().unwrap()).collect();
    assert_eq!(lines, ["greeting a1", "greeting a2", "greeting a3", "greeting b1", "greeting b2", "greeting b3"]);
    let reports: Vec<&serde_json::Value> = seen.iter().filter(|l| l["type"] == "invocation").collect();
    let nodes: Vec<&str> = reports.iter().map(|r| r["node"].as_str().unwrap()).collect();
    assert_eq!(nodes[0], nodes[2], "a1..a3 ran on one node");
    assert_eq!(nodes[3], nodes[5], "b1..b3 ran on one node");
    assert_ne!(nodes[0], nodes[3], "the two nodes are told apart");
    for (report, id) in reports.iter().zip(["a1", "a2", "a3", "b1", "b2", "b3"]) {
        assert_eq!(report["event_id"], id);
        assert_eq!(report["outcome"], "success");
        assert_eq!(report["function"], "greeter");
        assert_eq!(report["memory_size_mb"], 128, "{report}");
        assert!(report["billed_duration_ms"].as_u64().unwrap() >= 1);
        assert!(report["duration_ms"].as_f64().unwrap() > 0.0);
    }
    // Each line comes before its own report and carries its request id.
    for pair in seen.chunks(2) {
        assert_eq!(pair[0]["type"], "line");
        assert_eq!(pair[0]["request_id"], pair[1]["request_id"]);
    }

    // One invocation, in Lambda's words.
    let request_id = reports[4]["request_id"].as_str().unwrap();
    let out = second.sluice(&["--nats", &url, "logs", "greeter", "--request-id", request_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let shown: Vec<&str> = text.lines().collect();
    assert_eq!(shown.len(), 4, "START, the line, END, REPORT:\n{text}");
    assert!(shown[0].contains(&format!("START RequestId: {request_id} EventId: b2 Attempt: 1")), "{text}");
    assert!(shown[1].ends_with("greeting b2"), "{text}");
    assert!(shown[2].contains(&format!("END RequestId: {request_id}")), "{text}");
    assert!(shown[3].contains(&format!("REPORT RequestId: {request_id}\tDuration: ")) && shown[3].contains("\tBilled Duration: ") && shown[3].contains("\tMemory Size: 128 MB"), "{text}");
}
