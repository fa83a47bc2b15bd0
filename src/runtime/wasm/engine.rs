//! Every wasmtime setting Sluice uses, in one place, each with the reason for it.

use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

/// How often the epoch advances. Timeouts are enforced to this granularity; a shorter tick
/// costs a wake-up of one thread per tick, nothing on the invocation path.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Limits that size the engine.
#[derive(Debug, Clone, Copy)]
pub struct EngineLimits {
    /// Sandboxes alive at once: the pool holds this many instance slots.
    pub instances: u32,
    /// Largest `memory_mb` of any function, in bytes.
    pub max_memory_bytes: usize,
}

/// Builds the engine and starts its epoch ticker (a thread that ends with the engine).
pub fn build(limits: EngineLimits) -> wasmtime::Result<Engine> {
    let engine = match Engine::new(&config(limits, true)) {
        Ok(engine) => engine,
        Err(error) => {
            // The pool reserves virtual address space up front; where that is restricted
            // (ulimit -v) fall back to allocating each instance on demand.
            tracing::warn!(%error, "The pooling allocator is unavailable; allocating sandboxes on demand.");
            Engine::new(&config(limits, false))?
        }
    };
    start_epoch_ticker(&engine);
    Ok(engine)
}

fn config(limits: EngineLimits, pooling: bool) -> Config {
    let mut config = Config::new();
    // Timeouts: the compiled code checks the epoch at loop headers and calls, which costs
    // far less than fuel metering and stops an endless loop within one tick.
    config.epoch_interruption(true);
    // Optimised code; compiled once per module and cached on disk, so compile time matters
    // only on a cold start from source.
    config.cranelift_opt_level(OptLevel::Speed);
    if pooling {
        // A fresh instance per event is affordable only when instantiation is a slot reuse
        // (≈1 µs) rather than an mmap of a new address space (≈6 µs plus page faults).
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(limits.instances)
            .total_memories(limits.instances)
            .total_tables(limits.instances)
            .total_component_instances(limits.instances)
            .max_memory_size(limits.max_memory_bytes);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// One thread per engine advances the epoch; it holds only a weak reference, so it exits
/// once the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new().name("sluice-epoch".into()).spawn(move || loop {
        std::thread::sleep(EPOCH_TICK);
        match weak.upgrade() {
            Some(engine) => engine.increment_epoch(),
            None => return,
        }
    });
    if let Err(error) = spawned {
        tracing::error!(%error, "Cannot start the epoch thread; timeouts will not be enforced.");
    }
}

/// Epoch ticks that make up `timeout`, rounded up, plus one so a deadline never fires early.
pub fn ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    u64::try_from(timeout.as_nanos().div_ceil(tick)).unwrap_or(u64::MAX).saturating_add(1)
}
