//! The `.proto` against the DMI v1beta1 spec (§1.3): every message, field name,
//! number, type and label, and both services with their methods. A change to
//! api.proto that breaks wire compatibility with KubeEdge fails here.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use prost_types::field_descriptor_proto::{Label, Type};

/// message field number type (repeated types start with `[]`, maps are `map<k,v>`).
const SPEC: &str = "
MapperRegisterRequest withData 1 bool
MapperRegisterRequest mapper 2 MapperInfo
MapperRegisterResponse modelList 1 []DeviceModel
MapperRegisterResponse deviceList 2 []Device
DeviceModel name 1 string
DeviceModel spec 2 DeviceModelSpec
DeviceModel namespace 3 string
DeviceModelSpec properties 1 []ModelProperty
DeviceModelSpec commands 2 []DeviceCommand
ModelProperty name 1 string
ModelProperty description 2 string
ModelProperty type 3 string
ModelProperty accessMode 4 string
ModelProperty minimum 5 string
ModelProperty maximum 6 string
ModelProperty unit 7 string
DeviceCommand name 1 string
DeviceCommand url 2 string
DeviceCommand method 3 string
DeviceCommand status_code 4 []string
DeviceCommand parameters 5 []string
DeviceCommand response 6 bytes
Device name 1 string
Device spec 2 DeviceSpec
Device status 3 DeviceStatus
Device namespace 4 string
DeviceSpec deviceModelReference 1 string
DeviceSpec protocol 2 ProtocolConfig
DeviceSpec properties 3 []DeviceProperty
DeviceSpec methods 4 []DeviceMethod
DeviceMethod name 1 string
DeviceMethod description 2 string
DeviceMethod propertyNames 3 []string
DeviceProperty name 1 string
DeviceProperty desired 2 TwinProperty
DeviceProperty visitors 3 VisitorConfig
DeviceProperty reportCycle 4 int64
DeviceProperty collectCycle 5 int64
DeviceProperty reportToCloud 6 bool
DeviceProperty pushMethod 7 PushMethod
ProtocolConfig protocolName 1 string
ProtocolConfig configData 2 CustomizedValue
VisitorConfig protocolName 1 string
VisitorConfig configData 2 CustomizedValue
CustomizedValue data 1 map<string,google.protobuf.Any>
PushMethod http 1 PushMethodHTTP
PushMethod mqtt 2 PushMethodMQTT
PushMethod dbMethod 3 DBMethod
PushMethod otel 4 PushMethodOTEL
PushMethod anomalyDetection 5 AnomalyDetection
PushMethodHTTP hostname 1 string
PushMethodHTTP port 2 int64
PushMethodHTTP requestpath 3 string
PushMethodHTTP timeout 4 int64
PushMethodMQTT address 1 string
PushMethodMQTT topic 2 string
PushMethodMQTT qos 3 int32
PushMethodMQTT retained 4 bool
PushMethodOTEL endpointURL 1 string
DBMethod influxdb2 1 DBMethodInfluxdb2
DBMethod redis 2 DBMethodRedis
DBMethod tdengine 3 DBMethodTDEngine
DBMethod mysql 4 DBMethodMySQL
DBMethodInfluxdb2 influxdb2ClientConfig 1 Influxdb2ClientConfig
DBMethodInfluxdb2 influxdb2DataConfig 2 Influxdb2DataConfig
Influxdb2ClientConfig url 1 string
Influxdb2ClientConfig org 2 string
Influxdb2ClientConfig bucket 3 string
Influxdb2DataConfig measurement 1 string
Influxdb2DataConfig tag 2 map<string,string>
Influxdb2DataConfig fieldKey 3 string
DBMethodRedis redisClientConfig 1 RedisClientConfig
RedisClientConfig addr 1 string
RedisClientConfig db 2 int32
RedisClientConfig poolsize 3 int32
RedisClientConfig minIdleConns 4 int32
DBMethodTDEngine tdEngineClientConfig 1 TDEngineClientConfig
TDEngineClientConfig addr 1 string
TDEngineClientConfig dbname 2 string
DBMethodMySQL mysqlClientConfig 1 MySQLClientConfig
MySQLClientConfig addr 1 string
MySQLClientConfig database 2 string
MySQLClientConfig userName 3 string
DBMethodOTEL otelExporterConfig 1 OTELExporterConfig
OTELExporterConfig endpointURL 1 string
AnomalyDetection data 1 map<string,google.protobuf.Any>
DeviceStatus twins 1 []Twin
DeviceStatus reportToCloud 2 bool
DeviceStatus reportCycle 3 int64
Twin propertyName 1 string
Twin observedDesired 2 TwinProperty
Twin reported 3 TwinProperty
TwinProperty value 1 string
TwinProperty metadata 2 map<string,string>
ReportDeviceStatusRequest deviceName 1 string
ReportDeviceStatusRequest reportedDevice 2 DeviceStatus
ReportDeviceStatusRequest deviceNamespace 3 string
ReportDeviceStatesRequest deviceName 1 string
ReportDeviceStatesRequest deviceNamespace 2 string
ReportDeviceStatesRequest state 3 string
MapperInfo name 1 string
MapperInfo version 2 string
MapperInfo api_version 3 string
MapperInfo protocol 4 string
MapperInfo address 5 bytes
MapperInfo state 6 string
RegisterDeviceRequest device 1 Device
RegisterDeviceResponse deviceName 1 string
RegisterDeviceResponse deviceNamespace 2 string
RemoveDeviceRequest deviceName 1 string
RemoveDeviceRequest deviceNamespace 2 string
UpdateDeviceRequest device 1 Device
CreateDeviceModelRequest model 1 DeviceModel
CreateDeviceModelResponse deviceModelName 1 string
CreateDeviceModelResponse deviceModelNamespace 2 string
RemoveDeviceModelRequest modelName 1 string
RemoveDeviceModelRequest modelNamespace 2 string
UpdateDeviceModelRequest model 1 DeviceModel
GetDeviceRequest deviceName 1 string
GetDeviceRequest deviceNamespace 2 string
GetDeviceResponse device 1 Device
";

const EMPTY: [&str; 6] = [
    "ReportDeviceStatusResponse",
    "ReportDeviceStatesResponse",
    "RemoveDeviceResponse",
    "UpdateDeviceResponse",
    "RemoveDeviceModelResponse",
    "UpdateDeviceModelResponse",
];

const SERVICES: &str = "
DeviceManagerService MapperRegister MapperRegisterRequest MapperRegisterResponse
DeviceManagerService ReportDeviceStatus ReportDeviceStatusRequest ReportDeviceStatusResponse
DeviceManagerService ReportDeviceStates ReportDeviceStatesRequest ReportDeviceStatesResponse
DeviceMapperService RegisterDevice RegisterDeviceRequest RegisterDeviceResponse
DeviceMapperService RemoveDevice RemoveDeviceRequest RemoveDeviceResponse
DeviceMapperService UpdateDevice UpdateDeviceRequest UpdateDeviceResponse
DeviceMapperService CreateDeviceModel CreateDeviceModelRequest CreateDeviceModelResponse
DeviceMapperService RemoveDeviceModel RemoveDeviceModelRequest RemoveDeviceModelResponse
DeviceMapperService UpdateDeviceModel UpdateDeviceModelRequest UpdateDeviceModelResponse
DeviceMapperService GetDevice GetDeviceRequest GetDeviceResponse
";

fn short(type_name: &str) -> String {
    type_name
        .trim_start_matches(".v1beta1.")
        .trim_start_matches('.')
        .to_owned()
}

fn scalar(t: Type) -> &'static str {
    match t {
        Type::String => "string",
        Type::Bool => "bool",
        Type::Int64 => "int64",
        Type::Int32 => "int32",
        Type::Bytes => "bytes",
        other => panic!("unexpected scalar type {other:?}"),
    }
}

#[test]
fn proto_matches_the_spec() {
    let fds = protox::compile(
        ["api.proto"],
        [concat!(env!("CARGO_MANIFEST_DIR"), "/proto")],
    )
    .unwrap();
    let file = fds.file.iter().find(|f| f.name() == "api.proto").unwrap();
    assert_eq!(file.package(), "v1beta1");
    assert_eq!(file.syntax(), "proto3");

    let messages: BTreeMap<String, _> = file
        .message_type
        .iter()
        .map(|m| (m.name().to_owned(), m))
        .collect();
    let mut actual = Vec::new();
    for (name, m) in &messages {
        let maps: BTreeMap<String, String> = m
            .nested_type
            .iter()
            .filter(|n| n.options.as_ref().is_some_and(|o| o.map_entry()))
            .map(|n| {
                let kv: Vec<String> = n
                    .field
                    .iter()
                    .map(|f| {
                        if f.r#type() == Type::Message {
                            short(f.type_name())
                        } else {
                            scalar(f.r#type()).to_owned()
                        }
                    })
                    .collect();
                (
                    format!(".v1beta1.{name}.{}", n.name()),
                    format!("map<{},{}>", kv[0], kv[1]),
                )
            })
            .collect();
        for f in &m.field {
            let ty = if let Some(map) = maps.get(f.type_name()) {
                map.clone()
            } else {
                let base = if f.r#type() == Type::Message {
                    short(f.type_name())
                } else {
                    scalar(f.r#type()).to_owned()
                };
                if f.label() == Label::Repeated {
                    format!("[]{base}")
                } else {
                    base
                }
            };
            actual.push(format!("{name} {} {} {ty}", f.name(), f.number()));
        }
    }
    let mut expected: Vec<String> = SPEC
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    expected.sort();
    actual.sort();
    assert_eq!(actual, expected);
    for e in EMPTY {
        assert!(messages[e].field.is_empty(), "{e} must be empty");
    }

    let mut services = Vec::new();
    for s in &file.service {
        for m in &s.method {
            assert!(
                !m.client_streaming() && !m.server_streaming(),
                "DMI is unary only"
            );
            services.push(format!(
                "{} {} {} {}",
                s.name(),
                m.name(),
                short(m.input_type()),
                short(m.output_type())
            ));
        }
    }
    let mut want: Vec<String> = SERVICES
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    want.sort();
    services.sort();
    assert_eq!(services, want);
}
