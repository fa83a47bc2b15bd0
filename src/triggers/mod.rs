//! Triggers turn something that happened outside into events on the bus. Each kind lives in
//! its own folder: its config implements [`TriggerSpec`], its adapter [`Trigger`]; adding a
//! kind touches its folder and one line in [`REGISTRY`].
//!
//! A trigger publishes through [`TriggerContext::bus`] and advances its own cursor (last
//! fired tick, offset, LSN) only after JetStream acknowledged the publish.

pub mod bucket;
pub mod cron;
pub mod health;
pub mod http;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod postgres;

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;

/// A trigger file's settings, whatever its kind: each kind's config struct implements it.
pub trait TriggerSpec: std::fmt::Debug + Send + Sync + 'static {
    /// Semantic checks of the adapter's settings: the offending field and what is wrong.
    fn check(&self) -> Result<(), (String, String)>;
    /// What it watches, in a word or two: a schedule, a bucket.
    fn source(&self) -> String;
    /// Where its events go (one target for most kinds; an `http` trigger has one per route).
    fn targets(&self) -> Vec<Target>;
    /// Functions that must be in the project: by default every function target. An `http`
    /// route may name a function another node serves.
    fn required_functions(&self) -> Vec<String> {
        self.targets()
            .into_iter()
            .filter_map(|t| match t {
                Target::Function(f) => Some(f),
                Target::Topic(_) => None,
            })
            .collect()
    }
    /// The running adapter, or `None` for a kind served by a shared listener (`http`: the
    /// gateway that `sluice up` runs for every http trigger at once).
    fn build(&self, name: &str, project: &crate::config::Project) -> anyhow::Result<Option<Box<dyn Trigger>>>;
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Implements [`TriggerSpec`] for a kind with one target, whose config has inherent
/// `check`, `source` and `target`, and whose adapter `$build` makes.
macro_rules! spec {
    ($config:ty, |$this:ident, $name:ident, $project:ident| $build:expr) => {
        impl $crate::triggers::TriggerSpec for $config {
            fn check(&self) -> Result<(), (String, String)> {
                <$config>::check(self).map(drop)
            }

            fn source(&self) -> String {
                <$config>::source(self)
            }

            fn targets(&self) -> Vec<$crate::triggers::Target> {
                vec![self.target()]
            }

            fn build(&self, $name: &str, $project: &$crate::config::Project) -> anyhow::Result<Option<Box<dyn $crate::triggers::Trigger>>> {
                let $this = self;
                Ok(Some(Box::new($build?)))
            }

            fn as_any(&self) -> &dyn std::any::Any {
                self
            }
        }
    };
}
pub(crate) use spec;

/// One entry of the registry: a kind's name and how its file is parsed.
struct Kind {
    name: &'static str,
    parse: fn(&str) -> Result<Arc<dyn TriggerSpec>, toml::de::Error>,
}

const fn kind<T: TriggerSpec + serde::de::DeserializeOwned>(name: &'static str) -> Kind {
    fn parse<T: TriggerSpec + serde::de::DeserializeOwned>(text: &str) -> Result<Arc<dyn TriggerSpec>, toml::de::Error> {
        toml::from_str::<T>(text).map(|config| Arc::new(config) as Arc<dyn TriggerSpec>)
    }
    Kind { name, parse: parse::<T> }
}

/// The registry: every kind this build has. Adding a kind is its folder and one line here.
const REGISTRY: &[Kind] = &[
    kind::<cron::CronConfig>("cron"),
    kind::<bucket::BucketConfig>("bucket"),
    kind::<kafka::KafkaConfig>("kafka"),
    kind::<nats::NatsConfig>("nats"),
    kind::<mqtt::MqttConfig>("mqtt"),
    kind::<postgres::PostgresConfig>("postgres"),
    kind::<http::HttpConfig>("http"),
];

/// The kinds this build has.
pub fn kinds() -> Vec<&'static str> {
    REGISTRY.iter().map(|k| k.name).collect()
}

/// `triggers/<name>.toml`; `kind` selects the adapter.
///
/// Parsed in two steps (read `kind`, then the adapter's own struct from the same text)
/// rather than as a serde-tagged enum: a tagged enum buffers the document and loses the
/// line and key of an error, which users need to fix their file.
#[derive(Debug, Clone)]
pub struct TriggerConfig {
    kind: &'static str,
    spec: Arc<dyn TriggerSpec>,
}

impl TriggerConfig {
    /// Parses one trigger file.
    pub fn parse(path: &std::path::Path, text: &str) -> Result<Self, crate::config::ConfigError> {
        use crate::config::ConfigError;
        #[derive(Deserialize)]
        struct KindField {
            kind: Option<String>,
        }
        let field: KindField = toml::from_str(text).map_err(|e| ConfigError::from_toml(path, text, &e))?;
        let Some(kind) = field.kind else {
            return Err(ConfigError::new(path, Some("kind"), format!("missing; set one of: {}", kinds().join(", "))));
        };
        let Some(entry) = REGISTRY.iter().find(|k| k.name == kind) else {
            return Err(ConfigError::new(
                path,
                Some("kind"),
                format!("unknown trigger kind {kind:?}; this build has: {}", kinds().join(", ")),
            ));
        };
        let spec = (entry.parse)(text).map_err(|e| ConfigError::from_toml(path, text, &e))?;
        Ok(Self { kind: entry.name, spec })
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The kind's own settings, when they are of type `T`.
    pub fn get<T: TriggerSpec>(&self) -> Option<&T> {
        self.spec.as_any().downcast_ref::<T>()
    }
}

impl std::ops::Deref for TriggerConfig {
    type Target = dyn TriggerSpec;

    fn deref(&self) -> &Self::Target {
        &*self.spec
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

/// Runs a single-reader source only while this node holds the trigger's lease
/// (`lease.<trigger>` in `sluice_state`, see [`crate::bus::lease`]): `source` gets a context
/// whose `shutdown` is cancelled when the lease is lost or `sluice up` stops, and must stop
/// reading at once. After a loss the node stands by and contends again; a source that
/// returns by itself gives the lease up (released, so another node takes over at once).
pub(crate) async fn run_leased<F, Fut>(ctx: &TriggerContext, mut source: F) -> anyhow::Result<()>
where
    F: FnMut(TriggerContext) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let store = ctx.bus.state().await?;
    let lease = crate::bus::lease::Lease::new(store, &format!("lease.{}", ctx.name), &ctx.name);
    loop {
        let Some(held) = lease.acquire(&ctx.shutdown).await else { return Ok(()) };
        let inner = TriggerContext { name: ctx.name.clone(), bus: ctx.bus.clone(), shutdown: held.lost.clone() };
        let result = source(inner).await;
        if ctx.shutdown.is_cancelled() || held.is_held() {
            held.release().await;
            return result;
        }
        if let Err(error) = result {
            tracing::warn!(trigger = %ctx.name, error = %format!("{error:#}"), "The source failed after the lease was lost.");
        }
        drop(held);
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

/// The running adapter of a definition of `project`; `None` for kinds served by the gateway.
pub fn build(def: &TriggerDef, project: &crate::config::Project) -> anyhow::Result<Option<Box<dyn Trigger>>> {
    def.config.build(&def.name, project)
}
