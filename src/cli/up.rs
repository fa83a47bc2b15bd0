//! `sluice up`: run every function of the project until SIGINT/SIGTERM.
//!
//! With no NATS configured, starts an embedded `nats-server` (or joins the one another
//! `sluice up` in the same directory runs). Shutdown stops fetching, lets in-flight
//! invocations finish (bounded by each function's timeout) and acks what finished; events
//! not yet fetched stay in JetStream for the next start.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Context;
use crate::bus::embedded::{self, EmbeddedNats};
use crate::bus::{Bus, StreamSetup};
use crate::config::ConfigError;
use crate::error::UsageError;
use crate::dispatch::Dispatcher;
use crate::runtime::wasm::{HostConfig, WasmHost};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(ctx: &Context, _args: Args) -> anyhow::Result<ExitCode> {
    let project = ctx.project()?;

    // Started here, on the main thread: the server is tied to the lifetime of this thread.
    let mut server: Option<EmbeddedNats> = None;
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
                server = Some(started);
                url
            }
        },
    };
    let bus = Bus::connect(&url, &project.settings.bus, StreamSetup::CreateOrUpdate).await?;

    let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let host = WasmHost::new(HostConfig {
        max_concurrent: project.settings.runtime.max_concurrent.unwrap_or(2 * cpus),
        max_memory_mb: project.functions.iter().map(|f| f.config.memory_mb).max().unwrap_or(128),
        cache_dir: project.cache_dir(),
        buckets_dir: Some(project.buckets_dir()),
    })?;

    let shutdown = CancellationToken::new();
    let mut dispatchers = JoinSet::new();
    for def in &project.functions {
        let function = host
            .load(&def.config, &def.module_path)
            .map_err(|e| ConfigError::new(&def.path, Some("module"), format!("{e:#}")))?;
        let consumer = bus.function_consumer(&def.config).await?;
        let dispatcher = Dispatcher::new(bus.clone(), Arc::new(def.config.clone()), Arc::new(function));
        dispatchers.spawn(dispatcher.run(consumer, shutdown.clone()));
    }
    let mut triggers = JoinSet::new();
    for def in &project.triggers {
        let trigger = crate::triggers::build(def, &project).map_err(|e| ConfigError::new(&def.path, None, format!("{e:#}")))?;
        let ctx = crate::triggers::TriggerContext { name: def.name.clone(), bus: bus.clone(), shutdown: shutdown.clone() };
        let name = def.name.clone();
        triggers.spawn(async move {
            if let Err(error) = trigger.run(ctx).await {
                warn!(trigger = %name, error = %format!("{error:#}"), "Trigger stopped.");
            }
        });
    }
    if project.functions.is_empty() {
        warn!(dir = %project.dir.join("functions").display(), "No functions found; add functions/<name>/function.toml.");
    }
    let names: Vec<&str> = project.functions.iter().map(|f| f.config.name.as_str()).collect();
    let trigger_names: Vec<&str> = project.triggers.iter().map(|t| t.name.as_str()).collect();
    println!(
        "Sluice is up: {} function(s) [{}], {} trigger(s) [{}] on {url}. Press Ctrl-C to stop.",
        names.len(),
        names.join(", "),
        trigger_names.len(),
        trigger_names.join(", ")
    );
    let _ = std::io::stdout().flush();

    wait_for_signal().await;
    info!("Shutting down: no new events are fetched; in-flight invocations finish.");
    shutdown.cancel();
    while triggers.join_next().await.is_some() {}
    while dispatchers.join_next().await.is_some() {}
    if let Err(error) = bus.client.flush().await {
        warn!(%error, "Cannot flush the last acknowledgements; JetStream will redeliver those events.");
    }
    drop(server);
    info!("Stopped.");
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            warn!(%error, "Cannot listen for SIGTERM; stop with Ctrl-C.");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
