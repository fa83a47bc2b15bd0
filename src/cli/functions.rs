//! `sluice functions list`: what is deployed in the cluster's registry when there is one,
//! else the project's functions.

use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;

use super::output::{print_json, Table};
use super::Context;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the functions deployed in the cluster (version, runtime, size, who deployed
    /// them when), or the project's functions with runtime, subscriptions and limits when
    /// nothing is deployed or NATS is not configured.
    List {
        /// List the project's functions even when a registry exists.
        #[arg(long)]
        local: bool,
    },
}

/// One function in `--json` output.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    runtime: String,
    module: String,
    memory_mb: u32,
    timeout_ms: u128,
    concurrency: u32,
    max_attempts: u32,
    subscribe: Vec<String>,
    on_success: Option<String>,
}

pub async fn run(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::List { local } => {
            if !local {
                if let Some(deployed) = deployed(ctx).await? {
                    return list_deployed(ctx, &deployed);
                }
            }
            list(ctx)
        }
    }
}

/// One deployed function in `--json` output.
#[derive(Debug, Serialize)]
struct DeployedRow {
    name: String,
    version: u64,
    /// Every stored version, oldest first (`sluice rollback --to N`).
    versions: Vec<u64>,
    runtime: String,
    size: u64,
    files: usize,
    sha256: String,
    deployed_by: String,
    deployed_at: chrono::DateTime<chrono::Utc>,
    /// Who made this version current (a deploy or a rollback), and when.
    set_by: String,
    set_at: chrono::DateTime<chrono::Utc>,
    subscribe: Vec<String>,
}

/// The deployed functions, when a NATS server is configured (or a `sluice up` runs here)
/// and its registry exists.
async fn deployed(ctx: &Context) -> anyhow::Result<Option<Vec<DeployedRow>>> {
    let settings = ctx.settings()?;
    let url = match ctx.configured_nats(&settings) {
        Some(url) => url,
        None => match crate::bus::embedded::discover(&ctx.dir) {
            Some(url) => url,
            None => return Ok(None),
        },
    };
    let target = ctx.nats_target(&url, &settings)?;
    let bus = crate::bus::Bus::connect(&target, &settings.bus, crate::bus::StreamSetup::CreateMissing).await?;
    let Some(registry) = crate::registry::Registry::open(&bus, false).await? else { return Ok(None) };
    let mut rows = Vec::new();
    let mut versions = registry.all_versions(crate::registry::Kind::Function).await?;
    for deployed in registry.deployed(crate::registry::Kind::Function).await? {
        let manifest = deployed.manifest;
        let subscribe = toml::from_str::<crate::config::FunctionConfig>(&manifest.config).map(|c| c.subscribe).unwrap_or_default();
        rows.push(DeployedRow {
            versions: versions.remove(&manifest.name).unwrap_or_default(),
            name: manifest.name,
            version: manifest.version,
            runtime: manifest.runtime,
            size: manifest.size,
            files: manifest.files,
            sha256: manifest.sha256,
            deployed_by: manifest.deployed_by,
            deployed_at: manifest.deployed_at,
            set_by: deployed.current.set_by,
            set_at: deployed.current.set_at,
            subscribe,
        });
    }
    Ok(Some(rows))
}

fn list_deployed(ctx: &Context, rows: &[DeployedRow]) -> anyhow::Result<ExitCode> {
    if ctx.json {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("No functions are deployed in the cluster's registry; `sluice deploy` stores the project's (`--local` lists the project's).");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(vec!["NAME", "VERSION", "RUNTIME", "SIZE", "DEPLOYED BY", "DEPLOYED AT", "SUBSCRIBE"]);
    for row in rows {
        let mut version = row.version.to_string();
        if row.versions.last().is_some_and(|latest| *latest != row.version) {
            version.push_str(&format!(" (of {})", row.versions.last().copied().unwrap_or(row.version)));
        }
        table.row(vec![
            row.name.clone(),
            version,
            row.runtime.clone(),
            super::deploy::size(row.size),
            row.deployed_by.clone(),
            row.deployed_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            if row.subscribe.is_empty() { "-".to_owned() } else { row.subscribe.join(",") },
        ]);
    }
    println!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}

fn list(ctx: &Context) -> anyhow::Result<ExitCode> {
    let project = ctx.project()?;
    let rows: Vec<Row> = project
        .functions
        .iter()
        .map(|f| Row {
            name: f.config.name.clone(),
            runtime: f.config.runtime.to_string(),
            module: f.artifact().display().to_string(),
            memory_mb: f.config.memory_mb,
            timeout_ms: f.config.timeout.as_millis(),
            concurrency: f.config.concurrency,
            max_attempts: f.config.retry.max_attempts,
            subscribe: f.config.subscribe.clone(),
            on_success: f.config.on_success.clone(),
        })
        .collect();
    if ctx.json {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("No functions in {}: add functions/<name>/function.toml.", project.dir.join("functions").display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(vec!["NAME", "RUNTIME", "MEMORY", "TIMEOUT", "CONCURRENCY", "ATTEMPTS", "SUBSCRIBE"]);
    for (row, f) in rows.iter().zip(&project.functions) {
        let mut subscribe = if row.subscribe.is_empty() { "-".to_owned() } else { row.subscribe.join(",") };
        if let Some(topic) = &row.on_success {
            subscribe.push_str(&format!(" (on_success → {topic})"));
        }
        table.row(vec![
            row.name.clone(),
            row.runtime.clone(),
            format!("{} MB", row.memory_mb),
            humantime::format_duration(f.config.timeout).to_string(),
            row.concurrency.to_string(),
            row.max_attempts.to_string(),
            subscribe,
        ]);
    }
    println!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}
