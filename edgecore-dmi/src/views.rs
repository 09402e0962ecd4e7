//! What the admin API serves (`/v1/status`) and `edgecore-dmi devices` shows:
//! views of the node's devices and mappers, built by [`crate::hub::Hub::status`].

use serde::{Deserialize, Serialize};

use crate::records::MapperRecord;

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
    /// reported it (see [`crate::hub::desired_status`]); when it has not,
    /// `refused by the mapper` or `not delivered` if that is why.
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
    /// What the mapper says is wrong with the property's push/db targets (a
    /// method that cannot work as configured, a target failing now), from the
    /// twin's `reported.metadata.sinkError`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_error: Option<String>,
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
    /// When it last registered, answered a call or reported for one of its
    /// devices (RFC 3339); `None` when it has not since edgecore-dmi started
    /// (a record restored from the store).
    #[serde(default)]
    pub last_contact: Option<String>,
    /// Devices and models it refused and that are held back, each
    /// `Device ns/name: reason` or `DeviceModel ns/name: reason`.
    #[serde(default)]
    pub refusals: Vec<String>,
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
