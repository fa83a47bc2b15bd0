//! `sluice invoke FUNCTION [--event FILE|-]`: one local invocation, like `sam local invoke`.
//! Needs no NATS: the function runs in this process with its configured limits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;

use super::output::print_json;
use super::Context;
use crate::error::UsageError;
use crate::event::Event;
use crate::runtime::wasm::{HostConfig, WasmHost};
use crate::runtime::{Hosts, Invocation};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Function name (from functions/<name>/function.toml).
    pub function: String,
    /// Event file, or `-` for stdin. Default: `{}`.
    #[arg(long, value_name = "FILE")]
    pub event: Option<PathBuf>,
    /// Do not require the event to be JSON.
    #[arg(long)]
    pub raw: bool,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Output {
    function: String,
    request_id: String,
    outcome: &'static str,
    duration_ms: f64,
    memory_bytes: Option<u64>,
    response: Option<serde_json::Value>,
    error: Option<String>,
    /// Lambda's `errorType` of a failure, where the runtime knows it (`ValueError`,
    /// `Sandbox.Timedout`).
    error_type: Option<String>,
    logs: Vec<String>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let project = ctx.project()?;
    let Some(def) = project.function(&args.function) else {
        let names: Vec<&str> = project.functions.iter().map(|f| f.config.name.as_str()).collect();
        return Err(UsageError::new(format!(
            "no function named {:?} in {}; functions: {}",
            args.function,
            project.dir.join("functions").display(),
            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
        ))
        .into());
    };
    let data = read_event(&args)?;
    let wasm = WasmHost::new(HostConfig {
        max_concurrent: 1,
        max_memory_mb: def.config.memory_mb,
        cache_dir: project.cache_dir(),
        buckets_dir: Some(project.buckets_dir()),
    })?;
    // A Lambda function runs in one cold execution environment, stopped on exit.
    let hosts = Hosts::new(wasm, project.lambda_host_config());
    let function = hosts.load(def)?;
    let mut event = Event::new("sluice.invoke", "sluice.invoke", data);
    if args.raw {
        event.content_type = None;
    }
    let invocation = Invocation {
        request_id: uuid::Uuid::new_v4().to_string(),
        attempt: 1,
        event: Arc::new(event),
    };
    let request_id = invocation.request_id.clone();
    let result = function.invoke(invocation).await;
    let name = def.config.name.clone();

    if ctx.json {
        let output = match &result {
            Ok(r) => Output {
                function: name,
                request_id,
                outcome: "success",
                duration_ms: r.duration.as_secs_f64() * 1000.0,
                memory_bytes: Some(r.memory_bytes),
                response: serde_json::from_slice(&r.body).ok(),
                error: None,
                error_type: None,
                logs: r.logs.clone(),
            },
            Err(e) => Output {
                function: name,
                request_id,
                outcome: e.kind.label(),
                duration_ms: e.duration.as_secs_f64() * 1000.0,
                memory_bytes: None,
                response: None,
                error: Some(e.message.clone()),
                error_type: e.error_type.clone(),
                logs: e.logs.clone(),
            },
        };
        print_json(&output)?;
    } else {
        let (logs, duration) = match &result {
            Ok(r) => (&r.logs, r.duration),
            Err(e) => (&e.logs, e.duration),
        };
        for line in logs {
            eprintln!("{line}");
        }
        // Lambda runtimes print Lambda's own REPORT line among their logs.
        if !def.config.runtime.is_lambda() {
            let memory = result.as_ref().map_or(String::new(), |r| format!("  Memory: {} KB", r.memory_bytes / 1024));
            eprintln!(
                "REPORT RequestId: {request_id}  Duration: {:.2} ms{memory}  Outcome: {}",
                duration.as_secs_f64() * 1000.0,
                result.as_ref().map_or_else(|e| e.kind.label(), |_| "success")
            );
        }
        match &result {
            Ok(r) => println!("{}", String::from_utf8_lossy(&r.body)),
            Err(e) => eprintln!("error: function {name} failed: {e}"),
        }
    }
    Ok(if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn read_event(args: &Args) -> anyhow::Result<Bytes> {
    let (data, origin) = match &args.event {
        None => (b"{}".to_vec(), "the default event".to_owned()),
        Some(path) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading the event from stdin")?;
            (buf, "the event on stdin".to_owned())
        }
        Some(path) => (
            std::fs::read(path).map_err(|e| UsageError::new(format!("--event {}: cannot read it: {e}", path.display())))?,
            format!("--event {}", path.display()),
        ),
    };
    if !args.raw {
        if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&data) {
            return Err(UsageError::new(format!("{origin} is not valid JSON ({error}); fix it or pass --raw")).into());
        }
    }
    Ok(Bytes::from(data))
}
