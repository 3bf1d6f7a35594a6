//! The guest's stdout and stderr: one capped buffer per instance, emptied at the end of every
//! call.
//!
//! A warm instance keeps its WASI context between calls, and a guest may hold on to the stream
//! handles it got from `get-stdout`/`get-stderr` (wasi-libc does), so the streams cannot be
//! replaced per call; their buffer is taken instead ([`GuestOutput::take`]). What one call
//! wrote is never seen by the next. The cap is per call: past [`GuestOutput::new`]'s capacity
//! the streams report closed to the guest, and the instance is not reused (its libc may have
//! given up on the stream for good).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// stdout and stderr of one instance, in the order written (both streams share it).
#[derive(Clone)]
pub(crate) struct GuestOutput {
    capacity: usize,
    buffer: Arc<Mutex<Buffer>>,
}

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    /// A write was refused since the last `take`.
    full: bool,
}

impl GuestOutput {
    /// An empty buffer holding at most `capacity` bytes per call.
    pub(crate) fn new(capacity: usize) -> GuestOutput {
        GuestOutput {
            capacity,
            buffer: Arc::new(Mutex::new(Buffer::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the guest wrote since the last call of `take`, and whether it reached the cap;
    /// the buffer is empty afterwards.
    pub(crate) fn take(&self) -> (Vec<u8>, bool) {
        let mut buffer = self.lock();
        let full = std::mem::take(&mut buffer.full);
        (std::mem::take(&mut buffer.bytes), full)
    }

    /// Appends what fits; returns how many bytes were kept.
    fn append(&self, bytes: &[u8]) -> usize {
        let mut buffer = self.lock();
        let room = self.capacity.saturating_sub(buffer.bytes.len());
        let kept = bytes.len().min(room);
        if kept < bytes.len() {
            buffer.full = true;
        }
        buffer.bytes.extend_from_slice(&bytes[..kept]);
        kept
    }

    fn room(&self) -> usize {
        let buffer = self.lock();
        self.capacity.saturating_sub(buffer.bytes.len())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        // A write past the permit of `check_write` is cut, not a trap: the output is a
        // diagnostic, never worth failing a call for.
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        match self.room() {
            0 => {
                self.lock().full = true;
                Err(StreamError::Closed)
            }
            room => Ok(room),
        }
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // Everything is "written": what does not fit is dropped (and noted).
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

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_empties_the_buffer_and_the_cap_is_per_call() {
        let out = GuestOutput::new(8);
        let mut stream = out.clone();
        assert_eq!(stream.check_write().ok(), Some(8));
        stream.write(Bytes::from_static(b"hello")).ok();
        stream.write(Bytes::from_static(b" world")).ok();
        assert!(stream.check_write().is_err(), "full: closed to the guest");
        assert_eq!(out.take(), (b"hello wo".to_vec(), true));
        // The next call starts empty, with the whole cap again.
        assert_eq!(stream.check_write().ok(), Some(8));
        stream.write(Bytes::from_static(b"next")).ok();
        assert_eq!(out.take(), (b"next".to_vec(), false));
        assert_eq!(out.take(), (Vec::new(), false));
    }
}
