//! The records edgecore-dmi keeps in memory and in the store: devices and
//! models with their origin, registered mappers, and the latest twins and state
//! of each device. The admin views built from them are in [`crate::views`].

use std::collections::BTreeMap;

use device_crds::{Device, DeviceModel};
use serde::{Deserialize, Serialize};

/// A Device and where it came from (file path, `kubernetes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDevice {
    /// The resource.
    pub crd: Device,
    /// Its origin, for messages.
    pub origin: String,
}

/// A DeviceModel and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredModel {
    /// The resource.
    pub crd: DeviceModel,
    /// Its origin, for messages.
    pub origin: String,
}

/// A registered mapper, as `MapperRegister` described it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapperRecord {
    /// Mapper name (the key).
    pub name: String,
    /// Version text.
    pub version: String,
    /// API version text.
    pub api_version: String,
    /// Protocol served.
    pub protocol: String,
    /// The mapper's socket path.
    pub address: String,
    /// State text the mapper sent.
    pub state: String,
    /// When it last registered (RFC 3339).
    pub registered_at: String,
}

/// One property's latest twin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TwinRecord {
    /// Reported value.
    pub reported: String,
    /// Reported metadata.
    pub reported_meta: BTreeMap<String, String>,
    /// Desired value the mapper has seen.
    pub observed_desired: String,
    /// Its metadata (`status`, `reason` from mappers of this project).
    pub desired_meta: BTreeMap<String, String>,
    /// When this report arrived, ms since the epoch.
    pub updated_ms: u64,
}

/// A device's latest twins and state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TwinState {
    /// Last reported state.
    pub state: Option<String>,
    /// When the state arrived, ms since the epoch.
    pub state_ms: Option<u64>,
    /// Last time the device was online (RFC 3339), as stock EdgeCore records it.
    pub last_online: Option<String>,
    /// Twins by property.
    pub twins: BTreeMap<String, TwinRecord>,
}
