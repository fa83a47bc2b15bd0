//! Misbehaves when the event asks it to, to show retries, timeouts, memory limits and the
//! dead-letter queue:
//! - `{"fail": true}`: fails every attempt (exit status 1)
//! - `{"fail_until_attempt": 3}`: fails attempts 1 and 2, succeeds on 3
//! - `{"panic": "message"}`: panics (a trap)
//! - `{"loop": true}`: never returns (stopped at the function's timeout)
//! - `{"alloc_mb": 512}`: allocates and touches that much memory
//! - `{"bad_output": true}`: writes something that is not JSON
//! - `{"sleep_ms": 200}`: takes that long before answering (combines with the above)
//! - environment `FLAKY_FAIL=1` (in function.toml's `env`): fails every event, until the
//!   setting is removed; shows fixing a cause and replaying the dead letters
//! - environment `FLAKY_ECHO=1`: answers with the event it received
//! - `{"read_file": PATH}`, `{"write_file": PATH, "content": TEXT}`, `{"list_dir": PATH}`:
//!   tries that on the sandbox's file system and answers `{"ok": true, ...}` or
//!   `{"ok": false, "error": ...}` (shows what a function granted buckets can reach)
//! Anything else succeeds with `{"ok": true, "attempt": N}`.

use std::io::Read;

fn main() {
    let mut input = String::new();
    let _ = std::io::stdin().read_to_string(&mut input);
    let event: serde_json::Value = serde_json::from_str(&input).unwrap_or(serde_json::Value::Null);
    let attempt: u64 = std::env::var("SLUICE_ATTEMPT").ok().and_then(|a| a.parse().ok()).unwrap_or(1);
    let flag = |key: &str| event.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
    if std::env::var("FLAKY_ECHO").is_ok_and(|v| v == "1") {
        println!("{event}");
        return;
    }

    if let Some(answer) = file_op(&event) {
        println!("{answer}");
        return;
    }
    if let Some(ms) = event.get("sleep_ms").and_then(|v| v.as_u64()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    if flag("fail") || std::env::var("FLAKY_FAIL").is_ok_and(|v| v == "1") {
        eprintln!("failing on purpose (attempt {attempt})");
        std::process::exit(1);
    }
    if let Some(until) = event.get("fail_until_attempt").and_then(|v| v.as_u64()) {
        if attempt < until {
            eprintln!("failing attempt {attempt}; attempt {until} will succeed");
            std::process::exit(1);
        }
    }
    if let Some(message) = event.get("panic").and_then(|v| v.as_str()) {
        panic!("{message}");
    }
    if flag("loop") {
        eprintln!("looping forever");
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
    if let Some(mb) = event.get("alloc_mb").and_then(|v| v.as_u64()) {
        eprintln!("allocating {mb} MiB");
        let mut blocks = Vec::new();
        for _ in 0..mb {
            let block = vec![1u8; 1024 * 1024];
            blocks.push(std::hint::black_box(block));
        }
        println!("{}", serde_json::json!({ "allocated_mb": blocks.len() }));
        return;
    }
    if flag("bad_output") {
        println!("this is not json");
        return;
    }
    println!("{}", serde_json::json!({ "ok": true, "attempt": attempt }));
}

/// The file-system probes; `None` when the event asks for none.
fn file_op(event: &serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::json;
    let text = |key: &str| event.get(key).and_then(|v| v.as_str());
    let outcome = |result: std::io::Result<serde_json::Value>| match result {
        Ok(value) => json!({ "ok": true, "result": value }),
        Err(error) => json!({ "ok": false, "error": error.to_string() }),
    };
    if let Some(path) = text("read_file") {
        return Some(outcome(std::fs::read_to_string(path).map(serde_json::Value::String)));
    }
    if let Some(path) = text("write_file") {
        let content = text("content").unwrap_or_default();
        return Some(outcome(std::fs::write(path, content).map(|()| json!(content.len()))));
    }
    if let Some(path) = text("list_dir") {
        let names = std::fs::read_dir(path).and_then(|entries| {
            let mut names = entries.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect::<std::io::Result<Vec<_>>>()?;
            names.sort();
            Ok(json!(names))
        });
        return Some(outcome(names));
    }
    None
}
