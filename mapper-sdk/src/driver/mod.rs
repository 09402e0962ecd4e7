//! What a protocol crate implements: a [`Driver`] (the factory, one value per
//! mapper, owning what devices share: connection pools, sessions, an adapter,
//! an engine) and a [`DeviceClient`] per connected device.
//!
//! The SDK holds drivers type-erased ([`DynDriver`], [`DynClient`]): the typed
//! traits are the authoring API, a blanket adapter turns every [`Driver`] into a
//! [`DynDriver`], and a host that only knows configuration at run time (the
//! WebAssembly plugin host) implements [`DynDriver`] directly.
//!
//! ## Cancellation
//!
//! The SDK drops a driver future when its deadline passes or the mapper shuts
//! down: [`Driver::connect`], [`DeviceClient::read`], [`DeviceClient::read_batch`],
//! [`DeviceClient::write`] and [`DeviceClient::state`] must leave the client and
//! any shared link usable when dropped at an `.await` (for example by closing a
//! connection whose request is in flight rather than leaving an answer for the
//! next request to find; [`crate::link::SharedLink`] turns are given back on
//! drop). A dropped `write` may or may not have reached the device; the SDK
//! reads the property again before reporting it.

mod dyn_driver;

pub use dyn_driver::{DynClient, DynDriver, ErasedAddress, ErasedConfig, Prepared};

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;

use crate::error::DriverResult;
use crate::value::{PropertyType, Value};

/// Device connectivity as reported to EdgeCore. Only the five states stock
/// EdgeCore accepts can be expressed (spec §2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceState {
    /// The device answers.
    Online,
    /// The device cannot be reached.
    Offline,
    /// The device answers but reports faults.
    Unhealthy,
    /// Not known yet.
    Unknown,
}

impl DeviceState {
    /// The state string sent in `ReportDeviceStates`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Unhealthy => "unhealthy",
            Self::Unknown => "unknown",
        }
    }
}

/// A value a device pushed (a notification, a monitored item, a line on a
/// serial stream) for the property at `index` of the addresses given to
/// [`DeviceClient::subscribe`].
#[derive(Debug)]
pub struct Pushed {
    /// Index into the addresses passed to `subscribe`.
    pub index: usize,
    /// The value, or why there is none. A link failure ends the connection
    /// (the SDK reconnects with backoff); any other error is that property's.
    pub value: DriverResult<Value>,
    /// When the device says the value was taken, if it says.
    pub source_time: Option<SystemTime>,
}

/// The stream of a subscription; it ends when the link does.
pub type PushStream = Pin<Box<dyn futures::Stream<Item = Pushed> + Send>>;

/// Push-mode collection for some properties of a device.
pub struct Subscription {
    /// Samples as they arrive.
    pub stream: PushStream,
    /// Per address given to `subscribe`: whether the stream delivers it. The
    /// SDK keeps polling the others on their collect cycle.
    pub covered: Vec<bool>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("covered", &self.covered)
            .finish_non_exhaustive()
    }
}

/// What the SDK knows about a property when its address is prepared
/// ([`Driver::prepare_property`]).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct PropertyInfo<'a> {
    /// The property's name.
    pub name: &'a str,
    /// The model's type of the property, if the model gives one.
    pub model_type: Option<PropertyType>,
    /// The property's `collectCycle` (the SDK's default of 1 s when the
    /// device gives none); a driver with push-mode collection may use it as
    /// the rate at which the device samples the value.
    pub collect_cycle: Duration,
}

impl<'a> PropertyInfo<'a> {
    /// A property called `name` of `model_type`, collected every `collect_cycle`.
    pub fn new(name: &'a str, model_type: Option<PropertyType>, collect_cycle: Duration) -> Self {
        Self {
            name,
            model_type,
            collect_cycle,
        }
    }
}

/// A protocol: decodes configuration and opens devices. One value per mapper
/// process; it owns whatever devices share (connection pools, sessions, a
/// radio adapter). See the module docs on cancellation.
///
/// `Config` is deserialized from the device's `protocol.configData` and
/// `Address` from each property's `visitors.configData` (JSON objects of
/// scalars; numbers may arrive as float32 from stock EdgeCore, spec §1.4).
/// Unknown keys are warned about unless the types deny them.
pub trait Driver: Send + Sync + 'static {
    /// Typed `protocol.configData`.
    type Config: DeserializeOwned + Send + Sync + 'static;
    /// Typed `visitors.configData` of one property.
    type Address: DeserializeOwned + Send + Sync + 'static;
    /// One connected device.
    type Client: DeviceClient<Address = Self::Address>;

    /// Checks and completes an address once, when the device is set up, with
    /// the model's type of the property (`None` when the model gives none).
    ///
    /// # Errors
    /// [`DriverError::Config`](crate::DriverError::Config) naming what is wrong;
    /// the property is then skipped and its error reported.
    fn prepare_address(
        &self,
        addr: &mut Self::Address,
        model_type: Option<PropertyType>,
    ) -> DriverResult<()> {
        let _ = (addr, model_type);
        Ok(())
    }

    /// As [`Driver::prepare_address`], with more of the property: the SDK
    /// calls this one when it sets a device up. The default calls
    /// [`Driver::prepare_address`] with the model type; override it when the
    /// address depends on the property's collect cycle (a subscription's
    /// sampling interval, say).
    ///
    /// # Errors
    /// As [`Driver::prepare_address`].
    fn prepare_property(
        &self,
        addr: &mut Self::Address,
        property: &PropertyInfo<'_>,
    ) -> DriverResult<()> {
        self.prepare_address(addr, property.model_type)
    }

    /// Opens a device. The SDK calls it again after link failures, with
    /// exponential backoff; reaching the device is not enough for `online`
    /// (the SDK waits for an answered read or write).
    ///
    /// # Errors
    /// [`Config`](crate::DriverError::Config) for a configuration that cannot
    /// work (not retried), [`Transport`](crate::DriverError::Transport) or
    /// [`Timeout`](crate::DriverError::Timeout) otherwise (retried).
    fn connect(
        &self,
        cfg: &Self::Config,
    ) -> impl Future<Output = DriverResult<Self::Client>> + Send;
}

/// One connected device. See the module docs on cancellation.
pub trait DeviceClient: Send + Sync + 'static {
    /// The driver's typed address.
    type Address: Send + Sync + 'static;

    /// Reads one property.
    ///
    /// # Errors
    /// [`Device`](crate::DriverError::Device) when the device refused (that
    /// property's error), [`Transport`](crate::DriverError::Transport) /
    /// [`Timeout`](crate::DriverError::Timeout) when the link failed (the SDK
    /// reconnects), [`Value`](crate::DriverError::Value) when the answer cannot
    /// be decoded.
    fn read(&self, at: &Self::Address) -> impl Future<Output = DriverResult<Value>> + Send;

    /// Reads several properties due in the same tick; one result per address,
    /// in order. Override to merge requests (read planning); the default reads
    /// one by one.
    fn read_batch(
        &self,
        at: &[&Self::Address],
    ) -> impl Future<Output = Vec<DriverResult<Value>>> + Send {
        async move {
            let mut out = Vec::with_capacity(at.len());
            for a in at {
                out.push(self.read(a).await);
            }
            out
        }
    }

    /// Writes a desired value (already validated against the model).
    ///
    /// # Errors
    /// As [`DeviceClient::read`]; [`Value`](crate::DriverError::Value) when the
    /// value does not fit the address (read-only table, out of range).
    fn write(
        &self,
        at: &Self::Address,
        value: &Value,
    ) -> impl Future<Output = DriverResult<()>> + Send;

    /// Protocol requests sent so far, if the driver counts them (metrics).
    fn io_requests(&self) -> Option<u64> {
        None
    }

    /// The device's own view of its health, asked on the state cycle; the SDK
    /// only lets it lower `online` (to `unhealthy`, say), never raise it.
    fn state(&self) -> impl Future<Output = DeviceState> + Send {
        async { DeviceState::Online }
    }

    /// Push-mode collection: a stream of values for some of `at`. `Ok(None)`
    /// (the default) means polling only.
    ///
    /// # Errors
    /// As [`DeviceClient::read`]; a link failure ends the connection.
    fn subscribe(
        &self,
        at: &[&Self::Address],
    ) -> impl Future<Output = DriverResult<Option<Subscription>>> + Send {
        let _ = at;
        async { Ok(None) }
    }

    /// Closes the device (the SDK is done with it or reconnects).
    fn disconnect(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_is_one_stock_edgecore_accepts() {
        for s in [
            DeviceState::Online,
            DeviceState::Offline,
            DeviceState::Unhealthy,
            DeviceState::Unknown,
        ] {
            assert!(
                dmi_proto::rules::ALLOWED_STATES.contains(&s.as_str()),
                "{s:?}"
            );
        }
    }
}
