//! `sluice deploy`, `sluice rollback` and `sluice undeploy`: the cluster's registry (like
//! `sam deploy`). Nodes started with `sluice up --registry` run what is deployed.

use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;

use super::output::{print_json, Table};
use super::Context;
use crate::bus::{Bus, StreamSetup};
use crate::config::{ConfigError, Project};
use crate::error::UsageError;
use crate::registry::{pack, DeployOutcome, Kind, Registry};

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// Functions and triggers to deploy, by name. Default: every function and trigger of
    /// the project. A trigger's functions must be deployed too (now or before).
    pub names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The function or trigger.
    pub name: String,
    /// The version to run again. Default: the version before the current one.
    #[arg(long, value_name = "N")]
    pub to: Option<u64>,
    /// Whether NAME is a function or a trigger, when it names both.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
}

#[derive(Debug, clap::Args)]
pub struct UndeployArgs {
    /// The function or trigger.
    pub name: String,
    /// Whether NAME is a function or a trigger, when it names both.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// Also delete the function's consumer: events published for it from now on are not
    /// kept for it (by default they wait, and a new deploy resumes where it stopped).
    #[arg(long)]
    pub delete_consumer: bool,
    /// Also purge the function's dead letters from SLUICE_DLQ.
    #[arg(long)]
    pub purge_dlq: bool,
}

/// The registry of the cluster `ctx` points at, created when missing.
async fn connect(ctx: &Context) -> anyhow::Result<(Bus, Registry)> {
    let settings = ctx.settings()?;
    let url = ctx.nats_url(&settings)?;
    let bus = Bus::connect(&url, &settings.bus, StreamSetup::CreateMissing).await?;
    let registry = Registry::open(&bus, true).await?.context("opening the registry")?;
    Ok((bus, registry))
}

pub async fn deploy(ctx: &Context, args: DeployArgs) -> anyhow::Result<ExitCode> {
    let project = ctx.project()?;
    let (functions, triggers) = select(&project, &args.names)?;
    let (bus, registry) = connect(ctx).await?;
    // A trigger whose function is neither deployed nor being deployed would start on no node.
    for trigger in &triggers {
        for function in trigger.config.required_functions() {
            if !functions.iter().any(|f| f.config.name == function) && registry.current(Kind::Function, &function).await?.is_none() {
                return Err(ConfigError::new(
                    &trigger.path,
                    Some("function"),
                    format!("function {function:?} is not deployed; deploy it with the trigger (`sluice deploy {function} {}`)", trigger.name),
                )
                .into());
            }
        }
    }
    let mut outcomes: Vec<DeployOutcome> = Vec::new();
    for def in functions {
        let name = &def.config.name;
        let config = std::fs::read_to_string(&def.path).with_context(|| format!("reading {}", def.path.display()))?;
        let folder = def.dir.clone();
        let packed = tokio::task::spawn_blocking(move || pack::pack(&folder))
            .await
            .context("packing")?
            .with_context(|| format!("packing function {name} ({})", def.dir.display()))?;
        if !ctx.json {
            eprintln!("deploy: function {name}: {} file(s), {}", packed.files, size(packed.bytes.len() as u64));
        }
        // Its consumer exists from the deploy on, as a Lambda event source mapping: events
        // published before a node runs it wait for it.
        bus.function_consumer(&def.config).await?;
        outcomes.push(registry.deploy(Kind::Function, name, &def.config.runtime.to_string(), &config, Some(packed)).await?);
    }
    for def in triggers {
        let config = std::fs::read_to_string(&def.path).with_context(|| format!("reading {}", def.path.display()))?;
        outcomes.push(registry.deploy(Kind::Trigger, &def.name, def.config.kind(), &config, None).await?);
    }
    if ctx.json {
        print_json(&outcomes)?;
        return Ok(ExitCode::SUCCESS);
    }
    if outcomes.is_empty() {
        println!("Nothing to deploy: the project has no functions or triggers.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(vec!["KIND", "NAME", "VERSION", "SIZE", "STATUS"]);
    for outcome in &outcomes {
        let status = if outcome.unchanged { "unchanged" } else { "deployed" };
        table.row(vec![outcome.kind.to_string(), outcome.name.clone(), outcome.version.to_string(), size(outcome.size), status.to_owned()]);
    }
    println!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}

/// The project's functions and triggers named in `names` (all when empty).
fn select<'a>(project: &'a Project, names: &[String]) -> Result<(Vec<&'a crate::config::FunctionDef>, Vec<&'a crate::triggers::TriggerDef>), UsageError> {
    if names.is_empty() {
        return Ok((project.functions.iter().collect(), project.triggers.iter().collect()));
    }
    let mut functions = Vec::new();
    let mut triggers = Vec::new();
    for name in names {
        let function = project.function(name);
        let trigger = project.triggers.iter().find(|t| &t.name == name);
        if function.is_none() && trigger.is_none() {
            return Err(UsageError::new(format!(
                "{name:?} is neither a function (functions/*/function.toml) nor a trigger (triggers/*.toml) of {}",
                project.dir.display()
            )));
        }
        functions.extend(function);
        triggers.extend(trigger);
    }
    Ok((functions, triggers))
}

/// Which kind `name` is in the registry: `kind` when given, else whichever is deployed.
async fn deployed_kind(registry: &Registry, name: &str, kind: Option<Kind>) -> anyhow::Result<Kind> {
    if let Some(kind) = kind {
        return Ok(kind);
    }
    let function = registry.current(Kind::Function, name).await?.is_some() || !registry.versions(Kind::Function, name).await?.is_empty();
    let trigger = registry.current(Kind::Trigger, name).await?.is_some() || !registry.versions(Kind::Trigger, name).await?.is_empty();
    match (function, trigger) {
        (true, true) => Err(UsageError::new(format!("{name:?} is both a deployed function and a deployed trigger: say which with --kind function or --kind trigger")).into()),
        (true, false) => Ok(Kind::Function),
        (false, true) => Ok(Kind::Trigger),
        (false, false) => Err(UsageError::new(format!("nothing named {name:?} is deployed (`sluice functions list` shows what is)")).into()),
    }
}

/// What a rollback did.
#[derive(Debug, Serialize)]
struct RolledBack {
    kind: Kind,
    name: String,
    from: Option<u64>,
    to: u64,
}

pub async fn rollback(ctx: &Context, args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let (_bus, registry) = connect(ctx).await?;
    let kind = deployed_kind(&registry, &args.name, args.kind).await?;
    let name = &args.name;
    let current = registry.current(kind, name).await?.map(|c| c.version);
    let versions = registry.versions(kind, name).await?;
    let to = match args.to {
        Some(to) => to,
        None => {
            let Some(current) = current else {
                return Err(UsageError::new(format!("{kind} {name} is not deployed now; name the version to run with --to N (stored: {})", list(&versions))).into());
            };
            let Some(previous) = versions.iter().rev().find(|v| **v < current) else {
                return Err(UsageError::new(format!("{kind} {name} has no version before {current} to roll back to")).into());
            };
            *previous
        }
    };
    let Some(manifest) = registry.manifest(kind, name, to).await? else {
        return Err(UsageError::new(format!("{kind} {name} has no version {to}; stored versions: {}", list(&versions))).into());
    };
    if kind == Kind::Trigger {
        let trigger = crate::triggers::TriggerConfig::parse(std::path::Path::new(&format!("{name}.toml")), &manifest.config)?;
        for function in trigger.required_functions() {
            if registry.current(Kind::Function, &function).await?.is_none() {
                return Err(UsageError::new(format!("version {to} of trigger {name} sends events to function {function:?}, which is not deployed; deploy it first")).into());
            }
        }
    }
    registry.set_current(&manifest, &crate::registry::whoami()).await?;
    let done = RolledBack { kind, name: name.clone(), from: current, to };
    if ctx.json {
        print_json(&done)?;
    } else {
        let from = current.map_or_else(|| "not deployed".to_owned(), |v| format!("version {v}"));
        println!("{kind} {name}: now version {to} (was {from}); nodes running --registry switch within seconds.");
    }
    Ok(ExitCode::SUCCESS)
}

/// What an undeploy did.
#[derive(Debug, Serialize)]
struct Undeployed {
    kind: Kind,
    name: String,
    versions_removed: usize,
    consumer_deleted: bool,
    dead_letters_purged: Option<u64>,
}

pub async fn undeploy(ctx: &Context, args: UndeployArgs) -> anyhow::Result<ExitCode> {
    let (bus, registry) = connect(ctx).await?;
    let kind = deployed_kind(&registry, &args.name, args.kind).await?;
    let name = &args.name;
    if kind == Kind::Trigger && (args.delete_consumer || args.purge_dlq) {
        return Err(UsageError::new("--delete-consumer and --purge-dlq apply to functions, not triggers").into());
    }
    if kind == Kind::Function {
        // A deployed trigger that sends to it would fail on every event.
        for trigger in registry.deployed(Kind::Trigger).await? {
            let config = crate::triggers::TriggerConfig::parse(std::path::Path::new(&format!("{}.toml", trigger.manifest.name)), &trigger.manifest.config)?;
            if config.required_functions().iter().any(|f| f == name) {
                return Err(UsageError::new(format!(
                    "deployed trigger {} sends events to function {name}; undeploy the trigger first (`sluice undeploy {}`)",
                    trigger.manifest.name, trigger.manifest.name
                ))
                .into());
            }
        }
    }
    let versions_removed = registry.remove(kind, name).await?;
    let mut consumer_deleted = false;
    if args.delete_consumer {
        let stream = bus.js.get_stream(crate::bus::EVENTS_STREAM).await.context("opening stream SLUICE_EVENTS")?;
        consumer_deleted = stream.delete_consumer(name).await.is_ok();
    }
    let mut dead_letters_purged = None;
    if args.purge_dlq {
        let dlq = crate::dlq::Dlq::open(&bus).await?;
        dead_letters_purged = Some(dlq.purge_all(Some(name)).await?);
    }
    let done = Undeployed { kind, name: name.clone(), versions_removed, consumer_deleted, dead_letters_purged };
    if ctx.json {
        print_json(&done)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{kind} {name}: undeployed ({versions_removed} version(s) removed); nodes stop running it within seconds.");
    if kind == Kind::Function {
        if consumer_deleted {
            println!("Its consumer is deleted: events published from now on are not kept for it.");
        } else {
            println!("Its consumer is kept: events published meanwhile wait for a new deploy (`--delete-consumer` removes it).");
        }
        match dead_letters_purged {
            Some(purged) => println!("{purged} dead letter(s) purged."),
            None => println!("Its dead letters are kept (`sluice dlq list --function {name}`; `--purge-dlq` removes them)."),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(versions: &[u64]) -> String {
    if versions.is_empty() {
        "none".to_owned()
    } else {
        versions.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    }
}

/// `1.2 MB`, `340 KB`, `12 B`.
pub fn size(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{} KB", bytes / 1_000),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}
