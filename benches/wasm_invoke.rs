//! The wasm runtime's hot path: a fresh instance per event (instantiate + `_start` + drop),
//! against bare wasmtime doing the same with the same engine, in one run.
//!
//! Needs the example modules: ``sluice build``.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmarks fail loudly

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use sluice::config::FunctionConfig;
use sluice::event::Event;
use sluice::runtime::wasm::{HostConfig, WasmHost};
use sluice::runtime::Invocation;
use wasmtime::{Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::WasiCtxBuilder;

fn module_bytes() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions/hello/hello.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run `sluice build`", path.display()))
}

fn invoke(c: &mut Criterion) {
    let bytes = module_bytes();
    let cache = tempfile::tempdir().unwrap();
    let host = WasmHost::new(HostConfig { max_concurrent: 4, max_memory_mb: 64, cache_dir: cache.path().to_path_buf(), buckets_dir: None }).unwrap();
    let config: FunctionConfig =
        toml::from_str("name = \"hello\"\nruntime = \"wasm\"\nmodule = \"hello.wasm\"\nmemory_mb = 64\ntimeout = \"3s\"").unwrap();
    let function = host.load_bytes(&config, &bytes).unwrap();
    let data = Bytes::from_static(br#"{"name":"bench"}"#);
    let event = Arc::new(Event::new("bench", "bench", data.clone()));

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let handle = rt.handle().clone();
    let mut group = c.benchmark_group("wasm_invoke");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("sluice_runtime", |b| {
        b.iter(|| {
            let invocation = Invocation {
                request_id: "r".into(),
                attempt: 1,
                event: event.clone(),
            };
            function.invoke_on_this_thread(&handle, &invocation).unwrap()
        })
    });

    // Baseline: the same engine, module and WASI stdio, nothing else.
    let engine = host.engine().clone();
    let module = Module::new(&engine, &bytes).unwrap();
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s| s).unwrap();
    let pre = linker.instantiate_pre(&module).unwrap();
    group.bench_function("bare_wasmtime", |b| {
        b.iter(|| {
            let stdout = MemoryOutputPipe::new(1 << 20);
            let wasi = WasiCtxBuilder::new()
                .stdin(MemoryInputPipe::new(data.clone()))
                .stdout(stdout.clone())
                .stderr(MemoryOutputPipe::new(1 << 16))
                .build_p1();
            let mut store = Store::new(&engine, wasi);
            store.set_epoch_deadline(1_000_000);
            handle.block_on(async {
                let instance = pre.instantiate_async(&mut store).await.unwrap();
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start").unwrap();
                start.call_async(&mut store, ()).await.unwrap();
            });
            stdout.contents()
        })
    });
    group.finish();
}

criterion_group!(benches, invoke);
criterion_main!(benches);
