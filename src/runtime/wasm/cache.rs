//! Precompiled modules on disk, keyed by content: the hash of the module bytes and of the
//! engine settings that the compiled code depends on. A changed module or a new Sluice
//! version simply misses; nothing is ever invalidated by hand.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

/// Where a module's compiled form is cached.
pub fn cache_path(engine: &Engine, cache_dir: &Path, bytes: &[u8]) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let content = hex::encode(Sha256::digest(bytes));
    cache_dir.join(format!("{content}-{:016x}.cwasm", hasher.finish()))
}

/// Loads `bytes` as a module, from the cache when it holds it, compiling and storing it
/// otherwise. A cache that cannot be written only costs a compile next time.
pub fn load(engine: &Engine, cache_dir: &Path, bytes: &[u8]) -> anyhow::Result<Module> {
    let path = cache_path(engine, cache_dir, bytes);
    if path.is_file() {
        // SAFETY: the file was written by `store` below from `Engine::precompile_module`
        // output, under a name that includes the hash of the engine's compatibility
        // settings; wasmtime additionally checks its header before running it.
        match unsafe { Module::deserialize_file(engine, &path) } {
            Ok(module) => return Ok(module),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "Ignoring an unreadable cached module.");
            }
        }
    }
    let compiled = engine
        .precompile_module(bytes)
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("compiling the module")?;
    if let Err(error) = store(&path, &compiled) {
        tracing::warn!(path = %path.display(), %error, "Cannot cache the compiled module.");
    }
    // SAFETY: `compiled` was produced by this engine a moment ago.
    unsafe { Module::deserialize(engine, &compiled) }
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("loading the compiled module")
}

/// Compiles `bytes` into the cache without loading it (ahead-of-time deployment).
pub fn precompile(engine: &Engine, cache_dir: &Path, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let path = cache_path(engine, cache_dir, bytes);
    let compiled = engine
        .precompile_module(bytes)
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
