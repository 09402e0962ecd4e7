//! The [`Driver`] trait a protocol crate implements.

use std::future::Future;

use serde::de::DeserializeOwned;

use crate::error::DriverResult;
use crate::value::{PropertyType, Value};

/// Device connectivity as a driver sees it; reported to EdgeCore with the
/// strings stock EdgeCore accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceState {
    /// Connected and answering.
    Online,
    /// Not reachable.
    Offline,
    /// Reachable, but refusing requests or misconfigured.
    Unhealthy,
    /// Not known yet.
    Unknown,
}

impl DeviceState {
    /// The DMI state string (`online`, `offline`, `unhealthy`, `unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Unhealthy => "unhealthy",
            Self::Unknown => "unknown",
        }
    }
}

/// A protocol driver: how to reach one device and read or write its properties.
///
/// The SDK creates one driver value per device (from the device's protocol
/// configData), calls it from that device's own task, applies deadlines, retries
/// and backoff, and turns results into twin reports. A driver never sees gRPC,
/// DMI messages or Kubernetes.
///
/// * `Config` is deserialized from the device's `spec.protocol.configData`.
/// * `Address` is deserialized from each property's `visitors.configData`.
///
/// Both arrive as JSON objects. Numbers from stock EdgeCore were float32 on the
/// wire; whole numbers come out as JSON integers, so integer fields work.
///
/// ```no_run
/// use mapper_sdk::{Driver, DriverResult, Value};
///
/// #[derive(serde::Deserialize, Clone)]
/// struct LampConfig { host: String }
/// #[derive(serde::Deserialize)]
/// struct LampAddress { channel: u8 }
///
/// struct Lamp;
///
/// impl Driver for Lamp {
///     type Config = LampConfig;
///     type Address = LampAddress;
///     async fn connect(_cfg: &LampConfig) -> DriverResult<Self> { Ok(Lamp) }
///     async fn read(&self, at: &LampAddress) -> DriverResult<Value> { Ok(Value::Int(at.channel.into())) }
///     async fn write(&self, _at: &LampAddress, _v: &Value) -> DriverResult<()> { Ok(()) }
/// }
/// ```
pub trait Driver: Send + Sync + Sized + 'static {
    /// Validated protocol configuration of one device.
    type Config: DeserializeOwned + Clone + Send + Sync + 'static;
    /// Where a property lives on the device (a register, a node id, a UUID).
    type Address: DeserializeOwned + Send + Sync + 'static;

    /// Checks and completes a property's address once, when the device starts,
    /// with the model's type for it (e.g. a default data type, or refusing a
    /// register count that cannot hold the type). An error here disables just that
    /// property and is reported with the device and property named.
    fn prepare_address(
        addr: &mut Self::Address,
        model_type: Option<PropertyType>,
    ) -> DriverResult<()> {
        let _ = (addr, model_type);
        Ok(())
    }

    /// Opens the connection. Called again, with backoff, after link failures.
    fn connect(cfg: &Self::Config) -> impl Future<Output = DriverResult<Self>> + Send;

    /// Reads one property.
    fn read(&self, at: &Self::Address) -> impl Future<Output = DriverResult<Value>> + Send;

    /// Reads many properties due in the same tick; returns one result per address,
    /// in order. Drivers that can merge requests (adjacent registers, one OPC UA
    /// Read for many nodes) override this with their own plan; the default reads
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

    /// Writes a value, already validated against the model (type, bounds, access).
    fn write(
        &self,
        at: &Self::Address,
        value: &Value,
    ) -> impl Future<Output = DriverResult<()>> + Send;

    /// Protocol requests made so far (a monotonic count), for drivers that batch
    /// several properties per request. The SDK reports the per-tick difference as
    /// the `mapper_last_tick_requests` and `mapper_driver_requests_total` metrics.
    fn io_requests(&self) -> Option<u64> {
        None
    }

    /// The device's own view of its state; the SDK combines it with read results.
    fn state(&self) -> impl Future<Output = DeviceState> + Send {
        async { DeviceState::Online }
    }

    /// Closes the connection before the device is stopped or reconnected.
    fn disconnect(self) -> impl Future<Output = ()> + Send {
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
