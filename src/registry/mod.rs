//! The cluster's registry of deployed functions and triggers (`sluice deploy`), so every
//! node runs the same code without the project's folders on its disk.
//!
//! Layout (names are part of the contract, see `docs/registry.md`):
//! - KV bucket [`FUNCTIONS_BUCKET`] (`sluice_functions`): `functions.<name>.<N>` and
//!   `triggers.<name>.<N>` hold version N's [`Manifest`], written once and never changed;
//!   `functions.<name>` and `triggers.<name>` hold the [`Current`] version nodes run.
//! - Object store [`ARTIFACTS_BUCKET`] (`sluice_artifacts`): `functions/<name>/<N>.tar.gz`,
//!   the function's folder as built (see [`pack`]).
//!
//! Guarantees: a version's artifact is stored before its manifest, and its manifest before
//! the pointer names it, so a node that sees a pointer finds everything it needs. Version
//! numbers are taken with KV `create`, so two deploys at once never share a number. A
//! deploy of what the current version already holds (same artifact digest and
//! configuration) stores nothing new.

pub mod pack;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use async_nats::jetstream::{kv, object_store, stream};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;

use crate::bus::Bus;

/// KV bucket with the versions and current pointers.
pub const FUNCTIONS_BUCKET: &str = "sluice_functions";
/// Object store with the functions' artifacts.
pub const ARTIFACTS_BUCKET: &str = "sluice_artifacts";

/// What is deployed: functions (with an artifact) or triggers (a file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Function,
    Trigger,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Function => "functions",
            Self::Trigger => "triggers",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Function => "function",
            Self::Trigger => "trigger",
        })
    }
}

/// One deployed version, immutable once stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: Kind,
    pub name: String,
    pub version: u64,
    /// The function's runtime, or the trigger's kind.
    pub runtime: String,
    /// `function.toml`, or the trigger's file, as written.
    pub config: String,
    /// The artifact's object in `sluice_artifacts` (functions).
    pub object: Option<String>,
    /// Bytes of the artifact (functions) or of the file (triggers).
    pub size: u64,
    /// SHA-256 (hex) of the artifact, or of the trigger's file.
    pub sha256: String,
    /// Files in the artifact.
    pub files: usize,
    /// `user@host` of whoever deployed it.
    pub deployed_by: String,
    pub deployed_at: DateTime<Utc>,
}

/// Which version of a function or trigger runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Current {
    pub version: u64,
    /// The version's digest: nodes compare it with what they run.
    pub sha256: String,
    /// Who made this the current version (a deploy or a rollback), and when.
    pub set_by: String,
    pub set_at: DateTime<Utc>,
}

/// A deployed function or trigger: its current version's manifest.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub current: Current,
    pub manifest: Manifest,
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize)]
pub struct DeployOutcome {
    pub kind: Kind,
    pub name: String,
    pub version: u64,
    /// The current version already held this; nothing was stored.
    pub unchanged: bool,
    pub size: u64,
}

/// The registry's KV bucket and object store.
#[derive(Clone)]
pub struct Registry {
    kv: kv::Store,
    artifacts: object_store::ObjectStore,
}

fn pointer_key(kind: Kind, name: &str) -> String {
    format!("{}.{name}", kind.prefix())
}

fn version_key(kind: Kind, name: &str, version: u64) -> String {
    format!("{}.{name}.{version}", kind.prefix())
}

fn artifact_object(name: &str, version: u64) -> String {
    format!("functions/{name}/{version}.tar.gz")
}

/// A registry key's parts: kind, name, and version for a manifest (`None` for a pointer).
fn parse_key(key: &str) -> Option<(Kind, &str, Option<u64>)> {
    let mut parts = key.split('.');
    let kind = match parts.next()? {
        "functions" => Kind::Function,
        "triggers" => Kind::Trigger,
        _ => return None,
    };
    let name = parts.next()?;
    let version = match parts.next() {
        Some(v) => Some(v.parse().ok()?),
        None => None,
    };
    parts.next().is_none().then_some((kind, name, version))
}

/// `user@host` for `deployed_by`.
pub fn whoami() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".to_owned());
    format!("{user}@{}", hostname())
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    if ok && end > 0 {
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    } else {
        "localhost".to_owned()
    }
}

impl Registry {
    /// Opens the registry; with `create`, makes its bucket and store (with the bus's
    /// replicas) when missing. `None` when it does not exist and `create` is false.
    pub async fn open(bus: &Bus, create: bool) -> anyhow::Result<Option<Self>> {
        let kv = match bus.js.get_key_value(FUNCTIONS_BUCKET).await {
            Ok(kv) => kv,
            Err(_) if !create => return Ok(None),
            Err(_) => {
                let config = kv::Config {
                    bucket: FUNCTIONS_BUCKET.into(),
                    description: "Sluice registry: deployed functions and triggers".into(),
                    history: 1,
                    storage: stream::StorageType::File,
                    num_replicas: bus.replicas(),
                    ..Default::default()
                };
                match bus.js.create_key_value(config).await {
                    Ok(kv) => kv,
                    Err(_) => bus.js.get_key_value(FUNCTIONS_BUCKET).await.with_context(|| format!("creating KV bucket {FUNCTIONS_BUCKET}"))?,
                }
            }
        };
        let artifacts = match bus.js.get_object_store(ARTIFACTS_BUCKET).await {
            Ok(store) => store,
            Err(_) if !create => return Ok(None),
            Err(_) => {
                let config = object_store::Config {
                    bucket: ARTIFACTS_BUCKET.into(),
                    description: Some("Sluice registry: the artifacts of deployed functions".into()),
                    storage: stream::StorageType::File,
                    num_replicas: bus.replicas(),
                    ..Default::default()
                };
                match bus.js.create_object_store(config).await {
                    Ok(store) => store,
                    Err(_) => bus.js.get_object_store(ARTIFACTS_BUCKET).await.with_context(|| format!("creating object store {ARTIFACTS_BUCKET}"))?,
                }
            }
        };
        Ok(Some(Self { kv, artifacts }))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> anyhow::Result<Option<T>> {
        let Some(value) = self.kv.get(key).await.with_context(|| format!("reading {key} from {FUNCTIONS_BUCKET}"))? else {
            return Ok(None);
        };
        serde_json::from_slice(&value).map(Some).with_context(|| format!("{key} in {FUNCTIONS_BUCKET} is not what Sluice wrote"))
    }

    /// The current version of a function or trigger, if deployed.
    pub async fn current(&self, kind: Kind, name: &str) -> anyhow::Result<Option<Current>> {
        self.get_json(&pointer_key(kind, name)).await
    }

    /// Version `version`'s manifest, if stored.
    pub async fn manifest(&self, kind: Kind, name: &str, version: u64) -> anyhow::Result<Option<Manifest>> {
        self.get_json(&version_key(kind, name, version)).await
    }

    async fn all_keys(&self) -> anyhow::Result<Vec<String>> {
        let mut keys = Vec::new();
        match self.kv.keys().await {
            Ok(mut listed) => {
                while let Some(key) = listed.next().await {
                    keys.push(key.with_context(|| format!("listing {FUNCTIONS_BUCKET}"))?);
                }
            }
            Err(error) => return Err(anyhow::Error::new(error).context(format!("listing {FUNCTIONS_BUCKET}"))),
        }
        keys.sort();
        Ok(keys)
    }

    /// Stored version numbers of a function or trigger, oldest first.
    pub async fn versions(&self, kind: Kind, name: &str) -> anyhow::Result<Vec<u64>> {
        Ok(self.all_versions(kind).await?.remove(name).unwrap_or_default())
    }

    /// Stored version numbers of everything of `kind`, by name, oldest first (one listing).
    pub async fn all_versions(&self, kind: Kind) -> anyhow::Result<std::collections::BTreeMap<String, Vec<u64>>> {
        let mut versions: std::collections::BTreeMap<String, Vec<u64>> = std::collections::BTreeMap::new();
        for key in self.all_keys().await? {
            if let Some((k, name, Some(version))) = parse_key(&key) {
                if k == kind {
                    versions.entry(name.to_owned()).or_default().push(version);
                }
            }
        }
        for list in versions.values_mut() {
            list.sort_unstable();
        }
        Ok(versions)
    }

    /// Everything of `kind` deployed now, by name.
    pub async fn deployed(&self, kind: Kind) -> anyhow::Result<Vec<Deployed>> {
        let mut deployed = Vec::new();
        for key in self.all_keys().await? {
            let Some((k, name, None)) = parse_key(&key) else { continue };
            if k != kind {
                continue;
            }
            let Some(current) = self.current(kind, name).await? else { continue };
            let manifest = self
                .manifest(kind, name, current.version)
                .await?
                .with_context(|| format!("{key} names version {} of {kind} {name}, which is not stored", current.version))?;
            deployed.push(Deployed { current, manifest });
        }
        Ok(deployed)
    }

    /// Stores a new version (unless the current one holds the same) and makes it current.
    /// `artifact` is a function's packed folder; triggers have none.
    pub async fn deploy(&self, kind: Kind, name: &str, runtime: &str, config: &str, artifact: Option<pack::Packed>) -> anyhow::Result<DeployOutcome> {
        let (sha256, size, files) = match &artifact {
            Some(packed) => (packed.sha256.clone(), packed.bytes.len() as u64, packed.files),
            None => (pack::digest(config.as_bytes()), config.len() as u64, 1),
        };
        if let Some(current) = self.current(kind, name).await? {
            if let Some(manifest) = self.manifest(kind, name, current.version).await? {
                if manifest.sha256 == sha256 && manifest.config == config {
                    return Ok(DeployOutcome { kind, name: name.to_owned(), version: current.version, unchanged: true, size });
                }
            }
        }
        let by = whoami();
        let mut version = self.versions(kind, name).await?.last().copied().unwrap_or(0) + 1;
        // Take a number no other deploy has: `create` fails on a key that exists.
        loop {
            let claim = self.kv.create(version_key(kind, name, version), Bytes::from_static(b"{}")).await;
            match claim {
                Ok(_) => break,
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => version += 1,
                Err(error) => return Err(anyhow::Error::new(error).context(format!("taking version {version} of {kind} {name}"))),
            }
        }
        let object = match artifact {
            Some(packed) => {
                let object = artifact_object(name, version);
                let mut reader = std::io::Cursor::new(packed.bytes);
                self.artifacts
                    .put(object.as_str(), &mut reader)
                    .await
                    .with_context(|| format!("storing the artifact of {kind} {name} version {version} in {ARTIFACTS_BUCKET}"))?;
                Some(object)
            }
            None => None,
        };
        let manifest = Manifest {
            kind,
            name: name.to_owned(),
            version,
            runtime: runtime.to_owned(),
            config: config.to_owned(),
            object,
            size,
            sha256: sha256.clone(),
            files,
            deployed_by: by.clone(),
            deployed_at: Utc::now(),
        };
        self.kv
            .put(version_key(kind, name, version), serde_json::to_vec(&manifest)?.into())
            .await
            .with_context(|| format!("storing the manifest of {kind} {name} version {version}"))?;
        self.set_current(&manifest, &by).await?;
        Ok(DeployOutcome { kind, name: name.to_owned(), version, unchanged: false, size })
    }

    /// Makes `manifest`'s version the one nodes run.
    pub async fn set_current(&self, manifest: &Manifest, by: &str) -> anyhow::Result<()> {
        let current = Current { version: manifest.version, sha256: manifest.sha256.clone(), set_by: by.to_owned(), set_at: Utc::now() };
        self.kv
            .put(pointer_key(manifest.kind, &manifest.name), serde_json::to_vec(&current)?.into())
            .await
            .with_context(|| format!("making version {} of {} {} current", manifest.version, manifest.kind, manifest.name))?;
        Ok(())
    }

    /// Removes a function or trigger: its pointer first (nodes stop running it), then every
    /// version and artifact. Returns how many versions were removed.
    pub async fn remove(&self, kind: Kind, name: &str) -> anyhow::Result<usize> {
        self.kv.purge(pointer_key(kind, name)).await.with_context(|| format!("removing {kind} {name} from {FUNCTIONS_BUCKET}"))?;
        let versions = self.versions(kind, name).await?;
        for version in &versions {
            if let Some(object) = self.manifest(kind, name, *version).await?.and_then(|m| m.object) {
                // Already gone is what we want.
                let _ = self.artifacts.delete(&object).await;
            }
            self.kv
                .purge(version_key(kind, name, *version))
                .await
                .with_context(|| format!("removing version {version} of {kind} {name}"))?;
        }
        Ok(versions.len())
    }

    /// The artifact of a function's version, checked against its digest.
    pub async fn artifact(&self, manifest: &Manifest) -> anyhow::Result<Vec<u8>> {
        let object = manifest.object.as_deref().with_context(|| format!("{} {} version {} has no artifact", manifest.kind, manifest.name, manifest.version))?;
        let mut reader = self.artifacts.get(object).await.with_context(|| format!("fetching {object} from {ARTIFACTS_BUCKET}"))?;
        let mut bytes = Vec::with_capacity(usize::try_from(manifest.size).unwrap_or(0));
        reader.read_to_end(&mut bytes).await.with_context(|| format!("fetching {object} from {ARTIFACTS_BUCKET}"))?;
        let digest = pack::digest(&bytes);
        if digest != manifest.sha256 {
            anyhow::bail!("{object} in {ARTIFACTS_BUCKET} has digest {digest}, not the manifest's {}; deploy the function again", manifest.sha256);
        }
        Ok(bytes)
    }

    /// A stream that yields whenever a pointer changes (deploy, rollback, undeploy).
    pub async fn watch(&self) -> anyhow::Result<kv::Watch> {
        self.kv.watch_many(["functions.*", "triggers.*"]).await.context("watching the registry")
    }
}

/// Where a node keeps what it fetched from the registry: `<project>/.sluice/registry`.
pub fn local_dir(project_dir: &Path) -> PathBuf {
    project_dir.join(".sluice").join("registry")
}

/// The folder a function version is unpacked into (named by digest as well as number, so a
/// function removed and deployed anew never reuses another artifact's folder).
pub fn version_dir(project_dir: &Path, manifest: &Manifest) -> PathBuf {
    let short = manifest.sha256.get(..12).unwrap_or(&manifest.sha256);
    local_dir(project_dir).join(manifest.kind.prefix()).join(&manifest.name).join(format!("{}-{short}", manifest.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_contract() {
        assert_eq!(pointer_key(Kind::Function, "resize"), "functions.resize");
        assert_eq!(version_key(Kind::Trigger, "nightly", 7), "triggers.nightly.7");
        assert_eq!(artifact_object("resize", 3), "functions/resize/3.tar.gz");
        assert_eq!(parse_key("functions.resize"), Some((Kind::Function, "resize", None)));
        assert_eq!(parse_key("triggers.nightly.12"), Some((Kind::Trigger, "nightly", Some(12))));
        for other in ["functions", "other.x", "functions.a.b", "functions.a.1.2"] {
            assert_eq!(parse_key(other), None, "{other}");
        }
    }
}
