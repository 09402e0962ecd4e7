//! # mapper-wasm-guest
//!
//! The guest side of `mapper-wasm`: write a device driver in Rust, build it
//! as a WebAssembly component, and `mapper-wasm` runs it sandboxed, one
//! instance per device, with only the I/O the device's configuration grants.
//!
//! Implement [`Driver`] (the same shape as `mapper_sdk::Driver` +
//! `DeviceClient`, but synchronous and one value per device) and export it
//! with [`export_driver!`]:
//!
//! ```no_run
//! use mapper_wasm_guest::{Driver, DriverError, DriverResult, Value, export_driver};
//!
//! #[derive(serde::Deserialize)]
//! struct Config { start: i64 }
//!
//! #[derive(serde::Deserialize)]
//! struct Address { step: i64 }
//!
//! struct Counter { value: i64 }
//!
//! impl Driver for Counter {
//!     type Config = Config;
//!     type Address = Address;
//!     fn connect(config: Config) -> DriverResult<Self> {
//!         Ok(Counter { value: config.start })
//!     }
//!     fn read(&mut self, at: &Address) -> DriverResult<Value> {
//!         self.value += at.step;
//!         Ok(Value::Int(self.value))
//!     }
//!     fn write(&mut self, _: &Address, value: Value) -> DriverResult<()> {
//!         self.value = value.as_i64().ok_or_else(|| DriverError::value("not an integer"))?;
//!         Ok(())
//!     }
//! }
//!
//! export_driver!(Counter);
//! ```
//!
//! ```sh
//! # Cargo.toml: [lib] crate-type = ["cdylib"]
//! cargo build --target wasm32-wasip2 --release   # target/wasm32-wasip2/release/<crate>.wasm
//! ```
//!
//! ## What the host gives a plugin
//!
//! * [`host::log`] (and the [`info!`], [`warn!`], [`error!`], [`debug!`]
//!   macros): lines in the mapper's log with the plugin named, rate-limited.
//! * [`host::now`]: a monotonic clock. [`host::random_bytes`]: randomness.
//! * [`tcp::TcpStream`]: TCP connections to the `host:port`s listed in the
//!   device's `grantTcp`; any other address fails with a
//!   [`DriverError::Config`] naming it.
//! * [`udp::UdpSocket`]: UDP datagrams to and from one of the `host:port`s
//!   listed in the device's `grantUdp`, likewise.
//! * [`serial::SerialPort`]: the serial ports whose paths the device's
//!   `grantSerial` lists (`/dev/ttyUSB0`), matched exactly, likewise.
//!
//! Nothing else. The host also links WASI 0.2 (Rust's `std` on
//! `wasm32-wasip2` needs it) with nothing granted: `std::fs` finds no
//! directories, `std::env` no variables, `std::net` is denied, stdout is
//! discarded (stderr ends up in the error of a trap: a panic message),
//! `SystemTime` reads 1970; `std::time::Instant`, `HashMap` and
//! [`host::now`] work. A component importing anything else fails to load
//! with an error naming the import.
//!
//! The visitor JSON of each property is decoded once, when the host
//! prepares the property (`prepare` in the WIT contract); reads and writes
//! then name it by a handle.
//!
//! ## Errors
//!
//! [`DriverError`] mirrors `mapper_sdk::DriverError`: `Device` (the device
//! refused; that property's error), `Config` and `Value` (not retried),
//! `Transport`, `Timeout` and `Protocol` (link failures: the SDK disconnects,
//! and the host creates a new instance after backoff). A panic traps the
//! instance: the host reports it for this device and starts afresh.

use std::cell::RefCell;
use std::time::Duration;

use serde::de::DeserializeOwned;

#[doc(hidden)]
#[allow(unsafe_code, missing_docs, unreachable_pub, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit/driver.wit",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "::mapper_wasm_guest::bindings",
        additional_derives: [PartialEq],
    });
}

pub use bindings::edge_dmi::driver::types::{DeviceFault, DeviceState, DriverError, Value};

/// Result of driver calls.
pub type DriverResult<T> = Result<T, DriverError>;

/// A device driver, one value per device (the host runs one instance of the
/// plugin per device).
///
/// `Config` is decoded from the device's `protocol.configData` (as JSON,
/// without the host's keys `plugin`, `sha256`, `grantTcp`, `grantUdp`,
/// `grantSerial`, `memoryLimitMiB`);
/// `Address` from each property's `visitors.configData`. Numbers that are
/// whole arrive as integers.
pub trait Driver: Sized + 'static {
    /// Typed `protocol.configData`.
    type Config: DeserializeOwned + 'static;
    /// Typed `visitors.configData` of one property.
    type Address: DeserializeOwned + 'static;

    /// Opens the device.
    ///
    /// # Errors
    /// [`DriverError::Config`] for a configuration that cannot work (the
    /// device stops until its configuration changes); `Transport`/`Timeout`
    /// when the device cannot be reached (retried with backoff).
    fn connect(config: Self::Config) -> DriverResult<Self>;

    /// Reads one property.
    ///
    /// # Errors
    /// `Device` when the device refused, `Transport`/`Timeout`/`Protocol`
    /// when the link failed, `Value` when the answer cannot be decoded.
    fn read(&mut self, at: &Self::Address) -> DriverResult<Value>;

    /// Reads several properties due in the same tick, one result per address
    /// in order. Override to merge requests; the default reads one by one.
    fn read_batch(&mut self, at: &[&Self::Address]) -> Vec<DriverResult<Value>> {
        at.iter().map(|a| self.read(a)).collect()
    }

    /// Writes a desired value (already validated against the model).
    ///
    /// # Errors
    /// As [`Driver::read`]; `Value` when the value does not fit the address.
    fn write(&mut self, at: &Self::Address, value: Value) -> DriverResult<()>;

    /// The device's own view of its health; the SDK only lets it lower
    /// `online`.
    fn state(&mut self) -> DeviceState {
        DeviceState::Online
    }

    /// The host is done with the device (the instance is dropped next).
    fn disconnect(&mut self) {}
}

impl Value {
    /// The value as `f64` when it is numeric or boolean.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Boolean(b) => Some(f64::from(u8::from(*b))),
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The value as `i64` when it is an integer, a whole float or a boolean.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Boolean(b) => Some(i64::from(*b)),
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(*f as i64),
            _ => None,
        }
    }
}

impl DriverError {
    /// The device refused, with an optional protocol code.
    pub fn device(code: Option<u32>, message: impl Into<String>) -> Self {
        Self::Device(DeviceFault {
            code,
            message: message.into(),
        })
    }

    /// The link failed.
    pub fn transport(message: impl Into<String>) -> Self {
        Self::Transport(message.into())
    }

    /// No answer within `waited`.
    pub fn timeout(waited: Duration) -> Self {
        Self::Timeout(u64::try_from(waited.as_millis()).unwrap_or(u64::MAX))
    }

    /// The answer broke the protocol.
    pub fn protocol(message: impl Into<String>) -> Self {
        Self::Protocol(message.into())
    }

    /// The configuration or address is invalid.
    pub fn config(message: impl Into<String>) -> Self {
        Self::Config(message.into())
    }

    /// The value does not fit the address.
    pub fn value(message: impl Into<String>) -> Self {
        Self::Value(message.into())
    }
}

/// Host services: logging, monotonic time, randomness.
pub mod host {
    use std::time::Duration;

    use crate::bindings::edge_dmi::driver::host as imports;

    pub use imports::Level;

    /// Logs `message` in the mapper's log (the host names the plugin and
    /// rate-limits; messages are cut at 1024 bytes).
    pub fn log(level: Level, message: &str) {
        imports::log(level, message);
    }

    /// Time since an arbitrary start, from the host's monotonic clock.
    pub fn now() -> Duration {
        Duration::from_nanos(imports::monotonic_now())
    }

    /// `len` random bytes (at most 4096 per call).
    pub fn random_bytes(len: u32) -> Vec<u8> {
        imports::random_bytes(len)
    }
}

/// Logs at error level through the host, `format!`-style.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::host::log($crate::host::Level::Error, &::std::format!($($arg)*)) };
}
/// Logs at warn level through the host, `format!`-style.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::host::log($crate::host::Level::Warn, &::std::format!($($arg)*)) };
}
/// Logs at info level through the host, `format!`-style.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::host::log($crate::host::Level::Info, &::std::format!($($arg)*)) };
}
/// Logs at debug level through the host, `format!`-style.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::host::log($crate::host::Level::Debug, &::std::format!($($arg)*)) };
}

/// TCP through the host's capability: only to the addresses the device's
/// `grantTcp` lists.
pub mod tcp {
    use std::time::Duration;

    use crate::bindings::edge_dmi::driver::tcp as imports;
    use crate::{DriverError, DriverResult, host, millis};

    /// An open TCP connection; closed when dropped.
    #[derive(Debug)]
    pub struct TcpStream {
        conn: imports::Connection,
        address: String,
    }

    impl TcpStream {
        /// Connects to `address` (`host:port`, written exactly as in the
        /// device's `grantTcp`) within `timeout`.
        ///
        /// # Errors
        /// `Config` when the address is not granted (the message names it),
        /// `Transport` or `Timeout` when the connection fails.
        pub fn connect(address: &str, timeout: Duration) -> DriverResult<Self> {
            let conn = imports::connect(address, millis(timeout))?;
            Ok(Self {
                conn,
                address: address.to_owned(),
            })
        }

        /// The address this stream was opened to.
        pub fn address(&self) -> &str {
            &self.address
        }

        /// Sends all of `data`.
        ///
        /// # Errors
        /// `Transport` when the connection failed.
        pub fn send(&self, data: &[u8]) -> DriverResult<()> {
            self.conn.send(data)
        }

        /// Waits up to `timeout` for data and returns what arrived (at most
        /// `max` bytes); empty when the peer closed the connection.
        ///
        /// # Errors
        /// `Timeout` when nothing arrived in time, `Transport` when the
        /// connection failed.
        pub fn recv(&self, max: usize, timeout: Duration) -> DriverResult<Vec<u8>> {
            self.conn
                .recv(u32::try_from(max).unwrap_or(u32::MAX), millis(timeout))
        }

        /// Receives exactly `n` bytes within `timeout` in all.
        ///
        /// # Errors
        /// `Timeout` when they did not arrive in time, `Transport` when the
        /// peer closed the connection first or the connection failed.
        pub fn recv_exact(&self, n: usize, timeout: Duration) -> DriverResult<Vec<u8>> {
            let deadline = host::now() + timeout;
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                let left = deadline.saturating_sub(host::now());
                if left.is_zero() {
                    return Err(DriverError::timeout(timeout));
                }
                let chunk = self.recv(n - out.len(), left)?;
                if chunk.is_empty() {
                    return Err(DriverError::transport(format!(
                        "{} closed the connection",
                        self.address
                    )));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(out)
        }
    }
}

/// Timeouts as the WIT contract takes them: milliseconds, saturating.
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// UDP through the host's capability: sockets connected to one of the
/// addresses the device's `grantUdp` lists.
pub mod udp {
    use std::time::Duration;

    use crate::bindings::edge_dmi::driver::udp as imports;
    use crate::{DriverResult, millis};

    /// Largest datagram [`UdpSocket::send`] sends, bytes.
    pub const MAX_DATAGRAM: usize = 65507;

    /// A UDP socket connected to one granted peer: it sends only there and
    /// receives only that peer's datagrams. Closed when dropped.
    #[derive(Debug)]
    pub struct UdpSocket {
        socket: imports::Socket,
        address: String,
    }

    impl UdpSocket {
        /// Opens a socket connected to `address` (`host:port`, written
        /// exactly as in the device's `grantUdp`); resolving a host name
        /// waits at most `timeout`.
        ///
        /// # Errors
        /// `Config` when the address is not granted (the message names it),
        /// `Transport` or `Timeout` when the socket cannot be opened.
        pub fn open(address: &str, timeout: Duration) -> DriverResult<Self> {
            let socket = imports::open(address, millis(timeout))?;
            Ok(Self {
                socket,
                address: address.to_owned(),
            })
        }

        /// The address this socket is connected to.
        pub fn address(&self) -> &str {
            &self.address
        }

        /// Sends `data` as one datagram (at most [`MAX_DATAGRAM`] bytes).
        ///
        /// # Errors
        /// `Value` when `data` is longer, `Transport` when sending failed
        /// (also after the peer's host answered an earlier datagram with
        /// "port unreachable").
        pub fn send(&self, data: &[u8]) -> DriverResult<()> {
            self.socket.send(data)
        }

        /// Waits up to `timeout` for one datagram from the peer and returns
        /// at most `max` bytes of it (at most 65536); the rest of a longer
        /// datagram is lost.
        ///
        /// # Errors
        /// `Timeout` when nothing arrived in time, `Transport` when the
        /// socket failed (the peer's host answered "port unreachable").
        pub fn recv(&self, max: usize, timeout: Duration) -> DriverResult<Vec<u8>> {
            self.socket
                .recv(u32::try_from(max).unwrap_or(u32::MAX), millis(timeout))
        }

        /// Sends `request` and waits up to `timeout` for one answer of at
        /// most `max` bytes.
        ///
        /// # Errors
        /// As [`UdpSocket::send`] and [`UdpSocket::recv`].
        pub fn exchange(
            &self,
            request: &[u8],
            max: usize,
            timeout: Duration,
        ) -> DriverResult<Vec<u8>> {
            self.send(request)?;
            self.recv(max, timeout)
        }
    }
}

/// Serial ports through the host's capability: only the paths the device's
/// `grantSerial` lists.
pub mod serial {
    use std::time::Duration;

    use crate::bindings::edge_dmi::driver::serial as imports;
    use crate::{DriverError, DriverResult, host, millis};

    pub use imports::{Parity, Settings};

    impl Settings {
        /// `baud_rate` bits per second, 8 data bits, no parity, 1 stop bit
        /// (8N1).
        pub fn new(baud_rate: u32) -> Self {
            Self {
                baud_rate,
                data_bits: 8,
                parity: Parity::None,
                stop_bits: 1,
            }
        }

        /// With `data_bits` (5 to 8) data bits per character.
        #[must_use]
        pub fn data_bits(mut self, data_bits: u8) -> Self {
            self.data_bits = data_bits;
            self
        }

        /// With `parity`.
        #[must_use]
        pub fn parity(mut self, parity: Parity) -> Self {
            self.parity = parity;
            self
        }

        /// With `stop_bits` (1 or 2) stop bits per character.
        #[must_use]
        pub fn stop_bits(mut self, stop_bits: u8) -> Self {
            self.stop_bits = stop_bits;
            self
        }
    }

    impl Default for Settings {
        /// 9600 bits per second, 8N1.
        fn default() -> Self {
            Self::new(9600)
        }
    }

    /// An open serial port, this instance's alone; closed when dropped.
    #[derive(Debug)]
    pub struct SerialPort {
        port: imports::Port,
        path: String,
    }

    impl SerialPort {
        /// Opens the port at `path` (written exactly as in the device's
        /// `grantSerial`) with `settings`, within `timeout`.
        ///
        /// # Errors
        /// `Config` when the path is not granted (the message names it) or
        /// the settings are not supported, `Transport` when the port is
        /// missing or busy, `Timeout`.
        pub fn open(path: &str, settings: Settings, timeout: Duration) -> DriverResult<Self> {
            let port = imports::open(path, settings, millis(timeout))?;
            Ok(Self {
                port,
                path: path.to_owned(),
            })
        }

        /// The path this port was opened at.
        pub fn path(&self) -> &str {
            &self.path
        }

        /// Writes all of `data` (at most 1 MiB per call).
        ///
        /// # Errors
        /// `Transport` when the port failed, `Timeout` when the call's
        /// deadline passed first.
        pub fn write(&self, data: &[u8]) -> DriverResult<()> {
            self.port.write(data)
        }

        /// Waits up to `timeout` for data and returns what arrived (at least
        /// one byte, at most `max`, at most 65536).
        ///
        /// # Errors
        /// `Timeout` when nothing arrived in time, `Transport` when the port
        /// failed or was closed.
        pub fn read(&self, max: usize, timeout: Duration) -> DriverResult<Vec<u8>> {
            self.port
                .read(u32::try_from(max).unwrap_or(u32::MAX), millis(timeout))
        }

        /// Reads exactly `n` bytes within `timeout` in all.
        ///
        /// # Errors
        /// `Timeout` when they did not arrive in time, `Transport` when the
        /// port failed.
        pub fn read_exact(&self, n: usize, timeout: Duration) -> DriverResult<Vec<u8>> {
            let deadline = host::now() + timeout;
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                let left = deadline.saturating_sub(host::now());
                if left.is_zero() {
                    return Err(DriverError::timeout(timeout));
                }
                let chunk = self.read(n - out.len(), left)?;
                if chunk.is_empty() {
                    return Err(DriverError::transport(format!("{} was closed", self.path)));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(out)
        }
    }
}

// ---------------------------------------------------------------------------
// The glue behind `export_driver!`.

/// Addresses a device may have prepared (the host prepares each property
/// once per instance).
const MAX_ADDRESSES: usize = 65536;

struct Device<D: Driver> {
    driver: D,
    addresses: Vec<D::Address>,
}

thread_local! {
    static DEVICE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
}

fn not_connected() -> DriverError {
    DriverError::Config("the host called the driver before connect".into())
}

fn unknown(handle: u32) -> DriverError {
    DriverError::Config(format!("address handle {handle} was not prepared"))
}

fn with_device<D: Driver, T>(f: impl FnOnce(&mut Device<D>) -> T) -> Option<T> {
    DEVICE.with(|slot| {
        let mut slot = slot.borrow_mut();
        let device = slot.as_mut()?.downcast_mut::<Device<D>>()?;
        Some(f(device))
    })
}

#[doc(hidden)]
pub mod __rt {
    //! What [`export_driver!`](crate::export_driver) expands to; not an API.
    use super::*;

    pub fn connect<D: Driver>(config: &str) -> DriverResult<()> {
        let cfg = serde_json::from_str::<D::Config>(config)
            .map_err(|e| DriverError::Config(format!("protocol configData: {e}")))?;
        let driver = D::connect(cfg)?;
        DEVICE.with(|slot| {
            *slot.borrow_mut() = Some(Box::new(Device::<D> {
                driver,
                addresses: Vec::new(),
            }));
        });
        Ok(())
    }

    pub fn prepare<D: Driver>(address: &str) -> DriverResult<u32> {
        let at = serde_json::from_str::<D::Address>(address)
            .map_err(|e| DriverError::Config(format!("visitor configData {address}: {e}")))?;
        with_device::<D, _>(|d| {
            if d.addresses.len() >= MAX_ADDRESSES {
                return Err(DriverError::Config(format!(
                    "more than {MAX_ADDRESSES} addresses prepared"
                )));
            }
            d.addresses.push(at);
            Ok((d.addresses.len() - 1) as u32)
        })
        .unwrap_or_else(|| Err(not_connected()))
    }

    pub fn read<D: Driver>(handle: u32) -> DriverResult<Value> {
        with_device::<D, _>(|d| match d.addresses.get(handle as usize) {
            Some(at) => d.driver.read(at),
            None => Err(unknown(handle)),
        })
        .unwrap_or_else(|| Err(not_connected()))
    }

    pub fn read_batch<D: Driver>(handles: Vec<u32>) -> Vec<DriverResult<Value>> {
        let out = with_device::<D, _>(|d| {
            let Device { driver, addresses } = d;
            let mut results: Vec<Option<DriverResult<Value>>> = Vec::with_capacity(handles.len());
            let mut valid: Vec<&D::Address> = Vec::with_capacity(handles.len());
            for h in &handles {
                match addresses.get(*h as usize) {
                    Some(at) => {
                        valid.push(at);
                        results.push(None);
                    }
                    None => results.push(Some(Err(unknown(*h)))),
                }
            }
            let wanted = valid.len();
            let mut read = driver.read_batch(&valid).into_iter();
            results
                .into_iter()
                .map(|r| match r {
                    Some(r) => r,
                    None => read.next().unwrap_or_else(|| {
                        Err(DriverError::Protocol(format!(
                            "the driver's read_batch returned fewer than {wanted} results"
                        )))
                    }),
                })
                .collect()
        });
        out.unwrap_or_else(|| handles.iter().map(|_| Err(not_connected())).collect())
    }

    pub fn write<D: Driver>(handle: u32, value: Value) -> DriverResult<()> {
        with_device::<D, _>(|d| match d.addresses.get(handle as usize) {
            Some(at) => d.driver.write(at, value),
            None => Err(unknown(handle)),
        })
        .unwrap_or_else(|| Err(not_connected()))
    }

    pub fn state<D: Driver>() -> DeviceState {
        with_device::<D, _>(|d| d.driver.state()).unwrap_or(DeviceState::Unknown)
    }

    pub fn disconnect<D: Driver>() {
        with_device::<D, _>(|d| d.driver.disconnect());
        DEVICE.with(|slot| slot.borrow_mut().take());
    }
}

/// Exports a [`Driver`] as the plugin's `edge-dmi:driver/driver` interface.
/// Use it once, in the plugin's `cdylib` crate. It expands to nothing when
/// the crate is built for another target than WebAssembly (unit tests).
#[macro_export]
macro_rules! export_driver {
    ($driver:ty) => {
        // Only a WebAssembly build exports anything: on the build machine
        // (unit tests of a plugin crate) the crate is an ordinary library.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __MapperWasmExport;
            impl $crate::bindings::exports::edge_dmi::driver::driver::Guest for __MapperWasmExport {
                fn connect(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), $crate::DriverError> {
                    $crate::__rt::connect::<$driver>(&config)
                }
                fn prepare(
                    address: ::std::string::String,
                ) -> ::core::result::Result<u32, $crate::DriverError> {
                    $crate::__rt::prepare::<$driver>(&address)
                }
                fn read(
                    address: u32,
                ) -> ::core::result::Result<$crate::Value, $crate::DriverError> {
                    $crate::__rt::read::<$driver>(address)
                }
                fn read_batch(
                    addresses: ::std::vec::Vec<u32>,
                ) -> ::std::vec::Vec<::core::result::Result<$crate::Value, $crate::DriverError>>
                {
                    $crate::__rt::read_batch::<$driver>(addresses)
                }
                fn write(
                    address: u32,
                    value: $crate::Value,
                ) -> ::core::result::Result<(), $crate::DriverError> {
                    $crate::__rt::write::<$driver>(address, value)
                }
                fn state() -> $crate::DeviceState {
                    $crate::__rt::state::<$driver>()
                }
                fn disconnect() {
                    $crate::__rt::disconnect::<$driver>()
                }
            }
    $crate::bindings::__export_plugin!(__MapperWasmExport with_types_in $crate::bindings);
        };
        // Elsewhere the driver is still used, as the exports would use it.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = $crate::__rt::connect::<$driver>;
            let _ = $crate::__rt::prepare::<$driver>;
            let _ = $crate::__rt::read::<$driver>;
            let _ = $crate::__rt::read_batch::<$driver>;
            let _ = $crate::__rt::write::<$driver>;
            let _ = $crate::__rt::state::<$driver>;
            let _ = $crate::__rt::disconnect::<$driver>;
        };
    };
}
