//! A guest's stdout/stderr captured in memory up to a cap. Past the cap, writes still
//! succeed (the guest is not failed for talking too much) but the bytes are dropped and the
//! overflow is recorded, so the runtime can cut logs with a note and refuse an oversized
//! response with a clear error.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Clone)]
pub struct CappedOutput {
    cap: usize,
    buffer: Arc<Mutex<BytesMut>>,
    overflowed: Arc<AtomicBool>,
    /// Everything the guest wrote, kept or not.
    written: Arc<std::sync::atomic::AtomicU64>,
}

impl CappedOutput {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            buffer: Arc::new(Mutex::new(BytesMut::new())),
            overflowed: Arc::new(AtomicBool::new(false)),
            written: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// What was kept.
    pub fn contents(&self) -> Bytes {
        self.buffer.lock().map(|b| b.clone().freeze()).unwrap_or_default()
    }

    /// Whether the guest wrote more than the cap.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// How many bytes the guest wrote in all, including those dropped past the cap.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    fn append(&self, bytes: &[u8]) {
        self.written.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if let Ok(mut buffer) = self.buffer.lock() {
            let room = self.cap.saturating_sub(buffer.len());
            if bytes.len() > room {
                self.overflowed.store(true, Ordering::Relaxed);
            }
            buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_records_overflow() {
        let mut out = CappedOutput::new(4);
        out.write(Bytes::from_static(b"ab")).unwrap();
        assert!(!out.overflowed());
        out.write(Bytes::from_static(b"cdef")).unwrap();
        assert_eq!(&out.contents()[..], b"abcd");
        assert!(out.overflowed());
    }
}
