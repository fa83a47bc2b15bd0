//! The `kafka` trigger against a real Kafka-protocol broker (Tansu): 5,000 records across
//! 3 partitions become 5,000 invocations, none lost when `sluice up` is killed mid-stream;
//! re-read records are removed as duplicates; the event is Lambda's Kafka event shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use common::brokers::Kafka;
use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

async fn create_topic(kafka: &Kafka, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", kafka.brokers()).create().unwrap();
    let results = admin
        .create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .unwrap();
    for result in results {
        result.unwrap();
    }
}

async fn produce(kafka: &Kafka, topic: &str, range: std::ops::Range<u32>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.brokers())
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut sends = Vec::new();
    for i in range {
        let key = format!("customer-{}", i % 17);
        let value = format!("{{\"order\":{i}}}");
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .partition((i % 3) as i32)
            .headers(OwnedHeaders::new().insert(Header { key: "source", value: Some("shop") }));
        sends.push(producer.send_result(record).unwrap());
    }
    for send in sends {
        send.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_records_survive_a_crash_mid_stream() {
    let kafka = Kafka::start();
    create_topic(&kafka, "orders", 3).await;
    let nats = NatsServer::start();
    let js = async_nats::jetstream::new(nats.client().await);
    let project = Project::new();
    project.function("orders", "flaky", "concurrency = 64\n");
    project.trigger(
        "orders-in",
        format!(
            "kind = \"kafka\"\nbrokers = \"{}\"\ntopics = [\"orders\"]\ngroup = \"sluice-test\"\nstart = \"earliest\"\nfunction = \"orders\"\n",
            kafka.brokers()
        ),
    );

    produce(&kafka, "orders", 0..2500).await;
    let mut up = project.up(Some(&nats.url()));
    // Kill once a few hundred of the 2,500 are bridged: the crash lands mid-stream.
    wait_stream_count(&js, "SLUICE_EVENTS", 300, Duration::from_secs(60)).await;
    up.kill();
    let at_crash = stream_count(&js, "SLUICE_EVENTS").await;
    eprintln!("{at_crash} records bridged before the crash");
    assert!(
        (1..2500).contains(&at_crash),
        "the kill must land mid-stream (some but not all of the 2,500 bridged), not {at_crash}"
    );
    produce(&kafka, "orders", 2500..5000).await;
    let up = project.up(Some(&nats.url()));
    wait_stream_count(&js, "SLUICE_EVENTS", 5000, Duration::from_secs(120)).await;
    wait_idle(&js, "orders", Duration::from_secs(60)).await;
    // A short quiet period: a record re-read after the restart and stored twice (a broken
    // duplicate window) would arrive within it and fail the count below.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let stored = stream_messages(&js, "SLUICE_EVENTS").await;
    let mut per_partition: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut orders = BTreeSet::new();
    for message in &stored {
        let data: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(data["eventSource"], "SelfManagedKafka");
        assert_eq!(data["bootstrapServers"], kafka.brokers());
        let records = data["records"].as_object().unwrap();
        assert_eq!(records.len(), 1);
        let (key, list) = records.iter().next().unwrap();
        let record = &list[0];
        let partition = record["partition"].as_i64().unwrap();
        let offset = record["offset"].as_i64().unwrap();
        assert_eq!(key, &format!("orders-{partition}"));
        assert_eq!(header(message, "ce-id").unwrap(), format!("kafka:orders-in:orders/{partition}/{offset}"));
        assert_eq!(record["topic"], "orders");
        assert_eq!(record["timestampType"], "CREATE_TIME");
        assert_eq!(record["headers"][0]["source"], serde_json::json!([115, 104, 111, 112]));
        let value = base64::engine::general_purpose::STANDARD.decode(record["value"].as_str().unwrap()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&value).unwrap();
        let order = value["order"].as_u64().unwrap();
        assert_eq!(order % 3, partition as u64, "record kept its partition");
        let key = base64::engine::general_purpose::STANDARD.decode(record["key"].as_str().unwrap()).unwrap();
        assert_eq!(String::from_utf8(key).unwrap(), format!("customer-{}", order % 17));
        assert!(orders.insert(order), "order {order} stored twice (the duplicate window must remove re-reads)");
        per_partition.entry(partition).or_default().push(offset);
    }
    assert_eq!(orders.len(), 5000, "no record lost; log:\n{}", up.log());
    for (partition, offsets) in &per_partition {
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "partition {partition} kept its order on the way in");
    }
    // Every record ran the function exactly once (the consumer acknowledged all 5000).
    let info = js.get_stream("SLUICE_EVENTS").await.unwrap().consumer_info("orders").await.unwrap();
    assert_eq!(info.ack_floor.stream_sequence, 5000);
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.num_redelivered, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_broker_shows_as_unhealthy() {
    let nats = NatsServer::start();
    let port = free_port();
    let project = Project::new();
    project.trigger(
        "orders-in",
        format!("kind = \"kafka\"\nbrokers = \"127.0.0.1:{port}\"\ntopics = [\"orders\"]\ntopic = \"orders\"\n"),
    );
    let up = project.up(Some(&nats.url()));
    let listed = wait_for_trigger_status(&project, &nats.url(), "unhealthy").await;
    assert!(listed["message"].as_str().unwrap().contains(&format!("127.0.0.1:{port}")), "{listed}");
    assert!(up.log().contains("trigger=orders-in"), "{}", up.log());
}
