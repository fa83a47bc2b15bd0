//! `sluice up --roles`: a node with only `workers` runs the functions and nothing else; a
//! node with only `triggers,gateway` runs the cron trigger and the HTTP listener but no
//! function, and reaches the functions on the worker node over NATS. Guards against roles
//! that are ignored (every node running everything) or that cut a node off from the others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn workers_and_triggers_run_on_different_nodes() {
    let server = NatsServer::start();
    let project = Project::new();
    project.function("hello", "hello", "subscribe = [\"ticks\"]\n");
    project.trigger("tick", "kind = \"cron\"\nschedule = \"* * * * * *\"\ntopic = \"ticks\"\n");
    project.trigger("api", "kind = \"http\"\n[routes.\"GET /hello/{name}\"]\nfunction = \"hello\"\n");
    let url = server.url();

    let mut workers = project.command(&["--nats", &url, "up", "--roles", "workers"]);
    workers.env("SLUICE_HTTP_LISTEN", "off");
    let workers = project.spawn_up(workers, "workers", "sluice up --roles workers");
    let front = project.command(&["--nats", &url, "up", "--roles", "triggers,gateway"]);
    let front = project.spawn_up(front, "front", "sluice up --roles triggers,gateway");
    let http = front.http.clone().expect("the gateway node listens for HTTP");

    // The cron trigger on the front node feeds the function on the worker node.
    let client = server.client().await;
    let mut results = Results::subscribe(&client, "hello").await;
    results.wait_for(2, Duration::from_secs(30)).await;

    // HTTP on the front node is answered by the worker node over NATS.
    let started = Instant::now();
    let body = loop {
        let response = reqwest::get(format!("{http}/hello/Ada")).await.unwrap();
        if response.status() == 200 {
            break response.text().await.unwrap();
        }
        // 503 until the worker's synchronous server has subscribed.
        assert_eq!(response.status(), 503, "{}", response.text().await.unwrap());
        assert!(started.elapsed() < Duration::from_secs(30), "the gateway never reached the worker node");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains("Hello, Ada!"), "{body}");

    let (workers_log, front_log) = (workers.log(), front.log());
    assert!(workers_log.contains("Dispatcher started."), "{workers_log}");
    assert!(!front_log.contains("Dispatcher started."), "the triggers,gateway node ran a function:\n{front_log}");
    assert!(!workers_log.contains("HTTP listener started"), "the workers node listened for HTTP:\n{workers_log}");
    assert!(front_log.contains("HTTP listener started"), "{front_log}");
    // Only the front node runs the cron trigger.
    assert!(front_log.contains("Tick fired."), "{front_log}");
    assert!(!workers_log.contains("Tick fired."), "the workers node ran the cron trigger:\n{workers_log}");
}

#[test]
fn an_unknown_role_is_refused() {
    let project = Project::new();
    let output = project.sluice(&["--nats", "nats://127.0.0.1:1", "up", "--roles", "workers,cooks"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cooks") && stderr.contains("workers") && stderr.contains("gateway"), "{stderr}");
}
