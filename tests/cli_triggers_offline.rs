//! `sluice triggers list` when trigger health cannot be read (no `sluice up`, no NATS, or a
//! server no `sluice up` has used): the triggers are still listed, every status is
//! `unknown`, and stderr says why; it used to show `-` with no word that nothing was reached.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::process::{Command, Output, Stdio};

use common::*;

fn project_with_a_schedule() -> Project {
    let project = Project::new();
    project.trigger("nightly", "kind = \"cron\"\nschedule = \"0 0 2 * * *\"\ntopic = \"reports.nightly\"\n");
    project
}

/// Runs `sluice` in the project with no NATS URL from the environment.
fn sluice(project: &Project, args: &[&str]) -> Output {
    Command::new(SLUICE)
        .arg("--dir")
        .arg(project.path())
        .args(args)
        .env_remove("SLUICE_NATS_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The table and the JSON both say `unknown`, the schedule is still there, and the note on
/// stderr contains `reason`.
fn assert_unknown(project: &Project, nats: &[&str], reason: &str) {
    let mut args = nats.to_vec();
    args.extend(["triggers", "list"]);
    let out = sluice(project, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let row = stdout.lines().find(|l| l.starts_with("nightly")).unwrap_or_else(|| panic!("no row: {stdout}"));
    assert!(row.contains(" unknown "), "status unknown: {row}");
    assert!(row.contains("T02:00:00"), "next fire times still shown: {row}");
    assert!(stderr.contains("note: "), "{stderr}");
    assert!(stderr.contains(reason), "says why ({reason}): {stderr}");
    assert!(stderr.contains("trigger health from sluice_state is not shown") || stderr.contains("no KV bucket sluice_state"), "{stderr}");

    let mut args = nats.to_vec();
    args.extend(["--json", "triggers", "list"]);
    let out = sluice(project, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout stays a JSON array");
    assert_eq!(rows[0]["name"], "nightly");
    assert_eq!(rows[0]["status"], "unknown");
    assert_eq!(rows[0]["message"], serde_json::Value::Null);
    assert_eq!(rows[0]["next"].as_array().map(Vec::len), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains(reason));
}

#[test]
fn no_nats_configured_and_no_up_running() {
    let project = project_with_a_schedule();
    assert_unknown(&project, &[], "none is configured");
}

#[test]
fn configured_server_not_listening() {
    let project = project_with_a_schedule();
    let url = format!("nats://127.0.0.1:{}", free_port());
    assert_unknown(&project, &["--nats", &url], &format!("cannot reach NATS at {url}"));
}

#[test]
fn server_without_sluice_state() {
    let project = project_with_a_schedule();
    let server = NatsServer::start();
    assert_unknown(&project, &["--nats", &server.url()], "no `sluice up` has run against this server");
}
