//! One execution environment: a process (group) running a Lambda runtime client against
//! its own Runtime API server, reused for invocation after invocation.
//!
//! The process sees only Lambda's variables and the function's `env`; it is the leader of
//! its own process group, so a timeout kills everything it started; it dies with the
//! worker (`PR_SET_PDEATHSIG`), so a killed `sluice` leaves no handler behind; its memory
//! is capped by its own cgroup (or `RLIMIT_AS`).

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::sync::{oneshot, watch};

use super::api::{Api, Outcome, Pending, Readiness, RuntimeError};
use super::cgroup::{self, Cgroup};
use crate::runtime::wasm::MAX_LOG_BYTES;

const MIB: u64 = 1024 * 1024;

/// How to start the environments of one function.
#[derive(Debug, Clone)]
pub struct Spec {
    pub function: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// `LAMBDA_TASK_ROOT` and the working directory.
    pub task_root: PathBuf,
    /// Every variable the process gets, but `AWS_LAMBDA_RUNTIME_API` and the log stream.
    pub env: Vec<(String, String)>,
    pub memory_mb: u32,
    pub cgroups: Option<cgroup::Parent>,
    /// Whether `RLIMIT_AS` may stand in for a cgroup (not for V8, which reserves far more
    /// address space than it uses).
    pub address_space_limit: bool,
}

/// Output lines of the environment not yet handed to an invocation.
#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    bytes: usize,
    dropped: usize,
}

/// How an invocation ended, seen from outside the runtime.
#[derive(Debug)]
pub enum Ended {
    Outcome(Outcome),
    TimedOut,
    /// The process exited (or was killed) during the invocation.
    Exited { status: String, out_of_memory: bool },
}

/// Why an environment could not start.
#[derive(Debug, Clone)]
pub struct InitFailure {
    /// Lambda's errorType (`Runtime.ImportModuleError`, `Runtime.ExitError`, ...).
    pub error_type: String,
    pub message: String,
    pub out_of_memory: bool,
}

pub struct Environment {
    pub id: u64,
    pub pid: u32,
    api: Api,
    exit: watch::Receiver<Option<String>>,
    lines: Arc<Mutex<Lines>>,
    /// Duplicates of the stdout/stderr pipes' read ends, to see whether output is pending.
    pipes: Vec<OwnedFd>,
    cgroup: Option<Cgroup>,
    pub started: Instant,
    pub init_duration: Duration,
    pub last_used: Instant,
    pub invocations: u64,
}

impl Drop for Environment {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Environment {
    /// Starts the process and its Runtime API server; [`Environment::wait_ready`] waits for
    /// its initialisation.
    pub async fn start(spec: &Spec, id: u64) -> Result<Self, InitFailure> {
        let platform = |what: &str, error: std::io::Error| InitFailure {
            error_type: "Runtime.PlatformError".into(),
            message: format!("{what}: {error}"),
            out_of_memory: false,
        };
        let api = Api::start().await.map_err(|e| platform("cannot start the Runtime API server", e))?;
        let cgroup_name = format!("sluice-{}-{}-{id}", std::process::id(), spec.function);
        let cgroup = match &spec.cgroups {
            Some(parent) => Some(
                parent
                    .create(&cgroup_name, u64::from(spec.memory_mb) * MIB)
                    .map_err(|e| platform("cannot create the environment's memory cgroup", e))?,
            ),
            None => None,
        };
        let mut command = tokio::process::Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", api.addr().to_string())
            .env("AWS_LAMBDA_LOG_STREAM_NAME", log_stream_name(id))
            .current_dir(&spec.task_root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let procs = match &cgroup {
            Some(cgroup) => Some(
                CString::new(cgroup.procs_file().into_os_string().into_encoded_bytes())
                    .map_err(|_| platform("cgroup path", std::io::Error::other("contains a NUL byte")))?,
            ),
            None => None,
        };
        let address_space = (cgroup.is_none() && spec.address_space_limit).then(|| {
            // The interpreter's own mappings (code, libraries, thread stacks) count against
            // RLIMIT_AS, unlike against a cgroup.
            (u64::from(spec.memory_mb) + 256) * MIB
        });
        let parent = std::process::id();
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe calls (prctl, getppid, open, write, close, setrlimit, _exit) on
        // memory prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                if let Some(procs) = &procs {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let mut digits = [0u8; 20];
                    let written = format_pid(libc::getpid() as u32, &mut digits);
                    let ok = libc::write(fd, digits.as_ptr().cast(), written) == written as isize;
                    libc::close(fd);
                    if !ok {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(bytes) = address_space {
                    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
                    if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| platform(&format!("cannot start {}", spec.program.display()), e))?;
        let pid = child.id().unwrap_or_default();
        let lines = Arc::new(Mutex::new(Lines::default()));
        let mut pipes = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            pipes.extend(dup(stdout.as_raw_fd()));
            tokio::spawn(read_lines(stdout, lines.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            pipes.extend(dup(stderr.as_raw_fd()));
            tokio::spawn(read_lines(stderr, lines.clone()));
        }
        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => describe(status),
                Err(error) => format!("cannot wait for the process: {error}"),
            };
            // Whatever the runtime started dies with it.
            // SAFETY: plain syscall; the group id is the child's pid (process_group(0)).
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
            let _ = exit_tx.send(Some(status));
        });
        let now = Instant::now();
        Ok(Self { id, pid, api, exit, lines, pipes, cgroup, started: now, init_duration: Duration::ZERO, last_used: now, invocations: 0 })
    }

    /// Waits until the runtime asks for its first invocation (initialisation done), it
    /// reports an init error, it exits, or `limit` passes.
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<Duration, InitFailure> {
        let mut readiness = self.api.readiness();
        let mut exit = self.exit.clone();
        let waited = tokio::time::timeout(limit, async {
            loop {
                let state = readiness.borrow_and_update().clone();
                match state {
                    Readiness::Ready => return Ok(()),
                    Readiness::InitFailed(error) => return Err(Some(error)),
                    Readiness::Starting => {}
                }
                if exit.borrow_and_update().is_some() {
                    return Err(None);
                }
                tokio::select! {
                    changed = readiness.changed() => if changed.is_err() { return Err(None) },
                    changed = exit.changed() => if changed.is_err() { return Err(None) },
                }
            }
        })
        .await;
        let failure = match waited {
            Ok(Ok(())) => {
                self.init_duration = self.started.elapsed();
                return Ok(self.init_duration);
            }
            Ok(Err(Some(error))) => InitFailure { error_type: error.error_type.clone(), message: init_message(&error), out_of_memory: false },
            Ok(Err(None)) => {
                let status = self.exit.borrow().clone().unwrap_or_default();
                let out_of_memory = self.out_of_memory();
                InitFailure {
                    error_type: "Runtime.ExitError".into(),
                    message: format!("the runtime exited during initialisation ({status}){}", self.output_tail()),
                    out_of_memory,
                }
            }
            Err(_) => InitFailure {
                error_type: "Runtime.InitTimeout".into(),
                message: format!("the runtime did not ask for an invocation within {}{}", humantime::format_duration(limit), self.output_tail()),
                out_of_memory: false,
            },
        };
        self.kill();
        Err(failure)
    }

    /// Runs one invocation: hands it to the runtime and waits for its answer, its exit,
    /// or `deadline`. On a timeout the whole process group is killed.
    pub async fn invoke(&mut self, pending: Pending, reply: oneshot::Receiver<Outcome>, deadline: tokio::time::Instant) -> Ended {
        self.invocations += 1;
        let mut exit = self.exit.clone();
        let exited = async move {
            loop {
                if let Some(status) = exit.borrow_and_update().clone() {
                    return status;
                }
                if exit.changed().await.is_err() {
                    return "the process is gone".to_owned();
                }
            }
        };
        tokio::pin!(exited);
        let this = &*self;
        let ended = tokio::select! {
            sent = this.api.submit(pending) => match sent {
                Ok(()) => None,
                Err(_) => Some(Ended::Exited { status: "the Runtime API server stopped".into(), out_of_memory: false }),
            },
            status = &mut exited => Some(this.exited(status)),
            () = tokio::time::sleep_until(deadline) => { this.kill(); Some(Ended::TimedOut) }
        };
        let ended = match ended {
            Some(ended) => ended,
            None => tokio::select! {
                outcome = reply => match outcome {
                    Ok(outcome) => Ended::Outcome(outcome),
                    Err(_) => Ended::Exited { status: "the invocation was dropped".into(), out_of_memory: false },
                },
                status = &mut exited => this.exited(status),
                () = tokio::time::sleep_until(deadline) => { this.kill(); Ended::TimedOut }
            },
        };
        self.last_used = Instant::now();
        ended
    }

    fn exited(&self, status: String) -> Ended {
        let out_of_memory = self.out_of_memory();
        self.kill();
        Ended::Exited { status, out_of_memory }
    }

    /// Whether the kernel killed a process of this environment for exceeding its memory.
    pub fn out_of_memory(&self) -> bool {
        self.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0)
    }

    /// Whether the process has exited.
    pub fn is_alive(&self) -> bool {
        self.exit.borrow().is_none() && !self.exited_unreaped()
    }

    /// Whether the process has exited though its exit was not collected yet: between its
    /// death and the reaper's `wait` an idle environment would otherwise still look alive and
    /// be handed an event it can never answer. Asked with `WNOWAIT`, which leaves the exit
    /// status for the reaper.
    fn exited_unreaped(&self) -> bool {
        if self.pid == 0 {
            return false;
        }
        // SAFETY: `siginfo_t` is plain data, valid when zeroed.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: plain syscall on this process's own child; WNOWAIT reaps nothing.
        let rc = unsafe { libc::waitid(libc::P_PID, self.pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
        if rc != 0 {
            // ECHILD: already reaped. Any other failure says nothing about the process.
            return std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD);
        }
        // SAFETY: waitid filled `info` (or left it zeroed, which reads as pid 0).
        unsafe { info.si_pid() != 0 }
    }

    /// Kills the whole process group.
    pub fn kill(&self) {
        if self.pid != 0 && self.exit.borrow().is_none() {
            // SAFETY: plain syscall on the group this environment leads.
            unsafe {
                libc::kill(-(self.pid as i32), libc::SIGKILL);
            }
        }
    }

    /// Peak memory of the environment so far: its cgroup's, else the process's peak RSS.
    pub fn peak_memory_bytes(&self) -> u64 {
        if let Some(peak) = self.cgroup.as_ref().and_then(Cgroup::peak_bytes) {
            return peak;
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Takes the output lines read so far, after letting what the runtime already wrote
    /// reach the readers (a handler prints before it posts its response, but the pipe may
    /// still hold those bytes when the response arrives). Bounded to 100 ms.
    pub async fn take_lines(&self) -> Vec<String> {
        let until = Instant::now() + Duration::from_millis(100);
        while self.pipes.iter().any(|fd| pending_bytes(fd) > 0) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // One more turn for a reader that has the bytes but not yet the lock.
        tokio::task::yield_now().await;
        let Ok(mut lines) = self.lines.lock() else { return Vec::new() };
        let mut taken = std::mem::take(&mut lines.lines);
        if lines.dropped > 0 {
            taken.push(format!("[sluice: {} more bytes of output were not kept]", lines.dropped));
        }
        lines.bytes = 0;
        lines.dropped = 0;
        taken
    }

    /// The last output lines, for an error message.
    fn output_tail(&self) -> String {
        let Ok(lines) = self.lines.lock() else { return String::new() };
        let tail: Vec<&str> = lines.lines.iter().rev().take(8).rev().map(String::as_str).collect();
        if tail.is_empty() {
            String::new()
        } else {
            format!("; last output: {}", tail.join(" | "))
        }
    }
}

fn init_message(error: &RuntimeError) -> String {
    if error.error_message.is_empty() {
        error.error_type.clone()
    } else {
        error.error_message.clone()
    }
}

/// `2026/11/30/[$LATEST]<32 hex digits>`, as Lambda names an environment's log stream.
fn log_stream_name(id: u64) -> String {
    format!("{}/[$LATEST]{:016x}{:016x}", chrono::Utc::now().format("%Y/%m/%d"), rand::random::<u64>(), id)
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}{}", if signal == libc::SIGKILL { " (SIGKILL)" } else { "" }),
        _ => status.to_string(),
    }
}

async fn read_lines(pipe: impl AsyncRead + Unpin, lines: Arc<Mutex<Lines>>) {
    let mut reader = BufReader::new(pipe);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer).trim_end_matches(['\n', '\r']).to_owned();
                if let Ok(mut lines) = lines.lock() {
                    if lines.bytes + line.len() > MAX_LOG_BYTES {
                        lines.dropped += line.len();
                    } else {
                        lines.bytes += line.len();
                        lines.lines.push(line);
                    }
                }
            }
        }
    }
}

fn dup(fd: i32) -> Option<OwnedFd> {
    // SAFETY: fd is an open pipe owned by the child handle; the duplicate is owned here.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    // SAFETY: a new descriptor nobody else owns.
    (copy >= 0).then(|| unsafe { OwnedFd::from_raw_fd(copy) })
}

/// Bytes waiting in a pipe.
fn pending_bytes(fd: &OwnedFd) -> i32 {
    let mut bytes: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let ok = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut bytes) } == 0;
    if ok {
        bytes
    } else {
        0
    }
}

/// Writes `pid` in decimal into `out` without allocating; returns the length.
fn format_pid(mut pid: u32, out: &mut [u8; 20]) -> usize {
    let mut reversed = [0u8; 20];
    let mut n = 0;
    loop {
        reversed[n] = b'0' + (pid % 10) as u8;
        n += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    for i in 0..n {
        out[i] = reversed[n - 1 - i];
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_are_written_in_decimal() {
        let mut out = [0u8; 20];
        let n = format_pid(4_194_304, &mut out);
        assert_eq!(&out[..n], b"4194304");
        let n = format_pid(0, &mut out);
        assert_eq!(&out[..n], b"0");
    }

    #[test]
    fn log_streams_look_like_lambdas() {
        let name = log_stream_name(7);
        assert!(name.contains("/[$LATEST]") && name.ends_with("0000000000000007"), "{name}");
    }
}
