//! The `kafka` trigger: records of Kafka topics become events, through a consumer group.
//!
//! At least once, in order per partition: records are published to JetStream in the order
//! they arrive (one connection keeps that order), with a bounded window of publishes in
//! flight; a record's offset is stored for commit only after JetStream acknowledged it and
//! every record before it. Offsets are committed every second and at shutdown. After a
//! crash or a rebalance the records after the last commit are read again; their event id
//! (`kafka:<trigger>:<topic>/<partition>/<offset>`) lets the duplicate window remove them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use aws_lambda_events::encodings::MillisecondTimestamp;
use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt as _};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, Timestamp};
use rdkafka::ClientContext;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::health::{Health, Status};
use super::{Target, Trigger, TriggerContext};
use crate::event::Event;

pub const SOURCE: &str = "sluice.kafka";
pub const EVENT_TYPE: &str = "sluice.kafka.record";
/// Publishes in flight at most: bounds memory and how far a slow JetStream lets Kafka run.
const WINDOW: usize = 256;

/// `kind = "kafka"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub kind: String,
    /// Bootstrap servers, comma-separated ("host1:9092,host2:9092").
    pub brokers: String,
    pub topics: Vec<String>,
    /// Consumer group. Default `sluice-<trigger>`.
    #[serde(default)]
    pub group: Option<String>,
    /// Where a new group starts: `earliest` or `latest` (the default, as Lambda's LATEST).
    #[serde(default)]
    pub start: Start,
    /// Further librdkafka settings, passed through (`"security.protocol" = "SASL_SSL"`,
    /// `"sasl.mechanisms" = "PLAIN"`, ...). A value `"$NAME"` is read from the environment.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    pub topic: Option<String>,
    pub function: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    Earliest,
    #[default]
    Latest,
}

/// Settings Sluice owns; `options` cannot change them.
const OWNED: &[&str] = &["group.id", "bootstrap.servers", "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset"];

impl KafkaConfig {
    pub fn target(&self) -> Target {
        crate::triggers::target_of(&self.topic, &self.function)
    }

    pub fn source(&self) -> String {
        format!("{} {}", self.brokers, self.topics.join(","))
    }

    pub fn check(&self) -> Result<(), (String, String)> {
        let field = |f: &str, m: String| Err((f.to_owned(), m));
        if self.brokers.trim().is_empty() || self.brokers.split(',').any(|b| !b.trim().contains(':')) {
            return field("brokers", format!("{:?}: list host:port pairs separated by commas", self.brokers));
        }
        if self.topics.is_empty() {
            return field("topics", "is empty: list the Kafka topics to consume".to_owned());
        }
        for topic in &self.topics {
            let ok = !topic.is_empty()
                && topic.len() <= 249
                && topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                return field("topics", format!("{topic:?} is not a Kafka topic name (letters, digits, `.`, `_`, `-`)"));
            }
        }
        for key in self.options.keys() {
            if OWNED.contains(&key.as_str()) {
                return field("options", format!("{key:?} is set by Sluice (use `group`, `brokers` or `start`)"));
            }
        }
        crate::triggers::check_target(&self.topic, &self.function)
    }
}

/// Logs librdkafka's errors and rebalances against the trigger's name, and keeps the last
/// error for the trigger's health (librdkafka retries connections by itself; the consumer
/// only sees silence).
struct Context {
    trigger: String,
    last_error: Arc<Mutex<Option<String>>>,
}

impl ClientContext for Context {
    /// librdkafka's statistics (every [`STATS_INTERVAL_MS`]): the group's lag over the
    /// partitions this node holds, for `/metrics`.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|topic| topic.partitions.values())
            // Partition -1 is librdkafka's internal one; -1 lag is "not known yet".
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        #[allow(clippy::cast_precision_loss)]
        crate::telemetry::metrics::trigger_lag(&self.trigger, lag as f64);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(trigger = %self.trigger, %error, reason, "Kafka client error; librdkafka keeps retrying.");
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(reason.to_owned());
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                info!(trigger = %self.trigger, partitions = %describe(partitions), "Kafka rebalance: partitions revoked.");
            }
            Rebalance::Error(error) => warn!(trigger = %self.trigger, %error, "Kafka rebalance failed."),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            info!(trigger = %self.trigger, partitions = %describe(partitions), "Kafka rebalance: partitions assigned.");
        }
    }
}

/// How often librdkafka reports the consumer's lag (`sluice_trigger_lag`).
const STATS_INTERVAL_MS: &str = "10000";

fn describe(partitions: &rdkafka::TopicPartitionList) -> String {
    partitions.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect::<Vec<_>>().join(",")
}

pub struct KafkaTrigger {
    config: KafkaConfig,
}

impl KafkaTrigger {
    pub fn new(name: &str, config: &KafkaConfig) -> anyhow::Result<Self> {
        config.check().map_err(|(field, message)| anyhow::anyhow!("trigger {name}: {field}: {message}"))?;
        Ok(Self { config: config.clone() })
    }

    fn consumer(&self, trigger: &str, last_error: Arc<Mutex<Option<String>>>) -> anyhow::Result<StreamConsumer<Context>> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &self.config.brokers)
            .set("group.id", self.config.group.clone().unwrap_or_else(|| format!("sluice-{trigger}")))
            .set("client.id", format!("sluice-{trigger}"))
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", match self.config.start {
                Start::Earliest => "earliest",
                Start::Latest => "latest",
            })
            // A dead member is evicted 6 s after its last heartbeat (the broker's usual minimum);
            // the others learn of the new generation at their next heartbeat, so with one a
            // second they have taken over its partitions within 10 s.
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("statistics.interval.ms", STATS_INTERVAL_MS);
        for (key, value) in &self.config.options {
            let value = match value.strip_prefix('$') {
                Some(var) => std::env::var(var).with_context(|| format!("trigger {trigger}: options.{key}: ${var} is not set"))?,
                None => value.clone(),
            };
            client.set(key, value);
        }
        let consumer: StreamConsumer<Context> = client
            .create_with_context(Context { trigger: trigger.to_owned(), last_error })
            .with_context(|| format!("trigger {trigger}: creating the Kafka consumer"))?;
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).with_context(|| format!("trigger {trigger}: subscribing to {}", topics.join(", ")))?;
        Ok(consumer)
    }
}

impl Trigger for KafkaTrigger {
    fn run(self: Box<Self>, ctx: TriggerContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            super::run_restarting(&ctx, "Kafka consumer", || async {
                let mut health = Health::new(&ctx.name, &ctx.bus).await;
                health.set(Status::Starting, format!("connecting to {}", self.config.brokers)).await;
                self.consume(&ctx, &mut health).await
            })
            .await;
            Ok(())
        })
    }
}

impl KafkaTrigger {
    async fn consume(&self, ctx: &TriggerContext, health: &mut Health) -> anyhow::Result<()> {
        let last_error = Arc::new(Mutex::new(None));
        let consumer = self.consumer(&ctx.name, last_error.clone())?;
        let subject = self.config.target().subject();
        let mut check = tokio::time::interval(Duration::from_secs(1));
        let mut inflight = FuturesOrdered::new();
        let mut healthy = false;
        let mut consumed = 0u64;
        let result: anyhow::Result<()> = loop {
            tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break Ok(()),
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    let (acked, topic, partition, offset): (anyhow::Result<()>, String, i32, i64) = done;
                    if let Err(error) = acked {
                        // Nothing after the last stored offset is committed: a restart of
                        // the consumer reads it again, in order.
                        break Err(error.context(format!("publishing {topic}/{partition}/{offset}")));
                    }
                    if let Err(error) = consumer.store_offset(&topic, partition, offset) {
                        // A revoked partition: its new owner reads from the last commit.
                        warn!(trigger = %ctx.name, %error, topic, partition, offset, "Cannot store the offset (partition revoked?).");
                    }
                }
                _ = check.tick() => {
                    let error = last_error.lock().ok().and_then(|mut e| e.take());
                    if let Some(error) = error {
                        health.set(Status::Unhealthy, format!("{}: {error}", self.config.brokers)).await;
                        healthy = false;
                    }
                }
                received = consumer.recv(), if inflight.len() < WINDOW => {
                    let message = match received {
                        Ok(message) => message,
                        Err(error) => {
                            warn!(trigger = %ctx.name, %error, "Kafka consumer error; continuing.");
                            health.set(Status::Unhealthy, format!("{}: {error}", self.config.brokers)).await;
                            healthy = false;
                            continue;
                        }
                    };
                    if !healthy {
                        healthy = true;
                        health.set(Status::Healthy, format!("consuming {} as group member", self.config.topics.join(","))).await;
                    }
                    consumed += 1;
                    let event = event(&ctx.name, &self.config.brokers, &message);
                    let (topic, partition, offset) = (message.topic().to_owned(), message.partition(), message.offset());
                    drop(message);
                    let ack = match ctx.bus.send_event(subject.clone(), &event).await {
                        Ok(ack) => ack,
                        Err(error) => break Err(error),
                    };
                    inflight.push_back(async move {
                        let acked = ack.await.map(drop).map_err(|e| anyhow::anyhow!("JetStream did not acknowledge: {e}"));
                        (acked, topic, partition, offset)
                    });
                }
            }
        };
        // Finish what is in flight (bounded by the publish timeout) and commit it.
        while let Some((acked, topic, partition, offset)) = inflight.next().await {
            if acked.is_err() {
                break;
            }
            let _ = consumer.store_offset(&topic, partition, offset);
        }
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
            warn!(trigger = %ctx.name, %error, "Cannot commit the last offsets; those records are read again (and deduplicated).");
        }
        info!(trigger = %ctx.name, consumed, "Kafka consumer stopped.");
        result
    }
}

/// The event for one record: a Lambda Kafka event (`SelfManagedKafka`) holding that record.
pub fn event<M: Message>(trigger: &str, brokers: &str, message: &M) -> Event {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let (timestamp, timestamp_type) = match message.timestamp() {
        Timestamp::CreateTime(ms) => (ms, "CREATE_TIME"),
        Timestamp::LogAppendTime(ms) => (ms, "LOG_APPEND_TIME"),
        Timestamp::NotAvailable => (Utc::now().timestamp_millis(), "NO_TIMESTAMP_TYPE"),
    };
    // A time before 1970 is no Kafka timestamp (brokers refuse them), and Lambda's record
    // cannot carry one: such a record gets the time it was read, as one without a timestamp.
    let time = DateTime::<Utc>::from_timestamp_millis(timestamp).filter(|_| timestamp >= 0).unwrap_or_else(Utc::now);
    let mut headers = Vec::new();
    if let Some(list) = message.headers() {
        for header in list.iter() {
            // Lambda gives header values as arrays of signed bytes.
            let value: Vec<i8> = header.value.unwrap_or_default().iter().map(|b| i8::from_ne_bytes([*b])).collect();
            headers.push(HashMap::from([(header.key.to_owned(), value)]));
        }
    }
    let mut record = KafkaRecord::default();
    record.topic = Some(message.topic().to_owned());
    record.partition = i64::from(message.partition());
    record.offset = message.offset();
    record.timestamp = MillisecondTimestamp(time);
    record.timestamp_type = Some(timestamp_type.to_owned());
    record.key = message.key().map(b64);
    record.value = message.payload().map(b64);
    record.headers = headers;
    let mut kafka = KafkaEvent::default();
    kafka.event_source = Some("SelfManagedKafka".to_owned());
    kafka.bootstrap_servers = Some(brokers.to_owned());
    kafka.records = HashMap::from([(format!("{}-{}", message.topic(), message.partition()), vec![record])]);
    // Lambda sends the timestamp as a number of milliseconds; the crate writes a string.
    // The number is that of `time`: a record's own timestamp when it is a time at all.
    let mut json = serde_json::to_value(&kafka).unwrap_or_default();
    if let Some(records) = json.get_mut("records").and_then(serde_json::Value::as_object_mut) {
        for record in records.values_mut().filter_map(serde_json::Value::as_array_mut).flatten() {
            record["timestamp"] = serde_json::Value::from(time.timestamp_millis());
        }
    }
    let data = serde_json::to_vec(&json).unwrap_or_default();
    let mut event = Event::new(SOURCE, EVENT_TYPE, Bytes::from(data));
    event.id = format!("kafka:{trigger}:{}/{}/{}", message.topic(), message.partition(), message.offset());
    event.time = time;
    event.subject = Some(format!("{}/{}", message.topic(), message.partition()));
    event
}

crate::triggers::spec!(KafkaConfig, |config, name, _project| KafkaTrigger::new(name, config));

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

    #[test]
    fn a_record_becomes_a_lambda_kafka_event() {
        let headers = OwnedHeaders::new().insert(Header { key: "trace", value: Some(&[0x01u8, 0xff][..]) });
        let message = OwnedMessage::new(
            Some(b"{\"id\":7}".to_vec()),
            Some(b"order-7".to_vec()),
            "orders".into(),
            Timestamp::CreateTime(1_700_000_000_000),
            2,
            41,
            Some(headers),
        );
        let event = event("orders-in", "127.0.0.1:9092", &message);
        assert_eq!(event.id, "kafka:orders-in:orders/2/41");
        let parsed: KafkaEvent = serde_json::from_slice(&event.data).unwrap();
        assert_eq!(parsed.event_source.as_deref(), Some("SelfManagedKafka"));
        let record = &parsed.records["orders-2"][0];
        assert_eq!(record.offset, 41);
        assert_eq!(record.partition, 2);
        assert_eq!(record.value.as_deref(), Some("eyJpZCI6N30="));
        assert_eq!(record.key.as_deref(), Some("b3JkZXItNw=="));
        assert_eq!(record.timestamp_type.as_deref(), Some("CREATE_TIME"));
        assert_eq!(record.headers[0]["trace"], vec![1i8, -1i8]);
        let json: serde_json::Value = serde_json::from_slice(&event.data).unwrap();
        assert_eq!(json["records"]["orders-2"][0]["timestamp"], 1_700_000_000_000i64, "a number, as Lambda sends it");
    }

    #[test]
    fn checks_name_the_field() {
        let ok = "kind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ntopics = [\"orders\"]\ntopic = \"orders.kafka\"\n";
        let parse = |t: &str| toml::from_str::<KafkaConfig>(t).unwrap();
        assert!(parse(ok).check().is_ok());
        assert_eq!(parse(&ok.replace("127.0.0.1:9092", "localhost")).check().unwrap_err().0, "brokers");
        assert_eq!(parse(&ok.replace("[\"orders\"]", "[\"or ders\"]")).check().unwrap_err().0, "topics");
        assert_eq!(parse(&format!("{ok}[options]\n\"group.id\" = \"x\"\n")).check().unwrap_err().0, "options");
    }
}
