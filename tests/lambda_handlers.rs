//! Unchanged AWS Lambda handlers answer through publish → dispatcher → results: the Python
//! and Node.js examples (byte for byte the files in `functions/`) through the real runtime
//! interface clients, and a Rust custom runtime (`lambda_runtime` built as `bootstrap` by
//! `sluice build`). Guards the Runtime API contract, warm reuse, Lambda's START/END/REPORT
//! lines, `sluice invoke` on a Lambda function, and that no variable of `sluice up`'s own
//! environment reaches a handler.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::path::Path;
use std::time::Duration;

use common::lambda::example_source;
use common::*;

const ENV_REPORT: &str = r#"import os

calls = 0


def lambda_handler(event, context):
    global calls
    calls += 1
    return {
        "calls": calls,
        "pid": os.getpid(),
        "env": dict(os.environ),
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "memory": context.memory_limit_in_mb,
    }
"#;

/// Copies the Rust custom-runtime fixture crate into a function folder.
fn copy_fixture(dir: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/provided-echo");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    for file in ["Cargo.toml", "Cargo.lock", "src/main.rs"] {
        std::fs::copy(fixture.join(file), dir.join(file)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_lambda_handlers_answer_events() {
    let nats = NatsServer::start();
    let project = Project::new();
    let subscribe = "subscribe = [\"greetings\"]\nconcurrency = 2";
    project.lambda_function(
        "py",
        &format!("runtime = \"python3.11\"\nhandler = \"app.lambda_handler\"\n{subscribe}"),
        &[("app.py", &example_source("hello-python", "app.py"))],
    );
    project.lambda_function(
        "node",
        &format!("runtime = \"nodejs20.x\"\nhandler = \"index.handler\"\nmemory_mb = 256\n{subscribe}"),
        &[("index.js", &example_source("hello-node", "index.js"))],
    );
    project.lambda_function(
        "envs",
        "runtime = \"python3.11\"\nhandler = \"app.lambda_handler\"\nsubscribe = [\"greetings\"]\nconcurrency = 1\nmemory_mb = 192\ntimeout = \"7s\"\nenv = { TABLE = \"orders\" }",
        &[("app.py", ENV_REPORT)],
    );
    let rust = project.lambda_function("rust", "runtime = \"provided.al2023\"\nsubscribe = [\"greetings\"]\nconcurrency = 1", &[]);
    copy_fixture(&rust);

    // `sluice build` compiles the custom runtime into `bootstrap` and finds the clients.
    let built = project.sluice_within(&["build"], Duration::from_secs(900));
    let out = String::from_utf8_lossy(&built.stdout);
    assert!(built.status.success(), "{out}{}", String::from_utf8_lossy(&built.stderr));
    assert!(out.contains("rust: built"), "{out}");
    assert!(rust.join("bootstrap").is_file());
    let again = project.sluice(&["build", "rust"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("rust: up to date"), "{}", String::from_utf8_lossy(&again.stdout));

    let up = project.up_with_env(Some(&nats.url()), &[("SLUICE_TEST_HOST_SECRET", "must-not-leak")]);
    let client = nats.client().await;
    let mut results = std::collections::HashMap::new();
    for name in ["py", "node", "envs", "rust"] {
        results.insert(name, Results::subscribe(&client, name).await);
    }
    for (i, name) in ["Alice", "Bob"].iter().enumerate() {
        let data = format!("{{\"name\":\"{name}\"}}");
        let id = format!("greet-{i}");
        let out = project.sluice(&["--nats", &nats.url(), "publish", "greetings", "--data", &data, "--id", &id]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // One at a time, so the second event finds the first one's environment warm.
        for results in results.values_mut() {
            results.wait_for(i + 1, Duration::from_secs(60)).await;
        }
    }
    let body = |name: &str, i: usize| results[name].received[i].1.clone();
    assert_eq!(body("py", 0), serde_json::json!({"statusCode": 200, "body": "Hello, Alice!"}));
    assert_eq!(body("py", 1), serde_json::json!({"statusCode": 200, "body": "Hello, Bob!"}));
    assert_eq!(body("node", 0), serde_json::json!({"statusCode": 200, "body": "{\"message\":\"Hello, Alice!\"}"}));
    assert_eq!(body("node", 1)["body"], "{\"message\":\"Hello, Bob!\"}");
    assert_eq!(body("rust", 0)["echo"], serde_json::json!({"name": "Alice"}));
    assert_eq!((body("rust", 0)["count"].as_u64(), body("rust", 1)["count"].as_u64()), (Some(1), Some(2)), "one warm environment");

    // The same environment served both events: its module state survived.
    let (first, second) = (body("envs", 0), body("envs", 1));
    assert_eq!((first["calls"].as_u64(), second["calls"].as_u64()), (Some(1), Some(2)), "{first} {second}");
    assert_eq!(first["pid"], second["pid"]);
    assert_ne!(first["request_id"], second["request_id"]);
    assert_eq!(first["arn"], "arn:aws:lambda:us-east-1:000000000000:function:envs");
    assert_eq!(first["memory"], "192");
    let remaining = first["remaining_ms"].as_u64().unwrap();
    assert!(remaining > 0 && remaining <= 7000, "deadline from the timeout: {remaining}");

    // Only Lambda's variables, the runtime's search path and the function's own; besides
    // those, only what the process sets itself: awslambdaric's `_X_AMZN_TRACE_ID` per
    // invocation, and Python's locale coercion (PEP 538) `LC_CTYPE` where LANG's locale
    // is not installed.
    let env = first["env"].as_object().unwrap();
    let mut names: Vec<&str> = env.keys().map(String::as_str).filter(|n| !["_X_AMZN_TRACE_ID", "LC_CTYPE"].contains(n)).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "AWS_EXECUTION_ENV", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION",
            "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_LAMBDA_RUNTIME_API", "AWS_REGION", "LAMBDA_TASK_ROOT",
            "LANG", "PATH", "PYTHONPATH", "TABLE", "TZ", "_HANDLER",
        ],
        "{env:?}"
    );
    assert!(!env.values().any(|v| v.as_str().is_some_and(|v| v.contains("must-not-leak"))));
    assert_eq!(env["TABLE"], "orders");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "envs");
    assert_eq!(env["_HANDLER"], "app.lambda_handler");
    assert!(env["AWS_LAMBDA_RUNTIME_API"].as_str().unwrap().starts_with("127.0.0.1:"));
    // The trace id the client saw is the event's traceparent in X-Ray form.
    assert!(env["_X_AMZN_TRACE_ID"].as_str().unwrap().starts_with("Root=1-"), "{env:?}");

    // Lambda's log lines, with the request id, in sluice up's log.
    let log = up.log();
    for needle in ["START RequestId: ", "END RequestId: ", "Billed Duration: ", "Memory Size: 192 MB", "Max Memory Used: ", "Init Duration: "] {
        assert!(log.contains(needle), "{needle:?} missing from:\n{log}");
    }
    let reports = log.lines().filter(|l| l.contains("REPORT RequestId: ")).count();
    let cold = log.lines().filter(|l| l.contains("REPORT RequestId: ") && l.contains("Init Duration: ")).count();
    assert_eq!(reports, 8, "one REPORT per invocation:\n{log}");
    assert_eq!(cold, 4, "one cold start per function:\n{log}");
    drop(up);

    // `sluice invoke` runs a Lambda function in one cold environment.
    let event = project.path().join("event.json");
    std::fs::write(&event, r#"{"name":"Carol"}"#).unwrap();
    for (name, expected) in [("py", "Hello, Carol!"), ("node", "Hello, Carol!")] {
        let out = project.sluice(&["invoke", name, "--event", event.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(expected), "{stdout}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("Init Duration"), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
