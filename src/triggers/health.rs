//! Trigger health, shared through KV `sluice_state` (key `health.<trigger>`) so that
//! `sluice triggers list` shows whether each source is reachable, on any node.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tracing::debug;

/// How a trigger's source is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Connecting or subscribing.
    Starting,
    /// Connected and consuming.
    Healthy,
    /// The source cannot be reached or refused us; retrying.
    Unhealthy,
    /// Stopped with `sluice up`.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Starting => "starting",
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
            Status::Stopped => "stopped",
        })
    }
}

/// The record in KV.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub status: Status,
    /// What is wrong (unhealthy) or what it consumes (healthy).
    #[serde(default)]
    pub message: String,
    /// When the status last changed.
    pub since: String,
    /// The node reporting: host name and process id.
    pub node: String,
    /// Source-specific figures (e.g. a replication slot's lag).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

pub fn key(trigger: &str) -> String {
    format!("health.{trigger}")
}

/// Writes one trigger's health; a no-op when the status and message did not change.
///
/// Several writers report for one trigger (the restart loop its failures, each try of the
/// source its progress), so what was last written is kept per trigger for the whole
/// process: a failure repeated after a try reported `starting` is written again.
pub struct Health {
    trigger: String,
    store: Option<async_nats::jetstream::kv::Store>,
}

/// What this process last wrote for each trigger.
static LAST: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, (Status, String)>>> =
    std::sync::LazyLock::new(Default::default);

impl Health {
    pub async fn new(trigger: &str, bus: &crate::bus::Bus) -> Self {
        let store = bus.state().await.ok();
        Self { trigger: trigger.to_owned(), store }
    }

    fn last(&self) -> Option<(Status, String)> {
        LAST.lock().ok()?.get(&self.trigger).cloned()
    }

    fn remember(&self, current: (Status, String)) {
        if let Ok(mut last) = LAST.lock() {
            last.insert(self.trigger.clone(), current);
        }
    }

    pub async fn set(&mut self, status: Status, message: impl Into<String>) {
        self.set_with(status, message, serde_json::Map::new()).await;
    }

    pub async fn set_with(&mut self, status: Status, message: impl Into<String>, details: serde_json::Map<String, serde_json::Value>) {
        let message = message.into();
        let current = (status, message.clone());
        if self.last().as_ref() == Some(&current) && details.is_empty() {
            return;
        }
        let Some(store) = &self.store else { return };
        let report = Report {
            status,
            message,
            since: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            node: node(),
            details,
        };
        let Ok(value) = serde_json::to_vec(&report) else { return };
        match store.put(key(&self.trigger), Bytes::from(value)).await {
            Ok(_) => self.remember(current),
            Err(error) => debug!(trigger = %self.trigger, %error, "Cannot record the trigger's health."),
        }
    }
}

/// Reads the health of `trigger`, if any node reported it.
pub async fn read(store: &async_nats::jetstream::kv::Store, trigger: &str) -> Option<Report> {
    let value = store.get(key(trigger)).await.ok()??;
    serde_json::from_slice(&value).ok()
}

fn node() -> String {
    crate::telemetry::logs::node_name()
}

/// How long ago an RFC 3339 time was, for listings ("3m ago").
pub fn ago(time: &str) -> String {
    let Ok(then) = DateTime::parse_from_rfc3339(time) else { return String::new() };
    let seconds = (Utc::now() - then.with_timezone(&Utc)).num_seconds().max(0);
    let text = humantime::format_duration(std::time::Duration::from_secs(u64::try_from(seconds).unwrap_or(0))).to_string();
    let coarse = text.split(' ').next().unwrap_or_default();
    format!("{coarse} ago")
}
