//! Logging: `tracing` to stderr, fields first, then a short sentence.
//!
//! `SLUICE_LOG` (or `RUST_LOG`) sets the filter, e.g. `debug` or `sluice=debug,async_nats=warn`;
//! `SLUICE_LOG_FORMAT=json` switches to one JSON object per line.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `default_level` applies when no filter is set.
pub fn init(default_level: &str) {
    let filter = std::env::var("SLUICE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("{default_level},async_nats=warn,wasmtime=warn,cranelift=warn,pg_walstream=error")));
    let json = std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let result = if json { builder.json().try_init() } else { builder.compact().try_init() };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
