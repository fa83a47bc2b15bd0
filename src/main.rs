//! The `sluice` binary: parse the command line, set up logging, run, report.

use std::process::ExitCode;

use clap::Parser as _;
use sluice::cli::{self, Cli};

/// The dispatch path allocates small, short-lived buffers per event on many threads, where
/// mimalloc's per-thread free lists beat glibc's arenas (measured in docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    sluice::telemetry::init(cli.default_log_level(), cli.node_log().as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    // `block_on` keeps the command on the main thread (see `bus::embedded`).
    let result = runtime.block_on(cli::run(cli));
    sluice::telemetry::shutdown();
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            let code = sluice::error::exit_code(&error);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}
