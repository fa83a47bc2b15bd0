//! Retry then success: a function failing attempts 1 and 2 succeeds on attempt 3 and
//! leaves nothing in the dead-letter stream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_failure_is_retried_until_it_succeeds() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function(
        "worker",
        "flaky",
        "subscribe = [\"jobs\"]\n[retry]\nmax_attempts = 4\nbackoff = { initial = \"100ms\", factor = 2.0, max = \"1s\", jitter = false }",
    );
    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "worker").await;

    let out = project.sluice(&["--nats", &nats.url(), "publish", "jobs", "--data", r#"{"fail_until_attempt":3}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    results.wait_for(1, Duration::from_secs(30)).await;
    wait_idle(&js, "worker", Duration::from_secs(30)).await;
    results.drain(Duration::from_millis(300)).await;
    assert_eq!(results.received.len(), 1);
    assert_eq!(results.received[0].1["attempt"], 3, "succeeded on the third attempt");
    assert!(stream_messages(&js, "SLUICE_DLQ").await.is_empty(), "no dead letter");
    let log = up.log();
    assert_eq!(log.matches("Invocation failed.").count(), 2, "{log}");
}
