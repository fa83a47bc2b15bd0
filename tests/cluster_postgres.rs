//! The `postgres` trigger on 3 `sluice up` nodes over a 3-node NATS cluster (R3): the
//! replication slot is the lease (PostgreSQL lets one connection stream it); one node
//! streams, the others stand by. SIGKILLing the streaming node while rows are written hands
//! the slot to another node within 10 s, which resumes from the slot's confirmed position;
//! a change sent again keeps its id (slot + LSN) and is dropped as a duplicate. Every row
//! change is exactly one stored event, handled by the function.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::cluster::Finished;
use common::logged_at;
use common::nodes::*;
use common::postgres::{dsn, PgFixture};

const ROWS: i32 = 200;

fn id_of(data: &serde_json::Value) -> String {
    data["new"]["id"].as_i64().map(|i| i.to_string()).unwrap_or_default()
}

/// The nodes that logged "Streaming changes." after `after`.
fn streaming(nodes: &Nodes, after: chrono::DateTime<Utc>) -> Vec<(usize, chrono::DateTime<Utc>)> {
    nodes.log_lines("Streaming changes.").into_iter().map(|(i, f)| (i, logged_at(&f))).filter(|(_, at)| *at > after).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_slot_moves_to_another_node_and_loses_nothing() {
    let started = Instant::now();
    let pg = PgFixture::new().await;
    let n = &pg.name;
    pg.client.batch_execute(&format!("CREATE TABLE {n} (id int PRIMARY KEY, note text)")).await.unwrap();
    let project = project_r3("rows");
    project.trigger(
        "rows",
        format!("kind = \"postgres\"\ndsn = \"{}\"\nslot = \"{n}\"\npublication = \"{n}\"\ntables = [\"public.{n}\"]\ntopic = \"rows\"\n", dsn()),
    );
    let start = Utc::now() - chrono::Duration::seconds(1);
    let mut nodes = Nodes::start(&project, 3).await;
    let mut finished = Finished::observe(&nodes.js, "done").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let holder = loop {
        if let Some((node, _)) = streaming(&nodes, start).first() {
            break *node;
        }
        assert!(Instant::now() < deadline, "no node streams the slot; logs:\n{}", nodes.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let insert = |range: std::ops::Range<i32>| {
        let client = &pg.client;
        async move {
            for i in range {
                client.execute(&format!("INSERT INTO {n} VALUES ($1, 'row')"), &[&i]).await.unwrap();
            }
        }
    };
    insert(0..ROWS / 2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes.stored("rows").await.len() < (ROWS / 4) as usize {
        assert!(Instant::now() < deadline, "nothing streamed; logs:\n{}", nodes.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let streamers: BTreeSet<usize> = streaming(&nodes, start).into_iter().map(|(i, _)| i).collect();
    assert_eq!(streamers, BTreeSet::from([holder]), "one node streams the slot");
    let killed_at = Utc::now();
    let killed = nodes.kill(holder);
    insert(ROWS / 2..ROWS).await;

    let (taker, takeover) = loop {
        if let Some((node, at)) = streaming(&nodes, killed_at).first() {
            break (*node, (*at - killed_at).to_std().unwrap_or_default());
        }
        assert!(killed.elapsed() < TAKEOVER, "no node streamed the slot within {TAKEOVER:?} of the streaming node's death; logs:\n{}", nodes.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(takeover < TAKEOVER, "node {taker} streamed the slot only {takeover:?} after the kill");

    let expected: BTreeSet<String> = (0..ROWS).map(|i| i.to_string()).collect();
    let ids = nodes.wait_exactly_once("rows", &expected, Duration::from_secs(60), id_of).await;
    let redelivered = nodes.wait_handled(&mut finished, &ids, Duration::from_secs(60)).await;
    println!(
        "{ROWS} rows, {} events; node {holder} killed, node {taker} streamed the slot after {:.1} s; \
         {redelivered} handled more than once; test took {:.1} s",
        ids.len(),
        takeover.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
