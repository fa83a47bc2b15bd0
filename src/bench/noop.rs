//! The no-op function `sluice bench` runs: a WASI preview-1 command that pays what every real
//! function pays on the I/O path and nothing more. It reads the whole event from stdin, reads
//! the realtime clock as its first act (the moment of handler entry), and answers
//! `{"entered_ns":<that clock>}` on stdout, which the dispatcher publishes as the result.

/// The module's text; `variant` adds a distinct data segment so each variant is a different
/// module (a different content hash, never compiled or cached before).
pub fn wat(variant: Option<usize>) -> String {
    let tag = variant.map_or(String::new(), |v| format!("  (data (i32.const 512) \"variant-{v}\")\n"));
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "{{\"entered_ns\":")
{tag}  (func (export "_start")
    (local $t i64) (local $p i32)
    ;; handler entry: realtime clock, nanoseconds
    (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 16)))
    ;; read the whole event (iovec at 0: 4 KiB buffer at 1024)
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 4096))
    (block $done
      (loop $more
        (br_if $done (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br_if $done (i32.eqz (i32.load (i32.const 8))))
        (br $more)))
    ;; the clock in decimal, written backwards to end at 300 (20 digits at most: 280..300)
    (local.set $t (i64.load (i32.const 16)))
    (local.set $p (i32.const 300))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $t) (i64.const 10)))))
      (local.set $t (i64.div_u (local.get $t) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $t) (i64.const 0))))
    ;; one contiguous answer: prefix copied before the digits, brace after (WASI may write
    ;; only the first of several iovecs, so a single one keeps the guest simple)
    (local.set $p (i32.sub (local.get $p) (i32.const 14)))
    (memory.copy (local.get $p) (i32.const 256) (i32.const 14))
    (i32.store8 (i32.const 300) (i32.const 125))
    (i32.store (i32.const 32) (local.get $p))
    (i32.store (i32.const 36) (i32.sub (i32.const 301) (local.get $p)))
    (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 60)))))
"#
    )
}

/// The module's binary.
pub fn module(variant: Option<usize>) -> anyhow::Result<Vec<u8>> {
    wat::parse_str(wat(variant)).map_err(|e| anyhow::anyhow!("the built-in no-op module does not assemble: {e}"))
}
