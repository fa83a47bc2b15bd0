//! The Lambda runtimes (`python3.N`, `nodejsN.x`, `provided`): unchanged AWS Lambda
//! handlers run by the real runtime interface clients (`awslambdaric`, `aws-lambda-ric`)
//! or a custom runtime's `bootstrap`, in execution environments that speak the Runtime API
//! to a server inside the worker.
//!
//! Each function has a pool of warm environments on this node: an event takes an idle
//! one (module state survives, as on Lambda) or starts one, up to `concurrency`; an
//! environment idle for `idle_timeout` is stopped, but `min_warm` are kept started. A
//! timeout, a crash or exceeding `memory_mb` kills the environment's process group, and the
//! next event gets a fresh one; so does an init failure (import or syntax error), so a
//! fixed file is picked up by the next attempt.

mod api;
mod cgroup;
mod env;
pub mod tools;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{Notify, Semaphore};
use tracing::{info, warn};

use self::api::{Outcome, Pending};
use self::env::{Ended, Environment, InitFailure, Spec};
use super::{FailureKind, Invocation, InvokeError, Response, Runtime};
use crate::config::{FunctionConfig, FunctionDef, RuntimeKind};

pub use self::api::xray_trace_id;

/// Variables the Lambda runtime sets itself; a function's `env` may not set them.
const RESERVED: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// Whether `name` is one of Lambda's reserved variables.
pub fn is_reserved_variable(name: &str) -> bool {
    RESERVED.contains(&name)
}

/// Init phase limit (Lambda's is 10 s), or the function's timeout when that is longer.
const MIN_INIT_LIMIT: Duration = Duration::from_secs(10);
/// Where the Python handler's libraries go (`sluice build` installs `requirements.txt` there).
pub const PYTHON_PACKAGE_DIR: &str = "package";

/// The account id in ARNs and API Gateway events: Sluice has no accounts.
pub const ACCOUNT_ID: &str = "000000000000";

/// A handler as Lambda reads it: `path/module.function`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerName {
    /// The module, as a path relative to the task root without extension (`app`, `src/index`).
    pub module: String,
    pub function: String,
}

impl HandlerName {
    pub fn parse(runtime: RuntimeKind, handler: &str) -> Result<Self, String> {
        let example = if matches!(runtime, RuntimeKind::Python { .. } | RuntimeKind::Component) { "app.lambda_handler" } else { "index.handler" };
        let Some((module, function)) = handler.rsplit_once('.') else {
            return Err(format!("{handler:?} is not file.function (Lambda's form), e.g. {example:?}"));
        };
        let identifier = |s: &str| {
            s.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
                && s.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        };
        if !identifier(function) {
            return Err(format!("{handler:?}: {function:?} is not a function name; use file.function, e.g. {example:?}"));
        }
        let module = match runtime {
            RuntimeKind::Python { .. } => module.replace('.', "/"),
            _ => module.to_owned(),
        };
        let bad_part = module.split('/').any(|part| part.is_empty() || part == "..");
        if module.is_empty() || module.starts_with('/') || bad_part {
            return Err(format!("{handler:?}: the file part must be a relative path inside the function's folder, e.g. {example:?}"));
        }
        Ok(Self { module, function: function.to_owned() })
    }

    /// The files that may hold the module, relative to the task root.
    pub(crate) fn candidates(&self, runtime: RuntimeKind) -> Vec<PathBuf> {
        match runtime {
            RuntimeKind::Python { .. } => vec![format!("{}.py", self.module).into(), Path::new(&self.module).join("__init__.py")],
            _ => ["js", "mjs", "cjs"].iter().map(|ext| PathBuf::from(format!("{}.{ext}", self.module))).collect(),
        }
    }

    /// The module's file in `folder` (or, for Python, its `package/`), if there is one.
    pub(crate) fn find(&self, runtime: RuntimeKind, folder: &Path) -> Option<PathBuf> {
        let roots = [folder.to_path_buf(), folder.join(PYTHON_PACKAGE_DIR)];
        self.candidates(runtime).iter().flat_map(|c| roots.iter().map(move |root| root.join(c))).find(|path| path.is_file())
    }
}

/// Checks a Lambda function's folder at load: the handler's file, or the custom runtime's
/// `bootstrap`. `built` also requires build outputs (`bootstrap` built from a crate).
pub fn check_folder(config: &FunctionConfig, folder: &Path, built: bool) -> Result<(), (&'static str, String)> {
    match (config.runtime, &config.handler) {
        (RuntimeKind::Provided { .. }, _) => {
            let bootstrap = folder.join("bootstrap");
            let buildable = folder.join("Cargo.toml").is_file();
            if !bootstrap.is_file() {
                if buildable && !built {
                    return Ok(());
                }
                let hint = if buildable { format!("build it first (`sluice build {}`)", config.name) } else { "add an executable named bootstrap that speaks the Lambda Runtime API".to_owned() };
                return Err(("runtime", format!("runtime {} runs {}, which does not exist; {hint}", config.runtime, bootstrap.display())));
            }
            use std::os::unix::fs::PermissionsExt as _;
            let executable = std::fs::metadata(&bootstrap).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
            if !executable {
                return Err(("runtime", format!("{} is not executable; chmod +x it", bootstrap.display())));
            }
            Ok(())
        }
        (runtime, Some(handler)) => {
            let name = HandlerName::parse(runtime, handler).map_err(|m| ("handler", m))?;
            if name.find(runtime, folder).is_some() {
                Ok(())
            } else {
                let files: Vec<String> = name.candidates(runtime).iter().map(|c| c.display().to_string()).collect();
                Err(("handler", format!("{handler:?}: no {} in {}", files.join(" or "), folder.display())))
            }
        }
        (_, None) => Ok(()),
    }
}

/// The file that holds a function's code: the handler's module, or `bootstrap`.
fn code_file(config: &FunctionConfig, task_root: &Path) -> PathBuf {
    let name = config.handler.as_deref().and_then(|h| HandlerName::parse(config.runtime, h).ok());
    let Some(name) = name.filter(|_| !matches!(config.runtime, RuntimeKind::Provided { .. })) else {
        return task_root.join("bootstrap");
    };
    name.find(config.runtime, task_root).unwrap_or_else(|| task_root.to_path_buf())
}

/// Host-wide settings of the Lambda runtimes.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// `<project>/.sluice/tools`, where `sluice build` installs the runtime clients.
    pub tools_dir: PathBuf,
    /// Reported to handlers as `AWS_REGION` unless a function's `env` sets it.
    pub region: String,
}

/// What the Lambda runtimes share on this node: the tools folder and the memory cgroups.
#[derive(Debug, Clone)]
pub struct LambdaHost {
    config: HostConfig,
    cgroups: Option<cgroup::Parent>,
}

/// Why a function cannot be loaded, with the `function.toml` field to blame.
#[derive(Debug)]
pub struct LoadError {
    pub field: &'static str,
    pub message: String,
}

impl LambdaHost {
    pub fn new(mut config: HostConfig) -> Self {
        // Handlers run in their own folders: every path handed to them must be absolute.
        if let Ok(absolute) = std::path::absolute(&config.tools_dir) {
            config.tools_dir = absolute;
        }
        let cgroups = cgroup::Parent::detect();
        match &cgroups {
            Some(parent) => parent.sweep(),
            None => info!("Memory cgroups are not writable here; Lambda environments are limited with RLIMIT_AS (Node.js by its heap size)."),
        }
        Self { config, cgroups }
    }

    /// Prepares a function: finds its interpreter and client, and starts its pool (with
    /// `min_warm` environments starting in the background).
    pub fn load(&self, def: &FunctionDef) -> Result<LambdaFunction, LoadError> {
        let config = &def.config;
        let spec = self.spec(def)?;
        let code = code_file(&def.config, &spec.task_root);
        let region = spec.env.iter().find(|(k, _)| k == "AWS_REGION").map_or("us-east-1", |(_, v)| v.as_str());
        let function_arn = format!("arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{}", config.name);
        let pool = Arc::new(Pool {
            code,
            function_arn,
            config: config.clone(),
            spec,
            idle: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
            permits: Semaphore::new(usize::try_from(config.concurrency).unwrap_or(1).max(1)),
            next_id: AtomicU64::new(1),
            changed: Notify::new(),
        });
        tokio::spawn(keep(Arc::downgrade(&pool)));
        Ok(LambdaFunction { pool })
    }

    fn spec(&self, def: &FunctionDef) -> Result<Spec, LoadError> {
        let config = &def.config;
        let runtime_error = |message: String| LoadError { field: "runtime", message };
        let handler = config.handler.clone().unwrap_or_default();
        let task_root = def.dir.canonicalize().or_else(|_| std::path::absolute(&def.dir)).unwrap_or_else(|_| def.dir.clone());
        let mut env: Vec<(String, String)> = vec![
            ("AWS_LAMBDA_FUNCTION_NAME".into(), config.name.clone()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), config.memory_mb.to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION".into(), "$LATEST".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME".into(), format!("/aws/lambda/{}", config.name)),
            ("AWS_EXECUTION_ENV".into(), format!("AWS_Lambda_{}", config.runtime)),
            ("AWS_REGION".into(), self.config.region.clone()),
            ("LAMBDA_TASK_ROOT".into(), task_root.display().to_string()),
            ("_HANDLER".into(), handler.clone()),
            ("TZ".into(), ":UTC".into()),
            ("LANG".into(), "en_US.UTF-8".into()),
        ];
        let mut path = String::from("/usr/local/bin:/usr/bin:/bin");
        let client_dir = tools::client_dir(&self.config.tools_dir, config.runtime);
        let install_hint = format!("run `sluice build {}` to install it", config.name);
        let (program, args, search_path, address_space_limit) = match config.runtime {
            RuntimeKind::Python { .. } => {
                let python = tools::interpreter(config.runtime).map_err(runtime_error)?;
                let client = client_dir.unwrap_or_default();
                if !tools::python_client_installed(&client) {
                    return Err(runtime_error(format!("the Python runtime interface client ({}) is not in {}; {install_hint}", tools::AWSLAMBDARIC, client.display())));
                }
                if let Some(dir) = python.path.parent() {
                    path = format!("{}:{path}", dir.display());
                }
                let search = [task_root.clone(), task_root.join(PYTHON_PACKAGE_DIR), client].iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
                // The client flushes stdout itself after every write.
                let args = vec!["-m".into(), "awslambdaric".into(), handler.clone().into()];
                (python.path, args, Some(("PYTHONPATH", search)), true)
            }
            RuntimeKind::Node { .. } => {
                let node = tools::interpreter(config.runtime).map_err(runtime_error)?;
                let client = client_dir.unwrap_or_default();
                let Some(entry) = tools::node_client_entry(&client) else {
                    return Err(runtime_error(format!("the Node.js runtime interface client (aws-lambda-ric) is not in {}; {install_hint}", client.display())));
                };
                if let Some(dir) = node.path.parent() {
                    path = format!("{}:{path}", dir.display());
                }
                // V8's heap stays inside the memory limit, as on Lambda; what it reserves
                // is address space, so no RLIMIT_AS.
                let heap_mb = (u64::from(config.memory_mb) * 85 / 100).max(16);
                let args = vec![format!("--max-old-space-size={heap_mb}").into(), entry.into_os_string(), handler.clone().into()];
                let search = [task_root.join("node_modules"), client.join("node_modules")].iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
                (node.path, args, Some(("NODE_PATH", search)), false)
            }
            RuntimeKind::Provided { .. } => (task_root.join("bootstrap"), Vec::new(), None, true),
            RuntimeKind::Wasm | RuntimeKind::Component => return Err(runtime_error(format!("runtime {} is not a Lambda runtime", config.runtime))),
        };
        env.push(("PATH".into(), path));
        if let Some((name, value)) = search_path {
            env.push((name.into(), value));
        }
        // The function's own variables win, except that search paths are joined.
        for (key, value) in &config.env {
            match env.iter_mut().find(|(k, _)| k == key) {
                Some((k, existing)) if k == "PYTHONPATH" || k == "NODE_PATH" => *existing = format!("{value}:{existing}"),
                Some((_, existing)) => existing.clone_from(value),
                None => env.push((key.clone(), value.clone())),
            }
        }
        Ok(Spec {
            function: config.name.clone(),
            program,
            args,
            task_root,
            env,
            memory_mb: config.memory_mb,
            cgroups: self.cgroups.clone(),
            address_space_limit,
        })
    }
}

/// A loaded Lambda function: its pool of execution environments. Dropping it stops them.
pub struct LambdaFunction {
    pool: Arc<Pool>,
}

struct Pool {
    config: FunctionConfig,
    spec: Spec,
    /// Warm environments waiting for an event; the most recently used last.
    idle: Mutex<Vec<Environment>>,
    /// Environments started and not yet stopped (idle, busy or starting).
    live: AtomicUsize,
    /// Invocations in progress on this node, at most `concurrency`.
    permits: Semaphore,
    next_id: AtomicU64,
    /// An environment became idle or stopped.
    changed: Notify,
    /// The handler's file (or `bootstrap`), for error messages.
    code: PathBuf,
    /// `Lambda-Runtime-Invoked-Function-Arn`.
    function_arn: String,
}

/// An environment handed to one invocation.
struct Taken {
    env: Environment,
    /// Set for a cold start: how long initialisation took.
    init: Option<Duration>,
    /// Output of the initialisation, logged before `START`.
    init_lines: Vec<String>,
}

impl Pool {
    /// An idle environment, or a new one when fewer than `concurrency` run.
    async fn take(&self) -> Result<Taken, InitFailure> {
        let limit = usize::try_from(self.config.concurrency).unwrap_or(1).max(1);
        loop {
            let changed = self.changed.notified();
            let popped = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            if let Some(env) = popped {
                if env.is_alive() {
                    return Ok(Taken { env, init: None, init_lines: Vec::new() });
                }
                self.stopped(env, "its process exited while idle");
                continue;
            }
            let grew = self.live.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit).then_some(n + 1)).is_ok();
            if grew {
                return self.start().await.map(|(env, init, init_lines)| Taken { env, init: Some(init), init_lines });
            }
            // Every environment is busy or starting (min_warm); one frees up soon.
            changed.await;
        }
    }

    /// Starts one environment (already counted in `live`) and waits for its init.
    async fn start(&self) -> Result<(Environment, Duration, Vec<String>), InitFailure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let limit = self.config.timeout.max(MIN_INIT_LIMIT);
        let started = match Environment::start(&self.spec, id).await {
            Ok(mut env) => match env.wait_ready(limit).await {
                Ok(init) => Ok((env, init)),
                Err(failure) => {
                    let lines = env.take_lines().await;
                    Err((failure, lines))
                }
            },
            Err(failure) => Err((failure, Vec::new())),
        };
        match started {
            Ok((env, init)) => {
                let lines = env.take_lines().await;
                info!(function = %self.config.name, environment = id, pid = env.pid, init_ms = format!("{:.1}", init.as_secs_f64() * 1000.0), "Execution environment started.");
                Ok((env, init, lines))
            }
            Err((mut failure, lines)) => {
                self.live.fetch_sub(1, Ordering::SeqCst);
                self.changed.notify_waiters();
                for line in &lines {
                    info!(target: "sluice::function", function = %self.config.name, "{line}");
                }
                failure.message = format!("{} (handler {:?}: {})", failure.message, self.config.handler.as_deref().unwrap_or("bootstrap"), self.code.display());
                warn!(function = %self.config.name, error_type = %failure.error_type, error = %failure.message, "Execution environment failed to initialise.");
                Err(failure)
            }
        }
    }

    fn put_back(&self, env: Environment) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(env);
        }
        self.changed.notify_waiters();
    }

    fn stopped(&self, env: Environment, why: &str) {
        info!(function = %self.config.name, environment = env.id, invocations = env.invocations, reason = why, "Execution environment stopped.");
        drop(env);
        self.live.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    async fn invoke(&self, invocation: Invocation) -> Result<Response, InvokeError> {
        let started = Instant::now();
        let _permit = self.permits.acquire().await.map_err(|_| platform("the function is stopping", started))?;
        let request_id = invocation.request_id.clone();
        let taken = match self.take().await {
            Ok(taken) => taken,
            Err(failure) => {
                let kind = if failure.out_of_memory { FailureKind::MemoryLimit } else { FailureKind::Handler };
                return Err(InvokeError {
                    kind,
                    message: format!("{}: {}", failure.error_type, failure.message),
                    error_type: Some(failure.error_type),
                    logs: Vec::new(),
                    duration: started.elapsed(),
                    init: None,
                });
            }
        };
        let Taken { mut env, init, init_lines } = taken;
        let mut logs = init_lines;
        logs.push(format!("START RequestId: {request_id} Version: $LATEST"));
        let (reply_tx, reply) = tokio::sync::oneshot::channel();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let pending = Pending {
            request_id: request_id.clone(),
            body: if invocation.event.data.is_empty() { Bytes::from_static(b"{}") } else { invocation.event.data.clone() },
            deadline_ms: now_ms + self.config.timeout.as_millis() as u64,
            function_arn: self.function_arn.clone(),
            trace_id: xray_trace_id(&invocation.event.traceparent),
            reply: reply_tx,
        };
        let invoked = Instant::now();
        let ended = env.invoke(pending, reply, tokio::time::Instant::now() + self.config.timeout).await;
        let duration = invoked.elapsed();
        logs.extend(env.take_lines().await);
        let memory_bytes = env.peak_memory_bytes();
        let result = self.classify(ended, &logs, duration);
        let status = match &result {
            Ok(_) => None,
            Err(error) if error.kind == FailureKind::Timeout => {
                logs.push(format!("{} {request_id} Task timed out after {:.2} seconds", chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true), self.config.timeout.as_secs_f64()));
                Some("timeout")
            }
            Err(error) if matches!(error.kind, FailureKind::MemoryLimit) => Some("error\tError Type: Runtime.OutOfMemory"),
            Err(_) => None,
        };
        logs.push(format!("END RequestId: {request_id}"));
        let mut report = format!(
            "REPORT RequestId: {request_id}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
            duration.as_secs_f64() * 1000.0,
            crate::telemetry::cost::billed_ms(duration),
            self.config.memory_mb,
            memory_bytes.div_ceil(1024 * 1024),
        );
        if let Some(init) = init {
            report.push_str(&format!("\tInit Duration: {:.2} ms", init.as_secs_f64() * 1000.0));
        }
        if let Some(status) = status {
            report.push_str(&format!("\tStatus: {status}"));
        }
        logs.push(report);
        // Keep the environment warm unless the attempt left it unusable.
        let reusable = match &result {
            Ok(_) => true,
            Err(error) => {
                matches!(error.kind, FailureKind::Handler | FailureKind::InvalidResponse | FailureKind::ResponseTooLarge)
                    && env.is_alive()
                    && !error.error_type.as_deref().is_some_and(|t| t.starts_with("Runtime."))
            }
        };
        if reusable {
            self.put_back(env);
        } else {
            let why = match &result {
                Err(error) => format!("{} in an invocation", error.kind.label()),
                Ok(_) => String::new(),
            };
            self.stopped(env, &why);
        }
        match result {
            Ok(body) => Ok(Response { body, logs, duration, memory_bytes, init }),
            Err(mut error) => {
                error.logs = logs;
                error.init = init;
                Err(error)
            }
        }
    }

    /// What an invocation's end means for the attempt.
    fn classify(&self, ended: Ended, logs: &[String], duration: Duration) -> Result<Bytes, InvokeError> {
        // As in the dead letter: `errorType: errorMessage`.
        let fail = |kind: FailureKind, error_type: &str, message: String| InvokeError {
            kind,
            message: if message.is_empty() { error_type.to_owned() } else { format!("{error_type}: {message}") },
            error_type: Some(error_type.to_owned()),
            logs: Vec::new(),
            duration,
            init: None,
        };
        let heap_exhausted = || logs.iter().any(|l| l.contains("JavaScript heap out of memory") || l.contains("Reached heap limit"));
        match ended {
            Ended::Outcome(Outcome::Response(body)) => {
                let trimmed = body.iter().all(u8::is_ascii_whitespace);
                if trimmed {
                    return Ok(Bytes::from_static(b"null"));
                }
                match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                    Ok(_) => Ok(body),
                    Err(error) => Err(fail(FailureKind::InvalidResponse, "Runtime.InvalidResponse", format!("the response is not JSON: {error}"))),
                }
            }
            Ended::Outcome(Outcome::TooLarge(limit)) => Err(fail(FailureKind::ResponseTooLarge, "Function.ResponseSizeTooLarge", format!("the response is larger than {limit} bytes"))),
            Ended::Outcome(Outcome::Error(error)) => {
                let memory = error.error_type == "MemoryError" || (error.error_type == "RangeError" && error.error_message.contains("allocation failed"));
                let kind = if memory { FailureKind::MemoryLimit } else { FailureKind::Handler };
                let mut failure = fail(kind, &error.error_type, error.error_message.clone());
                if memory {
                    // An environment whose allocations failed is not trusted again.
                    failure.error_type = Some(format!("Runtime.{}", error.error_type));
                }
                Err(failure)
            }
            Ended::TimedOut => Err(fail(FailureKind::Timeout, "Sandbox.Timedout", format!("Task timed out after {:.2} seconds", self.config.timeout.as_secs_f64()))),
            Ended::Exited { status, out_of_memory } if out_of_memory || heap_exhausted() => Err(fail(
                FailureKind::MemoryLimit,
                "Runtime.OutOfMemory",
                format!("the environment exceeded memory_mb = {} MB and was killed ({status})", self.config.memory_mb),
            )),
            Ended::Exited { status, .. } => Err(fail(FailureKind::Handler, "Runtime.ExitError", format!("Runtime exited with error: {status}"))),
        }
    }

    /// Stops idle environments past `idle_timeout` (keeping `min_warm`) and starts
    /// environments up to `min_warm`.
    async fn tend(&self) {
        let now = Instant::now();
        let min_warm = usize::try_from(self.config.min_warm).unwrap_or(0);
        let expired: Vec<Environment> = match self.idle.lock() {
            Ok(mut idle) => {
                let live = self.live.load(Ordering::SeqCst);
                let mut spare = live.saturating_sub(min_warm);
                let mut expired = Vec::new();
                // Oldest first: they are at the front.
                let mut i = 0;
                while i < idle.len() {
                    let dead = !idle[i].is_alive();
                    let old = now.duration_since(idle[i].last_used) >= self.config.idle_timeout;
                    if dead || (old && spare > 0) {
                        expired.push(idle.remove(i));
                        spare = spare.saturating_sub(1);
                    } else {
                        i += 1;
                    }
                }
                expired
            }
            Err(_) => Vec::new(),
        };
        for env in expired {
            let why = if env.is_alive() { "idle" } else { "its process exited while idle" };
            self.stopped(env, why);
        }
        while self.live.load(Ordering::SeqCst) < min_warm {
            let limit = usize::try_from(self.config.concurrency).unwrap_or(1).max(1);
            if self.live.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit.min(min_warm)).then_some(n + 1)).is_err() {
                break;
            }
            match self.start().await {
                Ok((env, _, lines)) => {
                    for line in &lines {
                        info!(target: "sluice::function", function = %self.config.name, "{line}");
                    }
                    self.put_back(env);
                }
                // Logged by `start`; tried again at the next tick.
                Err(_) => break,
            }
        }
    }
}

/// Tends a pool until its function is dropped.
async fn keep(pool: Weak<Pool>) {
    let period = match pool.upgrade() {
        Some(pool) => (pool.config.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)),
        None => return,
    };
    let mut failures = 0u32;
    loop {
        let Some(strong) = pool.upgrade() else { return };
        let before = strong.live.load(Ordering::SeqCst);
        strong.tend().await;
        let short = strong.live.load(Ordering::SeqCst) < usize::try_from(strong.config.min_warm).unwrap_or(0);
        drop(strong);
        // Back off while min_warm environments keep failing to start.
        failures = if short && before == 0 { failures.saturating_add(1) } else { 0 };
        let backoff = period * 2u32.saturating_pow(failures.min(6));
        tokio::time::sleep(backoff.min(Duration::from_secs(60))).await;
    }
}

fn platform(message: &str, started: Instant) -> InvokeError {
    InvokeError { kind: FailureKind::Platform, message: message.to_owned(), error_type: None, logs: Vec::new(), duration: started.elapsed(), init: None }
}

impl LambdaFunction {
    /// Execution environments started on this node (idle, busy or starting).
    pub fn environments(&self) -> usize {
        self.pool.live.load(Ordering::SeqCst)
    }
}

impl Runtime for LambdaFunction {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Result<Response, InvokeError>> {
        Box::pin(self.pool.invoke(invocation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PY: RuntimeKind = RuntimeKind::Python { minor: 11 };
    const NODE: RuntimeKind = RuntimeKind::Node { major: 20 };

    #[test]
    fn handlers_are_read_as_lambda_reads_them() {
        assert_eq!(HandlerName::parse(PY, "app.lambda_handler").unwrap(), HandlerName { module: "app".into(), function: "lambda_handler".into() });
        assert_eq!(HandlerName::parse(PY, "pkg.mod.handle").unwrap().module, "pkg/mod");
        assert_eq!(HandlerName::parse(NODE, "src/index.handler").unwrap().module, "src/index");
        assert!(HandlerName::parse(PY, "app").unwrap_err().contains("file.function"));
        assert!(HandlerName::parse(NODE, "index.").is_err());
        assert!(HandlerName::parse(NODE, "../x.handler").is_err());
        assert!(HandlerName::parse(NODE, "/abs/x.handler").is_err());
        assert!(HandlerName::parse(PY, "app.1st").is_err());
    }

    #[test]
    fn reserved_variables_are_lambdas() {
        assert!(is_reserved_variable("AWS_LAMBDA_RUNTIME_API"));
        assert!(is_reserved_variable("_HANDLER"));
        assert!(!is_reserved_variable("AWS_REGION"));
        assert!(!is_reserved_variable("TABLE_NAME"));
    }
}
