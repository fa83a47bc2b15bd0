//! The `component` runtime: WebAssembly components exporting the Sluice world
//! (`wit/sluice.wit`) on wasmtime, with WASI preview 2.
//!
//! ABI: `handle(event, context) -> result<string, error>`. The event's data arrives as JSON
//! text, the context as a record (Lambda's context fields plus the event's attributes); the
//! answer is the response as JSON text, or an error with a kind, a type and a message.
//! Each invocation gets a fresh instance of the precompiled component (no state survives
//! between events); stdout and stderr, in the order written, are the function's log. Like
//! the `wasm` runtime: no sockets, no host environment (only the function's `env` and
//! Lambda's variables), no files but the buckets granted in `buckets`; memory is capped at
//! `memory_mb` across the component's memories, time at `timeout` (epoch interruption), and
//! components count against the node's `max_concurrent` sandboxes.
//!
//! A component is compiled once per content and engine (the precompiled cache shared with
//! the `wasm` runtime, filled by `sluice build`); the event path only maps the cached file.

pub mod source;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::wasm::output::CappedOutput;
use super::wasm::cache::Artifact;
use super::wasm::{cache, engine, split_logs, MemoryLimiter, Mount, WasmHost, MAX_LOG_BYTES, MAX_RESPONSE_BYTES};
use super::{FailureKind, Invocation, InvokeError, Response, Runtime};
use crate::config::FunctionConfig;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/sluice.wit",
        world: "handler",
        exports: { default: async },
    });
}

use bindings::sluice::function::types::{Context as WitContext, Error as WitError, ErrorKind};
use bindings::HandlerPre;

const MIB: usize = 1024 * 1024;

/// What `sluice build` makes from a function's `handler`, in the function's folder.
pub const BUILT_COMPONENT: &str = "component.wasm";

/// The engine and WASI linker of components, made when the first component loads (a project
/// without components never starts the second epoch thread), and the `wasm` runtime's
/// host-wide parts: its sandbox limit, cache and buckets.
#[derive(Clone)]
pub struct ComponentHost {
    wasm: WasmHost,
    region: String,
    parts: Arc<Mutex<Option<Parts>>>,
}

#[derive(Clone)]
struct Parts {
    engine: Engine,
    linker: Arc<Linker<State>>,
}

impl ComponentHost {
    /// `region` makes the function ARN a handler sees, as the `lambda` runtime does.
    pub fn new(wasm: &WasmHost, region: String) -> Self {
        Self { wasm: wasm.clone(), region, parts: Arc::new(Mutex::new(None)) }
    }

    fn parts(&self) -> anyhow::Result<Parts> {
        let mut parts = self.parts.lock().map_err(|_| anyhow::anyhow!("the component engine's lock is poisoned"))?;
        if let Some(parts) = parts.as_ref() {
            return Ok(parts.clone());
        }
        let engine = engine::build_for_components().map_err(|e| anyhow::anyhow!("{e:?}")).context("creating the component engine")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .context("adding WASI preview 2 to the linker")?;
        let made = Parts { engine, linker: Arc::new(linker) };
        *parts = Some(made.clone());
        Ok(made)
    }

    pub fn engine(&self) -> anyhow::Result<Engine> {
        Ok(self.parts()?.engine)
    }

    /// Compiles the component at `path` into the cache (at build time), unless it is there
    /// already; says whether it compiled.
    pub fn precompile(&self, path: &Path) -> anyhow::Result<bool> {
        let engine = self.engine()?;
        let cache_dir = self.wasm.cache_dir();
        let mut artifact = Artifact::open(cache_dir, path).with_context(|| format!("reading the component {}", path.display()))?;
        if artifact.cache_path(&engine, cache_dir).is_file() {
            return Ok(false);
        }
        let bytes = artifact.bytes().with_context(|| format!("reading the component {}", path.display()))?;
        cache::precompile::<Component>(&engine, cache_dir, bytes)?;
        Ok(true)
    }

    /// Loads a component from the cache (compiling it there first if it is missing, which
    /// is said in the log: it takes seconds for an interpreter) and links it. A component
    /// in the cache is not read: its digest is remembered and its compiled form mapped.
    pub fn load(&self, config: &FunctionConfig, path: &Path) -> anyhow::Result<ComponentFunction> {
        let started = Instant::now();
        let engine = self.engine()?;
        let cache_dir = self.wasm.cache_dir();
        let mut artifact = Artifact::open(cache_dir, path).with_context(|| format!("reading the component {}", path.display()))?;
        let compiling = !artifact.cache_path(&engine, cache_dir).is_file();
        if compiling {
            // A warning: every command shows it, and a deployment should have precompiled.
            tracing::warn!(
                function = %config.name,
                component = %path.display(),
                size_mb = std::fs::metadata(path).map_or(0, |m| m.len()) >> 20,
                "Compiling the component: it is not in the precompiled cache (`sluice build` fills it); this takes seconds for a Python or JavaScript component."
            );
        }
        let mut load = || self.link(config, &mut artifact, started).with_context(|| format!("function {}: component {}", config.name, path.display()));
        let function = if compiling {
            while_running(load, |elapsed| tracing::warn!(function = %config.name, seconds = elapsed.as_secs(), "Still compiling the component."))?
        } else {
            load()?
        };
        if compiling {
            tracing::info!(function = %config.name, seconds = started.elapsed().as_secs_f64(), "Compiled the component.");
        }
        Ok(function)
    }

    /// Loads the component from the cache (compiling it there if missing) and links it; the
    /// load time reported by its first invocation counts from `started`.
    fn link(&self, config: &FunctionConfig, artifact: &mut Artifact, started: Instant) -> anyhow::Result<ComponentFunction> {
        let parts = self.parts()?;
        if !wasmparser::Parser::is_component(&artifact.head(8).context("reading the component's header")?) {
            anyhow::bail!(
                "not a WebAssembly component: runtime \"component\" runs components exporting wit/sluice.wit; \
                 a core module (WASI preview 1) runs under runtime \"wasm\""
            );
        }
        let component: Component = cache::load_artifact(&parts.engine, self.wasm.cache_dir(), artifact)?;
        let pre = parts.linker.instantiate_pre(&component).map_err(|e| anyhow::anyhow!("{e:?}")).context(
            "linking the component: it imports something other than WASI preview 2 (wasi:cli, wasi:clocks, wasi:random, wasi:io, wasi:filesystem, wasi:sockets)",
        )?;
        let pre = HandlerPre::new(pre)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .context("the component does not export the Sluice world (wit/sluice.wit: handle(event, context) -> result<string, error>)")?;
        let mut env: Vec<(String, String)> = config.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (key, value) in [
            ("AWS_LAMBDA_FUNCTION_NAME", config.name.clone()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", config.memory_mb.to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", config.name)),
            ("AWS_REGION", self.region.clone()),
        ] {
            if !config.env.contains_key(key) {
                env.push((key.to_owned(), value));
            }
        }
        let region = config.env.get("AWS_REGION").unwrap_or(&self.region);
        let function = ComponentFunction {
            inner: Arc::new(Inner {
                name: config.name.clone(),
                function_arn: format!("arn:aws:lambda:{region}:{}:function:{}", super::lambda::ACCOUNT_ID, config.name),
                pre,
                env,
                mounts: self.wasm.mounts(config)?,
                memory_limit: (config.memory_mb as usize).saturating_mul(MIB),
                memory_mb: config.memory_mb,
                timeout: config.timeout,
                init_micros: AtomicU64::new(0),
            }),
            slots: self.wasm.slots(),
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(WARM - 1);
        function.inner.init_micros.store(micros, Ordering::Relaxed);
        Ok(function)
    }
}

/// How often a long step says it is still running.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Runs `step` on this thread while another calls `tick` every [`PROGRESS_EVERY`] with the
/// time spent so far, so that a compile of many seconds is never silent.
pub fn while_running<T>(step: impl FnOnce() -> T, tick: impl Fn(Duration) + Send) -> T {
    let started = Instant::now();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(PROGRESS_EVERY) {
                tick(started.elapsed());
            }
        });
        let result = step();
        drop(done);
        result
    })
}

/// A component ready to run: linked, with its limits.
#[derive(Clone)]
pub struct ComponentFunction {
    inner: Arc<Inner>,
    slots: Arc<Semaphore>,
}

struct Inner {
    name: String,
    function_arn: String,
    pre: HandlerPre<State>,
    env: Vec<(String, String)>,
    mounts: Vec<Mount>,
    memory_limit: usize,
    memory_mb: u32,
    timeout: Duration,
    /// As the `wasm` runtime's: the load time, until the first invocation reports it.
    init_micros: AtomicU64,
}

const WARM: u64 = u64::MAX;

/// Per-invocation store data.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl Runtime for ComponentFunction {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Result<Response, InvokeError>> {
        Box::pin(async move {
            let Ok(_permit) = self.slots.clone().acquire_owned().await else {
                return Err(failure(FailureKind::Platform, None, "the runtime is shutting down".into(), Vec::new(), Duration::ZERO));
            };
            let init = match self.inner.init_micros.swap(WARM, Ordering::Relaxed) {
                WARM => None,
                micros => Some(Duration::from_micros(micros)),
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

fn failure(kind: FailureKind, error_type: Option<&str>, message: String, logs: Vec<String>, duration: Duration) -> InvokeError {
    InvokeError { kind, message, error_type: error_type.map(str::to_owned), logs, duration, init: None }
}

impl Inner {
    async fn run(&self, invocation: &Invocation) -> Result<Response, InvokeError> {
        let started = Instant::now();
        let event = &invocation.event;
        // A component takes its event as text; Lambda hands an empty body over as `{}`.
        let data: &[u8] = if event.data.is_empty() { b"{}" } else { &event.data };
        let Ok(data) = std::str::from_utf8(data) else {
            return Err(failure(
                FailureKind::Platform,
                Some("Sluice.InvalidEvent"),
                "the event's data is not UTF-8 text; a component receives its event as a string (JSON)".into(),
                Vec::new(),
                started.elapsed(),
            ));
        };
        // The clock starts when the sandbox does, not while the event waited for a slot.
        let deadline = SystemTime::now() + self.timeout;
        let context = WitContext {
            request_id: invocation.request_id.clone(),
            function_name: self.name.clone(),
            invoked_function_arn: self.function_arn.clone(),
            memory_limit_mb: self.memory_mb,
            deadline_ms: deadline.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            attempt: invocation.attempt,
            event_id: event.id.clone(),
            event_type: event.ty.clone(),
            event_source: event.source.clone(),
            event_time: event.time.to_rfc3339(),
            event_subject: event.subject.clone(),
            traceparent: event.traceparent.clone(),
        };
        // stdout and stderr share one buffer, so the log keeps the order lines were written in.
        let log = CappedOutput::new(MAX_LOG_BYTES);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(log.clone()).stderr(log.clone()).args(&[self.name.as_str()]).envs(&self.env);
        for mount in &self.mounts {
            if let Err(error) = wasi.preopened_dir(&mount.host, &mount.guest, mount.perms) {
                let message = format!("cannot mount {} at {}: {error}", mount.host.display(), mount.guest);
                return Err(failure(FailureKind::Platform, None, message, Vec::new(), started.elapsed()));
            }
        }
        let state = State { wasi: wasi.build(), table: ResourceTable::new(), limiter: MemoryLimiter::new(self.memory_limit) };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        let _ticking = engine::yield_every_few_ticks(&mut store);

        // As in the `wasm` runtime, the timer stops guest code (which yields every few epoch
        // ticks) and host calls alike.
        let run = async {
            let handler = self.pre.instantiate_async(&mut store).await.map_err(|e| (e, true))?;
            handler.call_handle(&mut store, data, &context).await.map_err(|e| (e, false))
        };
        let outcome = match tokio::time::timeout(self.timeout, run).await {
            Ok(outcome) => outcome,
            Err(_elapsed) => Err((wasmtime::Error::new(Trap::Interrupt), false)),
        };
        let refused = store.data().limiter.refused;
        let memory_bytes = store.data().limiter.peak;
        // Torn down before the answer: on two cores, a teardown left to another thread (its
        // memories unmapped, every core's TLB flushed) made the first event after a load
        // ~1 ms faster but each following event up to 2 ms slower (measured interleaved).
        drop(store);

        let duration = started.elapsed();
        let mut logs = split_logs(&log.contents());
        if log.overflowed() {
            logs.push(format!("[sluice] log output past {MAX_LOG_BYTES} bytes was dropped ({} bytes in all)", log.written()));
        }
        let fail = |kind, error_type: &str, message: String, logs| failure(kind, Some(error_type), message, logs, duration);
        match outcome {
            Ok(Ok(body)) => {
                if body.len() > MAX_RESPONSE_BYTES {
                    return Err(fail(
                        FailureKind::ResponseTooLarge,
                        "Function.ResponseSizeTooLarge",
                        format!("the response is {} bytes, over the limit of {MAX_RESPONSE_BYTES} bytes ({} MiB)", body.len(), MAX_RESPONSE_BYTES / MIB),
                        logs,
                    ));
                }
                let body = if body.trim_ascii().is_empty() { Bytes::from_static(b"null") } else { Bytes::from(body) };
                if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                    let preview: String = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
                    return Err(fail(
                        FailureKind::InvalidResponse,
                        "Runtime.InvalidResponse",
                        format!("the response is not JSON ({error}); it starts with {preview:?}"),
                        logs,
                    ));
                }
                Ok(Response { body, logs, duration, memory_bytes: memory_bytes as u64, init: None })
            }
            Ok(Err(error)) => Err(self.handler_error(error, logs, duration)),
            Err((error, instantiating)) => Err(self.classify(&error, instantiating, refused, logs, duration)),
        }
    }

    /// The error the component returned, as the `lambda` runtime reports a handler's.
    fn handler_error(&self, error: WitError, mut logs: Vec<String>, duration: Duration) -> InvokeError {
        let kind = match error.kind {
            ErrorKind::Handler => FailureKind::Handler,
            ErrorKind::Memory => FailureKind::MemoryLimit,
            ErrorKind::InvalidResponse => FailureKind::InvalidResponse,
        };
        let error_type = if error.error_type.is_empty() { "Error".to_owned() } else { error.error_type };
        let message = if error.message.is_empty() { error_type.clone() } else { format!("{error_type}: {}", error.message) };
        // Lambda writes a failed invocation's error and stack to the function's log.
        if !error.stack_trace.is_empty() {
            logs.push(format!("[ERROR] {message}"));
            logs.extend(error.stack_trace.iter().flat_map(|frame| frame.lines().map(str::to_owned)));
        }
        InvokeError { kind, message, error_type: Some(error_type), logs, duration, init: None }
    }

    fn classify(&self, error: &wasmtime::Error, instantiating: bool, refused: Option<usize>, logs: Vec<String>, duration: Duration) -> InvokeError {
        let (kind, error_type, message) = if let Some(total) = refused {
            (
                FailureKind::MemoryLimit,
                "Runtime.OutOfMemory",
                format!(
                    "the component tried to grow its memory to {} MiB; the limit is memory_mb = {}",
                    total.div_ceil(MIB),
                    self.memory_mb
                ),
            )
        } else if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            (
                FailureKind::Timeout,
                "Sandbox.Timedout",
                format!("the function ran past its timeout of {} and was stopped", humantime::format_duration(self.timeout)),
            )
        } else if instantiating {
            (FailureKind::Platform, "Runtime.InstantiationError", format!("cannot instantiate the component: {}", error.root_cause()))
        } else {
            let exit = error.downcast_ref::<wasmtime_wasi::I32Exit>().map(|e| e.0);
            match exit {
                Some(code) => (FailureKind::Handler, "Runtime.ExitError", format!("the component exited with status {code} instead of returning")),
                None => (FailureKind::Trap, "Runtime.Trap", format!("the component trapped: {}", error.root_cause())),
            }
        };
        failure(kind, Some(error_type), message, logs, duration)
    }
}
