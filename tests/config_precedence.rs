//! Which NATS server a command uses: `--nats` beats `SLUICE_NATS_URL`, which beats `[nats] url`
//! in sluice.toml, for a one-shot tool (`sluice publish`) and for `sluice up`; a list of seed
//! URLs whose first is unreachable still connects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::process::{Command, Output, Stdio};

use common::*;

/// Nothing listens on port 1 of the loopback interface.
const UNREACHABLE: &str = "nats://127.0.0.1:1";

/// A project whose sluice.toml names `toml_url` (a string, or a TOML list) in `[nats] url`.
fn project_with(toml_url: &str) -> Project {
    let project = Project::new();
    let path = project.path().join("sluice.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("\n[nats]\nurl = {toml_url}\n"));
    std::fs::write(path, text).unwrap();
    project
}

fn quoted(url: &str) -> String {
    format!("{url:?}")
}

/// `sluice [--nats FLAG] publish greetings --id ID` with `SLUICE_NATS_URL` set to `env` (or unset).
fn publish(project: &Project, flag: Option<&str>, env: Option<&str>, id: &str) -> Output {
    let mut command = Command::new(SLUICE);
    command.arg("--dir").arg(project.path());
    if let Some(url) = flag {
        command.args(["--nats", url]);
    }
    command.args(["publish", "greetings", "--data", "{}", "--id", id]);
    match env {
        Some(url) => command.env("SLUICE_NATS_URL", url),
        None => command.env_remove("SLUICE_NATS_URL"),
    };
    command.stdin(Stdio::null()).output().unwrap()
}

/// The event ids stored in `SLUICE_EVENTS` on `server`.
async fn stored_ids(server: &NatsServer) -> Vec<String> {
    let js = async_nats::jetstream::new(server.client().await);
    stream_messages(&js, "SLUICE_EVENTS").await.iter().filter_map(|m| header(m, "ce-id").map(str::to_owned)).collect()
}

/// Starts `sluice [--nats FLAG] up` with `SLUICE_NATS_URL` set to `env` (or unset).
fn up(project: &Project, flag: Option<&str>, env: Option<&str>) -> Up {
    // `spawn_up` clears SLUICE_NATS_URL for the process it starts; `env` sets it again for
    // the sluice it executes.
    let mut command = Command::new("env");
    if let Some(url) = env {
        command.arg(format!("SLUICE_NATS_URL={url}"));
    }
    command.arg(SLUICE).arg("--dir").arg(project.path());
    if let Some(url) = flag {
        command.args(["--nats", url]);
    }
    command.arg("up");
    project.spawn_up(command, "up", "sluice up")
}

/// Whether function `function`'s consumer exists on `server` (`up` creates it at start).
async fn has_consumer(server: &NatsServer, function: &str) -> bool {
    let js = async_nats::jetstream::new(server.client().await);
    match js.get_stream("SLUICE_EVENTS").await {
        Ok(stream) => stream.consumer_info(function).await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn flag_beats_environment_beats_sluice_toml() {
    let a = NatsServer::start();
    let b = NatsServer::start();

    // A tool: sluice.toml alone.
    let project = project_with(&quoted(&a.url()));
    let out = publish(&project, None, None, "toml-only");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stored_ids(&a).await, ["toml-only"], "[nats] url is used when nothing overrides it");

    // The environment beats sluice.toml.
    let project = project_with(&quoted(&b.url()));
    let out = publish(&project, None, Some(&a.url()), "env-wins");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stored_ids(&a).await, ["toml-only", "env-wins"], "SLUICE_NATS_URL beats [nats] url");
    assert!(stored_ids(&b).await.is_empty(), "the server of [nats] url got nothing");

    // The flag beats both.
    let project = project_with(&quoted(UNREACHABLE));
    let out = publish(&project, Some(&a.url()), Some(&b.url()), "flag-wins");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stored_ids(&a).await, ["toml-only", "env-wins", "flag-wins"], "--nats beats SLUICE_NATS_URL");
    assert!(stored_ids(&b).await.is_empty(), "the server of SLUICE_NATS_URL got nothing");

    // Seed lists: the first seed is unreachable, the second is A.
    let seeds = format!("{UNREACHABLE},{}", a.url());
    let out = publish(&project, Some(&seeds), None, "flag-seeds");
    assert!(out.status.success(), "--nats {seeds}: {}", String::from_utf8_lossy(&out.stderr));
    let out = publish(&project, None, Some(&seeds), "env-seeds");
    assert!(out.status.success(), "SLUICE_NATS_URL={seeds}: {}", String::from_utf8_lossy(&out.stderr));
    let project = project_with(&format!("[{:?}, {:?}]", UNREACHABLE, a.url()));
    let out = publish(&project, None, None, "toml-seeds");
    assert!(out.status.success(), "[nats] url list: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stored_ids(&a).await,
        ["toml-only", "env-wins", "flag-wins", "flag-seeds", "env-seeds", "toml-seeds"],
        "every seed list reached A"
    );
    assert!(stored_ids(&b).await.is_empty());

    // `sluice up`: the same order. Each case has its own function, so its own consumer.
    let project = project_with(&quoted(&a.url()));
    project.function("up-toml", "hello", "subscribe = [\"greetings\"]");
    drop(up(&project, None, None));
    assert!(has_consumer(&a, "up-toml").await, "`up` used [nats] url");

    let project = project_with(&quoted(&b.url()));
    project.function("up-env", "hello", "subscribe = [\"greetings\"]");
    drop(up(&project, None, Some(&a.url())));
    assert!(has_consumer(&a, "up-env").await, "`up` used SLUICE_NATS_URL");
    assert!(!has_consumer(&b, "up-env").await, "`up` did not use [nats] url over SLUICE_NATS_URL");

    let project = project_with(&quoted(UNREACHABLE));
    project.function("up-flag", "hello", "subscribe = [\"greetings\"]");
    drop(up(&project, Some(&a.url()), Some(&b.url())));
    assert!(has_consumer(&a, "up-flag").await, "`up` used --nats");
    assert!(!has_consumer(&b, "up-flag").await, "`up` did not use SLUICE_NATS_URL over --nats");

    let project = project_with(&quoted(UNREACHABLE));
    project.function("up-seeds", "hello", "subscribe = [\"greetings\"]");
    drop(up(&project, Some(&seeds), None));
    assert!(has_consumer(&a, "up-seeds").await, "`up` connected through the seed list");
}
