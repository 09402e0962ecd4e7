//! The SDK's typed view of devices and models (converted once from DMI
//! messages in [`crate::dmi`]).
//! Drivers see only [`Value`](crate::Value)s and their own typed config; these
//! types are for the runtime.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value as Json};

use crate::error::SpecError;
use crate::value::{AccessMode, PropertyType};

/// Cycle used when a device leaves `collectCycle` or `reportCycle` at 0.
pub const DEFAULT_CYCLE: Duration = Duration::from_secs(1);
/// Cycles at or above this are almost certainly nanosecond-era settings
/// (mapper-framework v1.15–v1.17 read cycles as nanoseconds).
pub const SUSPICIOUS_CYCLE: Duration = Duration::from_secs(86_400);

pub use edge_rt::ObjectId;

/// A model property.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelProperty {
    /// Name.
    pub name: String,
    /// Type; `None` when the model gave an unknown type (the property is then
    /// reported as text).
    pub ty: Option<PropertyType>,
    /// Type text as given.
    pub type_text: String,
    /// Access mode.
    pub access_mode: AccessMode,
    /// Lower bound for numeric types.
    pub minimum: Option<f64>,
    /// Upper bound for numeric types.
    pub maximum: Option<f64>,
    /// Unit.
    pub unit: String,
}

/// A device model.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceModel {
    /// `namespace/name`.
    pub id: ObjectId,
    /// Properties by name.
    pub properties: BTreeMap<String, ModelProperty>,
}

/// A device property with its visitor.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertySpec {
    /// Name.
    pub name: String,
    /// Desired value text; `None` when unset or empty.
    pub desired: Option<String>,
    /// Visitor configData (the driver's `Address`), kept as compact JSON
    /// text and decoded when the device starts.
    pub visitor: JsonObject,
    /// Read cycle.
    pub collect_cycle: Duration,
    /// Push cycle.
    pub report_cycle: Duration,
    /// Whether the value is reported as a twin.
    pub report_to_cloud: bool,
    /// `pushMethod` (with `dbMethod`): the data plane's targets for this
    /// property ([`crate::sink`]); `None` when it names no target (most
    /// properties: boxed, so they do not carry an empty one inline).
    pub push_method: Option<Box<crate::sink::PushMethod>>,
}

/// A JSON object kept as its compact text: a property's visitor configData
/// held for the device's lifetime takes a few dozen bytes this way instead
/// of a `BTreeMap` node (about 650 bytes however few keys it has).
#[derive(Clone, PartialEq, Eq)]
pub struct JsonObject(Box<str>);

impl JsonObject {
    /// The object's compact JSON text (`{}` when empty).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The object decoded.
    pub fn to_map(&self) -> Map<String, Json> {
        // The text was written from a `Map` by `From` below, so it parses
        // back; the empty map is only a guard.
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

impl From<&Map<String, Json>> for JsonObject {
    fn from(map: &Map<String, Json>) -> Self {
        // A map with string keys always serialises.
        Self(
            serde_json::to_string(map)
                .unwrap_or_else(|_| "{}".into())
                .into_boxed_str(),
        )
    }
}

impl Default for JsonObject {
    fn default() -> Self {
        Self("{}".into())
    }
}

impl std::fmt::Debug for JsonObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A device as the runtime runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    /// `namespace/name`.
    pub id: ObjectId,
    /// Model id (same namespace).
    pub model: ObjectId,
    /// `spec.protocol.protocolName`.
    pub protocol_name: String,
    /// Protocol configData, decoded to JSON (the driver's `Config`).
    pub protocol_config: Map<String, Json>,
    /// Properties, in the order given.
    pub properties: Vec<PropertySpec>,
    /// State reporting: `Some(cycle)` when `status.reportToCloud` is set.
    pub state_report: Option<Duration>,
    /// `spec.methods` (KubeEdge v1.19+): the named writes the data panel offers.
    pub methods: Vec<DeviceMethod>,
}

/// A device method (`spec.methods[]`): a named write of some properties,
/// offered by the REST data panel at
/// `/api/v1/devicemethod/{namespace}/{name}/{method}/{property}/{data}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceMethod {
    /// Method name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The properties it may write.
    pub property_names: Vec<String>,
}

impl DeviceSpec {
    /// The spec with every desired value cleared: two specs that are equal this way
    /// differ only in desired values, which are applied without a reconnect.
    pub fn without_desired(&self) -> DeviceSpec {
        let mut s = self.clone();
        for p in &mut s.properties {
            p.desired = None;
        }
        s
    }
}

pub(crate) fn cycle(ms: i64) -> Duration {
    if ms <= 0 {
        DEFAULT_CYCLE
    } else {
        Duration::from_millis(ms as u64)
    }
}

pub(crate) fn bound(
    model: &ObjectId,
    property: &str,
    field: &'static str,
    text: &str,
) -> Result<Option<f64>, SpecError> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse::<f64>().map(Some).map_err(|_| SpecError::BadBound {
        model: model.to_string(),
        property: property.to_owned(),
        field,
        value: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_object_keeps_every_value_exactly() {
        let original = json!({
            "offset": 40001,
            "scale": 0.30000000000000004,
            "tiny": 5e-324,
            "big": u64::MAX,
            "negative": i64::MIN,
            "nodeID": "ns=3;s=Ünïcode \"quoted\"",
            "flags": [true, false, null],
            "nested": {"a": {"b": [1.5, "x"]}},
        });
        let map = original.as_object().unwrap();
        let kept = JsonObject::from(map);
        assert_eq!(&kept.to_map(), map);
        assert!(
            kept.as_str()
                .starts_with(r#"{"big":18446744073709551615,"flags":[true,false,null],"#),
            "compact: {kept:?}"
        );
        assert_eq!(JsonObject::default().to_map(), Map::new());
        assert_eq!(JsonObject::from(&Map::new()), JsonObject::default());
    }
}
