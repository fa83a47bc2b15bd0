//! The `mqtt` trigger against a real Mosquitto: QoS 1 messages published while `sluice up`
//! is down are delivered after it reconnects (persistent session, PUBACK after the
//! JetStream ack); JSON payloads pass as they are, others as base64 with a flag.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::brokers::Mqtt;
use common::*;
use rumqttc::{AsyncClient, MqttOptions, QoS};

/// Publishes QoS 1 messages and waits until the broker acknowledged all of them.
async fn publish(port: u16, messages: Vec<(String, Vec<u8>)>) {
    let mut options = MqttOptions::new(format!("test-publisher-{}", uuid::Uuid::new_v4().simple()), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let count = messages.len();
    let sender = tokio::spawn(async move {
        for (topic, payload) in messages {
            client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < count {
        let event = tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await.expect("broker answers").unwrap();
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
            acked += 1;
        }
    }
    let client = sender.await.unwrap();
    let _ = client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_while_disconnected_arrive_after_reconnect() {
    let broker = Mqtt::start();
    let nats = NatsServer::start();
    let js = async_nats::jetstream::new(nats.client().await);
    let project = Project::new();
    std::fs::create_dir_all(project.path().join("triggers")).unwrap();
    std::fs::write(
        project.path().join("triggers/telemetry.toml"),
        format!("kind = \"mqtt\"\nbroker = \"{}\"\nfilter = \"devices/+/telemetry\"\nqos = 1\ntopic = \"iot.telemetry\"\n", broker.url()),
    )
    .unwrap();

    // The first start creates the persistent session; a probe shows it is subscribed.
    let mut up = project.up(Some(&nats.url()));
    let mut probes = 0;
    while stream_count(&js, "SLUICE_EVENTS").await == 0 {
        probes += 1;
        assert!(probes < 100, "no MQTT message arrived; log:\n{}", up.log());
        publish(broker.port, vec![("devices/probe/telemetry".into(), br#"{"probe":true}"#.to_vec())]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = stream_count(&js, "SLUICE_EVENTS").await;
    up.kill();

    // While down: 50 JSON messages, one binary, one on a topic outside the filter.
    let mut messages: Vec<(String, Vec<u8>)> =
        (0..50).map(|i| (format!("devices/d{i}/telemetry"), format!("{{\"seq\":{i},\"t\":21.5}}").into_bytes())).collect();
    messages.push(("devices/bin/telemetry".into(), vec![0xff, 0x00, 0x10]));
    messages.push(("devices/d1/status".into(), b"{\"ignored\":true}".to_vec()));
    publish(broker.port, messages).await;

    let up = project.up(Some(&nats.url()));
    for _ in 0..300 {
        if stream_count(&js, "SLUICE_EVENTS").await >= before + 51 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut seqs = BTreeSet::new();
    let mut binary = None;
    for message in stream_messages(&js, "SLUICE_EVENTS").await.into_iter().skip(before as usize) {
        assert_eq!(message.subject.as_str(), "sluice.events.iot.telemetry");
        let topic = header(&message, "ce-subject").unwrap().to_owned();
        assert_eq!(header(&message, "sluice-mqtt-topic"), Some(topic.as_str()));
        assert_eq!(header(&message, "ce-type"), Some("sluice.mqtt.message"));
        let data: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        if topic == "devices/bin/telemetry" {
            binary = Some(data);
        } else {
            assert_eq!(topic, format!("devices/d{}/telemetry", data["seq"]));
            assert_eq!(data["t"], 21.5, "JSON passes as it is");
            seqs.insert(data["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, (0..50).collect::<BTreeSet<u64>>(), "every message sent while down arrived; log:\n{}", up.log());
    let binary = binary.expect("the binary message arrived");
    assert_eq!(binary["base64"], true);
    assert_eq!(binary["payload_base64"], "/wAQ");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_broker_is_reported_with_the_trigger_name() {
    let nats = NatsServer::start();
    let project = Project::new();
    std::fs::create_dir_all(project.path().join("triggers")).unwrap();
    let port = free_port();
    std::fs::write(
        project.path().join("triggers/sensors.toml"),
        format!("kind = \"mqtt\"\nbroker = \"mqtt://127.0.0.1:{port}\"\nfilter = \"s/#\"\ntopic = \"s\"\n"),
    )
    .unwrap();
    let up = project.up(Some(&nats.url()));
    let listed = wait_for_trigger_status(&project, &nats.url(), "unhealthy").await;
    assert!(listed["message"].as_str().unwrap().contains(&format!("127.0.0.1:{port}")), "{listed}");
    assert!(up.log().contains("trigger=sensors"), "{}", up.log());
}
