//! Helpers for the dispatcher's tests: invocations read back from `sluice up`'s log, and the
//! state of a function's durable consumer.

use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, Utc};

/// One invocation as `sluice up` logged it (`Invocation succeeded.` / `Invocation failed.`).
#[derive(Debug, Clone)]
pub struct Run {
    pub event_id: String,
    pub attempt: u32,
    pub succeeded: bool,
    /// When the sandbox started: the log line's time minus its `duration_ms`.
    pub start: DateTime<Utc>,
    /// When the outcome was logged (the line's timestamp).
    pub end: DateTime<Utc>,
}

/// Every invocation in `log`, in log order.
pub fn runs(log: &str) -> Vec<Run> {
    log.lines()
        .filter_map(|line| {
            let succeeded = if line.contains(" Invocation succeeded. ") {
                true
            } else if line.contains(" Invocation failed. ") {
                false
            } else {
                return None;
            };
            let stamp = line.split_whitespace().next()?;
            let end = DateTime::parse_from_rfc3339(stamp)
                .unwrap_or_else(|e| panic!("log line without an RFC 3339 timestamp ({e}): {line}"))
                .with_timezone(&Utc);
            let duration_ms: f64 = field(line, "duration_ms").parse().unwrap_or_else(|e| panic!("duration_ms ({e}): {line}"));
            let duration = chrono::Duration::microseconds((duration_ms * 1000.0).round() as i64);
            Some(Run {
                event_id: field(line, "event_id"),
                attempt: field(line, "attempt").parse().unwrap_or_else(|e| panic!("attempt ({e}): {line}")),
                succeeded,
                start: end - duration,
                end,
            })
        })
        .collect()
}

/// The invocations of one event, in log order.
pub fn runs_of(log: &str, event_id: &str) -> Vec<Run> {
    runs(log).into_iter().filter(|run| run.event_id == event_id).collect()
}

/// The value of `key=value` (or `key="value"`) in a log line; panics when it is missing.
pub fn field(line: &str, key: &str) -> String {
    let marker = format!(" {key}=");
    let at = line.find(&marker).unwrap_or_else(|| panic!("no {key} in log line: {line}")) + marker.len();
    let rest = &line[at..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap_or_default().to_owned(),
        None => rest.split_whitespace().next().unwrap_or_default().to_owned(),
    }
}

/// Milliseconds from `from` to `to` (negative when `to` is earlier).
pub fn millis_between(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds()
}

/// The durable consumer of `function` as the server reports it now.
pub async fn consumer_info(js: &jetstream::Context, function: &str) -> consumer::Info {
    let stream = js.get_stream("SLUICE_EVENTS").await.unwrap();
    stream.consumer_info(function).await.unwrap()
}

/// Adds settings to `sluice.toml`'s `[runtime]` table (the last table `Project::new` writes).
pub fn runtime_settings(project: &super::Project, lines: &str) {
    let path = project.path().join("sluice.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let tables: Vec<&str> = text.lines().filter(|line| line.trim_start().starts_with('[')).collect();
    assert_eq!(tables, ["[runtime]"], "unexpected sluice.toml:\n{text}");
    text.push_str(lines);
    text.push('\n');
    std::fs::write(path, text).unwrap();
}
