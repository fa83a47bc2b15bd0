//! The Lambda runtimes' phase: cold start (an execution environment started, to its first
//! response) and warm invocations, for Python (awslambdaric) and Node.js (aws-lambda-ric),
//! each through the same pool `sluice up` uses, beside the wasm figures of the same run.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{percentile, progress, round3, Options};
use crate::config::{FunctionConfig, FunctionDef, RetryConfig, RuntimeKind};
use crate::event::Event;
use crate::runtime::lambda::{self, LambdaHost};
use crate::runtime::{Invocation, Runtime};

/// Cold starts per runtime.
const COLD_SAMPLES: usize = 10;
/// Warm invocations per runtime.
const WARM_SAMPLES: usize = 1000;

/// One runtime's figures.
#[derive(Debug, Serialize)]
pub struct LambdaRuntimeReport {
    pub runtime: String,
    /// Environment start to first response (process start, client init, first invocation).
    pub cold_start: super::Cold,
    /// Init Duration as REPORT gives it: process start to the runtime's first `next`.
    pub init: super::Cold,
    pub warm_invocations: usize,
    pub warm_p50_ms: f64,
    pub warm_p99_ms: f64,
}

/// The phase's report: one entry per runtime whose client is installed, and the runtimes
/// skipped with why.
#[derive(Debug, Serialize)]
pub struct LambdaReport {
    pub runtimes: Vec<LambdaRuntimeReport>,
    pub skipped: Vec<String>,
}

const PYTHON: &str = "def handler(event, context):\n    return event\n";
const NODE: &str = "exports.handler = async (event) => event;\n";

pub async fn run(options: &Options, tools_dir: &Path, work_dir: &Path) -> anyhow::Result<LambdaReport> {
    let host = LambdaHost::new(lambda::HostConfig { tools_dir: tools_dir.to_path_buf(), region: "us-east-1".into() });
    let mut report = LambdaReport { runtimes: Vec::new(), skipped: Vec::new() };
    for (runtime, file, source) in [(RuntimeKind::Python { minor: python_minor() }, "app.py", PYTHON), (RuntimeKind::Node { major: node_major() }, "app.js", NODE)] {
        let dir = work_dir.join(format!("lambda-{runtime}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(file), source)?;
        let def = definition(runtime, &dir);
        // Loading checks the interpreter and the client; a missing one skips the runtime.
        match host.load(&def) {
            Ok(function) => drop(function),
            Err(error) => {
                report.skipped.push(format!("{runtime}: {}", error.message));
                continue;
            }
        }
        report.runtimes.push(measure(&host, &def, options).await?);
    }
    Ok(report)
}

fn definition(runtime: RuntimeKind, dir: &Path) -> FunctionDef {
    let config = FunctionConfig {
        name: format!("bench-{}", runtime.to_string().replace('.', "-")),
        runtime,
        module: None,
        handler: Some("app.handler".into()),
        memory_mb: 256,
        timeout: Duration::from_secs(10),
        concurrency: 1,
        env: Default::default(),
        subscribe: Vec::new(),
        on_success: None,
        buckets: Vec::new(),
        retry: RetryConfig::default(),
        min_warm: 0,
        idle_timeout: Duration::from_secs(300),
    };
    FunctionDef { config, path: dir.join("function.toml"), dir: dir.to_path_buf(), module_path: None }
}

async fn measure(host: &LambdaHost, def: &FunctionDef, options: &Options) -> anyhow::Result<LambdaRuntimeReport> {
    let runtime = def.config.runtime.to_string();
    let bar = progress(options, COLD_SAMPLES + WARM_SAMPLES, &format!("lambda {runtime}"));
    let event = Arc::new(Event::new("sluice.bench", "sluice.bench", super::event_data(options.size)));
    let mut cold = Vec::with_capacity(COLD_SAMPLES);
    let mut init = Vec::with_capacity(COLD_SAMPLES);
    for i in 0..COLD_SAMPLES {
        // A new pool each time: its first invocation starts an environment.
        let function = host.load(def).map_err(|e| anyhow::anyhow!(e.message))?;
        let (elapsed, logs) = invoke(&function, &event, i).await?;
        cold.push(elapsed);
        if let Some(ms) = logs.iter().find_map(|l| init_duration_ms(l)) {
            init.push(Duration::from_secs_f64(ms / 1000.0));
        }
        bar.inc(1);
    }
    let function = host.load(def).map_err(|e| anyhow::anyhow!(e.message))?;
    invoke(&function, &event, 0).await?;
    let mut warm = Vec::with_capacity(WARM_SAMPLES);
    for i in 0..WARM_SAMPLES {
        warm.push(invoke(&function, &event, i).await?.0);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let stats = |mut times: Vec<Duration>| {
        times.sort();
        super::Cold { p50_ms: round3(percentile(&times, 0.50).as_secs_f64() * 1e3), p99_ms: round3(percentile(&times, 0.99).as_secs_f64() * 1e3) }
    };
    let warm_stats = stats(warm);
    Ok(LambdaRuntimeReport {
        runtime: def.config.runtime.to_string(),
        cold_start: stats(cold),
        init: stats(init),
        warm_invocations: WARM_SAMPLES,
        warm_p50_ms: warm_stats.p50_ms,
        warm_p99_ms: warm_stats.p99_ms,
    })
}

/// One invocation: how long it took and its log lines.
async fn invoke(function: &lambda::LambdaFunction, event: &Arc<Event>, i: usize) -> anyhow::Result<(Duration, Vec<String>)> {
    let invocation = Invocation { request_id: format!("bench-{i}"), attempt: 1, event: event.clone() };
    let started = Instant::now();
    let response = function.invoke(invocation).await.map_err(|e| anyhow::anyhow!("the handler failed: {e}"))?;
    Ok((started.elapsed(), response.logs))
}

/// `Init Duration: 83.20 ms` in a REPORT line.
fn init_duration_ms(line: &str) -> Option<f64> {
    let rest = line.split("Init Duration: ").nth(1)?;
    rest.split(' ').next()?.parse().ok()
}

/// The minor version of `python3` on PATH (the bench measures the Python you have).
fn python_minor() -> u32 {
    version_of("python3", &["-c", "import sys; print(sys.version_info[1])"]).unwrap_or(11)
}

fn node_major() -> u32 {
    version_of("node", &["-p", "process.versions.node.split('.')[0]"]).unwrap_or(20)
}

fn version_of(program: &str, args: &[&str]) -> Option<u32> {
    let output = std::process::Command::new(program).args(args).output().ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn init_durations_are_read_from_report_lines() {
        let line = "REPORT RequestId: x\tDuration: 1.20 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 20 MB\tInit Duration: 83.20 ms";
        assert_eq!(super::init_duration_ms(line), Some(83.2));
        assert_eq!(super::init_duration_ms("REPORT RequestId: x\tDuration: 1.20 ms"), None);
    }
}
