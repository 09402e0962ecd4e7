//! # mapper-sdk
//!
//! The framework for KubeEdge-compatible device mappers. A protocol crate
//! implements [`Driver`] (a factory value owning what devices share) and
//! [`DeviceClient`] (one connected device); the SDK does everything else:
//!
//! * serves `DeviceMapperService` on the mapper's Unix socket (stock Go EdgeCore
//!   and `edgecore-dmi` both reach it) and registers with EdgeCore
//!   (`withData=true`, retried with backoff, again whenever EdgeCore restarts);
//! * runs one task per device: connect with exponential backoff and jitter, read
//!   each property on its `collectCycle` (milliseconds, default 1 s) with one
//!   batched read per tick, report twins (`ReportDeviceStatus`, both twin halves
//!   always set, values inside EdgeCore's charset) and state
//!   (`ReportDeviceStates`, only the five accepted strings, on
//!   `status.reportCycle` and on every change);
//! * reports `online` only once the device answered a read or write (an answered
//!   fault makes it `unhealthy`), resets the reconnect backoff only then, and
//!   shares transports fairly between devices ([`link`]);
//! * hands reports to a coalescing sender (see [Reports](crate#reports)):
//!   the latest twin per property and the latest state per device, one
//!   `ReportDeviceStatus` per device with all its changed twins, paced
//!   adaptively when EdgeCore throttles (stock EdgeCore: 1 call/s per node),
//!   without re-registering; only transport failures trigger a new
//!   registration;
//! * validates desired values against the model (type, minimum/maximum,
//!   ReadWrite) and writes them; a rejected value is logged and reported in the
//!   twin's `observedDesired.metadata` (`status: rejected`, `reason`), never
//!   dropped silently; an UpdateDevice that changes only desired values does not
//!   reconnect the device;
//! * reads mapper-framework's `config.yaml`, logs with `tracing`, stops cleanly on
//!   SIGTERM or Ctrl-C;
//! * serves Prometheus metrics at `/metrics` on `common.http_port` when set
//!   (see [`Metrics`] for the list).
//!
//! Layering: `mappers/* → mapper-sdk → dmi-proto`. Drivers never see tonic or the
//! DMI types.
//!
//! Data flow inside a mapper: due properties are read in one batch per tick
//! (or pushed by a [`Subscription`]), each result becomes a [`Sample`], and the
//! same sample feeds the snapshot (GetDevice, metrics) and the twin engine
//! (coalesced reports to EdgeCore). DMI messages are built only in the SDK's
//! `dmi` module; the runtime holds the driver as `Arc<dyn DynDriver>`.
//!
//! ```no_run
//! use mapper_sdk::{DeviceClient, Driver, DriverResult, Value};
//!
//! #[derive(serde::Deserialize)]
//! struct Cfg {}
//! #[derive(serde::Deserialize)]
//! struct Addr { value: i64 }
//! #[derive(Default)]
//! struct Fixed;
//! struct FixedDevice;
//! impl Driver for Fixed {
//!     type Config = Cfg;
//!     type Address = Addr;
//!     type Client = FixedDevice;
//!     async fn connect(&self, _: &Cfg) -> DriverResult<FixedDevice> { Ok(FixedDevice) }
//! }
//! impl DeviceClient for FixedDevice {
//!     type Address = Addr;
//!     async fn read(&self, a: &Addr) -> DriverResult<Value> { Ok(Value::Int(a.value)) }
//!     async fn write(&self, _: &Addr, _: &Value) -> DriverResult<()> { Ok(()) }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     mapper_sdk::main("fixed", Fixed)
//! }
//! ```
//!
//! ## Reports
//!
//! Device tasks never wait for EdgeCore. Per device the SDK keeps only the
//! newest undelivered twin of each property and the newest state, so memory is
//! bounded by devices × properties whatever EdgeCore does. Senders take devices
//! round robin, one at a time each (so a device's reports keep their order), and
//! send everything a device has in one call. A failed call is classified
//! ([`dmi_proto::status::classify`]): transport failures keep the data and ask
//! for a new registration; throttling keeps the data and the registration and
//! slows the pace (additive increase, multiplicative decrease, starting at
//! 1 call/s) while unchanged values and states stop being repeated; refusals
//! drop that report and count it (`mapper_reports_dropped_total`).
//!
//! ## Feature flags
//! * `testing`: the `testing` module, an in-process fake EdgeCore and a driver
//!   conformance check, for the tests of mapper crates.

#![deny(missing_docs)]

mod cli;
mod config;
mod config_data;
mod dmi;
mod driver;
mod error;
pub mod link;
mod mapper;
mod metrics;
pub mod panel;
mod runtime;
mod sample;
pub mod sink;
mod spec;
#[cfg(feature = "testing")]
pub mod testing;
mod twin;
mod value;

pub use cli::{init_tracing, main, main_with, terminate_signal};
pub use config::{
    CommonConfig, ConfigFile, DEFAULT_EDGECORE_SOCK, Flags, GrpcServerConfig, MapperConfig,
    RuntimeConfig,
};
pub use driver::{
    DeviceClient, DeviceState, Driver, DynClient, DynDriver, ErasedAddress, ErasedConfig, Prepared,
    PropertyInfo, PushStream, Pushed, Subscription,
};
pub use error::{DeviceFault, DriverError, DriverResult, Error, Result, SpecError};
pub use mapper::{Mapper, SHUTDOWN_GRACE};
pub use metrics::Metrics;
pub use runtime::{DesiredOutcome, DeviceSnapshot, PropertySnapshot, Supervisor, WriteError};
pub use sample::{Quality, Sample, SampleSink};
pub use spec::{
    DEFAULT_CYCLE, DeviceMethod, DeviceModel, DeviceSpec, JsonObject, ModelProperty, ObjectId,
    PropertySpec, SUSPICIOUS_CYCLE,
};
pub use value::{
    AccessMode, PropertyType, TWIN_NAME_MAX, TWIN_VALUE_MAX, Value, coerce, is_twin_char,
    is_valid_twin_name, is_valid_twin_value, parse_value, sanitize_twin_value, scale_linear,
    shortest_decimals,
};
