//! The SDK's typed view of devices and models, converted once from DMI messages.
//! Drivers see only [`Value`](crate::Value)s and their own typed config; these
//! types are for the runtime.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use dmi_proto::config_data::from_any_map;
use dmi_proto::v1beta1 as pb;
use serde_json::{Map, Value as Json};

use crate::error::SpecError;
use crate::value::{AccessMode, PropertyType};

/// Cycle used when a device leaves `collectCycle` or `reportCycle` at 0.
pub const DEFAULT_CYCLE: Duration = Duration::from_secs(1);
/// Cycles at or above this are almost certainly nanosecond-era settings
/// (mapper-framework v1.15–v1.17 read cycles as nanoseconds).
pub const SUSPICIOUS_CYCLE: Duration = Duration::from_secs(86_400);

/// `namespace/name` of a device or model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    /// Namespace (`default` when EdgeCore sent none).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectId {
    /// Builds an id, mapping an empty namespace to `default`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: if namespace.is_empty() {
                "default".to_owned()
            } else {
                namespace.to_owned()
            },
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

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
    /// Visitor configData, decoded to JSON (the driver's `Address`).
    pub visitor: Map<String, Json>,
    /// Read cycle.
    pub collect_cycle: Duration,
    /// Push cycle.
    pub report_cycle: Duration,
    /// Whether the value is reported as a twin.
    pub report_to_cloud: bool,
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

fn cycle(ms: i64) -> Duration {
    if ms <= 0 {
        DEFAULT_CYCLE
    } else {
        Duration::from_millis(ms as u64)
    }
}

fn bound(
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

/// Converts a DMI `DeviceModel`.
pub(crate) fn model_from_proto(m: &pb::DeviceModel) -> Result<DeviceModel, SpecError> {
    let id = ObjectId::new(&m.namespace, &m.name);
    let mut properties = BTreeMap::new();
    for p in m
        .spec
        .as_ref()
        .map(|s| s.properties.as_slice())
        .unwrap_or_default()
    {
        let prop = ModelProperty {
            name: p.name.clone(),
            ty: PropertyType::parse(&p.r#type),
            type_text: p.r#type.clone(),
            access_mode: AccessMode::parse(&p.access_mode).unwrap_or_default(),
            minimum: bound(&id, &p.name, "minimum", &p.minimum)?,
            maximum: bound(&id, &p.name, "maximum", &p.maximum)?,
            unit: p.unit.clone(),
        };
        if prop.ty.is_none() {
            tracing::warn!(model = %id, property = %p.name, r#type = %p.r#type, "unknown property type; values are reported as text");
        }
        properties.insert(p.name.clone(), prop);
    }
    Ok(DeviceModel { id, properties })
}

/// Converts a DMI `Device`.
pub(crate) fn device_from_proto(d: &pb::Device) -> Result<DeviceSpec, SpecError> {
    let id = ObjectId::new(&d.namespace, &d.name);
    if d.name.is_empty() {
        return Err(SpecError::Missing {
            what: "device".into(),
            field: "name",
        });
    }
    let spec = d.spec.as_ref().ok_or_else(|| SpecError::Missing {
        what: format!("device {id}"),
        field: "spec",
    })?;
    let config_err = |property: Option<&str>, source| SpecError::ConfigData {
        device: id.to_string(),
        property: property.map(str::to_owned),
        source,
    };
    let (protocol_name, protocol_config) = match &spec.protocol {
        Some(p) => (
            p.protocol_name.clone(),
            match &p.config_data {
                Some(c) => from_any_map(&c.data).map_err(|e| config_err(None, e))?,
                None => Map::new(),
            },
        ),
        None => (String::new(), Map::new()),
    };
    let mut properties = Vec::with_capacity(spec.properties.len());
    for p in &spec.properties {
        let visitor = match p.visitors.as_ref().and_then(|v| v.config_data.as_ref()) {
            Some(c) => from_any_map(&c.data).map_err(|e| config_err(Some(&p.name), e))?,
            None => Map::new(),
        };
        let prop = PropertySpec {
            name: p.name.clone(),
            desired: p
                .desired
                .as_ref()
                .map(|t| t.value.clone())
                .filter(|v| !v.is_empty()),
            visitor,
            collect_cycle: cycle(p.collect_cycle),
            report_cycle: cycle(p.report_cycle),
            report_to_cloud: p.report_to_cloud,
        };
        for (what, c) in [
            ("collectCycle", prop.collect_cycle),
            ("reportCycle", prop.report_cycle),
        ] {
            if c >= SUSPICIOUS_CYCLE {
                tracing::warn!(
                    device = %id, property = %p.name, cycle_ms = c.as_millis() as u64,
                    "{what} is a day or more; cycles are milliseconds (values like 10000000000 were nanoseconds in old mappers)"
                );
            }
        }
        properties.push(prop);
    }
    let state_report = d
        .status
        .as_ref()
        .filter(|s| s.report_to_cloud)
        .map(|s| cycle(s.report_cycle));
    Ok(DeviceSpec {
        model: ObjectId::new(&d.namespace, &spec.device_model_reference),
        id,
        protocol_name,
        protocol_config,
        properties,
        state_report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmi_proto::config_data::{NumberEncoding, to_any_map};
    use serde_json::json;

    fn cv(v: Json) -> Option<pb::CustomizedValue> {
        Some(pb::CustomizedValue {
            data: to_any_map(v.as_object().unwrap(), NumberEncoding::Stock).unwrap(),
        })
    }

    #[test]
    fn converts_device_with_defaults() {
        let d = pb::Device {
            name: "fan".into(),
            namespace: String::new(),
            spec: Some(pb::DeviceSpec {
                device_model_reference: "fan-model".into(),
                protocol: Some(pb::ProtocolConfig {
                    protocol_name: "virtual".into(),
                    config_data: cv(json!({"seed": 3})),
                }),
                properties: vec![pb::DeviceProperty {
                    name: "speed".into(),
                    desired: Some(pb::TwinProperty {
                        value: "10".into(),
                        metadata: Default::default(),
                    }),
                    visitors: Some(pb::VisitorConfig {
                        protocol_name: "virtual".into(),
                        config_data: cv(json!({"pattern": "setpoint"})),
                    }),
                    collect_cycle: 0,
                    report_cycle: 10_000_000_000,
                    report_to_cloud: true,
                    push_method: None,
                }],
                methods: vec![],
            }),
            status: Some(pb::DeviceStatus {
                twins: vec![],
                report_to_cloud: true,
                report_cycle: 0,
            }),
        };
        let s = device_from_proto(&d).unwrap();
        assert_eq!(s.id.to_string(), "default/fan");
        assert_eq!(s.model.to_string(), "default/fan-model");
        assert_eq!(s.protocol_config["seed"], json!(3));
        assert_eq!(s.properties[0].collect_cycle, DEFAULT_CYCLE);
        assert_eq!(
            s.properties[0].report_cycle,
            Duration::from_millis(10_000_000_000)
        );
        assert_eq!(s.properties[0].desired.as_deref(), Some("10"));
        assert_eq!(s.state_report, Some(DEFAULT_CYCLE));
    }

    #[test]
    fn bad_model_bound_names_property() {
        let m = pb::DeviceModel {
            name: "m".into(),
            namespace: "ns".into(),
            spec: Some(pb::DeviceModelSpec {
                properties: vec![pb::ModelProperty {
                    name: "t".into(),
                    r#type: "INT".into(),
                    minimum: "low".into(),
                    ..Default::default()
                }],
                commands: vec![],
            }),
        };
        let e = model_from_proto(&m).unwrap_err().to_string();
        assert_eq!(e, "model ns/m property t: minimum `low` is not a number");
    }
}
