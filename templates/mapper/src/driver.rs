//! The driver ([`{{driver_type}}`], one per mapper) and a connected device
//! ([`{{type_prefix}}Device`], one per device).
//!
//! How the SDK treats what these methods return ([`DriverError`]):
//!
//! | error | meaning | what the SDK does |
//! |---|---|---|
//! | `Config` | the configData cannot work | from `connect`: the device is refused (`unhealthy`, reason logged) until its YAML changes; from `prepare_address`: that property is skipped and its twin carries the reason |
//! | `Device` | the device answered and refused | that property's error in its twin; no reconnect (the device is `unhealthy` when no property of a collect tick could be read) |
//! | `Value` | the value does not fit (wrong type, out of range) | that property's error; no reconnect |
//! | `Transport`, `Timeout`, `Protocol` | the link failed or cannot be trusted | the device is `offline`, the client is dropped and `connect` is retried with exponential backoff and jitter |
//!
//! The SDK applies a deadline to every call (`runtime.io_timeout` in
//! `config.yaml`, 5 s by default) and drops the future when it passes: no
//! method needs timeouts of its own, but each must leave the device usable
//! when dropped at an `.await` (see [`crate::link`]).

use std::sync::atomic::{AtomicU64, Ordering};

use mapper_sdk::{DeviceClient, Driver, DriverError, DriverResult, PropertyType, Value};
{%- if push %}
use mapper_sdk::Subscription;
{%- endif %}
use tokio::sync::Mutex;

use crate::config::{ {{type_prefix}}Address, {{type_prefix}}Config };
use crate::link::Link;
use crate::protocol;

/// The `{{protocol}}` protocol: decodes configuration and connects devices.
///
/// One value per mapper process, shared by all its devices: put here what
/// devices share (a connection pool, a session with a gateway, a radio
/// adapter, a [`mapper_sdk::link::SharedLink`] for devices behind one
/// transport). This one shares nothing.
#[derive(Debug, Default)]
pub struct {{driver_type}} {}

impl Driver for {{driver_type}} {
    type Config = {{type_prefix}}Config;
    type Address = {{type_prefix}}Address;
    type Client = {{type_prefix}}Device;

    /// Checks one property's address when the device is set up, and keeps
    /// the model's type of the property so answers can be decoded as it.
    /// Called once per property, before any read: check here what serde
    /// could not (ranges, combinations of keys), so a bad visitor fails at
    /// once with a clear reason instead of on every read.
    ///
    /// # Errors
    /// [`DriverError::Config`] naming what is wrong; the SDK skips that
    /// property, reports the reason and keeps the device's other properties.
    fn prepare_address(
        &self,
        addr: &mut {{type_prefix}}Address,
        model_type: Option<PropertyType>,
    ) -> DriverResult<()> {
        protocol::check_register(&addr.register)?;
        addr.model_type = model_type;
        Ok(())
    }

    /// Opens a device: here, a TCP connection to `host:port`. Called when
    /// EdgeCore adds the device and again after each link failure (with
    /// backoff). Reaching the device does not make it `online`; its first
    /// answered read or write does.
    ///
    /// # Errors
    /// [`DriverError::Config`] for a configuration that can never work (not
    /// retried); [`DriverError::Transport`] when the device cannot be reached
    /// (retried with backoff).
    async fn connect(&self, cfg: &{{type_prefix}}Config) -> DriverResult<{{type_prefix}}Device> {
        if cfg.host.trim().is_empty() {
            return Err(DriverError::Config("host is empty".into()));
        }
        let link = Link::open(&cfg.host, cfg.port).await?;
        Ok({{type_prefix}}Device {
            host: cfg.host.clone(),
            port: cfg.port,
            link: Mutex::new(Some(link)),
            requests: AtomicU64::new(0),
        })
    }
}

/// One connected `{{protocol}}` device. Requests take turns on one
/// connection; a connection left unclean by a dropped request (see
/// [`crate::link`]) is replaced before the next one.
///
/// Not overridden here, with the SDK's defaults: `read_batch` (reads one
/// property after another; override it to read several registers in one
/// request, as the Modbus mapper does), `state` (the device reports no health
/// of its own: `online` while it answers){% unless push %} and `subscribe`
/// (polling only; see the push variant of this template){% endunless %}.
#[derive(Debug)]
pub struct {{type_prefix}}Device {
    host: String,
    port: u16,
    link: Mutex<Option<Link>>,
    requests: AtomicU64,
}

impl {{type_prefix}}Device {
    /// Sends one request and returns the answer line, on a clean connection.
    async fn exchange(&self, request: &[u8]) -> DriverResult<String> {
        let mut slot = self.link.lock().await;
        let link = match slot.take() {
            Some(link) if link.is_clean() => slot.insert(link),
            _ => slot.insert(Link::open(&self.host, self.port).await?),
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        link.exchange(request).await
    }
}

impl DeviceClient for {{type_prefix}}Device {
    type Address = {{type_prefix}}Address;

    /// Reads one property: `READ <register>`, the answer decoded as the
    /// model's type. Called on the property's `collectCycle`, and after each
    /// write to confirm it.
    ///
    /// # Errors
    /// [`DriverError::Device`] when the device refused (`ERR`, e.g. an
    /// unknown register); [`DriverError::Value`] when the answer is not a
    /// value of the model's type; [`DriverError::Transport`] /
    /// [`DriverError::Protocol`] when the connection failed or the answer
    /// makes no sense (the SDK reconnects).
    async fn read(&self, at: &{{type_prefix}}Address) -> DriverResult<Value> {
        let answer = self.exchange(&protocol::read_request(&at.register)).await?;
        protocol::decode_value(&at.register, &answer, at.model_type)
    }

    /// Writes a desired value (or a write of the REST data panel):
    /// `WRITE <register> <value>`. The SDK has already checked the value
    /// against the model (type, minimum, maximum, ReadWrite) and reads the
    /// property again afterwards to report what the device holds.
    ///
    /// # Errors
    /// [`DriverError::Value`] when the value cannot be sent and
    /// [`DriverError::Device`] when the device refused it (a read-only
    /// register): the desired value is reported `rejected` with this reason
    /// and not retried until it changes; link errors as in
    /// [`{{type_prefix}}Device::read`] (the SDK reconnects and writes again).
    async fn write(&self, at: &{{type_prefix}}Address, value: &Value) -> DriverResult<()> {
        let request = protocol::write_request(&at.register, value)?;
        let answer = self.exchange(&request).await?;
        protocol::decode_ok(&answer)
    }

    /// Requests sent to this device so far (the SDK's request metrics).
    fn io_requests(&self) -> Option<u64> {
        Some(self.requests.load(Ordering::Relaxed))
    }
{%- if push %}

    /// Push-mode collection: the properties whose visitor says
    /// `subscribe: true` are delivered by the device (`SUBSCRIBE` on a
    /// connection of their own) and no longer polled; the others are read
    /// on their `collectCycle` as usual. Called after each connect; when the
    /// stream ends (the device closed it), the SDK reconnects and calls it
    /// again.
    ///
    /// # Errors
    /// [`DriverError::Device`] when the device refused the subscription: the
    /// SDK logs it and polls every property instead. Link errors as in
    /// [`{{type_prefix}}Device::read`] (the SDK reconnects).
    async fn subscribe(
        &self,
        at: &[&{{type_prefix}}Address],
    ) -> DriverResult<Option<Subscription>> {
        crate::push::subscribe(&self.host, self.port, at).await
    }
{%- endif %}

    /// Closes the device: the SDK is done with it (removed, changed, or
    /// reconnecting after a link failure).
    async fn disconnect(self) {
        if let Some(link) = self.link.into_inner() {
            link.close().await;
        }
    }
}
