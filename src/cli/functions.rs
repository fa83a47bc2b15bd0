//! `sluice functions list`.

use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;

use super::output::{print_json, Table};
use super::Context;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the project's functions with runtime, subscriptions and limits.
    List,
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

pub fn run(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::List => list(ctx),
    }
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
