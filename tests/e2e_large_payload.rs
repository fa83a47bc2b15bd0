//! The 6 MiB payload contract on a server with the default 1 MiB `max_payload`: a 3 MiB
//! event reaches its functions whole (claim check in the object store `sluice_payloads`), a
//! 3 MiB response is chained with `on_success`, a dead letter of it shows and replays its
//! body, a 7 MiB event is refused with exit status 2 naming both sizes, and the inline limit
//! and the 6 MiB limit hold to the byte. Stored bodies go when their event's retention ends;
//! a stored body that cannot be read is retried (also while the store is down), one that is
//! gone is dead-lettered at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt as _;

use common::*;

const MIB: usize = 1024 * 1024;

fn big_json(bytes: usize) -> String {
    format!("{{\"pad\":\"{}\"}}", "x".repeat(bytes))
}

async fn object_names(js: &jetstream::Context) -> Vec<String> {
    let Ok(store) = js.get_object_store("sluice_payloads").await else { return Vec::new() };
    let mut list = store.list().await.unwrap();
    let mut names = Vec::new();
    while let Some(info) = list.next().await {
        let info = info.unwrap();
        if !info.deleted {
            names.push(info.name);
        }
    }
    names
}

async fn read_object(js: &jetstream::Context, name: &str) -> Vec<u8> {
    let store = js.get_object_store("sluice_payloads").await.unwrap();
    let mut object = store.get(name).await.unwrap();
    let mut body = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut body).await.unwrap();
    body
}

/// Publishes event `big-1` with a 2 MiB body to topic `big` while no worker runs (the
/// project's function consumers exist, as a new one sees only later events), so the test
/// can change its stored body before anything reads it. Returns the object's name.
async fn publish_stored_while_stopped(project: &Project, nats: &NatsServer, js: &jetstream::Context) -> String {
    project.create_consumer(&nats.url());
    let file = project.path().join("big.json");
    std::fs::write(&file, big_json(2 * MIB)).unwrap();
    let out = project.sluice(&["--nats", &nats.url(), "publish", "big", "--id", "big-1", "--file", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = stream_messages(js, "SLUICE_EVENTS").await;
    header(&events[0], "sluice-payload-ref").expect("a claim check").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_max_payload_travel_through_the_object_store() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("echo", "flaky", "subscribe = [\"big\"]\non_success = \"echoed\"\nenv = { FLAKY_ECHO = \"1\" }");
    project.function("failing", "flaky", "subscribe = [\"big\"]\nenv = { FLAKY_FAIL = \"1\" }\n[retry]\nmax_attempts = 1");
    let _up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    assert_eq!(client.server_info().max_payload, MIB, "the test needs the default max_payload");
    let js = jetstream::new(client.clone());
    assert!(js.get_object_store("sluice_payloads").await.is_ok(), "`sluice up` creates the object store at start");

    let body = big_json(3 * MIB);
    let file = project.path().join("big.json");
    std::fs::write(&file, &body).unwrap();
    let out = project.sluice(&[
        "--nats", &nats.url(), "publish", "big", "--id", "big-1", "--header", "tenant=acme", "--file", file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // `echo` got the whole body and its response was chained into a stored event.
    wait_stream_count(&js, "SLUICE_EVENTS", 2, Duration::from_secs(60)).await;
    let events = stream_messages(&js, "SLUICE_EVENTS").await;
    let chained = events.iter().find(|m| m.subject.as_str() == "sluice.events.echoed").expect("the on_success event");
    assert!(chained.payload.is_empty(), "the chained body is not inline");
    let name = header(chained, "sluice-payload-ref").expect("a claim check").to_owned();
    assert!(name.starts_with("events/"), "{name}");
    let echoed: serde_json::Value = serde_json::from_slice(&read_object(&js, &name).await).unwrap();
    assert_eq!(echoed, serde_json::from_str::<serde_json::Value>(&body).unwrap(), "the 3 MiB event arrived whole");
    assert_eq!(header(chained, "sluice-payload-size").unwrap().parse::<usize>().unwrap(), read_object(&js, &name).await.len());

    // `failing` dead-lettered it with the real cause; show and replay read the body back.
    wait_stream_count(&js, "SLUICE_DLQ", 1, Duration::from_secs(60)).await;
    let dead = stream_messages(&js, "SLUICE_DLQ").await;
    assert_eq!(header(&dead[0], "sluice-error-kind"), Some("error"));
    let dlq_object = header(&dead[0], "sluice-payload-ref").expect("the dead letter's body is stored").to_owned();
    assert!(dlq_object.starts_with("dlq/"), "{dlq_object}");
    let id = dead[0].sequence.to_string();
    let out = project.sluice(&["--nats", &nats.url(), "--json", "dlq", "show", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["body"]["pad"].as_str().map(str::len), Some(3 * MIB), "dlq show reads the stored body");

    let out = project.sluice(&["--nats", &nats.url(), "dlq", "replay", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The replay fails again and comes back as a new entry with its own stored body; the
    // replayed entry's object is gone with it.
    wait_stream_count(&js, "SLUICE_DLQ", 1, Duration::from_secs(60)).await;
    let started = Instant::now();
    loop {
        let dead = stream_messages(&js, "SLUICE_DLQ").await;
        if dead.iter().any(|m| m.sequence.to_string() != id) {
            let again = dead.iter().find(|m| m.sequence.to_string() != id).unwrap();
            assert_eq!(header(again, "sluice-replays"), Some("1"));
            assert_eq!(header(again, "ce-id"), Some("big-1"));
            assert_eq!(header(again, "tenant"), Some("acme"), "the replay kept the event's own headers");
            let stored = read_object(&js, header(again, "sluice-payload-ref").unwrap()).await;
            assert_eq!(stored.len(), body.len(), "the replayed body was whole");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the replay never failed again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!object_names(&js).await.contains(&dlq_object), "the replayed entry's body was removed");

    // Over the limit: refused before anything is sent.
    std::fs::write(&file, big_json(7 * MIB)).unwrap();
    let out = project.sluice(&["--nats", &nats.url(), "publish", "big", "--file", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&(7 * MIB + 10).to_string()) && stderr.contains("6291456"), "names both sizes: {stderr}");
    assert_eq!(stderr.matches("6291456").count(), 1, "said once: {stderr}");

    // The edges, on a topic nobody subscribes to: a body of the server's max_payload less
    // the 8 KiB kept for headers travels inline, one byte more is stored, and exactly 6 MiB
    // is taken.
    let inline_limit = MIB - 8 * 1024;
    for (id, size) in [("inline", inline_limit), ("stored", inline_limit + 1), ("largest", 6 * MIB)] {
        std::fs::write(&file, big_json(size - 10)).unwrap();
        let out = project.sluice(&["--nats", &nats.url(), "publish", "edge", "--id", id, "--file", file.to_str().unwrap()]);
        assert!(out.status.success(), "{id}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let edges: Vec<_> = stream_messages(&js, "SLUICE_EVENTS").await.into_iter().filter(|m| m.subject.as_str() == "sluice.events.edge").collect();
    let edge = |id: &str| edges.iter().find(|m| header(m, "ce-id") == Some(id)).unwrap_or_else(|| panic!("event {id} stored"));
    assert_eq!(edge("inline").payload.len(), inline_limit, "a body of the inline limit is sent inline");
    assert_eq!(header(edge("inline"), "sluice-payload-ref"), None);
    for (id, size) in [("stored", inline_limit + 1), ("largest", 6 * MIB)] {
        assert!(edge(id).payload.is_empty(), "{id}: the body is not inline");
        assert_eq!(header(edge(id), "sluice-payload-size"), Some(size.to_string().as_str()), "{id}");
        assert_eq!(read_object(&js, header(edge(id), "sluice-payload-ref").unwrap()).await.len(), size, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_bodies_go_with_their_events() {
    let nats = NatsServer::start();
    let project = Project::new();
    let toml = std::fs::read_to_string(project.path().join("sluice.toml")).unwrap();
    std::fs::write(project.path().join("sluice.toml"), format!("{toml}[bus]\nevents_max_age = \"3s\"\nduplicate_window = \"1s\"\n")).unwrap();
    project.function("echo", "hello", "subscribe = [\"big\"]");
    project.function("failing", "flaky", "subscribe = [\"big\"]\nenv = { FLAKY_FAIL = \"1\" }\n[retry]\nmax_attempts = 1");
    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = jetstream::new(client.clone());

    let file = project.path().join("big.json");
    std::fs::write(&file, big_json(2 * MIB)).unwrap();
    let out = project.sluice(&["--nats", &nats.url(), "publish", "big", "--file", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_stream_count(&js, "SLUICE_DLQ", 1, Duration::from_secs(30)).await;
    let dead = stream_messages(&js, "SLUICE_DLQ").await;
    let dlq_object = header(&dead[0], "sluice-payload-ref").unwrap().to_owned();

    // The event's body goes with the event (3 s); the dead letter's stays while the dead
    // letter does, also past the sweep's grace for new dead letters (5 s).
    let started = Instant::now();
    while object_names(&js).await.iter().any(|name| name.starts_with("events/")) {
        assert!(started.elapsed() < Duration::from_secs(30), "the stored body outlived its event; log:\n{}", up.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(up.log().contains("Removed stored bodies"), "{}", up.log());
    // A negative check needs time to pass: three sweeps (1 s apart) after the grace.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(object_names(&js).await, [dlq_object], "a dead letter's body stays with it");

    let out = project.sluice(&["--nats", &nats.url(), "dlq", "purge", "--all", "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let started = Instant::now();
    while !object_names(&js).await.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "a purged dead letter's body stayed; log:\n{}", up.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A stored body that cannot be read (here its chunks were overwritten, so the object
/// store's digest check fails) is a platform fault, not the event's: each attempt but the
/// last is handed back with the backoff delay, the last one dead-letters the event as
/// `platform_error` naming the cause, and the function never runs on a broken body.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_stored_body_is_retried_then_dead_lettered() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function(
        "reader",
        "flaky",
        "subscribe = [\"big\"]\n[retry]\nmax_attempts = 3\nbackoff = { initial = \"200ms\", factor = 1.0, max = \"200ms\", jitter = false }",
    );
    let client = nats.client().await;
    let js = jetstream::new(client.clone());

    let name = publish_stored_while_stopped(&project, &nats, &js).await;
    let store = js.get_object_store("sluice_payloads").await.unwrap();
    let info = store.info(&name).await.unwrap();
    let chunks = format!("$O.sluice_payloads.C.{}", info.nuid);
    js.get_stream("OBJ_sluice_payloads")
        .await
        .unwrap()
        .purge()
        .filter(chunks.as_str())
        .await
        .unwrap();
    js.publish(chunks, bytes::Bytes::from_static(b"not the stored body")).await.unwrap().await.unwrap();

    let mut results = Results::subscribe(&client, "reader").await;
    let up = project.up(Some(&nats.url()));
    let retried = "Cannot read the event's stored body; retrying.";
    let started = Instant::now();
    // Until the dead letter is stored, or more retries than the budget allows were logged.
    while stream_count(&js, "SLUICE_DLQ").await == 0 && up.log().matches(retried).count() <= 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "no dead letter: {}", up.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = up.log();
    assert_eq!(log.matches(retried).count(), 2, "attempts 1 and 2 handed back, the third dead-lettered: {log}");
    wait_stream_count(&js, "SLUICE_DLQ", 1, Duration::from_secs(10)).await;
    let dead = stream_messages(&js, "SLUICE_DLQ").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], "sluice-error-kind"), Some("platform_error"), "{log}");
    assert_eq!(header(&dead[0], "sluice-attempts"), Some("3"));
    let error = header(&dead[0], "sluice-error").unwrap();
    assert!(error.contains("cannot read the event's body") && error.contains("wrong digest"), "{error}");
    assert_eq!(header(&dead[0], "ce-id"), Some("big-1"));
    wait_idle(&js, "reader", Duration::from_secs(10)).await;
    results.drain(Duration::from_millis(300)).await;
    assert!(results.received.is_empty(), "the function never ran on a broken body: {:?}", results.received);
}

/// A stored body that no longer exists (removed by hand, or aged out with a too short
/// retention) cannot come back by retrying: the event is dead-lettered at once as
/// `payload_missing`, naming the object, with no attempt counted, and the function never runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_stored_body_that_is_gone_is_dead_lettered_at_once() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("reader", "flaky", "subscribe = [\"big\"]\n[retry]\nmax_attempts = 3");
    let client = nats.client().await;
    let js = jetstream::new(client.clone());

    let name = publish_stored_while_stopped(&project, &nats, &js).await;
    js.get_object_store("sluice_payloads").await.unwrap().delete(&name).await.unwrap();

    let mut results = Results::subscribe(&client, "reader").await;
    let up = project.up(Some(&nats.url()));
    wait_stream_count(&js, "SLUICE_DLQ", 1, Duration::from_secs(30)).await;
    let dead = stream_messages(&js, "SLUICE_DLQ").await;
    let log = up.log();
    assert_eq!(header(&dead[0], "sluice-error-kind"), Some("payload_missing"), "{log}");
    assert_eq!(header(&dead[0], "sluice-attempts"), Some("0"), "no attempt ran");
    let error = header(&dead[0], "sluice-error").unwrap();
    assert!(error.contains(&name) && error.contains("no longer exists"), "{error}");
    assert_eq!(header(&dead[0], "ce-id"), Some("big-1"));
    assert!(!log.contains("Cannot read the event's stored body; retrying."), "a missing body is not retried: {log}");
    wait_idle(&js, "reader", Duration::from_secs(10)).await;
    results.drain(Duration::from_millis(300)).await;
    assert!(results.received.is_empty(), "the function never ran without its body: {:?}", results.received);
}

/// While the object store cannot be read (here its stream is gone for a while), an event
/// whose body is stored there is handed back with the backoff delay, not dead-lettered as
/// missing; once the store is back, the function gets the body.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_is_down_for_a_while_is_waited_for() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function(
        "hello",
        "hello",
        "subscribe = [\"big\"]\n[retry]\nmax_attempts = 100\nbackoff = { initial = \"200ms\", factor = 1.0, max = \"200ms\", jitter = false }",
    );
    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "hello").await;
    js.delete_object_store("sluice_payloads").await.unwrap();

    // An event whose body is in the store, as `publish` stores one over max_payload.
    let body = br#"{"name":"Outage"}"#;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("ce-id", "outage-1");
    headers.insert("sluice-payload-ref", "events/outage-1");
    headers.insert("sluice-payload-size", body.len().to_string().as_str());
    js.publish_with_headers("sluice.events.big", headers, bytes::Bytes::new()).await.unwrap().await.unwrap();
    let retried = "Cannot read the event's stored body; retrying.";
    let started = Instant::now();
    while up.log().matches(retried).count() < 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "no retry while the store is gone: {}", up.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let store = js
        .create_object_store(jetstream::object_store::Config { bucket: "sluice_payloads".into(), ..Default::default() })
        .await
        .unwrap();
    store.put("events/outage-1", &mut &body[..]).await.unwrap();
    results.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(results.received[0].0, "outage-1");
    assert_eq!(results.received[0].1["message"], "Hello, Outage!");
    assert_eq!(stream_count(&js, "SLUICE_DLQ").await, 0, "nothing dead-lettered: {}", up.log());
}
