//! A route to a topic is asynchronous: `202 Accepted` with the event id once JetStream
//! stored the event; the subscribed function runs it once, and a function that keeps failing
//! ends with it in the DLQ, like any other event. Guards "stored before 202" and the
//! event's way through retries.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::http::{base, client};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn topic_routes_answer_202_and_deliver_through_jetstream() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("greeter", "hello", "subscribe = [\"greetings\"]");
    project.function(
        "doomed",
        "flaky",
        "subscribe = [\"doomed\"]\nenv = { FLAKY_FAIL = \"1\" }\n[retry]\nmax_attempts = 2\nbackoff = { initial = \"50ms\", factor = 2.0, max = \"1s\", jitter = false }",
    );
    project.trigger(
        "api",
        "kind = \"http\"\n[routes.\"POST /greetings\"]\ntopic = \"greetings\"\n[routes.\"POST /doomed\"]\ntopic = \"doomed\"\n",
    );
    let up = project.up(Some(&nats.url()));
    let url = base(&up);
    let http = client();
    let nats_client = nats.client().await;
    let js = async_nats::jetstream::new(nats_client.clone());
    let mut results = Results::subscribe(&nats_client, "greeter").await;

    let response = http.post(format!("{url}/greetings")).header("content-type", "application/json").body(r#"{"name": "Ada"}"#).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let request_id = response.headers()["apigw-requestid"].to_str().unwrap().to_owned();
    let accepted: serde_json::Value = response.json().await.unwrap();
    let event_id = accepted["eventId"].as_str().unwrap().to_owned();
    assert_eq!(accepted["requestId"], request_id.as_str());
    // Stored before the answer: the event is in the stream now.
    let stored = stream_messages(&js, "SLUICE_EVENTS").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].subject.as_str(), "sluice.events.greetings");
    assert_eq!(header(&stored[0], "ce-id"), Some(event_id.as_str()));
    assert_eq!(header(&stored[0], "ce-type"), Some("sluice.http.request"));
    assert_eq!(header(&stored[0], "ce-source"), Some("sluice:http:api"));
    let data: serde_json::Value = serde_json::from_slice(&stored[0].payload).unwrap();
    assert_eq!(data["routeKey"], "POST /greetings");
    assert_eq!(data["body"], r#"{"name": "Ada"}"#);

    // Run once, with the body the caller sent.
    results.wait_for(1, Duration::from_secs(30)).await;
    results.drain(Duration::from_millis(500)).await;
    assert_eq!(results.received.len(), 1, "{:?}", results.received);
    assert_eq!(results.received[0].0, event_id);
    assert_eq!(results.received[0].1["message"], "Hello, Ada!");

    // A function that always fails: retried, then dead-lettered with the request's event.
    let response = http.post(format!("{url}/doomed")).body(r#"{"x": 1}"#).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let doomed_id = response.json::<serde_json::Value>().await.unwrap()["eventId"].as_str().unwrap().to_owned();
    wait_stream_count(&js, "SLUICE_DLQ", 1, Duration::from_secs(30)).await;
    let dlq = stream_messages(&js, "SLUICE_DLQ").await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(header(&dlq[0], "ce-id"), Some(doomed_id.as_str()));
    assert_eq!(header(&dlq[0], "sluice-function"), Some("doomed"));
    assert_eq!(header(&dlq[0], "sluice-attempts"), Some("2"));
}
