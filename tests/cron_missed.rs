//! After downtime a cron trigger's `missed` policy decides: `skip` fires nothing for the gap,
//! `fire_once` exactly one catch-up, `fire_all` one per missed tick.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn missed_ticks_follow_the_policy() {
    let nats = NatsServer::start();
    let project = Project::new();
    std::fs::create_dir_all(project.path().join("triggers")).unwrap();
    for policy in ["skip", "fire_once", "fire_all"] {
        std::fs::write(
            project.path().join(format!("triggers/{}.toml", policy.replace('_', "-"))),
            format!("kind = \"cron\"\nschedule = \"@every 1s\"\ntopic = \"ticks.{policy}\"\nmissed = \"{policy}\"\n"),
        )
        .unwrap();
    }
    let mut up = project.up(Some(&nats.url()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(up.terminate().success());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut up = project.up(Some(&nats.url()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(up.terminate().success());

    // Every fired tick is a message in SLUICE_EVENTS: (tick, catch-up?) per trigger.
    let js = async_nats::jetstream::new(nats.client().await);
    let mut fired: BTreeMap<String, Vec<(DateTime<Utc>, bool)>> = BTreeMap::new();
    for message in stream_messages(&js, "SLUICE_EVENTS").await {
        let trigger = header(&message, "ce-subject").unwrap().to_owned();
        let time = DateTime::parse_from_rfc3339(header(&message, "ce-time").unwrap()).unwrap().with_timezone(&Utc);
        fired.entry(trigger).or_default().push((time, header(&message, "sluice-cron-catchup") == Some("true")));
    }
    let catchups = |name: &str| fired[name].iter().filter(|(_, c)| *c).count();
    let gaps = |name: &str| {
        let mut times: Vec<_> = fired[name].iter().map(|(t, _)| *t).collect();
        times.sort();
        assert!(times.windows(2).all(|w| w[1] > w[0]), "{name}: a tick fired twice");
        times.windows(2).map(|w| (w[1] - w[0]).num_seconds()).max().unwrap_or(0)
    };

    assert_eq!(catchups("skip"), 0);
    assert!(gaps("skip") >= 5, "skip leaves the downtime empty: {:?}", fired["skip"]);
    assert_eq!(catchups("fire-once"), 1);
    assert!(gaps("fire-once") >= 3, "one catch-up does not fill the gap: {:?}", fired["fire-once"]);
    assert!(catchups("fire-all") >= 5, "fire_all fires every missed tick: {:?}", fired["fire-all"]);
    assert_eq!(gaps("fire-all"), 1, "no tick of the downtime is missing: {:?}", fired["fire-all"]);
}
