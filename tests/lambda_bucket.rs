//! The example Python handler for the bucket trigger (`functions/inbox-python`, with
//! `triggers/inbox.toml`, both copied unchanged) reads the S3 event's record and the file
//! it names: a file dropped in `buckets/inbox/` is described in the function's result.
//! Guards the example the README shows, end to end through a real trigger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::path::Path;
use std::time::Duration;

use common::lambda::example_source;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_bucket_example_reads_the_file_its_s3_record_names() {
    let nats = NatsServer::start();
    let project = Project::new();
    let toml = example_source("inbox-python", "function.toml");
    let toml = toml.lines().filter(|l| !l.starts_with("name = ")).collect::<Vec<_>>().join("\n");
    project.lambda_function("inbox-python", &toml, &[("app.py", &example_source("inbox-python", "app.py"))]);
    let trigger = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("triggers/inbox.toml")).unwrap();
    project.trigger("inbox", trigger);
    let inbox = project.path().join("buckets/inbox");
    std::fs::create_dir_all(&inbox).unwrap();

    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let mut results = Results::subscribe(&client, "inbox-python").await;
    std::fs::write(inbox.join("orders 2026.csv"), "id,total\n1,9.99\n2,5.00\n").unwrap();
    results.wait_for(1, Duration::from_secs(60)).await;
    let files = &results.received[0].1["files"];
    assert_eq!(
        files,
        &serde_json::json!([{
            "bucket": "inbox", "key": "orders 2026.csv", "event": "ObjectCreated:Put",
            "bytes": 23, "lines": 3, "first_line": "id,total",
        }]),
        "{}",
        up.log()
    );
    assert!(up.log().contains("inbox/orders 2026.csv: 23 bytes, 3 lines"), "the handler's print is logged:\n{}", up.log());
}
