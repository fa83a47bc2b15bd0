//! `sluice deploy` into a 3-node NATS cluster's registry, run by 3 `sluice up --registry`
//! nodes that have no functions/ folder: a new version deployed while events flow takes
//! over on every node without losing an event, each event is answered wholly by one version
//! (never by a half-loaded one), `rollback` returns to the old behaviour, `functions list`
//! shows the cluster's versions, and `undeploy` stops the function while its consumer keeps
//! the events that arrive meanwhile for the next deploy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;

const EVENTS: usize = 3_000;

/// Writes function `greeter` into `project`: version 1 runs the `hello` example (answers
/// `{"message": "Hello, world!", ...}`), version 2 the `flaky` example echoing its event
/// (answers `{}`). The module is copied into the function's folder, so it is deployed.
fn write_greeter(project: &Path, version: u32) {
    let dir = project.join("functions").join("greeter");
    std::fs::create_dir_all(&dir).unwrap();
    let (module, env) = match version {
        1 => ("hello", ""),
        _ => ("flaky", "env = { FLAKY_ECHO = \"1\" }\n"),
    };
    std::fs::copy(example_module(module), dir.join("greeter.wasm")).unwrap();
    let toml = format!(
        "name = \"greeter\"\nruntime = \"wasm\"\nmodule = \"greeter.wasm\"\nsubscribe = [\"jobs\"]\non_success = \"done\"\n\
         timeout = \"5s\"\nconcurrency = 16\n{env}[retry]\nmax_attempts = 20\nbackoff = {{ initial = \"100ms\", factor = 2.0, max = \"1s\" }}\n"
    );
    std::fs::write(dir.join("function.toml"), toml).unwrap();
}

/// A project with only `sluice.toml`: R3 streams (and the shared module cache).
fn empty_project() -> Project {
    let project = Project::new();
    project.settings("[bus]\nreplicas = 3\n");
    project
}

/// Which version answered: 1 greets, 2 echoes the empty event.
fn version_of(body: &[u8]) -> u32 {
    let answer: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("an answer that is not JSON ({e}): {:?}", String::from_utf8_lossy(body)));
    if answer.get("message").and_then(|m| m.as_str()) == Some("Hello, world!") {
        1
    } else if answer == serde_json::json!({}) {
        2
    } else {
        panic!("an answer of neither version: {answer}")
    }
}

fn ok(output: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{what} failed ({}):\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Waits until every node logged `message` at least `count` times.
fn wait_all_logged(nodes: &[Up], message: &str, count: usize, limit: Duration) {
    let started = Instant::now();
    for node in nodes {
        while node.log().matches(message).count() < count {
            if started.elapsed() > limit {
                // Without the line per invocation, so the node's own doings show.
                let log = node.log();
                let doings: Vec<&str> = log.lines().filter(|l| !l.contains("Invocation succeeded.") && !l.contains("greeting ")).collect();
                panic!("a node did not log {message:?} {count} time(s) within {limit:?}; its log:\n{}", tail(&doings.join("\n"), 40));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_while_events_flow_then_roll_back() {
    let started = Instant::now();
    let cluster = NatsCluster::start(3).await;
    let urls = cluster.urls();
    let source = empty_project();
    write_greeter(source.path(), 1);
    let deploy = |project: &Project| ok(&project.sluice(&["--nats", &urls, "deploy"]), "sluice deploy");
    let first = deploy(&source);
    assert!(first.contains("greeter") && first.contains("deployed"), "{first}");
    // Deploying the same files again stores nothing new.
    let again = deploy(&source);
    assert!(again.contains("unchanged"), "{again}");

    let projects: Vec<Project> = (0..3).map(|_| empty_project()).collect();
    let nodes: Vec<Up> = projects
        .iter()
        .map(|project| {
            let mut command = project.command(&["--nats", &urls, "up", "--registry"]);
            command.env_remove("SLUICE_HTTP_LISTEN").env("SLUICE_HTTP_LISTEN", "off");
            project.spawn_up(command, "node", "sluice up --registry")
        })
        .collect();
    wait_all_logged(&nodes, "Started the deployed function.", 1, Duration::from_secs(60));

    let client = cluster.client().await;
    let js = chaos_jetstream(client.clone());
    let mut finished = Finished::observe(&js, "done").await;
    let load = Load::start(js.clone(), "sluice.events.jobs", "job", EVENTS, 300);
    load.wait_accepted(EVENTS / 3, Duration::from_secs(60)).await;

    // Version 2 while events flow.
    write_greeter(source.path(), 2);
    let second = deploy(&source);
    assert!(second.contains("deployed"), "{second}");
    let deployed_at = load.accepted();
    wait_all_logged(&nodes, "Switched to the deployed version", 1, Duration::from_secs(30));
    let switched_at = load.accepted();
    // The old version finishes what it took, including its pull in progress (at most 2 s).
    wait_all_logged(&nodes, "Dispatcher stopped.", 1, Duration::from_secs(30));
    let old_stopped_at = load.accepted();
    let report = load.finish(Duration::from_secs(120)).await;
    assert!(old_stopped_at < EVENTS, "every node switched while events were still published ({deployed_at} accepted at the deploy)");
    let expected: BTreeSet<String> = report.accepted.iter().cloned().collect();
    assert_eq!(expected.len(), EVENTS);
    let logs = || nodes.iter().map(|n| tail(&n.log(), 30)).collect::<Vec<_>>().join("\n----\n");
    finished.wait_all(&expected, Duration::from_secs(120), logs).await;
    let mut by_version = [0usize; 3];
    for (_, body) in &finished.bodies {
        by_version[version_of(body) as usize] += 1;
    }
    assert!(by_version[1] > 0 && by_version[2] > 0, "both versions answered during the switch: {by_version:?}");
    // Events published after the old version stopped everywhere are answered by version 2 only.
    let late: BTreeSet<String> = report.accepted[old_stopped_at..].iter().cloned().collect();
    for (cause, body) in &finished.bodies {
        if late.contains(cause) {
            assert_eq!(version_of(body), 2, "event {cause}, published after the switch, was answered by version 1");
        }
    }
    let duplicates: Vec<(String, u32)> = finished.ids.iter().filter(|(_, n)| **n > 1).map(|(id, n)| (id.clone(), *n)).collect();

    // `functions list` shows the cluster's versions.
    let listed = ok(&source.sluice(&["--nats", &urls, "--json", "functions", "list"]), "functions list");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let greeter = &listed.as_array().unwrap()[0];
    assert_eq!(greeter["name"], "greeter");
    assert_eq!(greeter["version"], 2);
    assert_eq!(greeter["versions"], serde_json::json!([1, 2]));
    assert_eq!(greeter["runtime"], "wasm");
    assert!(greeter["size"].as_u64().unwrap() > 1000 && greeter["deployed_by"].as_str().unwrap().contains('@'), "{greeter}");

    // Rollback: version 1 answers again.
    let rolled = ok(&source.sluice(&["--nats", &urls, "rollback", "greeter"]), "rollback");
    assert!(rolled.contains("now version 1"), "{rolled}");
    wait_all_logged(&nodes, "Switched to the deployed version", 2, Duration::from_secs(30));
    wait_all_logged(&nodes, "Dispatcher stopped.", 2, Duration::from_secs(30));
    let probes: BTreeSet<String> = (0..20).map(|i| format!("after-rollback-{i}")).collect();
    for id in &probes {
        publish_until_acked(&js, "sluice.events.jobs", id, Duration::from_secs(30)).await;
    }
    finished.wait_all(&probes, Duration::from_secs(60), logs).await;
    for (cause, body) in &finished.bodies {
        if probes.contains(cause) {
            assert_eq!(version_of(body), 1, "event {cause} after the rollback was answered by version 2");
        }
    }

    // Undeploy: the nodes stop it; its consumer keeps what arrives for the next deploy.
    ok(&source.sluice(&["--nats", &urls, "undeploy", "greeter"]), "undeploy");
    wait_all_logged(&nodes, "Stopped the undeployed function", 1, Duration::from_secs(30));
    let waiting: BTreeSet<String> = (0..10).map(|i| format!("while-undeployed-{i}")).collect();
    for id in &waiting {
        publish_until_acked(&js, "sluice.events.jobs", id, Duration::from_secs(30)).await;
    }
    let listed = ok(&source.sluice(&["--nats", &urls, "--json", "functions", "list"]), "functions list");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&listed).unwrap(), serde_json::json!([]), "nothing is deployed after undeploy");
    deploy(&source);
    finished.wait_all(&waiting, Duration::from_secs(60), logs).await;

    println!(
        "deployed version 2 after {deployed_at} of {EVENTS} events, every node switched by {switched_at}, the old version stopped by {old_stopped_at}; answers: {} by version 1, {} by version 2; \
         {} events finished more than once {:?}; test took {:.1} s",
        by_version[1],
        by_version[2],
        duplicates.len(),
        duplicates.iter().take(10).collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );
}
