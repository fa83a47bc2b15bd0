//! `sluice dlq list` and `show` report a poison event's function, error, attempts, topic and
//! body exactly as stored; JSON field names are stable (docs/dlq.md); `--function`, `--error`
//! and `--since` list exactly the entries they match, in the table and in `--json`; the
//! table and `show` shorten and group what `--json` tells; flags that cannot go together are
//! refused before anything connects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use chrono::Utc;
use common::cli::*;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn list_and_show_report_the_entry_as_stored() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function(
        "worker",
        "flaky",
        "subscribe = [\"orders.created\"]\nenv = { FLAKY_FAIL = \"1\" }\n[retry]\nmax_attempts = 2\nbackoff = { initial = \"50ms\", jitter = false }",
    );
    let _up = project.up(Some(&nats.url()));
    let js = async_nats::jetstream::new(nats.client().await);
    let url = nats.url();
    let body = r#"{"fail":true,"order":7}"#;
    let out = project.sluice(&["--nats", &url, "publish", "orders.created", "--data", body, "--id", "order-7", "--header", "tenant=acme"]);
    assert!(out.status.success());
    // A binary body (published raw) is shown safely.
    let out = project.sluice(&["--nats", &url, "publish", "orders.created", "--raw", "--data", "not json {", "--id", "order-8"]);
    assert!(out.status.success());
    wait_stream_count(&js, "SLUICE_DLQ", 2, Duration::from_secs(30)).await;

    let out = project.sluice(&["--nats", &url, "--json", "dlq", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = list["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(list["more"], 0);
    assert!(entries[1]["id"].as_u64().unwrap() > entries[0]["id"].as_u64().unwrap(), "newest last");
    // The two events fail concurrently: their dead letters may be stored in either order.
    let by_event = |event: &str| entries.iter().find(|e| e["event_id"] == event).unwrap_or_else(|| panic!("{event}: {list}"));
    let first = by_event("order-7");
    let raw_id = by_event("order-8")["id"].to_string();
    assert_eq!(first["function"], "worker");
    assert_eq!(first["topic"], "orders.created");
    assert_eq!(first["attempts"], 2);
    assert_eq!(first["error_kind"], "error");
    assert!(first["error"].as_str().unwrap().contains("exited with status 1"));
    assert!(first["age_secs"].as_i64().unwrap() >= 0);
    let id = first["id"].as_u64().unwrap();

    let out = project.sluice(&["--nats", &url, "--json", "dlq", "list", "--limit", "1"]);
    let limited: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(limited["entries"].as_array().unwrap().len(), 1);
    assert_eq!(limited["entries"][0]["id"], entries[1]["id"], "the newest is kept");
    assert_eq!(limited["more"], 1);
    let out = project.sluice(&["--nats", &url, "--json", "dlq", "list", "--error", "NO SUCH", "--since", "1h"]);
    let none: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(none["entries"].as_array().unwrap().is_empty());

    let out = project.sluice(&["--nats", &url, "--json", "dlq", "show", &id.to_string()]);
    assert!(out.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], id);
    assert_eq!(shown["body_encoding"], "json");
    assert_eq!(shown["body"], serde_json::from_str::<serde_json::Value>(body).unwrap());
    assert_eq!(shown["headers"]["tenant"][0], "acme");
    assert_eq!(shown["headers"]["sluice-attempts"][0], "2");
    assert_eq!(shown["headers"]["ce-id"][0], "order-7");
    assert_eq!(shown["trace_id"].as_str().unwrap().len(), 32);
    let stored = stream_messages(&js, "SLUICE_DLQ").await;
    assert_eq!(&stored[0].payload[..], body.as_bytes(), "the body is stored exactly");

    let out = project.sluice(&["--nats", &url, "dlq", "show", &id.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"order\": 7") && text.contains("sluice-error:") && text.contains("trace id"), "{text}");
    let out = project.sluice(&["--nats", &url, "--json", "dlq", "show", &raw_id]);
    let raw: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(raw["body_encoding"], "text");
    assert_eq!(raw["body"], "not json {");

    let out = project.sluice(&["--nats", &url, "--json", "dlq", "stats"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats[0]["function"], "worker");
    assert_eq!(stats[0]["entries"], 2);
    assert!(stats[0]["top_errors"][0]["count"].as_u64().unwrap() >= 1);

    // Unknown id: bad usage.
    let out = project.sluice(&["--nats", &url, "dlq", "show", "9999"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no DLQ entry with id 9999"));
    // Unreachable NATS: operation failed, naming the URL.
    let out = project.sluice(&["--nats", "nats://127.0.0.1:1", "dlq", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nats://127.0.0.1:1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters_select_exactly_the_matching_entries() {
    let (_nats, url, project, js) = dlq_world().await;
    let now = Utc::now();
    let hours_ago = now - chrono::Duration::hours(3);
    let minutes_ago = now - chrono::Duration::minutes(5);

    let a_old_timeout = seed_dead_letter(&js, "a", "e1", "Timeout: no answer within 3s", hours_ago).await;
    let b_old_exit = seed_dead_letter(&js, "b", "e2", "exited with status 1", hours_ago).await;
    let a_new_exit = seed_dead_letter(&js, "a", "e3", "exited with status 1 (stack: main)", minutes_ago).await;
    let b_new_timeout = seed_dead_letter(&js, "b", "e4", "worker timeout", minutes_ago).await;
    let ab_new_trap = seed_dead_letter(&js, "ab", "e5", "trap: unreachable", minutes_ago).await;
    // Upper case, not at the start: `--error` is a case-insensitive substring.
    let a_new_upper = seed_dead_letter(&js, "a", "e6", "failed: TIMEOUT on retry", minutes_ago).await;

    let cases: Vec<(Vec<&str>, Vec<u64>)> = vec![
        (vec![], vec![a_old_timeout, b_old_exit, a_new_exit, b_new_timeout, ab_new_trap, a_new_upper]),
        (vec!["--function", "a"], vec![a_old_timeout, a_new_exit, a_new_upper]),
        (vec!["--function", "b"], vec![b_old_exit, b_new_timeout]),
        (vec!["--error", "timeout"], vec![a_old_timeout, b_new_timeout, a_new_upper]),
        (vec!["--error", "STATUS 1"], vec![b_old_exit, a_new_exit]),
        (vec!["--since", "1h"], vec![a_new_exit, b_new_timeout, ab_new_trap, a_new_upper]),
        (vec!["--function", "a", "--since", "1h"], vec![a_new_exit, a_new_upper]),
        (vec!["--function", "a", "--error", "timeout"], vec![a_old_timeout, a_new_upper]),
        (vec!["--function", "b", "--error", "timeout", "--since", "1h"], vec![b_new_timeout]),
        (vec!["--error", "trap", "--since", "1h"], vec![ab_new_trap]),
    ];
    for (args, expected) in &cases {
        assert_eq!(&listed_ids_json(&project, &url, args), expected, "--json dlq list {args:?}");
        assert_eq!(&listed_ids_text(&project, &url, args), expected, "dlq list {args:?}");
    }
    // An RFC 3339 time for --since selects the same as the duration.
    let since = (now - chrono::Duration::hours(1)).to_rfc3339();
    assert_eq!(
        listed_ids_json(&project, &url, &["--since", &since]),
        vec![a_new_exit, b_new_timeout, ab_new_trap, a_new_upper],
        "--since {since}"
    );
}

/// The table tells what `--json` does, fitted to a terminal: an error over 100 characters is
/// cut to 99 and "…", a replayed entry shows its replay count, ages read in hours and
/// minutes, `--limit` says how many older entries it left out, and `show` lists the event's
/// own headers apart from Sluice's and CloudEvents'.
#[tokio::test(flavor = "multi_thread")]
async fn the_table_fits_what_the_json_tells() {
    let (_nats, url, project, js) = dlq_world().await;
    let now = Utc::now();
    let old = now - chrono::Duration::minutes(3 * 60 + 7);
    // With "error: " before it, exactly 100 characters; and one far over.
    let fits = format!("fits {}", "y".repeat(100 - 7 - 5));
    let long = format!("long {}", "z".repeat(150));
    let fits_id = seed_dead_letter(&js, "a", "e1", &fits, old).await;
    let long_id = seed_dead_letter(&js, "a", "e2", &long, now).await;
    let replayed_id = seed_dead_letter_with(&js, "a", "e3", "boom", now, &[("sluice-replays", "1"), ("tenant", "acme")]).await;

    let text = String::from_utf8_lossy(&sluice_ok(&project, &url, &["dlq", "list"]).stdout).into_owned();
    let row = |id: u64| {
        let line = text.lines().find(|line| line.split_whitespace().next() == Some(id.to_string().as_str()));
        line.unwrap_or_else(|| panic!("no row {id}: {text}")).trim_end().to_owned()
    };
    assert!(row(fits_id).ends_with(&format!(" error: {fits}")), "100 characters are shown whole: {text}");
    assert!(row(long_id).ends_with(&format!(" error: {}…", &long[..92])), "cut to 99 characters and …: {text}");
    assert!(row(replayed_id).contains(" 3 (replay 1) "), "{text}");
    assert!(!row(fits_id).contains("(replay") && !row(long_id).contains("(replay"), "{text}");
    assert!(row(fits_id).contains(" 3h 7m "), "{text}");
    assert!(!text.contains("older matching"), "{text}");
    let limited = String::from_utf8_lossy(&sluice_ok(&project, &url, &["dlq", "list", "--limit", "1"]).stdout).into_owned();
    assert!(limited.contains("2 older matching entries not shown"), "{limited}");

    let list: serde_json::Value = serde_json::from_slice(&sluice_ok(&project, &url, &["--json", "dlq", "list"]).stdout).unwrap();
    let age = list["entries"].as_array().unwrap().iter().find(|e| e["id"] == fits_id).unwrap()["age_secs"].as_i64().unwrap();
    assert!((11_220..11_220 + 120).contains(&age), "3 h 7 min old: age_secs {age}");
    assert_eq!(list["entries"][2]["replays"], 1);
    assert_eq!(list["entries"][2]["error"], "boom");

    let shown = String::from_utf8_lossy(&sluice_ok(&project, &url, &["dlq", "show", &replayed_id.to_string()]).stdout).into_owned();
    let (_, others) = shown.split_once("\nOther headers\n").unwrap_or_else(|| panic!("{shown}"));
    let others: Vec<&str> = others.lines().take_while(|line| !line.trim().is_empty()).collect();
    assert_eq!(others, ["  tenant: acme"], "{shown}");
    assert!(shown.contains("  sluice-replays:") && shown.contains("  sluice-error:"), "{shown}");
    let plain = String::from_utf8_lossy(&sluice_ok(&project, &url, &["dlq", "show", &fits_id.to_string()]).stdout).into_owned();
    assert!(!plain.contains("Other headers"), "no section without headers of the event's own: {plain}");
}

/// Flags that select entries for `--all` do not go with ids, and bad values are refused, all
/// as usage errors (exit 2) before anything connects: here NATS is not even reachable.
#[test]
fn conflicting_or_bad_flags_are_refused_before_connecting() {
    let project = Project::new();
    let unreachable = "nats://127.0.0.1:1";
    for (args, says) in [
        (&["dlq", "replay", "1", "--function", "a"][..], "with ids, name only the ids"),
        (&["dlq", "replay", "1", "--error", "boom"], "with ids, name only the ids"),
        (&["dlq", "replay", "1", "--since", "1h"], "with ids, name only the ids"),
        (&["dlq", "purge", "1", "--function", "a", "--yes"], "with ids, name only the ids"),
        (&["dlq", "purge", "1", "--older-than", "1h", "--yes"], "with ids, name only the ids"),
        (&["dlq", "purge", "--all", "--function", "no spaces", "--yes"], "--function"),
        (&["dlq", "list", "--since", "yesterday"], "--since"),
        (&["dlq", "replay", "--all", "--function", "no spaces"], "--function"),
    ] {
        let mut all = vec!["--nats", unreachable];
        all.extend_from_slice(args);
        let out = project.sluice(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says) && !stderr.contains(unreachable), "{args:?}: {stderr}");
    }
}
