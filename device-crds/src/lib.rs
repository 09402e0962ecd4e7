//! # device-crds
//!
//! Rust types of the KubeEdge `devices.kubeedge.io/v1beta1` resources, field for
//! field with the upstream schema (KubeEdge v1.23), as kube `CustomResource`s
//! with schemars schemas: [`Device`], [`DeviceModel`] and [`DeviceStatus`].
//! YAML written for KubeEdge parses unchanged; free-form fields (`configData`,
//! `protocolConfigData`, `anomalyDetection`, `extensions`) stay JSON and are
//! `x-kubernetes-preserve-unknown-fields` in the CRDs.
//!
//! Two status shapes exist upstream, and both are here:
//! * KubeEdge v1.23+: twins, state and lastOnlineTime live in a separate
//!   [`DeviceStatus`] object per Device (same name, owner reference);
//! * before v1.23: they live in the Device's own status ([`DeviceReportedStatus`]:
//!   `twins`, `state`, `lastOnlineTime`).
//!
//! `edgecore-dmi --status-mode device-status|legacy` and `device-controller
//! --status-mode device-status|legacy` choose; `device-status` is the default.
//! The spec structs reject unknown fields, so a misspelt key is an error naming
//! it instead of a silently ignored setting.
//!
//! [`crd_files`] renders the CRDs committed in `deploy/crds/`.
//!
//! Used by `edgecore-dmi` (both device sources) and `device-controller`.
//!
//! ```no_run
//! let dev: device_crds::Device = serde_json::from_str(r#"{"apiVersion":"devices.kubeedge.io/v1beta1",
//!   "kind":"Device","metadata":{"name":"fan"},"spec":{"deviceModelRef":{"name":"fan-model"}}}"#).unwrap();
//! assert_eq!(dev.spec.model_name(), Some("fan-model"));
//! ```
//!
//! ## Feature flags
//! None.

use std::collections::BTreeMap;

pub mod check;
pub mod protocols;

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// API group of the device resources.
pub const GROUP: &str = "devices.kubeedge.io";
/// The `apiVersion` these types describe.
pub const API_VERSION: &str = "devices.kubeedge.io/v1beta1";
/// Label carrying a Device's `spec.nodeName`, kept in sync by the device
/// controller so that each edge node can watch only its own devices.
pub const NODE_LABEL: &str = "devices.kubeedge.io/node-name";
/// Finalizer the device controller puts on DeviceModels that devices reference.
pub const MODEL_FINALIZER: &str = "devices.kubeedge.io/model-in-use";
/// A free-form JSON object (`x-kubernetes-preserve-unknown-fields`).
pub type FreeForm = Map<String, Value>;

fn preserve_unknown(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "nullable": true
    })
}

/// Name and namespace of any object, with KubeEdge's defaults.
pub trait MetaExt {
    /// `metadata.name`, empty when unset.
    fn name_str(&self) -> &str;
    /// `metadata.namespace`, `default` when unset or empty.
    fn namespace_or_default(&self) -> &str;
}

impl MetaExt for ObjectMeta {
    fn name_str(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    fn namespace_or_default(&self) -> &str {
        match self.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => ns,
            _ => "default",
        }
    }
}

/// `Device.spec`: one physical device bound to an edge node. The generated
/// [`Device`] resource carries `metadata`, this spec and a [`DeviceReportedStatus`].
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "devices.kubeedge.io",
    version = "v1beta1",
    kind = "Device",
    namespaced,
    derive = "PartialEq",
    status = "DeviceReportedStatus",
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.deviceModelRef.name"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceSpec {
    /// The model, in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_model_ref: Option<LocalObjectReference>,
    /// The edge node this device is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// How to reach the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProtocolConfig>,
    /// Properties to collect and, for ReadWrite ones, to set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<DeviceProperty>,
    /// Device methods (v1.19+).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<DeviceMethod>,
    /// Whether and how often the mapper reports the device state (v1.23+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_report: Option<StateReport>,
}

impl DeviceSpec {
    /// Name of the referenced model, if any.
    pub fn model_name(&self) -> Option<&str> {
        self.device_model_ref
            .as_ref()
            .map(|r| r.name.as_str())
            .filter(|n| !n.is_empty())
    }

    /// Name of the protocol, if any.
    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol
            .as_ref()
            .map(|p| p.protocol_name.as_str())
            .filter(|n| !n.is_empty())
    }
}

/// A reference to an object in the same namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    /// Object name.
    #[serde(default)]
    pub name: String,
}

/// `spec.protocol`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtocolConfig {
    /// Protocol name; a device goes to the mappers registered for it.
    #[serde(default)]
    pub protocol_name: String,
    /// Free-form protocol settings (flat key → scalar over DMI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub config_data: Option<FreeForm>,
}

/// `spec.properties[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceProperty {
    /// Property name; must exist in the model.
    pub name: String,
    /// Desired value (ReadWrite properties).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<TwinProperty>,
    /// Where the property lives on the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitors: Option<VisitorConfig>,
    /// Push/database cycle, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_cycle: Option<i64>,
    /// Read cycle, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect_cycle: Option<i64>,
    /// Whether the value is reported as a twin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_to_cloud: Option<bool>,
    /// Push targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_method: Option<Box<PushMethod>>,
}

/// A twin value with metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TwinProperty {
    /// The value as text. YAML numbers and booleans are accepted and kept as text.
    #[serde(default, deserialize_with = "scalar_as_string")]
    pub value: String,
    /// Free metadata (`timestamp`, `type`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

fn scalar_as_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        other => Err(serde::de::Error::custom(format!(
            "expected a scalar value, found {}",
            if other.is_array() { "a list" } else { "a map" }
        ))),
    }
}

/// `visitors`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VisitorConfig {
    /// Protocol name (informational).
    #[serde(default)]
    pub protocol_name: String,
    /// Free-form address of the property on the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub config_data: Option<FreeForm>,
}

/// `pushMethod`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushMethod {
    /// HTTP push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<PushMethodHttp>,
    /// MQTT push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<PushMethodMqtt>,
    /// OpenTelemetry push (v1.19+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otel: Option<PushMethodOtel>,
    /// Database sinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_method: Option<DbMethod>,
    /// Free-form anomaly detection settings (v1.23+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub anomaly_detection: Option<FreeForm>,
}

/// `pushMethod.http`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushMethodHttp {
    /// Host with scheme, e.g. `http://127.0.0.1`.
    #[serde(default)]
    pub host_name: String,
    /// TCP port.
    #[serde(default)]
    pub port: i64,
    /// Request path.
    #[serde(default)]
    pub request_path: String,
    /// Timeout, milliseconds.
    #[serde(default)]
    pub timeout: i64,
}

/// `pushMethod.mqtt`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushMethodMqtt {
    /// Broker address, e.g. `tcp://127.0.0.1:1883`.
    #[serde(default)]
    pub address: String,
    /// Topic.
    #[serde(default)]
    pub topic: String,
    /// QoS 0, 1 or 2.
    #[serde(default)]
    pub qos: i32,
    /// Retained flag.
    #[serde(default)]
    pub retained: bool,
}

/// `pushMethod.otel`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushMethodOtel {
    /// OTLP/HTTP metrics URL.
    #[serde(default, rename = "endpointURL")]
    pub endpoint_url: String,
}

/// `pushMethod.dbMethod`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DbMethod {
    /// InfluxDB v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub influxdb2: Option<DbMethodInfluxdb2>,
    /// Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<DbMethodRedis>,
    /// TDengine (note the capitalised key upstream).
    #[serde(default, rename = "TDEngine", skip_serializing_if = "Option::is_none")]
    pub tdengine: Option<DbMethodTdEngine>,
    /// MySQL (v1.17+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<DbMethodMySql>,
}

/// `dbMethod.influxdb2`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DbMethodInfluxdb2 {
    /// Server settings.
    #[serde(default, rename = "influxdb2ClientConfig")]
    pub client_config: Influxdb2ClientConfig,
    /// Point layout.
    #[serde(default, rename = "influxdb2DataConfig")]
    pub data_config: Influxdb2DataConfig,
}

/// `influxdb2ClientConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Influxdb2ClientConfig {
    /// Server URL.
    #[serde(default)]
    pub url: String,
    /// Organisation.
    #[serde(default)]
    pub org: String,
    /// Bucket.
    #[serde(default)]
    pub bucket: String,
}

/// `influxdb2DataConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Influxdb2DataConfig {
    /// Measurement name.
    #[serde(default)]
    pub measurement: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag: BTreeMap<String, String>,
    /// Field key.
    #[serde(default)]
    pub field_key: String,
}

/// `dbMethod.redis`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DbMethodRedis {
    /// Client settings.
    #[serde(default)]
    pub redis_client_config: RedisClientConfig,
}

/// `redisClientConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisClientConfig {
    /// `host:port`.
    #[serde(default)]
    pub addr: String,
    /// Database number.
    #[serde(default)]
    pub db: i32,
    /// Pool size.
    #[serde(default)]
    pub poolsize: i32,
    /// Minimum idle connections.
    #[serde(default)]
    pub min_idle_conns: i32,
}

/// `dbMethod.TDEngine`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DbMethodTdEngine {
    /// Client settings.
    #[serde(default, rename = "TDEngineClientConfig")]
    pub client_config: TdEngineClientConfig,
}

/// `TDEngineClientConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TdEngineClientConfig {
    /// `host:port`.
    #[serde(default)]
    pub addr: String,
    /// Database name.
    #[serde(default)]
    pub db_name: String,
}

/// `dbMethod.mysql`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DbMethodMySql {
    /// Client settings.
    #[serde(default)]
    pub mysql_client_config: MySqlClientConfig,
}

/// `mysqlClientConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MySqlClientConfig {
    /// `host:port`.
    #[serde(default)]
    pub addr: String,
    /// Database name.
    #[serde(default)]
    pub database: String,
    /// User name (the password comes from the environment).
    #[serde(default)]
    pub user_name: String,
}

/// `spec.methods[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceMethod {
    /// Method name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Properties the method may write.
    #[serde(default)]
    pub property_names: Vec<String>,
}

/// `spec.stateReport` (v1.23+).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateReport {
    /// Whether the mapper reports the device state.
    #[serde(default)]
    pub report_to_cloud: bool,
    /// State report cycle, milliseconds.
    #[serde(default)]
    pub report_cycle: i64,
}

/// `Device.status`. Before KubeEdge v1.23 twins, state and lastOnlineTime lived
/// here; v1.23 moved them to the [`DeviceStatus`] resource and kept only the
/// state-report settings. `conditions` are written by this project's device
/// controller (Ready, ModelNotFound, Invalid).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceReportedStatus {
    /// Twin values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub twins: Vec<Twin>,
    /// Device state (`online`, `offline`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Last time the device was online, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_online_time: Option<String>,
    /// Legacy state-report switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_to_cloud: Option<bool>,
    /// Legacy state-report cycle, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_cycle: Option<i64>,
    /// Conditions from the device controller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// `DeviceStatus.spec` (v1.23+): empty; the generated [`DeviceStatus`] resource,
/// one per Device with the same name and an owner reference, carries the twins.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "devices.kubeedge.io",
    version = "v1beta1",
    kind = "DeviceStatus",
    namespaced,
    derive = "PartialEq",
    status = "DeviceStatusStatus"
)]
pub struct DeviceStatusSpec {}

/// `DeviceStatus.status` (v1.23+).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatusStatus {
    /// Twin values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub twins: Vec<Twin>,
    /// Device state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Last time the device was online, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_online_time: Option<String>,
    /// Free-form extensions (never written by KubeEdge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub extensions: Option<FreeForm>,
}

/// One twin in a status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Twin {
    /// Property name.
    pub property_name: String,
    /// Last reported value.
    #[serde(default)]
    pub reported: TwinProperty,
    /// Desired value the mapper has seen.
    #[serde(default)]
    pub observed_desired: TwinProperty,
}

/// `DeviceModel.spec`: the property schema shared by devices of one kind. The
/// generated [`DeviceModel`] resource has no status upstream; this project's
/// controller adds conditions and the devices that reference it.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "devices.kubeedge.io",
    version = "v1beta1",
    kind = "DeviceModel",
    namespaced,
    derive = "PartialEq",
    status = "DeviceModelStatus",
    printcolumn = r#"{"name":"Protocol","type":"string","jsonPath":".spec.protocol"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceModelSpec {
    /// Protocol; model RPCs go to the mappers registered for it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Properties.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<ModelProperty>,
    /// Default protocol configData for devices of this model (v1.22+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub protocol_config_data: Option<FreeForm>,
}

/// `DeviceModel.spec.properties[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelProperty {
    /// Property name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `INT`, `FLOAT`, `DOUBLE`, `STRING`, `BOOLEAN`, `BYTES` or `STREAM`.
    #[serde(default, rename = "type")]
    pub type_: String,
    /// `ReadWrite` or `ReadOnly`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access_mode: String,
    /// Lower bound, as text.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "scalar_as_string"
    )]
    pub minimum: String,
    /// Upper bound, as text.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "scalar_as_string"
    )]
    pub maximum: String,
    /// Unit.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    /// Default visitor for devices of this model (v1.22+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitors: Option<VisitorConfig>,
}

/// `DeviceModel.status` (this project's controller only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceModelStatus {
    /// Devices in the namespace that reference the model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referenced_by: Vec<String>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The property types of the CRD enum.
pub const PROPERTY_TYPES: [&str; 7] = [
    "INT", "FLOAT", "DOUBLE", "STRING", "BOOLEAN", "BYTES", "STREAM",
];
/// The access modes of the CRD enum.
pub const ACCESS_MODES: [&str; 2] = ["ReadWrite", "ReadOnly"];

/// The CustomResourceDefinitions of this crate as `(file name, YAML)`, the form
/// committed in `deploy/crds/`.
pub fn crd_files() -> Vec<(&'static str, String)> {
    use kube::CustomResourceExt;
    let render = |crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
        let body = yaml_serde::to_string(&crd).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
        format!("# Generated from device-crds (Rust types); do not edit.\n# Regenerate: UPDATE_CRDS=1 cargo test -p device-crds --test crds\n{body}")
    };
    vec![
        ("devices_v1beta1_device.yaml", render(Device::crd())),
        (
            "devices_v1beta1_devicemodel.yaml",
            render(DeviceModel::crd()),
        ),
        (
            "devices_v1beta1_devicestatus.yaml",
            render(DeviceStatus::crd()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: beta1-model
  namespace: default
spec:
  properties:
    - name: temp
      description: beta1-model
      type: INT
      accessMode: ReadWrite
      maximum: "100"
      minimum: "1"
      unit: "Celsius"
  protocol: modbus
"#;

    const DEVICE: &str = r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: beta1-device
spec:
  deviceModelRef:
    name: beta1-model
  nodeName: worker-node1
  properties:
    - name: temp
      collectCycle: 2000
      reportCycle: 2000
      desired:
        value: "30"
      reportToCloud: true
      pushMethod:
        mqtt:
          address: tcp://127.0.0.1:1883
          topic: temp
          qos: 0
          retained: false
        dbMethod:
          influxdb2:
            influxdb2ClientConfig:
              url: http://127.0.0.1:8086
              org: test-org
              bucket: test-bucket
            influxdb2DataConfig:
              measurement: stat
              tag:
                unit: temperature
              fieldKey: devicetest
      visitors:
        protocolName: modbus
        configData:
          register: "HoldingRegister"
          offset: 2
          limit: 1
          scale: 1
          isSwap: true
          isRegisterSwap: true
  protocol:
    protocolName: modbus
    configData:
      ip: 172.17.0.3
      port: 1502
"#;

    #[test]
    fn kubeedge_examples_parse() {
        let m: DeviceModel = yaml_serde::from_str(MODEL).unwrap();
        assert_eq!(m.spec.protocol, "modbus");
        assert_eq!(m.spec.properties[0].maximum, "100");
        let d: Device = yaml_serde::from_str(DEVICE).unwrap();
        assert_eq!(d.metadata.namespace_or_default(), "default");
        assert_eq!(d.spec.model_name(), Some("beta1-model"));
        assert_eq!(d.spec.protocol_name(), Some("modbus"));
        let p = &d.spec.properties[0];
        assert_eq!(p.desired.as_ref().unwrap().value, "30");
        let db = p.push_method.as_ref().unwrap().db_method.as_ref().unwrap();
        assert_eq!(
            db.influxdb2.as_ref().unwrap().data_config.field_key,
            "devicetest"
        );
        assert_eq!(
            p.visitors.as_ref().unwrap().config_data.as_ref().unwrap()["offset"],
            2
        );
        // Round trips through JSON and YAML keep everything.
        let again: Device = serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(again, d);
        let again: Device = yaml_serde::from_str(&yaml_serde::to_string(&d).unwrap()).unwrap();
        assert_eq!(again, d);
        let m2: DeviceModel = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
        assert_eq!(m2, m);
        // Serialized back, the upstream keys are there.
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(
            v["spec"]["properties"][0]["pushMethod"]["dbMethod"]["influxdb2"]["influxdb2DataConfig"]
                ["fieldKey"],
            "devicetest"
        );
    }

    #[test]
    fn misspelt_field_is_an_error_naming_it() {
        let bad = DEVICE.replace("collectCycle", "collectCyle");
        let err = yaml_serde::from_str::<Device>(&bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("collectCyle"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn numeric_desired_value_is_kept_as_text() {
        let d: Device =
            yaml_serde::from_str(&DEVICE.replace("value: \"30\"", "value: 30")).unwrap();
        assert_eq!(d.spec.properties[0].desired.as_ref().unwrap().value, "30");
    }
}
