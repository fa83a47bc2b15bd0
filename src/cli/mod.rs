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

use crate::bus::NatsTarget;
use crate::config::{ConfigError, Project, Settings};

/// Sluice: serverless functions on your own machines, driven by events on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, propagate_version = true)]
pub struct Cli {
    /// NATS server URL. Default: `[nats] url` in sluice.toml, else the embedded server of a
    /// `sluice up` running in the project directory.
    #[arg(long, global = true, env = "SLUICE_NATS_URL", value_name = "URL")]
    pub nats: Option<String>,
    #[command(flatten)]
    pub nats_auth: NatsArgs,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Project directory (holding functions/, triggers/, sluice.toml).
    #[arg(long, global = true, env = "SLUICE_DIR", default_value = ".", value_name = "DIR")]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

/// How to authenticate to NATS and TLS; each overrides the same field of `[nats]` in
/// sluice.toml (see docs/nats.md). Secrets are never shown, not even in `--help`.
#[derive(Clone, Default, clap::Args)]
pub struct NatsArgs {
    /// NATS user name (with --nats-password). Default: [nats] user.
    #[arg(long = "nats-user", global = true, env = "SLUICE_NATS_USER", value_name = "USER")]
    pub user: Option<String>,
    /// NATS password of --nats-user (better given in SLUICE_NATS_PASSWORD than on the
    /// command line). Default: [nats] password.
    #[arg(long = "nats-password", global = true, env = "SLUICE_NATS_PASSWORD", hide_env_values = true, value_name = "PASSWORD")]
    pub password: Option<String>,
    /// NATS authentication token. Default: [nats] token.
    #[arg(long = "nats-token", global = true, env = "SLUICE_NATS_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// NKey seed file to authenticate with. Default: [nats] nkey.
    #[arg(long = "nats-nkey", global = true, env = "SLUICE_NATS_NKEY", value_name = "FILE")]
    pub nkey: Option<PathBuf>,
    /// `.creds` file (user JWT and seed) to authenticate with. Default: [nats] creds.
    #[arg(long = "nats-creds", global = true, env = "SLUICE_NATS_CREDS", value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// PEM file of the CA that signed the server's certificate. Default: [nats] tls_ca.
    #[arg(long = "nats-tls-ca", global = true, env = "SLUICE_NATS_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate (with --nats-tls-key). Default: [nats] tls_cert.
    #[arg(long = "nats-tls-cert", global = true, env = "SLUICE_NATS_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM key of --nats-tls-cert. Default: [nats] tls_key.
    #[arg(long = "nats-tls-key", global = true, env = "SLUICE_NATS_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl NatsArgs {
    /// As the fields of `[nats]`, to layer over sluice.toml's.
    fn settings(&self) -> crate::config::NatsSettings {
        crate::config::NatsSettings {
            url: None,
            user: self.user.clone(),
            password: self.password.clone(),
            token: self.token.clone(),
            nkey: self.nkey.clone(),
            creds: self.creds.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        }
    }
}

/// Secrets are not shown.
impl std::fmt::Debug for NatsArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.settings().fmt(f)
    }
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

    /// Where a command that runs functions the way `sluice up` does writes what a node logs
    /// at `sluice up`'s level: `sluice bench`, into its temporary directory.
    pub fn node_log(&self) -> Option<std::path::PathBuf> {
        match self.command {
            Command::Bench(_) => Some(bench::work_dir().join("node.log")),
            _ => None,
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = Context { nats: cli.nats, nats_auth: cli.nats_auth, json: cli.json, dir: cli.dir };
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
    /// Authentication and TLS from flags and `SLUICE_NATS_*`.
    pub nats_auth: NatsArgs,
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

    /// The configured server at `url` with the credentials and TLS files of sluice.toml,
    /// `SLUICE_NATS_*` and `--nats-*`, layered and checked.
    pub fn nats_target(&self, url: &str, settings: &Settings) -> anyhow::Result<NatsTarget> {
        NatsTarget::resolve(url, &settings.nats, &self.nats_auth.settings(), &self.dir)
    }

    /// Where to reach NATS: the configured server (with its credentials), else a
    /// `sluice up`'s embedded server.
    pub fn nats_connection(&self, settings: &Settings) -> anyhow::Result<NatsTarget> {
        if let Some(url) = self.configured_nats(settings) {
            return self.nats_target(&url, settings);
        }
        let url = crate::bus::embedded::discover(&self.dir).ok_or_else(|| {
            anyhow::anyhow!(
                "no NATS server: none is configured (--nats, SLUICE_NATS_URL, [nats] url in sluice.toml) \
                 and no `sluice up` is running in {}; start `sluice up` there first",
                self.dir.display()
            )
        })?;
        Ok(NatsTarget::plain(&url))
    }
}
