//! `sluice dlq purge` removes exactly what it is told to: `--function` spares every other
//! function's dead letters (also one whose name starts the same), `--older-than` spares the
//! recent ones, and ids remove exactly those entries.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use chrono::{Duration, Utc};
use common::cli::*;
use common::*;

fn purge(project: &Project, url: &str, args: &[&str]) -> u64 {
    let mut all = vec!["--json", "dlq", "purge", "--yes"];
    all.extend_from_slice(args);
    let out = sluice_ok(project, url, &all);
    let purged: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    purged["removed"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_filters_remove_only_the_selected_entries() {
    let (_nats, url, project, js) = dlq_world().await;
    let now = Utc::now();
    let old = now - Duration::days(10);
    let recent = now - Duration::minutes(5);

    let a_old = seed_dead_letter(&js, "a", "a-old", "boom", old).await;
    let b_old = seed_dead_letter(&js, "b", "b-old", "boom", old).await;
    let ab_old = seed_dead_letter(&js, "ab", "ab-old", "boom", old).await;
    let a_recent = seed_dead_letter(&js, "a", "a-recent", "boom", recent).await;
    let b_recent = seed_dead_letter(&js, "b", "b-recent", "boom", recent).await;
    seed_dead_letter(&js, "a", "a-old2", "boom", old).await;
    let ab_recent = seed_dead_letter(&js, "ab", "ab-recent", "boom", recent).await;
    let c_recent = seed_dead_letter(&js, "c", "c-recent", "boom", recent).await;
    let c_recent2 = seed_dead_letter(&js, "c", "c-recent2", "boom", recent).await;
    assert_eq!(remaining_ids(&js).await.len(), 9);

    // Only function a's entries older than a week.
    assert_eq!(purge(&project, &url, &["--all", "--function", "a", "--older-than", "7d"]), 2);
    assert_eq!(
        remaining_ids(&js).await,
        vec![b_old, ab_old, a_recent, b_recent, ab_recent, c_recent, c_recent2],
        "--function a --older-than 7d removed exactly a's old entries"
    );

    // Every entry of function b, whatever its age.
    assert_eq!(purge(&project, &url, &["--all", "--function", "b"]), 2);
    assert_eq!(
        remaining_ids(&js).await,
        vec![ab_old, a_recent, ab_recent, c_recent, c_recent2],
        "--function b removed exactly b's entries"
    );

    // Old entries of any function.
    assert_eq!(purge(&project, &url, &["--all", "--older-than", "7d"]), 1);
    assert_eq!(remaining_ids(&js).await, vec![a_recent, ab_recent, c_recent, c_recent2], "--older-than 7d removed exactly the old entry");

    // By id: exactly those.
    assert_eq!(purge(&project, &url, &[&ab_recent.to_string(), &c_recent.to_string()]), 2);
    assert_eq!(remaining_ids(&js).await, vec![a_recent, c_recent2], "purge by id removed exactly the named entries");

    // A function with nothing old: nothing goes.
    assert_eq!(purge(&project, &url, &["--all", "--function", "c", "--older-than", "1d"]), 0);
    assert_eq!(remaining_ids(&js).await, vec![a_recent, c_recent2]);
    // An id that is not there is bad usage, and removes nothing.
    let out = project.sluice(&["--nats", &url, "dlq", "purge", "--yes", &a_recent.to_string(), &a_old.to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(remaining_ids(&js).await, vec![a_recent, c_recent2], "a purge naming a missing id removed nothing");
}

/// `Dlq::remove`: an entry already gone (a purge racing another) is `false`, not an error;
/// a removal the server refuses is an error naming the entry, not "already gone".
#[tokio::test(flavor = "multi_thread")]
async fn a_removal_tells_gone_from_refused() {
    let (_nats, url, _project, js) = dlq_world().await;
    let bus = sluice::bus::Bus::connect(&sluice::bus::NatsTarget::plain(&url), &sluice::config::BusSettings::default(), sluice::bus::StreamSetup::CreateMissing)
        .await
        .unwrap();
    let dlq = sluice::dlq::Dlq::open(&bus).await.unwrap();
    let id = seed_dead_letter(&js, "a", "a-1", "boom", Utc::now()).await;
    assert!(dlq.remove(id).await.unwrap());
    assert!(!dlq.remove(id).await.unwrap(), "already gone");

    let kept = seed_dead_letter(&js, "a", "a-2", "boom", Utc::now()).await;
    let mut stream = js.get_stream("SLUICE_DLQ").await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.deny_delete = true;
    js.update_stream(config).await.unwrap();
    let error = dlq.remove(kept).await.unwrap_err().to_string();
    assert!(error.contains(&format!("removing DLQ entry {kept}")), "{error}");
    assert_eq!(stream_count(&js, "SLUICE_DLQ").await, 1, "the entry stays");
}
