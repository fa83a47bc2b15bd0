//! `sluice bench`: the platform against its physical baselines, measured side by side in one
//! run on one machine: raw JetStream (no wasm), bare wasmtime (no NATS), Sluice end to end,
//! and cold starts. Ratios between phases of the same run hold on a noisy shared box where
//! absolute numbers do not.

pub mod http;
pub mod idle;
pub mod component;
pub mod curves;
pub mod lambda;
pub mod noop;
pub mod postgres;
pub mod scaleout;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::bus::{self, Bus};
use crate::config::{FunctionConfig, RetryConfig, RuntimeKind};
use crate::dispatch::Dispatcher;
use crate::event::{Event, NATS_MSG_ID};
use crate::runtime::wasm::{cache, HostConfig, WasmHost};
use crate::runtime::{Invocation, Runtime};
use crate::telemetry::logs::LogSink;

/// Publishes kept in flight by every publisher of the bench (raw and Sluice alike), for
/// small events; see [`publish_window`].
const PUBLISH_WINDOW: usize = 4096;
/// Bytes of event bodies kept in flight by a publisher at most (with 64 MiB of 1 MiB bodies
/// in flight the server fell behind its acknowledgements and dropped the connection).
const WINDOW_BYTES: usize = 16 * 1024 * 1024;
/// Iterations of the per-invocation phases.
const INVOKE_ITERATIONS: usize = 5000;
/// Distinct functions of the cold-start phase.
const COLD_FUNCTIONS: usize = 50;
/// How long the latency phase publishes at half the measured rate.
const LATENCY_PERIOD: Duration = Duration::from_secs(3);
/// Rounds of the log-cost comparison (an odd number: the median is one of them).
const LOG_COST_ROUNDS: usize = 5;
/// Longest wait for one phase's events.
const PHASE_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct Options {
    pub events: usize,
    pub size: usize,
    pub concurrency: u32,
    /// Show progress bars (on a terminal).
    pub progress: bool,
    /// A PostgreSQL server for the `postgres` trigger's phase (none: no such phase).
    pub postgres: Option<String>,
    /// The project's tools folder, with the Lambda runtime clients `sluice build` installs.
    pub tools_dir: std::path::PathBuf,
    /// The `hello` example's module, for the HTTP gateway's phase (none: no such phase).
    pub http: Option<PathBuf>,
    /// The example components (name, built artifact), measured when built.
    pub components: Vec<(String, PathBuf)>,
    /// Worker nodes as `sluice up` processes, one against two (none: no such phase).
    pub scale_out: Option<scaleout::Setup>,
    /// The `hello` example's module, for the real-guest curve, or why it is not measured.
    pub hello: Result<PathBuf, String>,
    /// Many deployed functions idling in a `sluice up` process (none: no such phase).
    pub many_functions: Option<idle::Setup>,
    /// The bench's own nats-server, whose CPU time is reported beside this process's (none
    /// with `--nats`).
    pub nats_pid: Option<u32>,
}

/// The report; field names are documented in docs/performance.md.
#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub options: ReportOptions,
    pub raw_jetstream: RawJetStream,
    pub bare_wasmtime: InvokeStats,
    pub sluice_runtime: InvokeStats,
    pub sluice: EndToEnd,
    pub latency: Latency,
    /// What invocation logs (`SLUICE_LOGS`) and metrics cost end to end.
    pub logs_and_metrics: LogsCost,
    pub cold_start: ColdStart,
    /// The Lambda runtimes (Python, Node.js) whose clients are installed.
    pub lambda: lambda::LambdaReport,
    /// The example components (Python, JavaScript) that are built.
    pub component: component::ComponentReport,
    /// How the cost grows: functions on one topic, event size, a real guest.
    pub curves: curves::Curves,
    pub ratios: Ratios,
    pub noop: &'static str,
    /// The `postgres` trigger against reading its slot alone (with `--postgres`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<postgres::PostgresReport>,
    /// The HTTP gateway against a plain axum handler (with `--http`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<http::HttpReport>,
    /// One worker node against two, each a `sluice up` process on a CPU of its own (with
    /// `--scale-out`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_out: Option<scaleout::ScaleOutReport>,
    /// 1, N/10 and N deployed functions idling in `sluice up` (with `--functions N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub many_functions: Option<idle::ManyFunctionsReport>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub nats_server_version: String,
    pub sluice_version: &'static str,
    pub os: &'static str,
    pub arch: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ReportOptions {
    pub events: usize,
    pub size: usize,
    pub concurrency: u32,
}

#[derive(Debug, Serialize)]
pub struct RawJetStream {
    pub publish_msgs_per_sec: f64,
    pub consume_msgs_per_sec: f64,
    pub overlapped_msgs_per_sec: f64,
    /// CPU time per message of the overlapped run.
    pub overlapped_cpu: CpuPerMessage,
    /// The overlapped run again with what the event contract asks of JetStream and nothing
    /// of Sluice's own: the floor under `sluice.events_per_sec`.
    pub as_events: AsEvents,
    /// The way from raw JetStream to `as_events`, one part of the event contract at a time,
    /// each in a fresh stream: what each part costs.
    pub contract_steps: Vec<ContractStep>,
}

/// One step of [`RawJetStream::contract_steps`]: the overlapped run with the parts of the
/// event contract up to this one.
#[derive(Debug, Serialize)]
pub struct ContractStep {
    pub step: &'static str,
    /// What this step adds to the one before it (the first: to raw JetStream).
    pub adds: &'static str,
    pub overlapped_msgs_per_sec: f64,
    /// ÷ `raw_jetstream.overlapped_msgs_per_sec`.
    pub vs_raw: f64,
    pub cpu: CpuPerMessage,
}

/// Raw JetStream carrying Sluice's events: each published as `sluice publish` does (CloudEvents
/// headers, `Nats-Msg-Id` into `SLUICE_EVENTS`'s duplicate window) and pulled through the
/// consumer a function gets (its topic and its direct subject as filters, `max_ack_pending`
/// = concurrency), acked on receipt; no dispatcher, no sandbox, no invocation record.
#[derive(Debug, Serialize)]
pub struct AsEvents {
    pub overlapped_msgs_per_sec: f64,
    pub cpu: CpuPerMessage,
}

/// CPU time (user + system) per message or event over a throughput phase: where the two
/// cores go. This process holds the load generator as well as the platform (or the raw
/// consumer).
#[derive(Debug, Serialize)]
pub struct CpuPerMessage {
    pub bench_process_us: f64,
    /// The bench's own nats-server (absent with `--nats`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_server_us: Option<f64>,
    /// The share of the machine's CPU time the hypervisor gave to other guests meanwhile
    /// (`steal` in `/proc/stat`), 0 to 1; absent where the kernel does not report it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_steal: Option<f64>,
}

/// The machine's CPU time stolen by the hypervisor since [`HostSteal::start`]: a virtual
/// machine whose host is busy loses its cores for milliseconds at a time, which shows in
/// every figure of that window. Reported beside each phase so such a window can be told
/// from one the platform made slow.
#[derive(Clone, Copy)]
struct HostSteal(Option<(u64, u64)>);

impl HostSteal {
    fn start() -> Self {
        Self(host_steal_ticks())
    }

    /// Stolen ÷ all CPU time since the start, rounded to 0.001.
    fn share(self) -> Option<f64> {
        let (steal_0, total_0) = self.0?;
        let (steal_1, total_1) = host_steal_ticks()?;
        let total = total_1.checked_sub(total_0).filter(|t| *t > 0)?;
        Some(round3(steal_1.saturating_sub(steal_0) as f64 / total as f64))
    }
}

/// The stolen and the total ticks of all CPUs (`/proc/stat`'s first line).
fn host_steal_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_steal_ticks(stat.lines().next()?)
}

/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`: guest time is
/// already counted in user and nice, so the total is the first eight.
fn parse_steal_ticks(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    (ticks.len() == 8).then(|| (ticks[7], ticks.iter().sum()))
}

/// CPU time of this process and of the bench's nats-server since [`CpuMeter::start`].
struct CpuMeter {
    nats_pid: Option<u32>,
    process: Duration,
    server: f64,
    steal: HostSteal,
}

impl CpuMeter {
    fn start(nats_pid: Option<u32>) -> Self {
        Self { nats_pid, process: cpu_time(), server: nats_pid.map_or(0.0, scaleout::cpu_seconds), steal: HostSteal::start() }
    }

    /// CPU per message since the start, for `n` messages.
    fn per(&self, n: usize) -> CpuPerMessage {
        let n = n.max(1) as f64;
        let us = |seconds: f64| (seconds.max(0.0) * 1e6 / n * 10.0).round() / 10.0;
        CpuPerMessage {
            bench_process_us: us((cpu_time() - self.process).as_secs_f64()),
            nats_server_us: self.nats_pid.map(|pid| us(scaleout::cpu_seconds(pid) - self.server)),
            host_steal: self.steal.share(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InvokeStats {
    pub iterations: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Process CPU time per invocation (all threads).
    pub cpu_us_per_invocation: f64,
}

#[derive(Debug, Serialize)]
pub struct LogsCost {
    /// Median over the rounds of the throughput with a record per invocation in
    /// `SLUICE_LOGS` and the metrics, as `sluice up` runs.
    pub with_per_sec: f64,
    /// Median over the rounds of the same with neither.
    pub without_per_sec: f64,
    /// Median over the rounds of 1 − with ÷ without (goal < 0.1).
    pub throughput_cost: f64,
    pub rounds: Vec<LogsRound>,
}

/// One round of [`LogsCost`]: the two runs back to back.
#[derive(Debug, Serialize)]
pub struct LogsRound {
    pub with_per_sec: f64,
    pub without_per_sec: f64,
    /// 1 − with ÷ without.
    pub cost: f64,
}

#[derive(Debug, Serialize)]
pub struct EndToEnd {
    pub events: usize,
    pub events_per_sec: f64,
    /// Events of this phase and the latency phase that ran exactly once.
    pub invoked_once: usize,
    pub duplicates: usize,
    pub missing: usize,
    pub exactly_once: bool,
    /// Whether responses were published on `sluice.results.<function>`: only while someone
    /// listens there, and nobody does during this phase.
    pub results_published: bool,
    /// CPU time per event of the throughput run.
    pub cpu: CpuPerMessage,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub publish_to_handler: Percentiles,
    /// Where the slowest events' time went.
    pub slowest: SlowestSplit,
    /// The baseline at the same rate and size: a plain publish to a stream until a durable
    /// pull consumer receives it, no wasm.
    pub raw_jetstream_publish_to_delivery: Percentiles,
}

/// The slowest 1% of the half-load events (at least one), each split at the time the server
/// stored it (the stream's timestamp of its message, same host clock): the median of each part.
#[derive(Debug, Serialize)]
pub struct SlowestSplit {
    pub events: usize,
    /// Publish (the load generator) → stored in `SLUICE_EVENTS`.
    pub publish_to_stored_p50_ms: f64,
    /// Stored → the handler entered (delivery, dispatch, sandbox set-up).
    pub stored_to_handler_p50_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub rate_per_sec: f64,
    pub events: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// The machine's CPU time stolen by the hypervisor while these were measured (see
    /// [`CpuPerMessage::host_steal`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_steal: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ColdStart {
    pub functions: usize,
    pub precompiled: Cold,
    pub from_source: Cold,
}

#[derive(Debug, Serialize)]
pub struct Cold {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Ratios {
    pub end_to_end_vs_raw_jetstream: f64,
    /// What the event contract alone leaves of raw JetStream: `raw_jetstream.as_events` ÷
    /// `raw_jetstream.overlapped_msgs_per_sec`.
    pub as_events_vs_raw_jetstream: f64,
    /// What Sluice's own work leaves of that: `sluice.events_per_sec` ÷ `raw_jetstream.as_events`.
    pub end_to_end_vs_as_events: f64,
    pub invoke_cpu_vs_bare_wasmtime: f64,
    /// Two worker nodes' events/s ÷ one node's (with `--scale-out`, when measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub two_workers_vs_one: Option<f64>,
}

const NOOP_DESCRIPTION: &str = "WASI preview-1 command: reads the realtime clock on entry, reads the whole event from stdin, \
writes {\"entered_ns\":N} to stdout; a fresh instance per event; the dispatcher writes an invocation record to \
SLUICE_LOGS, counts the metrics and acks the event, as for any function, and publishes the response on \
sluice.results.<function> while someone listens there (the latency phase does)";

/// Runs every phase. `load` is the load generator's connection (publishers, the results
/// collector), `platform` the one consumers and the dispatcher use, as two processes would.
pub async fn run(load: &Bus, platform: &Bus, options: &Options, work_dir: &std::path::Path) -> anyhow::Result<Report> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let run_id = new_run_id();
    let noop = noop::module(None)?;
    let host = bench_host(cores, work_dir)?;
    let data = event_data(options.size);

    let raw_jetstream = raw_jetstream(load, platform, options, &run_id).await?;
    let (bare_wasmtime, sluice_runtime) = invoke_phases(&host, &noop, &data, options).await?;
    crate::telemetry::metrics::install();
    let logs_shutdown = CancellationToken::new();
    let (logs, logs_task) = LogSink::start(platform.clone(), logs_shutdown.clone());
    let (sluice, latency) = end_to_end(load, platform, &host, &noop, &data, options, &run_id, logs).await?;
    logs_shutdown.cancel();
    let _ = logs_task.await;
    let logs_and_metrics = logs_cost(load, platform, &host, &noop, &data, options, &run_id).await?;
    let cold_start = cold_start(options, work_dir).await?;
    let lambda = lambda::run(options, &options.tools_dir, work_dir).await.context("lambda phase")?;
    let component = component::run(options, &host).await.context("component phase")?;
    let curves = curves::run(load, platform, &host, &noop, options, &run_id).await.context("cost curves")?;
    let postgres = match &options.postgres {
        Some(dsn) => Some(postgres::run(dsn, platform, options.events, &run_id).await.context("postgres phase")?),
        None => None,
    };
    let http = match &options.http {
        Some(module) => Some(http::run(platform, &host, module, work_dir).await.context("http phase")?),
        None => None,
    };
    let scale_out = match &options.scale_out {
        Some(setup) => Some(scaleout::run(load, options, setup, work_dir, &run_id).await.context("scale-out phase")?),
        None => None,
    };
    let many_functions = match &options.many_functions {
        Some(setup) => Some(idle::run(load, options, setup, work_dir, &run_id).await.context("many-functions phase")?),
        None => None,
    };

    let ratios = Ratios {
        end_to_end_vs_raw_jetstream: ratio(sluice.events_per_sec, raw_jetstream.overlapped_msgs_per_sec),
        as_events_vs_raw_jetstream: ratio(raw_jetstream.as_events.overlapped_msgs_per_sec, raw_jetstream.overlapped_msgs_per_sec),
        end_to_end_vs_as_events: ratio(sluice.events_per_sec, raw_jetstream.as_events.overlapped_msgs_per_sec),
        invoke_cpu_vs_bare_wasmtime: ratio(sluice_runtime.cpu_us_per_invocation, bare_wasmtime.cpu_us_per_invocation),
        two_workers_vs_one: scale_out.as_ref().and_then(scaleout::ScaleOutReport::ratio),
    };
    Ok(Report {
        machine: Machine {
            cores,
            nats_server_version: load.client.server_info().version,
            sluice_version: env!("CARGO_PKG_VERSION"),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        },
        options: ReportOptions { events: options.events, size: options.size, concurrency: options.concurrency },
        raw_jetstream,
        bare_wasmtime,
        sluice_runtime,
        sluice,
        latency,
        logs_and_metrics,
        cold_start,
        lambda,
        component,
        curves,
        ratios,
        noop: NOOP_DESCRIPTION,
        postgres,
        http,
        scale_out,
        many_functions,
    })
}

/// Phase 4's throughput run alone, as `sluice up` runs a function (records, metrics, the
/// node log): for profilers, whose counts over two event counts give what one event costs
/// (`sluice bench --only-end-to-end`, docs/performance.md).
pub async fn end_to_end_only(load: &Bus, platform: &Bus, options: &Options, work_dir: &std::path::Path) -> anyhow::Result<EndToEnd> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let run_id = new_run_id();
    let noop = noop::module(None)?;
    let host = bench_host(cores, work_dir)?;
    let data = event_data(options.size);
    crate::telemetry::metrics::install();
    let logs_shutdown = CancellationToken::new();
    let (logs, logs_task) = LogSink::start(platform.clone(), logs_shutdown.clone());
    let n = options.events;
    let functions = Functions { prefix: format!("bench-{run_id}"), count: 1, module: &noop, logs, capacity: n };
    let mut running = Running::start(load, platform, &host, options, functions).await?;
    let cpu = CpuMeter::start(options.nats_pid);
    let events_per_sec = running.max_rate(load, &run_id, &data, options, 0..n, "sluice end to end").await?;
    let cpu = cpu.per(n);
    wait_seen(&running.seen, |seen| seen.distinct, n, &ProgressBar::hidden()).await?;
    let seen = running.stop(load).await?;
    logs_shutdown.cancel();
    let _ = logs_task.await;
    let seen = seen.lock().map_err(|_| anyhow::anyhow!("the collector failed"))?;
    Ok(EndToEnd::counted(n, events_per_sec, &seen.counts, cpu))
}

/// A run's id, in the names of its streams, consumers and events.
fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// The wasm host the bench's no-op functions run in.
fn bench_host(cores: usize, work_dir: &std::path::Path) -> anyhow::Result<WasmHost> {
    WasmHost::new(HostConfig { max_concurrent: 2 * cores, max_memory_mb: 16, cache_dir: work_dir.join("cache"), buckets_dir: None })
}

impl EndToEnd {
    /// The figures of a throughput run of `events` events, from how often each event ran.
    fn counted(events: usize, events_per_sec: f64, counts: &[u32], cpu: CpuPerMessage) -> Self {
        let duplicates = counts.iter().filter(|c| **c > 1).count();
        let missing = counts.iter().filter(|c| **c == 0).count();
        Self {
            events,
            events_per_sec: events_per_sec.round(),
            invoked_once: counts.iter().filter(|c| **c == 1).count(),
            duplicates,
            missing,
            exactly_once: duplicates == 0 && missing == 0,
            results_published: false,
            cpu,
        }
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { round3(a / b) } else { 0.0 }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A JSON object of exactly `size` bytes (at least `{"p":""}`).
fn event_data(size: usize) -> Bytes {
    let pad = size.saturating_sub(8);
    Bytes::from(format!("{{\"p\":\"{}\"}}", "x".repeat(pad)))
}

/// Publishes in flight for events of `size` bytes: [`PUBLISH_WINDOW`], fewer for large ones.
fn publish_window(size: usize) -> usize {
    (WINDOW_BYTES / size.max(1)).clamp(1, PUBLISH_WINDOW)
}

fn progress(options: &Options, len: usize, phase: &str) -> ProgressBar {
    if !options.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{prefix:>22} [{bar:30}] {pos}/{len} {per_sec}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(phase.to_owned());
    bar
}

// ---- phase 1: raw JetStream -------------------------------------------------------------

async fn raw_jetstream(load: &Bus, platform: &Bus, options: &Options, run_id: &str) -> anyhow::Result<RawJetStream> {
    let n = options.events;
    let payload = Bytes::from(vec![b'x'; options.size]);
    let js = &load.js;

    // Publish alone, then consume alone.
    let (name, subject) = (format!("BENCH_RAW_{run_id}"), format!("bench.raw.{run_id}"));
    create_raw_stream(js, &name, &subject).await?;
    let stream = platform.js.get_stream(&name).await.context("opening the bench stream")?;
    let bar = progress(options, n, "raw publish");
    let started = Instant::now();
    raw_publish(js, &subject, &payload, n, &bar).await?;
    let publish = n as f64 / started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let bar = progress(options, n, "raw consume");
    let started = Instant::now();
    raw_consume(&stream, n, options.size, &bar).await?;
    let consume = n as f64 / started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    js.delete_stream(&name).await.context("deleting the bench stream")?;

    // Both at once.
    let (name, subject) = (format!("BENCH_RAW2_{run_id}"), format!("bench.raw2.{run_id}"));
    create_raw_stream(js, &name, &subject).await?;
    let stream = platform.js.get_stream(&name).await.context("opening the bench stream")?;
    let bar = progress(options, n, "raw overlapped");
    let cpu = CpuMeter::start(options.nats_pid);
    let started = Instant::now();
    let consumer = {
        let (stream, bar, size) = (stream.clone(), bar.clone(), options.size);
        tokio::spawn(async move { raw_consume(&stream, n, size, &bar).await })
    };
    raw_publish(js, &subject, &payload, n, &ProgressBar::hidden()).await?;
    consumer.await.context("the raw consumer task failed")??;
    let overlapped = n as f64 / started.elapsed().as_secs_f64();
    let overlapped_cpu = cpu.per(n);
    bar.finish_and_clear();
    js.delete_stream(&name).await.context("deleting the bench stream")?;

    let mut contract_steps = Vec::with_capacity(CONTRACT_STEPS.len());
    for (k, &(step, adds)) in CONTRACT_STEPS.iter().enumerate() {
        let (rate, cpu) = contract_step(load, platform, options, run_id, k).await.with_context(|| format!("contract step {step}"))?;
        contract_steps.push(ContractStep { step, adds, overlapped_msgs_per_sec: rate.round(), vs_raw: ratio(rate.round(), overlapped.round()), cpu });
    }
    Ok(RawJetStream {
        publish_msgs_per_sec: publish.round(),
        consume_msgs_per_sec: consume.round(),
        overlapped_msgs_per_sec: overlapped.round(),
        overlapped_cpu,
        as_events: raw_as_events(load, platform, options, run_id).await?,
        contract_steps,
    })
}

/// The steps of [`RawJetStream::contract_steps`], in order; `as_events` adds the last part:
/// `SLUICE_EVENTS` itself and the function's own consumer (`max_ack_pending` = concurrency).
const CONTRACT_STEPS: [(&str, &str); 3] = [
    ("headers", "each message an event: CloudEvents headers (no Nats-Msg-Id)"),
    ("msg_id", "Nats-Msg-Id, checked against the stream's duplicate window (2 minutes, as SLUICE_EVENTS's default)"),
    ("two_filters", "a consumer filtering two subjects, a topic and a direct subject, as a function's does"),
];

/// Step `k` of [`CONTRACT_STEPS`]: events published to a fresh stream while a durable
/// consumer (no ack limit, as raw JetStream's) receives and acks them; events per second
/// and CPU per event.
async fn contract_step(load: &Bus, platform: &Bus, options: &Options, run_id: &str, k: usize) -> anyhow::Result<(f64, CpuPerMessage)> {
    let (name, prefix) = (format!("BENCH_STEP{k}_{run_id}"), format!("bench.step{k}.{run_id}"));
    let (topic, direct) = (format!("{prefix}.events.t"), format!("{prefix}.direct.f"));
    // The server's default duplicate window (2 minutes) is SLUICE_EVENTS's default too.
    create_raw_stream(&load.js, &name, &format!("{prefix}.>")).await?;
    let stream = platform.js.get_stream(&name).await.context("opening the bench stream")?;
    let filter_subjects = if k >= 2 { vec![topic.clone(), direct] } else { Vec::new() };
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".into()),
            filter_subjects,
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: -1,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the consumer of {name}"))?;
    let msg_id = if k >= 1 { MsgId::Keep } else { MsgId::Drop };
    let measured = overlapped_events(load, consumer, &topic, &format!("{run_id}-step{k}"), msg_id, options, CONTRACT_STEPS[k].0).await?;
    load.js.delete_stream(&name).await.context("deleting the bench stream")?;
    Ok(measured)
}

/// Publishes `--events` bench events to `subject` (ids tagged `tag`) while `consumer`
/// receives and acks them: events per second and CPU per event.
async fn overlapped_events(
    load: &Bus,
    consumer: consumer::PullConsumer,
    subject: &str,
    tag: &str,
    msg_id: MsgId,
    options: &Options,
    label: &str,
) -> anyhow::Result<(f64, CpuPerMessage)> {
    let n = options.events;
    let data = event_data(options.size);
    let bar = progress(options, n, label);
    let cpu = CpuMeter::start(options.nats_pid);
    let started = Instant::now();
    let receiving = {
        let (bar, size) = (bar.clone(), options.size);
        tokio::spawn(async move { raw_receive(consumer, n, size, &bar).await })
    };
    publish_events(load, subject, tag, &data, 0..n, msg_id, None).await?;
    receiving.await.context("the consumer task failed")??;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let cpu = cpu.per(n);
    bar.finish_and_clear();
    Ok((rate, cpu))
}

/// Whether [`publish_events`] sends an event's `Nats-Msg-Id` (as every Sluice publisher does).
#[derive(Clone, Copy)]
enum MsgId {
    Keep,
    Drop,
}

/// The overlapped run with Sluice's events and a function's consumer ([`AsEvents`]).
async fn raw_as_events(load: &Bus, platform: &Bus, options: &Options, run_id: &str) -> anyhow::Result<AsEvents> {
    let name = format!("bench-{run_id}-as-events");
    let topic = format!("bench.{name}");
    let config = noop_config(&name, options.concurrency, vec![topic.clone()]);
    let consumer = platform.function_consumer(&config).await?;
    // Ids of their own: the end-to-end phase's would be dropped as duplicates of these.
    let tag = format!("{run_id}-as-events");
    let (overlapped, cpu) = overlapped_events(load, consumer, &bus::topic_subject(&topic), &tag, MsgId::Keep, options, "raw as events").await?;
    let events = load.js.get_stream(bus::EVENTS_STREAM).await.context("opening stream SLUICE_EVENTS")?;
    events.delete_consumer(&name).await.with_context(|| format!("deleting the consumer {name}"))?;
    Ok(AsEvents { overlapped_msgs_per_sec: overlapped.round(), cpu })
}

/// Publishes bench events `events` as fast as JetStream takes them (a window of publishes
/// in flight), noting when each was sent in `published_ns` (by index) when given: the last
/// stream sequence.
async fn publish_events(
    load: &Bus,
    subject: &str,
    run_id: &str,
    data: &Bytes,
    events: std::ops::Range<usize>,
    msg_id: MsgId,
    mut published_ns: Option<&mut [u64]>,
) -> anyhow::Result<u64> {
    let limit = publish_window(data.len());
    let mut window = VecDeque::with_capacity(limit);
    for i in events {
        if window.len() == limit {
            if let Some(ack) = window.pop_front() {
                let ack: jetstream::context::PublishAckFuture = ack;
                ack.await.context("publish not acknowledged")?;
            }
        }
        let event = bench_event(run_id, i, data);
        if let Some(published_ns) = published_ns.as_deref_mut() {
            published_ns[i] = now_ns();
        }
        let ack = match msg_id {
            MsgId::Keep => load.send_event(subject.to_owned(), &event).await?,
            MsgId::Drop => {
                let headers = without_msg_id(&event.to_headers());
                load.js.publish_with_headers(subject.to_owned(), headers, event.data.clone()).await.with_context(|| format!("publishing to {subject}"))?
            }
        };
        window.push_back(ack);
    }
    let mut last = 0;
    for ack in window {
        last = ack.await.context("publish not acknowledged")?.sequence;
    }
    Ok(last)
}

/// An event's headers without its `Nats-Msg-Id`.
fn without_msg_id(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter(|(name, _)| {
            let name: &str = name.as_ref();
            name != NATS_MSG_ID
        })
        .flat_map(|(name, values)| values.iter().map(move |value| (name.clone(), value.clone())))
        .collect()
}

async fn create_raw_stream(js: &jetstream::Context, name: &str, subject: &str) -> anyhow::Result<stream::Stream> {
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating stream {name}"))
}

async fn raw_publish(js: &jetstream::Context, subject: &str, payload: &Bytes, n: usize, bar: &ProgressBar) -> anyhow::Result<()> {
    let limit = publish_window(payload.len());
    let mut window = VecDeque::with_capacity(limit);
    for _ in 0..n {
        if window.len() == limit {
            if let Some(ack) = window.pop_front() {
                let ack: jetstream::context::PublishAckFuture = ack;
                ack.await.context("raw publish not acknowledged")?;
                bar.inc(1);
            }
        }
        window.push_back(js.publish(subject.to_owned(), payload.clone()).await.context("raw publish")?);
    }
    for ack in window {
        ack.await.context("raw publish not acknowledged")?;
        bar.inc(1);
    }
    Ok(())
}

async fn raw_consume(stream: &stream::Stream, n: usize, size: usize, bar: &ProgressBar) -> anyhow::Result<()> {
    let consumer = raw_consumer(stream, "bench").await?;
    raw_receive(consumer, n, size, bar).await
}

/// A durable pull consumer of the whole stream, as a function's (explicit acks).
async fn raw_consumer(stream: &stream::Stream, durable: &str) -> anyhow::Result<consumer::PullConsumer> {
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(durable.into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: -1,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the raw consumer {durable}"))
}

/// Receives and acks `n` messages of about `size` bytes, pulled in batches bounded by
/// [`WINDOW_BYTES`] as the publisher's window is.
async fn raw_receive(consumer: consumer::PullConsumer, n: usize, size: usize, bar: &ProgressBar) -> anyhow::Result<()> {
    let batch = publish_window(size).min(1000);
    let mut messages = consumer.stream().max_messages_per_batch(batch).messages().await.context("pulling")?;
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + PHASE_LIMIT;
    while received < n {
        let message = tokio::time::timeout_at(deadline, messages.next())
            .await
            .map_err(|_| anyhow::anyhow!("the raw consumer received {received} of {n} messages in time"))?
            .context("the raw consumer's stream ended")?
            .map_err(|e| anyhow::anyhow!("raw consume: {e}"))?;
        message.ack().await.map_err(|e| anyhow::anyhow!("raw ack: {e}"))?;
        received += 1;
        bar.inc(1);
    }
    Ok(())
}

// ---- phase 2: per invocation, bare wasmtime and the Sluice runtime ---------------------

async fn invoke_phases(host: &WasmHost, noop: &[u8], data: &Bytes, options: &Options) -> anyhow::Result<(InvokeStats, InvokeStats)> {
    let config = noop_config("bench-invoke", options.concurrency, Vec::new());
    let function = host.load_bytes(&config, noop)?;
    let event = Arc::new(Event::new("sluice.bench", "sluice.bench", data.clone()));

    // Bare wasmtime: InstancePre::instantiate + call + drop with the same engine, module and
    // WASI stdio, awaited on the async executor as the runtime's sandboxes are.
    let bare = Bare::new(host, noop)?;
    let bar = progress(options, INVOKE_ITERATIONS, "bare wasmtime");
    let cpu = cpu_time();
    let mut bare_times = Vec::with_capacity(INVOKE_ITERATIONS);
    for _ in 0..INVOKE_ITERATIONS {
        let started = Instant::now();
        bare.run(data.clone()).await?;
        bare_times.push(started.elapsed());
        bar.inc(1);
    }
    let bare = (bare_times, cpu_time().saturating_sub(cpu));
    bar.finish_and_clear();

    // The Sluice runtime: the path a dispatcher takes, without NATS.
    let bar = progress(options, INVOKE_ITERATIONS, "sluice runtime");
    let cpu = cpu_time();
    let mut times = Vec::with_capacity(INVOKE_ITERATIONS);
    for _ in 0..INVOKE_ITERATIONS {
        let started = Instant::now();
        let invocation = Invocation { request_id: "bench".into(), attempt: 1, event: event.clone() };
        function.invoke(invocation).await.map_err(|e| anyhow::anyhow!("the no-op failed: {e}"))?;
        times.push(started.elapsed());
        bar.inc(1);
    }
    let sluice_cpu = cpu_time().saturating_sub(cpu);
    bar.finish_and_clear();
    Ok((invoke_stats(bare.0, bare.1), invoke_stats(times, sluice_cpu)))
}

/// A WASI command module run the plainest way wasmtime allows: the physical floor of a fresh
/// sandbox per invocation, with the same engine (pooling allocator, epoch interruption) as
/// the runtime but none of its context, limits or log capture.
pub(crate) struct Bare {
    engine: wasmtime::Engine,
    pre: wasmtime::InstancePre<wasmtime_wasi::p1::WasiP1Ctx>,
}

impl Bare {
    pub(crate) fn new(host: &WasmHost, module: &[u8]) -> anyhow::Result<Self> {
        let engine = host.engine().clone();
        let module = wasmtime::Module::new(&engine, module).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut linker: wasmtime::Linker<wasmtime_wasi::p1::WasiP1Ctx> = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |ctx| ctx).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let pre = linker.instantiate_pre(&module).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(Self { engine, pre })
    }

    /// Runs the module once with `stdin`; its stdout.
    pub(crate) async fn run(&self, stdin: Bytes) -> anyhow::Result<Bytes> {
        let stdout = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(1 << 20);
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(stdin))
            .stdout(stdout.clone())
            .build_p1();
        let mut store = wasmtime::Store::new(&self.engine, wasi);
        let _ticking = crate::runtime::wasm::engine::yield_every_few_ticks(&mut store);
        let instance = self.pre.instantiate_async(&mut store).await.map_err(|e| anyhow::anyhow!("bare wasmtime: {e:?}"))?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start").map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if let Err(error) = start.call_async(&mut store, ()).await {
            // A program that returns from `main` exits with status 0.
            if error.downcast_ref::<wasmtime_wasi::I32Exit>().map(|e| e.0) != Some(0) {
                anyhow::bail!("bare wasmtime: {error:?}");
            }
        }
        drop(store);
        Ok(stdout.contents())
    }
}

fn invoke_stats(mut times: Vec<Duration>, cpu: Duration) -> InvokeStats {
    times.sort();
    let iterations = times.len();
    InvokeStats {
        iterations,
        p50_us: round3(percentile(&times, 0.50).as_secs_f64() * 1e6),
        p99_us: round3(percentile(&times, 0.99).as_secs_f64() * 1e6),
        cpu_us_per_invocation: round3(cpu.as_secs_f64() * 1e6 / iterations.max(1) as f64),
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// CPU time of the whole process (user + system, all threads).
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

// ---- phase 3: end to end -----------------------------------------------------------------

fn noop_config(name: &str, concurrency: u32, subscribe: Vec<String>) -> FunctionConfig {
    FunctionConfig {
        name: name.to_owned(),
        runtime: RuntimeKind::Wasm,
        module: Some(PathBuf::from("noop.wasm")),
        handler: None,
        memory_mb: 16,
        timeout: Duration::from_secs(10),
        concurrency,
        env: BTreeMap::new(),
        subscribe,
        on_success: None,
        buckets: Vec::new(),
        retry: RetryConfig::default(),
        min_warm: 0,
        idle_timeout: Duration::from_secs(300),
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What the collectors saw: per event index, how often it ran (from the invocation records)
/// and when its handler was entered (from its result, while results are listened to).
struct Seen {
    counts: Vec<u32>,
    entered_ns: Vec<u64>,
    /// Distinct events with a record.
    distinct: usize,
    /// Invocation records, all functions together.
    records: usize,
    /// Distinct events with a result.
    answered: usize,
}

impl Seen {
    fn new(capacity: usize) -> Arc<std::sync::Mutex<Self>> {
        Arc::new(std::sync::Mutex::new(Self { counts: vec![0; capacity], entered_ns: vec![0; capacity], distinct: 0, records: 0, answered: 0 }))
    }
}

/// Functions running a module under dispatchers, every one subscribed to the same topic,
/// as `sluice up` runs them: what phase 4, the log-cost rounds and the cost curves publish to.
struct Running {
    names: Vec<String>,
    subject: String,
    shutdown: CancellationToken,
    dispatching: Vec<tokio::task::JoinHandle<()>>,
    /// Counts invocations from the records in `SLUICE_LOGS` (when records are written).
    records: Option<tokio::task::JoinHandle<()>>,
    /// Receives results, once [`Running::listen`] was called.
    results: Option<tokio::task::JoinHandle<()>>,
    seen: Arc<std::sync::Mutex<Seen>>,
    /// When each event was published, by index.
    published_ns: Vec<u64>,
}

/// What [`Running::start`] runs.
struct Functions<'a> {
    /// Names are `<prefix>` for one function, `<prefix>-<i>` for several.
    prefix: String,
    count: usize,
    module: &'a [u8],
    /// Records per invocation (`SLUICE_LOGS`) and metrics, or neither.
    logs: LogSink,
    /// Events published at most (sizes the collectors).
    capacity: usize,
}

impl Running {
    async fn start(load: &Bus, platform: &Bus, host: &WasmHost, options: &Options, functions: Functions<'_>) -> anyhow::Result<Self> {
        let Functions { prefix, count, module, logs, capacity } = functions;
        let topic = format!("bench.{prefix}");
        let names: Vec<String> = if count == 1 { vec![prefix.clone()] } else { (0..count).map(|i| format!("{prefix}-{i}")).collect() };
        let seen = Seen::new(capacity);
        let records = if logs.enabled() {
            // Read from the stream, not a plain subscription: a collector that falls behind
            // while the publisher floods the same connection must miss nothing, or a lost
            // copy would read as an event that never ran.
            let subjects: Vec<String> = names.iter().map(|name| crate::telemetry::logs::logs_subject(name)).collect();
            let reader = load
                .js
                .get_stream(crate::telemetry::logs::LOGS_STREAM)
                .await
                .context("opening stream SLUICE_LOGS")?
                .create_consumer(consumer::pull::OrderedConfig { filter_subjects: subjects, ..Default::default() })
                .await
                .context("reading the bench functions' invocation records")?;
            let mut messages = reader.messages().await.context("reading the bench functions' invocation records")?;
            let seen = seen.clone();
            Some(tokio::spawn(async move {
                while let Some(Ok(message)) = messages.next().await {
                    count_records(&message.payload, &seen);
                }
            }))
        } else {
            None
        };
        let shutdown = CancellationToken::new();
        let mut dispatching = Vec::with_capacity(count);
        for name in &names {
            let config = noop_config(name, options.concurrency, vec![topic.clone()]);
            let function = host.load_bytes(&config, module)?;
            let consumer = platform.function_consumer(&config).await?;
            let dispatcher = Dispatcher::new(platform.clone(), Arc::new(config), Arc::new(function), logs.clone());
            dispatching.push(tokio::spawn(dispatcher.run(consumer, shutdown.clone())));
        }
        Ok(Self { names, subject: bus::topic_subject(&topic), shutdown, dispatching, records, results: None, seen, published_ns: vec![0; capacity] })
    }

    /// Subscribes to the first function's results (its handler entry times), as a user
    /// watching them would. Results are published only while someone listens: a dispatcher
    /// that found nobody listening asks again within a second, so this waits that long.
    async fn listen(&mut self, load: &Bus) -> anyhow::Result<()> {
        let mut results = load.client.subscribe(bus::results_subject(&self.names[0])).await.context("subscribing to the bench function's results")?;
        load.client.flush().await.context("flushing the results subscription")?;
        let seen = self.seen.clone();
        self.results = Some(tokio::spawn(async move {
            while let Some(message) = results.next().await {
                let index = message.headers.as_ref().and_then(|h| h.get("sluice-event-id")).and_then(|id| event_index(id.as_str()));
                let entered = entered_ns(&message.payload);
                if let (Some(index), Ok(mut seen)) = (index, seen.lock()) {
                    if index < seen.entered_ns.len() && seen.entered_ns[index] == 0 {
                        seen.entered_ns[index] = entered.unwrap_or(1);
                        seen.answered += 1;
                    }
                }
            }
        }));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        Ok(())
    }

    /// Publishes events `from..to` as fast as JetStream takes them while the functions run,
    /// and waits until every function ran each: events per second.
    async fn max_rate(&mut self, load: &Bus, run_id: &str, data: &Bytes, options: &Options, events: std::ops::Range<usize>, phase: &str) -> anyhow::Result<f64> {
        let n = events.len();
        let bar = progress(options, n * self.names.len(), phase);
        let started = Instant::now();
        let last = publish_events(load, &self.subject, run_id, data, events, MsgId::Keep, Some(self.published_ns.as_mut_slice())).await?;
        for (done, name) in self.names.iter().enumerate() {
            wait_consumer_done(load, name, last).await?;
            bar.set_position(((done + 1) * n) as u64);
        }
        bar.finish_and_clear();
        Ok(n as f64 / started.elapsed().as_secs_f64())
    }

    /// Stops the dispatchers and the collectors and removes the functions' consumers; what
    /// the collectors saw stays readable.
    async fn stop(self, load: &Bus) -> anyhow::Result<Arc<std::sync::Mutex<Seen>>> {
        self.shutdown.cancel();
        for dispatching in self.dispatching {
            dispatching.await.context("a dispatcher task failed")?;
        }
        if let Some(results) = self.results {
            results.abort();
        }
        if let Some(records) = self.records {
            records.abort();
        }
        if let Ok(events) = load.js.get_stream(bus::EVENTS_STREAM).await {
            for name in &self.names {
                let _ = events.delete_consumer(name).await;
            }
        }
        Ok(self.seen)
    }
}

/// Counts the invocations in one message of records (JSON lines) by event index.
fn count_records(payload: &[u8], seen: &std::sync::Mutex<Seen>) {
    let Ok(text) = std::str::from_utf8(payload) else { return };
    let Ok(mut seen) = seen.lock() else { return };
    for line in text.lines() {
        if !line.starts_with("{\"kind\":\"invocation\"") {
            continue;
        }
        let Some(index) = line.split_once("\"event_id\":\"").and_then(|(_, rest)| rest.split_once('"')).and_then(|(id, _)| event_index(id)) else {
            continue;
        };
        if index < seen.counts.len() {
            if seen.counts[index] == 0 {
                seen.distinct += 1;
            }
            seen.counts[index] += 1;
            seen.records += 1;
        }
    }
}

/// The index in a bench event id `bench-<run>-<index>`.
fn event_index(id: &str) -> Option<usize> {
    id.rsplit('-').next().and_then(|i| i.parse().ok())
}

#[allow(clippy::too_many_arguments)] // one phase's inputs, each used once
async fn end_to_end(
    load: &Bus,
    platform: &Bus,
    host: &WasmHost,
    noop: &[u8],
    data: &Bytes,
    options: &Options,
    run_id: &str,
    logs: LogSink,
) -> anyhow::Result<(EndToEnd, Latency)> {
    let n = options.events;
    // The latency phase can publish up to this many more events.
    let capacity = n * 2;
    let functions = Functions { prefix: format!("bench-{run_id}"), count: 1, module: noop, logs, capacity };
    let mut running = Running::start(load, platform, host, options, functions).await?;
    // Nobody listens to the results here, as in a deployment where nobody watches them.
    let cpu = CpuMeter::start(options.nats_pid);
    let events_per_sec = running.max_rate(load, run_id, data, options, 0..n, "sluice end to end").await?;
    let cpu = cpu.per(n);

    // Latency at half that rate, reported through the results (handler entry times).
    running.listen(load).await?;
    let rate = (events_per_sec / 2.0).max(1.0);
    let m = ((rate * LATENCY_PERIOD.as_secs_f64()) as usize).clamp(1, capacity - n);
    let bar = progress(options, m, "latency at 50% load");
    let interval = Duration::from_secs_f64(1.0 / rate);
    let steal = HostSteal::start();
    let started = tokio::time::Instant::now();
    let mut acks = VecDeque::new();
    // The stream sequence of each half-load event, by index after `n`.
    let mut sequences = vec![0; m];
    for (j, published) in running.published_ns.iter_mut().enumerate().skip(n).take(m) {
        let due = started + interval.mul_f64((j - n) as f64);
        tokio::time::sleep_until(due).await;
        let event = bench_event(run_id, j, data);
        *published = now_ns();
        acks.push_back((j - n, load.send_event(running.subject.clone(), &event).await?));
        while acks.len() > PUBLISH_WINDOW {
            if let Some((k, ack)) = acks.pop_front() {
                sequences[k] = ack.await.context("publish not acknowledged")?.sequence;
            }
        }
    }
    for (k, ack) in acks {
        sequences[k] = ack.await.context("publish not acknowledged")?.sequence;
    }
    wait_seen(&running.seen, |seen| seen.answered, m, &bar).await?;
    let steal = steal.share();
    bar.finish_and_clear();

    // Every invocation's record, and time for redeliveries or duplicates to show up.
    wait_consumer_idle(load, &running.names[0]).await?;
    wait_seen(&running.seen, |seen| seen.distinct, n + m, &ProgressBar::hidden()).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let published_ns = std::mem::take(&mut running.published_ns);
    let seen = running.stop(load).await?;

    let (sluice, latencies, entered) = {
        let seen = seen.lock().map_err(|_| anyhow::anyhow!("the collector failed"))?;
        let latencies: Vec<Duration> = (n..n + m)
            .map(|j| Duration::from_nanos(seen.entered_ns[j].saturating_sub(published_ns[j])))
            .collect();
        (EndToEnd::counted(n, events_per_sec, &seen.counts[..n + m], cpu), latencies, seen.entered_ns[n..n + m].to_vec())
    };
    let slowest = slowest_split(load, &latencies, &published_ns[n..n + m], &entered, &sequences).await?;
    Ok((
        sluice,
        Latency {
            publish_to_handler: percentiles(rate, latencies, steal),
            slowest,
            raw_jetstream_publish_to_delivery: raw_latency(load, platform, options, run_id, rate, m).await?,
        },
    ))
}

/// The cost of invocation records and metrics: [`LOG_COST_ROUNDS`] rounds of phase 4's
/// maximum rate, each once with records and metrics and once with neither, back to back
/// (which goes first alternates), so that a slow spell of a shared machine falls on both
/// halves of a round rather than on one side of the comparison.
#[allow(clippy::too_many_arguments)] // one phase's inputs, each used once
async fn logs_cost(load: &Bus, platform: &Bus, host: &WasmHost, noop: &[u8], data: &Bytes, options: &Options, run_id: &str) -> anyhow::Result<LogsCost> {
    let mut rounds = Vec::with_capacity(LOG_COST_ROUNDS);
    for round in 0..LOG_COST_ROUNDS {
        let mut with_per_sec = 0.0;
        let mut without_per_sec = 0.0;
        for logged in [round % 2 == 0, round % 2 == 1] {
            let id = format!("{run_id}-{}{round}", if logged { "log" } else { "nolog" });
            let shutdown = CancellationToken::new();
            let (logs, logs_task) = if logged {
                let (logs, task) = LogSink::start(platform.clone(), shutdown.clone());
                (logs, Some(task))
            } else {
                (LogSink::default(), None)
            };
            let functions = Functions { prefix: format!("bench-{id}"), count: 1, module: noop, logs, capacity: options.events };
            let mut running = Running::start(load, platform, host, options, functions).await?;
            let phase = if logged { "with logs" } else { "without logs" };
            let rate = running.max_rate(load, &id, data, options, 0..options.events, phase).await?;
            running.stop(load).await?;
            shutdown.cancel();
            if let Some(task) = logs_task {
                let _ = task.await;
            }
            if logged { with_per_sec = rate } else { without_per_sec = rate }
        }
        rounds.push(LogsRound { with_per_sec: with_per_sec.round(), without_per_sec: without_per_sec.round(), cost: round3(1.0 - ratio(with_per_sec, without_per_sec)) });
    }
    Ok(LogsCost {
        with_per_sec: median(rounds.iter().map(|r| r.with_per_sec)),
        without_per_sec: median(rounds.iter().map(|r| r.without_per_sec)),
        throughput_cost: median(rounds.iter().map(|r| r.cost)),
        rounds,
    })
}

/// The middle value (the upper of the two middle ones for an even count); 0 for none.
fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Splits the slowest 1% of `latencies` (by index: publish and handler-entry times in ns
/// since the epoch, stream sequences) at the time the server stored each event.
async fn slowest_split(load: &Bus, latencies: &[Duration], published_ns: &[u64], entered_ns: &[u64], sequences: &[u64]) -> anyhow::Result<SlowestSplit> {
    let mut order: Vec<usize> = (0..latencies.len()).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(latencies[k]));
    order.truncate((latencies.len() / 100).max(1));
    let stream = load.js.get_stream(bus::EVENTS_STREAM).await.context("opening stream SLUICE_EVENTS")?;
    let (mut ingest, mut dispatch) = (Vec::with_capacity(order.len()), Vec::with_capacity(order.len()));
    for k in order {
        let message = stream.get_raw_message(sequences[k]).await.with_context(|| format!("reading event {} of the latency run back", sequences[k]))?;
        let stored = message.time.timestamp_nanos_opt().and_then(|ns| u64::try_from(ns).ok()).unwrap_or(0);
        ingest.push(Duration::from_nanos(stored.saturating_sub(published_ns[k])));
        dispatch.push(Duration::from_nanos(entered_ns[k].saturating_sub(stored)));
    }
    let p50 = |mut v: Vec<Duration>| {
        v.sort();
        round3(percentile(&v, 0.5).as_secs_f64() * 1e3)
    };
    Ok(SlowestSplit { events: ingest.len(), publish_to_stored_p50_ms: p50(ingest), stored_to_handler_p50_ms: p50(dispatch) })
}

fn percentiles(rate: f64, mut latencies: Vec<Duration>, host_steal: Option<f64>) -> Percentiles {
    latencies.sort();
    let ms = |d: Duration| round3(d.as_secs_f64() * 1e3);
    Percentiles {
        rate_per_sec: rate.round(),
        events: latencies.len(),
        p50_ms: ms(percentile(&latencies, 0.50)),
        p99_ms: ms(percentile(&latencies, 0.99)),
        p999_ms: ms(percentile(&latencies, 0.999)),
        host_steal,
    }
}

/// Raw JetStream at `rate` for `count` messages: each carries its publish time in its first
/// eight bytes; the consumer subtracts it on delivery.
async fn raw_latency(load: &Bus, platform: &Bus, options: &Options, run_id: &str, rate: f64, count: usize) -> anyhow::Result<Percentiles> {
    let (name, subject) = (format!("BENCH_LAT_{run_id}"), format!("bench.lat.{run_id}"));
    create_raw_stream(&load.js, &name, &subject).await?;
    let stream = platform.js.get_stream(&name).await.context("opening the bench stream")?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .context("creating the latency consumer")?;
    let mut messages = consumer.stream().max_messages_per_batch(1000).messages().await.context("pulling")?;
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(count);
        while latencies.len() < count {
            let Some(Ok(message)) = messages.next().await else { break };
            let now = now_ns();
            let sent = message.payload.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(now, u64::from_le_bytes);
            latencies.push(Duration::from_nanos(now.saturating_sub(sent)));
            let _ = message.ack().await;
        }
        latencies
    });
    let bar = progress(options, count, "raw latency");
    let interval = Duration::from_secs_f64(1.0 / rate);
    let steal = HostSteal::start();
    let started = tokio::time::Instant::now();
    let mut acks = VecDeque::new();
    for i in 0..count {
        tokio::time::sleep_until(started + interval.mul_f64(i as f64)).await;
        let mut payload = vec![b'x'; options.size.max(8)];
        payload[..8].copy_from_slice(&now_ns().to_le_bytes());
        acks.push_back(load.js.publish(subject.clone(), payload.into()).await.context("raw publish")?);
        while acks.len() > PUBLISH_WINDOW {
            if let Some(ack) = acks.pop_front() {
                ack.await.context("raw publish not acknowledged")?;
            }
        }
        bar.inc(1);
    }
    for ack in acks {
        ack.await.context("raw publish not acknowledged")?;
    }
    let latencies = tokio::time::timeout(PHASE_LIMIT, receiver)
        .await
        .map_err(|_| anyhow::anyhow!("the raw latency consumer did not receive every message in time"))?
        .context("the raw latency consumer failed")?;
    let steal = steal.share();
    bar.finish_and_clear();
    load.js.delete_stream(&name).await.context("deleting the bench stream")?;
    if latencies.len() < count {
        anyhow::bail!("the raw latency consumer received {} of {count} messages", latencies.len());
    }
    Ok(percentiles(rate, latencies, steal))
}

fn bench_event(run_id: &str, index: usize, data: &Bytes) -> Event {
    let mut event = Event::new("sluice.bench", "sluice.bench", data.clone());
    event.id = format!("bench-{run_id}-{index}");
    event
}

/// Polls a count of the collectors (cheaper than a wake-up per record) until `target`.
async fn wait_seen(seen: &std::sync::Mutex<Seen>, count: impl Fn(&Seen) -> usize, target: usize, bar: &ProgressBar) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let done = seen.lock().map(|s| count(&s)).unwrap_or(0);
        bar.set_position(done.min(target) as u64);
        if done >= target {
            return Ok(());
        }
        if started.elapsed() > PHASE_LIMIT {
            anyhow::bail!("only {done} of {target} events were seen within {PHASE_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Polls a function's consumer until it acknowledged everything up to stream sequence `last`.
async fn wait_consumer_done(bus: &Bus, name: &str, last: u64) -> anyhow::Result<()> {
    let stream = bus.js.get_stream(bus::EVENTS_STREAM).await.context("opening SLUICE_EVENTS")?;
    let started = Instant::now();
    loop {
        let info = stream.consumer_info(name).await.context("reading the bench consumer")?;
        if info.delivered.stream_sequence >= last && info.num_pending == 0 && info.num_ack_pending == 0 {
            return Ok(());
        }
        if started.elapsed() > PHASE_LIMIT {
            anyhow::bail!("consumer {name} still has {} pending and {} in flight after {PHASE_LIMIT:?}", info.num_pending, info.num_ack_pending);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The number in the no-op's answer `{"entered_ns":N}`.
fn entered_ns(payload: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(payload).ok()?;
    let digits = text.strip_prefix("{\"entered_ns\":")?.strip_suffix('}')?;
    digits.trim().parse().ok()
}

async fn wait_consumer_idle(bus: &Bus, name: &str) -> anyhow::Result<()> {
    let stream = bus.js.get_stream(bus::EVENTS_STREAM).await.context("opening SLUICE_EVENTS")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = stream.consumer_info(name).await.context("reading the bench consumer")?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("the bench consumer still has {} pending and {} in flight", info.num_pending, info.num_ack_pending);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- phase 4: cold start ------------------------------------------------------------------

async fn cold_start(options: &Options, work_dir: &std::path::Path) -> anyhow::Result<ColdStart> {
    let event = Arc::new(Event::new("sluice.bench", "sluice.bench", event_data(options.size)));
    let config = noop_config("bench-cold", 1, Vec::new());
    let host_config = |dir: &str| HostConfig { max_concurrent: 2, max_memory_mb: 16, cache_dir: work_dir.join(dir), buckets_dir: None };

    // From source: compile, cache, link, first invocation.
    let host = WasmHost::new(host_config("cold-source"))?;
    let bar = progress(options, COLD_FUNCTIONS * 2, "cold start");
    let mut from_source = Vec::with_capacity(COLD_FUNCTIONS);
    for variant in 0..COLD_FUNCTIONS {
        let bytes = noop::module(Some(variant))?;
        let started = Instant::now();
        let function = host.load_bytes(&config, &bytes)?;
        first_invoke(&function, &event).await?;
        from_source.push(started.elapsed());
        bar.inc(1);
    }

    // From a precompiled artifact: deployed ahead (not timed), never loaded by this node.
    let host = WasmHost::new(host_config("cold-precompiled"))?;
    let variants: Vec<Vec<u8>> =
        (0..COLD_FUNCTIONS).map(|v| noop::module(Some(COLD_FUNCTIONS + v))).collect::<anyhow::Result<_>>()?;
    for bytes in &variants {
        cache::precompile::<wasmtime::Module>(host.engine(), &work_dir.join("cold-precompiled"), bytes)?;
    }
    let mut precompiled = Vec::with_capacity(COLD_FUNCTIONS);
    for bytes in &variants {
        let started = Instant::now();
        let function = host.load_bytes(&config, bytes)?;
        first_invoke(&function, &event).await?;
        precompiled.push(started.elapsed());
        bar.inc(1);
    }
    bar.finish_and_clear();
    let cold = |mut times: Vec<Duration>| {
        times.sort();
        Cold {
            p50_ms: round3(percentile(&times, 0.50).as_secs_f64() * 1e3),
            p99_ms: round3(percentile(&times, 0.99).as_secs_f64() * 1e3),
        }
    };
    Ok(ColdStart { functions: COLD_FUNCTIONS, precompiled: cold(precompiled), from_source: cold(from_source) })
}

async fn first_invoke(function: &crate::runtime::wasm::WasmFunction, event: &Arc<Event>) -> anyhow::Result<()> {
    let invocation = Invocation { request_id: "cold".into(), attempt: 1, event: event.clone() };
    function.invoke(invocation).await.map_err(|e| anyhow::anyhow!("the no-op failed: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_data_has_the_requested_size_and_is_json() {
        for size in [8, 128, 1000] {
            let data = event_data(size);
            assert_eq!(data.len(), size);
            assert!(serde_json::from_slice::<serde_json::Value>(&data).is_ok());
        }
    }

    #[test]
    fn percentiles_pick_the_right_rank() {
        let times: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&times, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&times, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&times, 0.999), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn steal_is_the_eighth_tick_count_of_eight() {
        // guest and guest_nice (the last two) are already in user and nice.
        assert_eq!(parse_steal_ticks("cpu  395395 0 36875 1308995 1572 0 581 11454 0 0"), Some((11454, 1754872)));
        assert_eq!(parse_steal_ticks("cpu  10 0 5 80 5"), None);
        assert_eq!(parse_steal_ticks("cpu0 10 0 5 80 5 0 0 0 0 0"), None);
        assert_eq!(parse_steal_ticks("cpu  10 0 x 80 5 0 0 0 0 0"), None);
    }

    #[test]
    fn the_noop_answer_parses() {
        assert_eq!(entered_ns(br#"{"entered_ns":1764230400123456789}"#), Some(1_764_230_400_123_456_789));
        assert_eq!(entered_ns(b"null"), None);
    }

    #[test]
    fn noop_variants_differ() {
        let a = noop::module(Some(1)).unwrap();
        let b = noop::module(Some(2)).unwrap();
        assert_ne!(a, b);
        assert!(noop::module(None).is_ok());
    }
}
