//! DMI messages ⇄ the SDK's types: devices and models in, twins and states out.
//! The only place in the SDK that builds or reads DMI messages, besides the
//! client and server that carry them.

use std::collections::BTreeMap;

use dmi_proto::config_data::from_any_map;
use dmi_proto::v1beta1 as pb;
use serde_json::Map;

use crate::error::SpecError;
use crate::runtime::{DesiredOutcome, DeviceSnapshot};
use crate::sink::PushMethod;
use crate::spec::{
    DeviceMethod, DeviceModel, DeviceSpec, ModelProperty, ObjectId, PropertySpec, SUSPICIOUS_CYCLE,
    bound, cycle,
};
use crate::twin::{Batch, TwinUpdate};
use crate::value::sanitize_twin_value;
use crate::value::{AccessMode, PropertyType};

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
            visitor: (&visitor).into(),
            collect_cycle: cycle(p.collect_cycle),
            report_cycle: cycle(p.report_cycle),
            report_to_cloud: p.report_to_cloud,
            push_method: p
                .push_method
                .as_ref()
                .map(push_method)
                .filter(|m| !m.is_empty())
                .map(Box::new),
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
        methods: spec
            .methods
            .iter()
            .map(|m| DeviceMethod {
                name: m.name.clone(),
                description: m.description.clone(),
                property_names: m.property_names.clone(),
            })
            .collect(),
    })
}

/// A property's `pushMethod` (with its `dbMethod`) in the SDK's terms. A
/// message that names a method but leaves its client config out yields a
/// method with empty fields, which the data plane refuses by name.
fn push_method(p: &pb::PushMethod) -> PushMethod {
    use crate::sink::method as m;
    let db = p.db_method.as_ref();
    PushMethod {
        http: p.http.as_ref().map(|h| m::HttpPush {
            host_name: h.hostname.clone(),
            port: h.port,
            request_path: h.requestpath.clone(),
            timeout_ms: h.timeout,
        }),
        mqtt: p.mqtt.as_ref().map(|q| m::MqttPush {
            address: q.address.clone(),
            topic: q.topic.clone(),
            qos: q.qos,
            retained: q.retained,
        }),
        otel: p.otel.as_ref().map(|o| m::OtelPush {
            endpoint_url: o.endpoint_url.clone(),
        }),
        db: m::DbMethod {
            influxdb2: db.and_then(|d| d.influxdb2.as_ref()).map(|i| {
                let c = i.influxdb2_client_config.clone().unwrap_or_default();
                let d = i.influxdb2_data_config.clone().unwrap_or_default();
                m::Influxdb2 {
                    url: c.url,
                    org: c.org,
                    bucket: c.bucket,
                    measurement: d.measurement,
                    tags: d.tag.into_iter().collect(),
                    field_key: d.field_key,
                }
            }),
            redis: db.and_then(|d| d.redis.as_ref()).map(|r| {
                let c = r.redis_client_config.clone().unwrap_or_default();
                m::RedisDb {
                    addr: c.addr,
                    db: c.db,
                    pool_size: c.poolsize,
                    min_idle_conns: c.min_idle_conns,
                }
            }),
            tdengine: db.and_then(|d| d.tdengine.as_ref()).map(|t| {
                let c = t.td_engine_client_config.clone().unwrap_or_default();
                m::TdEngineDb {
                    addr: c.addr,
                    db_name: c.dbname,
                }
            }),
            mysql: db.and_then(|d| d.mysql.as_ref()).map(|q| {
                let c = q.mysql_client_config.clone().unwrap_or_default();
                m::MysqlDb {
                    addr: c.addr,
                    database: c.database,
                    user_name: c.user_name,
                }
            }),
        },
    }
}

/// A twin as stock EdgeCore needs it: both halves always set (spec §2.4), the
/// values inside its charset, `metadata.timestamp` (ms) and `metadata.type`;
/// this project's mappers add `observedDesired.metadata.status` (`applied`,
/// `rejected`, `pending`) and `reason`, and `reported.metadata.error` for a
/// property that cannot be read at all.
/// Longest metadata value sent (edgecore-dmi refuses longer ones), bytes.
const MAX_METADATA_VALUE: usize = 1024;

/// `text` cut at a character boundary to at most [`MAX_METADATA_VALUE`] bytes.
fn capped(text: &str) -> &str {
    if text.len() <= MAX_METADATA_VALUE {
        return text;
    }
    let mut end = MAX_METADATA_VALUE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub(crate) fn twin_to_proto(t: &TwinUpdate) -> pb::Twin {
    let ts = t.timestamp_ms.to_string();
    let meta = |extra: &[(&str, &str)]| {
        let mut m: BTreeMap<String, String> = BTreeMap::new();
        m.insert("timestamp".to_owned(), ts.clone());
        if t.error.is_none() {
            m.insert("type".to_owned(), t.type_text.to_owned());
        }
        for (k, v) in extra {
            m.insert((*k).to_owned(), capped(v).to_owned());
        }
        m
    };
    let (desired_text, desired_meta) = match &t.desired {
        Some((text, outcome)) => {
            let mut extra = vec![("status", outcome.status())];
            if let DesiredOutcome::Rejected(reason) = outcome {
                extra.push(("reason", reason.as_str()));
            }
            (text.clone(), meta(&extra))
        }
        None if t.error.is_some() => (String::new(), BTreeMap::new()),
        None => (String::new(), meta(&[])),
    };
    let reported_meta = match (&t.error, &t.sink_error) {
        (Some(e), _) => meta(&[("error", e.as_str())]),
        (None, Some(s)) => meta(&[("sinkError", s.as_str())]),
        (None, None) => meta(&[]),
    };
    pb::Twin {
        property_name: t.property.clone(),
        observed_desired: Some(pb::TwinProperty {
            value: desired_text,
            metadata: desired_meta,
        }),
        reported: Some(pb::TwinProperty {
            value: t.reported.clone(),
            metadata: reported_meta,
        }),
    }
}

/// The `ReportDeviceStatus` of a batch (all its twins), if it has twins.
pub(crate) fn status_request(b: &Batch) -> Option<pb::ReportDeviceStatusRequest> {
    (!b.twins.is_empty()).then(|| pb::ReportDeviceStatusRequest {
        device_name: b.id.name.clone(),
        device_namespace: b.id.namespace.clone(),
        reported_device: Some(pb::DeviceStatus {
            twins: b.twins.iter().map(twin_to_proto).collect(),
            report_to_cloud: b.status.0,
            report_cycle: b.status.1,
        }),
    })
}

/// The `ReportDeviceStates` of a batch, if it carries a state.
pub(crate) fn state_request(b: &Batch) -> Option<pb::ReportDeviceStatesRequest> {
    b.state.as_ref().map(|state| pb::ReportDeviceStatesRequest {
        device_name: b.id.name.clone(),
        device_namespace: b.id.namespace.clone(),
        state: state.clone(),
    })
}

/// The device as EdgeCore sent it, with `status.twins` filled from the latest
/// readings (GetDevice).
pub(crate) fn device_with_twins(sent: &pb::Device, snap: &DeviceSnapshot) -> pb::Device {
    let mut d = sent.clone();
    let status = d.status.get_or_insert_with(Default::default);
    status.twins = snap
        .properties
        .iter()
        .map(|p| pb::Twin {
            property_name: p.name.clone(),
            reported: Some(pb::TwinProperty {
                value: p
                    .reported
                    .as_ref()
                    .map(|v| sanitize_twin_value(&v.to_string()).0)
                    .unwrap_or_default(),
                metadata: Default::default(),
            }),
            observed_desired: Some(pb::TwinProperty {
                value: p.desired.as_ref().map(|d| d.0.clone()).unwrap_or_default(),
                metadata: Default::default(),
            }),
        })
        .collect();
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DEFAULT_CYCLE;
    use dmi_proto::config_data::{NumberEncoding, to_any_map};
    use serde_json::Value as Json;
    use serde_json::json;
    use std::time::Duration;

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
