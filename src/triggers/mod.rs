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
pub mod postgres;

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
    /// Row changes of PostgreSQL tables, through a logical replication slot.
    Postgres(postgres::PostgresConfig),
}

/// The kinds this build has.
pub const KINDS: &[&str] = &["cron", "bucket", "kafka", "nats", "mqtt", "postgres"];

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
            Some("postgres") => toml::from_str(text).map(TriggerConfig::Postgres).map_err(|e| ConfigError::from_toml(path, text, &e)),
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
            TriggerConfig::Postgres(_) => "postgres",
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
            TriggerConfig::Postgres(c) => c.check(),
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
            TriggerConfig::Postgres(c) => c.source(),
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
            TriggerConfig::Postgres(c) => c.target(),
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

/// The target a trigger file names: its `topic`, else its `function`.
pub(crate) fn target_of(topic: &Option<String>, function: &Option<String>) -> Target {
    match (topic, function) {
        (Some(topic), _) => Target::Topic(topic.clone()),
        (None, Some(function)) => Target::Function(function.clone()),
        (None, None) => Target::Topic(String::new()),
    }
}

/// Exactly one of `topic` and `function`, and that one valid.
pub(crate) fn check_target(topic: &Option<String>, function: &Option<String>) -> Result<(), (String, String)> {
    match (topic, function) {
        (Some(_), Some(_)) | (None, None) => Err(("topic".to_owned(), "give exactly one of `topic` and `function`".to_owned())),
        (Some(topic), None) => crate::config::validate_topic(topic, false).map_err(|m| ("topic".to_owned(), m)),
        (None, Some(function)) => crate::config::validate_name(function).map_err(|m| ("function".to_owned(), m)),
    }
}

/// Delay before retrying a source after its `failures`-th failure in a row: 400 ms,
/// doubling, at most 5 s.
pub(crate) fn retry_delay(failures: u32) -> std::time::Duration {
    std::time::Duration::from_millis(200 * 2u64.pow(failures.clamp(1, 5))).min(std::time::Duration::from_secs(5))
}

/// Runs a source until it stops cleanly or `sluice up` shuts down. A failure is logged with
/// the trigger's name, shown as unhealthy, and the source is started again after
/// [`retry_delay`].
pub(crate) async fn run_restarting<F, Fut>(ctx: &TriggerContext, what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut health = health::Health::new(&ctx.name, &ctx.bus).await;
    let mut failures = 0u32;
    loop {
        match attempt().await {
            Ok(()) => break,
            Err(error) => {
                failures += 1;
                let message = format!("{error:#}");
                tracing::warn!(trigger = %ctx.name, error = %message, attempt = failures, "{what} failed; starting it again with backoff.");
                health.set(health::Status::Unhealthy, message).await;
                tokio::select! {
                    () = ctx.shutdown.cancelled() => break,
                    () = tokio::time::sleep(retry_delay(failures)) => {}
                }
            }
        }
    }
    health.set(health::Status::Stopped, String::new()).await;
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
        TriggerConfig::Postgres(config) => Ok(Box::new(postgres::PostgresTrigger::new(&def.name, config)?)),
    }
}
