//! `sluice bench`: raw JetStream, bare wasmtime, Sluice end to end and cold starts, side by
//! side in one run (see `crate::bench` and docs/performance.md).

use std::io::IsTerminal as _;

use anyhow::Context as _;
use std::process::ExitCode;

use super::output::{print_json, Table};
use super::Context;
use crate::bench::idle::ManyFunctionsReport;
use crate::bench::scaleout::ScaleOutReport;
use crate::bench::{self, Options, Report};
use crate::bus::embedded::EmbeddedNats;
use crate::bus::{Bus, StreamSetup};
use crate::config::BusSettings;
use crate::error::UsageError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events (and raw messages) per throughput phase.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Size of each message and event body, in bytes (at least 8).
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Concurrency of the no-op function (its `max_ack_pending`).
    #[arg(long, default_value_t = 128)]
    pub concurrency: u32,
    /// Also measure the `postgres` trigger against reading its slot alone, on this server
    /// (libpq URI; needs wal_level = logical and a role with REPLICATION). It makes and
    /// drops a table, a publication and two slots named `sluice_bench_*`.
    #[arg(long, value_name = "DSN")]
    pub postgres: Option<String>,
    /// Also measure the HTTP gateway: `GET /hello` to the wasm `hello` example (built by
    /// `sluice build hello`) against a plain axum handler answering the same body.
    #[arg(long)]
    pub http: bool,
    /// Also measure worker scale-out: one `sluice up` node against two, each pinned to a CPU
    /// of its own, draining a backlog of `--events` events through the `hello` example
    /// (built by `sluice build hello`; skipped with a note when it is not).
    #[arg(long)]
    pub scale_out: bool,
    /// Also measure N deployed functions doing nothing: a `sluice up` process with 1, N/10
    /// and N copies of the `hello` example (built by `sluice build hello`), each on a topic
    /// of its own: its start time, idle CPU and memory, the nats-server's, and the pick-up
    /// of one event afterwards.
    #[arg(long, value_name = "N")]
    pub functions: Option<usize>,
    /// The idle window of each `--functions` run, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 20.0, hide = true)]
    pub idle_window: f64,
    /// Runs only the end-to-end throughput run (no other phase, no latency run) and reports
    /// its `sluice` section: for profilers, e.g. callgrind over two event counts.
    #[arg(long, hide = true)]
    pub only_end_to_end: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    if args.events == 0 || args.events > 10_000_000 {
        return Err(UsageError::new(format!("--events {}: use 1 to 10000000", args.events)).into());
    }
    if args.size < 8 || args.size > 1024 * 1024 {
        return Err(UsageError::new(format!("--size {}: use 8 to 1048576 bytes", args.size)).into());
    }
    if args.concurrency == 0 || args.concurrency > 10_000 {
        return Err(UsageError::new(format!("--concurrency {}: use 1 to 10000", args.concurrency)).into());
    }
    if let Some(n) = args.functions {
        if n == 0 || n > 10_000 {
            return Err(UsageError::new(format!("--functions {n}: use 1 to 10000")).into());
        }
    }
    if !(args.idle_window.is_finite() && (0.5..=3600.0).contains(&args.idle_window)) {
        return Err(UsageError::new(format!("--idle-window {}: use 0.5 to 3600 seconds", args.idle_window)).into());
    }
    let work_dir = work_dir();
    std::fs::create_dir_all(&work_dir)?;
    let result = measure(ctx, &args, &work_dir).await;
    let _ = std::fs::remove_dir_all(&work_dir);
    match result? {
        Measured::Full(report) if ctx.json => print_json(&report)?,
        Measured::Full(report) => println!("{}", render(&report)),
        Measured::EndToEnd(sluice) if ctx.json => print_json(&serde_json::json!({ "sluice": sluice }))?,
        Measured::EndToEnd(sluice) => println!(
            "{:.0} events/s; CPU per event: {}; exactly once: {} ({} once, {} duplicates, {} missing)",
            sluice.events_per_sec,
            cpu_text(&sluice.cpu),
            sluice.exactly_once,
            sluice.invoked_once,
            sluice.duplicates,
            sluice.missing
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The bench's temporary directory (removed at the end): its server's store, caches, the
/// node log (what a default `sluice up` would have logged) and the nodes' projects.
pub fn work_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()))
}

/// What a bench run measured: every phase, or (`--only-end-to-end`) the end-to-end run.
enum Measured {
    Full(Box<Report>),
    EndToEnd(bench::EndToEnd),
}

async fn measure(ctx: &Context, args: &Args, work_dir: &std::path::Path) -> anyhow::Result<Measured> {
    // Its own server (file storage, R1) unless one is given; started on this thread.
    let mut server = None;
    // `url` is also what the scale-out phase's worker nodes are given (with the same
    // credentials through the environment and settings they inherit).
    let (target, url) = match &ctx.nats {
        Some(url) => (ctx.nats_target(url, &ctx.settings()?)?, url.clone()),
        None => {
            let started = EmbeddedNats::start(work_dir)?;
            let target = crate::bus::NatsTarget::plain(started.url());
            let url = started.url().to_owned();
            server = Some(started);
            (target, url)
        }
    };
    // Two connections, as a publisher and a worker in separate processes would have. The
    // load generator's connection does its I/O on a thread of its own, as another process
    // would: its publishes and their acknowledgements do not wait behind the platform's
    // invocations on the platform's workers (nor the platform's reads behind them).
    let load_runtime = LoadRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-bench-load")
            .enable_all()
            .build()
            .context("starting the load generator's thread")?,
    ));
    let load = {
        let target = target.clone();
        load_runtime
            .handle()
            .spawn(async move { Bus::connect(&target, &BusSettings::default(), StreamSetup::CreateMissing).await })
            .await
            .context("connecting the load generator")??
    };
    let platform = Bus::connect(&target, &BusSettings::default(), StreamSetup::CreateMissing).await?;
    let options = Options {
        events: args.events,
        size: args.size,
        concurrency: args.concurrency,
        progress: std::io::stderr().is_terminal(),
        postgres: args.postgres.clone(),
        tools_dir: crate::config::Project::tools_dir_of(&ctx.dir),
        http: if args.http { Some(hello_module(ctx, "--http")?) } else { None },
        components: bench::component::examples(&ctx.dir),
        scale_out: if args.scale_out { Some(node_setup(ctx, &url, server.as_ref(), "--scale-out")?) } else { None },
        hello: hello_module(ctx, "the real-guest curve").map_err(|error| format!("{error:#}")),
        many_functions: match args.functions {
            Some(functions) => Some(bench::idle::Setup {
                functions,
                window: std::time::Duration::from_secs_f64(args.idle_window),
                node: node_setup(ctx, &url, server.as_ref(), "--functions")?,
            }),
            None => None,
        },
        nats_pid: server.as_ref().and_then(EmbeddedNats::pid),
    };
    let report = if args.only_end_to_end {
        bench::end_to_end_only(&load, &platform, &options, work_dir).await.map(Measured::EndToEnd)
    } else {
        bench::run(&load, &platform, &options, work_dir).await.map(|report| Measured::Full(Box::new(report)))
    };
    // Closed before the server stops, so that they do not report it as a lost connection.
    for bus in [load, platform] {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), bus.client.drain()).await;
    }
    drop(load_runtime);
    drop(server);
    report
}

/// The load generator's runtime, stopped without waiting when dropped (also on an early
/// return: dropping a runtime the normal way blocks, which an async context may not).
struct LoadRuntime(Option<tokio::runtime::Runtime>);

impl LoadRuntime {
    fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(runtime) => runtime.handle().clone(),
            None => tokio::runtime::Handle::current(),
        }
    }
}

impl Drop for LoadRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The `hello` example's compiled module, for `flag`.
fn hello_module(ctx: &Context, flag: &str) -> anyhow::Result<std::path::PathBuf> {
    let project = ctx.project()?;
    let module = project.function("hello").and_then(|f| f.module_path.clone());
    match module {
        Some(module) if module.is_file() => Ok(module),
        _ => Err(UsageError::new(format!(
            "{flag} measures the `hello` example: run it in the example project after `sluice build hello` (no built functions/hello in {})",
            ctx.dir.display()
        ))
        .into()),
    }
}

/// What `--scale-out` and `--functions` (`flag`) need: this executable for the nodes, the
/// bench's server, and the `hello` example (its absence skips the phase with why, rather
/// than failing the bench).
fn node_setup(ctx: &Context, url: &str, server: Option<&EmbeddedNats>, flag: &str) -> anyhow::Result<bench::scaleout::Setup> {
    let hello = hello_module(ctx, flag)
        .and_then(|module| std::fs::canonicalize(&module).with_context(|| format!("resolving {}", module.display())))
        .map_err(|error| format!("{error:#}"));
    Ok(bench::scaleout::Setup {
        exe: std::env::current_exe().context("finding the sluice executable the worker nodes run")?,
        nats_url: url.to_owned(),
        nats_pid: server.and_then(EmbeddedNats::pid),
        hello,
    })
}

fn cpu_text(cpu: &bench::CpuPerMessage) -> String {
    let figures = match cpu.nats_server_us {
        Some(server) => format!("{:.1} / {server:.1} µs", cpu.bench_process_us),
        None => format!("{:.1} µs / (not measured: --nats)", cpu.bench_process_us),
    };
    figures + &steal_text(cpu.host_steal)
}

/// The host's steal over a window, when the kernel reports it.
fn steal_text(steal: Option<f64>) -> String {
    steal.map_or_else(String::new, |steal| format!(" (host steal {:.1}%)", steal * 100.0))
}

fn latency_text(l: &bench::Percentiles) -> String {
    format!("p50 {:.3} / p99 {:.3} / p99.9 {:.3} ms at {:.0}/s{}", l.p50_ms, l.p99_ms, l.p999_ms, l.rate_per_sec, steal_text(l.host_steal))
}

fn render(r: &Report) -> String {
    let mut t = Table::new(vec!["PHASE", "FIGURE", "VALUE"]);
    let mut row = |phase: &str, figure: &str, value: String| t.row(vec![phase.to_owned(), figure.to_owned(), value]);
    row("raw JetStream", "publish", format!("{:.0} msgs/s", r.raw_jetstream.publish_msgs_per_sec));
    row("raw JetStream", "consume + ack", format!("{:.0} msgs/s", r.raw_jetstream.consume_msgs_per_sec));
    row("raw JetStream", "overlapped", format!("{:.0} msgs/s", r.raw_jetstream.overlapped_msgs_per_sec));
    row("raw JetStream", "CPU per message (bench / nats-server)", cpu_text(&r.raw_jetstream.overlapped_cpu));
    for step in &r.raw_jetstream.contract_steps {
        row(
            "raw JetStream, contract steps",
            &format!("{}: + {}", step.step, step.adds),
            format!("{:.0} msgs/s ({:.3} of raw overlapped; CPU per message {})", step.overlapped_msgs_per_sec, step.vs_raw, cpu_text(&step.cpu)),
        );
    }
    let e = &r.raw_jetstream.as_events;
    row("raw JetStream, as events", "overlapped (headers, Nats-Msg-Id, a function's consumer)", format!("{:.0} msgs/s", e.overlapped_msgs_per_sec));
    row("raw JetStream, as events", "CPU per message (bench / nats-server)", cpu_text(&e.cpu));
    row("bare wasmtime", "invoke p50 / p99", format!("{:.1} / {:.1} µs", r.bare_wasmtime.p50_us, r.bare_wasmtime.p99_us));
    row("bare wasmtime", "CPU per invoke", format!("{:.1} µs", r.bare_wasmtime.cpu_us_per_invocation));
    row("sluice runtime", "invoke p50 / p99", format!("{:.1} / {:.1} µs", r.sluice_runtime.p50_us, r.sluice_runtime.p99_us));
    row("sluice runtime", "CPU per invoke", format!("{:.1} µs", r.sluice_runtime.cpu_us_per_invocation));
    row("sluice end to end", "throughput", format!("{:.0} events/s", r.sluice.events_per_sec));
    row("sluice end to end", "CPU per event (bench / nats-server)", cpu_text(&r.sluice.cpu));
    row(
        "sluice end to end",
        "exactly once",
        format!("{} ({} once, {} duplicates, {} missing)", r.sluice.exactly_once, r.sluice.invoked_once, r.sluice.duplicates, r.sluice.missing),
    );
    row("latency at 50% load", "publish → handler", latency_text(&r.latency.publish_to_handler));
    let s = &r.latency.slowest;
    row(
        "latency at 50% load",
        "slowest 1%: publish → stored / → handler",
        format!("p50 {:.3} / {:.3} ms ({} events)", s.publish_to_stored_p50_ms, s.stored_to_handler_p50_ms, s.events),
    );
    row("latency at 50% load", "raw JetStream → consumer", latency_text(&r.latency.raw_jetstream_publish_to_delivery));
    let c = &r.cold_start;
    row("cold start", "precompiled", format!("p50 {:.3} / p99 {:.3} ms", c.precompiled.p50_ms, c.precompiled.p99_ms));
    row("cold start", "from source", format!("p50 {:.3} / p99 {:.3} ms", c.from_source.p50_ms, c.from_source.p99_ms));
    for l in &r.lambda.runtimes {
        let phase = format!("lambda {}", l.runtime);
        row(&phase, "cold start (start → first response)", format!("p50 {:.1} / p99 {:.1} ms", l.cold_start.p50_ms, l.cold_start.p99_ms));
        row(&phase, "Init Duration", format!("p50 {:.1} / p99 {:.1} ms", l.init.p50_ms, l.init.p99_ms));
        row(&phase, "warm invoke p50 / p99", format!("{:.3} / {:.3} ms", l.warm_p50_ms, l.warm_p99_ms));
    }
    for skipped in &r.lambda.skipped {
        row("lambda", "skipped", skipped.clone());
    }
    for c in &r.component.components {
        let phase = format!("component {}", c.function);
        row(&phase, "cold start (precompiled → first response)", format!("p50 {:.3} / p99 {:.3} ms", c.cold_start.p50_ms, c.cold_start.p99_ms));
        row(&phase, "of which map + link", format!("p50 {:.3} / p99 {:.3} ms", c.load.p50_ms, c.load.p99_ms));
        row(&phase, "warm invoke p50 / p99", format!("{:.3} / {:.3} ms", c.warm_p50_ms, c.warm_p99_ms));
    }
    for skipped in &r.component.skipped {
        row("component", "skipped", skipped.clone());
    }
    let c = &r.curves;
    for p in &c.fan_out {
        let phase = format!("fan-out: {} function(s), one topic", p.functions);
        row(&phase, "deliveries/s (sluice / raw)", format!("{:.0} / {:.0} ({:.3}), {} events", p.deliveries_per_sec, p.raw_deliveries_per_sec, p.vs_raw, p.events));
        row(&phase, "exactly once", format!("{} ({} invocations)", p.exactly_once, p.deliveries));
    }
    for p in &c.event_size {
        let phase = format!("event size {} B ({} events)", p.size_bytes, p.events);
        row(&phase, "events/s (sluice / raw)", format!("{:.0} / {:.0} ({:.3})", p.events_per_sec, p.raw_events_per_sec, p.vs_raw));
        row(&phase, "MB/s (sluice / raw)", format!("{:.1} / {:.1}, exactly once {}", p.mb_per_sec, p.raw_mb_per_sec, p.exactly_once));
    }
    match &c.real_guest {
        bench::curves::RealGuest::Measured { function, events, events_per_sec, noop_events_per_sec, vs_noop, exactly_once } => {
            let phase = format!("real guest: {function} ({events} events)");
            row(&phase, "events/s (hello / no-op)", format!("{events_per_sec:.0} / {noop_events_per_sec:.0} ({vs_noop:.3}), exactly once {exactly_once}"));
        }
        bench::curves::RealGuest::Skipped { skipped } => row("real guest", "skipped", skipped.clone()),
    }
    row("ratios", "end to end ÷ raw overlapped", format!("{:.3}", r.ratios.end_to_end_vs_raw_jetstream));
    row("ratios", "raw as events ÷ raw overlapped", format!("{:.3}", r.ratios.as_events_vs_raw_jetstream));
    row("ratios", "end to end ÷ raw as events", format!("{:.3}", r.ratios.end_to_end_vs_as_events));
    row("ratios", "invoke CPU ÷ bare wasmtime", format!("{:.3}", r.ratios.invoke_cpu_vs_bare_wasmtime));
    if let Some(p) = &r.postgres {
        let phase = format!("postgres ({} rows, {} per transaction)", p.rows, p.rows_per_transaction);
        row(&phase, "slot only (decode)", format!("{:.0} rows/s", p.slot_only_rows_per_sec));
        row(&phase, "trigger (stored in JetStream)", format!("{:.0} rows/s", p.sluice_rows_per_sec));
        let (f, l) = (&p.latency_slot_only, &p.latency_sluice);
        let phase = format!("postgres latency ({} one-row transactions)", l.events);
        row(&phase, "INSERT → slot only decoded", format!("p50 {:.3} / p99 {:.3} ms", f.p50_ms, f.p99_ms));
        row(&phase, "INSERT → event on the bus", format!("p50 {:.3} / p99 {:.3} ms", l.p50_ms, l.p99_ms));
        row("ratios", "postgres trigger ÷ slot only", format!("{:.3}", p.sluice_vs_slot_only));
    }
    if let Some(h) = &r.http {
        let phase = format!("http ({} connections)", h.concurrency);
        let load = |l: &bench::http::Load| format!("{:.0} req/s, p50 {:.3} / p99 {:.3} ms ({} errors)", l.requests_per_sec, l.p50_ms, l.p99_ms, l.errors);
        row(&phase, "plain axum", load(&h.plain_axum));
        row(&phase, "axum → bare wasmtime hello", load(&h.axum_bare_wasmtime));
        row(&phase, "gateway → wasm hello", load(&h.gateway));
        row(&phase, "gateway → NATS → wasm hello", load(&h.gateway_via_nats));
        let phase = format!("http at half load ({:.0} req/s)", h.half_load.rate_per_sec);
        row(&phase, "plain axum", load(&h.half_load.plain_axum));
        row(&phase, "gateway → wasm hello", load(&h.half_load.gateway));
        row("ratios", "gateway ÷ plain axum req/s", format!("{:.3}", h.gateway_vs_plain_axum));
        row("ratios", "gateway over NATS ÷ plain axum req/s", format!("{:.3}", h.gateway_via_nats_vs_plain_axum));
        row("ratios", "axum → bare wasmtime ÷ plain axum req/s", format!("{:.3}", h.axum_bare_wasmtime_vs_plain_axum));
        row("ratios", "gateway ÷ axum → bare wasmtime req/s", format!("{:.3}", h.gateway_vs_axum_bare_wasmtime));
        row("ratios", "gateway p99 overhead at half load", format!("{:.3} ms", h.p99_overhead_ms_at_half_load));
    }
    match &r.scale_out {
        Some(ScaleOutReport::Measured(s)) => {
            let phase = format!("scale-out ({} events, hello)", s.events);
            for run in &s.runs {
                let cpus: Vec<String> = run.processes.iter().map(|p| format!("{} on {}", p.name, p.cpus)).collect();
                row(&phase, &format!("round {}, {} node(s)", run.round, run.nodes), format!("{:.0} events/s ({})", run.events_per_sec, cpus.join(", ")));
            }
            row(&phase, "one node / two nodes (medians)", format!("{:.0} / {:.0} events/s", s.one_node_per_sec, s.two_nodes_per_sec));
            row(&phase, "placement", s.note.clone());
            row("ratios", "two worker nodes ÷ one", format!("{:.3}", s.two_workers_vs_one));
        }
        Some(ScaleOutReport::Skipped { skipped }) => row("scale-out", "skipped", skipped.clone()),
        None => {}
    }
    match &r.many_functions {
        Some(ManyFunctionsReport::Measured(m)) => {
            for run in &m.runs {
                let phase = format!("{} idle function(s) ({})", run.functions, m.function);
                row(&phase, "sluice up: up after", format!("{:.2} s", run.up_after_s));
                row(&phase, "sluice up idle: CPU / RSS", format!("{:.3} core / {:.1} MiB over {:.0} s", run.cpu_busy, run.rss_mb, run.window_s));
                if let (Some(cpu), Some(rss), Some(delta)) = (run.nats_server_cpu_busy, run.nats_server_rss_mb, run.nats_server_rss_delta_mb) {
                    row(&phase, "nats-server idle: CPU / RSS", format!("{cpu:.3} core / {rss:.1} MiB ({delta:+.1} MiB)"));
                }
                row(&phase, "one event afterwards: publish → ack", format!("{:.1} ms", run.pickup_ms));
            }
        }
        Some(ManyFunctionsReport::Skipped { skipped }) => row("many functions", "skipped", skipped.clone()),
        None => {}
    }
    format!(
        "{}\n\n{} cores, nats-server {}, {} events of {} B, concurrency {}",
        t.render(),
        r.machine.cores,
        r.machine.nats_server_version,
        r.options.events,
        r.options.size,
        r.options.concurrency
    )
}
