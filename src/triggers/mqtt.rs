//! The `mqtt` trigger: messages on an MQTT topic filter become events.
//!
//! QoS 1 with a persistent session (`clean_session = false`, a fixed client id): while
//! Sluice is disconnected the broker queues the messages and delivers them at the next
//! connection. Each message is published to JetStream first; its PUBACK goes to the broker
//! only after JetStream acknowledged, so a crash in between makes the broker deliver it
//! again (at-least-once). Messages are handled one at a time, in order: a slow JetStream
//! slows the subscription, and the broker holds what is not yet acknowledged.
//!
//! **Several nodes.** One node at a time holds the subscription: the holder of the
//! trigger's lease (`lease.<trigger>` in `sluice_state`, see [`crate::bus::lease`]) connects
//! with the fixed client id; the others stand by. When the holder dies, the broker keeps
//! the session: it queues new QoS 1 messages and keeps the ones delivered but not
//! acknowledged, and the node that takes the lease over (within about 7 s) resumes that
//! session and receives them all. An MQTT shared subscription (`$share/<group>/<filter>`)
//! was the alternative, but each member needs its own session: the messages a killed member
//! held unacknowledged, and those queued to its persistent session, stay with that session
//! until a client with its id comes back, which on another node never happens (Mosquitto
//! does not hand them to the other members). The lease loses nothing; it also keeps two
//! nodes from connecting with the same client id, which would make the broker disconnect
//! each in turn.
//!
//! A QoS 1 message's event id is `mqtt:<trigger>:<packet id>:<hash of topic and payload>`:
//! the broker sends an unacknowledged message again with the same packet id, so the
//! duplicate window removes the copy a killed node had already stored. (Two different
//! messages collide only if the same topic and payload come back with the same packet id,
//! after 65,535 others, within the duplicate window.) QoS 0 messages get a UUID.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS, Transport};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::health::{Health, Status};
use super::{Target, Trigger, TriggerContext};
use crate::event::Event;

/// CloudEvents `source` and `type` of MQTT messages.
pub const SOURCE: &str = "sluice.mqtt";
pub const EVENT_TYPE: &str = "sluice.mqtt.message";
/// Extension header with the MQTT topic a message was published to.
pub const TOPIC_HEADER: &str = "sluice-mqtt-topic";

/// `kind = "mqtt"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub kind: String,
    /// `mqtt://host:port` (default port 1883) or `mqtts://host:port` (TLS, default 8883).
    pub broker: String,
    /// Topic filter; MQTT wildcards `+` and `#` allowed.
    pub filter: String,
    /// 1 (at least once; the default) or 0 (at most once).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Client id of the persistent session. Default `sluice-<trigger>`. On several nodes,
    /// only the lease holder connects with it.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Environment variables with the user name and password, if the broker wants them.
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    pub topic: Option<String>,
    pub function: Option<String>,
}

const fn default_qos() -> u8 {
    1
}

impl MqttConfig {
    pub fn target(&self) -> Target {
        crate::triggers::target_of(&self.topic, &self.function)
    }

    pub fn source(&self) -> String {
        format!("{} {}", self.broker, self.filter)
    }

    /// Host, port and whether to use TLS.
    fn address(&self) -> Result<(String, u16, bool), String> {
        let url = url::Url::parse(&self.broker).map_err(|e| format!("{:?} is not a URL ({e}); write mqtt://host:1883", self.broker))?;
        let tls = match url.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => return Err(format!("scheme {other:?} is not mqtt:// or mqtts://")),
        };
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| format!("{:?} has no host", self.broker))?;
        Ok((host.to_owned(), url.port().unwrap_or(if tls { 8883 } else { 1883 }), tls))
    }

    pub fn check(&self) -> Result<(), (String, String)> {
        let field = |f: &str, m: String| Err((f.to_owned(), m));
        if let Err(m) = self.address() {
            return field("broker", m);
        }
        if self.filter.is_empty() || self.filter.contains('\0') {
            return field("filter", "must be a non-empty MQTT topic filter such as \"devices/+/telemetry\"".to_owned());
        }
        for (i, level) in self.filter.split('/').enumerate() {
            let last = i + 1 == self.filter.split('/').count();
            if (level.contains('#') && (level != "#" || !last)) || (level.contains('+') && level != "+") {
                return field("filter", format!("{:?}: `+` must be a whole level and `#` the whole last level", self.filter));
            }
        }
        if self.qos > 1 {
            return field("qos", format!("{} is not supported: use 1 (at least once) or 0 (at most once)", self.qos));
        }
        if self.username_env.is_some() != self.password_env.is_some() {
            return field("username_env", "set both username_env and password_env, or neither".to_owned());
        }
        crate::triggers::check_target(&self.topic, &self.function)
    }
}

pub struct MqttTrigger {
    config: MqttConfig,
    options: MqttOptions,
}

impl MqttTrigger {
    pub fn new(name: &str, config: &MqttConfig) -> anyhow::Result<Self> {
        config.check().map_err(|(field, message)| anyhow::anyhow!("trigger {name}: {field}: {message}"))?;
        let (host, port, tls) = config.address().map_err(|m| anyhow::anyhow!("trigger {name}: broker: {m}"))?;
        let client_id = config.client_id.clone().unwrap_or_else(|| format!("sluice-{name}"));
        let mut options = MqttOptions::new(client_id, host, port);
        options.set_clean_session(false).set_manual_acks(true).set_keep_alive(Duration::from_secs(30));
        if tls {
            options.set_transport(Transport::tls_with_default_config());
        }
        if let (Some(user), Some(password)) = (&config.username_env, &config.password_env) {
            let read = |var: &str| std::env::var(var).map_err(|_| anyhow::anyhow!("trigger {name}: ${var} is not set"));
            options.set_credentials(read(user)?, read(password)?);
        }
        Ok(Self { config: config.clone(), options })
    }
}

impl Trigger for MqttTrigger {
    fn run(self: Box<Self>, ctx: TriggerContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move { super::run_leased(&ctx, |inner| self.run_loop(inner)).await })
    }
}

impl MqttTrigger {
    async fn run_loop(&self, ctx: TriggerContext) -> anyhow::Result<()> {
        let mut health = Health::new(&ctx.name, &ctx.bus).await;
        health.set(Status::Starting, format!("connecting to {}", self.config.broker)).await;
        let qos = if self.config.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
        let (client, mut eventloop) = AsyncClient::new(self.options.clone(), 64);
        // The event loop runs in its own task: it must keep being polled to send our PUBACKs
        // (and keep-alives) while this task waits for JetStream. A bounded channel between
        // them holds back the loop when JetStream is slow.
        let (events, mut incoming) = tokio::sync::mpsc::channel(64);
        let poller = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let polled = eventloop.poll().await;
                let failed = polled.is_err();
                if events.send(polled).await.is_err() {
                    return;
                }
                if failed {
                    failures += 1;
                    tokio::time::sleep(super::retry_delay(failures)).await;
                } else {
                    failures = 0;
                }
            }
        });
        let subject = self.config.target().subject();
        let mut failures = 0u32;
        loop {
            let polled = tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                polled = incoming.recv() => polled,
            };
            let Some(polled) = polled else { break };
            match polled {
                Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                    failures = 0;
                    info!(trigger = %ctx.name, broker = %self.config.broker, session_present = ack.session_present, "Connected to the MQTT broker.");
                    // A kept session keeps its subscription; subscribing again is harmless.
                    if let Err(error) = client.subscribe(self.config.filter.clone(), qos).await {
                        warn!(trigger = %ctx.name, %error, "Cannot subscribe.");
                    }
                    health.set(Status::Healthy, format!("subscribed to {}", self.config.filter)).await;
                }
                Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => {
                    if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                        let message = format!("the broker refused the subscription to {:?} (check its ACLs)", self.config.filter);
                        warn!(trigger = %ctx.name, "{message}");
                        health.set(Status::Unhealthy, message).await;
                    }
                }
                Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                    let mut event = event(&publish);
                    if publish.qos != QoS::AtMostOnce {
                        event.id = message_id(&ctx.name, &publish);
                    }
                    if !publish_until_acked(&ctx, &subject, &event).await {
                        break;
                    }
                    if publish.qos != QoS::AtMostOnce {
                        if let Err(error) = client.ack(&publish).await {
                            warn!(trigger = %ctx.name, %error, "Cannot acknowledge to the broker; it will deliver the message again.");
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    failures += 1;
                    let message = format!("cannot reach the MQTT broker at {}: {error}", self.config.broker);
                    warn!(trigger = %ctx.name, error = %error, attempt = failures, "MQTT connection failed; reconnecting with backoff.");
                    health.set(Status::Unhealthy, message).await;
                }
            }
        }
        poller.abort();
        let _ = client.disconnect().await;
        health.set(Status::Stopped, String::new()).await;
        Ok(())
    }
}

/// The event for one MQTT message: JSON payloads as they are, anything else as
/// `{"payload_base64": "...", "base64": true}`; the MQTT topic is the event's subject.
pub fn event(publish: &rumqttc::Publish) -> Event {
    let topic = publish.topic.clone();
    let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&publish.payload).is_ok();
    let data = if is_json {
        publish.payload.clone()
    } else {
        let wrapped = serde_json::json!({
            "payload_base64": base64::engine::general_purpose::STANDARD.encode(&publish.payload),
            "base64": true,
        });
        Bytes::from(wrapped.to_string())
    };
    let mut event = Event::new(SOURCE, EVENT_TYPE, data);
    event.subject = Some(topic.clone());
    event.set_extension(TOPIC_HEADER, &topic);
    event
}

/// The event id of a QoS 1 message: the same for the broker's redelivery of it (same
/// packet id, topic and payload), so the duplicate window removes a second copy.
pub fn message_id(trigger: &str, publish: &rumqttc::Publish) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(publish.topic.as_bytes());
    hash.update([0]);
    hash.update(&publish.payload);
    let digest = hash.finalize();
    format!("mqtt:{trigger}:{}:{}", publish.pkid, hex::encode(&digest[..12]))
}

/// Publishes until JetStream acknowledges, backing off; `false` on shutdown.
pub(super) async fn publish_until_acked(ctx: &TriggerContext, subject: &str, event: &Event) -> bool {
    let mut delay = Duration::from_millis(100);
    loop {
        match ctx.bus.publish_event(subject.to_owned(), event).await {
            Ok(_) => return true,
            Err(error) => {
                warn!(trigger = %ctx.name, error = %format!("{error:#}"), retry_in = ?delay, "Cannot publish to JetStream; holding the source back and trying again.");
            }
        }
        tokio::select! {
            () = ctx.shutdown.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

crate::triggers::spec!(MqttConfig, |config, name, _project| MqttTrigger::new(name, config));

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> MqttConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn checks_name_the_field() {
        let ok = "kind = \"mqtt\"\nbroker = \"mqtt://127.0.0.1:1883\"\nfilter = \"devices/+/telemetry\"\ntopic = \"iot\"\n";
        assert!(parse(ok).check().is_ok());
        assert_eq!(parse(&ok.replace("mqtt://127.0.0.1:1883", "http://x")).check().unwrap_err().0, "broker");
        assert_eq!(parse(&ok.replace("devices/+/telemetry", "devices/a+/#/x")).check().unwrap_err().0, "filter");
        assert_eq!(parse(&format!("{ok}qos = 2\n")).check().unwrap_err().0, "qos");
        assert_eq!(parse(ok).address().unwrap(), ("127.0.0.1".to_owned(), 1883, false));
    }

    #[test]
    fn json_payloads_pass_as_is_and_others_are_base64() {
        let json = rumqttc::Publish::new("devices/7/telemetry", QoS::AtLeastOnce, br#"{"t":21.5}"#.to_vec());
        let event = event(&json);
        assert_eq!(&event.data[..], br#"{"t":21.5}"#);
        assert_eq!(event.subject.as_deref(), Some("devices/7/telemetry"));
        assert_eq!(event.extension(TOPIC_HEADER), Some("devices/7/telemetry"));
        let binary = rumqttc::Publish::new("devices/7/raw", QoS::AtLeastOnce, vec![0xff, 0x00, 0x10]);
        let data: serde_json::Value = serde_json::from_slice(&event_data(&binary)).unwrap();
        assert_eq!(data["base64"], true);
        assert_eq!(data["payload_base64"], "/wAQ");
    }

    #[test]
    fn a_redelivery_has_the_same_id_and_other_messages_do_not() {
        let mut first = rumqttc::Publish::new("devices/7/telemetry", QoS::AtLeastOnce, br#"{"seq":1}"#.to_vec());
        first.pkid = 42;
        let mut again = first.clone();
        again.dup = true;
        assert_eq!(message_id("t", &first), message_id("t", &again));
        let mut other = first.clone();
        other.pkid = 43;
        assert_ne!(message_id("t", &first), message_id("t", &other));
        let mut payload = first.clone();
        payload.payload = Bytes::from_static(br#"{"seq":2}"#);
        assert_ne!(message_id("t", &first), message_id("t", &payload));
        assert!(message_id("t", &first).starts_with("mqtt:t:42:"));
    }

    fn event_data(publish: &rumqttc::Publish) -> Bytes {
        event(publish).data
    }
}
