//! The `nats` trigger: bridges messages from NATS subjects that are not Sluice's into events.
//!
//! - Core NATS (`subject`, optional `queue`): NATS itself keeps nothing, so a message sent
//!   while no bridge runs, or dropped because the bridge fell behind (a "slow consumer"), is
//!   gone: at most once at the source. Use the JetStream variant where that matters.
//! - JetStream (`stream` + `consumer`): a durable consumer on an existing stream; each message
//!   is acknowledged to its stream only after Sluice's stream acknowledged the event, so a
//!   crash re-delivers it (at least once), and the event id (stream + sequence) removes the
//!   duplicate within the duplicate window.
//!
//! Headers of the original message are kept on the event; its subject is in
//! `sluice-nats-subject` and is the event's `subject`.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures::future::BoxFuture;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::health::{Health, Status};
use super::mqtt::publish_until_acked;
use super::{Target, Trigger, TriggerContext};
use crate::event::Event;

pub const SOURCE: &str = "sluice.nats";
pub const EVENT_TYPE: &str = "sluice.nats.message";
/// Extension header with the subject the message was sent to.
pub const SUBJECT_HEADER: &str = "sluice-nats-subject";

/// `kind = "nats"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    pub kind: String,
    /// Subject to bridge; wildcards allowed ("legacy.orders.>").
    pub subject: String,
    /// Queue group, so several nodes share the messages instead of each getting a copy.
    /// Default `sluice-<trigger>`. Core NATS only.
    #[serde(default)]
    pub queue: Option<String>,
    /// Another NATS server to read from. Default: the one Sluice uses.
    #[serde(default)]
    pub url: Option<String>,
    /// JetStream variant: the stream to consume (it must exist).
    #[serde(default)]
    pub stream: Option<String>,
    /// JetStream variant: the durable consumer's name, created if missing. Default
    /// `sluice-<trigger>`.
    #[serde(default)]
    pub consumer: Option<String>,
    pub topic: Option<String>,
    pub function: Option<String>,
}

impl NatsConfig {
    pub fn target(&self) -> Target {
        crate::triggers::target_of(&self.topic, &self.function)
    }

    pub fn source(&self) -> String {
        match &self.stream {
            Some(stream) => format!("stream {stream} ({})", self.subject),
            None => format!("subject {}", self.subject),
        }
    }

    pub fn check(&self) -> Result<(), (String, String)> {
        let field = |f: &str, m: String| Err((f.to_owned(), m));
        if let Err(m) = crate::config::validate_topic(&self.subject, true) {
            return field("subject", m);
        }
        // On Sluice's own server, a subject that can match `sluice.…` would feed the bridge
        // its own events forever.
        let first = self.subject.split('.').next().unwrap_or_default();
        if self.url.is_none() && self.stream.is_none() && matches!(first, "sluice" | "*" | ">") {
            return field(
                "subject",
                format!("{:?} can match Sluice's own subjects (sluice.…) on the same server; bridge a narrower subject", self.subject),
            );
        }
        if self.stream.is_some() && self.queue.is_some() {
            return field("queue", "applies to core NATS only; a JetStream consumer is shared by all nodes already".to_owned());
        }
        if self.stream.is_none() && self.consumer.is_some() {
            return field("consumer", "needs `stream` (the JetStream variant)".to_owned());
        }
        if let Some(stream) = &self.stream {
            if stream.is_empty() || stream.contains(['.', '*', '>', ' ']) {
                return field("stream", format!("{stream:?} is not a stream name"));
            }
            if stream.starts_with("SLUICE_") {
                return field("stream", format!("{stream:?} is Sluice's own stream"));
            }
        }
        crate::triggers::check_target(&self.topic, &self.function)
    }
}

pub struct NatsTrigger {
    config: NatsConfig,
}

impl NatsTrigger {
    pub fn new(name: &str, config: &NatsConfig) -> anyhow::Result<Self> {
        config.check().map_err(|(field, message)| anyhow::anyhow!("trigger {name}: {field}: {message}"))?;
        Ok(Self { config: config.clone() })
    }
}

impl Trigger for NatsTrigger {
    fn run(self: Box<Self>, ctx: TriggerContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            super::run_restarting(&ctx, "NATS source", || async {
                let mut health = Health::new(&ctx.name, &ctx.bus).await;
                match &self.config.stream {
                    None => self.core(&ctx, &mut health).await,
                    Some(stream) => self.jetstream(&ctx, &mut health, stream).await,
                }
            })
            .await;
            Ok(())
        })
    }
}

impl NatsTrigger {
    /// The client to read from: Sluice's own, or one to `url`.
    async fn source_client(&self, ctx: &TriggerContext) -> anyhow::Result<async_nats::Client> {
        match &self.config.url {
            None => Ok(ctx.bus.client.clone()),
            Some(url) => async_nats::ConnectOptions::new()
                .name(format!("sluice trigger {}", ctx.name))
                .connect(url.as_str())
                .await
                .with_context(|| format!("connecting to the source server {}", crate::bus::connection::redact_url(url))),
        }
    }

    async fn core(&self, ctx: &TriggerContext, health: &mut Health) -> anyhow::Result<()> {
        let client = self.source_client(ctx).await?;
        let queue = self.config.queue.clone().unwrap_or_else(|| format!("sluice-{}", ctx.name));
        let mut subscription = client
            .queue_subscribe(self.config.subject.clone(), queue.clone())
            .await
            .with_context(|| format!("subscribing to {}", self.config.subject))?;
        client.flush().await.context("subscribing")?;
        info!(trigger = %ctx.name, subject = %self.config.subject, %queue, "Bridging core NATS messages (at most once at the source: core NATS keeps nothing for an absent subscriber).");
        health.set(Status::Healthy, format!("subscribed to {} (queue {queue})", self.config.subject)).await;
        let subject = self.config.target().subject();
        loop {
            let message = tokio::select! {
                () = ctx.shutdown.cancelled() => return Ok(()),
                message = subscription.next() => message,
            };
            let Some(message) = message else { anyhow::bail!("the subscription to {} ended", self.config.subject) };
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| format!("nats:{}:{}", ctx.name, v.as_str()));
            let event = event(message.headers.as_ref(), message.payload, &message.subject, id);
            if !publish_until_acked(ctx, &subject, &event).await {
                return Ok(());
            }
        }
    }

    async fn jetstream(&self, ctx: &TriggerContext, health: &mut Health, stream_name: &str) -> anyhow::Result<()> {
        let client = self.source_client(ctx).await?;
        let js = jetstream::new(client);
        let stream = js
            .get_stream(stream_name)
            .await
            .with_context(|| format!("stream {stream_name:?} not found on the source server: create it, or fix `stream`"))?;
        let durable = self.config.consumer.clone().unwrap_or_else(|| format!("sluice-{}", ctx.name));
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: self.config.subject.clone(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    // Messages a crashed bridge held come back after this.
                    ack_wait: Duration::from_secs(10),
                    max_ack_pending: 256,
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("creating the consumer {durable} on stream {stream_name}"))?;
        // Small batches: a crashed bridge leaves few messages waiting for their ack_wait.
        let mut messages = consumer.stream().max_messages_per_batch(32).messages().await.context("pulling from the source stream")?;
        info!(trigger = %ctx.name, stream = stream_name, consumer = %durable, subject = %self.config.subject, "Bridging a JetStream stream (at least once).");
        health.set(Status::Healthy, format!("consuming stream {stream_name} as {durable}")).await;
        let subject = self.config.target().subject();
        loop {
            let message = tokio::select! {
                () = ctx.shutdown.cancelled() => return Ok(()),
                message = messages.next() => message,
            };
            let Some(message) = message else { anyhow::bail!("the consumer {durable} stopped delivering") };
            let message = message.context("pulling from the source stream")?;
            let seq = message.info().map(|i| i.stream_sequence).map_err(|e| anyhow::anyhow!("{e}"))?;
            let id = Some(format!("nats:{}:{stream_name}:{seq}", ctx.name));
            let event = event(message.headers.as_ref(), message.payload.clone(), &message.subject, id);
            if !publish_until_acked(ctx, &subject, &event).await {
                // Not acknowledged: the source stream delivers it again after ack_wait.
                let _ = message.ack_with(AckKind::Nak(None)).await;
                return Ok(());
            }
            message.double_ack().await.map_err(|e| anyhow::anyhow!("{e}")).context("acknowledging to the source stream")?;
        }
    }
}

/// The event for one bridged message. CloudEvents headers the sender set are honoured (an
/// upstream that already sends events keeps its ids and types); other headers are kept.
pub fn event(headers: Option<&async_nats::HeaderMap>, payload: bytes::Bytes, nats_subject: &str, id: Option<String>) -> Event {
    let had_id = headers.and_then(|h| h.get("ce-id")).is_some();
    let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_ok();
    let mut event = Event::from_message(headers, payload, nats_subject, "nats", 0, chrono::Utc::now());
    // Delivery bookkeeping of the source stream is not part of the message.
    event.extensions.retain(|(name, _)| !name.to_ascii_lowercase().starts_with("nats-"));
    if !had_id {
        event.source = SOURCE.to_owned();
        event.ty = EVENT_TYPE.to_owned();
        event.id = id.unwrap_or_else(|| crate::event::uuid_text(uuid::Uuid::now_v7()));
        if !is_json && event.content_type.is_none() {
            event.content_type = Some("application/octet-stream".to_owned());
        }
    }
    event.subject.get_or_insert_with(|| nats_subject.to_owned());
    event.set_extension(SUBJECT_HEADER, nats_subject);
    event
}

crate::triggers::spec!(NatsConfig, |config, name, _project| NatsTrigger::new(name, config));
