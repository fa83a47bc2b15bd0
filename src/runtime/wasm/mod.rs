//! The `wasm` runtime: WASI preview-1 command modules on wasmtime.
//!
//! ABI: the event data arrives on stdin, the invocation context in `SLUICE_*` environment
//! variables (plus the function's own `env`), the response is the JSON written to stdout
//! (empty stdout is `null`), stderr lines are the function's logs, and exit status 0 is
//! success. Each invocation gets a fresh instance (no state survives between events) and no
//! sockets; the only files it sees are the local buckets granted in `buckets`, each mounted
//! at `/buckets/<name>` read-only or read-write. Memory is capped at `memory_mb`, time at `timeout`
//! (epoch interruption), and host-wide at most `max_concurrent` sandboxes run at once.

pub mod cache;
pub mod engine;
pub(crate) mod output;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use wasmtime::{Engine, InstancePre, Linker, Module, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use self::output::CappedOutput;
use super::{FailureKind, Invocation, InvokeError, Response, Runtime};
use crate::config::FunctionConfig;

/// Largest response a function may write to stdout (Lambda's synchronous payload limit).
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
/// Log output kept per invocation; the rest is cut with a note.
pub const MAX_LOG_BYTES: usize = 256 * 1024;
const MIB: usize = 1024 * 1024;

/// Host-wide settings of the wasm runtime.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Sandboxes running at once on this node.
    pub max_concurrent: usize,
    /// Largest memory any function may use, in MiB (sizes the instance pool's slots).
    pub max_memory_mb: u32,
    /// Precompiled-module cache.
    pub cache_dir: PathBuf,
    /// The project's local buckets (`buckets/`), where granted buckets are mounted from;
    /// `None` where there is no project (benchmarks).
    pub buckets_dir: Option<PathBuf>,
}

/// The engine, the WASI linker and the host-wide concurrency limit, shared by all functions.
#[derive(Clone)]
pub struct WasmHost {
    engine: Engine,
    linker: Arc<Linker<State>>,
    cache_dir: PathBuf,
    buckets_dir: Option<PathBuf>,
    slots: Arc<Semaphore>,
    /// Compiled modules in use, by cache file: functions deployed from the same artifact
    /// share one copy of its code (each load maps its own, about the compiled size in RSS).
    modules: Arc<std::sync::Mutex<HashMap<PathBuf, Weak<Module>>>>,
}

impl WasmHost {
    pub fn new(config: HostConfig) -> anyhow::Result<Self> {
        let max_concurrent = config.max_concurrent.max(1);
        let limits = engine::EngineLimits {
            instances: u32::try_from(engine::pool_slots(max_concurrent)).unwrap_or(u32::MAX),
            max_memory_bytes: (config.max_memory_mb.max(1) as usize).saturating_mul(MIB),
        };
        let engine = engine::build(limits).map_err(|e| anyhow::anyhow!("{e:?}")).context("creating the wasm engine")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |state: &mut State| &mut state.wasi)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .context("adding WASI to the linker")?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            cache_dir: config.cache_dir,
            buckets_dir: config.buckets_dir,
            slots: Arc::new(Semaphore::new(max_concurrent)),
            modules: Arc::default(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The host-wide limit on sandboxes running at once, which components share.
    pub(crate) fn slots(&self) -> Arc<Semaphore> {
        self.slots.clone()
    }

    pub(crate) fn cache_dir(&self) -> &std::path::Path {
        &self.cache_dir
    }

    /// Compiles (or loads from the cache) and links a function's module.
    pub fn load(&self, config: &FunctionConfig, module_path: &std::path::Path) -> anyhow::Result<WasmFunction> {
        let bytes = std::fs::read(module_path)
            .with_context(|| format!("reading the module {}", module_path.display()))?;
        self.load_bytes(config, &bytes)
            .with_context(|| format!("function {}: module {}", config.name, module_path.display()))
    }

    /// Like [`WasmHost::load`] from bytes in memory.
    pub fn load_bytes(&self, config: &FunctionConfig, bytes: &[u8]) -> anyhow::Result<WasmFunction> {
        let started = Instant::now();
        let module = self.module(bytes)?;
        let function = self.link(config, module)?;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(WARM - 1);
        function.inner.init_micros.store(micros, Ordering::Relaxed);
        Ok(function)
    }

    /// The compiled module of `bytes`: the one already in use when another function runs the
    /// same artifact, else loaded from the cache (compiled on a miss).
    fn module(&self, bytes: &[u8]) -> anyhow::Result<Arc<Module>> {
        let key = cache::cache_path(&self.engine, &self.cache_dir, bytes);
        if let Some(module) = self.modules.lock().ok().and_then(|modules| modules.get(&key).and_then(Weak::upgrade)) {
            return Ok(module);
        }
        let module = Arc::new(cache::load_at::<Module>(&self.engine, &key, bytes)?);
        if let Ok(mut modules) = self.modules.lock() {
            modules.retain(|_, module| module.strong_count() > 0);
            modules.insert(key, Arc::downgrade(&module));
        }
        Ok(module)
    }

    /// Links an already compiled module.
    pub fn link(&self, config: &FunctionConfig, module: Arc<Module>) -> anyhow::Result<WasmFunction> {
        if module.get_export("_start").is_none() {
            anyhow::bail!("the module exports no `_start`: build it as a WASI command (a program with `main`), e.g. for target wasm32-wasip1");
        }
        let pre = self.linker.instantiate_pre(&module).map_err(|e| anyhow::anyhow!("{e:?}")).context(
            "linking the module: it imports something other than WASI preview 1 (wasi_snapshot_preview1)",
        )?;
        let mut env: Vec<(String, String)> = config.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        env.push(("SLUICE_FUNCTION".into(), config.name.clone()));
        env.push(("SLUICE_MEMORY_MB".into(), config.memory_mb.to_string()));
        let mounts = self.mounts(config)?;
        Ok(WasmFunction {
            inner: Arc::new(Inner {
                name: config.name.clone(),
                pre,
                module,
                env,
                mounts,
                memory_limit: (config.memory_mb as usize).saturating_mul(MIB),
                memory_mb: config.memory_mb,
                timeout: config.timeout,
                init_micros: AtomicU64::new(0),
            }),
            slots: self.slots.clone(),
        })
    }
}

impl WasmHost {
    /// The host folders of a function's bucket grants, created if missing.
    pub(crate) fn mounts(&self, config: &FunctionConfig) -> anyhow::Result<Vec<Mount>> {
        let grants = config.bucket_grants();
        if grants.is_empty() {
            return Ok(Vec::new());
        }
        let Some(dir) = &self.buckets_dir else {
            anyhow::bail!("function {}: bucket grants need a project folder with buckets/", config.name);
        };
        grants
            .into_iter()
            .map(|grant| {
                let host = dir.join(&grant.bucket);
                std::fs::create_dir_all(&host)
                    .with_context(|| format!("creating the bucket folder {} granted to {}", host.display(), config.name))?;
                let perms = if grant.writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
                Ok(Mount { host, guest: grant.guest_path(), perms })
            })
            .collect()
    }
}

/// A host folder visible in the sandbox.
pub(crate) struct Mount {
    pub(crate) host: PathBuf,
    pub(crate) guest: String,
    pub(crate) perms: FsPerms,
}

/// A function ready to run: its linked module and limits.
#[derive(Clone)]
pub struct WasmFunction {
    inner: Arc<Inner>,
    slots: Arc<Semaphore>,
}

struct Inner {
    name: String,
    pre: InstancePre<State>,
    /// Keeps the module shared while this function runs it ([`WasmHost::module`]).
    #[allow(dead_code)] // held, never read
    module: Arc<Module>,
    /// The function's own env plus the per-function context variables.
    env: Vec<(String, String)>,
    mounts: Vec<Mount>,
    memory_limit: usize,
    memory_mb: u32,
    timeout: std::time::Duration,
    /// Microseconds the module took to load, until its first invocation takes them (the
    /// cold start); then [`WARM`].
    init_micros: AtomicU64,
}

const WARM: u64 = u64::MAX;

/// Per-invocation store data.
pub struct State {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

/// Caps linear memory at `memory_mb`, remembering the peak and whether the cap was hit. The
/// cap is on the sum of an instance's memories: a component has several (its interpreter's
/// and its adapters').
pub(crate) struct MemoryLimiter {
    limit: usize,
    total: usize,
    pub(crate) peak: usize,
    /// The total a refused growth asked for.
    pub(crate) refused: Option<usize>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: usize) -> Self {
        Self { limit, total: 0, peak: 0, refused: None }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = (self.total.saturating_sub(current)).saturating_add(desired);
        if total > self.limit || maximum.is_some_and(|max| desired > max) {
            self.refused = Some(total);
            return Ok(false);
        }
        self.total = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000 && maximum.is_none_or(|max| desired <= max))
    }
}

impl WasmFunction {
    /// Runs one invocation to completion on the current (non-async) thread, bypassing the
    /// host-wide limit: for benchmarks and tools.
    pub fn invoke_on_this_thread(&self, handle: &tokio::runtime::Handle, invocation: &Invocation) -> Result<Response, InvokeError> {
        handle.block_on(self.inner.run(invocation))
    }
}

impl Runtime for WasmFunction {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Result<Response, InvokeError>> {
        Box::pin(async move {
            let platform = |message: String| InvokeError {
                kind: FailureKind::Platform,
                message,
                error_type: None,
                logs: Vec::new(),
                duration: std::time::Duration::ZERO,
                init: None,
            };
            let permit = self
                .slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| platform("the runtime is shutting down".into()))?;
            let _permit = permit;
            // Guest code runs on the async workers and yields every few epoch ticks, so a long
            // function shares its thread with the NATS I/O instead of blocking it.
            let init = match self.inner.init_micros.load(Ordering::Relaxed) {
                WARM => None,
                _ => match self.inner.init_micros.swap(WARM, Ordering::Relaxed) {
                    WARM => None,
                    micros => Some(std::time::Duration::from_micros(micros)),
                },
            };
            let mut result = self.inner.run(&invocation).await;
            match &mut result {
                Ok(response) => response.init = init,
                Err(error) => error.init = init,
            }
            result
        })
    }
}

impl Inner {
    async fn run(&self, invocation: &Invocation) -> Result<Response, InvokeError> {
        let started = Instant::now();
        let event = &invocation.event;
        let stdout = CappedOutput::new(MAX_RESPONSE_BYTES);
        let stderr = CappedOutput::new(MAX_LOG_BYTES);
        // The clock starts when the sandbox does, not while the event waited for a slot.
        let deadline = SystemTime::now() + self.timeout;
        let deadline_ms = deadline.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdin(MemoryInputPipe::new(event.data.clone()))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(&[self.name.as_str()])
            .envs(&self.env)
            .env("SLUICE_REQUEST_ID", &invocation.request_id)
            .env("SLUICE_ATTEMPT", invocation.attempt.to_string())
            .env("SLUICE_DEADLINE_MS", deadline_ms.to_string())
            .env("SLUICE_EVENT_ID", &event.id)
            .env("SLUICE_EVENT_TYPE", &event.ty)
            .env("SLUICE_EVENT_SOURCE", &event.source)
            .env("SLUICE_EVENT_TIME", event.time.to_rfc3339())
            .env("SLUICE_TRACEPARENT", &event.traceparent);
        if let Some(subject) = &event.subject {
            wasi.env("SLUICE_EVENT_SUBJECT", subject);
        }
        for mount in &self.mounts {
            if let Err(error) = wasi.preopened_dir(&mount.host, &mount.guest, mount.perms) {
                let message = format!("cannot mount {} at {}: {error}", mount.host.display(), mount.guest);
                return Err(InvokeError { kind: FailureKind::Platform, message, error_type: None, logs: Vec::new(), duration: started.elapsed(), init: None });
            }
        }
        let state = State {
            wasi: wasi.build_p1(),
            limiter: MemoryLimiter::new(self.memory_limit),
        };
        let mut store = Store::new(self.pre.module().engine(), state);
        store.limiter(|state| &mut state.limiter);
        let _ticking = engine::yield_every_few_ticks(&mut store);

        // The timer stops a function at its timeout, whether it is running guest code (which
        // yields every few epoch ticks) or blocked in a host call (a sleep): the call is dropped.
        let mut memory_bytes = 0usize;
        let run = async {
            let instance = self.pre.instantiate_async(&mut store).await.map_err(|e| (e, true))?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start").map_err(|e| (e, true))?;
            let result = start.call_async(&mut store, ()).await;
            if let Some(memory) = instance.get_memory(&mut store, "memory") {
                memory_bytes = memory.data_size(&store);
            }
            result.map_err(|e| (e, false))
        };
        let outcome = match tokio::time::timeout(self.timeout, run).await {
            Ok(outcome) => outcome,
            Err(_elapsed) => Err((wasmtime::Error::new(Trap::Interrupt), false)),
        };
        let refused = store.data().limiter.refused;
        memory_bytes = memory_bytes.max(store.data().limiter.peak);
        drop(store);

        let duration = started.elapsed();
        let mut logs = split_logs(&stderr.contents());
        if stderr.overflowed() {
            logs.push(format!("[sluice] log output past {MAX_LOG_BYTES} bytes was dropped ({} bytes in all)", stderr.written()));
        }
        let fail = |kind: FailureKind, message: String, logs: Vec<String>| InvokeError { kind, message, error_type: None, logs, duration, init: None };

        if let Err((error, instantiating)) = outcome {
            let exit = error.downcast_ref::<I32Exit>().map(|e| e.0);
            if exit != Some(0) {
                return Err(self.classify(&error, exit, instantiating, refused, logs, duration));
            }
        }
        if stdout.overflowed() {
            return Err(fail(
                FailureKind::ResponseTooLarge,
                format!(
                    "the response is {} bytes, over the limit of {MAX_RESPONSE_BYTES} bytes ({} MiB)",
                    stdout.written(),
                    MAX_RESPONSE_BYTES / MIB
                ),
                logs,
            ));
        }
        let output = stdout.contents();
        let body = trim_ascii(&output);
        let body = if body.is_empty() { Bytes::from_static(b"null") } else { output.slice_ref(body) };
        if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            let preview: String = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
            return Err(fail(
                FailureKind::InvalidResponse,
                format!("stdout is not JSON ({error}); it starts with {preview:?}"),
                logs,
            ));
        }
        Ok(Response { body, logs, duration, memory_bytes: memory_bytes as u64, init: None })
    }

    #[allow(clippy::too_many_arguments)]
    fn classify(
        &self,
        error: &wasmtime::Error,
        exit: Option<i32>,
        instantiating: bool,
        refused: Option<usize>,
        logs: Vec<String>,
        duration: std::time::Duration,
    ) -> InvokeError {
        // The last two meaningful lines: a Rust panic prints "panicked at FILE:LINE:" and
        // then the message, followed by a hint about RUST_BACKTRACE.
        let mut tail: Vec<&str> = logs
            .iter()
            .rev()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
            .take(2)
            .collect();
        tail.reverse();
        let last_log = (!tail.is_empty()).then(|| tail.join(" "));
        let with_log = |message: String| match &last_log {
            Some(line) => format!("{message} (last log: {line})"),
            None => message,
        };
        let (kind, message) = if let Some(code) = exit {
            (FailureKind::Handler, with_log(format!("the function exited with status {code}")))
        } else if let Some(desired) = refused {
            (
                FailureKind::MemoryLimit,
                format!(
                    "the function tried to grow its memory to {} MiB; the limit is memory_mb = {}",
                    desired.div_ceil(MIB),
                    self.memory_mb
                ),
            )
        } else if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            (
                FailureKind::Timeout,
                format!("the function ran past its timeout of {} and was stopped", humantime::format_duration(self.timeout)),
            )
        } else if instantiating {
            (FailureKind::Platform, format!("cannot instantiate the module: {}", error.root_cause()))
        } else {
            (FailureKind::Trap, with_log(format!("the function trapped: {}", error.root_cause())))
        };
        InvokeError { kind, message, error_type: None, logs, duration, init: None }
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Splits captured stderr into lines.
pub(crate) fn split_logs(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes).lines().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::event::Event;

    /// A guest that runs for microseconds keeps its thread until it ends. A store's first
    /// epoch deadline is 0, already passed: without setting one, every guest yielded at its
    /// first instruction and waited behind every other ready task before it could start.
    #[test]
    fn a_short_guest_runs_to_its_end_without_yielding() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let host = WasmHost::new(HostConfig { max_concurrent: 1, max_memory_mb: 16, cache_dir: dir.path().join("cache"), buckets_dir: None }).unwrap();
        let config: FunctionConfig = toml::from_str("name = \"noop\"\nruntime = \"wasm\"\nmodule = \"noop.wasm\"\n").unwrap();
        let function = host.load_bytes(&config, &crate::bench::noop::module(None).unwrap()).unwrap();
        let event = Arc::new(Event::new("test", "test", Bytes::from_static(b"{}")));
        runtime.block_on(async {
            const RUNS: usize = 20;
            let mut yielded = 0;
            for run in 0..RUNS {
                // On this one thread the task runs only if the invocation gives the thread away.
                let ran = Arc::new(AtomicBool::new(false));
                let flag = ran.clone();
                tokio::spawn(async move { flag.store(true, Ordering::Relaxed) });
                let invocation = Invocation { request_id: format!("r{run}"), attempt: 1, event: event.clone() };
                let response = function.invoke(invocation).await.unwrap();
                assert!(response.body.starts_with(b"{\"entered_ns\":"));
                if ran.load(Ordering::Relaxed) {
                    yielded += 1;
                }
                tokio::task::yield_now().await;
                assert!(ran.load(Ordering::Relaxed));
            }
            // Not 0: a guest descheduled by a busy machine for two epoch ticks yields, as it should.
            assert!(yielded < RUNS / 2, "{yielded} of {RUNS} invocations of a guest that runs for microseconds yielded");
        });
    }

    /// Functions deployed from one artifact share its compiled code; another artifact, or
    /// the same one once no function runs it, is loaded anew.
    #[test]
    fn functions_of_one_artifact_share_its_module() {
        let dir = tempfile::tempdir().unwrap();
        let host = WasmHost::new(HostConfig { max_concurrent: 1, max_memory_mb: 16, cache_dir: dir.path().join("cache"), buckets_dir: None }).unwrap();
        let config = |name: &str| -> FunctionConfig { toml::from_str(&format!("name = \"{name}\"\nruntime = \"wasm\"\nmodule = \"m.wasm\"\n")).unwrap() };
        let noop = crate::bench::noop::module(None).unwrap();
        let other = crate::bench::noop::module(Some(1)).unwrap();
        let a = host.load_bytes(&config("a"), &noop).unwrap();
        let b = host.load_bytes(&config("b"), &noop).unwrap();
        let c = host.load_bytes(&config("c"), &other).unwrap();
        assert!(Arc::ptr_eq(&a.inner.module, &b.inner.module));
        assert!(!Arc::ptr_eq(&a.inner.module, &c.inner.module));
        assert_eq!(b.inner.name, "b", "each function keeps its own configuration");
        assert_eq!(Arc::strong_count(&a.inner.module), 2);
        drop((a, b));
        let key = cache::cache_path(&host.engine, &dir.path().join("cache"), &noop);
        assert!(host.modules.lock().unwrap().get(&key).and_then(Weak::upgrade).is_none(), "no function holds it");
        let again = host.load_bytes(&config("d"), &noop).unwrap();
        assert_eq!(Arc::strong_count(&again.inner.module), 1);
        assert!(host.modules.lock().unwrap().get(&key).and_then(Weak::upgrade).is_some());
    }
}
