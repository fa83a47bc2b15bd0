//! Handler errors of Lambda functions go through the same retries and dead letters as wasm
//! functions: a raising handler ends in the DLQ after `max_attempts` with Lambda's
//! errorType and errorMessage (stack trace in the log), and `sluice dlq replay` runs it
//! again; a handler with an import error fails with a clear error naming the file, is
//! retried, and the fixed file is picked up by the next attempt's fresh environment.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::*;

const RAISER: &str = r#"import os


class PaymentDeclined(Exception):
    pass


def lambda_handler(event, context):
    if os.path.exists("broken"):
        raise PaymentDeclined(f"card {event['card']} declined")
    return {"charged": event["card"]}
"#;

const NODE_THROWER: &str = r#"exports.handler = async (event) => {
  throw new TypeError(`cannot ship ${event.order}`);
};
"#;

#[tokio::test(flavor = "multi_thread")]
async fn handler_errors_retry_into_the_dead_letter_stream_and_replay() {
    let nats = NatsServer::start();
    let project = Project::new();
    let retry = "[retry]\nmax_attempts = 3\nbackoff = { initial = \"100ms\", factor = 2.0, max = \"1s\", jitter = false }";
    let raiser = project.lambda_function(
        "raiser",
        &format!("runtime = \"python3.11\"\nhandler = \"app.lambda_handler\"\nsubscribe = [\"pay\"]\n{retry}"),
        &[("app.py", RAISER), ("broken", "")],
    );
    project.lambda_function(
        "thrower",
        &format!("runtime = \"nodejs20.x\"\nhandler = \"index.handler\"\nsubscribe = [\"ship\"]\n{retry}"),
        &[("index.js", NODE_THROWER)],
    );
    project.lambda_function(
        "importer",
        "runtime = \"python3.11\"\nhandler = \"app.lambda_handler\"\nsubscribe = [\"imports\"]\n[retry]\nmax_attempts = 10\nbackoff = { initial = \"500ms\", factor = 1.0, max = \"500ms\", jitter = false }",
        &[("app.py", "import not_installed_anywhere\n\ndef lambda_handler(event, context):\n    return 1\n")],
    );
    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut raised = Results::subscribe(&client, "raiser").await;
    let mut imported = Results::subscribe(&client, "importer").await;

    publish_event(&js, "sluice.events.pay", "pay-1", r#"{"card":"4242"}"#).await.await.unwrap();
    publish_event(&js, "sluice.events.ship", "ship-1", r#"{"order":7}"#).await.await.unwrap();
    wait_stream_count(&js, "SLUICE_DLQ", 2, Duration::from_secs(60)).await;
    let dlq = stream_messages(&js, "SLUICE_DLQ").await;
    let entry = |function: &str| dlq.iter().find(|m| header(m, "sluice-function") == Some(function)).unwrap();
    let pay = entry("raiser");
    assert_eq!(header(pay, "sluice-attempts"), Some("3"));
    assert_eq!(header(pay, "sluice-error-kind"), Some("error"));
    assert_eq!(header(pay, "sluice-error-type"), Some("PaymentDeclined"));
    assert_eq!(header(pay, "sluice-error"), Some("PaymentDeclined: card 4242 declined"));
    let ship = entry("thrower");
    assert_eq!(header(ship, "sluice-error-type"), Some("TypeError"));
    assert_eq!(header(ship, "sluice-error"), Some("TypeError: cannot ship 7"));
    let log = up.log();
    assert!(log.contains("Traceback"), "the stack trace is in the log:\n{log}");
    // The same warm environment took every attempt: a handler error does not end it.
    assert_eq!(log.matches("function=raiser environment=").count(), 1, "{log}");

    // `sluice dlq show` has the errorType; once the cause is fixed, `replay` succeeds.
    let shown = project.sluice(&["--nats", &nats.url(), "--json", "dlq", "list", "--function", "raiser"]);
    let listed: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(listed["entries"][0]["error_type"], "PaymentDeclined", "{listed}");
    std::fs::remove_file(raiser.join("broken")).unwrap();
    let id = listed["entries"][0]["id"].as_u64().unwrap().to_string();
    let out = project.sluice(&["--nats", &nats.url(), "dlq", "replay", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    raised.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(raised.received[0].1, serde_json::json!({"charged": "4242"}));

    // An import error: a clear error naming the module and the file, retried...
    publish_event(&js, "sluice.events.imports", "imp-1", "{}").await.await.unwrap();
    up.wait_log("Runtime.ImportModuleError", Duration::from_secs(30));
    let log = up.log();
    assert!(log.contains("No module named 'not_installed_anywhere'"), "{log}");
    assert!(log.contains("\"app.lambda_handler\": ") && log.contains("functions/importer/app.py"), "the handler and its file are named:\n{log}");
    let failures = |log: &str| log.lines().filter(|l| l.contains("Execution environment failed to initialise.") && l.contains("function=importer")).count();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while failures(&up.log()) < 2 {
        assert!(std::time::Instant::now() < deadline, "the import error is retried:\n{}", up.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... and the fixed file is picked up by the next attempt.
    std::fs::write(project.path().join("functions/importer/app.py"), "import json\n\ndef lambda_handler(event, context):\n    return {'fixed': True}\n").unwrap();
    imported.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(imported.received[0].1, serde_json::json!({"fixed": true}));
    let dead_imports = stream_messages(&js, "SLUICE_DLQ").await.iter().filter(|m| header(m, "sluice-function") == Some("importer")).count();
    assert_eq!(dead_imports, 0, "the import errors did not exhaust the attempts");
}
