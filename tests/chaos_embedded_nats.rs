//! The embedded NATS server is supervised: killed with SIGKILL under load, `sluice up` logs
//! its death and restarts it on the same port and store; `publish` works again, no accepted
//! event is lost, and `.sluice/nats.json` names the new server. A server that cannot come
//! back stops `up` with the reason, after restarts that back off; one that ignores SIGTERM is
//! killed after the grace.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use common::*;

fn state(project: &Project) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(project.path().join(".sluice/nats.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_embedded_server_is_restarted_and_nothing_is_lost() {
    let project = Project::new();
    project.function("worker", "hello", "subscribe = [\"jobs\"]\nconcurrency = 8");
    let up = project.up(None);
    let first = state(&project);
    let url = first["url"].as_str().unwrap().to_owned();
    let server_pid = first["pid"].as_u64().unwrap() as i32;

    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    for i in 0..300 {
        publish_event(&js, "sluice.events.jobs", &format!("before-{i}"), r#"{"name":"x"}"#).await.await.unwrap();
    }
    unsafe {
        libc::kill(server_pid, libc::SIGKILL);
    }
    up.wait_log("The embedded NATS server died", Duration::from_secs(10));
    up.wait_log("Started the embedded NATS server again", Duration::from_secs(30));
    let log = up.log();
    assert!(log.contains("signal: 9"), "the exit status is logged: {log}");
    up.wait_log("Reconnected to NATS", Duration::from_secs(30));

    // The new server is recorded, on the same URL, and the old one was reaped (no zombie).
    let second = state(&project);
    assert_eq!(second["url"], first["url"], "same port");
    assert_ne!(second["pid"], first["pid"], "a new process");
    let stat = std::fs::read_to_string(format!("/proc/{server_pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || !stat.contains(") Z "), "the dead server was reaped: {stat}");

    // Tools find it again and publishing works.
    let started = Instant::now();
    loop {
        let out = project.sluice(&["publish", "jobs", "--id", "after-cli", "--data", r#"{"name":"y"}"#]);
        if out.status.success() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "publish after the restart: {}", String::from_utf8_lossy(&out.stderr));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    for i in 0..100 {
        publish_event(&js, "sluice.events.jobs", &format!("after-{i}"), r#"{"name":"z"}"#).await.await.unwrap();
    }

    // Every accepted event was stored and acknowledged by the function (it never fails,
    // and nothing went to the dead-letter stream).
    assert_eq!(stream_count(&js, "SLUICE_EVENTS").await, 401, "every acknowledged publish survived the kill");
    wait_idle(&js, "worker", Duration::from_secs(60)).await;
    let stream = js.get_stream("SLUICE_EVENTS").await.unwrap();
    let consumer = stream.consumer_info("worker").await.unwrap();
    assert_eq!(consumer.ack_floor.stream_sequence, 401, "every event acknowledged: {consumer:?}");
    assert_eq!(stream_count(&js, "SLUICE_DLQ").await, 0);
}

#[test]
fn a_server_that_cannot_come_back_stops_up_with_the_reason() {
    let project = Project::new();
    project.function("worker", "hello", "subscribe = [\"jobs\"]");
    // A copy of nats-server that the test can break once it runs.
    let binary = project.path().join("nats-server");
    std::fs::copy(nats_server_binary_path(), &binary).unwrap();
    let mut up = project.up_with_env(None, &[("SLUICE_NATS_SERVER", binary.to_str().unwrap()), ("SLUICE_LOG_FORMAT", "json")]);
    let server_pid = state(&project)["pid"].as_u64().unwrap() as i32;

    std::fs::remove_file(&binary).unwrap();
    std::fs::write(&binary, "#!/bin/sh\necho 'cannot start: broken on purpose' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    unsafe {
        libc::kill(server_pid, libc::SIGKILL);
    }
    // Restarts back off (0.2 s doubling) and give up after 5 within a minute.
    let status = up.wait_exit(Duration::from_secs(60)).unwrap_or_else(|| panic!("`up` hung without its server:\n{}", up.log()));
    let log = up.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("Cannot start the embedded NATS server again"), "{log}");
    assert!(log.contains("was not started again"), "the reason is given: {log}");
    assert!(log.contains("broken on purpose") || log.contains("exit status: 3"), "the cause is shown: {log}");

    // Five tries, each after twice the delay of the one before it (0.2 s first), measured
    // from the log's timestamps.
    let died = up.log_lines("The embedded NATS server died; starting it again on the same port and store.");
    let tries = up.log_lines("Cannot start the embedded NATS server again; retrying.");
    assert_eq!(died.len(), 1, "{log}");
    assert_eq!(tries.len(), 5, "{log}");
    let mut previous = logged_at(&died[0]);
    for (n, attempt) in tries.iter().enumerate() {
        assert_eq!(attempt["attempt"], n + 1, "{log}");
        let gap = (logged_at(attempt) - previous).num_milliseconds();
        let delay = 200 << n;
        assert!(gap >= delay * 9 / 10, "try {} came {gap} ms after the one before, not after {delay} ms: {log}", n + 1);
        previous = logged_at(attempt);
    }
}

/// A server that does not stop on SIGTERM (here a wrapper that ignores it and keeps the real
/// server running) is killed 10 s later: a stopping `up` never hangs on its server.
#[test]
fn a_server_that_ignores_sigterm_is_killed_after_the_grace() {
    let project = Project::new();
    project.function("worker", "hello", "subscribe = [\"jobs\"]");
    let real = nats_server_binary_path();
    let real_pid = project.path().join("real.pid");
    let wrapper = project.path().join("stubborn-nats-server");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then exec '{real}' --version; fi\ntrap '' TERM\n'{real}' \"$@\" &\necho $! > '{pid}'\nwait $!\n",
        real = real.display(),
        pid = real_pid.display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut up = project.up_with_env(None, &[("SLUICE_NATS_SERVER", wrapper.to_str().unwrap())]);

    let asked = Instant::now();
    unsafe {
        libc::kill(up.pid() as i32, libc::SIGTERM);
    }
    let status = up.wait_exit(Duration::from_secs(40));
    let took = asked.elapsed();
    // The real server outlives its killed wrapper: stop it here.
    let server: i32 = std::fs::read_to_string(&real_pid).unwrap().trim().parse().unwrap();
    unsafe {
        libc::kill(server, libc::SIGKILL);
    }
    let log = up.log();
    let status = status.unwrap_or_else(|| panic!("`up` hung on a server that ignores SIGTERM:\n{log}"));
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("nats-server did not stop within 10s of SIGTERM; killing it."), "{log}");
    assert!(took >= Duration::from_secs(9), "killed only after the grace: {took:?}");
}

/// The nats-server the tests run, as an absolute path (to copy it).
fn nats_server_binary_path() -> std::path::PathBuf {
    let binary = nats_server_binary();
    if binary.is_absolute() {
        return binary;
    }
    let out = std::process::Command::new("sh").arg("-c").arg(format!("command -v {}", binary.display())).output().unwrap();
    std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
