//! Precompiled modules and components on disk, keyed by content: the hash of the artifact's
//! bytes and of the engine settings that the compiled code depends on. A changed artifact or
//! a new Sluice version simply misses; nothing is ever invalidated by hand.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

/// What can be precompiled and cached: a core module (`wasm`) or a component (`component`).
pub trait Compiled: Sized {
    /// Compiles `bytes` into the engine's serialised form.
    fn precompile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Vec<u8>>;
    /// # Safety
    /// `compiled` must come from [`Compiled::precompile`] with a compatible engine.
    unsafe fn deserialize(engine: &Engine, compiled: &[u8]) -> wasmtime::Result<Self>;
    /// # Safety
    /// As [`Compiled::deserialize`], for the file's contents.
    unsafe fn deserialize_file(engine: &Engine, path: &Path) -> wasmtime::Result<Self>;
}

impl Compiled for Module {
    fn precompile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Vec<u8>> {
        engine.precompile_module(bytes)
    }
    unsafe fn deserialize(engine: &Engine, compiled: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: as the caller guarantees.
        unsafe { Module::deserialize(engine, compiled) }
    }
    unsafe fn deserialize_file(engine: &Engine, path: &Path) -> wasmtime::Result<Self> {
        // SAFETY: as the caller guarantees.
        unsafe { Module::deserialize_file(engine, path) }
    }
}

impl Compiled for Component {
    fn precompile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Vec<u8>> {
        engine.precompile_component(bytes)
    }
    unsafe fn deserialize(engine: &Engine, compiled: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: as the caller guarantees.
        unsafe { Component::deserialize(engine, compiled) }
    }
    unsafe fn deserialize_file(engine: &Engine, path: &Path) -> wasmtime::Result<Self> {
        // SAFETY: as the caller guarantees.
        unsafe { Component::deserialize_file(engine, path) }
    }
}

/// Where an artifact's compiled form is cached.
pub fn cache_path(engine: &Engine, cache_dir: &Path, bytes: &[u8]) -> PathBuf {
    cache_path_for(engine, cache_dir, &hex::encode(Sha256::digest(bytes)))
}

/// [`cache_path`] for an artifact whose SHA-256 (hex) is known.
fn cache_path_for(engine: &Engine, cache_dir: &Path, digest: &str) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    cache_dir.join(format!("{digest}-{:016x}.cwasm", hasher.finish()))
}

/// An artifact on disk, identified by its content without reading it when it can be helped.
///
/// Hashing a 19 MB Python component takes longer than everything else in its cold start, so
/// the digest of each file is remembered under the cache's `digests/` by the file's identity:
/// device, inode, size and modification time, as `make` and git trust a file unchanged. A
/// file modified less than [`SETTLED`] before it was hashed is not remembered (its time
/// stamp may not tell a second write within the same clock tick apart), so it is hashed again
/// at its next load; `sluice build` hashes long after it wrote.
pub struct Artifact {
    path: PathBuf,
    digest: String,
    bytes: Option<Vec<u8>>,
}

/// How old a file must be before its digest is trusted by its time stamp.
const SETTLED: Duration = Duration::from_secs(2);

impl Artifact {
    /// The artifact at `path`: its remembered digest, or its bytes read and hashed (and the
    /// digest remembered). A memo that cannot be read or written only costs a hash.
    pub fn open(cache_dir: &Path, path: &Path) -> std::io::Result<Self> {
        let metadata = std::fs::metadata(path)?;
        let absolute = std::path::absolute(path)?;
        let memo = cache_dir.join("digests").join(memo_name(&absolute));
        let known = identity(&absolute, &metadata);
        if let Some(digest) = std::fs::read_to_string(&memo).ok().and_then(|memo| memo.strip_prefix(&known).map(str::to_owned)) {
            if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(Self { path: path.to_owned(), digest, bytes: None });
            }
        }
        let bytes = std::fs::read(path)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let settled = metadata.modified().ok().and_then(|modified| SystemTime::now().duration_since(modified).ok()).is_some_and(|age| age >= SETTLED);
        // The file may have changed while it was read: remember only what was stat-ed before
        // and after alike.
        let unchanged = std::fs::metadata(path).is_ok_and(|after| identity(&absolute, &after) == known);
        if settled && unchanged {
            if let Err(error) = store(&memo, format!("{known}{digest}").as_bytes()) {
                tracing::debug!(path = %memo.display(), %error, "Cannot remember the artifact's digest.");
            }
        }
        Ok(Self { path: path.to_owned(), digest, bytes: Some(bytes) })
    }

    /// The artifact's bytes (read now if its digest came from the memo).
    pub fn bytes(&mut self) -> std::io::Result<&[u8]> {
        match &mut self.bytes {
            Some(bytes) => Ok(bytes),
            none => Ok(none.insert(std::fs::read(&self.path)?)),
        }
    }

    /// Its first bytes (a header check), without reading the rest.
    pub fn head(&self, len: usize) -> std::io::Result<Vec<u8>> {
        if let Some(bytes) = &self.bytes {
            return Ok(bytes[..len.min(bytes.len())].to_vec());
        }
        let mut head = Vec::with_capacity(len);
        std::fs::File::open(&self.path)?.take(len as u64).read_to_end(&mut head)?;
        Ok(head)
    }

    /// Where its compiled form is cached for `engine`.
    pub fn cache_path(&self, engine: &Engine, cache_dir: &Path) -> PathBuf {
        cache_path_for(engine, cache_dir, &self.digest)
    }
}

/// The memo's file name: a hash of the artifact's absolute path (the memo also holds it).
fn memo_name(absolute: &Path) -> String {
    hex::encode(&Sha256::digest(absolute.as_os_str().as_encoded_bytes())[..16])
}

/// What the memo is keyed by, as the memo's first line (the digest follows it).
fn identity(absolute: &Path, metadata: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt as _;
    format!(
        "{} dev={} ino={} size={} mtime={}.{:09}\n",
        absolute.display(),
        metadata.dev(),
        metadata.ino(),
        metadata.size(),
        metadata.mtime(),
        metadata.mtime_nsec()
    )
}

/// Loads `bytes` as a module, from the cache when it holds it, compiling and storing it
/// otherwise. A cache that cannot be written only costs a compile next time.
///
/// Loading checks the module against this engine's limits (the instance pool's memory size),
/// so a cached file can fail to load for reasons that are the module's, not the cache's: the
/// file is called unreadable only when a fresh compile of the same bytes does load, and only
/// a compiled module that loads is stored.
pub fn load<T: Compiled>(engine: &Engine, cache_dir: &Path, bytes: &[u8]) -> anyhow::Result<T> {
    load_at(engine, &cache_path(engine, cache_dir, bytes), bytes)
}

/// [`load`] for bytes whose cache file ([`cache_path`]) is known.
pub fn load_at<T: Compiled>(engine: &Engine, path: &Path, bytes: &[u8]) -> anyhow::Result<T> {
    load_with(engine, path, || Ok(bytes))
}

/// [`load`] for an artifact on disk, which is read only when it must be compiled.
pub fn load_artifact<T: Compiled>(engine: &Engine, cache_dir: &Path, artifact: &mut Artifact) -> anyhow::Result<T> {
    let path = artifact.cache_path(engine, cache_dir);
    let source = artifact.path.clone();
    load_with(engine, &path, || artifact.bytes().with_context(|| format!("reading {}", source.display())))
}

fn load_with<'a, T: Compiled>(engine: &Engine, path: &Path, bytes: impl FnOnce() -> anyhow::Result<&'a [u8]>) -> anyhow::Result<T> {
    let mut unreadable = None;
    if path.is_file() {
        // SAFETY: the file was written by `store` below from `Compiled::precompile` output,
        // under a name that includes the hash of the engine's compatibility settings;
        // wasmtime additionally checks its header (module or component) before running it.
        match unsafe { T::deserialize_file(engine, path) } {
            Ok(module) => return Ok(module),
            Err(error) => unreadable = Some(error),
        }
    }
    let compiled = T::precompile(engine, bytes()?)
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("compiling the module")?;
    // SAFETY: `compiled` was produced by this engine a moment ago.
    let module = unsafe { T::deserialize(engine, &compiled) }
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("loading the compiled module")?;
    if let Some(error) = unreadable {
        tracing::warn!(path = %path.display(), %error, "Replacing an unreadable cached module.");
    }
    if let Err(error) = store(path, &compiled) {
        tracing::warn!(path = %path.display(), %error, "Cannot cache the compiled module.");
    }
    Ok(module)
}

/// Compiles `bytes` into the cache without loading it (ahead-of-time deployment).
pub fn precompile<T: Compiled>(engine: &Engine, cache_dir: &Path, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let path = cache_path(engine, cache_dir, bytes);
    let compiled = T::precompile(engine, bytes)
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("compiling the module")?;
    store(&path, &compiled).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Writes atomically (temporary file + rename), so a concurrent reader never sees half a file.
fn store(path: &Path, compiled: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, compiled)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

    use super::*;
    use crate::runtime::wasm::engine::{build, EngineLimits};

    fn engine(max_memory_mb: usize) -> Engine {
        build(EngineLimits { instances: 4, max_memory_bytes: max_memory_mb << 20 }).unwrap()
    }

    #[test]
    fn a_module_the_engine_refuses_is_not_cached() {
        let engine = engine(64);
        let dir = tempfile::tempdir().unwrap();
        let bytes = wat::parse_str("(module (memory 2080) (func (export \"_start\")))").unwrap();
        for _ in 0..2 {
            let error = format!("{:#}", load::<Module>(&engine, dir.path(), &bytes).unwrap_err());
            assert!(error.contains("memory"), "{error}");
            assert!(!cache_path(&engine, dir.path(), &bytes).exists(), "a module that cannot load was cached");
        }
        let small = wat::parse_str("(module (memory 1) (func (export \"_start\")))").unwrap();
        load::<Module>(&engine, dir.path(), &small).unwrap();
        assert!(cache_path(&engine, dir.path(), &small).is_file());
    }

    #[test]
    fn an_unreadable_cached_file_is_replaced() {
        let engine = engine(64);
        let dir = tempfile::tempdir().unwrap();
        let bytes = wat::parse_str("(module (memory 1) (func (export \"_start\")))").unwrap();
        let path = cache_path(&engine, dir.path(), &bytes);
        std::fs::write(&path, b"not a compiled module").unwrap();
        load::<Module>(&engine, dir.path(), &bytes).unwrap();
        // SAFETY: written by `load` from this engine's output just now.
        unsafe { Module::deserialize_file(&engine, &path) }.unwrap();
    }

    fn age(path: &Path, by: Duration) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - by).unwrap();
    }

    /// A temporary folder with a cache folder and an artifact holding `content`, modified
    /// `age_by` ago.
    fn artifact(content: &[u8], age_by: Duration) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (cache, path) = (dir.path().join("cache"), dir.path().join("component.wasm"));
        std::fs::write(&path, content).unwrap();
        if !age_by.is_zero() {
            age(&path, age_by);
        }
        (dir, cache, path)
    }

    #[test]
    fn a_settled_artifact_is_not_read_again() {
        let (_dir, cache, path) = artifact(b"first", Duration::from_secs(60));
        let first = Artifact::open(&cache, &path).unwrap();
        assert!(first.bytes.is_some());
        assert_eq!(first.digest, hex::encode(Sha256::digest(b"first")));
        let again = Artifact::open(&cache, &path).unwrap();
        assert!(again.bytes.is_none(), "the remembered digest was not used");
        assert_eq!(again.digest, first.digest);
        assert_eq!(again.head(3).unwrap(), b"fir");

        // Rewritten (another size, another time): hashed anew.
        std::fs::write(&path, b"second!").unwrap();
        age(&path, Duration::from_secs(30));
        let changed = Artifact::open(&cache, &path).unwrap();
        assert_eq!(changed.digest, hex::encode(Sha256::digest(b"second!")));
        // Same size, only the time differs: hashed anew as well.
        std::fs::write(&path, b"third!!").unwrap();
        age(&path, Duration::from_secs(20));
        assert_eq!(Artifact::open(&cache, &path).unwrap().digest, hex::encode(Sha256::digest(b"third!!")));
    }

    #[test]
    fn a_fresh_artifact_is_hashed_until_it_settles() {
        let (_dir, cache, path) = artifact(b"just written", Duration::ZERO);
        Artifact::open(&cache, &path).unwrap();
        let mut again = Artifact::open(&cache, &path).unwrap();
        assert!(again.bytes.is_some(), "a file written this instant was trusted by its time stamp");
        assert_eq!(again.bytes().unwrap(), b"just written");
    }

    #[test]
    fn a_damaged_memo_costs_only_a_hash() {
        let (_dir, cache, path) = artifact(b"content", Duration::from_secs(60));
        Artifact::open(&cache, &path).unwrap();
        let memo = std::fs::read_dir(cache.join("digests")).unwrap().flatten().next().unwrap().path();
        let text = std::fs::read_to_string(&memo).unwrap();
        std::fs::write(&memo, text.replace(&hex::encode(Sha256::digest(b"content")), "not a digest")).unwrap();
        let artifact = Artifact::open(&cache, &path).unwrap();
        assert_eq!(artifact.digest, hex::encode(Sha256::digest(b"content")));
    }
}
