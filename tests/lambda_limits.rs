//! Limits of Lambda execution environments: a handler that sleeps past `timeout` is killed
//! (its whole process group) and the next event runs in a fresh environment; a handler that
//! allocates past `memory_mb` fails with kind `memory_limit` and the node keeps serving; a
//! runtime that exits mid-invocation fails as `error` (`Runtime.ExitError`).
//! Guards against a timed-out process lingering or being reused, and against a memory
//! bomb taking the worker or its neighbours down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::lambda::process_alive;
use common::*;

const SLEEPER: &str = r#"import os, subprocess, time

count = 0


def lambda_handler(event, context):
    global count
    count += 1
    if event.get("sleep"):
        # A child of the handler: it must die with the environment too.
        child = subprocess.Popen(["sleep", "300"])
        print(f"sleeping with child {child.pid}")
        time.sleep(event["sleep"])
    return {"pid": os.getpid(), "count": count}
"#;

const CRASHER: &str = r#"import os

count = 0


def lambda_handler(event, context):
    global count
    count += 1
    if event.get("crash"):
        os._exit(3)
    return {"pid": os.getpid(), "count": count}
"#;

const HOG: &str = r#"import os

count = 0


def lambda_handler(event, context):
    global count
    count += 1
    chunks = []
    for _ in range(event.get("mb", 0)):
        chunks.append(bytearray(1024 * 1024))
    return {"pid": os.getpid(), "count": count, "allocated_mb": len(chunks)}
"#;

const NODE_HOG: &str = r#"let count = 0;
exports.handler = async (event) => {
  count += 1;
  const chunks = [];
  for (let i = 0; i < (event.mb || 0); i++) chunks.push(Buffer.alloc(1024 * 1024, 1));
  return { pid: process.pid, count, allocated_mb: chunks.length };
};
"#;

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_and_memory_limits_end_the_environment_not_the_node() {
    let nats = NatsServer::start();
    let project = Project::new();
    let once = "\n[retry]\nmax_attempts = 1";
    project.lambda_function(
        "sleeper",
        &format!("runtime = \"python3.11\"\nhandler = \"app.lambda_handler\"\ntimeout = \"2s\"\nconcurrency = 1\nsubscribe = [\"sleep\"]{once}"),
        &[("app.py", SLEEPER)],
    );
    project.lambda_function(
        "hog",
        &format!("runtime = \"python3.11\"\nhandler = \"app.lambda_handler\"\nmemory_mb = 64\nconcurrency = 1\nsubscribe = [\"hog\"]{once}"),
        &[("app.py", HOG)],
    );
    project.lambda_function(
        "nodehog",
        &format!("runtime = \"nodejs20.x\"\nhandler = \"index.handler\"\nmemory_mb = 128\nconcurrency = 1\nsubscribe = [\"nodehog\"]{once}"),
        &[("index.js", NODE_HOG)],
    );
    project.lambda_function(
        "crasher",
        &format!("runtime = \"python3.11\"\nhandler = \"app.lambda_handler\"\nconcurrency = 1\nsubscribe = [\"crash\"]{once}"),
        &[("app.py", CRASHER)],
    );
    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut crasher = Results::subscribe(&client, "crasher").await;
    let mut sleeper = Results::subscribe(&client, "sleeper").await;

    // A runtime that exits during an invocation: a failed attempt of kind `error`, not a
    // memory or timeout failure, and the next event gets a fresh environment.
    publish_event(&js, "sluice.events.crash", "c-1", r#"{"crash":true}"#).await.await.unwrap();
    wait_stream_count(&js, "SLUICE_DLQ", 1, Duration::from_secs(30)).await;
    let crashed = &stream_messages(&js, "SLUICE_DLQ").await[0];
    assert_eq!(header(crashed, "sluice-error-kind"), Some("error"));
    assert_eq!(header(crashed, "sluice-error-type"), Some("Runtime.ExitError"));
    assert_eq!(header(crashed, "sluice-error"), Some("Runtime.ExitError: Runtime exited with error: exit status 3"));
    publish_event(&js, "sluice.events.crash", "c-2", "{}").await.await.unwrap();
    crasher.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(crasher.received[0].1["count"], 1, "a fresh environment after the crash");
    // An idle environment whose process died is not handed an event.
    let idle_pid = crasher.received[0].1["pid"].as_u64().unwrap() as u32;
    // SAFETY: plain syscall on a process of this test's own `sluice up`.
    unsafe { libc::kill(idle_pid as i32, libc::SIGKILL) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while process_alive(idle_pid) {
        assert!(std::time::Instant::now() < deadline, "the killed environment was reaped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    publish_event(&js, "sluice.events.crash", "c-3", "{}").await.await.unwrap();
    crasher.wait_for(2, Duration::from_secs(30)).await;
    assert_ne!(crasher.received[1].1["pid"].as_u64().unwrap() as u32, idle_pid);
    assert_eq!(stream_count(&js, "SLUICE_DLQ").await, 1, "the dead idle environment cost no attempt");
    let mut hog = Results::subscribe(&client, "hog").await;
    let mut nodehog = Results::subscribe(&client, "nodehog").await;

    // Warm, then past the timeout, then again.
    publish_event(&js, "sluice.events.sleep", "s-1", "{}").await.await.unwrap();
    sleeper.wait_for(1, Duration::from_secs(30)).await;
    let warm_pid = sleeper.received[0].1["pid"].as_u64().unwrap() as u32;
    publish_event(&js, "sluice.events.sleep", "s-2", r#"{"sleep":30}"#).await.await.unwrap();
    wait_stream_count(&js, "SLUICE_DLQ", 2, Duration::from_secs(30)).await;
    let child: u32 = up
        .log()
        .lines()
        .find_map(|l| l.split("sleeping with child ").nth(1).map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()))
        .unwrap_or_else(|| panic!("the handler's child pid is not in the log:\n{}", up.log()));
    assert!(!process_alive(warm_pid), "the timed-out environment's process was killed");
    assert!(!process_alive(child), "the handler's own child died with its process group");
    publish_event(&js, "sluice.events.sleep", "s-3", "{}").await.await.unwrap();
    sleeper.wait_for(2, Duration::from_secs(30)).await;
    let fresh = &sleeper.received[1].1;
    assert_ne!(fresh["pid"].as_u64().unwrap() as u32, warm_pid, "a fresh environment");
    assert_eq!(fresh["count"], 1, "with fresh module state");

    // Past memory_mb (Python and Node.js), then within it: the node keeps serving.
    publish_event(&js, "sluice.events.hog", "h-1", r#"{"mb":200}"#).await.await.unwrap();
    publish_event(&js, "sluice.events.nodehog", "n-1", r#"{"mb":400}"#).await.await.unwrap();
    wait_stream_count(&js, "SLUICE_DLQ", 4, Duration::from_secs(60)).await;
    publish_event(&js, "sluice.events.hog", "h-2", r#"{"mb":8}"#).await.await.unwrap();
    publish_event(&js, "sluice.events.nodehog", "n-2", r#"{"mb":8}"#).await.await.unwrap();
    hog.wait_for(1, Duration::from_secs(30)).await;
    nodehog.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(hog.received[0].1["allocated_mb"], 8);
    assert_eq!(nodehog.received[0].1["allocated_mb"], 8);

    let dlq = stream_messages(&js, "SLUICE_DLQ").await;
    let kinds: Vec<(&str, &str, &str)> = dlq
        .iter()
        .map(|m| (header(m, "sluice-function").unwrap(), header(m, "sluice-error-kind").unwrap(), header(m, "sluice-error-type").unwrap_or("")))
        .collect();
    assert!(kinds.contains(&("sleeper", "timeout", "Sandbox.Timedout")), "{kinds:?}");
    assert!(kinds.contains(&("hog", "memory_limit", "Runtime.OutOfMemory")), "{kinds:?}\n{}", up.log());
    assert!(kinds.iter().any(|(f, k, _)| *f == "nodehog" && *k == "memory_limit"), "{kinds:?}\n{}", up.log());
    let timed_out = dlq.iter().find(|m| header(m, "sluice-function") == Some("sleeper")).unwrap();
    assert!(header(timed_out, "sluice-error").unwrap().contains("Task timed out after 2.00 seconds"));
    assert!(up.log().contains("Status: timeout"), "{}", up.log());
}
