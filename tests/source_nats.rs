//! The `nats` trigger: core NATS messages on a subject reach the function with their headers;
//! the JetStream variant loses nothing across a crash of `sluice up`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream;
use common::*;

fn trigger(project: &Project, name: &str, text: &str) {
    project.trigger(name, text);
}

#[tokio::test(flavor = "multi_thread")]
async fn core_messages_reach_the_function_with_their_headers() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("echo", "flaky", "env = { FLAKY_ECHO = \"1\" }\n");
    trigger(&project, "legacy", "kind = \"nats\"\nsubject = \"legacy.orders.>\"\nfunction = \"echo\"\n");
    let _up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let mut results = Results::subscribe(&client, "echo").await;

    // The bridge subscribes as `sluice up` starts; probe until it forwards.
    let js = jetstream::new(client.clone());
    for i in 0..100 {
        client.publish("legacy.orders.probe", "{\"probe\":true}".into()).await.unwrap();
        client.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream_count(&js, "SLUICE_EVENTS").await > 0 {
            break;
        }
        assert!(i < 99, "the bridge never forwarded");
    }
    results.wait_for(1, Duration::from_secs(10)).await;
    let probes = results.received.len();

    let before = stream_count(&js, "SLUICE_EVENTS").await as usize;
    for i in 0..20 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("x-tenant", "acme");
        headers.insert("Nats-Msg-Id", format!("order-{i}").as_str());
        client
            .publish_with_headers(format!("legacy.orders.eu.{i}"), headers, format!("{{\"order\":{i}}}").into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    results.wait_for(probes + 20, Duration::from_secs(20)).await;

    let orders: BTreeSet<u64> =
        results.received[probes..].iter().map(|(_, body)| body["order"].as_u64().unwrap()).collect();
    assert_eq!(orders, (0..20).collect());
    let stored = stream_messages(&js, "SLUICE_EVENTS").await;
    for message in &stored[before..] {
        assert_eq!(message.subject.as_str(), "sluice.direct.echo");
        assert_eq!(header(message, "x-tenant"), Some("acme"), "headers are kept");
        let original = header(message, "sluice-nats-subject").unwrap();
        assert!(original.starts_with("legacy.orders.eu."));
        assert_eq!(header(message, "ce-subject"), Some(original));
        let n = original.rsplit('.').next().unwrap();
        assert_eq!(header(message, "ce-id").unwrap(), format!("nats:legacy:order-{n}"));
        assert_eq!(header(message, "ce-type"), Some("sluice.nats.message"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jetstream_variant_survives_a_crash_without_loss() {
    let nats = NatsServer::start();
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    js.create_stream(jetstream::stream::Config {
        name: "LEGACY".into(),
        subjects: vec!["legacy.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let project = Project::new();
    trigger(&project, "from-stream", "kind = \"nats\"\nsubject = \"legacy.js.>\"\nstream = \"LEGACY\"\ntopic = \"bridged\"\n");

    let publish = |range: std::ops::Range<u32>| {
        let js = js.clone();
        async move {
            for i in range {
                js.publish(format!("legacy.js.{i}"), format!("{{\"n\":{i}}}").into()).await.unwrap().await.unwrap();
            }
        }
    };
    publish(0..2000).await;
    // Outside the trigger's subject, in the same stream: never bridged.
    for i in 0..10 {
        js.publish(format!("legacy.other.{i}"), "{\"other\":true}".into()).await.unwrap().await.unwrap();
    }
    let mut up = project.up(Some(&nats.url()));
    // Crash mid-stream: once a few hundred of the 2,000 are bridged.
    wait_stream_count(&js, "SLUICE_EVENTS", 300, Duration::from_secs(60)).await;
    up.kill();
    let at_crash = stream_count(&js, "SLUICE_EVENTS").await;
    eprintln!("{at_crash} of 2000 bridged before the crash");
    assert!(
        (1..2000).contains(&at_crash),
        "the kill must land mid-stream (some but not all of the 2,000 bridged), not {at_crash}"
    );
    publish(2000..2500).await;
    let up = project.up(Some(&nats.url()));
    wait_stream_count(&js, "SLUICE_EVENTS", 2500, Duration::from_secs(60)).await;
    // A short quiet period: a message redelivered after the restart and stored twice (a
    // broken duplicate window) would arrive within it and fail the count below.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let stored = stream_messages(&js, "SLUICE_EVENTS").await;
    let ids: Vec<String> = stored.iter().map(|m| header(m, "ce-id").unwrap().to_owned()).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 2500, "every message bridged; log:\n{}", up.log());
    assert_eq!(ids.len(), 2500, "re-deliveries after the crash were removed as duplicates");
    let numbers: BTreeSet<u64> = stored
        .iter()
        .map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["n"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..2500).collect());

    // The consumer is the one docs/triggers.md describes: durable (it outlives the bridge),
    // explicit acks, held messages back after 10 s, at most 256 unacknowledged.
    let info = js.get_stream("LEGACY").await.unwrap().consumer_info("sluice-from-stream").await.unwrap();
    assert_eq!(info.config.durable_name.as_deref(), Some("sluice-from-stream"));
    assert_eq!(info.config.filter_subject, "legacy.js.>");
    assert_eq!(info.config.ack_policy, jetstream::consumer::AckPolicy::Explicit);
    assert_eq!(info.config.ack_wait, Duration::from_secs(10));
    assert_eq!(info.config.max_ack_pending, 256);
}
