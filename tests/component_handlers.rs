//! The same unchanged handler files answer alike as components and as Lambda processes:
//! the Python and Node.js examples (byte for byte the files in `functions/`) give identical
//! responses under `runtime = "component"` and under `python3.11` / `nodejs20.x`, through
//! publish → dispatcher → results. Guards the adapters' event and response mapping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::lambda::example_source;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_same_handlers_answer_alike_in_both_runtimes() {
    let nats = NatsServer::start();
    let project = Project::new();
    let python = example_source("hello-python", "app.py");
    let node = example_source("hello-node", "index.js");
    let subscribe = "subscribe = [\"greetings\"]\nconcurrency = 2";
    project.lambda_function("py-lambda", &format!("runtime = \"python3.11\"\nhandler = \"app.lambda_handler\"\n{subscribe}"), &[("app.py", &python)]);
    project.component_function("py-component", &format!("handler = \"app.lambda_handler\"\n{subscribe}"), &[("app.py", &python)]);
    project.lambda_function("node-lambda", &format!("runtime = \"nodejs20.x\"\nhandler = \"index.handler\"\nmemory_mb = 256\n{subscribe}"), &[("index.js", &node)]);
    project.component_function("node-component", &format!("handler = \"index.handler\"\n{subscribe}"), &[("index.js", &node)]);
    let built = project.build(&[]);
    assert!(built.contains("componentize-py made") && built.contains("componentize-js made"), "{built}");

    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let functions = ["py-lambda", "py-component", "node-lambda", "node-component"];
    let mut results = BTreeMap::new();
    for function in functions {
        results.insert(function, Results::subscribe(&client, function).await);
    }
    let events = [r#"{"name":"Alice"}"#, r#"{}"#, r#"{"name":"Zoë \"Z\" Ünal","extra":[1,2.5,null]}"#];
    for (i, data) in events.iter().enumerate() {
        publish_event(&js, "sluice.events.greetings", &format!("greeting-{i}"), data).await.await.unwrap();
    }
    for (function, received) in &mut results {
        received.wait_for(events.len(), Duration::from_secs(60)).await;
        assert_eq!(received.received.len(), events.len(), "{function}:\n{}", up.log());
    }
    // Results arrive in any order: compare them by the event that caused them.
    let by_event = |function: &str| {
        let mut answers: Vec<String> = results[function].received.iter().map(|(_, body)| body.to_string()).collect();
        answers.sort();
        answers
    };
    assert_eq!(by_event("py-component"), by_event("py-lambda"));
    assert_eq!(by_event("node-component"), by_event("node-lambda"));
    assert!(by_event("py-component").iter().any(|a| a.contains("Hello, Alice!")), "{:?}", by_event("py-component"));
    assert!(by_event("node-component").iter().any(|a| a.contains("Hello, Zoë")), "{:?}", by_event("node-component"));
}
