//! Device/DeviceModel resources → DMI messages, as stock EdgeCore builds them:
//! the model's `protocolConfigData` and property `visitors` are the base and the
//! device's keys win (KubeEdge v1.22+ model override), configData is Any-encoded
//! (top-level scalars only), `deviceModelReference` is the model name, and the
//! state-report settings come from `spec.stateReport` (v1.23) or the legacy status.
//!
//! ## Sub-messages are always present
//!
//! Stock EdgeCore builds these messages by JSON-marshalling the CRD's Go structs
//! and unmarshalling the result into the protobuf types (`dtcommon.ConvertDevice`).
//! The CRD holds `spec`, `status`, `spec.protocol`, each property's `desired` and
//! `visitors`, and each twin's `reported` and `observedDesired` as plain structs,
//! which `encoding/json` always emits (`omitempty` has no effect on structs), so
//! they always arrive set: a property without a desired value comes as
//! `desired { value: "" }`. Mappers generated from KubeEdge's mapper-framework
//! rely on it and dereference them without nil checks (`property.Desired.Value`,
//! `pptv.Visitors.ConfigData.Data`, `device.Spec.Protocol.ProtocolName`). This
//! module sends every one of them, and also an empty `configData` where the YAML
//! has none (stock leaves that one out, and the Go mapper's visitor parsing
//! would dereference it). [`missing_stock_fields`] lists what a message lacks.

use device_crds::MetaExt;
use std::collections::HashMap;

use device_crds::{Device, DeviceModel, FreeForm, PushMethod};
use dmi_proto::config_data::{ConfigDataError, NumberEncoding, to_any_map};
use dmi_proto::v1beta1 as pb;

/// A device that cannot be turned into a DMI message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    /// A configData entry cannot cross DMI.
    #[error("{location}: {source}")]
    ConfigData {
        /// Which configData (`spec.protocol.configData`, `property temp visitors`, ...).
        location: String,
        /// Why.
        #[source]
        source: ConfigDataError,
    },
}

fn merged(base: Option<&FreeForm>, over: Option<&FreeForm>) -> FreeForm {
    let mut out = base.cloned().unwrap_or_default();
    if let Some(o) = over {
        for (k, v) in o {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

fn customized(
    data: &FreeForm,
    location: impl Fn() -> String,
    enc: NumberEncoding,
) -> Result<Option<pb::CustomizedValue>, ConvertError> {
    let data = to_any_map(data, enc).map_err(|source| ConvertError::ConfigData {
        location: location(),
        source,
    })?;
    Ok(Some(pb::CustomizedValue { data }))
}

fn push_method(
    p: &PushMethod,
    prop: &str,
    enc: NumberEncoding,
) -> Result<pb::PushMethod, ConvertError> {
    let db = p.db_method.as_ref().map(|db| pb::DbMethod {
        influxdb2: db.influxdb2.as_ref().map(|i| pb::DbMethodInfluxdb2 {
            influxdb2_client_config: Some(pb::Influxdb2ClientConfig {
                url: i.client_config.url.clone(),
                org: i.client_config.org.clone(),
                bucket: i.client_config.bucket.clone(),
            }),
            influxdb2_data_config: Some(pb::Influxdb2DataConfig {
                measurement: i.data_config.measurement.clone(),
                tag: i.data_config.tag.clone().into_iter().collect(),
                field_key: i.data_config.field_key.clone(),
            }),
        }),
        redis: db.redis.as_ref().map(|r| pb::DbMethodRedis {
            redis_client_config: Some(pb::RedisClientConfig {
                addr: r.redis_client_config.addr.clone(),
                db: r.redis_client_config.db,
                poolsize: r.redis_client_config.poolsize,
                min_idle_conns: r.redis_client_config.min_idle_conns,
            }),
        }),
        tdengine: db.tdengine.as_ref().map(|t| pb::DbMethodTdEngine {
            td_engine_client_config: Some(pb::TdEngineClientConfig {
                addr: t.client_config.addr.clone(),
                dbname: t.client_config.db_name.clone(),
            }),
        }),
        mysql: db.mysql.as_ref().map(|m| pb::DbMethodMySql {
            mysql_client_config: Some(pb::MySqlClientConfig {
                addr: m.mysql_client_config.addr.clone(),
                database: m.mysql_client_config.database.clone(),
                user_name: m.mysql_client_config.user_name.clone(),
            }),
        }),
    });
    let anomaly_detection = match &p.anomaly_detection {
        Some(a) => Some(pb::AnomalyDetection {
            data: to_any_map(a, enc).map_err(|source| ConvertError::ConfigData {
                location: format!("property {prop} pushMethod.anomalyDetection"),
                source,
            })?,
        }),
        None => None,
    };
    Ok(pb::PushMethod {
        http: p.http.as_ref().map(|h| pb::PushMethodHttp {
            hostname: h.host_name.clone(),
            port: h.port,
            requestpath: h.request_path.clone(),
            timeout: h.timeout,
        }),
        mqtt: p.mqtt.as_ref().map(|m| pb::PushMethodMqtt {
            address: m.address.clone(),
            topic: m.topic.clone(),
            qos: m.qos,
            retained: m.retained,
        }),
        otel: p.otel.as_ref().map(|o| pb::PushMethodOtel {
            endpoint_url: o.endpoint_url.clone(),
        }),
        db_method: db,
        anomaly_detection,
    })
}

/// Builds the DMI `Device`, merging model defaults.
pub fn device_to_proto(
    d: &Device,
    model: Option<&DeviceModel>,
    enc: NumberEncoding,
) -> Result<pb::Device, ConvertError> {
    let spec = &d.spec;
    let model_props: HashMap<&str, &device_crds::ModelProperty> = model
        .map(|m| {
            m.spec
                .properties
                .iter()
                .map(|p| (p.name.as_str(), p))
                .collect()
        })
        .unwrap_or_default();
    let protocol_data = merged(
        model.and_then(|m| m.spec.protocol_config_data.as_ref()),
        spec.protocol.as_ref().and_then(|p| p.config_data.as_ref()),
    );
    let protocol_name = spec
        .protocol_name()
        .map(str::to_owned)
        .or_else(|| {
            model
                .map(|m| m.spec.protocol.clone())
                .filter(|p| !p.is_empty())
        })
        .unwrap_or_default();
    let mut properties = Vec::with_capacity(spec.properties.len());
    for p in &spec.properties {
        let model_visitor = model_props
            .get(p.name.as_str())
            .and_then(|m| m.visitors.as_ref());
        let visitor_data = merged(
            model_visitor.and_then(|v| v.config_data.as_ref()),
            p.visitors.as_ref().and_then(|v| v.config_data.as_ref()),
        );
        let visitor_protocol = p
            .visitors
            .as_ref()
            .map(|v| v.protocol_name.clone())
            .filter(|n| !n.is_empty())
            .or_else(|| model_visitor.map(|v| v.protocol_name.clone()))
            .unwrap_or_else(|| protocol_name.clone());
        properties.push(pb::DeviceProperty {
            name: p.name.clone(),
            // Always set, as stock EdgeCore does (module docs).
            desired: Some(
                p.desired
                    .as_ref()
                    .map(|t| pb::TwinProperty {
                        value: t.value.clone(),
                        metadata: t.metadata.clone().into_iter().collect(),
                    })
                    .unwrap_or_default(),
            ),
            visitors: Some(pb::VisitorConfig {
                protocol_name: visitor_protocol,
                config_data: customized(
                    &visitor_data,
                    || format!("property {} visitors.configData", p.name),
                    enc,
                )?,
            }),
            report_cycle: p.report_cycle.unwrap_or_default(),
            collect_cycle: p.collect_cycle.unwrap_or_default(),
            report_to_cloud: p.report_to_cloud.unwrap_or_default(),
            push_method: p
                .push_method
                .as_ref()
                .map(|pm| push_method(pm, &p.name, enc))
                .transpose()?,
        });
    }
    let (report_to_cloud, report_cycle) = match (&spec.state_report, &d.status) {
        (Some(s), _) => (s.report_to_cloud, s.report_cycle),
        (None, Some(st)) => (
            st.report_to_cloud.unwrap_or_default(),
            st.report_cycle.unwrap_or_default(),
        ),
        (None, None) => (false, 0),
    };
    Ok(pb::Device {
        name: d.metadata.name_str().to_owned(),
        namespace: d.metadata.namespace_or_default().to_owned(),
        spec: Some(pb::DeviceSpec {
            device_model_reference: spec.model_name().unwrap_or_default().to_owned(),
            protocol: Some(pb::ProtocolConfig {
                protocol_name,
                config_data: customized(
                    &protocol_data,
                    || "spec.protocol.configData".to_owned(),
                    enc,
                )?,
            }),
            properties,
            methods: spec
                .methods
                .iter()
                .map(|m| pb::DeviceMethod {
                    name: m.name.clone(),
                    description: m.description.clone(),
                    property_names: m.property_names.clone(),
                })
                .collect(),
        }),
        status: Some(pb::DeviceStatus {
            twins: Vec::new(),
            report_to_cloud,
            report_cycle,
        }),
    })
}

/// The sub-messages stock EdgeCore always sets that `d` lacks, as dotted paths
/// (`spec.properties[temp].desired`); empty when `d` has the stock shape.
///
/// Checked: `spec`, `status`, `spec.protocol` and its `configData`, every
/// property's `desired`, `visitors` and `visitors.configData`, every status
/// twin's `reported` and `observedDesired`, and inside a `pushMethod.dbMethod`
/// the client (and data) config of each database given. See the module docs for
/// why these must never be absent.
pub fn missing_stock_fields(d: &pb::Device) -> Vec<String> {
    let mut missing = Vec::new();
    let mut need = |present: bool, path: String| {
        if !present {
            missing.push(path);
        }
    };
    need(d.status.is_some(), "status".into());
    for t in d.status.iter().flat_map(|s| &s.twins) {
        let n = &t.property_name;
        need(t.reported.is_some(), format!("status.twins[{n}].reported"));
        need(
            t.observed_desired.is_some(),
            format!("status.twins[{n}].observedDesired"),
        );
    }
    let Some(spec) = &d.spec else {
        need(false, "spec".into());
        return missing;
    };
    match &spec.protocol {
        Some(p) => need(p.config_data.is_some(), "spec.protocol.configData".into()),
        None => need(false, "spec.protocol".into()),
    }
    for p in &spec.properties {
        let n = &p.name;
        need(p.desired.is_some(), format!("spec.properties[{n}].desired"));
        match &p.visitors {
            Some(v) => need(
                v.config_data.is_some(),
                format!("spec.properties[{n}].visitors.configData"),
            ),
            None => need(false, format!("spec.properties[{n}].visitors")),
        }
        let Some(db) = p.push_method.as_ref().and_then(|m| m.db_method.as_ref()) else {
            continue;
        };
        let at = |what: &str| format!("spec.properties[{n}].pushMethod.dbMethod.{what}");
        if let Some(i) = &db.influxdb2 {
            need(
                i.influxdb2_client_config.is_some(),
                at("influxdb2.influxdb2ClientConfig"),
            );
            need(
                i.influxdb2_data_config.is_some(),
                at("influxdb2.influxdb2DataConfig"),
            );
        }
        if let Some(r) = &db.redis {
            need(
                r.redis_client_config.is_some(),
                at("redis.redisClientConfig"),
            );
        }
        if let Some(t) = &db.tdengine {
            need(
                t.td_engine_client_config.is_some(),
                at("tdengine.tdEngineClientConfig"),
            );
        }
        if let Some(m) = &db.mysql {
            need(
                m.mysql_client_config.is_some(),
                at("mysql.mysqlClientConfig"),
            );
        }
    }
    missing
}

/// Builds the DMI `DeviceModel` (v1beta1 carries no protocol or visitors in it).
pub fn model_to_proto(m: &DeviceModel) -> pb::DeviceModel {
    pb::DeviceModel {
        name: m.metadata.name_str().to_owned(),
        namespace: m.metadata.namespace_or_default().to_owned(),
        spec: Some(pb::DeviceModelSpec {
            properties: m
                .spec
                .properties
                .iter()
                .map(|p| pb::ModelProperty {
                    name: p.name.clone(),
                    description: p.description.clone(),
                    r#type: p.type_.clone(),
                    access_mode: p.access_mode.clone(),
                    minimum: p.minimum.clone(),
                    maximum: p.maximum.clone(),
                    unit: p.unit.clone(),
                })
                .collect(),
            commands: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmi_proto::config_data::from_any_map;
    use serde_json::json;

    fn model() -> DeviceModel {
        serde_json::from_value(json!({
            "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "m"},
            "spec": {"protocol": "modbus", "protocolConfigData": {"port": 502, "timeout": 1000},
                     "properties": [{"name": "temp", "type": "INT", "accessMode": "ReadWrite",
                                     "visitors": {"protocolName": "modbus", "configData": {"register": "HoldingRegister", "offset": 1}}}]}
        }))
        .unwrap()
    }

    fn device(extra_visitor: serde_json::Value) -> Device {
        serde_json::from_value(json!({
            "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": "d", "namespace": "plant"},
            "spec": {"deviceModelRef": {"name": "m"},
                     "protocol": {"protocolName": "modbus", "configData": {"ip": "10.0.0.1", "port": 1502}},
                     "properties": [{"name": "temp", "collectCycle": 500, "desired": {"value": "5"},
                                     "visitors": {"protocolName": "modbus", "configData": extra_visitor}}],
                     "stateReport": {"reportToCloud": true, "reportCycle": 2000}}
        }))
        .unwrap()
    }

    #[test]
    fn model_defaults_merge_under_device_keys() {
        let p = device_to_proto(
            &device(json!({"offset": 7})),
            Some(&model()),
            NumberEncoding::Stock,
        )
        .unwrap();
        assert_eq!(p.namespace, "plant");
        let spec = p.spec.unwrap();
        assert_eq!(spec.device_model_reference, "m");
        let proto = from_any_map(&spec.protocol.unwrap().config_data.unwrap().data).unwrap();
        assert_eq!(
            serde_json::Value::Object(proto),
            json!({"ip": "10.0.0.1", "port": 1502, "timeout": 1000})
        );
        let v = from_any_map(
            &spec.properties[0]
                .visitors
                .as_ref()
                .unwrap()
                .config_data
                .as_ref()
                .unwrap()
                .data,
        )
        .unwrap();
        assert_eq!(
            serde_json::Value::Object(v),
            json!({"register": "HoldingRegister", "offset": 7})
        );
        assert_eq!(spec.properties[0].collect_cycle, 500);
        let st = p.status.unwrap();
        assert!(st.report_to_cloud);
        assert_eq!(st.report_cycle, 2000);
    }

    #[test]
    fn the_same_device_always_encodes_to_the_same_bytes() {
        // Mappers are compared with what they were sent by fingerprint; a map
        // with random iteration order would make every rebuild look changed.
        use prost::Message;
        let d = device(json!({"a": 1, "b": "x", "c": true, "d": 2.5, "e": "y", "f": 7}));
        let first = device_to_proto(&d, Some(&model()), NumberEncoding::Stock)
            .unwrap()
            .encode_to_vec();
        for _ in 0..20 {
            assert_eq!(
                device_to_proto(&d, Some(&model()), NumberEncoding::Stock)
                    .unwrap()
                    .encode_to_vec(),
                first
            );
        }
    }

    #[test]
    fn nested_config_data_names_property_and_key() {
        let e = device_to_proto(
            &device(json!({"conn": {"a": 1}})),
            Some(&model()),
            NumberEncoding::Stock,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "property temp visitors.configData: configData key `conn` holds a nested object; DMI carries only flat key → scalar maps"
        );
    }
}
