//! `sluice invoke`: one local invocation with no NATS, like `sam local invoke -e`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use common::*;

#[test]
fn invokes_with_an_event_file_and_from_stdin() {
    let project = Project::new();
    project.function("hello", "hello", "");
    let event = project.path().join("event.json");
    std::fs::write(&event, r#"{"name":"Alice"}"#).unwrap();

    let out = project.sluice(&["invoke", "hello", "--event", event.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let response: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(response["message"], "Hello, Alice!");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("greeting Alice"), "logs go to stderr: {stderr}");
    assert!(stderr.contains("REPORT RequestId:"), "{stderr}");

    let out = project.sluice_with_stdin(&["--json", "invoke", "hello", "--event", "-"], br#"{"name":"Bob"}"#);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "success");
    assert_eq!(report["response"]["message"], "Hello, Bob!");
    assert_eq!(report["logs"][0], "greeting Bob");
    assert!(report["memory_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn failures_exit_1_with_their_cause() {
    let project = Project::new();
    project.function("slow", "flaky", "timeout = \"300ms\"").function("small", "flaky", "memory_mb = 8");
    let cases = [
        ("slow", r#"{"loop":true}"#, "timeout"),
        ("small", r#"{"alloc_mb":32}"#, "memory_limit"),
        ("small", r#"{"fail":true}"#, "error"),
        ("small", r#"{"panic":"boom"}"#, "trap"),
        ("small", r#"{"bad_output":true}"#, "invalid_response"),
    ];
    for (function, event, outcome) in cases {
        let out = project.sluice_with_stdin(&["--json", "invoke", function, "--event", "-"], event.as_bytes());
        assert_eq!(out.status.code(), Some(1), "{event}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["outcome"], outcome, "{event}: {report}");
    }
    // A guest blocked in a host call (a sleep) is stopped at its timeout too, not when the
    // call returns.
    let out = project.sluice_with_stdin(&["--json", "invoke", "slow", "--event", "-"], br#"{"sleep_ms":20000}"#);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "timeout", "{report}");
    assert!(report["duration_ms"].as_f64().unwrap() < 20000.0, "{report}");

    let out = project.sluice_with_stdin(&["--json", "invoke", "small", "--event", "-"], br#"{"panic":"boom"}"#);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["error"].as_str().unwrap().contains("boom"), "the panic message is in the error: {report}");
}

#[test]
fn bad_usage_exits_2() {
    let project = Project::new();
    project.function("hello", "hello", "");
    let out = project.sluice(&["invoke", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no function named \"nope\""));
    let out = project.sluice_with_stdin(&["invoke", "hello", "--event", "-"], b"{not json");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
}
