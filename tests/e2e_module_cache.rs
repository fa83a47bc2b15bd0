//! The compiled-module cache never serves stale code: after a function's `.wasm` is replaced
//! the next `sluice invoke` runs the new module (a new cache entry, the old one unused), and a
//! corrupted cache file is reported with a warning and recompiled, not run or fatal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A WASI command module that ignores its event and answers `{"module":"v2"}`.
const V2: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"module\":\"v2\"}\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

/// `sluice --json invoke greeter`: its response.
fn invoke(project: &Project) -> (serde_json::Value, String) {
    let out = project.sluice(&["--json", "invoke", "greeter"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "invoke failed: {stderr}");
    let output: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (output["response"].clone(), stderr)
}

/// The compiled modules in the cache.
fn cached(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "cwasm")).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn a_replaced_module_is_recompiled_and_a_corrupted_cache_file_ignored() {
    let project = Project::new();
    // A cache of its own: this test corrupts it.
    std::fs::write(project.path().join("sluice.toml"), "[runtime]\ncache_dir = \"module-cache\"\n").unwrap();
    let cache = project.path().join("module-cache");
    let folder = project.path().join("functions/greeter");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("function.toml"), "name = \"greeter\"\nruntime = \"wasm\"\nmodule = \"greeter.wasm\"\n").unwrap();
    let module = folder.join("greeter.wasm");

    // The hello module: compiled and cached.
    std::fs::copy(example_module("hello"), &module).unwrap();
    let (response, _) = invoke(&project);
    assert_eq!(response["message"], "Hello, world!", "{response}");
    let first = cached(&cache);
    assert_eq!(first.len(), 1, "one compiled module cached: {first:?}");

    // The same path, another module: the new behaviour, from a new cache entry.
    std::fs::write(&module, wat::parse_str(V2).unwrap()).unwrap();
    let (response, _) = invoke(&project);
    assert_eq!(response, serde_json::json!({"module": "v2"}), "the replaced module ran, not the cached one");
    let second = cached(&cache);
    assert_eq!(second.len(), 2, "the changed module has its own cache entry: {second:?}");

    // And back: the first entry serves it again, still the right code.
    std::fs::copy(example_module("hello"), &module).unwrap();
    let (response, _) = invoke(&project);
    assert_eq!(response["message"], "Hello, world!", "{response}");

    // A corrupted cache file: a warning, a fresh compile, a working invocation, a good file.
    std::fs::write(&first[0], b"not a compiled module").unwrap();
    let (response, stderr) = invoke(&project);
    assert_eq!(response["message"], "Hello, world!", "{response}");
    assert!(stderr.contains("Replacing an unreadable cached module"), "no warning about the corrupted cache file: {stderr}");
    assert!(stderr.contains(&first[0].display().to_string()), "the warning names the file: {stderr}");
    let repaired = std::fs::read(&first[0]).unwrap();
    assert_ne!(repaired, b"not a compiled module", "the corrupted file was replaced");
    let (response, stderr) = invoke(&project);
    assert_eq!(response["message"], "Hello, world!", "{response}");
    assert!(!stderr.contains("unreadable"), "the repaired file loads without a warning: {stderr}");
    assert_eq!(cached(&cache), second, "no other cache entries appeared");
}
