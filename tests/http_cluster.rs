//! Synchronous calls cross nodes: the gateway in one `sluice up` reaches a function whose only
//! worker runs in another `sluice up` on the same NATS (request/reply to the function's queue
//! group); with no worker anywhere the answer is 503. Guards the gateway against calling
//! only local functions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use common::http::{base, client, echo_function, request_id_of};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_node_calls_a_function_on_another_node() {
    let nats = NatsServer::start();
    let gateway_project = Project::new();
    gateway_project.trigger("api", "kind = \"http\"\n[routes.\"GET /remote/{id}\"]\nfunction = \"remote\"\n");
    let gateway = gateway_project.up(Some(&nats.url()));
    assert!(gateway.log().contains("not in this project"), "the gateway says the function is served elsewhere:\n{}", gateway.log());
    let url = base(&gateway);
    let http = client();

    // No worker serves it yet: 503 naming the request.
    let response = http.get(format!("{url}/remote/1")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    request_id_of(&response.text().await.unwrap());

    let worker_project = Project::new();
    echo_function(&worker_project, "remote", "");
    let worker = worker_project.up(Some(&nats.url()));
    assert!(worker.http.is_some());
    // The worker's queue subscription reaches the gateway's server as soon as it is up; allow
    // for the interest to propagate.
    let deadline = Instant::now() + Duration::from_secs(10);
    let response = loop {
        let response = http.get(format!("{url}/remote/42")).send().await.unwrap();
        if response.status() != 503 || Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["apigw-requestid"].to_str().unwrap().to_owned();
    let event: serde_json::Value = response.json().await.unwrap();
    assert_eq!(event["pathParameters"]["id"], "42");
    assert!(worker.log().contains(&request_id), "the worker node ran it");
    assert!(!gateway.log().contains("Invocation succeeded"), "the gateway node has no worker of its own");
}

/// A node that runs the function itself answers its own gateway's calls in process, and when
/// its slots are busy the calls wait for one there; another node serving the same function
/// gets none of them. Guards the local path (without it the queue group would send about
/// half of them to the other node) and the local queue (overflow sent to the queue group
/// would partly reach the other node).
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_node_runs_its_own_functions_first() {
    let nats = NatsServer::start();
    let route = "kind = \"http\"\n[routes.\"GET /shared/{id}\"]\nfunction = \"shared\"\n";
    let here_project = Project::new();
    // One slot: concurrent calls queue for it.
    echo_function(&here_project, "shared", "concurrency = 1");
    here_project.trigger("api", route);
    let here = here_project.up(Some(&nats.url()));
    let other_project = Project::new();
    echo_function(&other_project, "shared", "");
    let other = other_project.up(Some(&nats.url()));
    assert!(other.http.is_some(), "the other node is up:\n{}", other.log());
    let url = base(&here);
    let http = client();

    let mut ids = Vec::new();
    for n in 0..20 {
        let response = http.get(format!("{url}/shared/{n}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "request {n}");
        ids.push(response.headers()["apigw-requestid"].to_str().unwrap().to_owned());
    }
    // Four at once, each holding the node's only slot for a while.
    let calls = (0..4).map(|n| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move { http.get(format!("{url}/shared/busy{n}?sleep_ms=150")).send().await.unwrap() })
    });
    for response in futures::future::join_all(calls).await {
        let response = response.unwrap();
        assert_eq!(response.status(), 200, "a call waits for the busy slot");
        ids.push(response.headers()["apigw-requestid"].to_str().unwrap().to_owned());
    }
    let (here_log, other_log) = (here.log(), other.log());
    for id in &ids {
        assert!(here_log.contains(id.as_str()), "request {id} ran on the gateway's own node:\n{here_log}");
        assert!(!other_log.contains(id.as_str()), "request {id} also reached the other node:\n{other_log}");
    }
    assert!(!other_log.contains("Invocation succeeded"), "the other node ran nothing:\n{other_log}");
}
