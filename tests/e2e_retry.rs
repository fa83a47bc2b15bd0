//! Retry with backoff: a function failing attempts 1 and 2 succeeds on attempt 3, each retry
//! waits at least the policy's delay (1 s, then 2 s; read from `sluice up`'s log timestamps),
//! and nothing is dead-lettered. Guards against NAKs without (or with the wrong) delay.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::dispatch::{millis_between, runs_of};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_failure_is_retried_after_the_backoff_delays() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function(
        "worker",
        "flaky",
        "subscribe = [\"jobs\"]\ntimeout = \"10s\"\n[retry]\nmax_attempts = 4\nbackoff = { initial = \"1s\", factor = 2.0, max = \"10s\", jitter = false }",
    );
    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "worker").await;

    let out = project.sluice(&["--nats", &nats.url(), "publish", "jobs", "--id", "retry-1", "--data", r#"{"fail_until_attempt":3}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    results.wait_for(1, Duration::from_secs(30)).await;
    wait_idle(&js, "worker", Duration::from_secs(30)).await;
    results.drain(Duration::from_millis(300)).await;
    assert_eq!(results.received.len(), 1);
    assert_eq!(results.received[0].1["attempt"], 3, "succeeded on the third attempt");
    assert!(stream_messages(&js, "SLUICE_DLQ").await.is_empty(), "no dead letter");

    let log = up.log();
    let runs = runs_of(&log, "retry-1");
    let outcomes: Vec<(u32, bool)> = runs.iter().map(|run| (run.attempt, run.succeeded)).collect();
    assert_eq!(outcomes, [(1, false), (2, false), (3, true)], "{log}");
    // Delays of 1 s and 2 s (no jitter); 10 % tolerance for clock and log granularity
    // below, 3 s for a loaded machine above: an event handed back without the delay (or not
    // handed back at all) waits for ack_wait, 15 s here.
    for (retry, wanted_ms) in [(1, 1000), (2, 2000)] {
        let waited = millis_between(runs[retry - 1].end, runs[retry].start);
        assert!(
            waited >= wanted_ms * 9 / 10 && waited <= wanted_ms + 3000,
            "attempt {} started {waited} ms after attempt {retry} failed; the backoff asks for {wanted_ms} ms\n{log}",
            retry + 1
        );
    }
}
