//! Hard memory limits for execution environments through a memory cgroup created under
//! this process's own one: cgroup v2 (`memory.max`) or v1 (`memory.limit_in_bytes`).
//!
//! Where neither is writable (not root, no delegation) environments fall back to
//! `RLIMIT_AS`, set in the child before it runs (see `env.rs`).

use std::path::{Path, PathBuf};

use tracing::{debug, warn};

/// Which hierarchy the cgroups live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// Where this process may create memory cgroups.
#[derive(Debug, Clone)]
pub struct Parent {
    dir: PathBuf,
    version: Version,
}

impl Parent {
    /// This process's memory cgroup, if a child cgroup with a memory limit can be made in it.
    pub fn detect() -> Option<Self> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let parent = find(&own, Path::new("/sys/fs/cgroup"))?;
        // Probe: make a child, set a limit, read it back, remove it.
        let probe = parent.dir.join(format!("sluice-probe-{}", std::process::id()));
        let ok = std::fs::create_dir(&probe).is_ok() && {
            let written = std::fs::write(probe.join(parent.limit_file()), (64u64 << 20).to_string()).is_ok();
            let _ = std::fs::remove_dir(&probe);
            written
        };
        if ok {
            Some(parent)
        } else {
            debug!(dir = %parent.dir.display(), "Cannot create memory cgroups here; environments get RLIMIT_AS instead.");
            None
        }
    }

    fn limit_file(&self) -> &'static str {
        match self.version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        }
    }

    /// Creates `name` with a hard limit of `bytes`. Swap is limited too where the kernel
    /// accounts it, so the limit cannot be escaped by swapping.
    pub fn create(&self, name: &str, bytes: u64) -> std::io::Result<Cgroup> {
        let dir = self.dir.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
        let cgroup = Cgroup { dir, version: self.version };
        std::fs::write(cgroup.dir.join(self.limit_file()), bytes.to_string())?;
        match self.version {
            Version::V1 => {
                // Optional: only where swap accounting is on; must be at least the memory limit.
                let _ = std::fs::write(cgroup.dir.join("memory.memsw.limit_in_bytes"), bytes.to_string());
            }
            Version::V2 => {
                let _ = std::fs::write(cgroup.dir.join("memory.swap.max"), "0");
            }
        }
        Ok(cgroup)
    }

    /// Removes cgroups a killed `sluice` left behind (`sluice-<pid>-...` of a process that
    /// is gone); they hold no processes once their environments died with it.
    pub fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("sluice-").and_then(|rest| rest.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                if let Err(error) = std::fs::remove_dir(entry.path()) {
                    debug!(cgroup = %entry.path().display(), %error, "Cannot remove a stale cgroup.");
                }
            }
        }
    }
}

/// One environment's cgroup; removed when dropped (after its processes are gone).
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    version: Version,
}

impl Cgroup {
    /// The file a child writes its pid into to join.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Peak memory use so far, in bytes.
    pub fn peak_bytes(&self) -> Option<u64> {
        let file = match self.version {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        };
        std::fs::read_to_string(self.dir.join(file)).ok()?.trim().parse().ok()
    }

    /// How many times the kernel's OOM killer killed a process of this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = match self.version {
            Version::V1 => ("memory.oom_control", "oom_kill"),
            Version::V2 => ("memory.events", "oom_kill"),
        };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        counter(&text, key).unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The processes are killed before this runs; the kernel may take a moment to
        // release the last one.
        for _ in 0..50 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        warn!(cgroup = %self.dir.display(), "Cannot remove an execution environment's cgroup; it is removed at the next start.");
    }
}

/// The memory cgroup directory of this process, from `/proc/self/cgroup`'s text.
fn find(own: &str, root: &Path) -> Option<Parent> {
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let relative = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            let dir = root.join("memory").join(relative);
            if dir.join("memory.limit_in_bytes").exists() {
                return Some(Parent { dir, version: Version::V1 });
            }
        }
        if id == "0" && controllers.is_empty() {
            // v2: the unified hierarchy, mounted at the root or at `unified` beside v1.
            for base in [root.to_path_buf(), root.join("unified")] {
                let dir = base.join(relative);
                let has_memory = std::fs::read_to_string(dir.join("cgroup.controllers")).is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
                if has_memory {
                    return Some(Parent { dir, version: Version::V2 });
                }
            }
        }
    }
    None
}

/// `key N` in a flat-keyed cgroup file.
fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_key() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(counter(text, "oom_kill"), Some(3));
        assert_eq!(counter(text, "under_oom"), Some(0));
        assert_eq!(counter(text, "missing"), None);
    }

    #[test]
    fn the_memory_line_is_found() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("memory/process_api/abc");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.limit_in_bytes"), "1").unwrap();
        let own = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n";
        let parent = find(own, root.path()).unwrap();
        assert_eq!(parent.dir, dir);
        assert_eq!(parent.version, Version::V1);
        let v2 = root.path().join("unified/x");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("cgroup.controllers"), "cpu io memory pids").unwrap();
        let parent = find("0::/x\n", root.path()).unwrap();
        assert_eq!((parent.dir, parent.version), (v2, Version::V2));
        assert!(find("0::/nothing\n", root.path()).is_none());
    }
}
