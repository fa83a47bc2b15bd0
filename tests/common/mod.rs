//! Test fixtures: a real nats-server per test, a temporary project, a `sluice up` process.
#![allow(dead_code)]

pub mod auth;
pub mod brokers;
pub mod cli;
pub mod fuzz;
pub mod http;
pub mod lambda;
pub mod cluster;
pub mod component;
pub mod dispatch;
pub mod netns;
pub mod nodes;
pub mod postgres;
pub mod pty;
pub mod s3;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;

pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// The nats-server binary the tests run (2.10+; set up by scripts/setup.sh).
pub fn nats_server_binary() -> PathBuf {
    std::env::var_os("SLUICE_NATS_SERVER").map_or_else(|| PathBuf::from("nats-server"), PathBuf::from)
}

pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}

/// A nats-server with JetStream on a free loopback port and a temporary store; killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
    /// A configuration file (`-c`), for accounts and users.
    config: Option<PathBuf>,
}

impl NatsServer {
    pub fn start() -> Self {
        Self::start_with_config(None)
    }

    /// Like [`NatsServer::start`], with `config` (nats-server's configuration format) in a
    /// file passed with `-c`; the port, store and JetStream flags still apply.
    pub fn start_with_config(config: Option<&str>) -> Self {
        let store = tempfile::tempdir().unwrap();
        let config = config.map(|text| {
            let path = store.path().join("nats.conf");
            std::fs::write(&path, text).unwrap();
            path
        });
        let mut server = Self { child: None, port: free_port(), store, config };
        // A free port can be taken again before the server binds it (by another test's
        // outgoing connection): then the server exits, and a new port is tried.
        for _ in 0..5 {
            if server.try_spawn() {
                return server;
            }
            server.port = free_port();
        }
        panic!("nats-server did not start on five free ports");
    }

    /// Starts the server (again, after [`NatsServer::stop`]) on its port and store.
    pub fn spawn(&mut self) {
        assert!(self.try_spawn(), "nats-server did not start on port {}", self.port);
    }

    /// Starts the server and waits until it greets on its port; `false` if it exited.
    fn try_spawn(&mut self) -> bool {
        let mut command = Command::new(nats_server_binary());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let mut child = command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (scripts/setup.sh installs it; or set SLUICE_NATS_SERVER)");
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            // The server's INFO line, not only an open port (a connection to a port nobody
            // listens on can meet itself).
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut greeting = [0u8; 4];
                if std::io::Read::read_exact(&mut stream, &mut greeting).is_ok() && &greeting == b"INFO" {
                    self.child = Some(child);
                    return true;
                }
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("nats-server did not start on port {}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.unwrap()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and restarts the server on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The built example module `functions/<name>/<name>.wasm`.
pub fn example_module(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions").join(name).join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: run `sluice build` (scripts/test.sh does)", path.display());
    path
}

/// A temporary project directory.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // One compiled-module cache for all tests: each example compiles once per run.
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sluice-module-cache");
        std::fs::write(
            dir.path().join("sluice.toml"),
            format!("[runtime]\ncache_dir = {:?}\n", cache.display().to_string()),
        )
        .unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Appends `text` (TOML sections) to the project's `sluice.toml`.
    pub fn settings(&self, text: &str) -> &Self {
        let path = self.path().join("sluice.toml");
        let mut settings = std::fs::read_to_string(&path).unwrap();
        settings.push_str(text);
        std::fs::write(&path, settings).unwrap();
        self
    }

    /// Adds function `name` running example module `module`, with extra TOML lines.
    pub fn function(&self, name: &str, module: &str, extra: &str) -> &Self {
        let dir = self.path().join("functions").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let module = example_module(module);
        let text = format!(
            "name = {name:?}\nruntime = \"wasm\"\nmodule = {:?}\n{extra}\n",
            module.display().to_string()
        );
        std::fs::write(dir.join("function.toml"), text).unwrap();
        self
    }

    /// Writes `triggers/<name>.toml`; returns its path.
    pub fn trigger(&self, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let dir = self.path().join("triggers");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes a raw function.toml (for configuration errors).
    pub fn raw_function(&self, folder: &str, text: &str) -> PathBuf {
        let dir = self.path().join("functions").join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("function.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `sluice --dir PROJECT ARGS...`, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(SLUICE);
        command.arg("--dir").arg(self.path()).args(args).env("SLUICE_HTTP_LISTEN", "127.0.0.1:0");
        command
    }

    /// Runs a one-shot `sluice` command in the project; one that runs for more than 60 s
    /// (every one-shot command of the tests takes seconds) is killed and fails the test.
    pub fn sluice(&self, args: &[&str]) -> Output {
        self.run(args, None, Duration::from_secs(60))
    }

    /// [`Project::sluice`] with another limit.
    pub fn sluice_within(&self, args: &[&str], limit: Duration) -> Output {
        self.run(args, None, limit)
    }

    /// [`Project::sluice`] with the given stdin.
    pub fn sluice_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        self.run(args, Some(stdin), Duration::from_secs(60))
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Output {
        let mut child = self
            .command(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            std::io::Write::write_all(&mut pipe, bytes).unwrap();
        }
        // Read both pipes while waiting, so a command that prints much never blocks.
        let read = |mut pipe: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let stdout = read(Box::new(child.stdout.take().unwrap()));
        let stderr = read(Box::new(child.stderr.take().unwrap()));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`sluice {}` did not finish within {limit:?}; it printed:\n{}{}",
                    args.join(" "),
                    String::from_utf8_lossy(&stdout.join().unwrap()),
                    String::from_utf8_lossy(&stderr.join().unwrap())
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
    }

    /// Starts `sluice up` against `nats_url` (None: embedded) and waits until it is up.
    /// Runs `sluice up` until its (one) function's dispatcher started, then stops it: the
    /// consumer exists, so events published now wait for the next `up` (a new consumer
    /// only sees events published after it).
    pub fn create_consumer(&self, nats_url: &str) {
        let mut up = self.up(Some(nats_url));
        up.wait_log("Dispatcher started.", Duration::from_secs(60));
        assert!(up.terminate().success(), "{}", up.log());
    }

    pub fn up(&self, nats_url: Option<&str>) -> Up {
        self.up_with_env(nats_url, &[])
    }

    /// Like [`Project::up`] with extra environment variables.
    pub fn up_with_env(&self, nats_url: Option<&str>, env: &[(&str, &str)]) -> Up {
        let mut command = Command::new(SLUICE);
        command.arg("--dir").arg(self.path());
        if let Some(url) = nats_url {
            command.args(["--nats", url]);
        }
        command.arg("up").envs(env.iter().copied());
        self.spawn_up(command, "up", "sluice up")
    }

    /// Runs `command` (a `sluice ... up`, possibly wrapped) with its log in the project
    /// folder (`<log_name>-N.log`), and waits until it is up; `what` names it on failure.
    pub fn spawn_up(&self, mut command: Command, log_name: &str, what: &str) -> Up {
        let log_path = self.path().join(format!("{log_name}-{}.log", std::process::id() as u128 * 1000 + next_id()));
        let log = std::fs::File::create(&log_path).unwrap();
        // Dies with the test process even when it is killed before dropping `Up`.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        // Tests run many nodes at once: each listens for HTTP on a port of its own unless
        // the test chose one.
        if !command.get_envs().any(|(name, _)| name == "SLUICE_HTTP_LISTEN") {
            command.env("SLUICE_HTTP_LISTEN", "127.0.0.1:0");
        }
        let mut child = command
            .env_remove("SLUICE_NATS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("Sluice is up") {
                    let _ = tx.send(line);
                }
            }
        });
        let mut up = Up { child: Some(child), log_path, http: None, banner: String::new() };
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(banner) => {
                up.http = banner.split("HTTP on ").nth(1).and_then(|rest| rest.split_whitespace().next()).map(|url| url.trim_end_matches('.').to_owned());
                up.banner = banner;
            }
            Err(_) => panic!("{what} did not start; its log:\n{}", up.log()),
        }
        up
    }
}

fn next_id() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A running `sluice up`; SIGKILLed on drop if still running.
pub struct Up {
    child: Option<Child>,
    pub log_path: PathBuf,
    /// `http://IP:PORT` of its HTTP listener, from the banner.
    pub http: Option<String>,
    /// The "Sluice is up: ..." line it printed.
    pub banner: String,
}

impl Up {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The lines of a JSON log (`SLUICE_LOG_FORMAT=json`) whose message is `message`, as
    /// their `fields` objects with the line's timestamp added as `at` (see [`logged_at`]).
    pub fn log_lines(&self, message: &str) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|entry| entry["fields"]["message"] == message)
            .map(|entry| {
                let mut fields = entry["fields"].clone();
                fields["at"] = entry["timestamp"].clone();
                fields
            })
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) without waiting.
    pub fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Waits up to `limit` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if started.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `limit` until the log holds `text`.
    pub fn wait_log(&self, text: &str, limit: Duration) {
        let started = Instant::now();
        while !self.log().contains(text) {
            assert!(started.elapsed() < limit, "`sluice up` never logged {text:?}; its log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `limit` until a line of the log satisfies `matches`; `what` names it.
    pub fn wait_line(&self, what: &str, limit: Duration, matches: impl Fn(&str) -> bool) {
        let started = Instant::now();
        while !self.log().lines().any(&matches) {
            assert!(started.elapsed() < limit, "`sluice up` never logged {what}; its log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("sluice up did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.kill();
    }
}

/// All messages currently in `stream`.
pub async fn stream_messages(js: &jetstream::Context, stream: &str) -> Vec<jetstream::message::StreamMessage> {
    let Ok(mut s) = js.get_stream(stream).await else { return Vec::new() };
    let info = s.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    if info.messages == 0 {
        return out;
    }
    for seq in info.first_sequence..=info.last_sequence {
        if let Ok(message) = s.get_raw_message(seq).await {
            out.push(message);
        }
    }
    out
}

/// `(pending, ack_pending)` of a function's consumer.
pub async fn consumer_backlog(js: &jetstream::Context, function: &str) -> (u64, usize) {
    let stream = js.get_stream("SLUICE_EVENTS").await.unwrap();
    let info = stream.consumer_info(function).await.unwrap();
    (info.num_pending, info.num_ack_pending)
}

/// Waits until a function's consumer has nothing pending or in flight.
pub async fn wait_idle(js: &jetstream::Context, function: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        if consumer_backlog(js, function).await == (0, 0) {
            return;
        }
        assert!(started.elapsed() < limit, "function {function} still busy: {:?}", consumer_backlog(js, function).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `sluice triggers list --json` (about 15 s at most) until the first trigger's entry
/// satisfies `ready`, and returns that entry; `what` names the wait in the failure.
pub async fn wait_for_trigger(
    project: &Project,
    nats_url: &str,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut listed = serde_json::Value::Null;
    for _ in 0..150 {
        let out = project.sluice(&["--nats", nats_url, "--json", "triggers", "list"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        listed = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone();
        if ready(&listed) {
            return listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("trigger never {what}: {listed}");
}

/// [`wait_for_trigger`] until the first trigger reports `status`.
pub async fn wait_for_trigger_status(project: &Project, nats_url: &str, status: &str) -> serde_json::Value {
    wait_for_trigger(project, nats_url, &format!("reported {status}"), |t| t["status"] == status).await
}

/// How many messages `stream` holds (0 if it does not exist yet).
pub async fn stream_count(js: &jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.unwrap().state.messages,
        Err(_) => 0,
    }
}

/// Waits until the stream holds at least `count` messages.
pub async fn wait_stream_count(js: &jetstream::Context, stream: &str, count: u64, limit: Duration) {
    let started = Instant::now();
    loop {
        if let Ok(mut s) = js.get_stream(stream).await {
            if s.info().await.unwrap().state.messages >= count {
                return;
            }
        }
        assert!(started.elapsed() < limit, "stream {stream} did not reach {count} messages");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Collects results of `sluice.results.<function>` as `(event id, body)`.
pub struct Results {
    sub: async_nats::Subscriber,
    pub received: Vec<(String, serde_json::Value)>,
}

impl Results {
    pub async fn subscribe(client: &async_nats::Client, function: &str) -> Self {
        let sub = client.subscribe(format!("sluice.results.{function}")).await.unwrap();
        client.flush().await.unwrap();
        Self { sub, received: Vec::new() }
    }

    /// Waits for `count` results in total (panics after `limit`).
    pub async fn wait_for(&mut self, count: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.received.len() < count {
            match tokio::time::timeout_at(deadline, self.sub.next()).await {
                Ok(Some(message)) => self.push(message),
                _ => panic!("expected {count} results, got {}: {:?}", self.received.len(), self.received),
            }
        }
    }

    /// Collects whatever arrives during `period`.
    pub async fn drain(&mut self, period: Duration) {
        let deadline = tokio::time::Instant::now() + period;
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, self.sub.next()).await {
            self.push(message);
        }
    }

    fn push(&mut self, message: async_nats::Message) {
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("sluice-event-id"))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let body = serde_json::from_slice(&message.payload).unwrap_or(serde_json::Value::Null);
        self.received.push((id, body));
    }
}

/// A header of a stored message.
pub fn header<'a>(message: &'a jetstream::message::StreamMessage, name: &str) -> Option<&'a str> {
    message.headers.get(name).map(|v| v.as_str())
}

/// Publishes a CloudEvents-headed JSON event with id `id` straight to JetStream (as a
/// trigger would) and returns the acknowledgement to await.
pub async fn publish_event(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    data: &'static str,
) -> jetstream::context::PublishAckFuture {
    js.publish_with_headers(subject.to_owned(), event_headers(id), data.into()).await.unwrap()
}

/// The CloudEvents headers of a test event with id `id` (also its `Nats-Msg-Id`).
pub fn event_headers(id: &str) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("ce-specversion", "1.0");
    headers.insert("ce-id", id);
    headers.insert("ce-type", "test.job");
    headers.insert("ce-source", "tests");
    headers.insert("Nats-Msg-Id", id);
    headers
}

/// When a line of [`Up::log_lines`] was logged.
pub fn logged_at(fields: &serde_json::Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(fields["at"].as_str().expect("a log line with its timestamp")).expect("an RFC 3339 timestamp").to_utc()
}
