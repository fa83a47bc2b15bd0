//! `sluice bench --functions N`: what deployed functions cost while nothing happens. A real
//! `sluice up` process (this executable, `--http off`) runs a temporary project of 1, N/10
//! and N copies of the `hello` example, each subscribed to a topic of its own; for each, the
//! time to its "Sluice is up" line, then, after a short settling time, an idle window with no
//! event: the CPU time of the node and of the bench's nats-server over the window, and their
//! resident memory (the server's before the node started and at the end, for what the
//! functions' consumers cost it). Last, one event to the last function, timed from its
//! publish to its acknowledgement: idling must not cost pick-up latency.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;

use super::scaleout::{self, cpu_seconds, log_tail, stop_all, Node};
use super::{bench_event, round3, Options, PHASE_LIMIT};
use crate::bus::{self, Bus};

/// After the node is up, before the idle window (start-up work settles).
const SETTLE: Duration = Duration::from_secs(2);
/// Longest wait for the one event after the window.
const PICKUP_LIMIT: Duration = Duration::from_secs(30);

/// What the phase needs from the command line.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The most functions (runs with 1, N/10 and N).
    pub functions: usize,
    /// The idle window of each run.
    pub window: Duration,
    /// The node executable, the server, the `hello` module.
    pub node: scaleout::Setup,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ManyFunctionsReport {
    Measured(Box<ManyFunctions>),
    Skipped { skipped: String },
}

#[derive(Debug, Serialize)]
pub struct ManyFunctions {
    /// The example every function runs.
    pub function: &'static str,
    pub idle_window_s: f64,
    pub settle_s: f64,
    /// Whether the server is the bench's own (its CPU and memory are then measured).
    pub nats_server_measured: bool,
    pub runs: Vec<IdleRun>,
}

#[derive(Debug, Serialize)]
pub struct IdleRun {
    pub functions: usize,
    /// The node's process id.
    pub pid: u32,
    /// From starting the node to its "Sluice is up" line.
    pub up_after_s: f64,
    pub window_s: f64,
    /// The node's CPU time over the window ÷ the window: 1.0 is one core busy throughout.
    pub cpu_busy: f64,
    /// The node's resident memory at the end of the window, MiB.
    pub rss_mb: f64,
    /// The same for the bench's nats-server (null when not the bench's own).
    pub nats_server_cpu_busy: Option<f64>,
    /// The server's resident memory before the node started, MiB.
    pub nats_server_rss_before_mb: Option<f64>,
    /// … at the end of the window.
    pub nats_server_rss_mb: Option<f64>,
    /// … the difference: what the functions' consumers (and the node's connection) cost it.
    pub nats_server_rss_delta_mb: Option<f64>,
    /// The function the event after the window went to.
    pub pickup_function: String,
    /// From that event's publish to its acknowledgement, ms.
    pub pickup_ms: f64,
}

/// The function counts of the runs: 1, N/10 and N (fewer when they coincide).
pub fn counts(functions: usize) -> Vec<usize> {
    let mut counts = vec![1, (functions / 10).max(1), functions.max(1)];
    counts.dedup();
    counts
}

pub async fn run(load: &Bus, options: &Options, setup: &Setup, work_dir: &Path, run_id: &str) -> anyhow::Result<ManyFunctionsReport> {
    let hello = match &setup.node.hello {
        Ok(hello) => hello.clone(),
        Err(why) => return Ok(ManyFunctionsReport::Skipped { skipped: why.clone() }),
    };
    let project = work_dir.join("many-functions");
    let phase = Phase { load, options, setup, hello: &hello, project: &project, run_id };
    // A first node compiles `hello` into the project's module cache, so that no measured
    // start compiles it (a deployed function is precompiled).
    phase.warm().await.context("precompiling hello")?;
    let mut runs = Vec::new();
    for count in counts(setup.functions) {
        runs.push(phase.measure(count).await.with_context(|| format!("{count} functions"))?);
    }
    Ok(ManyFunctionsReport::Measured(Box::new(ManyFunctions {
        function: "hello",
        idle_window_s: round3(setup.window.as_secs_f64()),
        settle_s: round3(SETTLE.as_secs_f64()),
        nats_server_measured: setup.node.nats_pid.is_some(),
        runs,
    })))
}

struct Phase<'a> {
    load: &'a Bus,
    options: &'a Options,
    setup: &'a Setup,
    hello: &'a Path,
    project: &'a Path,
    run_id: &'a str,
}

impl Phase<'_> {
    async fn warm(&self) -> anyhow::Result<()> {
        let names = self.write_project("warm", 1)?;
        let mut node = Node::spawn(&self.setup.node, self.project, "warm", None, &self.project.join("warm.log"))?;
        let up = node.wait_up(PHASE_LIMIT).await;
        let stopped = stop_all(vec![node]).await;
        self.delete_consumers(&names).await;
        up?;
        stopped
    }

    async fn measure(&self, count: usize) -> anyhow::Result<IdleRun> {
        let names = self.write_project(&count.to_string(), count)?;
        let result = self.idle(count, &names).await;
        self.delete_consumers(&names).await;
        result
    }

    async fn idle(&self, count: usize, names: &[String]) -> anyhow::Result<IdleRun> {
        let bar = self.bar(&format!("{count} functions"));
        let nats = self.setup.node.nats_pid;
        let nats_rss_before = nats.and_then(rss_mb);
        bar.set_message("starting sluice up");
        let log = self.project.join(format!("node-{count}.log"));
        let started = Instant::now();
        let mut node = Node::spawn(&self.setup.node, self.project, &format!("node-{count}"), None, &log)?;
        let measured = async {
            node.wait_up(PHASE_LIMIT).await?;
            let up_after = node.up_at.get().map_or(started.elapsed(), |at| at.duration_since(started));
            bar.set_message("settling");
            tokio::time::sleep(SETTLE).await;
            bar.set_message(format!("idle for {:?}", self.setup.window));
            let window_started = Instant::now();
            let (node_cpu, nats_cpu) = (cpu_seconds(node.pid), nats.map(cpu_seconds));
            tokio::time::sleep(self.setup.window).await;
            let window = window_started.elapsed().as_secs_f64();
            let node_busy = round3((cpu_seconds(node.pid) - node_cpu).max(0.0) / window);
            let nats_busy = nats.zip(nats_cpu).map(|(pid, before)| round3((cpu_seconds(pid) - before).max(0.0) / window));
            let (node_rss, nats_rss) = (rss_mb(node.pid), nats.and_then(rss_mb));
            if let Some(status) = node.exited() {
                anyhow::bail!("sluice up exited ({status}) during the idle window; the end of its log: {}", log_tail(&log));
            }
            bar.set_message("one event");
            let pickup_function = names.last().cloned().unwrap_or_default();
            let pickup = self.pickup(&pickup_function).await?;
            anyhow::Ok(IdleRun {
                functions: count,
                pid: node.pid,
                up_after_s: round3(up_after.as_secs_f64()),
                window_s: round3(window),
                cpu_busy: node_busy,
                rss_mb: node_rss.unwrap_or(0.0),
                nats_server_cpu_busy: nats_busy,
                nats_server_rss_before_mb: nats_rss_before,
                nats_server_rss_mb: nats_rss,
                nats_server_rss_delta_mb: nats_rss.zip(nats_rss_before).map(|(after, before)| round3(after - before)),
                pickup_function,
                pickup_ms: round3(pickup.as_secs_f64() * 1e3),
            })
        }
        .await;
        bar.set_message("stopping");
        let stopped = stop_all(vec![node]).await;
        bar.finish_and_clear();
        let run = measured?;
        stopped?;
        Ok(run)
    }

    /// Publishes one event to function `name`'s topic: the time until it is acknowledged.
    async fn pickup(&self, name: &str) -> anyhow::Result<Duration> {
        let stream = self.load.js.get_stream(bus::EVENTS_STREAM).await.context("opening stream SLUICE_EVENTS")?;
        let event = bench_event(name, 0, &Bytes::from_static(br#"{"name":"bench"}"#));
        let started = Instant::now();
        let sequence = self.load.send_event(bus::topic_subject(&topic(name)), &event).await?.await.context("publish not acknowledged")?.sequence;
        loop {
            let info = stream.consumer_info(name).await.with_context(|| format!("reading the consumer of {name}"))?;
            if info.ack_floor.stream_sequence >= sequence {
                return Ok(started.elapsed());
            }
            if started.elapsed() > PICKUP_LIMIT {
                anyhow::bail!("function {name} did not acknowledge its event within {PICKUP_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Writes `count` functions, each a copy of `hello` on a topic of its own, in place of
    /// the project's former ones; their names.
    fn write_project(&self, label: &str, count: usize) -> anyhow::Result<Vec<String>> {
        let functions = self.project.join("functions");
        if functions.exists() {
            std::fs::remove_dir_all(&functions).with_context(|| format!("removing {}", functions.display()))?;
        }
        let module = self.hello.display().to_string();
        let names: Vec<String> = (0..count).map(|i| format!("idle-{}-{label}-{i}", self.run_id)).collect();
        for name in &names {
            let dir = functions.join(name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let toml = format!(
                "name = {name:?}\nruntime = \"wasm\"\nmodule = {module:?}\nmemory_mb = 64\ntimeout = \"10s\"\nconcurrency = 32\nsubscribe = [{:?}]\n",
                topic(name)
            );
            std::fs::write(dir.join("function.toml"), toml).with_context(|| format!("writing {}", dir.display()))?;
        }
        Ok(names)
    }

    async fn delete_consumers(&self, names: &[String]) {
        if let Ok(events) = self.load.js.get_stream(bus::EVENTS_STREAM).await {
            for name in names {
                let _ = events.delete_consumer(name).await;
            }
        }
    }

    fn bar(&self, phase: &str) -> indicatif::ProgressBar {
        if !self.options.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) = indicatif::ProgressStyle::with_template("{prefix:>22} {spinner} {msg} {elapsed}") {
            bar.set_style(style);
        }
        bar.set_prefix(phase.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }
}

fn topic(name: &str) -> String {
    format!("bench.{name}")
}

/// A process's resident memory (`VmRSS`), MiB.
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(round3(kib / 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_take_one_a_tenth_and_all() {
        assert_eq!(counts(1000), vec![1, 100, 1000]);
        assert_eq!(counts(20), vec![1, 2, 20]);
        assert_eq!(counts(5), vec![1, 5]);
        assert_eq!(counts(1), vec![1]);
    }

    #[test]
    fn this_process_has_a_resident_size() {
        assert!(rss_mb(std::process::id()).unwrap() > 0.0);
    }
}
