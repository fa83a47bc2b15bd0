//! A function that prints 100 MiB in one invocation: the node keeps at most the
//! per-invocation cap of it (its peak memory stays far below what was printed), the
//! invocation still answers, and `sluice logs` shows the cut. Guards the cap on the path from
//! the sandbox to `SLUICE_LOGS`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use common::http::{base, client, echo_function};
use common::*;

/// The peak resident memory of a process, in MiB (`VmHWM`).
fn peak_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap();
    kib / 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_mebibytes_of_output_stay_bounded() {
    let nats = NatsServer::start();
    let url = nats.url();
    let project = Project::new();
    echo_function(&project, "chatty", "timeout = \"20s\"");
    project.trigger("api", "kind = \"http\"\n[routes.\"GET /chatty\"]\nfunction = \"chatty\"\n");
    let up = project.up(Some(&url));
    let http = client();
    // Warm: the module loaded, the pools allocated.
    assert_eq!(http.get(format!("{}/chatty", base(&up))).send().await.unwrap().status(), 200);
    let before = peak_mib(up.pid());

    let response = http.get(format!("{}/chatty?print_mb=100", base(&up))).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let request_id = response.headers()["apigw-requestid"].to_str().unwrap().to_owned();
    let after = peak_mib(up.pid());
    assert!(after < before + 48, "the node's peak memory grew from {before} MiB to {after} MiB for 100 MiB of output");

    // The record keeps the first 256 KiB and says what was cut.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = project.sluice(&["--nats", &url, "logs", "chatty", "--request-id", &request_id, "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if let Some(report) = lines.iter().find(|l| l["type"] == "invocation") {
            assert_eq!(report["outcome"], "success");
            let messages: Vec<&str> = lines.iter().filter(|l| l["type"] == "line").map(|l| l["message"].as_str().unwrap()).collect();
            let kept: usize = messages.iter().map(|m| m.len() + 1).sum();
            assert!(kept <= 256 * 1024 + 200, "{kept} bytes kept");
            let last = messages.last().unwrap();
            assert!(last.starts_with("[sluice] log output past 262144 bytes was dropped"), "{last}");
            assert!(last.contains(&format!("{} bytes in all", 100 * 1024 * 1024 + "GET /chatty\n".len())), "{last}");
            break;
        }
        assert!(Instant::now() < deadline, "no record of {request_id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
