//! A response over the 6 MiB payload limit fails its attempt with its own kind,
//! `response_too_large`, naming both sizes (not a generic `invalid_response`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use common::*;

/// A WASI command that writes 112 blocks of 64 KiB (7 MiB) to stdout.
const LOUD: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 3)
  (func (export "_start")
    (local $i i32)
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $more
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $i) (i32.const 112))))))
"#;

#[test]
fn an_oversized_response_names_both_sizes() {
    let project = Project::new();
    let dir = project.path().join("functions/loud");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("loud.wasm"), wat::parse_str(LOUD).unwrap()).unwrap();
    std::fs::write(dir.join("function.toml"), "name = \"loud\"\nruntime = \"wasm\"\nmodule = \"loud.wasm\"\n").unwrap();

    let out = project.sluice_with_stdin(&["--json", "invoke", "loud", "--event", "-"], b"{}");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "response_too_large", "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains(&(112 * 65536).to_string()) && error.contains("6291456"), "{error}");
}
