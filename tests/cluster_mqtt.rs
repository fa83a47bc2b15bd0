//! An MQTT trigger on 3 `sluice up` nodes over a 3-node NATS cluster (R3): one node (the
//! lease holder) holds the persistent session; SIGKILLing it while messages keep arriving
//! loses none: the broker queues them, another node takes the lease within 10 s, resumes
//! the session and receives them, and a message the killed node stored but had not
//! acknowledged comes again with the same packet id, hence the same event id, and is
//! dropped as a duplicate. Every message is exactly one stored event, handled by the
//! function.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::brokers::{mqtt_publish, Mqtt};
use common::cluster::Finished;
use common::nodes::*;

const MESSAGES: u64 = 200;

/// Publishes `{"seq":i}` for `range` at QoS 1 and waits until the broker acknowledged all.
async fn publish(port: u16, range: std::ops::Range<u64>) {
    mqtt_publish(port, range.map(|i| (format!("devices/d{}/telemetry", i % 5), format!("{{\"seq\":{i}}}").into_bytes())).collect()).await;
}

fn seq_of(data: &serde_json::Value) -> String {
    data["seq"].as_u64().map(|s| s.to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_session_moves_to_another_node_and_loses_nothing() {
    let started = Instant::now();
    let broker = Mqtt::start();
    let project = project_r3("iot");
    project.trigger(
        "telemetry",
        format!("kind = \"mqtt\"\nbroker = \"{}\"\nfilter = \"devices/+/telemetry\"\nqos = 1\ntopic = \"iot\"\n", broker.url()),
    );
    let mut nodes = Nodes::start(&project, 3).await;
    let mut finished = Finished::observe(&nodes.js, "done").await;
    let (holder, _) = nodes.wait_holder("telemetry", None, Instant::now(), Duration::from_secs(30), "at start").await;
    // The holder subscribed: messages from now on are kept for the session.
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes.ups[holder].log_lines("Connected to the MQTT broker.").is_empty() {
        assert!(Instant::now() < deadline, "the holder never connected; logs:\n{}", nodes.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connected: BTreeSet<usize> = nodes.log_lines("Connected to the MQTT broker.").into_iter().map(|(i, _)| i).collect();
    assert_eq!(connected, BTreeSet::from([holder]), "only the lease holder connects with the session's client id");

    let first_half = tokio::spawn(publish(broker.port, 0..MESSAGES / 2));
    let deadline = Instant::now() + Duration::from_secs(30);
    while (nodes.stored("iot").await.len() as u64) < MESSAGES / 4 {
        assert!(Instant::now() < deadline, "the holder stored too little; logs:\n{}", nodes.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = nodes.kill(holder);
    first_half.await.unwrap();
    publish(broker.port, MESSAGES / 2..MESSAGES).await;
    let (taker, takeover) = nodes.wait_holder("telemetry", Some(holder), killed, TAKEOVER, "after the holder was killed").await;

    let expected: BTreeSet<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
    let ids = nodes.wait_exactly_once("iot", &expected, Duration::from_secs(60), seq_of).await;
    let redelivered = nodes.wait_handled(&mut finished, &ids, Duration::from_secs(60)).await;
    println!(
        "{MESSAGES} messages, {} events; node {holder} killed, node {taker} took the lease after {:.1} s; \
         {redelivered} handled more than once; test took {:.1} s",
        ids.len(),
        takeover.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
