//! Graceful shutdown drains open HTTP requests: a request whose function is still running when
//! `sluice up` gets SIGTERM is answered with the function's response (not cut off, not 503),
//! and new connections are refused once the listener stopped. The trigger's health follows:
//! healthy with its address while served, stopped after.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::http::{base, client, echo_function};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_open_request_is_answered_during_shutdown() {
    let nats = NatsServer::start();
    let project = Project::new();
    echo_function(&project, "echo", "timeout = \"10s\"");
    project.trigger("api", "kind = \"http\"\n[routes.\"GET /slow\"]\nfunction = \"echo\"\n");
    let mut up = project.up(Some(&nats.url()));
    let url = base(&up);
    let listed = wait_for_trigger_status(&project, &nats.url(), "healthy").await;
    assert!(listed["message"].as_str().unwrap().contains(&url), "{listed}");

    let http = client();
    let pending = tokio::spawn({
        let (http, url) = (http.clone(), url.clone());
        async move { http.get(format!("{url}/slow?sleep_ms=1500")).send().await }
    });
    // The node's own metrics say when the function is running.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
        if metrics.lines().any(|l| l == "sluice_invocations_in_flight{function=\"echo\"} 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the request never started running:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    up.signal(libc::SIGTERM);

    let response = pending.await.unwrap().expect("the open request was cut off");
    assert_eq!(response.status(), 200, "{}", up.log());
    let event: serde_json::Value = response.json().await.unwrap();
    assert_eq!(event["queryStringParameters"]["sleep_ms"], "1500");
    let status = up.wait_exit(Duration::from_secs(30)).expect("sluice up did not stop");
    assert!(status.success(), "{}", up.log());
    assert!(up.log().contains("HTTP listener stopped"), "{}", up.log());
    assert!(http.get(format!("{url}/slow")).send().await.is_err(), "the listener still accepts connections after shutdown");
    wait_for_trigger_status(&project, &nats.url(), "stopped").await;
}
