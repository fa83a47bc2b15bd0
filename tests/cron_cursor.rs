//! The cron trigger's cursor and publish: the last fired tick in KV `sluice_state` follows
//! the ticks JetStream stored, is written afresh when deleted and never moves back; a tick
//! JetStream refuses is tried three times, 200 ms apart, then counted as missed, and the
//! schedule goes on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, stream};
use chrono::{DateTime, SecondsFormat, Utc};
use common::*;

const KEY: &str = "cron.every";

/// A project with one trigger, `every`, firing each second to topic `ticks`; its `sluice up`
/// logs JSON.
fn start(nats: &NatsServer) -> (Project, Up) {
    let project = Project::new();
    project.trigger("every", "kind = \"cron\"\nschedule = \"@every 1s\"\ntopic = \"ticks\"\n");
    let up = project.up_with_env(Some(&nats.url()), &[("SLUICE_LOG_FORMAT", "json")]);
    (project, up)
}

/// The ticks stored in SLUICE_EVENTS, oldest first.
async fn stored_ticks(js: &jetstream::Context) -> Vec<DateTime<Utc>> {
    let mut ticks: Vec<_> = stream_messages(js, "SLUICE_EVENTS")
        .await
        .iter()
        .map(|message| DateTime::parse_from_rfc3339(header(message, "ce-time").unwrap()).unwrap().with_timezone(&Utc))
        .collect();
    ticks.sort();
    ticks
}

/// The tick recorded under [`KEY`], if any.
async fn recorded(state: &kv::Store) -> Option<DateTime<Utc>> {
    let value = state.get(KEY).await.unwrap()?;
    Some(DateTime::parse_from_rfc3339(std::str::from_utf8(&value).unwrap()).unwrap().with_timezone(&Utc))
}

/// Polls `check` every 50 ms until it returns `Some`, for `limit` at most.
async fn wait_until<T, F: std::future::Future<Output = Option<T>>>(what: &str, limit: Duration, mut check: impl FnMut() -> F) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_tick_follows_the_stored_ones_and_never_moves_back() {
    let nats = NatsServer::start();
    let (_project, up) = start(&nats);
    let js = jetstream::new(nats.client().await);
    let state = js.get_key_value("sluice_state").await.expect("`sluice up` creates KV sluice_state before it says it is up");

    // After three ticks, the recorded one is the newest stored (each is recorded right after
    // JetStream acknowledged it).
    let caught_up = wait_until("the recorded tick equals the newest of three stored", Duration::from_secs(20), || async {
        let ticks = stored_ticks(&js).await;
        let last = recorded(&state).await;
        ticks.last().copied().filter(|newest| ticks.len() >= 3 && last == Some(*newest))
    })
    .await;

    // Deleted (by an operator resetting it), the key is written afresh by the next tick.
    state.delete(KEY).await.unwrap();
    wait_until("the deleted key written again with a later tick", Duration::from_secs(20), || async {
        recorded(&state).await.filter(|tick| *tick > caught_up)
    })
    .await;

    // A later tick already recorded (by a worker whose clock runs ahead) stays: two more
    // ticks are stored, the first of them recorded before the second was published.
    let ahead = Utc::now() + chrono::Duration::days(1);
    state.put(KEY, ahead.to_rfc3339_opts(SecondsFormat::Millis, true).into()).await.unwrap();
    let stored = stored_ticks(&js).await.len();
    wait_until("two more ticks stored", Duration::from_secs(20), || async { (stored_ticks(&js).await.len() >= stored + 2).then_some(()) }).await;
    let last = recorded(&state).await.unwrap();
    assert_eq!(last.timestamp_millis(), ahead.timestamp_millis(), "the recorded tick moved back");

    assert!(up.log_lines("Cannot record the last fired tick.").is_empty(), "{}", up.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_tick_is_tried_three_times_then_counted_missed() {
    let nats = NatsServer::start();
    let (_project, up) = start(&nats);
    let js = jetstream::new(nats.client().await);
    wait_stream_count(&js, "SLUICE_EVENTS", 1, Duration::from_secs(20)).await;

    // Without the events stream, every publish is refused.
    js.delete_stream("SLUICE_EVENTS").await.unwrap();
    up.wait_line("a tick counted as missed", Duration::from_secs(20), |line| line.contains("Tick not published; it counts as missed."));
    let missed = up.log_lines("Tick not published; it counts as missed.").remove(0);
    let tick = missed["tick"].as_str().unwrap().to_owned();
    let retries: Vec<_> = up.log_lines("Cannot publish a tick; trying again.").into_iter().filter(|fields| fields["tick"] == tick.as_str()).collect();
    let tries: Vec<_> = retries.iter().map(|fields| fields["tries"].as_u64().unwrap()).collect();
    assert_eq!(tries, [1, 2], "tick {tick}: two retries before it is given up\n{}", up.log());
    assert_eq!(missed["tries"], 3, "{}", up.log());
    // 200 ms between tries: the third failed at least 400 ms after the first (less the
    // log's millisecond rounding).
    let spread = (logged_at(&missed) - logged_at(&retries[0])).num_milliseconds();
    assert!(spread >= 390, "three tries within {spread} ms\n{}", up.log());

    // The schedule goes on: with the stream back, the next ticks are stored.
    js.create_stream(stream::Config { name: "SLUICE_EVENTS".into(), subjects: vec!["sluice.events.>".into()], ..Default::default() })
        .await
        .unwrap();
    wait_stream_count(&js, "SLUICE_EVENTS", 1, Duration::from_secs(20)).await;
    let missed_at = DateTime::parse_from_rfc3339(&tick).unwrap().with_timezone(&Utc);
    assert!(stored_ticks(&js).await.iter().all(|stored| *stored > missed_at), "the missed tick was not stored later");
}
