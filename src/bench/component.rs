//! The `component` runtime's phase: the example components (`hello-python-component`,
//! `hello-node-component`, the same handler files as the Lambda examples) built by
//! `sluice build`. Cold start: the precompiled component mapped from the cache, linked, and
//! its first event answered, as at a `sluice up` start; warm: further events (each in a
//! fresh instance, as always), beside the Lambda and wasm figures of the same run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use super::{percentile, progress, round3, Cold, Options};
use crate::config::FunctionConfig;
use crate::event::Event;
use crate::runtime::component::{ComponentFunction, ComponentHost};
use crate::runtime::wasm::WasmHost;
use crate::runtime::{Invocation, Runtime};

/// Cold starts per component.
const COLD_SAMPLES: usize = 20;
/// Warm invocations per component.
const WARM_SAMPLES: usize = 500;

/// One component's figures.
#[derive(Debug, Serialize)]
pub struct ComponentRuntimeReport {
    /// The example function measured.
    pub function: String,
    pub size_bytes: u64,
    /// Precompiled component mapped and linked, to its first response.
    pub cold_start: Cold,
    /// Of which mapping and linking.
    pub load: Cold,
    pub warm_invocations: usize,
    pub warm_p50_ms: f64,
    pub warm_p99_ms: f64,
}

/// The phase's report: one entry per example component built, and the ones skipped with why.
#[derive(Debug, Serialize)]
pub struct ComponentReport {
    pub components: Vec<ComponentRuntimeReport>,
    pub skipped: Vec<String>,
}

pub async fn run(options: &Options, host: &WasmHost) -> anyhow::Result<ComponentReport> {
    let components = ComponentHost::new(host, "us-east-1".into());
    let mut report = ComponentReport { components: Vec::new(), skipped: Vec::new() };
    for (name, path) in &options.components {
        if !path.is_file() {
            report.skipped.push(format!("{name}: {} is not built (`sluice build {name}`)", path.display()));
            continue;
        }
        // Deployed ahead, as `sluice build` does: not timed.
        components.precompile(path)?;
        report.components.push(measure(options, &components, name, path).await?);
    }
    Ok(report)
}

/// The example components of the project in `dir`, measured when built.
pub fn examples(dir: &std::path::Path) -> Vec<(String, PathBuf)> {
    ["hello-python-component", "hello-node-component"]
        .iter()
        .map(|name| ((*name).to_owned(), dir.join("functions").join(name).join(crate::runtime::component::BUILT_COMPONENT)))
        .collect()
}

async fn measure(options: &Options, host: &ComponentHost, name: &str, path: &Path) -> anyhow::Result<ComponentRuntimeReport> {
    let config: FunctionConfig = toml::from_str(&format!("name = {name:?}\nruntime = \"component\"\nmodule = \"component.wasm\"\nmemory_mb = 128\ntimeout = \"10s\"\n"))?;
    let event = Arc::new(Event::new("sluice.bench", "sluice.bench", Bytes::from_static(br#"{"name":"bench"}"#)));
    let bar = progress(options, COLD_SAMPLES + WARM_SAMPLES, &format!("component {name}"));
    let mut cold = Vec::with_capacity(COLD_SAMPLES);
    let mut load = Vec::with_capacity(COLD_SAMPLES);
    for i in 0..COLD_SAMPLES {
        let started = Instant::now();
        let function = host.load(&config, path)?;
        load.push(started.elapsed());
        invoke(&function, &event, i).await?;
        cold.push(started.elapsed());
        bar.inc(1);
    }
    let function = host.load(&config, path)?;
    invoke(&function, &event, 0).await?;
    let mut warm = Vec::with_capacity(WARM_SAMPLES);
    for i in 0..WARM_SAMPLES {
        let started = Instant::now();
        invoke(&function, &event, i).await?;
        warm.push(started.elapsed());
        bar.inc(1);
    }
    bar.finish_and_clear();
    let stats = |mut times: Vec<Duration>| {
        times.sort();
        Cold { p50_ms: round3(percentile(&times, 0.50).as_secs_f64() * 1e3), p99_ms: round3(percentile(&times, 0.99).as_secs_f64() * 1e3) }
    };
    let warm = stats(warm);
    Ok(ComponentRuntimeReport {
        function: name.to_owned(),
        size_bytes: std::fs::metadata(path)?.len(),
        cold_start: stats(cold),
        load: stats(load),
        warm_invocations: WARM_SAMPLES,
        warm_p50_ms: warm.p50_ms,
        warm_p99_ms: warm.p99_ms,
    })
}

async fn invoke(function: &ComponentFunction, event: &Arc<Event>, i: usize) -> anyhow::Result<()> {
    let invocation = Invocation { request_id: format!("bench-{i}"), attempt: 1, event: event.clone() };
    function.invoke(invocation).await.map_err(|e| anyhow::anyhow!("the component failed: {e}"))?;
    Ok(())
}
