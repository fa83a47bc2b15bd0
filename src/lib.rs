//! Sluice: a self-hosted, event-bus-centric serverless platform.
//!
//! An event crosses each module once: a trigger (or `sluice publish`) hands it to [`bus`],
//! which stores it in JetStream; [`dispatch`] pulls it for every subscribed function and runs
//! it in a [`runtime`]; a failure that exhausts its retries lands in the dead-letter stream.

pub mod bench;
pub mod bus;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod dlq;
pub mod error;
pub mod event;
pub mod registry;
pub mod runtime;
pub mod telemetry;
pub mod triggers;
