//! `sluice dlq replay --rate N` re-delivers at most N entries per second: 20 entries at
//! `--rate 10` are spread over about two seconds (measured around the command and between
//! the first and last re-delivery's stored times), and all of them are re-delivered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::cli::*;
use common::*;

const ENTRIES: usize = 20;
const RATE: &str = "10";
/// 20 entries at 10/s: the last starts 1.9 s after the replay began, so the command takes at
/// least that. Without the limit it all takes well under a second.
const AT_LEAST: Duration = Duration::from_millis(1800);
/// The first and last re-delivery are stored about 1.9 s apart, less whatever delayed the
/// first publish (a loaded machine): a looser bound. Without the limit: tens of milliseconds.
const SPAN_AT_LEAST: Duration = Duration::from_millis(1500);
/// And not much slower: 1.9 s of pacing plus the command's start, on a loaded machine.
const AT_MOST: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn replay_rate_spreads_the_redeliveries() {
    let (_nats, url, project, js) = dlq_world().await;
    let failed_at = Utc::now() - chrono::Duration::minutes(1);
    for i in 0..ENTRIES {
        seed_dead_letter(&js, "worker", &format!("job-{i}"), "boom", failed_at).await;
    }

    let out = project.sluice(&["--nats", &url, "dlq", "replay", "--all", "--rate", "0"]);
    assert_eq!(out.status.code(), Some(2), "a rate of 0 is bad usage");
    assert_eq!(remaining_ids(&js).await.len(), ENTRIES);

    let started = Instant::now();
    let out = sluice_ok(&project, &url, &["--json", "dlq", "replay", "--all", "--function", "worker", "--rate", RATE]);
    let took = started.elapsed();
    let replay: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(replay["replayed"].as_array().unwrap().len(), ENTRIES, "{replay}");
    assert!(replay["failed"].as_array().unwrap().is_empty(), "{replay}");
    assert!(remaining_ids(&js).await.is_empty(), "every entry left the DLQ");

    let redelivered = stream_messages(&js, "SLUICE_EVENTS").await;
    assert_eq!(redelivered.len(), ENTRIES);
    assert!(redelivered.iter().all(|m| m.subject.as_str() == "sluice.direct.worker"));
    let span = redelivered.last().unwrap().time - redelivered.first().unwrap().time;
    let span = Duration::from_secs_f64(span.as_seconds_f64().max(0.0));
    assert!(
        span >= SPAN_AT_LEAST,
        "--rate {RATE}: {ENTRIES} re-deliveries were stored within {span:?} of each other (at least {SPAN_AT_LEAST:?} expected)"
    );
    assert!(took >= AT_LEAST, "--rate {RATE}: replaying {ENTRIES} entries took {took:?} (at least {AT_LEAST:?} expected)");
    assert!(took <= AT_MOST, "--rate {RATE}: replaying {ENTRIES} entries took {took:?} (at most {AT_MOST:?} expected)");
}
