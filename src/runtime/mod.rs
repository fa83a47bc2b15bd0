//! Runtimes run one invocation of a function: an event in, a response (or a classified
//! failure) out, with the function's memory and time limits enforced and its logs captured.
//!
//! A runtime never retries and never talks to NATS; the dispatcher decides what a failure
//! means for the event.

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
}

/// Why an attempt failed. Every kind counts as one failed attempt; the label goes into logs,
/// metrics (`outcome`) and the dead-letter record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The function reported failure (non-zero exit status).
    Handler,
    /// The sandbox trapped (unreachable, out-of-bounds access, stack overflow...).
    Trap,
    /// The function ran past its timeout and was stopped.
    Timeout,
    /// The function tried to grow its memory past `memory_mb`.
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
    /// Log lines written before the failure.
    pub logs: Vec<String>,
    pub duration: Duration,
}

/// A loaded function, ready to be invoked any number of times, concurrently.
pub trait Runtime: Send + Sync {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Result<Response, InvokeError>>;
}
