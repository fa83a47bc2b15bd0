//! A component is compiled once: `sluice build` precompiles it into the cache, a `sluice up`
//! that finds no precompiled artifact says that it compiles (and how long it took), and the
//! next start maps the cached one without a compile line. Guards the precompiled-artifact
//! cache of the `component` runtime, keyed by content and engine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::component::probe_source;
use common::*;

const COMPILING: &str = "Compiling the component";

#[tokio::test(flavor = "multi_thread")]
async fn a_second_start_maps_the_precompiled_component() {
    let nats = NatsServer::start();
    let project = Project::new();
    // A cache of its own, so what is compiled here is seen here only.
    std::fs::write(project.path().join("sluice.toml"), "[runtime]\ncache_dir = \"cache\"\n").unwrap();
    project.component_function("probe", "handler = \"app.lambda_handler\"\nsubscribe = [\"probe\"]", &[("app.py", &probe_source())]);
    let built = project.build(&["probe"]);
    assert!(built.contains("precompiled into"), "{built}");
    let cached = |dir: &std::path::Path| std::fs::read_dir(dir).map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "cwasm")).count()).unwrap_or(0);
    assert_eq!(cached(&project.path().join("cache")), 1, "{built}");
    let again = project.build(&["probe"]);
    assert!(again.contains("probe: up to date") && again.contains("precompiled in"), "{again}");

    // Started without the precompiled artifact: it says it compiles, and how long it took.
    std::fs::remove_dir_all(project.path().join("cache")).unwrap();
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = Results::subscribe(&client, "probe").await;
    let mut first = project.up(Some(&nats.url()));
    first.wait_log("Dispatcher started.", Duration::from_secs(120));
    let log = first.log();
    assert!(log.contains(COMPILING) && log.contains("Compiled the component."), "{log}");
    publish_event(&js, "sluice.events.probe", "first", r#"{"n":1}"#).await.await.unwrap();
    results.wait_for(1, Duration::from_secs(30)).await;
    assert!(first.terminate().success(), "{}", first.log());
    assert_eq!(cached(&project.path().join("cache")), 1);
    let inode = || {
        use std::os::unix::fs::MetadataExt as _;
        let file = std::fs::read_dir(project.path().join("cache")).unwrap().flatten().find(|e| e.path().extension().is_some_and(|x| x == "cwasm")).unwrap();
        file.metadata().unwrap().ino()
    };
    let compiled = inode();

    // The second start maps it: no compile line, and the function answers.
    let second = project.up(Some(&nats.url()));
    second.wait_log("Dispatcher started.", Duration::from_secs(60));
    publish_event(&js, "sluice.events.probe", "second", r#"{"n":2}"#).await.await.unwrap();
    results.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(results.received[1].1, serde_json::json!({"echo": {"n": 2}}));
    let log = second.log();
    assert!(!log.contains(COMPILING), "the second start compiled again:\n{log}");
    // A compile would have stored its result anew (a new file replaces the old one).
    assert_eq!(inode(), compiled, "the second start rewrote the precompiled artifact");
}
