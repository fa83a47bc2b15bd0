//! Execution environments scale with load and back to zero: an environment idle for
//! `idle_timeout` is stopped, `min_warm` environments are started before any event and kept
//! through idleness (Lambda's provisioned concurrency). Guards against processes piling up
//! forever and against a provisioned environment being reaped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use common::lambda::process_alive;
use common::*;

const HANDLER: &str = r#"import os, time


def lambda_handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid()}
"#;

fn count(log: &str, function: &str, message: &str) -> usize {
    log.lines().filter(|l| l.contains(message) && l.contains(&format!("function={function} "))).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_environments_stop_and_min_warm_ones_stay() {
    let nats = NatsServer::start();
    let project = Project::new();
    let common = "runtime = \"python3.11\"\nhandler = \"app.lambda_handler\"\nconcurrency = 3\nidle_timeout = \"1s\"";
    project.lambda_function("zero", &format!("{common}\nsubscribe = [\"zero\"]"), &[("app.py", HANDLER)]);
    project.lambda_function("warm", &format!("{common}\nmin_warm = 1\nsubscribe = [\"warm\"]"), &[("app.py", HANDLER)]);
    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut zero = Results::subscribe(&client, "zero").await;
    let mut warm = Results::subscribe(&client, "warm").await;

    // min_warm starts one before any event; `zero` starts none.
    up.wait_line("the provisioned environment", Duration::from_secs(30), |l| l.contains("Execution environment started.") && l.contains("function=warm "));
    assert_eq!(count(&up.log(), "zero", "Execution environment started."), 0, "{}", up.log());

    // Three at once: three environments each.
    for (topic, results) in [("zero", &mut zero), ("warm", &mut warm)] {
        for i in 0..3 {
            publish_event(&js, &format!("sluice.events.{topic}"), &format!("{topic}-{i}"), r#"{"sleep":1}"#).await.await.unwrap();
        }
        results.wait_for(3, Duration::from_secs(30)).await;
    }
    let pids = |results: &Results| results.received.iter().map(|(_, b)| b["pid"].as_u64().unwrap() as u32).collect::<std::collections::BTreeSet<u32>>();
    let (zero_pids, warm_pids) = (pids(&zero), pids(&warm));
    assert_eq!((zero_pids.len(), warm_pids.len()), (3, 3), "{zero_pids:?} {warm_pids:?}");

    // Idle for idle_timeout: `zero` stops all three, `warm` all but one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = up.log();
        let stopped = (count(&log, "zero", "reason=\"idle\""), count(&log, "warm", "reason=\"idle\""));
        if stopped == (3, 2) {
            break;
        }
        assert!(Instant::now() < deadline, "idle environments stopped: {stopped:?}\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while zero_pids.iter().any(|p| process_alive(*p)) {
        assert!(Instant::now() < deadline, "stopped environments' processes are gone");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The one kept is still the provisioned one, for longer than idle_timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(warm_pids.iter().filter(|p| process_alive(**p)).count(), 1, "one warm environment stays");
    assert_eq!(count(&up.log(), "warm", "reason=\"idle\""), 2, "{}", up.log());

    // The next event of `warm` runs warm, in the kept environment.
    publish_event(&js, "sluice.events.warm", "warm-later", "{}").await.await.unwrap();
    warm.wait_for(4, Duration::from_secs(30)).await;
    let later = warm.received[3].1["pid"].as_u64().unwrap() as u32;
    assert!(warm_pids.contains(&later) && process_alive(later), "{later} in {warm_pids:?}");
    assert_eq!(count(&up.log(), "warm", "Execution environment started."), 3, "{}", up.log());
}
