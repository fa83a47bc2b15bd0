//! The `mqtt` trigger against a real Mosquitto: QoS 1 messages published while `sluice up`
//! is down are delivered after it reconnects (persistent session, PUBACK after the
//! JetStream ack); JSON payloads pass as they are, others as base64 with a flag. While
//! JetStream refuses the events, the bridge holds the source back: it retries the same
//! message with delays doubling from 100 ms (at most 5 s) and acknowledges nothing to the
//! broker, so every message arrives once JetStream takes them again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use common::brokers::{mqtt_publish as publish, Mqtt};
use common::*;


/// A project whose trigger `telemetry` bridges QoS 1 `devices/+/telemetry` to topic `iot`.
fn telemetry_project(broker: &Mqtt) -> Project {
    let project = Project::new();
    project.trigger(
        "telemetry",
        format!("kind = \"mqtt\"\nbroker = \"{}\"\nfilter = \"devices/+/telemetry\"\nqos = 1\ntopic = \"iot\"\n", broker.url()),
    );
    project
}

/// The `seq` of every stored event that has one.
async fn stored_seqs(js: &jetstream::Context) -> BTreeSet<u64> {
    stream_messages(js, "SLUICE_EVENTS")
        .await
        .iter()
        .filter_map(|message| serde_json::from_slice::<serde_json::Value>(&message.payload).ok()?["seq"].as_u64())
        .collect()
}

/// The `retry_in` of every "holding the source back" line of a JSON log, in milliseconds.
fn retry_delays(log: &str) -> Vec<u128> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["fields"]["message"].as_str().is_some_and(|m| m.starts_with("Cannot publish to JetStream; holding the source back")))
        .map(|entry| {
            let text = entry["fields"]["retry_in"].as_str().unwrap().to_owned();
            let millis = text.strip_suffix("ms").map(|n| n.parse::<f64>().unwrap()).or_else(|| text.strip_suffix('s').map(|n| n.parse::<f64>().unwrap() * 1000.0));
            millis.unwrap_or_else(|| panic!("retry_in {text:?}")).round() as u128
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_while_disconnected_arrive_after_reconnect() {
    let broker = Mqtt::start();
    let nats = NatsServer::start();
    let js = async_nats::jetstream::new(nats.client().await);
    let project = telemetry_project(&broker);

    // The first start creates the persistent session; a probe shows it is subscribed.
    let mut up = project.up(Some(&nats.url()));
    let mut probes = 0;
    while stream_count(&js, "SLUICE_EVENTS").await == 0 {
        probes += 1;
        assert!(probes < 100, "no MQTT message arrived; log:\n{}", up.log());
        publish(broker.port, vec![("devices/probe/telemetry".into(), br#"{"probe":true}"#.to_vec())]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    up.kill();

    // While down: 50 JSON messages, one binary, one on a topic outside the filter.
    let mut messages: Vec<(String, Vec<u8>)> =
        (0..50).map(|i| (format!("devices/d{i}/telemetry"), format!("{{\"seq\":{i},\"t\":21.5}}").into_bytes())).collect();
    messages.push(("devices/bin/telemetry".into(), vec![0xff, 0x00, 0x10]));
    // Amid the others, so a broken filter shows before the last of them arrives.
    messages.insert(25, ("devices/d1/status".into(), b"{\"ignored\":true}".to_vec()));
    publish(broker.port, messages).await;

    let up = project.up(Some(&nats.url()));
    // The probes (any of them may arrive late) aside, 51 messages come through.
    let not_probes = || async {
        let mut messages = stream_messages(&js, "SLUICE_EVENTS").await;
        messages.retain(|message| header(message, "ce-subject") != Some("devices/probe/telemetry"));
        messages
    };
    let started = Instant::now();
    while not_probes().await.len() < 51 {
        assert!(started.elapsed() < Duration::from_secs(30), "{} of 51 messages arrived; log:\n{}", not_probes().await.len(), up.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut seqs = BTreeSet::new();
    let mut binary = None;
    for message in not_probes().await {
        assert_eq!(message.subject.as_str(), "sluice.events.iot");
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
    let port = free_port();
    project.trigger(
        "sensors",
        format!("kind = \"mqtt\"\nbroker = \"mqtt://127.0.0.1:{port}\"\nfilter = \"s/#\"\ntopic = \"s\"\n"),
    );
    let up = project.up(Some(&nats.url()));
    let listed = wait_for_trigger_status(&project, &nats.url(), "unhealthy").await;
    assert!(listed["message"].as_str().unwrap().contains(&format!("127.0.0.1:{port}")), "{listed}");
    assert!(up.log().contains("trigger=sensors"), "{}", up.log());

    // Reconnects back off: 0.4, 0.8, 1.6, 3.2 s between the first five tries.
    up.wait_line("a fifth failed connection", Duration::from_secs(30), |line| line.contains("MQTT connection failed") && line.contains("attempt=5"));
    let log = up.log();
    let failed_at = |attempt: u32| {
        let line = log
            .lines()
            .find(|line| line.contains("MQTT connection failed") && line.split_whitespace().any(|word| word == format!("attempt={attempt}")))
            .unwrap_or_else(|| panic!("no attempt {attempt}: {log}"));
        chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next().unwrap()).unwrap()
    };
    let last_gap = (failed_at(5) - failed_at(4)).num_milliseconds();
    assert!(last_gap >= 3000, "the fifth try came {last_gap} ms after the fourth: {log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_publish_holds_the_source_back_with_doubling_delays() {
    let broker = Mqtt::start();
    let nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    let project = telemetry_project(&broker);
    let up = project.up_with_env(Some(&nats.url()), &[("SLUICE_LOG_FORMAT", "json")]);

    // Subscribed once a probe arrives.
    let started = Instant::now();
    while stream_count(&js, "SLUICE_EVENTS").await == 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "no MQTT message arrived; log:\n{}", up.log());
        publish(broker.port, vec![("devices/probe/telemetry".into(), br#"{"probe":true}"#.to_vec())]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Without the events stream every publish is refused; three messages wait behind the first.
    js.delete_stream("SLUICE_EVENTS").await.unwrap();
    publish(broker.port, (0..3).map(|i| ("devices/d/telemetry".into(), format!("{{\"seq\":{i}}}").into_bytes())).collect()).await;
    // 100 + 200 + 400 + 800 + 1600 ms: the sixth try is 3.1 s after the first.
    up.wait_line("a retry 3.2 s after the first", Duration::from_secs(30), |line| line.contains("holding the source back") && line.contains("3.2s"));
    let delays = retry_delays(&up.log());
    assert_eq!(delays[..6], [100, 200, 400, 800, 1600, 3200], "{}", up.log());

    js.create_stream(stream::Config {
        name: "SLUICE_EVENTS".into(),
        subjects: vec!["sluice.events.>".into(), "sluice.direct.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let started = Instant::now();
    while stored_seqs(&js).await.len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(20), "held messages stored: {:?}; log:\n{}", stored_seqs(&js).await, up.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored_seqs(&js).await, BTreeSet::from([0, 1, 2]), "{}", up.log());
    assert!(retry_delays(&up.log()).iter().all(|delay| *delay <= 5000), "delays are capped at 5 s: {}", up.log());
}
