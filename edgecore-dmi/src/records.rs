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
    /// Desired values set on the edge (over MQTT, [`crate::bridge`]) by
    /// property; each replaces the device source's desired value of its
    /// property until the source changes that value ([`EdgeDesired`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub edge_desired: BTreeMap<String, EdgeDesired>,
}

/// A desired value set on the edge (a `$hw/events/device/.../twin/update`
/// message) rather than in the device source.
///
/// The newest write wins: this value replaces the source's desired value of
/// the property, until the source's value differs from
/// [`source_value`](Self::source_value), the one it had when this was set. A
/// later edit of the YAML (or the Kubernetes Device) is newer, and replaces
/// this one; edits of anything else leave it in place.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeDesired {
    /// The desired value.
    pub value: String,
    /// The device source's desired value of the property when this was set
    /// (empty when it had none).
    pub source_value: String,
    /// When it was set, ms since the epoch.
    pub set_ms: u64,
}
