//! A Python handler in a component keeps the `wasm` runtime's limits: its context's
//! remaining time counts down from the timeout, an endless loop is stopped at the timeout,
//! and an allocation past `memory_mb` fails with kind `memory`. Guards the epoch deadline,
//! the memory limiter across a component's memories, and the context the adapter builds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use common::component::probe_source;
use common::*;
use serde_json::json;

#[test]
fn a_component_is_held_to_its_timeout_and_memory() {
    let project = Project::new();
    project.component_function("probe", "handler = \"app.lambda_handler\"\nmemory_mb = 64\ntimeout = \"2s\"", &[("app.py", &probe_source())]);
    project.build(&["probe"]);

    let context = project.invoke_json("probe", &json!({"action": "context"}));
    assert_eq!(context["outcome"], "success", "{context}");
    let response = &context["response"];
    let first = response["first_remaining_ms"].as_i64().unwrap();
    let second = response["second_remaining_ms"].as_i64().unwrap();
    assert!(first > 0 && first <= 2000, "remaining time {first} ms is not within the 2 s timeout: {context}");
    assert!(second <= first - 50, "remaining time did not count down across a 50 ms sleep: {first} then {second}");
    assert_eq!(response["function_name"], "probe");
    assert_eq!(response["memory"], "64");
    assert_eq!(response["arn"], "arn:aws:lambda:us-east-1:000000000000:function:probe");
    assert_eq!(response["request_id"], context["request_id"]);

    let looped = project.invoke_json("probe", &json!({"action": "loop"}));
    assert_eq!(looped["outcome"], "timeout", "{looped}");
    assert_eq!(looped["error_type"], "Sandbox.Timedout", "{looped}");
    let took = looped["duration_ms"].as_f64().unwrap();
    assert!(took >= 2000.0, "stopped after {took} ms, before its 2 s timeout");

    let allocated = project.invoke_json("probe", &json!({"action": "allocate"}));
    assert_eq!(allocated["outcome"], "memory_limit", "{allocated}");
    assert_eq!(allocated["error_type"], "MemoryError", "{allocated}");
    // It failed at its own limit, not the host's: within 64 MiB, the interpreter included.
    let error = allocated["error"].as_str().unwrap();
    let held: u32 = error.trim_start_matches("MemoryError: allocated ").trim_end_matches(" MiB").parse().unwrap_or_else(|_| panic!("{allocated}"));
    assert!((8..64).contains(&held), "held {held} MiB under memory_mb = 64: {allocated}");
}
