//! Bodies larger than the server takes in one message (claim check).
//!
//! Sluice promises events and responses up to [`MAX_PAYLOAD_BYTES`] (6 MiB, Lambda's
//! synchronous payload limit) whatever the NATS server's `max_payload` is (1 MiB by
//! default). A body that does not fit in one message is stored in the JetStream object store
//! [`PAYLOAD_BUCKET`] and the message carries its name in [`PAYLOAD_REF`] (and its size in
//! [`PAYLOAD_SIZE`]) with an empty body. Every reader (dispatchers, `dlq show`, `dlq replay`)
//! fetches it back transparently through [`Bus::resolve_payload`].
//!
//! Retention follows the message that holds the reference: objects of the events stream
//! (`events/...`, also results) are removed once they are older than the stream's
//! `max_age`; objects of dead letters (`dlq/...`) when no dead letter refers to them any
//! more (replayed, purged, or aged out of `SLUICE_DLQ`). `sluice up` sweeps them
//! ([`Bus::sweep_payloads`]). The object is always stored before the message that refers
//! to it, so a reader never finds a reference to nothing unless the object was removed.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{consumer, object_store, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt as _;

use super::{Bus, DLQ_PREFIX, DLQ_STREAM};

/// The object store holding bodies too large for one message.
pub const PAYLOAD_BUCKET: &str = "sluice_payloads";
/// Header naming the object that holds the body.
pub const PAYLOAD_REF: &str = "sluice-payload-ref";
/// Header with the body's size in bytes, when it is in the object store.
pub const PAYLOAD_SIZE: &str = "sluice-payload-size";
/// The largest event body or response Sluice takes (6 MiB, as Lambda's synchronous payload).
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// Room kept for headers when deciding whether a body fits in one message.
const HEADER_ROOM: usize = 8 * 1024;
/// How young a `dlq/` object is left alone, because its dead letter may still be on its way:
/// a minute, or the events' retention when that is shorter, but at least 5 s (storing a
/// dead letter is retried for about 3 s).
pub fn sweep_grace(events_max_age: Duration) -> Duration {
    events_max_age.clamp(Duration::from_secs(5), Duration::from_secs(60))
}

/// Whether a header is one of the claim-check headers.
pub fn is_payload_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(PAYLOAD_REF) || name.eq_ignore_ascii_case(PAYLOAD_SIZE)
}

/// Why a body could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Over [`MAX_PAYLOAD_BYTES`]; deterministic, retrying does not help.
    #[error("the body is {size} bytes, over the limit of {limit} bytes ({} MiB)", limit / (1024 * 1024))]
    TooLarge { size: usize, limit: usize },
    /// The message refers to an object that no longer exists; deterministic.
    #[error("the body was stored in object {name:?} of {PAYLOAD_BUCKET}, which no longer exists")]
    Missing { name: String },
    /// The object store could not be reached or written; may succeed later.
    #[error("object store {PAYLOAD_BUCKET}: {0:#}")]
    Store(anyhow::Error),
}

/// Which retention rule an object follows, by the stream its message goes to.
fn object_prefix(subject: &str) -> &'static str {
    if subject.starts_with(DLQ_PREFIX) {
        "dlq/"
    } else {
        "events/"
    }
}

/// How the object store is created: on disk, with the bus's replicas.
fn store_config(replicas: usize) -> object_store::Config {
    object_store::Config {
        bucket: PAYLOAD_BUCKET.into(),
        description: Some("Sluice: bodies too large for one NATS message".into()),
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

impl Bus {
    /// The largest body sent inline: the server's `max_payload` (read at connect) less room
    /// for headers.
    pub fn inline_limit(&self) -> usize {
        self.max_payload.saturating_sub(HEADER_ROOM)
    }

    /// The object store, created (with the bus's replicas) when first needed.
    async fn payload_store(&self) -> anyhow::Result<object_store::ObjectStore> {
        self.payloads
            .get_or_try_init(|| async {
                if let Ok(store) = self.js.get_object_store(PAYLOAD_BUCKET).await {
                    return Ok(store);
                }
                let created = self.js.create_object_store(store_config(self.replicas)).await;
                match created {
                    Ok(store) => Ok(store),
                    // Another process created it meanwhile.
                    Err(_) => self.js.get_object_store(PAYLOAD_BUCKET).await.context("opening the object store"),
                }
            })
            .await
            .cloned()
    }

    /// Creates the object store if it is missing (`sluice up`, at start).
    pub async fn ensure_payload_store(&self) -> anyhow::Result<()> {
        self.payload_store().await.map(drop).with_context(|| format!("creating object store {PAYLOAD_BUCKET}"))
    }

    /// The body to send for a message to `subject`: `payload` itself when it fits in one
    /// message, else an empty body, with the payload stored in the object store and
    /// referenced from `headers`.
    pub async fn check_payload(&self, subject: &str, headers: &mut HeaderMap, payload: Bytes) -> Result<Bytes, PayloadError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(PayloadError::TooLarge { size: payload.len(), limit: MAX_PAYLOAD_BYTES });
        }
        if payload.len() <= self.inline_limit() {
            return Ok(payload);
        }
        let name = format!("{}{}", object_prefix(subject), uuid::Uuid::now_v7());
        let store = self.payload_store().await.map_err(PayloadError::Store)?;
        let mut reader = std::io::Cursor::new(payload.clone());
        store
            .put(name.as_str(), &mut reader)
            .await
            .map_err(|e| PayloadError::Store(anyhow::Error::new(e).context(format!("storing a {}-byte body", payload.len()))))?;
        headers.insert(PAYLOAD_REF, name.as_str());
        headers.insert(PAYLOAD_SIZE, payload.len().to_string().as_str());
        Ok(Bytes::new())
    }

    /// The body of a received message: `payload`, or the object its headers refer to.
    pub async fn resolve_payload(&self, headers: Option<&HeaderMap>, payload: Bytes) -> Result<Bytes, PayloadError> {
        let Some(name) = headers.and_then(|h| h.get(PAYLOAD_REF)).map(|v| v.as_str().to_owned()) else {
            return Ok(payload);
        };
        let store = self.payload_store().await.map_err(PayloadError::Store)?;
        let mut object = match store.get(&name).await {
            Ok(object) => object,
            Err(error) if error.kind() == object_store::GetErrorKind::NotFound => return Err(PayloadError::Missing { name }),
            Err(error) => return Err(PayloadError::Store(anyhow::Error::new(error).context(format!("reading object {name}")))),
        };
        // Not `read_to_end`: the object reader hands over the last chunk and the digest
        // error in one poll, which tokio's `read_to_end` asserts never happens (a panic in
        // debug builds).
        let mut body = Vec::with_capacity(object.info().size);
        let mut chunk = vec![0; 128 * 1024];
        loop {
            let read = tokio::io::AsyncReadExt::read(&mut object, &mut chunk)
                .await
                .map_err(|e| PayloadError::Store(anyhow::Error::new(e).context(format!("reading object {name}"))))?;
            if read == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..read]);
        }
        Ok(Bytes::from(body))
    }

    /// Removes the object a message's headers refer to (its message was removed).
    pub async fn remove_payload(&self, headers: &HeaderMap) {
        let Some(name) = headers.get(PAYLOAD_REF).map(|v| v.as_str().to_owned()) else { return };
        match self.payload_store().await {
            Ok(store) => {
                if let Err(error) = store.delete(&name).await {
                    tracing::debug!(object = %name, %error, "Cannot remove a stored body; the sweep will.");
                }
            }
            Err(error) => tracing::debug!(object = %name, error = %format!("{error:#}"), "Cannot remove a stored body; the sweep will."),
        }
    }

    /// Removes objects whose messages are gone: `events/` objects older than
    /// `events_max_age`, `dlq/` objects no dead letter refers to. Returns how many it
    /// removed. Young `dlq/` objects are left alone ([`sweep_grace`]).
    pub async fn sweep_payloads(&self, events_max_age: Duration) -> anyhow::Result<usize> {
        let Ok(store) = self.js.get_object_store(PAYLOAD_BUCKET).await else { return Ok(0) };
        let now = chrono::Utc::now();
        let age = |info: &object_store::ObjectInfo| {
            info.modified.map_or(Duration::ZERO, |t| (now - t).to_std().unwrap_or_default())
        };
        let mut objects = store.list().await.context("listing stored bodies")?;
        let mut expired = Vec::new();
        let mut dead_letters = Vec::new();
        while let Some(info) = objects.next().await {
            let info = info.context("listing stored bodies")?;
            if info.deleted {
                continue;
            }
            if info.name.starts_with("dlq/") {
                // Unreferenced right after it is stored: its dead letter is on its way.
                if age(&info) > sweep_grace(events_max_age) {
                    dead_letters.push(info.name);
                }
            } else if !events_max_age.is_zero() && age(&info) > events_max_age {
                expired.push(info.name);
            }
        }
        if !dead_letters.is_empty() {
            let referenced = self.dead_letter_refs().await?;
            expired.extend(dead_letters.into_iter().filter(|name| !referenced.contains(name)));
        }
        for name in &expired {
            store.delete(name).await.with_context(|| format!("removing stored body {name}"))?;
        }
        Ok(expired.len())
    }

    /// The objects dead letters refer to (headers only are read).
    async fn dead_letter_refs(&self) -> anyhow::Result<HashSet<String>> {
        let stream = self.js.get_stream(DLQ_STREAM).await.context("opening stream SLUICE_DLQ")?;
        let mut refs = HashSet::new();
        let headers_only = consumer::pull::Config { deliver_policy: consumer::DeliverPolicy::All, headers_only: true, ..Default::default() };
        super::scan_stream(&stream, headers_only, |message| {
            if let Some(name) = message.headers.as_ref().and_then(|h| h.get(PAYLOAD_REF)) {
                refs.insert(name.as_str().to_owned());
            }
            Ok(())
        })
        .await?;
        Ok(refs)
    }
}

/// How often `sluice up` sweeps: a quarter of the events' retention, between 1 s and 5 min.
pub fn sweep_period(events_max_age: Duration) -> Duration {
    (events_max_age / 4).clamp(Duration::from_secs(1), Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_have_their_own_retention() {
        assert_eq!(object_prefix("sluice.dlq.f"), "dlq/");
        assert_eq!(object_prefix("sluice.events.a"), "events/");
        assert_eq!(object_prefix("sluice.direct.f"), "events/");
        assert_eq!(object_prefix("sluice.results.f"), "events/");
        assert!(is_payload_header("Sluice-Payload-Ref"));
        assert!(!is_payload_header("sluice-function"));
    }

    #[test]
    fn too_large_names_both_sizes() {
        let error = PayloadError::TooLarge { size: 10_485_760, limit: MAX_PAYLOAD_BYTES }.to_string();
        assert!(error.contains("10485760") && error.contains("6291456") && error.contains("6 MiB"), "{error}");
    }

    #[test]
    fn the_store_is_on_disk_with_the_bus_replicas() {
        let config = store_config(3);
        assert_eq!(config.bucket, PAYLOAD_BUCKET);
        assert_eq!(config.storage, stream::StorageType::File);
        assert_eq!(config.num_replicas, 3);
        assert!(config.description.is_some_and(|d| d.starts_with("Sluice")));
    }

    #[test]
    fn sweeps_follow_retention() {
        assert_eq!(sweep_period(Duration::from_secs(7 * 86_400)), Duration::from_secs(300));
        assert_eq!(sweep_period(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(sweep_period(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(sweep_grace(Duration::from_secs(7 * 86_400)), Duration::from_secs(60));
        assert_eq!(sweep_grace(Duration::from_secs(3)), Duration::from_secs(5));
    }
}
