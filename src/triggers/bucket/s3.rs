//! S3-compatible buckets: listed every `poll_interval` and compared with what already fired.
//!
//! On several nodes only the holder of the trigger's lease (`lease.<trigger>`, see
//! [`crate::bus::lease`]) lists; what already fired is in `sluice_state`, written after
//! JetStream acknowledged each event, and read when a node acquires the lease, so a node
//! that takes over continues where the holder stopped.
//!
//! A changed eTag is a new version (`ObjectCreated:Put`); a key missing from the listing is
//! deleted (`ObjectRemoved:Delete`). An unreachable store, wrong credentials or a missing
//! bucket are logged with the trigger's name and retried with backoff.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore as _, RetryConfig};
use tracing::{info, warn};

use super::config::BucketConfig;
use super::record::Version;
use super::Emitter;
use crate::triggers::TriggerContext;

pub const DEFAULT_REGION: &str = "us-east-1";

pub struct S3Watcher {
    pub(super) config: BucketConfig,
    store: AmazonS3,
    endpoint: String,
}

impl S3Watcher {
    pub fn new(trigger: &str, config: &BucketConfig) -> anyhow::Result<Self> {
        let endpoint = config.endpoint.clone().unwrap_or_default();
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let creds = &config.credentials;
        let key = env(&creds.access_key_id_env);
        let secret = env(&creds.secret_access_key_env);
        let mut builder = AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_bucket_name(&config.bucket)
            .with_region(config.region.as_deref().unwrap_or(DEFAULT_REGION))
            // Client options first: they replace earlier settings such as allow_http.
            .with_client_options(ClientOptions::new().with_connect_timeout(Duration::from_secs(5)).with_timeout(Duration::from_secs(60)))
            .with_allow_http(endpoint.starts_with("http://"))
            // Listing again at the next poll is the retry; don't stall a poll for minutes.
            .with_retry(RetryConfig { backoff: BackoffConfig::default(), max_retries: 2, retry_timeout: Duration::from_secs(20) });
        builder = match (key, secret) {
            (Some(key), Some(secret)) => {
                let builder = builder.with_access_key_id(key).with_secret_access_key(secret);
                match env(&creds.session_token_env) {
                    Some(token) => builder.with_token(token),
                    None => builder,
                }
            }
            (None, None) => {
                warn!(
                    trigger,
                    "No S3 credentials in ${} / ${}: requests are sent unsigned (works only for public buckets).",
                    creds.access_key_id_env,
                    creds.secret_access_key_env
                );
                builder.with_skip_signature(true)
            }
            (Some(_), None) | (None, Some(_)) => anyhow::bail!(
                "credentials: set both ${} and ${} (or neither, for a public bucket)",
                creds.access_key_id_env,
                creds.secret_access_key_env
            ),
        };
        let store = builder.build().with_context(|| format!("endpoint: cannot use the S3 store at {endpoint}"))?;
        Ok(Self { config: config.clone(), store, endpoint })
    }

    pub(super) async fn run(&self, ctx: TriggerContext, mut emitter: Emitter) -> anyhow::Result<()> {
        info!(trigger = %ctx.name, bucket = %self.config.bucket, endpoint = %self.endpoint, every = ?self.config.poll_interval, "Polling the S3 bucket.");
        let mut health = crate::triggers::health::Health::new(&ctx.name, &ctx.bus).await;
        let mut failures = 0u32;
        loop {
            // Everything here may be cut short by shutdown: what did not reach the state
            // fires again at the next start (and the duplicate window removes a repeat).
            let listed = tokio::select! {
                () = ctx.shutdown.cancelled() => return Ok(()),
                listed = self.list() => listed,
            };
            let wait = match listed {
                Ok(listing) => {
                    health.set(crate::triggers::health::Status::Healthy, format!("listing every {:?}", self.config.poll_interval)).await;
                    if failures > 0 {
                        info!(trigger = %ctx.name, "The S3 bucket can be listed again.");
                    }
                    failures = 0;
                    let applied = tokio::select! {
                        () = ctx.shutdown.cancelled() => false,
                        applied = self.apply(listing, &mut emitter) => applied,
                    };
                    if !applied {
                        return Ok(());
                    }
                    self.config.poll_interval
                }
                Err(error) => {
                    failures += 1;
                    let message = format!("cannot list s3://{} at {}: {error}", self.config.bucket, self.endpoint);
                    tokio::select! {
                        () = ctx.shutdown.cancelled() => return Ok(()),
                        () = health.set(crate::triggers::health::Status::Unhealthy, message) => {}
                    }
                    warn!(
                        trigger = %ctx.name,
                        bucket = %self.config.bucket,
                        endpoint = %self.endpoint,
                        error = %format!("{error:#}"),
                        "Cannot list the S3 bucket; check the endpoint, the credentials and that the bucket exists. Trying again."
                    );
                    // Back off up to ten intervals (at most a minute) while it keeps failing.
                    let factor = 2u32.saturating_pow(failures.min(4)).min(10);
                    (self.config.poll_interval * factor).min(Duration::from_secs(60).max(self.config.poll_interval))
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = ctx.shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// Fires the differences between a listing and what is known. `false` on shutdown.
    async fn apply(&self, listing: Vec<(String, Version)>, emitter: &mut Emitter) -> bool {
        if emitter.first_run && !self.config.fires_existing() {
            info!(trigger = %emitter.trigger, objects = listing.len(), "First listing taken as the baseline (existing = \"skip\").");
            for (key, version) in listing {
                emitter.record(&key, version).await;
            }
            emitter.initialised().await;
            return true;
        }
        let present: HashSet<String> = listing.iter().map(|(key, _)| key.clone()).collect();
        for (key, version) in listing {
            if emitter.known.get(&key).is_some_and(|known| known.id == version.id) {
                continue;
            }
            if !emitter.created(&key, version).await {
                return false;
            }
        }
        let mut gone: Vec<String> = emitter.known.keys().filter(|k| !present.contains(*k)).cloned().collect();
        gone.sort();
        for key in gone {
            emitter.removed(&key).await;
        }
        emitter.initialised().await;
        true
    }

    /// Every object under the prefix that passes the filters, with its version.
    async fn list(&self) -> anyhow::Result<Vec<(String, Version)>> {
        // object_store lists by folder: list the prefix's folder, filter by the raw prefix.
        let folder = self.config.prefix.as_deref().and_then(|p| p.rsplit_once('/')).map(|(folder, _)| folder);
        let folder = folder.filter(|f| !f.is_empty()).map(ObjectPath::from);
        let mut objects = self.store.list(folder.as_ref());
        let mut out = Vec::new();
        while let Some(meta) = objects.try_next().await? {
            let key = meta.location.as_ref().to_owned();
            if !self.config.matches(&key) || key.ends_with('/') {
                continue;
            }
            let etag = meta.e_tag.as_deref().unwrap_or_default().trim_matches('"').to_owned();
            let id = if etag.is_empty() { format!("{}-{}", meta.size, meta.last_modified.timestamp_millis()) } else { etag.clone() };
            out.push((key, Version { size: meta.size, etag, id, modified: meta.last_modified }));
        }
        Ok(out)
    }
}
