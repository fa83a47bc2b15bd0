//! After a known mix of outcomes (successes, failures that end in the DLQ, timeouts, one cold
//! start) `sluice stats --json` reports exactly those counts, its GB-seconds are the sum of
//! billed durations × memory of the invocation reports, and `/metrics` (parsed as Prometheus
//! text) counts the same. Guards the invocation records and the metrics against drifting
//! from what ran.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use common::*;

fn stats(project: &Project, url: &str) -> serde_json::Value {
    let out = project.sluice(&["--nats", url, "--json", "stats", "flaky", "--since", "1h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The sum of the samples of `metric` whose labels include `labels`.
fn metric(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{metric} is not a number: {s:?}"),
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_and_metrics_count_exactly_what_ran() {
    let nats = NatsServer::start();
    let url = nats.url();
    let project = Project::new();
    project.function(
        "flaky",
        "flaky",
        "subscribe = [\"jobs\"]\nmemory_mb = 64\ntimeout = \"1s\"\n[retry]\nmax_attempts = 2\nbackoff = { initial = \"100ms\", factor = 1.0, max = \"100ms\", jitter = false }",
    );
    let up = project.up(Some(&url));
    let js = async_nats::jetstream::new(nats.client().await);

    // 4 successes; 2 failures and 1 endless loop, each tried twice and dead-lettered.
    let events = [("ok1", "{}"), ("ok2", "{}"), ("ok3", "{}"), ("ok4", "{}"), ("bad1", r#"{"fail":true}"#), ("bad2", r#"{"fail":true}"#), ("slow", r#"{"loop":true}"#)];
    for (id, data) in events {
        let out = project.sluice(&["--nats", &url, "publish", "jobs", "--data", data, "--id", id]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    wait_stream_count(&js, "SLUICE_DLQ", 3, Duration::from_secs(60)).await;
    wait_idle(&js, "flaky", Duration::from_secs(30)).await;

    // Records are stored a moment after the invocations end.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let stats = stats(&project, &url);
        let f = &stats["functions"][0];
        if f["invocations"] == 10 && f["dead_letters"] == 3 {
            break stats;
        }
        assert!(Instant::now() < deadline, "stats never counted the mix: {stats:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(stats["since"].as_str().unwrap().ends_with('Z'), "{stats}");
    assert_eq!(stats["functions"].as_array().unwrap().len(), 1);
    let f = &stats["functions"][0];
    assert_eq!(f["function"], "flaky");
    assert_eq!(f["invocations"], 10, "4 successes + 2×2 failures + 2 timeouts: {f:#}");
    assert_eq!(f["errors"], serde_json::json!({"error": 4, "timeout": 2}));
    assert_eq!(f["retries"], 3);
    assert_eq!(f["dead_letters"], 3);
    assert_eq!(f["cold_starts"], 1, "only the first invocation after loading the module");
    assert_eq!(f["throttles"], 0);
    let p = &f["duration_ms"];
    assert!(p["p50"].as_f64().unwrap() <= p["p95"].as_f64().unwrap() && p["p95"].as_f64().unwrap() <= p["p99"].as_f64().unwrap(), "{p}");
    assert!(p["p99"].as_f64().unwrap() >= 1000.0, "the timeouts ran a second: {p}");

    // GB-seconds are the reports' billed durations × 64 MB.
    let out = project.sluice(&["--nats", &url, "logs", "flaky", "--json", "--since", "1h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reports: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["type"] == "invocation")
        .collect();
    assert_eq!(reports.len(), 10);
    let billed_ms: u64 = reports.iter().map(|r| r["billed_duration_ms"].as_u64().unwrap()).sum();
    let gb_seconds = billed_ms as f64 * 64.0 / 1024.0 / 1000.0;
    assert!((f["gb_seconds"].as_f64().unwrap() - gb_seconds).abs() < 1e-9, "{} vs {gb_seconds}", f["gb_seconds"]);
    let cost = &f["cost_usd"];
    assert!((cost["requests"].as_f64().unwrap() - 10.0 * 0.2 / 1e6).abs() < 1e-15, "{cost}");
    assert!((cost["duration"].as_f64().unwrap() - gb_seconds * 0.000_016_666_7).abs() < 1e-15, "{cost}");
    assert_eq!(cost["total_after_free_tier"], 0.0);

    // The node's /metrics counts the same.
    let text = reqwest::get(format!("{}/metrics", up.http.as_ref().unwrap())).await.unwrap().text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let flaky = [("function", "flaky")];
    assert_eq!(metric(&scrape, "sluice_invocations_total", &flaky), 10.0, "{text}");
    assert_eq!(metric(&scrape, "sluice_invocations_total", &[("function", "flaky"), ("outcome", "success")]), 4.0);
    assert_eq!(metric(&scrape, "sluice_invocations_total", &[("function", "flaky"), ("outcome", "error")]), 4.0);
    assert_eq!(metric(&scrape, "sluice_invocations_total", &[("function", "flaky"), ("outcome", "timeout")]), 2.0);
    assert_eq!(metric(&scrape, "sluice_retries_total", &flaky), 3.0);
    assert_eq!(metric(&scrape, "sluice_dead_letters_total", &flaky), 3.0);
    assert_eq!(metric(&scrape, "sluice_cold_starts_total", &flaky), 1.0);
    assert!(text.lines().any(|l| l == "sluice_invocation_duration_seconds_count{function=\"flaky\"} 10"), "{text}");
    assert!((metric(&scrape, "sluice_gb_seconds_total", &flaky) - gb_seconds).abs() < 1e-9);
    assert_eq!(metric(&scrape, "sluice_consumer_pending", &flaky), 0.0);
    assert_eq!(metric(&scrape, "sluice_consumer_ack_pending", &flaky), 0.0);
    assert!(text.contains("sluice_consumer_pending{function=\"flaky\"}"), "{text}");
}
