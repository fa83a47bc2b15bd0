//! The `sluice` command line: one file per subcommand. Each command returns data that is
//! rendered once, as a table (or plain lines) for people or as JSON with `--json`.

mod bench;
mod build;
mod deploy;
mod dlq;
mod events;
mod generate;
mod functions;
mod invoke;
mod logs;
pub mod output;
mod publish;
mod stats;
mod triggers;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{ConfigError, Project, Settings};

/// Sluice: serverless functions on your own machines, driven by events on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, propagate_version = true)]
pub struct Cli {
    /// NATS server URL. Default: `[nats] url` in sluice.toml, else the embedded server of a
    /// `sluice up` running in the project directory.
    #[arg(long, global = true, env = "SLUICE_NATS_URL", value_name = "URL")]
    pub nats: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Project directory (holding functions/, triggers/, sluice.toml).
    #[arg(long, global = true, env = "SLUICE_DIR", default_value = ".", value_name = "DIR")]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run dispatchers and workers for every function in the project (starts an embedded
    /// NATS server when none is configured).
    Up(up::Args),
    /// Publish an event to a topic.
    Publish(publish::Args),
    /// Build functions by their runtime (cargo for wasm and Rust `bootstrap`s, the Lambda
    /// runtime clients and pip/npm dependencies for Python and Node.js), like `sam build`.
    Build(build::Args),
    /// Run one function locally on one event and print its response (no NATS needed).
    Invoke(invoke::Args),
    /// Store functions and triggers in the cluster's registry as new numbered versions, like
    /// `sam deploy`; nodes running `sluice up --registry` pick them up within seconds.
    Deploy(deploy::DeployArgs),
    /// Make an earlier version of a deployed function or trigger the current one again.
    Rollback(deploy::RollbackArgs),
    /// Remove a function or trigger from the registry; nodes stop running it.
    Undeploy(deploy::UndeployArgs),
    /// Inspect the project's functions.
    #[command(subcommand)]
    Functions(functions::Command),
    /// Inspect the project's triggers.
    #[command(subcommand)]
    Triggers(triggers::Command),
    /// Inspect, replay and purge dead letters.
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// Sample events for every trigger kind, and one event's life across the bus.
    #[command(subcommand)]
    Events(events::Command),
    /// Show what a function wrote, on every node, with a report per invocation (like
    /// `sam logs`).
    Logs(logs::Args),
    /// Invocations, errors, duration percentiles, cold starts, GB-seconds and the Lambda
    /// price of the same use, per function, from every node.
    Stats(stats::Args),
    /// Measure raw JetStream, bare wasmtime, Sluice end to end and cold starts in one run.
    Bench(bench::Args),
}

impl Cli {
    /// The log level when none is configured: `up` reports every invocation; one-shot
    /// commands keep stderr for warnings.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Up(_) => "info",
            _ => "warn",
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = Context { nats: cli.nats, json: cli.json, dir: cli.dir };
    match cli.command {
        Command::Up(args) => up::run(&ctx, args).await,
        Command::Publish(args) => publish::run(&ctx, args).await,
        Command::Invoke(args) => invoke::run(&ctx, args).await,
        Command::Build(args) => build::run(&ctx, args).await,
        Command::Deploy(args) => deploy::deploy(&ctx, args).await,
        Command::Rollback(args) => deploy::rollback(&ctx, args).await,
        Command::Undeploy(args) => deploy::undeploy(&ctx, args).await,
        Command::Functions(command) => functions::run(&ctx, command).await,
        Command::Bench(args) => bench::run(&ctx, args).await,
        Command::Dlq(command) => dlq::run(&ctx, command).await,
        Command::Triggers(command) => triggers::run(&ctx, command).await,
        Command::Logs(args) => logs::run(&ctx, args).await,
        Command::Events(command) => events::run(&ctx, command).await,
        Command::Stats(args) => stats::run(&ctx, args).await,
    }
}

/// Global options every command sees.
pub struct Context {
    pub nats: Option<String>,
    pub json: bool,
    pub dir: PathBuf,
}

impl Context {
    pub fn project(&self) -> Result<Project, ConfigError> {
        self.check_dir()?;
        Project::load(&self.dir)
    }

    /// The project without its functions' build outputs, for `sluice build`.
    pub fn project_sources(&self) -> Result<Project, ConfigError> {
        self.check_dir()?;
        Project::load_sources(&self.dir)
    }

    /// Only `sluice.toml`: for commands that talk to the bus but run no function.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        self.check_dir()?;
        Settings::load(&self.dir)
    }

    fn check_dir(&self) -> Result<(), ConfigError> {
        if self.dir.is_dir() {
            Ok(())
        } else {
            Err(ConfigError::new(&self.dir, None, "the project directory does not exist (check --dir)"))
        }
    }

    /// The configured NATS URL: `--nats`/`SLUICE_NATS_URL`, then `[nats] url` in sluice.toml.
    pub fn configured_nats(&self, settings: &Settings) -> Option<String> {
        self.nats.clone().or_else(|| settings.nats.url.clone())
    }

    /// A URL to reach NATS at: the configured one, else a `sluice up`'s embedded server.
    pub fn nats_url(&self, settings: &Settings) -> anyhow::Result<String> {
        if let Some(url) = self.configured_nats(settings) {
            return Ok(url);
        }
        crate::bus::embedded::discover(&self.dir).ok_or_else(|| {
            anyhow::anyhow!(
                "no NATS server: none is configured (--nats, SLUICE_NATS_URL, [nats] url in sluice.toml) \
                 and no `sluice up` is running in {}; start `sluice up` there first",
                self.dir.display()
            )
        })
    }
}
