//! Runtimes run one invocation of a function: an event in, a response (or a classified
//! failure) out, with the function's memory and time limits enforced and its logs captured.
//!
//! A runtime never retries and never talks to NATS; the dispatcher decides what a failure
//! means for the event.

pub mod component;
pub mod lambda;
pub mod wasm;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::event::Event;

/// One attempt at running a function on an event.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Unique per attempt.
    pub request_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub event: Arc<Event>,
}

/// A successful invocation.
#[derive(Debug, Clone)]
pub struct Response {
    /// What the function returned (JSON).
    pub body: Bytes,
    /// The function's log lines (stderr), in order.
    pub logs: Vec<String>,
    pub duration: Duration,
    /// Peak linear memory, for metering.
    pub memory_bytes: u64,
    /// Set on a cold start (the first invocation of a freshly loaded module, a new Lambda
    /// execution environment): how long that initialisation took.
    pub init: Option<Duration>,
}

/// Why an attempt failed. Every kind counts as one failed attempt; the label goes into logs,
/// metrics (`outcome`) and the dead-letter record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The function reported failure (non-zero exit status; a Lambda handler's error).
    Handler,
    /// The sandbox trapped (unreachable, out-of-bounds access, stack overflow...).
    Trap,
    /// The function ran past its timeout and was stopped.
    Timeout,
    /// The function tried to use more memory than `memory_mb`.
    MemoryLimit,
    /// The function finished but its output is not a valid response.
    InvalidResponse,
    /// The function's response is larger than the payload limit (6 MiB, Lambda's
    /// synchronous limit).
    ResponseTooLarge,
    /// The platform could not run the function (artifact unreadable, sandbox pool exhausted).
    Platform,
}

impl FailureKind {
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Handler => "error",
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::MemoryLimit => "memory_limit",
            FailureKind::InvalidResponse => "invalid_response",
            FailureKind::ResponseTooLarge => "response_too_large",
            FailureKind::Platform => "platform_error",
        }
    }
}

/// A failed attempt.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", kind.label())]
pub struct InvokeError {
    pub kind: FailureKind,
    pub message: String,
    /// Lambda runtimes: the `errorType` the runtime reported (`ValueError`,
    /// `Runtime.ImportModuleError`, `Sandbox.Timedout`...).
    pub error_type: Option<String>,
    /// Log lines written before the failure.
    pub logs: Vec<String>,
    pub duration: Duration,
    /// As [`Response::init`].
    pub init: Option<Duration>,
}

/// A loaded function, ready to be invoked any number of times, concurrently.
pub trait Runtime: Send + Sync {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Result<Response, InvokeError>>;
}

/// The runtimes of one node, shared by all functions.
pub struct Hosts {
    pub wasm: wasm::WasmHost,
    pub component: component::ComponentHost,
    pub lambda: lambda::LambdaHost,
}

impl Hosts {
    /// Components share the `wasm` host's sandbox limit and cache, and Lambda's region.
    pub fn new(wasm: wasm::WasmHost, lambda: lambda::HostConfig) -> Self {
        Self { component: component::ComponentHost::new(&wasm, lambda.region.clone()), wasm, lambda: lambda::LambdaHost::new(lambda) }
    }

    /// Loads a function into the runtime its `function.toml` names; an error names the
    /// file and the field to fix.
    pub fn load(&self, def: &crate::config::FunctionDef) -> Result<Arc<dyn Runtime>, crate::config::ConfigError> {
        use crate::config::{ConfigError, RuntimeKind};
        if def.config.runtime.is_lambda() {
            let function = self.lambda.load(def).map_err(|e| ConfigError::new(&def.path, Some(e.field), e.message))?;
            return Ok(Arc::new(function));
        }
        let Some(module_path) = &def.module_path else {
            return Err(ConfigError::new(&def.path, Some("module"), "missing: a wasm function names its compiled module"));
        };
        if def.config.runtime == RuntimeKind::Component {
            // A component built from `handler` is `sluice build`'s output: blame the handler.
            let field = if def.config.module.is_some() { "module" } else { "handler" };
            let function = self.component.load(&def.config, module_path).map_err(|e| ConfigError::new(&def.path, Some(field), format!("{e:#}")))?;
            return Ok(Arc::new(function));
        }
        let function = self.wasm.load(&def.config, module_path).map_err(|e| ConfigError::new(&def.path, Some("module"), format!("{e:#}")))?;
        Ok(Arc::new(function))
    }
}
