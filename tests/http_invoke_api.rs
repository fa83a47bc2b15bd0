//! The Lambda Invoke API with the real AWS SDK: boto3's `lambda.invoke` against a running
//! `sluice up`, RequestResponse (the answer, Lambda's error shape with `FunctionError` and the
//! log tail), Event (202, then the function runs through JetStream), DryRun, and an unknown
//! function (ResourceNotFoundException). Guards compatibility with unchanged SDK code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::http::base;
use common::*;

const SCRIPT: &str = r#"
import base64, json, sys
import boto3
from botocore.config import Config

client = boto3.client(
    "lambda", endpoint_url=sys.argv[1], region_name="us-east-1",
    aws_access_key_id="sluice", aws_secret_access_key="sluice",
    config=Config(retries={"max_attempts": 0}),
)
out = {}
r = client.invoke(FunctionName="echo", Payload=json.dumps({"hello": "world"}).encode())
out["sync"] = {"status": r["StatusCode"], "payload": json.loads(r["Payload"].read()), "error": r.get("FunctionError"), "version": r.get("ExecutedVersion")}
r = client.invoke(FunctionName="arn:aws:lambda:us-east-1:000000000000:function:failing", Payload=b"{}", LogType="Tail")
out["failed"] = {"status": r["StatusCode"], "payload": json.loads(r["Payload"].read()), "error": r.get("FunctionError"),
                 "log": base64.b64decode(r.get("LogResult", "")).decode()}
r = client.invoke(FunctionName="echo", InvocationType="Event", Payload=json.dumps({"async": True}).encode())
out["event"] = {"status": r["StatusCode"]}
r = client.invoke(FunctionName="echo", InvocationType="DryRun")
out["dry_run"] = {"status": r["StatusCode"]}
try:
    client.invoke(FunctionName="nothing-here", Payload=b"{}")
    out["missing"] = "no error"
except client.exceptions.ResourceNotFoundException as e:
    out["missing"] = e.response["Error"]["Code"]
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn boto3_invokes_functions_unchanged() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("echo", "flaky", "env = { FLAKY_ECHO = \"1\" }");
    project.function("failing", "flaky", "env = { FLAKY_FAIL = \"1\" }\n[retry]\nmax_attempts = 1");
    let up = project.up(Some(&nats.url()));
    let url = base(&up);
    let nats_client = nats.client().await;
    let mut results = Results::subscribe(&nats_client, "echo").await;

    let output = tokio::process::Command::new("python3").arg("-c").arg(SCRIPT).arg(&url).output().await.unwrap();
    assert!(output.status.success(), "boto3 failed:\n{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let out: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(out["sync"]["status"], 200, "{out}");
    assert_eq!(out["sync"]["payload"], serde_json::json!({"hello": "world"}), "{out}");
    assert_eq!(out["sync"]["error"], serde_json::Value::Null, "{out}");
    assert_eq!(out["sync"]["version"], "$LATEST", "{out}");

    assert_eq!(out["failed"]["status"], 200, "Lambda reports a function error in a 200: {out}");
    assert_eq!(out["failed"]["error"], "Unhandled", "{out}");
    assert!(out["failed"]["payload"]["errorMessage"].as_str().unwrap().contains("status 1"), "{out}");
    assert!(out["failed"]["payload"]["errorType"].is_string(), "{out}");
    assert!(out["failed"]["log"].as_str().unwrap().contains("failing on purpose"), "{out}");
    assert!(!up.log().contains("Event moved to the dead-letter stream"), "a synchronous call is never dead-lettered");

    assert_eq!(out["event"]["status"], 202, "{out}");
    assert_eq!(out["dry_run"]["status"], 204, "{out}");
    assert_eq!(out["missing"], "ResourceNotFoundException", "{out}");

    // The Event invocation went through JetStream to the function alone.
    results.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(results.received[0].1, serde_json::json!({"async": true}));
    let js = async_nats::jetstream::new(nats_client);
    let stored = stream_messages(&js, "SLUICE_EVENTS").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].subject.as_str(), "sluice.direct.echo");
    assert_eq!(header(&stored[0], "ce-type"), Some("sluice.invoke"));
}
