//! What one plugin instance's store holds, and the host functions it may
//! call: logging, monotonic time, randomness, TCP to granted addresses, and
//! WASI with nothing granted.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::edge_dmi::driver::{host, tcp, types};
use crate::config::Grants;

/// Largest `random-bytes` request.
pub(crate) const MAX_RANDOM_BYTES: u32 = 4096;
/// Largest `recv` buffer.
pub(crate) const MAX_RECV: u32 = 65536;
/// Largest `send` payload (a plugin's own memory bounds it anyway).
pub(crate) const MAX_SEND: usize = 1 << 20;
/// Open TCP connections per instance.
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// Plugin log lines are cut here (bytes).
pub(crate) const LOG_LINE_MAX: usize = 1024;
/// Plugin log lines allowed in a burst, and refilled per second.
pub(crate) const LOG_BURST: f64 = 20.0;
/// See [`LOG_BURST`].
pub(crate) const LOG_PER_SECOND: f64 = 5.0;
/// The last bytes of the plugin's stderr kept for error messages (a panic
/// message ends up here).
pub(crate) const STDERR_TAIL: usize = 2048;
/// Tables (funcref tables of the plugin's core modules) may hold this many
/// elements.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

/// A TCP connection a plugin opened (the `connection` resource).
#[derive(Debug)]
#[allow(unreachable_pub)] // named by the generated bindings (a `pub use`)
pub struct TcpConnection {
    stream: tokio::net::TcpStream,
    address: String,
}

/// Why the host stopped a call (recognised when the call's error comes back).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Stop {
    /// The call ran past its deadline.
    #[error("ran past its deadline of {0:?}")]
    Deadline(Duration),
    /// A memory grew past the instance's cap.
    #[error("tried to grow its memory to {wanted} bytes, past its cap of {cap} MiB")]
    MemoryCap {
        /// Bytes asked for.
        wanted: usize,
        /// The cap, MiB.
        cap: usize,
    },
}

/// Token bucket of the plugin's log lines.
#[derive(Debug)]
struct LogLimiter {
    tokens: f64,
    last: Instant,
    dropped: u64,
}

impl LogLimiter {
    fn new() -> Self {
        Self {
            tokens: LOG_BURST,
            last: Instant::now(),
            dropped: 0,
        }
    }

    /// Whether a line may be logged now, and how many were dropped before it.
    fn admit(&mut self) -> Option<u64> {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * LOG_PER_SECOND;
        self.tokens = (self.tokens + refill).min(LOG_BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.dropped))
        } else {
            self.dropped += 1;
            None
        }
    }
}

/// The store data of one instance.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The plugin, for log lines and errors (file name).
    pub(crate) plugin: Arc<str>,
    grants: Arc<Grants>,
    /// When the running call must end.
    pub(crate) deadline: Instant,
    /// The running call's budget (for the error message).
    pub(crate) budget: Duration,
    memory_limit: usize,
    /// Set when the memory cap or the deadline stopped the instance.
    pub(crate) stopped: Option<Stop>,
    connections: usize,
    log: LogLimiter,
    stderr: StderrTail,
    started: Instant,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("plugin", &self.plugin)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

/// A wall clock that always reads the Unix epoch: plugins get no wall time
/// (timestamps are the SDK's job; durations come from the monotonic clock).
struct FrozenWallClock;

impl wasmtime_wasi::HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostState {
    pub(crate) fn new(plugin: Arc<str>, grants: Arc<Grants>, memory_limit: usize) -> Self {
        let stderr = StderrTail::default();
        // Nothing granted: no preopened directories, no environment or
        // arguments, no sockets (the default address check denies every
        // address, name lookup is off), stdin empty, stdout discarded, a
        // frozen wall clock. Monotonic time and randomness are granted.
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .wall_clock(FrozenWallClock)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .max_random_size(u64::from(MAX_RANDOM_BYTES))
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            plugin,
            grants,
            deadline: Instant::now(),
            budget: Duration::ZERO,
            memory_limit,
            stopped: None,
            connections: 0,
            log: LogLimiter::new(),
            stderr,
            started: Instant::now(),
        }
    }

    /// The last lines the plugin wrote to stderr (its panic message), if any.
    pub(crate) fn stderr_tail(&self) -> Option<String> {
        self.stderr.text()
    }

    /// Time left of the running call.
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn wait(&self, timeout_ms: u32) -> Duration {
        Duration::from_millis(u64::from(timeout_ms)).min(self.remaining())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime::ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            let stop = Stop::MemoryCap {
                wanted: desired,
                cap: self.memory_limit >> 20,
            };
            self.stopped = Some(stop.clone());
            return Err(stop.into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        let Some(dropped) = self.log.admit() else {
            return Ok(());
        };
        let plugin = &*self.plugin;
        if dropped > 0 {
            tracing::warn!(plugin, dropped, "plugin log lines dropped (rate limit)");
        }
        let message = cut(message, LOG_LINE_MAX);
        match level {
            host::Level::Error => tracing::error!(plugin, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, "{message}"),
            host::Level::Info => tracing::info!(plugin, "{message}"),
            host::Level::Debug => tracing::debug!(plugin, "{message}"),
            host::Level::Trace => tracing::trace!(plugin, "{message}"),
        }
        Ok(())
    }

    fn monotonic_now(&mut self) -> wasmtime::Result<u64> {
        Ok(u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn random_bytes(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        let mut buf = vec![0u8; len.min(MAX_RANDOM_BYTES) as usize];
        rand::fill(&mut buf[..]);
        Ok(buf)
    }
}

fn timeout_error(waited: Duration) -> types::DriverError {
    types::DriverError::Timeout(u64::try_from(waited.as_millis()).unwrap_or(u64::MAX))
}

impl tcp::Host for HostState {
    async fn connect(
        &mut self,
        address: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Resource<TcpConnection>, types::DriverError>> {
        let address = address.trim().to_owned();
        if !self.grants.allows_tcp(&address) {
            tracing::warn!(plugin = &*self.plugin, %address, "tcp connect denied: not granted");
            return Ok(Err(types::DriverError::Config(format!(
                "plugin {}: tcp connect to {address} denied: not in this device's grantTcp (granted: {})",
                self.plugin,
                self.grants.tcp_list()
            ))));
        }
        if self.connections >= MAX_CONNECTIONS {
            return Ok(Err(types::DriverError::Config(format!(
                "plugin {}: more than {MAX_CONNECTIONS} open connections",
                self.plugin
            ))));
        }
        let wait = self.wait(timeout_ms);
        let stream =
            match tokio::time::timeout(wait, tokio::net::TcpStream::connect(&address)).await {
                Err(_) => return Ok(Err(timeout_error(wait))),
                Ok(Err(e)) => {
                    return Ok(Err(types::DriverError::Transport(format!(
                        "connecting to {address}: {e}"
                    ))));
                }
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        self.connections += 1;
        Ok(Ok(self.table.push(TcpConnection { stream, address })?))
    }
}

impl tcp::HostConnection for HostState {
    async fn send(
        &mut self,
        conn: Resource<TcpConnection>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), types::DriverError>> {
        if data.len() > MAX_SEND {
            return Ok(Err(types::DriverError::Value(format!(
                "send of {} bytes; at most {MAX_SEND} per call",
                data.len()
            ))));
        }
        let wait = self.remaining();
        let c = self.table.get_mut(&conn)?;
        Ok(
            match tokio::time::timeout(wait, c.stream.write_all(&data)).await {
                Err(_) => Err(timeout_error(wait)),
                Ok(Err(e)) => Err(types::DriverError::Transport(format!(
                    "sending to {}: {e}",
                    c.address
                ))),
                Ok(Ok(())) => Ok(()),
            },
        )
    }

    async fn recv(
        &mut self,
        conn: Resource<TcpConnection>,
        max: u32,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, types::DriverError>> {
        let wait = self.wait(timeout_ms);
        let c = self.table.get_mut(&conn)?;
        let mut buf = vec![0u8; max.clamp(1, MAX_RECV) as usize];
        Ok(
            match tokio::time::timeout(wait, c.stream.read(&mut buf)).await {
                Err(_) => Err(timeout_error(wait)),
                Ok(Err(e)) => Err(types::DriverError::Transport(format!(
                    "receiving from {}: {e}",
                    c.address
                ))),
                Ok(Ok(n)) => {
                    buf.truncate(n);
                    Ok(buf)
                }
            },
        )
    }

    async fn drop(&mut self, conn: Resource<TcpConnection>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        self.connections = self.connections.saturating_sub(1);
        Ok(())
    }
}

/// The plugin's stderr: the last [`STDERR_TAIL`] bytes are kept (a panic
/// message ends up here and in the error of the trap that follows); writes
/// never fail and never block.
#[derive(Clone, Default)]
pub(crate) struct StderrTail(Arc<Mutex<VecDeque<u8>>>);

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        buf.extend(bytes);
        let excess = buf.len().saturating_sub(STDERR_TAIL);
        buf.drain(..excess);
    }

    fn text(&self) -> Option<String> {
        let buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = buf.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes).trim().to_owned();
        (!text.is_empty()).then_some(text)
    }
}

impl wasmtime_wasi::cli::IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(STDERR_TAIL)
    }
}

impl AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_limiter_lets_a_burst_through_then_counts_drops() {
        let mut l = LogLimiter::new();
        let admitted = (0..100).filter(|_| l.admit().is_some()).count();
        assert!((20..=21).contains(&admitted), "{admitted}");
        assert!(l.dropped >= 79);
    }

    #[test]
    fn stderr_keeps_only_its_tail() {
        let t = StderrTail::default();
        t.push(&vec![b'a'; 5000]);
        t.push(b"panicked at boom");
        let text = t.text().unwrap();
        assert_eq!(text.len(), STDERR_TAIL);
        assert!(text.ends_with("panicked at boom"));
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let s = cut("é".repeat(1000), 11);
        assert!(s.len() <= 14 && s.ends_with('…'), "{s}");
    }
}
