//! Records kept in memory and in the store, and the views the admin API serves.

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

/// One property in [`DeviceView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertyView {
    /// Property name.
    pub name: String,
    /// Desired value in the resource.
    pub desired: Option<String>,
    /// Desired value the mapper last reported seeing.
    pub observed_desired: Option<String>,
    /// What became of the current desired value: `applied`, `rejected` or
    /// `pending` as the mapper said, `applied` when the reported value equals it,
    /// `received` when the mapper has seen it; `None` when the mapper has not
    /// reported it (see [`crate::hub::desired_status`]).
    pub desired_status: Option<String>,
    /// Why it was rejected, if it was.
    pub desired_reason: Option<String>,
    /// Last reported value.
    pub reported: Option<String>,
    /// Age of the reported value, ms.
    pub age_ms: Option<u64>,
    /// The mapper's error for this property (bad visitor, bad protocol config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A device as `edgecore-dmi devices` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Model name.
    pub model: String,
    /// Protocol name.
    pub protocol: String,
    /// Mappers the device is dispatched to.
    pub mappers: Vec<String>,
    /// Last reported state.
    pub state: Option<String>,
    /// Last time online (RFC 3339).
    pub last_online: Option<String>,
    /// Problems: conversion errors, a missing model or mapper, a mapper's refusal.
    pub errors: Vec<String>,
    /// Where the device came from.
    pub origin: String,
    /// Properties.
    pub properties: Vec<PropertyView>,
}

/// A mapper as `edgecore-dmi mappers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapperView {
    /// The record.
    #[serde(flatten)]
    pub record: MapperRecord,
    /// Devices currently delivered to it.
    pub devices: usize,
    /// Last error talking to it.
    pub last_error: Option<String>,
}

/// Everything the admin API serves at `/v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// Devices.
    pub devices: Vec<DeviceView>,
    /// Mappers.
    pub mappers: Vec<MapperView>,
    /// Errors of the device source (bad files), with file and line.
    pub source_errors: Vec<String>,
}
