//! The `kafka` trigger on 3 `sluice up` nodes over a 3-node NATS cluster (R3): the nodes
//! are one consumer group (each reads one of the topic's 3 partitions); a member that stops
//! (SIGTERM: it leaves the group) or dies (SIGKILL: the session timeout of 6 s) midway has
//! its partitions moved to the others within 10 s, which read them from the last committed
//! offset; a
//! record read again keeps its id (topic/partition/offset) and is dropped as a duplicate.
//! Every record is exactly one stored event, handled by the function.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use common::brokers::Kafka;
use common::cluster::Finished;
use common::nodes::*;
use common::logged_at;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const RECORDS: u32 = 300;

async fn create_topic(kafka: &Kafka, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", kafka.brokers()).create().unwrap();
    let results = admin.create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new()).await.unwrap();
    for result in results {
        result.unwrap();
    }
}

async fn produce(kafka: &Kafka, range: std::ops::Range<u32>) {
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", kafka.brokers()).set("linger.ms", "5").create().unwrap();
    let mut sends = Vec::new();
    for i in range {
        let value = format!("{{\"order\":{i}}}");
        sends.push(producer.send_result(FutureRecord::<(), _>::to("orders").payload(&value).partition((i % 3) as i32)).unwrap());
    }
    for send in sends {
        send.await.unwrap().unwrap();
    }
}

fn order_of(data: &serde_json::Value) -> String {
    let Some(records) = data["records"].as_object() else { return String::new() };
    let Some(record) = records.values().next().and_then(|list| list.get(0)) else { return String::new() };
    let value = base64::engine::general_purpose::STANDARD.decode(record["value"].as_str().unwrap_or_default()).unwrap_or_default();
    let value: serde_json::Value = serde_json::from_slice(&value).unwrap_or_default();
    value["order"].as_u64().map(|o| o.to_string()).unwrap_or_default()
}

/// The partitions a node holds now (`orders/0,orders/2`) by its log: those of its last
/// assignment, none after a revocation (the eager protocol revokes all, then assigns).
fn assigned(nodes: &Nodes, node: usize) -> String {
    let mut lines: Vec<(chrono::DateTime<Utc>, String)> = nodes.ups[node]
        .log_lines("Kafka rebalance: partitions assigned.")
        .into_iter()
        .map(|f| (logged_at(&f), f["partitions"].as_str().unwrap_or_default().to_owned()))
        .chain(nodes.ups[node].log_lines("Kafka rebalance: partitions revoked.").into_iter().map(|f| (logged_at(&f), String::new())))
        .collect();
    lines.sort();
    lines.pop().map(|(_, partitions)| partitions).unwrap_or_default()
}

/// A member that dies is noticed by the group coordinator when its session times out; the
/// others rejoin and share its partitions. (tansu 0.6.0 as published evicts it without a new
/// generation, and the others took its partitions in some runs only; scripts/tansu-group-eviction.patch
/// makes its coordinator start one, as Kafka's does.)
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_members_partitions_move_to_the_others() {
    partitions_move(Departure::Killed).await;
}

/// A member that stops gracefully leaves the group at once (rdkafka's LeaveGroup), which the
/// broker here handles: its partitions move to the others.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_members_partitions_move_to_the_others() {
    partitions_move(Departure::Stopped).await;
}

/// How the member leaves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Departure {
    /// SIGKILL: the group notices through the session timeout.
    Killed,
    /// SIGTERM: `sluice up` drains and the consumer leaves the group.
    Stopped,
}

async fn partitions_move(departure: Departure) {
    let started = Instant::now();
    let kafka = Kafka::start();
    create_topic(&kafka, "orders", 3).await;
    let project = project_r3("orders");
    project.trigger(
        "orders-in",
        format!("kind = \"kafka\"\nbrokers = \"{}\"\ntopics = [\"orders\"]\nstart = \"earliest\"\ntopic = \"orders\"\n", kafka.brokers()),
    );
    let mut nodes = Nodes::start(&project, 3).await;
    let mut finished = Finished::observe(&nodes.js, "done").await;

    produce(&kafka, 0..RECORDS / 2).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while nodes.stored("orders").await.len() < (RECORDS / 4) as usize {
        assert!(Instant::now() < deadline, "nothing consumed; logs:\n{}", nodes.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One group: once the three members joined, each reads one of the three partitions.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now: Vec<String> = (0..3).map(|i| assigned(&nodes, i)).collect();
        let mut all: Vec<&str> = now.iter().flat_map(|p| p.split(',')).filter(|p| !p.is_empty()).collect();
        all.sort_unstable();
        if all == ["orders/0", "orders/1", "orders/2"] && now.iter().all(|p| !p.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the nodes never shared the 3 partitions as one group (each node holds: {now:?}); logs:\n{}", nodes.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A member that reads partitions.
    let victim = (0..3).find(|i| !assigned(&nodes, *i).is_empty()).unwrap_or_else(|| panic!("no node was assigned partitions; logs:\n{}", nodes.logs()));
    let partitions = assigned(&nodes, victim);
    let killed_at = Utc::now();
    let killed = match departure {
        Departure::Killed => nodes.kill(victim),
        Departure::Stopped => {
            nodes.ups[victim].signal(libc::SIGTERM);
            Instant::now()
        }
    };
    produce(&kafka, RECORDS / 2..RECORDS).await;

    // Its partitions are assigned to a survivor.
    let taken: Vec<&str> = partitions.split(',').collect();
    let (taker, takeover) = loop {
        let found = nodes
            .log_lines("Kafka rebalance: partitions assigned.")
            .into_iter()
            .filter(|(node, fields)| *node != victim && logged_at(fields) > killed_at)
            .find(|(_, fields)| taken.iter().any(|p| fields["partitions"].as_str().unwrap_or_default().split(',').any(|q| q == *p)));
        if let Some((node, fields)) = found {
            break (node, (logged_at(&fields) - killed_at).to_std().unwrap_or_default());
        }
        assert!(
            killed.elapsed() < TAKEOVER,
            "the partitions {partitions} of the {departure:?} node {victim} were not assigned to another node within {TAKEOVER:?}; logs:\n{}",
            nodes.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(takeover < TAKEOVER, "node {taker} was assigned {partitions} only {takeover:?} after the kill");

    let expected: BTreeSet<String> = (0..RECORDS).map(|i| i.to_string()).collect();
    let ids = nodes.wait_exactly_once("orders", &expected, Duration::from_secs(60), order_of).await;
    let redelivered = nodes.wait_handled(&mut finished, &ids, Duration::from_secs(60)).await;
    println!(
        "{RECORDS} records, {} events; node {victim} ({partitions}) {departure:?}, node {taker} was assigned them after {:.1} s; \
         {redelivered} handled more than once; test took {:.1} s",
        ids.len(),
        takeover.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
