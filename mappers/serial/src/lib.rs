//! # mapper-serial
//!
//! A [`mapper_sdk::Driver`] for devices that speak a line protocol over a
//! serial port (RS-232, RS-485, USB serial adapters): scales, GPS receivers,
//! meters, lab instruments. The protocol is configured, not coded: each
//! property's visitor says what to send, how the answer is framed and
//! checked, and where the value is in it. Ports are opened with
//! `tokio-serial`.
//!
//! * Protocol configData ([`SerialConfig`]): `serialPort` (KubeEdge's key),
//!   `baudRate`, `dataBits`, `parity`, `stopBits`, `flowControl`,
//!   `interFrameGapMs`, `timeoutMs`. Unknown keys are errors naming them.
//! * Visitor configData ([`SerialAddress`], [`visitor`] docs): `request`
//!   ([`escape`]d text or `hex:`), framing ([`frame`]: `terminator`,
//!   `length`, `lengthByte` + `lengthAdjust`), extraction (`regex` with one
//!   capture group, or `start`/`end` with `dataType` and `byteOrder`),
//!   `scale`/`offset`, a [`checksum`], and for ReadWrite properties a `write`
//!   template with an optional `ack` regex.
//! * **Polled and streamed values.** A property with a `request` is read by
//!   sending it and waiting for the answer. One without is a value the device
//!   sends unasked: the port's reader keeps the latest value of each such
//!   property and delivers it through [`DeviceClient::subscribe`], so its twin
//!   updates as lines arrive, with no polling.
//! * **One owner per port** ([`port`]): devices on one path share one open
//!   port and take turns for requests ([`mapper_sdk::link::SharedLink`]);
//!   they must agree on its line settings, else the later device gets a
//!   [`DriverError::Config`] naming both.
//! * **Robust reading.** Garbage, partial frames, wrong checksums and
//!   unexpected frames are discarded, counted ([`DiscardCounts`]) and logged
//!   at most every [`port::LOG_EVERY`]; the reader resynchronises at the next
//!   terminator (length-framed streams: the next byte whose frame checks). A
//!   port that fails (unplugged adapter, PTY peer gone) is a link error: the
//!   SDK reports the device `offline` and reconnects with backoff, which
//!   reopens the port once it is back. A port that does not exist is a link
//!   error at connect.
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     mapper_sdk::main("serial", mapper_serial::SerialDriver::default())
//! }
//! ```
//!
//! ## Feature flags
//! None (tokio-serial needs no system libraries).

#![warn(missing_docs)]

pub mod checksum;
pub mod config;
pub mod escape;
pub mod frame;
pub mod port;
pub mod visitor;

pub use config::{FlowControl, LineSettings, Parity, SerialConfig};
pub use port::{DiscardCounts, Opener, Pool, Port, SerialIo, TtyOpener};
pub use visitor::{ByteOrder, DataType, SerialAddress};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mapper_sdk::{
    DeviceClient, Driver, DriverError, DriverResult, PropertyType, Subscription, Value,
};

use crate::port::Expect;

/// The serial line protocol: opens [`SerialDevice`]s and owns the ports they
/// share ([`Pool`]). One value per mapper.
#[derive(Debug, Default)]
pub struct SerialDriver {
    pool: Pool,
}

impl SerialDriver {
    /// A driver opening ports with `opener` instead of `tokio-serial` (tests
    /// use an in-memory pipe to a fake device).
    pub fn with_opener(opener: Arc<dyn Opener>) -> Self {
        Self {
            pool: Pool::with_opener(opener),
        }
    }

    /// Ports in use.
    pub fn open_ports(&self) -> usize {
        self.pool.len()
    }
}

/// One device on a serial port.
#[derive(Debug)]
pub struct SerialDevice {
    port: Arc<Port>,
    timeout: Duration,
    requests: AtomicU64,
}

impl SerialDevice {
    /// The port this device is on (shared with the other devices on its path).
    pub fn port(&self) -> &Arc<Port> {
        &self.port
    }

    /// Requests and writes this device sent since [`Driver::connect`].
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Input the port discarded so far (all devices on the port).
    pub fn discards(&self) -> DiscardCounts {
        self.port.discards()
    }
}

impl Driver for SerialDriver {
    type Config = SerialConfig;
    type Address = SerialAddress;
    type Client = SerialDevice;

    fn prepare_address(
        &self,
        addr: &mut SerialAddress,
        model_type: Option<PropertyType>,
    ) -> DriverResult<()> {
        addr.set_model_type(model_type);
        Ok(())
    }

    /// Takes the device's port from the pool and opens it if it is not open.
    ///
    /// # Errors
    /// [`DriverError::Config`] when another device uses the port with other
    /// line settings; [`DriverError::Transport`] naming the path when the port
    /// cannot be opened (missing, busy, no permission).
    async fn connect(&self, cfg: &SerialConfig) -> DriverResult<SerialDevice> {
        let port = self.pool.get(cfg)?;
        port.ensure_open().await?;
        Ok(SerialDevice {
            port,
            timeout: cfg.timeout,
            requests: AtomicU64::new(0),
        })
    }
}

impl DeviceClient for SerialDevice {
    type Address = SerialAddress;

    fn io_requests(&self) -> Option<u64> {
        Some(self.requests())
    }

    /// Sends the property's `request` and reads the value from the answer;
    /// for a streamed property (no `request`), waits for the next frame that
    /// carries it. Both wait at most `timeoutMs`.
    ///
    /// # Errors
    /// See [`port`]: `Timeout` when nothing came, `Value` when only frames
    /// without a usable value came, `Transport` when the port failed.
    async fn read(&self, at: &SerialAddress) -> DriverResult<Value> {
        let v = at.visitor();
        match &v.request {
            Some(req) => {
                self.requests.fetch_add(1, Ordering::Relaxed);
                self.port
                    .exchange(v, req, Some(Expect::Value), self.timeout)
                    .await?
                    .ok_or_else(|| DriverError::transport("no answer"))
            }
            None => self.port.read_streamed(v, self.timeout).await,
        }
    }

    /// Sends the `write` template with the value in place of `{value}`; with
    /// an `ack`, waits for an answer matching it.
    ///
    /// # Errors
    /// [`DriverError::Value`] when the property has no `write` template or
    /// the value does not scale to a number; [`DriverError::Device`] when the
    /// answers did not match `ack`; link errors as [`SerialDevice::read`].
    async fn write(&self, at: &SerialAddress, value: &Value) -> DriverResult<()> {
        let v = at.visitor();
        let Some(template) = &v.write else {
            return Err(DriverError::Value(
                "the property has no `write` template, so it cannot be written".into(),
            ));
        };
        let text = v.value_bytes(value).map_err(DriverError::Value)?;
        let bytes = template.render(&text);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let expect = v.ack.is_some().then_some(Expect::Ack);
        self.port
            .exchange(v, &bytes, expect, self.timeout)
            .await
            .map(|_| ())
    }

    /// Streams every property without a `request`; the others are polled.
    ///
    /// # Errors
    /// [`DriverError::Config`] when the streamed properties on the port do
    /// not share one framing; link errors as [`SerialDevice::read`].
    async fn subscribe(&self, at: &[&SerialAddress]) -> DriverResult<Option<Subscription>> {
        let props: Vec<_> = at
            .iter()
            .enumerate()
            .filter(|(_, a)| a.visitor().is_streamed())
            .map(|(i, a)| (i, a.visitor().clone()))
            .collect();
        if props.is_empty() {
            return Ok(None);
        }
        let covered = at.iter().map(|a| a.visitor().is_streamed()).collect();
        let sub = self.port.subscribe(props).await?;
        Ok(Some(Subscription {
            stream: Box::pin(sub.into_stream()),
            covered,
        }))
    }
}
