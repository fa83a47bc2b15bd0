//! Errors that decide the process exit code.
//!
//! The CLI exits with 2 for bad usage or invalid configuration and 1 when an operation
//! failed. Library code returns [`UsageError`] (or a [`crate::config::ConfigError`]) for the
//! former; everything else is an operational failure.

/// The user asked for something that cannot work as written: a bad argument, an unknown
/// name. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    pub message: String,
}

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

/// Exit code for an error chain: 2 when any cause is a usage or configuration error.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    let usage = error.chain().any(|cause| {
        cause.is::<UsageError>() || cause.is::<crate::config::ConfigError>()
    });
    if usage {
        2
    } else {
        1
    }
}
