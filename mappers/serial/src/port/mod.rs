//! Ports: one owner per serial device path, a reader task per open port that
//! cuts frames and hands each to whoever wants it, and requests taking turns.
//!
//! * **One owner per port.** [`Pool`] keys ports by the path as configured;
//!   every device on a path shares one [`Port`], whose line settings are the
//!   first device's. A device asking for other settings on the same path is a
//!   [`DriverError::Config`] naming both settings.
//! * **Turns.** A request (a read's `request`, a write) holds the port's
//!   [`SharedLink`] turn from writing to its answer: devices on an RS-485 line
//!   take turns, responsive ones first (see [`mapper_sdk::link`]).
//! * **One reader per open port.** It cuts frames with the framing of the
//!   request waiting for its answer, or else that of the streamed values
//!   ([`crate::frame`]), and offers each frame to the waiting request, to every
//!   subscription (streamed values) and to reads of streamed values. A frame
//!   nobody takes is discarded and counted ([`DiscardCounts`]), with a log
//!   line at most every [`LOG_EVERY`] (bytes that arrive while nothing on the
//!   port listens, such as a device streaming before it is subscribed to,
//!   are counted but not logged). The reader never stops on bad input;
//!   it ends only when the port fails (unplugged, PTY peer gone), which fails
//!   the waiting request, ends the subscriptions and makes the next request
//!   reopen the port.
//! * **Answers.** A waiting request takes the first frame whose checksum
//!   checks and that gives its value (or matches its `ack`); frames that do
//!   not are remembered and discarded, and the request keeps waiting. At its
//!   timeout, a request that saw only such frames fails with
//!   [`DriverError::Value`] (a read) or [`DriverError::Device`] (a write whose
//!   `ack` did not match), naming the last few (frames a streamed property
//!   recognised are not counted as answers); one that saw nothing fails with
//!   [`DriverError::Timeout`].
//! * **Stale input.** Before a request is sent on a port without streamed
//!   values, bytes still buffered are dropped (a late answer to an earlier
//!   request must not be taken for this one's). A late answer that arrives
//!   after the next request went out cannot be told apart: anchor the
//!   `regex` (or use an address in the answer) where that matters.

mod demux;

pub use demux::DiscardCounts;
pub(crate) use demux::{Expect, Shared, Subscriber};

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use mapper_sdk::link::SharedLink;
use mapper_sdk::{DriverError, DriverResult, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::config::{FlowControl, LineSettings, Parity, SerialConfig};
use crate::visitor::Visitor;

use demux::Stats;

/// Shortest time between two log lines about discarded input on one port.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// A byte stream a port is opened as: a serial port, a PTY, or an in-memory
/// pipe in tests.
pub trait SerialIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> SerialIo for T {}

/// Opens ports. [`TtyOpener`] opens real serial ports (and PTYs); tests pass
/// their own to talk to an in-process fake device.
pub trait Opener: Send + Sync + 'static {
    /// Opens `path` with `line`. Called from within the Tokio runtime.
    ///
    /// # Errors
    /// The I/O error (a missing device is [`io::ErrorKind::NotFound`]).
    fn open(&self, path: &str, line: &LineSettings) -> io::Result<Box<dyn SerialIo>>;
}

/// Opens serial ports with `tokio-serial` (exclusive access: another process
/// cannot open the port while this one has it).
#[derive(Debug, Default, Clone, Copy)]
pub struct TtyOpener;

impl Opener for TtyOpener {
    fn open(&self, path: &str, line: &LineSettings) -> io::Result<Box<dyn SerialIo>> {
        use tokio_serial::SerialPortBuilderExt;
        let port = tokio_serial::new(path, line.baud_rate)
            .data_bits(match line.data_bits {
                5 => tokio_serial::DataBits::Five,
                6 => tokio_serial::DataBits::Six,
                7 => tokio_serial::DataBits::Seven,
                _ => tokio_serial::DataBits::Eight,
            })
            .parity(match line.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            })
            .stop_bits(if line.stop_bits == 2 {
                tokio_serial::StopBits::Two
            } else {
                tokio_serial::StopBits::One
            })
            .flow_control(match line.flow_control {
                FlowControl::None => tokio_serial::FlowControl::None,
                FlowControl::Software => tokio_serial::FlowControl::Software,
                FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
            })
            .open_native_async()
            .map_err(|e| {
                let kind = match e.kind {
                    tokio_serial::ErrorKind::Io(k) => k,
                    tokio_serial::ErrorKind::NoDevice => io::ErrorKind::NotFound,
                    tokio_serial::ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
                    tokio_serial::ErrorKind::Unknown => io::ErrorKind::Other,
                };
                io::Error::new(kind, e.description)
            })?;
        Ok(Box::new(port))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn read_loop(mut rd: ReadHalf<Box<dyn SerialIo>>, shared: Arc<Shared>) {
    let mut chunk = vec![0u8; 1024];
    loop {
        match rd.read(&mut chunk).await {
            Ok(0) => {
                shared.close(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the port closed",
                ));
                return;
            }
            Ok(n) => shared.feed(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                shared.close(e);
                return;
            }
        }
    }
}

/// Aborts the reader task when the connection is dropped (its only owner).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Conn {
    writer: WriteHalf<Box<dyn SerialIo>>,
    shared: Arc<Shared>,
    _reader: AbortOnDrop,
}

impl Drop for Conn {
    /// Whoever still waits on the connection (another device's subscription
    /// after a failed write, say) learns that it is gone.
    fn drop(&mut self) {
        self.shared.end_all(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the port was closed",
        ));
    }
}

/// One serial port shared by every device configured on its path.
pub struct Port {
    path: Arc<str>,
    line: LineSettings,
    opener: Arc<dyn Opener>,
    link: SharedLink<Option<Conn>>,
    stats: Arc<Stats>,
    opens: AtomicU64,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("path", &self.path)
            .field("line", &self.line)
            .field("opens", &self.opens.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Port {
    /// The path as configured.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The line settings the port is driven with.
    pub fn line(&self) -> &LineSettings {
        &self.line
    }

    /// Times the port was opened (1 + reopens after failures).
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }

    /// Input discarded so far.
    pub fn discards(&self) -> DiscardCounts {
        self.stats.counts()
    }

    fn open(&self) -> DriverResult<Conn> {
        let io = self.opener.open(&self.path, &self.line).map_err(|e| {
            DriverError::io(io::Error::new(
                e.kind(),
                format!("serial port {}: {e}", self.path),
            ))
        })?;
        self.opens.fetch_add(1, Ordering::Relaxed);
        let (rd, writer) = tokio::io::split(io);
        let shared = Arc::new(Shared::new(
            self.path.clone(),
            self.line.inter_frame_gap,
            self.stats.clone(),
        ));
        let reader = tokio::spawn(read_loop(rd, shared.clone()));
        tracing::info!(port = %self.path, line = %self.line, "serial port opened");
        Ok(Conn {
            writer,
            shared,
            _reader: AbortOnDrop(reader.abort_handle()),
        })
    }

    /// The open connection in `slot`, (re)opened if it is missing or failed.
    fn ready<'a>(&self, slot: &'a mut Option<Conn>) -> DriverResult<&'a mut Conn> {
        if slot.as_ref().and_then(|c| c.shared.closed()).is_some() {
            *slot = None;
        }
        if slot.is_none() {
            *slot = Some(self.open()?);
        }
        slot.as_mut()
            .ok_or_else(|| DriverError::transport("serial port not open"))
    }

    /// Opens the port now if it is not open (a missing port is reported at
    /// connect).
    ///
    /// # Errors
    /// [`DriverError::Transport`] naming the path when it cannot be opened.
    pub(crate) async fn ensure_open(&self) -> DriverResult<Arc<Shared>> {
        let mut turn = self.link.turn().await;
        Ok(self.ready(&mut turn)?.shared.clone())
    }

    /// Sends `bytes` and, when `expect` is set, waits up to `timeout` for the
    /// answer `visitor` accepts (module docs). Returns the value read (`None`
    /// for a write without `ack`).
    ///
    /// Cancellation safe: dropping the future withdraws the request (a late
    /// answer is then discarded as unexpected); the port stays open.
    ///
    /// # Errors
    /// [`DriverError::Transport`] when the port fails or cannot be opened,
    /// [`DriverError::Timeout`] when nothing came, [`DriverError::Value`] /
    /// [`DriverError::Device`] when only frames it could not use came.
    pub(crate) async fn exchange(
        &self,
        visitor: &Arc<Visitor>,
        bytes: &[u8],
        expect: Option<Expect>,
        timeout: Duration,
    ) -> DriverResult<Option<Value>> {
        let mut turn = self.link.turn().await;
        let conn = self.ready(&mut turn)?;
        if !self.line.inter_frame_gap.is_zero() {
            tokio::time::sleep_until(conn.shared.quiet_at()).await;
        }
        let (id, rx) = conn.shared.begin(visitor, expect)?;
        let guard = EndOnDrop {
            shared: conn.shared.clone(),
            id,
        };
        let written = tokio::time::timeout(timeout, async {
            conn.writer.write_all(bytes).await?;
            conn.writer.flush().await
        })
        .await;
        conn.shared.note_tx();
        match written {
            Err(_) => return Err(DriverError::Timeout(timeout)),
            Ok(Err(e)) => {
                drop(guard);
                *turn = None;
                return Err(DriverError::io(io::Error::new(
                    e.kind(),
                    format!("serial port {}: {e}", self.path),
                )));
            }
            Ok(Ok(())) => {}
        }
        let Some(rx) = rx else {
            return Ok(None);
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer.map(Some),
            Ok(Err(_)) => Err(guard
                .shared
                .closed()
                .unwrap_or_else(|| DriverError::transport("the request was dropped"))),
            Err(_) => Err(guard.shared.timed_out(id, timeout)),
        }
    }

    /// Waits up to `timeout` for the next streamed value `visitor` accepts.
    ///
    /// # Errors
    /// [`DriverError::Timeout`] when none came, [`DriverError::Transport`]
    /// when the port fails, [`DriverError::Config`] when its framing differs
    /// from the port's other streamed values.
    pub(crate) async fn read_streamed(
        &self,
        visitor: &Arc<Visitor>,
        timeout: Duration,
    ) -> DriverResult<Value> {
        let shared = self.ensure_open().await?;
        let rx = shared.wait_for(visitor)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => Err(shared
                .closed()
                .unwrap_or_else(|| DriverError::transport("the read was dropped"))),
            Err(_) => Err(DriverError::Timeout(timeout)),
        }
    }

    /// Subscribes to streamed values.
    ///
    /// # Errors
    /// As [`Port::read_streamed`].
    pub(crate) async fn subscribe(
        &self,
        props: Vec<(usize, Arc<Visitor>)>,
    ) -> DriverResult<Arc<Subscriber>> {
        self.ensure_open().await?.subscribe(props)
    }
}

/// Withdraws a request when its call ends, however it ends.
struct EndOnDrop {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.shared.end(self.id);
    }
}

/// Every port of one [`crate::SerialDriver`] by path; an entry lives as long
/// as a device uses it.
#[derive(Default)]
pub struct Pool {
    opener: Option<Arc<dyn Opener>>,
    ports: Mutex<HashMap<String, Weak<Port>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("ports", &self.len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool opening ports with `opener`.
    pub fn with_opener(opener: Arc<dyn Opener>) -> Self {
        Self {
            opener: Some(opener),
            ports: Mutex::default(),
        }
    }

    /// Ports in use.
    pub fn len(&self) -> usize {
        lock(&self.ports)
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// Whether no port is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The port for `cfg` (opened by the caller).
    ///
    /// # Errors
    /// [`DriverError::Config`] when a device already uses the path with other
    /// line settings (both named).
    pub fn get(&self, cfg: &SerialConfig) -> DriverResult<Arc<Port>> {
        let mut ports = lock(&self.ports);
        ports.retain(|_, w| w.strong_count() > 0);
        if let Some(port) = ports.get(&cfg.serial_port).and_then(Weak::upgrade) {
            if port.line != cfg.line {
                return Err(DriverError::Config(format!(
                    "serialPort {} is already used with {} by another device; this device asks for {} (devices on one port must agree on its line settings)",
                    cfg.serial_port, port.line, cfg.line
                )));
            }
            return Ok(port);
        }
        let opener = self
            .opener
            .clone()
            .unwrap_or_else(|| Arc::new(TtyOpener) as Arc<dyn Opener>);
        let port = Arc::new(Port {
            path: Arc::from(cfg.serial_port.as_str()),
            line: cfg.line,
            opener,
            link: SharedLink::new(None),
            stats: Arc::default(),
            opens: AtomicU64::new(0),
        });
        ports.insert(cfg.serial_port.clone(), Arc::downgrade(&port));
        Ok(port)
    }
}
