//! A function folder as one artifact: a gzipped tar, made the same way every time from the
//! same files (sorted entries, no times or owners), so an unchanged function deploys as
//! the version already stored.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

/// Folders a function's artifact leaves out: build trees and caches no runtime reads.
const SKIPPED: &[&str] = &["target", ".git", "__pycache__", ".sluice"];

/// A packed folder and its SHA-256 (hex).
pub struct Packed {
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// Regular files in it.
    pub files: usize,
}

/// Packs `dir` (symbolic links kept as links).
pub fn pack(dir: &Path) -> anyhow::Result<Packed> {
    let mut files = 0;
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    add_dir(&mut builder, dir, Path::new(""), &mut files)?;
    let encoder = builder.into_inner().context("finishing the archive")?;
    let bytes = encoder.finish().context("compressing the archive")?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(Packed { bytes, sha256, files })
}

fn add_dir(builder: &mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>, dir: &Path, name: &Path, files: &mut usize) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let file_name = entry.file_name();
        if SKIPPED.iter().any(|s| file_name == *s) {
            continue;
        }
        let path = entry.path();
        let inner = name.join(&file_name);
        let kind = entry.file_type().with_context(|| format!("reading {}", path.display()))?;
        builder.append_path_with_name(&path, &inner).with_context(|| format!("packing {}", path.display()))?;
        if kind.is_dir() {
            add_dir(builder, &path, &inner, files)?;
        } else if kind.is_file() {
            *files += 1;
        }
    }
    Ok(())
}

/// Unpacks `bytes` into `dest`, which must not exist: into a sibling folder first, renamed
/// into place once complete, so a reader never sees half an artifact.
pub fn unpack(bytes: &[u8], dest: &Path) -> anyhow::Result<()> {
    let parent = dest.parent().context("the destination has no parent folder")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let partial = parent.join(format!(".partial-{}", uuid::Uuid::new_v4()));
    let result = (|| {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        archive.set_preserve_permissions(true);
        archive.unpack(&partial).context("unpacking the artifact")?;
        std::fs::rename(&partial, dest).with_context(|| format!("moving the artifact to {}", dest.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}

/// The SHA-256 (hex) of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `text` to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, text: &[u8]) -> anyhow::Result<()> {
    let parent = path.parent().context("the destination has no parent folder")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let partial = parent.join(format!(".partial-{}", uuid::Uuid::new_v4()));
    let mut file = std::fs::File::create(&partial).with_context(|| format!("writing {}", partial.display()))?;
    file.write_all(text).with_context(|| format!("writing {}", partial.display()))?;
    drop(file);
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("function.toml"), "name = \"f\"\n").unwrap();
        std::fs::create_dir_all(dir.path().join("lib/deep")).unwrap();
        std::fs::write(dir.path().join("lib/deep/a.py"), "x = 1\n").unwrap();
        std::fs::create_dir_all(dir.path().join("target/debug")).unwrap();
        std::fs::write(dir.path().join("target/debug/big"), vec![0u8; 4096]).unwrap();
        std::os::unix::fs::symlink("lib/deep/a.py", dir.path().join("link.py")).unwrap();
        dir
    }

    #[test]
    fn the_same_files_pack_to_the_same_digest() {
        let first = folder();
        let second = folder();
        // Other times and another creation order change nothing.
        std::fs::write(second.path().join("function.toml"), "name = \"f\"\n").unwrap();
        let (a, b) = (pack(first.path()).unwrap(), pack(second.path()).unwrap());
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(a.files, 2, "function.toml and lib/deep/a.py; target/ is left out");
        std::fs::write(second.path().join("lib/deep/a.py"), "x = 2\n").unwrap();
        assert_ne!(pack(second.path()).unwrap().sha256, a.sha256, "a changed file is a new artifact");
    }

    #[test]
    fn an_artifact_unpacks_whole() {
        let source = folder();
        let packed = pack(source.path()).unwrap();
        assert_eq!(digest(&packed.bytes), packed.sha256);
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("v1");
        unpack(&packed.bytes, &dest).unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("lib/deep/a.py")).unwrap(), "x = 1\n");
        assert_eq!(std::fs::read_link(dest.join("link.py")).unwrap(), Path::new("lib/deep/a.py"));
        assert!(!dest.join("target").exists());
        // Unpacking over an existing version fails and leaves no partial folder behind.
        assert!(unpack(&packed.bytes, &dest).is_err());
        let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from("v1")]);
    }
}
