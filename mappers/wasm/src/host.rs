//! What one plugin instance's store holds, and the host functions it may
//! call: logging, monotonic time, randomness, TCP and UDP to granted
//! addresses, granted serial ports, and WASI with nothing granted.

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

use crate::bindings::edge_dmi::driver::{host, serial, tcp, types, udp};
use crate::config::Grants;

/// Largest `random-bytes` request.
pub(crate) const MAX_RANDOM_BYTES: u32 = 4096;
/// Largest `recv` (TCP, UDP) or `read` (serial) buffer, bytes.
pub(crate) const MAX_RECV: u32 = 65536;
/// Largest TCP `send` or serial `write` payload, bytes (a plugin's own
/// memory bounds it anyway).
pub(crate) const MAX_SEND: usize = 1 << 20;
/// Largest UDP datagram payload, bytes (what IPv4 can carry).
pub(crate) const MAX_DATAGRAM: usize = 65507;
/// Open TCP connections, UDP sockets and serial ports per instance, together.
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// Highest serial baud rate accepted, bits per second.
pub(crate) const MAX_BAUD_RATE: u32 = 4_000_000;
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

/// A UDP socket a plugin opened (the `socket` resource), connected to one
/// granted peer.
#[derive(Debug)]
#[allow(unreachable_pub)] // named by the generated bindings (a `pub use`)
pub struct UdpSocket {
    socket: tokio::net::UdpSocket,
    address: String,
}

/// A serial port a plugin opened (the `port` resource).
#[derive(Debug)]
#[allow(unreachable_pub)] // named by the generated bindings (a `pub use`)
pub struct SerialPort {
    port: tokio_serial::SerialStream,
    path: String,
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

    /// The `config` error of a capability use that the device does not
    /// grant: it names the plugin, what was asked (`target`), the configData
    /// key that would grant it and what that key grants.
    fn denied(&self, what: &str, target: &str, key: &str, granted: &str) -> types::DriverError {
        tracing::warn!(
            plugin = &*self.plugin,
            "{what} {target} denied: not in {key}"
        );
        types::DriverError::Config(format!(
            "plugin {}: {what} {target} denied: not in this device's {key} (granted: {granted})",
            self.plugin
        ))
    }

    /// The error of opening one more connection, socket or port than
    /// [`MAX_CONNECTIONS`], if this would be one.
    fn over_limit(&self) -> Option<types::DriverError> {
        (self.connections >= MAX_CONNECTIONS).then(|| {
            types::DriverError::Config(format!(
                "plugin {}: more than {MAX_CONNECTIONS} open connections, sockets and ports",
                self.plugin
            ))
        })
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
            let granted = self.grants.tcp_list();
            return Ok(Err(self.denied(
                "tcp connect to",
                &address,
                "grantTcp",
                &granted,
            )));
        }
        if let Some(e) = self.over_limit() {
            return Ok(Err(e));
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

/// A UDP socket bound to an ephemeral port of `address`'s family and
/// connected to it: the kernel then drops datagrams from anyone else.
async fn open_udp(address: &str) -> io::Result<tokio::net::UdpSocket> {
    let mut last = None;
    for peer in tokio::net::lookup_host(address).await? {
        let local: std::net::SocketAddr = if peer.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = match tokio::net::UdpSocket::bind(local).await {
            Ok(s) => s,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        match socket.connect(peer).await {
            Ok(()) => return Ok(socket),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address")
    }))
}

impl udp::Host for HostState {
    async fn open(
        &mut self,
        address: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Resource<UdpSocket>, types::DriverError>> {
        let address = address.trim().to_owned();
        if !self.grants.allows_udp(&address) {
            let granted = self.grants.udp_list();
            return Ok(Err(self.denied(
                "udp socket to",
                &address,
                "grantUdp",
                &granted,
            )));
        }
        if let Some(e) = self.over_limit() {
            return Ok(Err(e));
        }
        let wait = self.wait(timeout_ms);
        let socket = match tokio::time::timeout(wait, open_udp(&address)).await {
            Err(_) => return Ok(Err(timeout_error(wait))),
            Ok(Err(e)) => {
                return Ok(Err(types::DriverError::Transport(format!(
                    "opening a UDP socket to {address}: {e}"
                ))));
            }
            Ok(Ok(s)) => s,
        };
        let handle = self.table.push(UdpSocket { socket, address })?;
        self.connections += 1;
        Ok(Ok(handle))
    }
}

impl udp::HostSocket for HostState {
    async fn send(
        &mut self,
        socket: Resource<UdpSocket>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), types::DriverError>> {
        if data.len() > MAX_DATAGRAM {
            return Ok(Err(types::DriverError::Value(format!(
                "datagram of {} bytes; at most {MAX_DATAGRAM}",
                data.len()
            ))));
        }
        let wait = self.remaining();
        let s = self.table.get(&socket)?;
        Ok(
            match tokio::time::timeout(wait, s.socket.send(&data)).await {
                Err(_) => Err(timeout_error(wait)),
                Ok(Err(e)) => Err(types::DriverError::Transport(format!(
                    "sending to {}: {e}",
                    s.address
                ))),
                Ok(Ok(n)) if n < data.len() => Err(types::DriverError::Transport(format!(
                    "sending to {}: only {n} of {} bytes went out",
                    s.address,
                    data.len()
                ))),
                Ok(Ok(_)) => Ok(()),
            },
        )
    }

    async fn recv(
        &mut self,
        socket: Resource<UdpSocket>,
        max: u32,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, types::DriverError>> {
        let wait = self.wait(timeout_ms);
        let s = self.table.get(&socket)?;
        let mut buf = vec![0u8; max.clamp(1, MAX_RECV) as usize];
        Ok(
            match tokio::time::timeout(wait, s.socket.recv(&mut buf)).await {
                Err(_) => Err(timeout_error(wait)),
                Ok(Err(e)) => Err(types::DriverError::Transport(format!(
                    "receiving from {}: {e}",
                    s.address
                ))),
                Ok(Ok(n)) => {
                    buf.truncate(n);
                    Ok(buf)
                }
            },
        )
    }

    async fn drop(&mut self, socket: Resource<UdpSocket>) -> wasmtime::Result<()> {
        self.table.delete(socket)?;
        self.connections = self.connections.saturating_sub(1);
        Ok(())
    }
}

/// The port builder for `settings`, or why they are not supported.
fn serial_builder(
    path: &str,
    settings: &serial::Settings,
) -> Result<tokio_serial::SerialPortBuilder, String> {
    use tokio_serial::{DataBits, FlowControl, Parity, StopBits};
    if !(1..=MAX_BAUD_RATE).contains(&settings.baud_rate) {
        return Err(format!(
            "baud rate {} is not from 1 to {MAX_BAUD_RATE}",
            settings.baud_rate
        ));
    }
    let data_bits = match settings.data_bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        8 => DataBits::Eight,
        n => return Err(format!("{n} data bits; 5, 6, 7 or 8")),
    };
    let stop_bits = match settings.stop_bits {
        1 => StopBits::One,
        2 => StopBits::Two,
        n => return Err(format!("{n} stop bits; 1 or 2")),
    };
    let parity = match settings.parity {
        serial::Parity::None => Parity::None,
        serial::Parity::Odd => Parity::Odd,
        serial::Parity::Even => Parity::Even,
    };
    Ok(tokio_serial::new(path, settings.baud_rate)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .parity(parity)
        .flow_control(FlowControl::None))
}

impl serial::Host for HostState {
    async fn open(
        &mut self,
        path: String,
        settings: serial::Settings,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Resource<SerialPort>, types::DriverError>> {
        if !self.grants.allows_serial(&path) {
            let granted = self.grants.serial_list();
            return Ok(Err(self.denied(
                "serial open of",
                &path,
                "grantSerial",
                &granted,
            )));
        }
        let builder = match serial_builder(&path, &settings) {
            Ok(b) => b,
            Err(why) => {
                return Ok(Err(types::DriverError::Config(format!(
                    "serial port {path}: {why}"
                ))));
            }
        };
        if let Some(e) = self.over_limit() {
            return Ok(Err(e));
        }
        let wait = self.wait(timeout_ms);
        // Opening a tty is a handful of system calls that may sleep (a port
        // whose driver is slow to answer): never on a runtime thread.
        let opening =
            tokio::task::spawn_blocking(move || tokio_serial::SerialStream::open(&builder));
        let port = match tokio::time::timeout(wait, opening).await {
            Err(_) => return Ok(Err(timeout_error(wait))),
            Ok(Err(e)) => {
                return Ok(Err(types::DriverError::Transport(format!(
                    "opening {path}: {e}"
                ))));
            }
            Ok(Ok(Err(e))) => {
                return Ok(Err(types::DriverError::Transport(format!(
                    "opening {path}: {e}"
                ))));
            }
            Ok(Ok(Ok(p))) => p,
        };
        let handle = self.table.push(SerialPort { port, path })?;
        self.connections += 1;
        Ok(Ok(handle))
    }
}

impl serial::HostPort for HostState {
    async fn write(
        &mut self,
        port: Resource<SerialPort>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), types::DriverError>> {
        if data.len() > MAX_SEND {
            return Ok(Err(types::DriverError::Value(format!(
                "write of {} bytes; at most {MAX_SEND} per call",
                data.len()
            ))));
        }
        let wait = self.remaining();
        let p = self.table.get_mut(&port)?;
        Ok(
            match tokio::time::timeout(wait, p.port.write_all(&data)).await {
                Err(_) => Err(timeout_error(wait)),
                Ok(Err(e)) => Err(types::DriverError::Transport(format!(
                    "writing to {}: {e}",
                    p.path
                ))),
                Ok(Ok(())) => Ok(()),
            },
        )
    }

    async fn read(
        &mut self,
        port: Resource<SerialPort>,
        max: u32,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, types::DriverError>> {
        let wait = self.wait(timeout_ms);
        let p = self.table.get_mut(&port)?;
        let mut buf = vec![0u8; max.clamp(1, MAX_RECV) as usize];
        Ok(
            match tokio::time::timeout(wait, p.port.read(&mut buf)).await {
                Err(_) => Err(timeout_error(wait)),
                Ok(Err(e)) => Err(types::DriverError::Transport(format!(
                    "reading from {}: {e}",
                    p.path
                ))),
                Ok(Ok(0)) => Err(types::DriverError::Transport(format!(
                    "{} was closed",
                    p.path
                ))),
                Ok(Ok(n)) => {
                    buf.truncate(n);
                    Ok(buf)
                }
            },
        )
    }

    async fn drop(&mut self, port: Resource<SerialPort>) -> wasmtime::Result<()> {
        self.table.delete(port)?;
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
    fn serial_settings_outside_what_a_uart_does_are_named() {
        let ok = serial::Settings {
            baud_rate: 9600,
            data_bits: 8,
            parity: serial::Parity::Even,
            stop_bits: 1,
        };
        assert!(serial_builder("/dev/ttyS0", &ok).is_ok());
        for (bad, expect) in [
            (serial::Settings { baud_rate: 0, ..ok }, "baud rate 0"),
            (serial::Settings { data_bits: 9, ..ok }, "9 data bits"),
            (serial::Settings { stop_bits: 3, ..ok }, "3 stop bits"),
        ] {
            let e = serial_builder("/dev/ttyS0", &bad).err().unwrap();
            assert!(e.contains(expect), "{e}");
        }
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let s = cut("é".repeat(1000), 11);
        assert!(s.len() <= 14 && s.ends_with('…'), "{s}");
    }
}
