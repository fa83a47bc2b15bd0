//! After downtime a cron trigger's `missed` policy decides: `skip` fires nothing for the gap,
//! `fire_once` exactly one catch-up, `fire_all` one per missed tick.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;

type Fired = BTreeMap<String, Vec<(DateTime<Utc>, bool)>>;

/// Every fired tick is a message in SLUICE_EVENTS: (tick, catch-up?) per trigger.
async fn fired(js: &async_nats::jetstream::Context) -> Fired {
    let mut fired = Fired::new();
    for message in stream_messages(js, "SLUICE_EVENTS").await {
        let trigger = header(&message, "ce-subject").unwrap().to_owned();
        let time = DateTime::parse_from_rfc3339(header(&message, "ce-time").unwrap()).unwrap().with_timezone(&Utc);
        fired.entry(trigger).or_default().push((time, header(&message, "sluice-cron-catchup") == Some("true")));
    }
    fired
}

/// Waits (30 s at most) until the ticks of each of the three triggers satisfy `done`.
async fn wait_fired(js: &async_nats::jetstream::Context, what: &str, done: impl Fn(&[(DateTime<Utc>, bool)]) -> bool) {
    let started = std::time::Instant::now();
    loop {
        let fired = fired(js).await;
        if ["skip", "fire-once", "fire-all"].iter().all(|t| fired.get(*t).is_some_and(|ticks| done(ticks))) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no {what}: {fired:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The restarted process's log (JSON) tells each trigger's missed ticks and what fired of
/// them, and each catch-up tick's delay: the time from the tick to its storing, between
/// `restarted` (before the process started) and `checked` (after it fired).
fn check_log(up: &Up, restarted: DateTime<Utc>, checked: DateTime<Utc>) {
    let told_missed = up.log_lines("Ticks were missed while no worker ran.");
    for (trigger, policy) in [("skip", "skip"), ("fire-once", "fire_once"), ("fire-all", "fire_all")] {
        let told: Vec<_> = told_missed.iter().filter(|f| f["trigger"] == trigger).collect();
        assert_eq!(told.len(), 1, "{trigger}: the missed ticks told once\n{}", up.log());
        let missed = told[0]["missed"].as_u64().unwrap();
        assert!(missed >= 4, "{trigger}: {missed} missed over a 5 s downtime\n{}", up.log());
        let firing = match policy {
            "skip" => 0,
            "fire_once" => 1,
            _ => missed,
        };
        assert_eq!(told[0]["firing"].as_u64(), Some(firing), "{trigger}\n{}", up.log());
        assert_eq!(told[0]["policy"], policy, "{trigger}\n{}", up.log());
    }
    let catchups: Vec<_> = up.log_lines("Tick fired.").into_iter().filter(|f| f["catchup"] == true).collect();
    assert!(!catchups.is_empty(), "{}", up.log());
    for fired in catchups {
        let tick = DateTime::parse_from_rfc3339(fired["tick"].as_str().unwrap()).unwrap().with_timezone(&Utc);
        let delay_ms: f64 = fired["delay_ms"].as_str().unwrap().parse().unwrap();
        let (least, most) = ((restarted - tick).num_milliseconds() as f64, (checked - tick).num_milliseconds() as f64);
        assert!(delay_ms >= least && delay_ms <= most, "catch-up {tick}: delay {delay_ms} ms, not within {least}..{most}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missed_ticks_follow_the_policy() {
    let nats = NatsServer::start();
    let project = Project::new();
    for policy in ["skip", "fire_once", "fire_all"] {
        project.trigger(
            &policy.replace('_', "-"),
            format!("kind = \"cron\"\nschedule = \"@every 1s\"\ntopic = \"ticks.{policy}\"\nmissed = \"{policy}\"\n"),
        );
    }
    let js = async_nats::jetstream::new(nats.client().await);
    let mut up = project.up(Some(&nats.url()));
    // Each trigger fires (and records) two ticks before the downtime.
    wait_fired(&js, "two ticks each before the downtime", |ticks| ticks.len() >= 2).await;
    assert!(up.terminate().success());
    // The downtime itself, part of the scenario: down across five ticks of the 1 s schedule.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restarted = Utc::now();
    let mut up = project.up_with_env(Some(&nats.url()), &[("SLUICE_LOG_FORMAT", "json")]);
    // Each trigger is back on schedule: a live (not catch-up) tick after the restart.
    wait_fired(&js, "a live tick each after the restart", |ticks| ticks.iter().any(|(t, c)| !c && *t > restarted)).await;
    let checked = Utc::now();
    assert!(up.terminate().success());
    check_log(&up, restarted, checked);

    let fired = fired(&js).await;
    let catchups = |name: &str| fired[name].iter().filter(|(_, c)| *c).count();
    let gaps = |name: &str| {
        let mut times: Vec<_> = fired[name].iter().map(|(t, _)| *t).collect();
        times.sort();
        assert!(times.windows(2).all(|w| w[1] > w[0]), "{name}: a tick fired twice");
        times.windows(2).map(|w| (w[1] - w[0]).num_seconds()).max().unwrap_or(0)
    };

    assert_eq!(catchups("skip"), 0, "skip fires no catch-up: {:?}", fired["skip"]);
    assert!(gaps("skip") >= 5, "skip leaves the downtime empty: {:?}", fired["skip"]);
    assert_eq!(catchups("fire-once"), 1, "fire_once fires one catch-up: {:?}", fired["fire-once"]);
    assert!(gaps("fire-once") >= 3, "one catch-up does not fill the gap: {:?}", fired["fire-once"]);
    assert!(catchups("fire-all") >= 5, "fire_all fires every missed tick: {:?}", fired["fire-all"]);
    assert_eq!(gaps("fire-all"), 1, "no tick of the downtime is missing: {:?}", fired["fire-all"]);
}
