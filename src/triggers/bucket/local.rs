//! Local buckets: the folder `buckets/<name>/`, watched recursively with inotify.
//!
//! A file fires when it is complete: its writer closed it (`IN_CLOSE_WRITE`) and it stayed
//! untouched for `settle`, or it was moved in. A file that appeared without a close (a hard
//! link, a file found by a scan) fires once no process has it open for writing (checked in
//! `/proc`) and it stayed untouched for a second. Every start, and every time the kernel's
//! event queue overflowed, the whole folder is listed and compared with what already fired.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::config::BucketConfig;
use super::record::Version;
use super::Emitter;
use crate::triggers::TriggerContext;

/// How long a file that appeared without a close must stay untouched before it is checked.
const STALE: Duration = Duration::from_secs(1);

pub struct LocalBucket {
    pub(super) config: BucketConfig,
    pub(super) root: PathBuf,
}

/// A file seen changing that has not fired yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Its writer closed it (or it was moved in): complete once it settles.
    closed: bool,
    touched: Instant,
}

/// What a look at a pending file found.
enum Look {
    /// Gone, a folder, ignored, or the same version that already fired.
    Nothing,
    /// Still open for writing somewhere, or changed while being read: look again later.
    Busy,
    Changed(String, Version),
}

impl LocalBucket {
    pub(super) async fn run(self, ctx: TriggerContext, mut emitter: Emitter) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating the bucket folder {}", self.root.display()))?;
        let root = self.root.canonicalize().with_context(|| format!("resolving {}", self.root.display()))?;

        // Watch first, then list: whatever changes in between shows up in either.
        let (tx, mut rx) = mpsc::channel::<notify::Result<notify::Event>>(4096);
        let mut watcher = notify::recommended_watcher(move |event| {
            // Blocking here when we fall behind lets the kernel queue fill; on overflow we
            // rescan instead of buffering without bound.
            let _ = tx.blocking_send(event);
        })
        .context("starting the inotify watcher")?;
        watcher.watch(&root, RecursiveMode::Recursive).with_context(|| {
            format!(
                "watching {} (if the limit of inotify watches is reached, raise fs.inotify.max_user_watches)",
                root.display()
            )
        })?;

        let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
        self.rescan(&root, &mut emitter, &mut pending).await?;
        info!(trigger = %emitter.trigger, bucket = %root.display(), known = emitter.known.len(), "Watching the bucket.");
        let mut health = crate::triggers::health::Health::new(&ctx.name, &ctx.bus).await;
        health.set(crate::triggers::health::Status::Healthy, format!("watching {}", root.display())).await;

        let tick_every = (self.config.settle / 2).clamp(Duration::from_millis(20), Duration::from_millis(500));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                event = rx.recv() => {
                    let Some(event) = event else { anyhow::bail!("the inotify watcher stopped") };
                    let mut rescan = self.on_event(&root, event, &mut emitter, &mut pending).await;
                    // Take what else is queued before looking at files again.
                    while let Ok(event) = rx.try_recv() {
                        rescan |= self.on_event(&root, event, &mut emitter, &mut pending).await;
                    }
                    if rescan {
                        self.rescan(&root, &mut emitter, &mut pending).await?;
                    }
                }
                _ = tick.tick() => {
                    if !pending.is_empty() {
                        self.fire_ready(&root, &mut emitter, &mut pending, &ctx).await;
                    }
                }
            }
        }
        drop(watcher);
        Ok(())
    }

    /// Applies one watcher event; returns whether the whole bucket must be listed again.
    async fn on_event(
        &self,
        root: &Path,
        event: notify::Result<notify::Event>,
        emitter: &mut Emitter,
        pending: &mut HashMap<PathBuf, Pending>,
    ) -> bool {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                warn!(trigger = %emitter.trigger, %error, "The inotify watcher reported an error; listing the bucket again.");
                return true;
            }
        };
        if event.need_rescan() {
            warn!(trigger = %emitter.trigger, "The kernel's inotify queue overflowed; listing the bucket again.");
            return true;
        }
        tracing::trace!(kind = ?event.kind, paths = ?event.paths, "inotify event");
        let now = Instant::now();
        for path in &event.paths {
            match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                    if path.is_dir() {
                        self.found_folder(root, path, pending);
                    } else {
                        pending.insert(path.clone(), Pending { closed: true, touched: now });
                    }
                }
                EventKind::Create(CreateKind::Folder) => self.found_folder(root, path, pending),
                EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) if !path.is_dir() => {
                    pending.insert(path.clone(), Pending { closed: false, touched: now });
                }
                EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
                    pending.retain(|p, _| !p.starts_with(path));
                    if let Some(key) = object_key(root, path) {
                        emitter.removed_under(&key).await;
                    }
                }
                _ => {}
            }
        }
        false
    }

    /// A folder appeared (created or moved in): its files may predate the watch on it.
    fn found_folder(&self, root: &Path, dir: &Path, pending: &mut HashMap<PathBuf, Pending>) {
        if object_key(root, dir).is_none() {
            return;
        }
        let eligible = Instant::now().checked_sub(STALE).unwrap_or_else(Instant::now);
        for (path, _) in list_files(root, dir) {
            pending.entry(path).or_insert(Pending { closed: false, touched: eligible });
        }
    }

    /// Lists the bucket and compares it with what already fired: new or changed files become
    /// pending (they fire once complete), recorded files that are gone are deleted.
    async fn rescan(&self, root: &Path, emitter: &mut Emitter, pending: &mut HashMap<PathBuf, Pending>) -> anyhow::Result<()> {
        let listing = {
            let root = root.to_path_buf();
            tokio::task::spawn_blocking(move || list_files(&root, &root)).await.context("listing the bucket")?
        };
        let seen: HashSet<&str> = listing.iter().map(|(_, key)| key.as_str()).collect();
        let gone: Vec<String> = emitter.known.keys().filter(|k| !seen.contains(k.as_str())).cloned().collect();
        for key in gone {
            emitter.removed(&key).await;
        }
        let eligible = Instant::now().checked_sub(STALE).unwrap_or_else(Instant::now);
        if emitter.first_run && !self.config.fires_existing() {
            // The files there before the first start are the baseline, not news.
            let mut baseline = Vec::new();
            for (path, key) in &listing {
                if let Some(version) = stat_version(root, path, None) {
                    baseline.push((key.clone(), version));
                }
            }
            for (key, version) in baseline {
                emitter.record(&key, version).await;
            }
        } else {
            for (path, key) in listing {
                let changed = match emitter.known.get(&key) {
                    None => true,
                    Some(version) => std::fs::metadata(&path).map(|m| version.id != local_id(&m)).unwrap_or(false),
                };
                if changed {
                    pending.entry(path).or_insert(Pending { closed: false, touched: eligible });
                }
            }
        }
        emitter.initialised().await;
        Ok(())
    }

    /// Fires the pending files that are complete.
    async fn fire_ready(&self, root: &Path, emitter: &mut Emitter, pending: &mut HashMap<PathBuf, Pending>, ctx: &TriggerContext) {
        let now = Instant::now();
        let mut due: Vec<(PathBuf, Pending, Option<String>)> = pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.touched) >= if p.closed { self.config.settle } else { STALE.max(self.config.settle) })
            .map(|(path, p)| {
                let known = object_key(root, path).and_then(|key| emitter.known.get(&key)).map(|v| v.id.clone());
                (path.clone(), *p, known)
            })
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort_by_key(|(_, p, _)| p.touched);
        let looks = {
            let root = root.to_path_buf();
            let due = due.clone();
            match tokio::task::spawn_blocking(move || look_at(&root, &due)).await {
                Ok(looks) => looks,
                Err(error) => {
                    warn!(trigger = %emitter.trigger, %error, "Cannot look at the changed files.");
                    return;
                }
            }
        };
        for ((path, _, _), look) in due.into_iter().zip(looks) {
            if ctx.shutdown.is_cancelled() {
                return;
            }
            match look {
                Look::Nothing => {
                    pending.remove(&path);
                }
                Look::Busy => {
                    pending.insert(path, Pending { closed: false, touched: Instant::now() });
                }
                Look::Changed(key, version) => {
                    if emitter.created(&key, version).await {
                        pending.remove(&path);
                    } else {
                        // JetStream is unavailable: keep it and try again on a later tick.
                        pending.insert(path, Pending { closed: true, touched: Instant::now() });
                        return;
                    }
                }
            }
        }
    }
}

/// Stats, checks and hashes the due files (blocking).
fn look_at(root: &Path, due: &[(PathBuf, Pending, Option<String>)]) -> Vec<Look> {
    // Files whose close was not seen: does any process still have them open for writing?
    let unsure: HashSet<(u64, u64)> = due
        .iter()
        .filter(|(_, p, _)| !p.closed)
        .filter_map(|(path, _, _)| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino())))
        .collect();
    let busy = if unsure.is_empty() { HashSet::new() } else { open_for_writing(&unsure) };
    due.iter()
        .map(|(path, _, known)| {
            let Some(key) = object_key(root, path) else { return Look::Nothing };
            let Ok(meta) = std::fs::metadata(path) else { return Look::Nothing };
            if busy.contains(&(meta.dev(), meta.ino())) {
                return Look::Busy;
            }
            match stat_version(root, path, known.as_deref()) {
                Some(version) => Look::Changed(key, version),
                None => Look::Nothing,
            }
        })
        .map(|look| match look {
            Look::Changed(key, version) if version.etag.is_empty() => {
                debug!(%key, "The file changed while it was read; looking again later.");
                Look::Busy
            }
            other => other,
        })
        .collect()
}

/// The version of a regular file inside the bucket, or `None` if it is not one, is the
/// `known` version, or lies (through a symlink) outside the bucket. The etag is the MD5 of
/// the content; empty if the file changed while it was read.
fn stat_version(root: &Path, path: &Path, known: Option<&str>) -> Option<Version> {
    let link = std::fs::symlink_metadata(path).ok()?;
    if link.file_type().is_symlink() {
        let target = path.canonicalize().ok()?;
        if !target.starts_with(root) {
            debug!(path = %path.display(), target = %target.display(), "Not following a symlink out of the bucket.");
            return None;
        }
    }
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let id = local_id(&meta);
    if known == Some(id.as_str()) {
        return None;
    }
    let etag = md5_file(path).ok()?;
    let after = std::fs::metadata(path).ok()?;
    let etag = if local_id(&after) == id { etag } else { String::new() };
    let modified: DateTime<Utc> = meta.modified().map(DateTime::from).unwrap_or_else(|_| Utc::now());
    Some(Version { size: meta.len(), etag, id, modified })
}

/// `<size>-<mtime in ns>`: a local file's version.
fn local_id(meta: &std::fs::Metadata) -> String {
    let nanos = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    format!("{}-{nanos}", meta.len())
}

fn md5_file(path: &Path) -> std::io::Result<String> {
    use md5::Digest as _;
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = md5::Md5::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The (device, inode) of `targets` that some other process has open for writing. Processes
/// of other users are invisible without privileges; then the settle time is all we have.
fn open_for_writing(targets: &HashSet<(u64, u64)>) -> HashSet<(u64, u64)> {
    let me = std::process::id().to_string();
    let mut found = HashSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return found };
    for proc in procs.filter_map(Result::ok) {
        let name = proc.file_name();
        let Some(pid) = name.to_str() else { continue };
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else { continue };
        for fd in fds.filter_map(Result::ok) {
            let Ok(meta) = std::fs::metadata(fd.path()) else { continue };
            let id = (meta.dev(), meta.ino());
            if !targets.contains(&id) {
                continue;
            }
            let info = std::fs::read_to_string(proc.path().join("fdinfo").join(fd.file_name())).unwrap_or_default();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
                .unwrap_or(0o2);
            if flags & 0o3 != 0 {
                found.insert(id);
            }
        }
    }
    found
}

/// Every file under `dir` that is an object of the bucket, with its key (blocking). Does
/// not descend into ignored folders or follow symlinked folders.
fn list_files(root: &Path, dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let Some(key) = object_key(root, &path) else { continue };
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() || t.is_symlink() => out.push((path, key)),
                _ => {}
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// The object key of a path in the bucket (`images/a.png`), or `None` if the path is
/// outside it, not UTF-8, or ignored: hidden files and folders, and the temporary files of
/// editors and downloaders.
pub(super) fn object_key(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    for component in relative.components() {
        let Component::Normal(part) = component else { return None };
        let part = part.to_str()?;
        if ignored(part) {
            return None;
        }
        parts.push(part);
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Names that are never objects.
pub(super) fn ignored(name: &str) -> bool {
    const SUFFIXES: &[&str] = &[".part", ".partial", ".crdownload", ".download", ".tmp", ".swp", ".swo", ".swx", "~"];
    name.starts_with('.')
        || (name.starts_with('#') && name.ends_with('#'))
        || name == "4913"
        || SUFFIXES.iter().any(|s| name.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_hidden_names_are_ignored() {
        for name in [".hidden", "a.txt.part", "a.txt~", ".a.txt.swp", "#a.txt#", "4913", "x.crdownload", "f.tmp"] {
            assert!(ignored(name), "{name}");
        }
        for name in ["a.txt", "report.partition", "x"] {
            assert!(!ignored(name), "{name}");
        }
    }

    #[test]
    fn keys_are_relative_and_skip_ignored_folders() {
        let root = Path::new("/b");
        assert_eq!(object_key(root, Path::new("/b/images/a.png")).as_deref(), Some("images/a.png"));
        assert_eq!(object_key(root, Path::new("/b/.git/config")), None);
        assert_eq!(object_key(root, Path::new("/b")), None);
        assert_eq!(object_key(root, Path::new("/elsewhere/a")), None);
    }

    #[test]
    fn listing_finds_nested_files_and_versions_change_with_content() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/c.txt"), b"hello world").unwrap();
        std::fs::write(root.join("a/.tmp.txt"), b"x").unwrap();
        std::fs::write(root.join("top.txt.part"), b"x").unwrap();
        let files = list_files(&root, &root);
        assert_eq!(files.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>(), vec!["a/b/c.txt"]);
        let version = stat_version(&root, &root.join("a/b/c.txt"), None).unwrap();
        assert_eq!(version.size, 11);
        assert_eq!(version.etag, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert!(stat_version(&root, &root.join("a/b/c.txt"), Some(&version.id)).is_none());
    }

    #[test]
    fn symlinks_out_of_the_bucket_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bucket");
        std::fs::create_dir(&root).unwrap();
        let root = root.canonicalize().unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::fs::write(root.join("inside.txt"), b"i").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("inside.txt"), root.join("in")).unwrap();
        assert!(stat_version(&root, &root.join("out"), None).is_none());
        assert!(stat_version(&root, &root.join("in"), None).is_some());
    }

    #[test]
    fn a_file_open_for_writing_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::File::create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let id = (meta.dev(), meta.ino());
        // Our own process is skipped, so a child holds it open.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("exec 3>>'{}'; exec sleep 5", path.display()))
            .spawn()
            .unwrap();
        let targets: HashSet<_> = [id].into_iter().collect();
        let mut seen = false;
        for _ in 0..100 {
            if open_for_writing(&targets).contains(&id) {
                seen = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        drop(file);
        assert!(seen, "the child's write handle was not found");
        assert!(open_for_writing(&targets).is_empty());
    }
}
