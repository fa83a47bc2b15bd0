//! The `nats` trigger on 3 `sluice up` nodes over a 3-node NATS cluster (R3). JetStream
//! source: the nodes share one durable consumer; SIGKILLing one midway loses nothing (what
//! it held unacknowledged comes back after the consumer's ack wait) and every source message
//! is exactly one stored event (its id is stream + sequence), handled by the function. Core
//! NATS source: the queue group gives each message to one node, so each is one event.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream::stream;
use common::cluster::Finished;
use common::nodes::*;

const MESSAGES: usize = 300;

fn n_of(data: &serde_json::Value) -> String {
    data["n"].as_u64().map(|n| n.to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_durable_consumer_loses_nothing_when_a_node_dies() {
    let started = Instant::now();
    let project = project_r3("legacy");
    project.trigger("bridge", "kind = \"nats\"\nstream = \"LEGACY\"\nsubject = \"legacy.>\"\ntopic = \"legacy\"\n");
    // The source stream must exist before the nodes start.
    let cluster = common::cluster::NatsCluster::start(3).await;
    let js = common::cluster::chaos_jetstream(cluster.client().await);
    js.create_stream(stream::Config {
        name: "LEGACY".into(),
        subjects: vec!["legacy.>".into()],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut nodes = Nodes::on(cluster, &project, 3, &[]).await;
    let mut finished = Finished::observe(&nodes.js, "done").await;
    let publish = |range: std::ops::Range<usize>| {
        let js = js.clone();
        async move {
            for n in range {
                let ack = js.publish(format!("legacy.orders.{}", n % 3), format!("{{\"n\":{n}}}").into()).await.unwrap();
                ack.await.unwrap();
            }
        }
    };
    publish(0..MESSAGES / 2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes.stored("legacy").await.len() < MESSAGES / 4 {
        assert!(Instant::now() < deadline, "nothing bridged; logs:\n{}", nodes.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bridging: BTreeSet<usize> = nodes.log_lines("Bridging a JetStream stream (at least once).").into_iter().map(|(i, _)| i).collect();
    assert_eq!(bridging.len(), 3, "every node consumes from the shared durable consumer");
    nodes.kill(1);
    publish(MESSAGES / 2..MESSAGES).await;

    let expected: BTreeSet<String> = (0..MESSAGES).map(|n| n.to_string()).collect();
    let ids = nodes.wait_exactly_once("legacy", &expected, Duration::from_secs(60), n_of).await;
    let redelivered = nodes.wait_handled(&mut finished, &ids, Duration::from_secs(60)).await;
    println!(
        "{MESSAGES} messages, {} events; node 1 killed; {redelivered} handled more than once; test took {:.1} s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_group_gives_each_core_message_to_one_node() {
    let started = Instant::now();
    let project = project_r3("plain");
    project.trigger("plain", "kind = \"nats\"\nsubject = \"plain.>\"\ntopic = \"plain\"\n");
    let nodes = Nodes::start(&project, 3).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes.log_lines("Bridging core NATS messages (at most once at the source: core NATS keeps nothing for an absent subscriber).").len() < 3 {
        assert!(Instant::now() < deadline, "not every node subscribed; logs:\n{}", nodes.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 0..MESSAGES {
        nodes.client.publish(format!("plain.{}", n % 3), format!("{{\"n\":{n}}}").into()).await.unwrap();
    }
    nodes.client.flush().await.unwrap();
    let expected: BTreeSet<String> = (0..MESSAGES).map(|n| n.to_string()).collect();
    let ids = nodes.wait_exactly_once("plain", &expected, Duration::from_secs(30), n_of).await;
    println!("{MESSAGES} core messages, {} events; test took {:.1} s", ids.len(), started.elapsed().as_secs_f64());
}
