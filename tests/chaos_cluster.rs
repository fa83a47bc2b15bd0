//! A 3-node NATS cluster with `replicas = 3` and 3 `sluice up` nodes: SIGKILL of one sluice
//! node and then of the SLUICE_EVENTS stream leader while 10,000 events are published and
//! handled loses no event JetStream accepted; the function finishes every one (duplicates
//! only from redelivery after the kills, counted and printed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;

const EVENTS: usize = 10_000;

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_stream_leader_loses_no_event() {
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).await;
    let project = Project::new();
    project.settings("[bus]\nreplicas = 3\n");
    // Completions are counted from the `done` topic (stored, so none is missed while a
    // connection moves to another node); results on core NATS only show redeliveries.
    project.function(
        "worker",
        "flaky",
        "subscribe = [\"jobs\"]\non_success = \"done\"\ntimeout = \"2s\"\nconcurrency = 16\n\
         [retry]\nmax_attempts = 50\nbackoff = { initial = \"100ms\", factor = 2.0, max = \"1s\", jitter = true }",
    );
    let mut ups: Vec<Up> = (0..3).map(|_| project.up(Some(&cluster.urls()))).collect();
    let client = cluster.client().await;
    let js = chaos_jetstream(client.clone());
    let mut finished = Finished::observe(&js, "done").await;
    let mut results = Results::subscribe(&client, "worker").await;

    let load = Load::start(js.clone(), "sluice.events.jobs", "job", EVENTS, 500);
    load.wait_accepted(EVENTS / 4, Duration::from_secs(60)).await;
    // One sluice node dies mid-invocation: what it held is redelivered to the others.
    ups[0].kill();
    let sluice_killed_at = load.accepted();
    load.wait_accepted(EVENTS / 2, Duration::from_secs(60)).await;
    let info = stream_info(&js, "SLUICE_EVENTS", Duration::from_secs(30)).await;
    assert_eq!(info.config.num_replicas, 3, "`up` made the stream R3");
    let leader = info.cluster.and_then(|c| c.leader).expect("SLUICE_EVENTS has a leader");
    let victim = cluster.node_index(&leader);
    let accepted_at_kill = load.accepted();
    cluster.nodes[victim].kill();
    let killed = Instant::now();

    // A new leader takes over; then the old one comes back on its store.
    let new_leader = loop {
        let info = stream_info(&js, "SLUICE_EVENTS", Duration::from_secs(60)).await;
        match info.cluster.and_then(|c| c.leader) {
            Some(name) if name != leader => break name,
            _ => {}
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "no new SLUICE_EVENTS leader; logs:\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let election = killed.elapsed();
    cluster.nodes[victim].spawn();

    let report = load.finish(Duration::from_secs(120)).await;
    assert!(accepted_at_kill < EVENTS, "the kill must land while events are published");
    let expected: BTreeSet<String> = report.accepted.iter().cloned().collect();
    assert_eq!(expected.len(), EVENTS, "every event was accepted in the end");
    finished
        .wait_all(&expected, Duration::from_secs(180), || format!("sluice up logs:\n{}\n{}", ups.iter().map(|up| log_excerpt(&up.log(), 40)).collect::<Vec<_>>().join("\n----\n"), cluster.logs()))
        .await;
    let unexpected: Vec<&String> = finished.ids.keys().filter(|id| !expected.contains(*id)).collect();
    assert!(unexpected.is_empty(), "finished events nobody published: {unexpected:?}");

    results.drain(Duration::from_millis(500)).await;
    let lost_connection: usize = ups.iter().map(|up| up.log().matches("Lost the connection to NATS").count()).sum();
    let dups = duplicates(&results.received);
    let finished_twice = finished.ids.values().filter(|n| **n > 1).count();
    println!(
        "sluice node 0 killed after {sluice_killed_at} and leader {leader} after {accepted_at_kill} of {EVENTS} events accepted; {new_leader} led after {:.1} s; \
         {} publish retries; the workers lost their connection {lost_connection} times; {} results seen on core NATS, {} events with more than one (event: attempts) {:?}; \
         {finished_twice} events finished more than once; test took {:.1} s",
        election.as_secs_f64(),
        report.retries,
        results.received.len(),
        dups.len(),
        dups.iter().take(20).collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );
}
