//! Only `sluice up` changes a stream: `publish`, `dlq list|stats|show|replay|purge` and
//! `triggers list` run from a folder without a sluice.toml (default settings) leave
//! SLUICE_EVENTS and SLUICE_DLQ at the replicas, max ages and duplicate window `up` set, on
//! a 3-node cluster (R3) and on one server. `up` also creates the payload store and KV
//! `sluice_state` with the same replicas; tools never create them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::cluster::*;
use common::*;

/// What `up` set from the project's sluice.toml.
struct Expected {
    replicas: usize,
}

const EVENTS_MAX_AGE: Duration = Duration::from_secs(3600);
const DLQ_MAX_AGE: Duration = Duration::from_secs(2 * 3600);
const DUPLICATE_WINDOW: Duration = Duration::from_secs(30);
const LOGS_MAX_AGE: Duration = Duration::from_secs(3 * 3600);
const LOGS_MAX_BYTES: i64 = 64 << 20;

/// A project whose sluice.toml sets every stream setting away from its default, with a
/// function that dead-letters every event at once.
fn project(replicas: usize) -> Project {
    let project = Project::new();
    let path = project.path().join("sluice.toml");
    let mut toml = std::fs::read_to_string(&path).unwrap();
    toml.push_str(&format!(
        "[bus]\nreplicas = {replicas}\nevents_max_age = \"1h\"\ndlq_max_age = \"2h\"\nduplicate_window = \"30s\"\nlogs_max_age = \"3h\"\nlogs_max_bytes = {LOGS_MAX_BYTES}\n"
    ));
    std::fs::write(&path, toml).unwrap();
    project.function(
        "worker",
        "flaky",
        "subscribe = [\"jobs\"]\n[retry]\nmax_attempts = 1\nbackoff = { initial = \"50ms\", jitter = false }",
    );
    project
}

async fn assert_settings(js: &jetstream::Context, expected: &Expected, after: &str) {
    for (name, max_age) in [("SLUICE_EVENTS", EVENTS_MAX_AGE), ("SLUICE_DLQ", DLQ_MAX_AGE)] {
        let config = stream_info(js, name, Duration::from_secs(30)).await.config;
        assert_eq!(config.num_replicas, expected.replicas, "{name}: replicas changed by {after}");
        assert_eq!(config.max_age, max_age, "{name}: max_age changed by {after}");
        assert_eq!(config.duplicate_window, DUPLICATE_WINDOW, "{name}: duplicate_window changed by {after}");
    }
    let logs = stream_info(js, "SLUICE_LOGS", Duration::from_secs(30)).await.config;
    assert_eq!(logs.num_replicas, expected.replicas, "SLUICE_LOGS: replicas changed by {after}");
    assert_eq!(logs.max_age, LOGS_MAX_AGE, "SLUICE_LOGS: max_age changed by {after}");
    assert_eq!(logs.max_bytes, LOGS_MAX_BYTES, "SLUICE_LOGS: max_bytes changed by {after}");
}

/// The streams behind the payload store and KV `sluice_state`, as `up` created them.
async fn assert_stores(js: &jetstream::Context, expected: &Expected) {
    for name in ["OBJ_sluice_payloads", "KV_sluice_state"] {
        let mut stream = js.get_stream(name).await.unwrap_or_else(|e| panic!("{name} not created by `sluice up`: {e}"));
        let config = stream.info().await.unwrap().config.clone();
        assert_eq!(config.num_replicas, expected.replicas, "{name}: replicas");
        assert_eq!(config.storage, jetstream::stream::StorageType::File, "{name}: storage");
    }
}

/// Runs every tool that talks to the bus from a folder with no sluice.toml, checking the
/// streams after each.
async fn tools_leave_the_streams(url: &str, js: &jetstream::Context, expected: &Expected) {
    assert_settings(js, expected, "`sluice up`").await;
    assert_stores(js, expected).await;
    // No sluice.toml here: a tool that wrongly applied its settings would set the defaults
    // (replicas 1, max age 7 days, duplicate window 2 minutes).
    let elsewhere = Project { dir: tempfile::tempdir().unwrap() };
    let tool = |args: &[&str]| {
        let mut full = vec!["--nats", url, "--json"];
        full.extend_from_slice(args);
        let out = elsewhere.sluice(&full);
        assert!(out.status.success(), "sluice {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or(serde_json::Value::Null)
    };

    tool(&["publish", "jobs", "--data", r#"{"fail":true}"#, "--id", "settings-poison-1"]);
    assert_settings(js, expected, "`sluice publish`").await;
    wait_stream_count(js, "SLUICE_DLQ", 1, Duration::from_secs(60)).await;

    let listed = tool(&["dlq", "list"]);
    assert_settings(js, expected, "`sluice dlq list`").await;
    let id = listed["entries"][0]["id"].as_u64().unwrap_or_else(|| panic!("no dead letter listed: {listed}")).to_string();

    tool(&["dlq", "stats"]);
    assert_settings(js, expected, "`sluice dlq stats`").await;

    tool(&["dlq", "show", &id]);
    assert_settings(js, expected, "`sluice dlq show`").await;

    tool(&["dlq", "replay", "--all"]);
    assert_settings(js, expected, "`sluice dlq replay --all`").await;
    // The replayed event fails again and is dead-lettered anew.
    wait_stream_count(js, "SLUICE_DLQ", 1, Duration::from_secs(60)).await;

    tool(&["dlq", "purge", "--all", "--yes"]);
    assert_settings(js, expected, "`sluice dlq purge --all`").await;

    tool(&["triggers", "list"]);
    assert_settings(js, expected, "`sluice triggers list`").await;

    tool(&["logs", "worker"]);
    assert_settings(js, expected, "`sluice logs`").await;
    tool(&["stats"]);
    assert_settings(js, expected, "`sluice stats`").await;
    tool(&["events", "trace", "settings-poison-1"]);
    assert_settings(js, expected, "`sluice events trace`").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_leave_r3_streams_on_a_cluster() {
    let started = Instant::now();
    let cluster = NatsCluster::start(3).await;
    let project = project(3);
    let urls = cluster.urls();
    let _up = project.up(Some(&urls));
    let js = jetstream::new(cluster.client().await);
    tools_leave_the_streams(&urls, &js, &Expected { replicas: 3 }).await;
    println!("cluster variant took {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_leave_the_streams_on_one_server() {
    let started = Instant::now();
    let nats = NatsServer::start();
    let project = project(1);
    let _up = project.up(Some(&nats.url()));
    let js = jetstream::new(nats.client().await);
    tools_leave_the_streams(&nats.url(), &js, &Expected { replicas: 1 }).await;
    println!("single-server variant took {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread")]
async fn only_up_creates_the_payload_store_and_trigger_state() {
    let nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    let url = nats.url();
    let project = project(1);
    let tool = |args: &[&str]| {
        let mut full = vec!["--nats", url.as_str()];
        full.extend_from_slice(args);
        let out = project.sluice(&full);
        assert!(out.status.success(), "sluice {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    };
    tool(&["publish", "jobs", "--data", "{}"]);
    tool(&["dlq", "list"]);
    let mut names = Vec::new();
    let mut listed = js.stream_names();
    while let Some(name) = futures::StreamExt::next(&mut listed).await {
        names.push(name.unwrap());
    }
    names.sort();
    assert_eq!(names, ["SLUICE_DLQ", "SLUICE_EVENTS", "SLUICE_LOGS"], "what the tools created");

    let _up = project.up(Some(&nats.url()));
    assert_stores(&js, &Expected { replicas: 1 }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_takes_sluice_subjects_is_named() {
    let nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    js.create_stream(jetstream::stream::Config { name: "MINE".into(), subjects: vec!["sluice.events.>".into(), "sluice.direct.>".into()], ..Default::default() })
        .await
        .unwrap();
    let out = Project::new().sluice(&["--nats", &nats.url(), "publish", "jobs", "--data", "{}"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stream MINE already takes subjects of SLUICE_EVENTS (sluice.events.>, sluice.direct.>)")
            && stderr.contains("remove that stream or narrow its subjects"),
        "{stderr}"
    );
    let mut mine = js.get_stream("MINE").await.unwrap();
    assert_eq!(mine.info().await.unwrap().state.messages, 0, "the event went to the other stream");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_without_jetstream_is_named() {
    // The server has JetStream; the account a connection without credentials lands in
    // does not.
    let nats = NatsServer::start_with_config(Some(
        "accounts {\n  WITH: { jetstream: enabled, users: [{ user: with, password: with }] }\n  \
         WITHOUT: { users: [{ user: without, password: without }] }\n}\nno_auth_user: without\n",
    ));
    let out = Project::new().sluice(&["--nats", &nats.url(), "dlq", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("JetStream is not enabled for the NATS account of this connection")
            && stderr.contains("enable `jetstream` for that account"),
        "{stderr}"
    );
}

/// Processes that start together on a fresh server race to create the streams; the losers
/// take the winner's streams, whatever settings they would have created them with. Ten
/// rounds of sixteen processes, half with other stream settings, each on a fresh server
/// (a round does not always have a loser).
#[tokio::test(flavor = "multi_thread")]
async fn processes_that_race_to_create_the_streams_all_go_on() {
    let plain = Project::new();
    let other = project(1);
    for round in 0..10 {
        let nats = NatsServer::start();
        let url = nats.url();
        let children: Vec<_> = (0..16)
            .map(|i| {
                (if i % 2 == 0 { &plain } else { &other })
                    .command(&["--nats", &url, "publish", "jobs", "--data", "{}"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let js = jetstream::new(nats.client().await);
        wait_stream_count(&js, "SLUICE_EVENTS", 16, Duration::from_secs(10)).await;
    }
}
