//! # mapper-ble
//!
//! A [`mapper_sdk::Driver`] for Bluetooth Low Energy peripherals over
//! `btleplug`, which talks to BlueZ on the system D-Bus: no hand-written
//! GATT or D-Bus code.
//!
//! * Protocol configData ([`BleConfig`]): KubeEdge's `macAddress`, or `name`
//!   (advertised local name) or `serviceUuid` to find the peripheral;
//!   `adapter` (`hci0`, default the first); `scanTimeoutMs`,
//!   `connectTimeoutMs`, `linkCheckMs`. Unknown keys are errors naming them.
//! * Visitor configData ([`BleAddress`]): KubeEdge's `characteristicUUID`;
//!   the value's bytes converted by the flat keys (`startIndex`, `endIndex`,
//!   `dataType`, `byteOrder`, `scale`, `offset`) or by KubeEdge's nested
//!   `dataConverter`, as an object or a JSON string ([`codec`]); KubeEdge's
//!   `dataWrite` map for writes, else the value encoded by the conversion;
//!   `writeWithResponse`, `notify`.
//! * **Reads** on the collect cycle read each characteristic once per tick
//!   however many properties share it ([`BleDevice::requests`] counts GATT
//!   requests). **Notifications** (and indications) are push-mode collection
//!   through [`mapper_sdk::DeviceClient::subscribe`]: the characteristic is subscribed,
//!   read once for a first value, and every notification becomes a sample;
//!   the SDK stops polling those properties and owns state, reporting and
//!   deadlines. **Writes** go with or without response by the
//!   characteristic's flags (or `writeWithResponse`).
//! * **Links.** A disconnect, a BlueZ refusal to answer, or the D-Bus
//!   connection going away is a link error: the SDK reports the device
//!   `offline` and reconnects with backoff; a new connection finds, connects
//!   and subscribes again, and the D-Bus connection itself is reopened when
//!   it no longer answers ([`session`]). BlueZ refusing a request
//!   (`NotPermitted`, `NotSupported`, ...) is the device's answer, not a link
//!   failure. `online` comes only with an answered read or a notification.
//!
//! Runtime needs: BlueZ (`bluetoothd`) on the system D-Bus, reached through
//! `DBUS_SYSTEM_BUS_ADDRESS` or `/run/dbus/system_bus_socket`. The build
//! links the system `libdbus-1` (Debian `libdbus-1-dev`, `pkg-config`).
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     mapper_sdk::main("ble", mapper_ble::BleDriver::default())
//! }
//! ```
//!
//! ## Feature flags
//! None.

#![warn(missing_docs)]

pub mod codec;
pub mod config;
mod device;
mod error;
pub mod session;
pub mod visitor;

pub use codec::{ByteOrder, Conversion, Converter, DataType, Flat, Operation, OperationType};
pub use config::{BleConfig, parse_mac, parse_uuid};
pub use device::BleDevice;
pub use error::link_error;
pub use session::Session;
pub use visitor::{BleAddress, WriteMap};

use mapper_sdk::{Driver, DriverResult, PropertyType};

/// The BLE protocol: opens [`BleDevice`]s and owns what they share (the
/// D-Bus connection to BlueZ, the adapters' scan and connect turns). One
/// value per mapper.
#[derive(Debug, Default)]
pub struct BleDriver {
    session: Session,
}

impl Driver for BleDriver {
    type Config = BleConfig;
    type Address = BleAddress;
    type Client = BleDevice;

    fn prepare_address(
        &self,
        addr: &mut BleAddress,
        model_type: Option<PropertyType>,
    ) -> DriverResult<()> {
        addr.prepare(model_type)
    }

    async fn connect(&self, cfg: &BleConfig) -> DriverResult<BleDevice> {
        let opened = self.session.open(cfg).await?;
        Ok(BleDevice::new(opened, cfg.link_check))
    }
}
