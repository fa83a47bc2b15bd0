//! A per-second cron trigger on 3 `sluice up` nodes over a 3-node NATS cluster (R3): over 60
//! seconds exactly 60 events are stored, one per tick, even though every node fires every
//! tick (JetStream drops the copies by `Nats-Msg-Id`), and SIGKILLing a node midway leaves
//! no gap (the others keep firing: cron needs no lease). The function handles every tick.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::cluster::Finished;
use common::nodes::*;

const TICKS: i64 = 60;

fn tick_of(data: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(data["time"].as_str().unwrap_or_default()).map(|t| t.to_utc()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn sixty_ticks_on_three_nodes_are_sixty_events() {
    let started = Instant::now();
    let project = project_r3("ticks");
    project.trigger("tick", "kind = \"cron\"\nschedule = \"* * * * * *\"\ntopic = \"ticks\"\n");
    let mut nodes = Nodes::start(&project, 3).await;
    let mut finished = Finished::observe(&nodes.js, "done").await;

    // The first tick any node stored starts the window.
    let first = loop {
        if let Some(first) = nodes.stored("ticks").await.iter().map(|(_, d)| tick_of(d)).min() {
            break first;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no tick stored; logs:\n{}", nodes.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let last = first + chrono::Duration::seconds(TICKS - 1);
    let expected: BTreeSet<String> = (0..TICKS).map(|s| (first + chrono::Duration::seconds(s)).to_rfc3339()).collect();

    // Midway, SIGKILL one node; the other two keep firing.
    let midway = first + chrono::Duration::seconds(TICKS / 2);
    while Utc::now() < midway {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nodes.kill(0);
    let killed_at = Utc::now();

    // Until the window ended and each of its ticks was stored (a loaded machine may store
    // the last one late), or a deadline says which are missing.
    let deadline = Instant::now() + Duration::from_secs(TICKS as u64 + 30);
    let stored = loop {
        let stored = nodes.stored("ticks").await;
        let seen: BTreeSet<String> = stored.iter().map(|(_, d)| tick_of(d).to_rfc3339()).collect();
        if (Utc::now() > last + chrono::Duration::seconds(1) && expected.iter().all(|t| seen.contains(t))) || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Only the window's ticks; later ones keep coming.
    let all_ids: Vec<&String> = stored.iter().map(|(id, _)| id).collect();
    let distinct: BTreeSet<&String> = all_ids.iter().copied().collect();
    assert_eq!(distinct.len(), all_ids.len(), "a tick stored twice: {all_ids:?}");
    let in_window: Vec<&(String, serde_json::Value)> = stored.iter().filter(|(_, d)| tick_of(d) >= first && tick_of(d) <= last).collect();
    let ticks: BTreeSet<String> = in_window.iter().map(|(_, d)| tick_of(d).to_rfc3339()).collect();
    let missing: Vec<&String> = expected.iter().filter(|t| !ticks.contains(*t)).collect();
    assert!(missing.is_empty(), "ticks missing from the window (node 0 killed at {killed_at}): {missing:?}; logs:\n{}", nodes.logs());
    assert_eq!(in_window.len() as i64, TICKS, "exactly {TICKS} events in {TICKS} s: {ticks:?}");

    let ids: BTreeSet<String> = in_window.iter().map(|(id, _)| id.clone()).collect();
    let redelivered = nodes.wait_handled(&mut finished, &ids, Duration::from_secs(60)).await;
    let fired: usize = nodes.log_lines("Tick fired.").len();
    println!(
        "{TICKS} ticks from {first} stored once each (fired {fired} times by the nodes, node 0 killed at {killed_at}); \
         {redelivered} handled more than once; test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
