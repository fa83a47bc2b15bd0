//! The `bucket` trigger: a file dropped in a watched bucket fires an S3 event notification.
//!
//! - Local buckets (`buckets/<name>/`, the default) are watched with inotify ([`local`]).
//! - S3-compatible stores are listed every `poll_interval` and compared with the last
//!   listing ([`s3`]); the stores this runs against in tests (SeaweedFS) have no S3 bucket
//!   notifications.
//! - What already fired is kept in KV `sluice_state` ([`state`]), written after JetStream
//!   acknowledged the event: a restart fires what changed while it was down and nothing
//!   else. Event ids derive from trigger, key and version ([`record::event_id`]), so a
//!   re-publish after a crash, or a second node, is removed by the duplicate window.
//! - Several nodes: an S3 bucket is listed by the holder of the trigger's lease only
//!   ([`crate::bus::lease`]). A local bucket is node-local (each node watches its own
//!   folder), but its record in `sluice_state` is keyed by the trigger's name: run it on
//!   one node, or use S3 for several.

mod config;
pub mod local;
pub mod record;
pub mod s3;
mod state;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::config::{BucketConfig, Change, Existing};
use self::record::{Origin, Version};
use self::state::State;
use super::{Trigger, TriggerContext};
use crate::bus::Bus;

/// Region in the records of local buckets.
pub const LOCAL_REGION: &str = "local";

pub enum BucketTrigger {
    Local(local::LocalBucket),
    S3(s3::S3Watcher),
}

impl BucketTrigger {
    /// `buckets_dir` holds the local buckets (`<project>/buckets`).
    pub fn new(name: &str, config: &BucketConfig, buckets_dir: &Path) -> anyhow::Result<Self> {
        config.check().map_err(|(field, message)| anyhow::anyhow!("trigger {name}: {field}: {message}"))?;
        Ok(match &config.endpoint {
            None => Self::Local(local::LocalBucket { config: config.clone(), root: buckets_dir.join(&config.bucket) }),
            Some(_) => Self::S3(s3::S3Watcher::new(name, config)?),
        })
    }
}

impl Trigger for BucketTrigger {
    fn run(self: Box<Self>, ctx: TriggerContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            match *self {
                // Each node watches its own folder: nothing to share.
                Self::Local(local) => {
                    let emitter = Emitter::load(&ctx, &local.config).await?;
                    local.run(ctx, emitter).await
                }
                // One listing at a time across nodes: the lease holder's. The state is
                // read after acquiring, so a takeover continues where the holder stopped.
                Self::S3(s3) => {
                    let s3 = &s3;
                    super::run_leased(&ctx, |inner| async move {
                        let emitter = Emitter::load(&inner, &s3.config).await?;
                        s3.run(inner, emitter).await
                    })
                    .await
                }
            }
        })
    }
}

/// Publishes changes and remembers what fired. Keys outside the trigger's prefix and
/// suffix are not objects of this trigger: they are neither fired nor recorded.
pub struct Emitter {
    pub trigger: String,
    region: String,
    subject: String,
    config: BucketConfig,
    bus: Bus,
    shutdown: CancellationToken,
    state: State,
    /// Every object of the bucket (within the filters) and the version that was seen last.
    pub known: HashMap<String, Version>,
    /// No listing was ever recorded for this trigger.
    pub first_run: bool,
}

impl Emitter {
    /// What the trigger already fired, read from `sluice_state`.
    async fn load(ctx: &TriggerContext, config: &BucketConfig) -> anyhow::Result<Self> {
        let store = ctx.bus.state().await?;
        let state = State::new(store, ctx.bus.client.clone(), &ctx.name);
        let known = state.load().await?;
        let first_run = !state.initialised().await?;
        Ok(Emitter {
            trigger: ctx.name.clone(),
            region: match &config.endpoint {
                Some(_) => config.region.clone().unwrap_or_else(|| s3::DEFAULT_REGION.to_owned()),
                None => LOCAL_REGION.to_owned(),
            },
            subject: config.target().subject(),
            config: config.clone(),
            bus: ctx.bus.clone(),
            shutdown: ctx.shutdown.clone(),
            state,
            known,
            first_run,
        })
    }

    /// A new or changed object. Returns `false` only when shutting down before JetStream
    /// took the event (it then fires at the next start).
    pub async fn created(&mut self, key: &str, version: Version) -> bool {
        if !self.config.matches(key) {
            return true;
        }
        if self.config.fires(Change::Created) && !self.publish(Change::Created, key, &version, version.modified).await {
            return false;
        }
        self.record(key, version).await;
        true
    }

    /// An object is gone: fires `deleted` if asked, and forgets it.
    pub async fn removed(&mut self, key: &str) {
        let Some(version) = self.known.get(key).cloned() else { return };
        if self.config.fires(Change::Deleted) && !self.publish(Change::Deleted, key, &version, chrono::Utc::now()).await {
            return;
        }
        self.known.remove(key);
        if let Err(error) = self.state.remove(key).await {
            warn!(trigger = %self.trigger, key, error = %format!("{error:#}"), "Cannot forget a deleted object.");
        }
    }

    /// `key` and everything under `key/` are gone (a file, or a folder moved out or removed).
    pub async fn removed_under(&mut self, key: &str) {
        let folder = format!("{key}/");
        let mut gone: Vec<String> = self.known.keys().filter(|k| *k == key || k.starts_with(&folder)).cloned().collect();
        gone.sort();
        for key in gone {
            self.removed(&key).await;
        }
    }

    /// Remembers an object's version without firing.
    pub async fn record(&mut self, key: &str, version: Version) {
        if !self.config.matches(key) {
            return;
        }
        if let Err(error) = self.state.put(key, &version).await {
            warn!(trigger = %self.trigger, key, error = %format!("{error:#}"), "Cannot record a fired object; a restart fires it again (the duplicate window removes a quick one).");
        }
        self.known.insert(key.to_owned(), version);
    }

    /// The first listing is taken.
    pub async fn initialised(&mut self) {
        if !self.first_run {
            return;
        }
        match self.state.mark_initialised().await {
            Ok(()) => self.first_run = false,
            Err(error) => warn!(trigger = %self.trigger, error = %format!("{error:#}"), "Cannot record the first listing."),
        }
    }

    /// Publishes until JetStream acknowledges, backing off while it is unavailable (which
    /// holds back the watcher: nothing is buffered without bound). `false` on shutdown.
    async fn publish(&self, change: Change, key: &str, version: &Version, at: chrono::DateTime<chrono::Utc>) -> bool {
        let origin = Origin { trigger: &self.trigger, bucket: &self.config.bucket, region: &self.region };
        let event = record::event(&origin, change, key, version, at);
        let mut delay = Duration::from_millis(100);
        loop {
            match self.bus.publish_event(self.subject.clone(), &event).await {
                Ok(published) => {
                    info!(
                        trigger = %self.trigger,
                        key,
                        change = change.as_str(),
                        size = version.size,
                        seq = published.seq,
                        duplicate = published.duplicate,
                        "Object change published."
                    );
                    return true;
                }
                Err(error) => {
                    warn!(trigger = %self.trigger, key, error = %format!("{error:#}"), retry_in = ?delay, "Cannot publish an object change; trying again.");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.cancelled() => return false,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

crate::triggers::spec!(BucketConfig, |config, name, project| BucketTrigger::new(name, config, &project.buckets_dir()));
