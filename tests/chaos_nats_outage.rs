//! A SIGKILLed external nats-server, down for 10 s while events are published and handled,
//! then restarted on its store: no accepted event is lost, and `sluice up` logs the outage
//! and the reconnect.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;

const EVENTS: usize = 1_500;
const OUTAGE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_outage_loses_no_event_and_is_logged() {
    let started = Instant::now();
    let mut nats = NatsServer::start();
    let project = Project::new();
    // Completions are counted from the `done` topic: results on core NATS sent while the
    // test's own client reconnects would be missed.
    project.function(
        "worker",
        "flaky",
        "subscribe = [\"jobs\"]\non_success = \"done\"\ntimeout = \"2s\"\nconcurrency = 16\n\
         [retry]\nmax_attempts = 50\nbackoff = { initial = \"100ms\", factor = 2.0, max = \"1s\", jitter = true }",
    );
    let up = project.up(Some(&nats.url()));
    let js = chaos_jetstream(chaos_client(vec![nats.url()]).await);
    let mut finished = Finished::observe(&js, "done").await;

    let load = Load::start(js.clone(), "sluice.events.jobs", "job", EVENTS, 150);
    load.wait_accepted(EVENTS / 5, Duration::from_secs(60)).await;
    let limit = Instant::now() + Duration::from_secs(60);
    while finished.ids.is_empty() {
        assert!(Instant::now() < limit, "the worker handled nothing before the outage:\n{}", up.log());
        finished.poll().await;
    }

    nats.stop(); // SIGKILL
    let accepted_at_kill = load.accepted();
    tokio::time::sleep(OUTAGE).await;
    nats.spawn();
    let restarted = Instant::now();

    let report = load.finish(Duration::from_secs(120)).await;
    assert!(accepted_at_kill < EVENTS, "the outage must land while events are published");
    let expected: BTreeSet<String> = report.accepted.iter().cloned().collect();
    assert_eq!(expected.len(), EVENTS, "every event was accepted in the end");
    finished.wait_all(&expected, Duration::from_secs(120), || format!("sluice up log:\n{}", log_excerpt(&up.log(), 60))).await;
    let caught_up = restarted.elapsed();

    let log = up.log();
    println!(
        "server killed after {accepted_at_kill} of {EVENTS} events accepted, down {:.0} s; {} publish retries; \
         reconnected after_ms={:?}; all finished {:.1} s after the restart; test took {:.1} s",
        OUTAGE.as_secs_f64(),
        report.retries,
        log_field(&log, "Reconnected to NATS.", "after_ms"),
        caught_up.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(log.contains("Lost the connection to NATS"), "the outage is logged:\n{}", log_excerpt(&log, 60));
    assert!(log.contains("Reconnected to NATS."), "the reconnect is logged:\n{}", log_excerpt(&log, 60));
    // Timed from the first disconnect, not from one of the failed tries.
    let after_ms: u64 = log_field(&log, "Reconnected to NATS.", "after_ms").unwrap().parse().unwrap();
    assert!(after_ms >= OUTAGE.as_millis() as u64 - 500, "reconnected after_ms={after_ms}, the server was down 10 s");
    // Each failed try is a client error: logged at debug level during an outage, not
    // a warning each.
    assert_eq!(log.matches("NATS client error.").count(), 0, "{}", log_excerpt(&log, 60));
}
