//! `sluice bench --scale-out`: the throughput of one worker node against two. Each node is a
//! real `sluice up` process (this executable, `--http off`) on a temporary project of one
//! function running the `hello` example, each pinned to a CPU of its own; the nodes share the
//! function's durable consumer, as nodes of one cluster do.
//!
//! Method, so that a noisy shared machine shows in the figures rather than in one side of
//! the comparison: for each run a fresh function (its own topic and consumer) gets a backlog
//! of `--events` events published before any node starts; then the node(s) start, and the
//! run is timed from the first acknowledgement seen once every node is up (nodes starting are
//! not timed, nor one node working alone while the other starts) until the consumer has
//! nothing pending or in flight. Runs alternate one node, two nodes, for
//! [`ROUNDS`] rounds; the ratio is the median of the rounds' two ÷ one. Every node is stopped
//! with SIGTERM at the end of its run (killed if it does not exit), is killed on every error
//! path, and dies with the bench (parent-death signal).

use std::io::{BufRead as _, BufReader, Read as _, Seek as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::{bench_event, median, ratio, round3, Options, PHASE_LIMIT, PUBLISH_WINDOW};
use crate::bus::{self, Bus};
use crate::config::FunctionConfig;

/// Rounds of one node then two nodes (an odd number: the median round is one of them).
pub const ROUNDS: usize = 3;
/// The function's concurrency (`max_ack_pending`, shared by the nodes): enough events in
/// flight that a node is busy on its CPU rather than waiting for the server.
pub const CONCURRENCY: u32 = 128;
/// Consumer polls until the first acknowledgement (the timed part starts there) …
const START_POLL: Duration = Duration::from_millis(2);
/// … and after it.
const POLL: Duration = Duration::from_millis(10);
/// How long a node may take to drain and exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// What the nodes' function is measured with.
const EVENT: &[u8] = br#"{"name":"bench"}"#;

/// What the phase needs from the command line.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The `sluice` executable the nodes run.
    pub exe: PathBuf,
    /// The bench's NATS server, which the nodes join.
    pub nats_url: String,
    /// Its pid when the bench started it (so it can be kept off the nodes' CPUs).
    pub nats_pid: Option<u32>,
    /// The `hello` example's built module, or why there is none (the phase is skipped).
    pub hello: Result<PathBuf, String>,
}

/// The phase's report, or why it did not run.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ScaleOutReport {
    Measured(Box<ScaleOut>),
    Skipped { skipped: String },
}

impl ScaleOutReport {
    /// Two nodes' throughput ÷ one node's, when measured.
    pub fn ratio(&self) -> Option<f64> {
        match self {
            Self::Measured(s) => Some(s.two_workers_vs_one),
            Self::Skipped { .. } => None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ScaleOut {
    /// The example function the nodes run.
    pub function: &'static str,
    /// The backlog of each run.
    pub events: usize,
    /// The function's concurrency (`max_ack_pending`, shared by the nodes).
    pub concurrency: u32,
    /// The CPUs the bench may use.
    pub cpus: String,
    /// Where each process was placed (as asked; each run records what it got).
    pub placement: Placement,
    /// Whether nats-server and the bench run on the nodes' CPUs.
    pub shared_cores: bool,
    pub note: String,
    /// Every run in order: one node, two nodes, one node, …
    pub runs: Vec<Run>,
    pub rounds: Vec<Round>,
    /// Median over the one-node runs.
    pub one_node_per_sec: f64,
    /// Median over the two-node runs.
    pub two_nodes_per_sec: f64,
    /// Median over the rounds of two nodes' events/s ÷ one node's.
    pub two_workers_vs_one: f64,
}

#[derive(Debug, Serialize)]
pub struct Placement {
    pub node_1: String,
    pub node_2: String,
    pub nats_server: String,
    pub bench: String,
}

#[derive(Debug, Serialize)]
pub struct Run {
    pub round: usize,
    pub nodes: usize,
    /// Events done (acknowledged) by the end of the run: the whole backlog.
    pub events: usize,
    /// Of which done in the timed part.
    pub timed_events: usize,
    /// The timed part: from the first acknowledgement seen once every node of the run is up
    /// (printed "Sluice is up") until the backlog is done.
    pub seconds: f64,
    pub events_per_sec: f64,
    /// From starting the node(s) to the first acknowledgement seen.
    pub first_ack_after_s: f64,
    /// From starting the node(s) to the timed part.
    pub timed_from_s: f64,
    /// False when the backlog was done before every node was up: the run is then timed from
    /// the first acknowledgement (use a larger `--events`).
    pub all_nodes_up: bool,
    /// Deliveries of an event more than once (0 unless a node failed an event).
    pub redelivered: usize,
    /// The nodes, nats-server (when the bench's own) and the bench, with the CPUs each may
    /// run on and the CPU time each used during the timed part.
    pub processes: Vec<Process>,
}

#[derive(Debug, Serialize)]
pub struct Process {
    pub name: String,
    pub pid: u32,
    /// The CPUs it may run on (`Cpus_allowed_list`).
    pub cpus: String,
    /// From its start to its "Sluice is up" line (nodes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up_after_s: Option<f64>,
    /// CPU time (user + system, all threads) during the timed part.
    pub cpu_seconds: f64,
    /// `cpu_seconds` ÷ the timed part's duration: 1.0 is one CPU busy throughout.
    pub cpu_busy: f64,
}

#[derive(Debug, Serialize)]
pub struct Round {
    pub one_node_per_sec: f64,
    pub two_nodes_per_sec: f64,
    /// two ÷ one.
    pub ratio: f64,
}

/// Runs the phase; a missing `hello` build or a single CPU skips it with why.
pub async fn run(load: &Bus, options: &Options, setup: &Setup, work_dir: &Path, run_id: &str) -> anyhow::Result<ScaleOutReport> {
    let hello = match &setup.hello {
        Ok(hello) => hello.clone(),
        Err(why) => return Ok(ScaleOutReport::Skipped { skipped: why.clone() }),
    };
    let allowed = allowed_cpus(0).context("reading the bench's CPU set")?;
    let (workers, others) = match allowed.as_slice() {
        [a, b, rest @ ..] => ([*a, *b], rest.to_vec()),
        _ => return Ok(ScaleOutReport::Skipped { skipped: format!("two nodes on CPUs of their own need 2 CPUs; the bench may use {}", cpu_list(&allowed)) }),
    };
    // Off the nodes' CPUs where there are others, until the phase ends.
    let mut placed = Placed::default();
    let (nats_server, bench, note) = if others.is_empty() {
        let shared = cpu_list(&allowed);
        (
            if setup.nats_pid.is_some() { shared.clone() } else { "not the bench's own (--nats): not pinned".to_owned() },
            shared,
            format!(
                "{} CPUs: node 1 on CPU {}, node 2 on CPU {}; nats-server and the bench (the publisher, the consumer polls) \
                 share these cores with the nodes: with one node they have the other core to themselves, with two they take \
                 CPU time from the nodes",
                allowed.len(),
                workers[0],
                workers[1]
            ),
        )
    } else {
        placed.pin(std::process::id(), &others)?;
        let nats_server = match setup.nats_pid {
            Some(pid) => {
                placed.pin(pid, &others)?;
                cpu_list(&others)
            }
            None => "not the bench's own (--nats): not pinned".to_owned(),
        };
        let note = format!("node 1 on CPU {}, node 2 on CPU {}; nats-server and the bench on CPUs {}", workers[0], workers[1], cpu_list(&others));
        (nats_server, cpu_list(&others), note)
    };
    let project = work_dir.join("scale-out");
    let phase = Phase { load, options, setup, hello: &hello, project: &project, run_id, workers };
    let result = phase.measure().await;
    drop(placed);
    let runs = result?;

    let per_sec = |nodes: usize| median(runs.iter().filter(|r| r.nodes == nodes).map(|r| r.events_per_sec));
    let rounds: Vec<Round> = runs
        .chunks(2)
        .filter_map(|pair| match pair {
            [one, two] => Some(Round { one_node_per_sec: one.events_per_sec, two_nodes_per_sec: two.events_per_sec, ratio: ratio(two.events_per_sec, one.events_per_sec) }),
            _ => None,
        })
        .collect();
    Ok(ScaleOutReport::Measured(Box::new(ScaleOut {
        function: "hello",
        events: options.events,
        concurrency: CONCURRENCY,
        cpus: cpu_list(&allowed),
        placement: Placement { node_1: workers[0].to_string(), node_2: workers[1].to_string(), nats_server, bench },
        shared_cores: others.is_empty(),
        note,
        one_node_per_sec: per_sec(1),
        two_nodes_per_sec: per_sec(2),
        two_workers_vs_one: median(rounds.iter().map(|r| r.ratio)),
        rounds,
        runs,
    })))
}

/// One phase's inputs.
struct Phase<'a> {
    load: &'a Bus,
    options: &'a Options,
    setup: &'a Setup,
    hello: &'a Path,
    project: &'a Path,
    run_id: &'a str,
    workers: [usize; 2],
}

impl Phase<'_> {
    async fn measure(&self) -> anyhow::Result<Vec<Run>> {
        std::fs::create_dir_all(self.project.join("functions/hello")).with_context(|| format!("creating {}", self.project.display()))?;
        // A first node compiles `hello` into the project's module cache, so that no timed
        // node compiles it (a deployed function is precompiled).
        let bar = self.bar(0, "scale-out");
        bar.set_message("starting a node to precompile hello");
        let name = self.function("warm")?;
        let mut node = Node::spawn(self.setup, self.project, "node-1", Some(self.workers[0]), &self.project.join("warm.log"))?;
        let ready = node.wait_up(PHASE_LIMIT).await;
        let stopped = stop_all(vec![node]).await;
        self.delete_consumer(&name).await;
        ready?;
        stopped?;
        bar.finish_and_clear();

        let mut runs = Vec::with_capacity(2 * ROUNDS);
        for round in 1..=ROUNDS {
            for nodes in [1, 2] {
                runs.push(self.run(round, nodes, runs.len() + 1).await?);
            }
        }
        Ok(runs)
    }

    /// One run: a fresh function with its backlog, `nodes` nodes until it is done.
    async fn run(&self, round: usize, nodes: usize, index: usize) -> anyhow::Result<Run> {
        let n = self.options.events;
        let name = self.function(&index.to_string())?;
        let result = self.timed(round, nodes, index, &name).await;
        self.delete_consumer(&name).await;
        let run = result?;
        if run.events != n {
            anyhow::bail!("scale-out run {index}: {} of {n} events were done", run.events);
        }
        Ok(run)
    }

    async fn timed(&self, round: usize, nodes: usize, index: usize, name: &str) -> anyhow::Result<Run> {
        let n = self.options.events;
        let config = self.config(name)?;
        // Created before the backlog: it starts at new events.
        self.load.function_consumer(&config).await?;
        let bar = self.bar(n, &format!("scale-out backlog {index}/{}", 2 * ROUNDS));
        let subject = bus::topic_subject(&topic(name));
        let data = Bytes::from_static(EVENT);
        let mut window = std::collections::VecDeque::with_capacity(PUBLISH_WINDOW);
        for i in 0..n {
            if window.len() == PUBLISH_WINDOW {
                if let Some(ack) = window.pop_front() {
                    let ack: async_nats::jetstream::context::PublishAckFuture = ack;
                    ack.await.context("publish not acknowledged")?;
                    bar.inc(1);
                }
            }
            window.push_back(self.load.send_event(subject.clone(), &bench_event(name, i, &data)).await?);
        }
        for ack in window {
            ack.await.context("publish not acknowledged")?;
            bar.inc(1);
        }
        bar.finish_and_clear();

        let bar = self.bar(n, &format!("scale-out {nodes} node{} {index}/{}", if nodes == 1 { "" } else { "s" }, 2 * ROUNDS));
        bar.set_message("starting");
        let started = Instant::now();
        let mut running = Vec::with_capacity(nodes);
        for (k, cpu) in self.workers.iter().take(nodes).enumerate() {
            let log = self.project.join(format!("run-{index}-node-{}.log", k + 1));
            running.push(Node::spawn(self.setup, self.project, &format!("node-{}", k + 1), Some(*cpu), &log)?);
        }
        let result = self.drain(name, &mut running, started, &bar).await;
        bar.set_message("stopping the nodes");
        let stopped = stop_all(running).await;
        bar.finish_and_clear();
        let (timed, mut processes) = result?;
        stopped?;
        let seconds = timed.end.duration_since(timed.start).as_secs_f64();
        for process in &mut processes {
            process.cpu_busy = if seconds > 0.0 { round3(process.cpu_seconds / seconds) } else { 0.0 };
        }
        let timed_events = n - timed.done_at_start;
        Ok(Run {
            round,
            nodes,
            events: timed.done,
            timed_events,
            seconds: round3(seconds),
            events_per_sec: if seconds > 0.0 { (timed_events as f64 / seconds).round() } else { 0.0 },
            first_ack_after_s: round3(timed.first_ack.duration_since(started).as_secs_f64()),
            timed_from_s: round3(timed.start.duration_since(started).as_secs_f64()),
            all_nodes_up: timed.all_up,
            redelivered: timed.redelivered,
            processes,
        })
    }

    /// Polls the consumer from the nodes' start until the backlog is done.
    async fn drain(&self, name: &str, nodes: &mut [Node], started: Instant, bar: &ProgressBar) -> anyhow::Result<(Timed, Vec<Process>)> {
        let n = self.options.events;
        let stream = self.load.js.get_stream(bus::EVENTS_STREAM).await.context("opening stream SLUICE_EVENTS")?;
        // Who is measured: the nodes, the server when it is the bench's, the bench.
        let mut watched: Vec<Watched> =
            nodes.iter().map(|node| (node.name.clone(), node.pid, Some(node.up_at.clone()))).collect();
        if let Some(pid) = self.setup.nats_pid {
            watched.push(("nats-server".to_owned(), pid, None));
        }
        watched.push(("bench".to_owned(), std::process::id(), None));
        let cpu_now = || watched.iter().map(|(_, pid, _)| cpu_seconds(*pid)).collect::<Vec<f64>>();
        // The first acknowledgement seen, and the first seen with every node up.
        let mut first_ack: Option<Reading> = None;
        let mut start: Option<Reading> = None;
        loop {
            let info = stream.consumer_info(name).await.with_context(|| format!("reading the consumer of {name}"))?;
            let now = Instant::now();
            let waiting = usize::try_from(info.num_pending).unwrap_or(usize::MAX).saturating_add(info.num_ack_pending);
            let done = n.saturating_sub(waiting);
            bar.set_position(done as u64);
            if done > 0 && first_ack.is_none() {
                first_ack = Some((now, done, cpu_now()));
                bar.set_message("");
            }
            if done > 0 && waiting > 0 && start.is_none() && nodes.iter().all(|node| node.up_at.get().is_some()) {
                start = Some((now, done, cpu_now()));
            }
            // A backlog done before every node was up is timed from the first acknowledgement.
            let all_up = start.is_some();
            if let (Some((first_ack, ..)), Some((start, done_at_start, cpu_at_start))) = (&first_ack, start.as_ref().or(first_ack.as_ref())) {
                if waiting == 0 {
                    let processes = watched
                        .iter()
                        .zip(cpu_at_start)
                        .map(|((name, pid, up_at), before)| Process {
                            name: name.clone(),
                            pid: *pid,
                            cpus: cpus_of(*pid),
                            up_after_s: up_at.as_ref().and_then(|at| at.get()).map(|at| round3(at.duration_since(started).as_secs_f64())),
                            cpu_seconds: round3((cpu_seconds(*pid) - before).max(0.0)),
                            cpu_busy: 0.0,
                        })
                        .collect();
                    let timed = Timed { first_ack: *first_ack, start: *start, all_up, end: now, done_at_start: *done_at_start, done, redelivered: info.num_redelivered };
                    return Ok((timed, processes));
                }
            }
            for node in nodes.iter_mut() {
                if let Some(status) = node.exited() {
                    anyhow::bail!("worker {} exited ({status}) with {done} of {n} events done; the end of its log: {}", node.name, log_tail(&node.log));
                }
            }
            if started.elapsed() > PHASE_LIMIT {
                anyhow::bail!("the worker nodes did {done} of {n} events within {PHASE_LIMIT:?}; the end of node-1's log: {}", nodes.first().map_or_else(String::new, |node| log_tail(&node.log)));
            }
            tokio::time::sleep(if start.is_some() { POLL } else { START_POLL }).await;
        }
    }

    /// Writes the project's one function as `name` (on its own topic); its settings.
    fn function(&self, suffix: &str) -> anyhow::Result<String> {
        let name = format!("scale-{}-{suffix}", self.run_id);
        let path = self.project.join("functions/hello/function.toml");
        std::fs::write(&path, self.function_toml(&name)).with_context(|| format!("writing {}", path.display()))?;
        Ok(name)
    }

    fn function_toml(&self, name: &str) -> String {
        format!(
            "name = {name:?}\nruntime = \"wasm\"\nmodule = {:?}\nmemory_mb = 64\ntimeout = \"10s\"\nconcurrency = {CONCURRENCY}\nsubscribe = [{:?}]\n",
            self.hello.display().to_string(),
            topic(name)
        )
    }

    /// The function's settings as the nodes read them (so the consumer the bench creates is
    /// the one they find).
    fn config(&self, name: &str) -> anyhow::Result<FunctionConfig> {
        toml::from_str(&self.function_toml(name)).context("the scale-out function's settings")
    }

    async fn delete_consumer(&self, name: &str) {
        if let Ok(events) = self.load.js.get_stream(bus::EVENTS_STREAM).await {
            let _ = events.delete_consumer(name).await;
        }
    }

    fn bar(&self, len: usize, phase: &str) -> ProgressBar {
        if !self.options.progress {
            return ProgressBar::hidden();
        }
        let bar = if len == 0 { ProgressBar::new_spinner() } else { ProgressBar::new(len as u64) };
        let template = if len == 0 { "{prefix:>22} {spinner} {msg}" } else { "{prefix:>22} [{bar:30}] {pos}/{len} {per_sec} {msg}" };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(phase.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }
}

/// The topic of function `name`: its own.
fn topic(name: &str) -> String {
    format!("bench.{name}")
}

/// A process whose CPU time a run records: name, pid, and for a node when it was up.
type Watched = (String, u32, Option<Arc<OnceLock<Instant>>>);

/// A reading of the consumer: when, events done, and the watched processes' CPU seconds.
type Reading = (Instant, usize, Vec<f64>);

/// The timed part of a run.
struct Timed {
    first_ack: Instant,
    start: Instant,
    /// Whether every node was up at `start`.
    all_up: bool,
    end: Instant,
    done_at_start: usize,
    done: usize,
    redelivered: usize,
}

/// A `sluice up` worker node pinned to one CPU; killed when dropped unless stopped.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) pid: u32,
    child: Option<Child>,
    pub(crate) log: PathBuf,
    /// When it printed "Sluice is up".
    pub(crate) up_at: Arc<OnceLock<Instant>>,
}

impl Node {
    /// Starts `sluice up` on `project` as a worker node, pinned to `cpu` if given.
    pub(crate) fn spawn(setup: &Setup, project: &Path, name: &str, cpu: Option<usize>, log: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let set = cpu.map(|cpu| cpu_set(&[cpu]));
        let mut command = Command::new(&setup.exe);
        command
            .arg("--dir")
            .arg(project)
            .arg("--nats")
            .arg(&setup.nats_url)
            .args(["up", "--roles", "workers", "--http", "off"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file);
        // SAFETY: prctl and sched_setaffinity are plain system calls (async-signal-safe), on
        // a set built before the fork; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Dies with the bench, even a killed one.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(set) = &set {
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = command.spawn().with_context(|| format!("starting worker {name} ({} up)", setup.exe.display()))?;
        let up_at = Arc::new(OnceLock::new());
        if let Some(stdout) = child.stdout.take() {
            let up_at = up_at.clone();
            // Read to the end, so the node never blocks on a full pipe.
            let _ = std::thread::Builder::new().name("sluice-bench-node".into()).spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line.starts_with("Sluice is up") {
                        let _ = up_at.set(Instant::now());
                    }
                }
            });
        }
        Ok(Self { name: name.to_owned(), pid: child.id(), child: Some(child), log: log.to_owned(), up_at })
    }

    /// Its exit status, once it exited (it is then reaped and never signalled again).
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten());
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Waits for its "Sluice is up" line.
    pub(crate) async fn wait_up(&mut self, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        while self.up_at.get().is_none() {
            if self.exited().is_some() || started.elapsed() > limit {
                anyhow::bail!("worker {} did not start within {limit:?}; the end of its log: {}", self.name, log_tail(&self.log));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn signal(&self, signal: i32) {
        if self.child.is_some() {
            if let Ok(pid) = libc::pid_t::try_from(self.pid) {
                // SAFETY: kill(2) on our own child, not reaped yet (`child` is still held).
                unsafe {
                    libc::kill(pid, signal);
                }
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Stops the nodes together: SIGTERM (each drains and acknowledges what it ran), then waits,
/// killing any that is not gone within [`STOP_LIMIT`]. Fails when one did not exit cleanly.
pub(crate) async fn stop_all(mut nodes: Vec<Node>) -> anyhow::Result<()> {
    for node in &nodes {
        node.signal(libc::SIGTERM);
    }
    let started = Instant::now();
    let mut failures = Vec::new();
    for node in &mut nodes {
        let Some(mut child) = node.child.take() else { continue };
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() < STOP_LIMIT => tokio::time::sleep(Duration::from_millis(20)).await,
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Err(_) => {
                    let _ = child.kill();
                    break child.wait().ok();
                }
            }
        };
        match status {
            Some(status) if status.success() => {}
            Some(status) => failures.push(format!("worker {} exited with {status}; the end of its log: {}", node.name, log_tail(&node.log))),
            None => failures.push(format!("worker {} did not stop within {STOP_LIMIT:?} of SIGTERM and was killed", node.name)),
        }
    }
    match failures.first() {
        Some(failure) => anyhow::bail!("{failure}"),
        None => Ok(()),
    }
}

/// Processes moved off the nodes' CPUs, put back on their former CPUs when dropped.
#[derive(Default)]
struct Placed {
    moved: Vec<(u32, Vec<usize>)>,
}

impl Placed {
    fn pin(&mut self, pid: u32, cpus: &[usize]) -> anyhow::Result<()> {
        let former = allowed_cpus(pid).with_context(|| format!("reading the CPU set of process {pid}"))?;
        self.moved.push((pid, former));
        pin_threads(pid, cpus).with_context(|| format!("moving process {pid} to CPUs {}", cpu_list(cpus)))
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        for (pid, cpus) in &self.moved {
            let _ = pin_threads(*pid, cpus);
        }
    }
}

/// Moves every thread of `pid` to `cpus`; threads it starts later inherit the set.
fn pin_threads(pid: u32, cpus: &[usize]) -> std::io::Result<()> {
    let set = cpu_set(cpus);
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Some(tid) = entry?.file_name().to_str().and_then(|t| t.parse::<libc::pid_t>().ok()) else { continue };
        // SAFETY: sched_setaffinity only reads the set passed.
        if unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
            let error = std::io::Error::last_os_error();
            // A thread that ended meanwhile.
            if error.raw_os_error() != Some(libc::ESRCH) {
                return Err(error);
            }
        }
    }
    Ok(())
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes within it (it ignores
    // numbers past its size).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in cpus {
            libc::CPU_SET(*cpu, &mut set);
        }
        set
    }
}

/// The CPUs process `pid` (0: this one) may run on.
fn allowed_cpus(pid: u32) -> std::io::Result<Vec<usize>> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: sched_getaffinity fills the zeroed set passed, of the size passed; CPU_ISSET
    // reads within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((0..8 * std::mem::size_of::<libc::cpu_set_t>()).filter(|cpu| libc::CPU_ISSET(*cpu, &set)).collect())
    }
}

/// `0-3,6` for [0, 1, 2, 3, 6].
fn cpu_list(cpus: &[usize]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &cpu in cpus {
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == cpu => *last = cpu,
            _ => ranges.push((cpu, cpu)),
        }
    }
    ranges.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect::<Vec<_>>().join(",")
}

/// The CPUs a running process may use, as the kernel lists them (empty once it is gone).
fn cpus_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| status.lines().find_map(|line| line.strip_prefix("Cpus_allowed_list:").map(|list| list.trim().to_owned())))
        .unwrap_or_default()
}

/// CPU time (user + system) a process used so far, in seconds (0 once it is gone).
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // The command name may hold spaces: utime and stime are the 12th and 13th fields after it.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a constant.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_sec <= 0 {
        return 0.0;
    }
    (ticks(11) + ticks(12)) as f64 / per_sec as f64
}

/// The last lines of a node's log, on one line.
pub(crate) fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(std::io::SeekFrom::Start(len.saturating_sub(4096)));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return format!("(empty: {})", path.display());
    }
    format!("{} ({})", lines[lines.len().saturating_sub(5)..].join(" | "), path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_read_as_the_kernel_writes_them() {
        assert_eq!(cpu_list(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(cpu_list(&[1]), "1");
        assert_eq!(cpu_list(&[0, 2, 4, 5]), "0,2,4-5");
        assert_eq!(cpu_list(&[]), "");
    }

    #[test]
    fn this_process_has_a_cpu_set_and_cpu_time() {
        let cpus = allowed_cpus(0).unwrap();
        assert!(!cpus.is_empty());
        assert_eq!(cpus_of(std::process::id()), cpu_list(&cpus));
        let busy = Instant::now();
        while busy.elapsed() < Duration::from_millis(50) {}
        assert!(cpu_seconds(std::process::id()) > 0.0);
    }
}
