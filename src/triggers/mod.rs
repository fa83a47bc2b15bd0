//! Triggers turn something that happened outside into events on the bus. Each kind lives in
//! its own folder and implements [`Trigger`]; adding a kind touches its folder and one line
//! in [`TriggerConfig`] and [`build`].
//!
//! A trigger publishes through [`TriggerContext::bus`] and advances its own cursor (last
//! fired tick, offset, LSN) only after JetStream acknowledged the publish.

pub mod bucket;
pub mod cron;
pub mod health;
pub mod kafka;
pub mod mqtt;
pub mod nats;

use std::path::PathBuf;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;

/// `triggers/<name>.toml`; `kind` selects the adapter.
///
/// Parsed in two steps (read `kind`, then the adapter's own struct from the same text)
/// rather than as a serde-tagged enum: a tagged enum buffers the document and loses the
/// line and key of an error, which users need to fix their file.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum TriggerConfig {
    /// A schedule: fires Scheduled Events.
    Cron(cron::CronConfig),
    /// A watched bucket: fires S3 event notifications.
    Bucket(bucket::BucketConfig),
    /// Kafka topics through a consumer group.
    Kafka(kafka::KafkaConfig),
    /// A NATS subject (core) or stream (JetStream) not Sluice's own.
    Nats(nats::NatsConfig),
    /// An MQTT topic filter.
    Mqtt(mqtt::MqttConfig),
}

/// The kinds this build has.
pub const KINDS: &[&str] = &["cron", "bucket", "kafka", "nats", "mqtt"];

impl TriggerConfig {
    /// Parses one trigger file.
    pub fn parse(path: &std::path::Path, text: &str) -> Result<Self, crate::config::ConfigError> {
        use crate::config::ConfigError;
        #[derive(Deserialize)]
        struct Kind {
            kind: Option<String>,
        }
        let kind: Kind = toml::from_str(text).map_err(|e| ConfigError::from_toml(path, text, &e))?;
        match kind.kind.as_deref() {
            Some("cron") => toml::from_str(text).map(TriggerConfig::Cron).map_err(|e| ConfigError::from_toml(path, text, &e)),
            Some("bucket") => toml::from_str(text).map(TriggerConfig::Bucket).map_err(|e| ConfigError::from_toml(path, text, &e)),
            Some("kafka") => toml::from_str(text).map(TriggerConfig::Kafka).map_err(|e| ConfigError::from_toml(path, text, &e)),
            Some("nats") => toml::from_str(text).map(TriggerConfig::Nats).map_err(|e| ConfigError::from_toml(path, text, &e)),
            Some("mqtt") => toml::from_str(text).map(TriggerConfig::Mqtt).map_err(|e| ConfigError::from_toml(path, text, &e)),
            Some(other) => Err(ConfigError::new(
                path,
                Some("kind"),
                format!("unknown trigger kind {other:?}; this build has: {}", KINDS.join(", ")),
            )),
            None => Err(ConfigError::new(path, Some("kind"), format!("missing; set one of: {}", KINDS.join(", ")))),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            TriggerConfig::Cron(_) => "cron",
            TriggerConfig::Bucket(_) => "bucket",
            TriggerConfig::Kafka(_) => "kafka",
            TriggerConfig::Nats(_) => "nats",
            TriggerConfig::Mqtt(_) => "mqtt",
        }
    }

    /// Semantic checks of the adapter's settings: the offending field and what is wrong.
    pub fn check(&self) -> Result<(), (String, String)> {
        match self {
            TriggerConfig::Cron(c) => c.check().map(drop),
            TriggerConfig::Bucket(c) => c.check(),
            TriggerConfig::Kafka(c) => c.check(),
            TriggerConfig::Nats(c) => c.check(),
            TriggerConfig::Mqtt(c) => c.check(),
        }
    }

    /// What it watches, in a word or two: a schedule, a bucket.
    pub fn source(&self) -> String {
        match self {
            TriggerConfig::Cron(c) => format!("{} ({})", c.schedule, c.timezone),
            TriggerConfig::Bucket(c) => c.source(),
            TriggerConfig::Kafka(c) => c.source(),
            TriggerConfig::Nats(c) => c.source(),
            TriggerConfig::Mqtt(c) => c.source(),
        }
    }

    /// Where its events go: `topic <t>` or `function <f>`.
    pub fn target(&self) -> Target {
        match self {
            TriggerConfig::Cron(c) => c.target(),
            TriggerConfig::Bucket(c) => c.target(),
            TriggerConfig::Kafka(c) => c.target(),
            TriggerConfig::Nats(c) => c.target(),
            TriggerConfig::Mqtt(c) => c.target(),
        }
    }
}

/// Where a trigger delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Topic(String),
    Function(String),
}

impl Target {
    pub fn subject(&self) -> String {
        match self {
            Target::Topic(topic) => crate::bus::topic_subject(topic),
            Target::Function(function) => crate::bus::direct_subject(function),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Topic(topic) => write!(f, "topic {topic}"),
            Target::Function(function) => write!(f, "function {function}"),
        }
    }
}

/// A trigger as loaded from the project.
#[derive(Debug, Clone)]
pub struct TriggerDef {
    /// The file name without `.toml`.
    pub name: String,
    pub path: PathBuf,
    pub config: TriggerConfig,
}

/// What a running trigger gets.
pub struct TriggerContext {
    pub name: String,
    pub bus: Bus,
    pub shutdown: CancellationToken,
}

/// A running adapter: works until `ctx.shutdown`, then returns.
pub trait Trigger: Send {
    fn run(self: Box<Self>, ctx: TriggerContext) -> BoxFuture<'static, anyhow::Result<()>>;
}

/// The registry: the adapter for a definition of `project`.
pub fn build(def: &TriggerDef, project: &crate::config::Project) -> anyhow::Result<Box<dyn Trigger>> {
    match &def.config {
        TriggerConfig::Cron(config) => Ok(Box::new(cron::CronTrigger::new(&def.name, config)?)),
        TriggerConfig::Bucket(config) => Ok(Box::new(bucket::BucketTrigger::new(&def.name, config, &project.buckets_dir())?)),
        TriggerConfig::Kafka(config) => Ok(Box::new(kafka::KafkaTrigger::new(&def.name, config)?)),
        TriggerConfig::Nats(config) => Ok(Box::new(nats::NatsTrigger::new(&def.name, config)?)),
        TriggerConfig::Mqtt(config) => Ok(Box::new(mqtt::MqttTrigger::new(&def.name, config)?)),
    }
}
