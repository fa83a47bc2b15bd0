//! A worker cut off from NATS by dropped packets (network namespace, veth pair, iptables
//! DROP) for 20 s while events are published: no accepted event is lost, the cut and the
//! recovery are logged, and the worker handles new events again soon after the heal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::netns::NetNs;
use common::*;

const EVENTS: usize = 1_500;
const CUT: Duration = Duration::from_secs(20);
/// Generous against CI noise; the figure measured is printed.
const BACK_WITHIN: Duration = Duration::from_secs(30);

fn index(id: &str) -> usize {
    id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(usize::MAX)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_worker_recovers_and_loses_no_event() {
    let started = Instant::now();
    let Some(mut netns) = NetNs::create() else { return };
    // The server listens on the root side of the veth pair; the worker runs inside the
    // namespace, the test (publisher, observers) outside, so only the worker is cut off.
    let nats = NatsNode::standalone("partition", &netns.host_addr);
    let project = Project::new();
    project.function(
        "worker",
        "flaky",
        "subscribe = [\"jobs\"]\non_success = \"done\"\ntimeout = \"2s\"\nconcurrency = 8\n\
         [retry]\nmax_attempts = 50\nbackoff = { initial = \"100ms\", factor = 2.0, max = \"1s\", jitter = true }",
    );
    let up = netns.up(&project, &nats.url());
    let client = chaos_client(vec![nats.url()]).await;
    let js = chaos_jetstream(client.clone());
    let mut finished = Finished::observe(&js, "done").await;
    let mut results = Results::subscribe(&client, "worker").await;

    let load = Load::start(js.clone(), "sluice.events.jobs", "job", EVENTS, 60);
    results.wait_for(100, Duration::from_secs(60)).await;

    netns.cut();
    // Event `n` is sent only once event `n - 1` was acknowledged, so from this index on every
    // event was sent after the cut.
    let first_after_cut = load.accepted() + 1;
    tokio::time::sleep(CUT).await;
    let handled_during_cut: Vec<String> = {
        results.drain(Duration::from_millis(1)).await;
        results.received.iter().map(|(id, _)| id.clone()).filter(|id| index(id) >= first_after_cut).collect()
    };
    netns.heal();
    let healed = Instant::now();
    assert!(handled_during_cut.is_empty(), "the cut worker handled events published after the cut: {handled_during_cut:?}");

    // Back: the first result for an event published after the cut began (it cannot have
    // reached the worker before the heal).
    let seen = results.received.len();
    let back = loop {
        if results.received[seen..].iter().any(|(id, _)| index(id) >= first_after_cut) {
            break healed.elapsed();
        }
        assert!(
            healed.elapsed() < BACK_WITHIN,
            "the worker handled nothing new {BACK_WITHIN:?} after the heal; its log:\n{}",
            log_excerpt(&up.log(), 60)
        );
        results.drain(Duration::from_millis(50)).await;
    };

    let report = load.finish(Duration::from_secs(120)).await;
    assert!(first_after_cut < EVENTS, "the cut must land while events are published");
    let expected: BTreeSet<String> = report.accepted.iter().cloned().collect();
    assert_eq!(expected.len(), EVENTS, "every event was accepted");
    finished.wait_all(&expected, Duration::from_secs(120), || format!("sluice up log:\n{}", log_excerpt(&up.log(), 60))).await;
    results.drain(Duration::from_millis(300)).await;
    let dups = duplicates(&results.received);

    let log = up.log();
    println!(
        "cut for {:.0} s after {} of {EVENTS} events accepted; first new result {:.1} s after the heal; \
         reconnected after_ms={:?}; {} events with more than one result {:?}; test took {:.1} s",
        CUT.as_secs_f64(),
        first_after_cut - 1,
        back.as_secs_f64(),
        log_field(&log, "Reconnected to NATS.", "after_ms"),
        dups.len(),
        dups.iter().take(20).collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );
    assert!(log.contains("Lost the connection to NATS"), "the cut is logged:\n{}", log_excerpt(&log, 60));
    assert!(log.contains("Reconnected to NATS."), "the recovery is logged:\n{}", log_excerpt(&log, 60));
}
