//! Every wasmtime setting Sluice uses, in one place, each with the reason for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

/// How often the epoch advances while a guest runs. A running guest yields to the async
/// executor every [`YIELD_AFTER_TICKS`] ticks, so this bounds how long one guest holds a
/// worker thread (and the granularity of timeouts); it costs one thread wake-up per tick and
/// a fiber switch per yield per running guest. While no guest runs, the ticker sleeps.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Ticks a guest runs before it yields (then again after as many). With 1, a guest that
/// happened to start just before a tick yielded after a few microseconds and queued behind
/// every other task: short invocations (most of them) paid a wait they did not need, which
/// showed in the tail of HTTP latency. With 2 every guest runs at least one full tick and at
/// most two before it yields.
pub const YIELD_AFTER_TICKS: u64 = 2;

/// Makes a store's guest yield to the executor every [`YIELD_AFTER_TICKS`] epoch ticks,
/// from its start. The first deadline must be set as well as the behaviour: a store's
/// deadline starts at 0, already passed, and without it every guest yielded at its first
/// instruction and waited behind every other ready task before it could start.
///
/// The epoch advances only while such a guard is alive: keep it until the store is dropped.
#[must_use = "the epoch stands still once the guard is dropped"]
pub fn yield_every_few_ticks<T>(store: &mut wasmtime::Store<T>) -> Ticking {
    store.epoch_deadline_async_yield_and_update(YIELD_AFTER_TICKS);
    store.set_epoch_deadline(YIELD_AFTER_TICKS);
    Ticking::start()
}

/// Guests that may be running now, in every engine of the process.
static RUNNING_GUESTS: AtomicUsize = AtomicUsize::new(0);
/// Guests started, and epoch ticks made, since the process started (for tests).
static STARTED_GUESTS: AtomicUsize = AtomicUsize::new(0);
static TICKS: AtomicUsize = AtomicUsize::new(0);
/// The epoch threads, woken when the first guest starts.
static TICKERS: Mutex<Vec<std::thread::Thread>> = Mutex::new(Vec::new());
/// How often a sleeping epoch thread checks whether its engine still exists.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// Keeps the epoch advancing while a guest runs; an idle process has no thread waking every
/// tick (1,000 wake-ups a second for nothing).
pub struct Ticking(());

impl Ticking {
    fn start() -> Self {
        STARTED_GUESTS.fetch_add(1, Ordering::SeqCst);
        if RUNNING_GUESTS.fetch_add(1, Ordering::SeqCst) == 0 {
            if let Ok(tickers) = TICKERS.lock() {
                for ticker in tickers.iter() {
                    ticker.unpark();
                }
            }
        }
        Self(())
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        RUNNING_GUESTS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Linear memory per slot that is zeroed in place rather than returned to the kernel.
const KEEP_RESIDENT: usize = 1 << 20;
/// The same for tables and async stacks.
const KEEP_RESIDENT_SMALL: usize = 64 << 10;
/// Slots whose remaining pages are returned to the kernel together.
const DECOMMIT_BATCH: usize = 8;

/// Instance slots for `running` sandboxes at once. A freed slot waits in a per-CPU decommit
/// queue (up to `DECOMMIT_BATCH - 1` per CPU, at most 16 CPUs) before it can be reused, so
/// the pool holds those on top of the running ones.
pub fn pool_slots(running: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(16);
    (running + cpus * (DECOMMIT_BATCH - 1)).max(32) * 2
}

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

/// Builds the engine of the `component` runtime and starts its epoch ticker.
///
/// Instances are allocated on demand rather than from the pool: a component built from
/// Python or JavaScript carries an interpreter made of a dozen core instances, with tables
/// of tens of thousands of functions and a memory image of tens of MiB, beyond the
/// per-slot sizes the pool reserves for every `wasm` sandbox. The image is still not copied
/// per instance: it is mapped copy-on-write (wasmtime's default), so only the pages a
/// handler writes cost anything.
pub fn build_for_components() -> wasmtime::Result<Engine> {
    let engine = Engine::new(&base_config())?;
    start_epoch_ticker(&engine);
    Ok(engine)
}

/// The settings both engines share.
fn base_config() -> Config {
    let mut config = Config::new();
    // Preemption: the compiled code checks the epoch at loop headers and calls, which costs
    // far less than fuel metering; at each tick a guest yields, so timers (timeouts) fire
    // and other tasks run even while an endless loop spins.
    config.epoch_interruption(true);
    // Optimised code; compiled once per module and cached on disk, so compile time matters
    // only on a cold start from source.
    config.cranelift_opt_level(OptLevel::Speed);
    config
}

fn config(limits: EngineLimits, pooling: bool) -> Config {
    let mut config = base_config();
    if pooling {
        // A fresh instance per event is affordable only when instantiation is a slot reuse
        // (≈1 µs) rather than an mmap of a new address space (≈6 µs plus page faults).
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(limits.instances)
            .total_memories(limits.instances)
            .total_tables(limits.instances)
            .total_component_instances(limits.instances)
            .total_stacks(limits.instances)
            .max_memory_size(limits.max_memory_bytes)
            // Returning a slot's pages to the kernel (madvise) costs a TLB shootdown across
            // every core per instance; zeroing the first MiB in place is cheaper, and most
            // functions touch less than that.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            // Where the kernel can say which pages a guest dirtied (Linux 6.7+), only those
            // are reset, instead of the whole resident MiB.
            .pagemap_scan(Enabled::Auto)
            .table_keep_resident(KEEP_RESIDENT_SMALL)
            .async_stack_keep_resident(KEEP_RESIDENT_SMALL)
            // What is still given back is given back in batches: one shootdown for many.
            .decommit_batch_size(DECOMMIT_BATCH);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// One thread per engine advances the epoch while any guest runs ([`Ticking`]) and sleeps
/// otherwise; it holds only a weak reference, so it exits once the engine is dropped.
///
/// A guest's deadlines count ticks from when it started, so an epoch that stood still while
/// nothing ran changes no guest's budget.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new().name("sluice-epoch".into()).spawn(move || {
        loop {
            if RUNNING_GUESTS.load(Ordering::SeqCst) == 0 {
                // A guest starting between the check and the park unparks first, and the park
                // then returns at once.
                std::thread::park_timeout(IDLE_CHECK);
            } else {
                std::thread::sleep(EPOCH_TICK);
            }
            match weak.upgrade() {
                Some(engine) => {
                    engine.increment_epoch();
                    TICKS.fetch_add(1, Ordering::Relaxed);
                }
                None => break,
            }
        }
        let me = std::thread::current().id();
        if let Ok(mut tickers) = TICKERS.lock() {
            tickers.retain(|t| t.id() != me);
        }
    });
    match spawned {
        Ok(handle) => {
            if let Ok(mut tickers) = TICKERS.lock() {
                tickers.push(handle.thread().clone());
            }
        }
        Err(error) => tracing::error!(%error, "Cannot start the epoch thread; timeouts will not be enforced."),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// The epoch thread sleeps while no guest runs and ticks while one does.
    #[test]
    fn the_epoch_advances_only_while_a_guest_runs() {
        let engine = build(EngineLimits { instances: 1, max_memory_bytes: 1 << 20 }).unwrap();
        // Other tests in this process run guests too: a window counts only when none started
        // or ran during it. One tick may follow the last guest's end (the sleep in progress).
        let mut quiet_windows = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while quiet_windows < 3 && Instant::now() < deadline {
            let (started, ticks) = (STARTED_GUESTS.load(Ordering::SeqCst), TICKS.load(Ordering::SeqCst));
            let idle_before = RUNNING_GUESTS.load(Ordering::SeqCst) == 0;
            std::thread::park_timeout(Duration::from_millis(50));
            let quiet = idle_before && RUNNING_GUESTS.load(Ordering::SeqCst) == 0 && STARTED_GUESTS.load(Ordering::SeqCst) == started;
            if quiet {
                let ticked = TICKS.load(Ordering::SeqCst) - ticks;
                assert!(ticked <= 1, "the epoch advanced {ticked} times in 50 ms while no guest ran");
                quiet_windows += 1;
            }
        }
        assert_eq!(quiet_windows, 3, "no quiet window in 20 s");

        let ticking = Ticking::start();
        let ticks = TICKS.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TICKS.load(Ordering::SeqCst) < ticks + 5 {
            assert!(Instant::now() < deadline, "the epoch did not advance while a guest ran");
            std::thread::yield_now();
        }
        drop(ticking);
        drop(engine);
    }
}
