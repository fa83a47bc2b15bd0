//! `sluice up`: run every function of the project until SIGINT/SIGTERM.
//!
//! With no NATS configured, starts an embedded `nats-server` (or joins the one another
//! `sluice up` in the same directory runs). Shutdown stops fetching, lets in-flight
//! invocations finish and acks what finished; events not yet fetched stay in JetStream for
//! the next start. The drain is bounded ([`drain_bound`]) whatever state NATS is in, and a
//! second signal exits at once (unacknowledged events are redelivered). An embedded server
//! that dies is restarted; one that cannot be restarted stops `up` with exit status 1.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::PullConsumer;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Context;
use crate::bus::embedded::{self, EmbeddedNats};
use crate::bus::{Bus, StreamSetup};
use crate::config::{ConfigError, FunctionConfig, Project};
use crate::error::UsageError;
use crate::registry::Registry;
use crate::runtime::wasm::{HostConfig, WasmHost};
use crate::runtime::{Hosts, Runtime};
use crate::telemetry::logs::LogSink;
use crate::triggers::http::Gateway;

mod node;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to listen for HTTP (`http` triggers, the Lambda Invoke API): IP:PORT, or "off".
    /// Default: [http] listen in sluice.toml, else 127.0.0.1:8080.
    #[arg(long = "http", value_name = "ADDR", env = "SLUICE_HTTP_LISTEN")]
    pub http: Option<String>,
    /// Run the functions and triggers deployed in the cluster's registry (`sluice deploy`)
    /// instead of the project's functions/ and triggers/ folders; new versions, rollbacks
    /// and undeploys take effect within seconds, without a restart.
    #[arg(long, env = "SLUICE_REGISTRY")]
    pub registry: bool,
    /// What this node runs, comma-separated: workers (functions), triggers (trigger
    /// adapters), gateway (the HTTP listener).
    #[arg(long, value_enum, value_delimiter = ',', env = "SLUICE_ROLES", default_value = "workers,triggers,gateway", value_name = "ROLES")]
    pub roles: Vec<node::Role>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let project = ctx.project()?;
    let roles = node::Roles::of(&args.roles);
    // Listening from the start: a signal that arrives while starting stops the start (before
    // any event is fetched) or, once dispatchers run, is the ordinary graceful shutdown;
    // never the default action that kills the process mid-invocation.
    let mut stop = Stop::listen();
    let mut server: Option<EmbeddedNats> = None;
    let shutdown = CancellationToken::new();
    let logs_shutdown = CancellationToken::new();
    let started = tokio::select! {
        started = start(ctx, &project, &mut server, roles, args.registry, shutdown.clone(), logs_shutdown.clone()) => started?,
        () = stop.next() => {
            info!("Stopped while starting; no event was fetched.");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let Started { url, mut node, registry, logs_task, deployed, loaded } = started;
    let bus = node.bus.clone();

    // Every invocation leaves a record in SLUICE_LOGS and in the metrics.
    let metrics = crate::telemetry::metrics::install();
    // Bound before anything runs: a bad route or a busy port stops the start.
    let listen = args.http.unwrap_or_else(|| project.settings.http.listen.clone());
    let gateway = if listen == "off" || !roles.gateway {
        None
    } else {
        Some(Gateway::bind(&listen, &deployed, bus.clone(), node.local.clone(), metrics).await?)
    };
    for (config, consumer, function) in loaded {
        node.start_function(config, consumer, function, None);
    }
    if !args.registry && roles.triggers {
        for def in &project.triggers {
            node.start_trigger(def, &project, None).map_err(|e| ConfigError::new(&def.path, None, format!("{e:#}")))?;
        }
    }
    if roles.workers || roles.triggers {
        node.trigger_tasks.spawn(sweep_payloads(bus.clone(), project.settings.bus.events_max_age, shutdown.clone()));
    }
    // The gateway stops first, so the requests it is answering still find their workers.
    let gateway_shutdown = CancellationToken::new();
    let mut gateway_task = None;
    let mut http_line = String::new();
    let (routes_tx, routes_rx) = tokio::sync::watch::channel(Arc::new(deployed.clone()));
    if let Some(gateway) = gateway {
        info!(addr = %gateway.addr, routes = gateway.routes, "HTTP listener started.");
        http_line = format!(" HTTP on http://{}.", gateway.addr);
        gateway_task = Some(tokio::spawn(gateway.serve(gateway_shutdown.clone(), routes_rx)));
    }
    let drain_timeouts: Vec<Duration> = deployed.functions.iter().map(|f| f.config.timeout).collect();
    let names: Vec<&str> = deployed.functions.iter().map(|f| f.config.name.as_str()).collect();
    let trigger_names: Vec<&str> = deployed.triggers.iter().map(|t| t.name.as_str()).collect();
    let source = if args.registry { " deployed in the registry" } else { "" };
    let roles_line = if roles.workers && roles.triggers && roles.gateway { String::new() } else { format!(" Roles: {}.", roles.names()) };
    if !args.registry && project.functions.is_empty() {
        warn!(dir = %project.dir.join("functions").display(), "No functions found; add functions/<name>/function.toml.");
    }
    println!(
        "Sluice is up: {} function(s) [{}], {} trigger(s) [{}]{source} on {url}.{roles_line}{http_line} Press Ctrl-C to stop.",
        names.len(),
        names.join(", "),
        trigger_names.len(),
        trigger_names.join(", ")
    );
    let _ = std::io::stdout().flush();
    // With --registry, the node follows deploys from now on.
    let (follower, node_tasks) = match registry {
        Some(registry) => (Some(tokio::spawn(node.follow(registry, routes_tx))), None),
        None => (None, Some(node)),
    };

    // Run until a signal, or until the embedded server died for good.
    let failure = tokio::select! {
        () = stop.next() => None,
        reason = embedded_failure(server.as_mut()) => Some(reason),
    };
    if let Some(reason) = &failure {
        error!(reason = %reason, "The embedded NATS server is gone; stopping.");
    }
    // A second Ctrl-C or SIGTERM does not wait for the drain.
    tokio::spawn(async move {
        stop.next().await;
        warn!("Second signal: exiting now. Events not acknowledged yet are redelivered by JetStream.");
        std::process::exit(130);
    });
    let bound = drain_bound(drain_timeouts.into_iter());
    info!(bound_s = bound.as_secs(), "Shutting down: no new events are fetched; in-flight invocations finish (Ctrl-C again to exit at once).");
    gateway_shutdown.cancel();
    if let Some(task) = gateway_task {
        if tokio::time::timeout(bound, task).await.is_err() {
            warn!("HTTP requests did not finish in time; stopping anyway.");
        }
    }
    shutdown.cancel();
    let node = match follower {
        Some(follower) => match tokio::time::timeout(bound, follower).await {
            Ok(Ok(node)) => Some(node),
            _ => None,
        },
        None => node_tasks,
    };
    if let Some(node) = &node {
        node.trigger_tasks.close();
        node.dispatchers.close();
        let drain = async {
            node.trigger_tasks.wait().await;
            node.dispatchers.wait().await;
        };
        if tokio::time::timeout(bound, drain).await.is_err() {
            warn!(bound_s = bound.as_secs(), "Shutdown did not finish in time (is NATS reachable?); stopping anyway. Events not acknowledged are redelivered by JetStream.");
        }
    }
    // The last invocations' records.
    drop(node);
    logs_shutdown.cancel();
    if let Some(task) = logs_task {
        let _ = tokio::time::timeout(FLUSH_BOUND, task).await;
    }
    match tokio::time::timeout(FLUSH_BOUND, bus.client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => warn!(%error, "Cannot flush the last acknowledgements; JetStream will redeliver those events."),
        Err(_) => warn!("NATS is unreachable: the last acknowledgements may not have been sent; JetStream will redeliver those events."),
    }
    // Close the connection before the embedded server stops, so that is not an outage.
    let _ = tokio::time::timeout(FLUSH_BOUND, bus.client.drain()).await;
    drop(server);
    if let Some(reason) = failure {
        anyhow::bail!(reason);
    }
    info!("Stopped.");
    Ok(ExitCode::SUCCESS)
}

/// What `up` runs once started.
struct Started {
    url: String,
    node: node::Node,
    /// With --registry: the registry the node follows.
    registry: Option<Registry>,
    logs_task: Option<tokio::task::JoinHandle<()>>,
    /// The functions and triggers the node runs at start: the project's, or what is deployed.
    deployed: Project,
    /// The project's functions, loaded, to start (without --registry, on workers).
    loaded: Vec<(FunctionConfig, PullConsumer, Arc<dyn Runtime>)>,
}

/// Connects to NATS (starting the embedded server when none is configured), sets up the
/// streams and the runtimes; with --registry, also starts what is deployed.
async fn start(
    ctx: &Context,
    project: &Project,
    server: &mut Option<EmbeddedNats>,
    roles: node::Roles,
    from_registry: bool,
    shutdown: CancellationToken,
    logs_shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    let url = match ctx.configured_nats(&project.settings) {
        Some(url) => url,
        None => match embedded::discover(&ctx.dir) {
            Some(url) => {
                // Its server stops with it; workers that must outlive each other share a
                // configured server instead.
                return Err(UsageError::new(format!(
                    "another `sluice up` is already running in {} (embedded NATS at {url}); stop it first, \
                     or run several workers against one server with --nats URL",
                    ctx.dir.display()
                ))
                .into());
            }
            None => {
                let started = EmbeddedNats::start(&ctx.dir)?;
                info!(url = %started.url(), store = %ctx.dir.join(".sluice/nats").display(), "Started the embedded NATS server.");
                let url = started.url().to_owned();
                *server = Some(started);
                url
            }
        },
    };
    let bus = Bus::connect(&url, &project.settings.bus, StreamSetup::CreateOrUpdate).await?;
    let registry = if from_registry {
        let registry = Registry::open(&bus, true).await?.ok_or_else(|| anyhow::anyhow!("cannot open the registry"))?;
        Some(registry)
    } else {
        None
    };

    let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let local_memory = project.functions.iter().filter(|f| f.config.runtime == crate::config::RuntimeKind::Wasm).map(|f| f.config.memory_mb).max();
    // Deployed functions arrive later: size the sandboxes' slots for any reasonable one.
    let max_memory_mb = if from_registry { REGISTRY_MAX_MEMORY_MB } else { local_memory.unwrap_or(128) };
    let wasm = WasmHost::new(HostConfig {
        max_concurrent: project.settings.runtime.max_concurrent.unwrap_or(2 * cpus),
        max_memory_mb,
        cache_dir: project.cache_dir(),
        buckets_dir: Some(project.buckets_dir()),
    })?;
    let hosts = Hosts::new(wasm, project.lambda_host_config());
    let (logs, logs_task) = if roles.workers {
        let (logs, task) = LogSink::start(bus.clone(), logs_shutdown);
        (Some(logs), Some(task))
    } else {
        (None, None)
    };
    let mut node = node::Node::new(bus, roles, project.clone(), hosts, logs, shutdown);
    let deployed = match &registry {
        Some(registry) => {
            if !project.functions.is_empty() || !project.triggers.is_empty() {
                warn!(dir = %project.dir.display(), "Running what is deployed in the registry (--registry); the project's functions/ and triggers/ folders are not run.");
            }
            node.reconcile(registry).await.context("starting what is deployed")?
        }
        None => project.clone(),
    };
    let mut loaded = Vec::new();
    if registry.is_none() && roles.workers {
        for def in &project.functions {
            let (consumer, function) = node.load(def, false).await?;
            loaded.push((def.config.clone(), consumer, function));
        }
    }
    Ok(Started { url, node, registry, logs_task, deployed, loaded })
}

/// The largest memory a wasm function deployed to a --registry node may ask for, in MiB.
const REGISTRY_MAX_MEMORY_MB: u32 = 1024;

/// How long the last acknowledgements may take to leave at shutdown.
const FLUSH_BOUND: Duration = Duration::from_secs(2);

/// The longest a graceful shutdown waits: the longest function timeout (an invocation that
/// started just before the signal), the pull in progress, and time to store outcomes.
pub fn drain_bound(timeouts: impl Iterator<Item = Duration>) -> Duration {
    timeouts.max().unwrap_or_default() + Duration::from_secs(10)
}

/// Removes stored bodies (claim checks) whose messages are gone, until shutdown.
async fn sweep_payloads(bus: Bus, events_max_age: Duration, shutdown: CancellationToken) {
    let period = crate::bus::payload::sweep_period(events_max_age);
    loop {
        match bus.sweep_payloads(events_max_age).await {
            Ok(0) => {}
            Ok(removed) => info!(removed, "Removed stored bodies of events past their retention."),
            Err(error) => warn!(error = %format!("{error:#}"), "Cannot sweep stored bodies; trying again later."),
        }
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn embedded_failure(server: Option<&mut EmbeddedNats>) -> String {
    match server {
        Some(server) => server.failed().await,
        None => std::future::pending().await,
    }
}

/// SIGINT and SIGTERM, listened for from the moment `up` starts.
struct Stop {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
}

impl Stop {
    fn listen() -> Self {
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(error) => {
                warn!(%error, "Cannot listen for {name}; stop with the other signal.");
                None
            }
        };
        Self { interrupt: listen(SignalKind::interrupt(), "SIGINT"), terminate: listen(SignalKind::terminate(), "SIGTERM") }
    }

    /// Waits for the next signal.
    async fn next(&mut self) {
        async fn recv(signal: Option<&mut Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(self.interrupt.as_mut()) => {}
            () = recv(self.terminate.as_mut()) => {}
        }
    }
}
