//! What a bucket trigger has already fired, kept in KV `sluice_state`: one entry per object
//! (`bucket.<trigger>.o.<key, base64url>` → its [`Version`]) and a marker
//! (`bucket.<trigger>.init`) once the first listing was taken. An entry is written only after
//! JetStream acknowledged the event for that version, so a crash in between re-publishes the
//! same event id at the next start, which the duplicate window removes.

use std::collections::HashMap;

use anyhow::Context as _;
use async_nats::jetstream::consumer::push::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::kv;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;

use super::record::Version;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub struct State {
    store: kv::Store,
    client: async_nats::Client,
    prefix: String,
}

impl State {
    pub fn new(store: kv::Store, client: async_nats::Client, trigger: &str) -> Self {
        Self { store, client, prefix: format!("bucket.{trigger}") }
    }

    fn object_key(&self, key: &str) -> String {
        format!("{}.o.{}", self.prefix, B64.encode(key.as_bytes()))
    }

    /// Whether a first listing was recorded (otherwise this trigger never ran).
    pub async fn initialised(&self) -> anyhow::Result<bool> {
        let key = format!("{}.init", self.prefix);
        Ok(self.store.get(&key).await.with_context(|| format!("reading {key} from sluice_state"))?.is_some())
    }

    pub async fn mark_initialised(&self) -> anyhow::Result<()> {
        let key = format!("{}.init", self.prefix);
        self.store.put(&key, Bytes::from_static(b"1")).await.with_context(|| format!("writing {key} to sluice_state"))?;
        Ok(())
    }

    /// Every recorded object and its version.
    pub async fn load(&self) -> anyhow::Result<HashMap<String, Version>> {
        let stream = &self.store.stream;
        let filter = format!("{}{}.o.>", self.store.prefix, self.prefix);
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: filter.clone(),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .with_context(|| format!("reading {filter} from sluice_state"))?;
        let mut out = HashMap::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer.messages().await.context("reading the bucket state")?;
        let subject_prefix = format!("{}{}.o.", self.store.prefix, self.prefix);
        while let Some(message) = messages.next().await {
            let message = message.context("reading the bucket state")?;
            let pending = message.info().map(|i| i.pending).unwrap_or(0);
            let key = message
                .subject
                .strip_prefix(subject_prefix.as_str())
                .and_then(|encoded| B64.decode(encoded).ok())
                .and_then(|raw| String::from_utf8(raw).ok());
            // A removed object's delete or purge marker has an empty body: no version.
            if let (Some(key), Ok(version)) = (key, serde_json::from_slice::<Version>(&message.payload)) {
                out.insert(key, version);
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    pub async fn put(&self, key: &str, version: &Version) -> anyhow::Result<()> {
        let value = Bytes::from(serde_json::to_vec(version).context("encoding the object version")?);
        self.store.put(self.object_key(key), value).await.context("recording the object in sluice_state")?;
        Ok(())
    }

    pub async fn remove(&self, key: &str) -> anyhow::Result<()> {
        self.store.purge(self.object_key(key)).await.context("removing the object from sluice_state")?;
        Ok(())
    }
}
