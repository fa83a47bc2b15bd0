//! Precompiled modules and components on disk, keyed by content: the hash of the artifact's
//! bytes and of the engine settings that the compiled code depends on. A changed artifact or
//! a new Sluice version simply misses; nothing is ever invalidated by hand.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

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
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let content = hex::encode(Sha256::digest(bytes));
    cache_dir.join(format!("{content}-{:016x}.cwasm", hasher.finish()))
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

/// [`load`] with the cache path already known (hashing a large artifact once, not twice).
pub fn load_at<T: Compiled>(engine: &Engine, path: &Path, bytes: &[u8]) -> anyhow::Result<T> {
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
    let compiled = T::precompile(engine, bytes)
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
}
