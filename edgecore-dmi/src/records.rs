//! The records edgecore-dmi keeps in memory and in the store: devices and
//! models with their origin, registered mappers, and the latest twins and state
//! of each device. The admin views built from them are in [`crate::views`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use device_crds::{Device, DeviceModel};
use serde::{Deserialize, Serialize};

use crate::key::ObjectKey;
pub use crate::twin_maps::{Metadata, MetadataIter, Twins};

/// A Device and where it came from (file path, `kubernetes`), kept compact.
///
/// A node holds thousands of these, so the resource is kept as its JSON
/// encoding (decoded by [`StoredDevice::crd`] when a DMI message or an admin
/// view is built, which is rare) next to what the hot paths need: its key, its
/// model's key, its node name and the names of its properties (a report is
/// checked against them). The origin is shared by the devices of one file. A
/// device of five properties takes about 0.8 KiB here, where the decoded form
/// takes about 3 KiB (benches/README.md, "edgecore-dmi memory at 10 000
/// devices").
///
/// In the store it is the JSON object `{"crd": <Device>, "origin": "<text>"}`.
#[derive(Clone)]
pub struct StoredDevice {
    /// `namespace/name`.
    key: ObjectKey,
    /// `namespace/model`, when the device names a model.
    model_key: Option<ObjectKey>,
    /// `spec.nodeName`, when set.
    node_name: Option<Box<str>>,
    /// The property names, concatenated; `name_ends[i]` is where name `i` ends.
    names: Box<str>,
    /// See `names`.
    name_ends: Box<[u32]>,
    /// The resource as JSON.
    encoded: Box<[u8]>,
    /// Where it came from, for messages.
    origin: Arc<str>,
}

impl StoredDevice {
    /// Keeps `crd`, which came from `origin` (a file path, `kubernetes`).
    ///
    /// # Errors
    /// When `crd` cannot be encoded as JSON (it holds a number JSON cannot
    /// represent), naming the device.
    pub fn new(crd: &Device, origin: Arc<str>) -> Result<Self, String> {
        let key = ObjectKey::from_meta(&crd.metadata);
        let encoded = serde_json::to_vec(crd)
            .map_err(|e| format!("device {key}: cannot be kept: {e}"))?
            .into_boxed_slice();
        let mut names = String::new();
        let mut name_ends = Vec::with_capacity(crd.spec.properties.len());
        for p in &crd.spec.properties {
            names.push_str(&p.name);
            name_ends.push(u32::try_from(names.len()).unwrap_or(u32::MAX));
        }
        Ok(Self {
            model_key: crd
                .spec
                .model_name()
                .map(|m| ObjectKey::new(key.namespace(), m)),
            key,
            node_name: crd.spec.node_name.as_deref().map(Box::from),
            names: names.into_boxed_str(),
            name_ends: name_ends.into_boxed_slice(),
            encoded,
            origin,
        })
    }

    /// The device's key (`namespace/name`).
    pub fn key(&self) -> &ObjectKey {
        &self.key
    }

    /// Its model's key, when `spec.deviceModelRef.name` is set (the model is
    /// in the device's namespace).
    pub fn model_key(&self) -> Option<&ObjectKey> {
        self.model_key.as_ref()
    }

    /// `spec.nodeName`, when set.
    pub fn node_name(&self) -> Option<&str> {
        self.node_name.as_deref()
    }

    /// Where it came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The names of `spec.properties`, in order.
    pub fn property_names(&self) -> impl Iterator<Item = &str> + '_ {
        let mut start = 0usize;
        self.name_ends.iter().filter_map(move |&end| {
            let end = end as usize;
            let name = self.names.get(start..end);
            start = end;
            name
        })
    }

    /// Whether `spec.properties` has one named `name`.
    pub fn declares(&self, name: &str) -> bool {
        self.property_names().any(|n| n == name)
    }

    /// The resource, decoded.
    ///
    /// # Errors
    /// Never for a record made by [`StoredDevice::new`] (its own encoding);
    /// the error names the device all the same.
    pub fn crd(&self) -> Result<Device, String> {
        serde_json::from_slice(&self.encoded)
            .map_err(|e| format!("device {}: stored form unreadable: {e}", self.key))
    }

    /// Whether `other` holds the same resource (origin aside).
    pub fn same_resource(&self, other: &Self) -> bool {
        self.encoded == other.encoded
    }
}

impl fmt::Debug for StoredDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredDevice")
            .field("key", &self.key)
            .field("origin", &self.origin)
            .field("bytes", &self.encoded.len())
            .finish()
    }
}

impl PartialEq for StoredDevice {
    fn eq(&self, other: &Self) -> bool {
        self.same_resource(other) && self.origin == other.origin
    }
}

/// How a [`StoredDevice`] is written to the store.
#[derive(Serialize, Deserialize)]
struct StoredDeviceRecord {
    crd: Device,
    origin: String,
}

impl Serialize for StoredDevice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let crd = self.crd().map_err(serde::ser::Error::custom)?;
        StoredDeviceRecord {
            crd,
            origin: self.origin.to_string(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for StoredDevice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = StoredDeviceRecord::deserialize(d)?;
        Self::new(&r.crd, r.origin.into()).map_err(serde::de::Error::custom)
    }
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
    pub reported_meta: Metadata,
    /// Desired value the mapper has seen.
    pub observed_desired: String,
    /// Its metadata (`status`, `reason` from mappers of this project).
    pub desired_meta: Metadata,
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
    pub twins: Twins,
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

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: &str = "apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: { name: dev-1234, namespace: plant }
spec:
  deviceModelRef: { name: bench-model-34 }
  nodeName: edge-1
  protocol: { protocolName: bench-34, configData: { ip: 10.0.0.1 } }
  properties:
    - { name: temperature, reportToCloud: true }
    - { name: pressure, reportToCloud: true }
    - { name: setpoint, reportToCloud: true, desired: { value: \"22\" } }
    - { name: running, reportToCloud: true }
    - { name: mode, reportToCloud: true }
";

    fn stored() -> StoredDevice {
        let crd: Device = yaml_serde::from_str(DEVICE).expect("sample parses");
        StoredDevice::new(&crd, "devices.yaml".into()).expect("sample is kept")
    }

    #[test]
    fn the_compact_form_answers_without_decoding_and_decodes_to_the_same_resource() {
        let d = stored();
        assert_eq!(d.key().as_str(), "plant/dev-1234");
        assert_eq!(
            d.model_key().map(ObjectKey::as_str),
            Some("plant/bench-model-34")
        );
        assert_eq!(d.node_name(), Some("edge-1"));
        assert_eq!(d.origin(), "devices.yaml");
        assert_eq!(
            d.property_names().collect::<Vec<_>>(),
            ["temperature", "pressure", "setpoint", "running", "mode"]
        );
        assert!(d.declares("mode") && !d.declares("mod") && !d.declares("temperaturepressure"));
        let crd: Device = yaml_serde::from_str(DEVICE).expect("sample parses");
        assert_eq!(d.crd(), Ok(crd));
        // The encoding is the whole memory cost of the resource: keep it small.
        eprintln!(
            "encoded {} bytes: {}",
            d.encoded.len(),
            String::from_utf8_lossy(&d.encoded)
        );
        assert!(d.encoded.len() < 600, "{} bytes", d.encoded.len());
    }

    #[test]
    fn the_store_format_is_crd_and_origin_and_round_trips() {
        let d = stored();
        let json = serde_json::to_value(&d).expect("encodes");
        assert_eq!(json["origin"], "devices.yaml");
        assert_eq!(json["crd"]["metadata"]["name"], "dev-1234");
        let back: StoredDevice = serde_json::from_value(json).expect("decodes");
        assert_eq!(back, d);
        assert!(back.same_resource(&d));
    }
}
