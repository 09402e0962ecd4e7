//! The shape of `configData` for the protocols this project ships mappers
//! for: which keys each mapper reads, their types and ranges, which are
//! required. `edgecore-dmi validate` checks devices against it offline; the
//! mappers apply the same rules when a device reaches them (each mapper's
//! tests check that it agrees with this table).
//!
//! | protocol | device `protocol.configData` | property `visitors.configData` |
//! |---|---|---|
//! | `modbus` | `ip` or `serialPort` required; `port` 1–65535, `slaveID` 0–255, `baudRate`, `dataBits` 5–8, `parity`, `stopBits` 1–2, `timeout` ms, `maxGap`, `maxRegisters` 1–125, `maxBits` 1–2000, `planning` | `register` and `offset` (0–65535) required; `limit`, `scale` (not 0), `isSwap`, `isRegisterSwap`, `dataType`, `bit` 0–15, `valueOffset`, `stringEncoding` |
//! | `opcua` | `url` (`opc.tcp://`) required; `securityPolicy`, `securityMode`, `userName`, `password`, `certificate`, `privateKey`, `remoteCertificate`, `userCertificate`, `userPrivateKey`, `timeout` ms, `sessionTimeout` ms, `maxNodesPerRead` ≥ 1, `subscribe`, `publishingInterval` ms (0: the default) | `nodeID` required; `dataType` |
//! | `virtual` | `connectDelayMs`, `offline` | `pattern` and its parameters |
//!
//! Keys a mapper does not read are warnings (a typo such as `slaveId` for
//! `slaveID` is accepted as an alias where the mapper accepts it). Protocols
//! not in the table are not checked. Number keys must be YAML numbers, not
//! quoted strings, as the mappers read them.

use serde_json::Value;

use crate::check::{Path, Problem};
use crate::{Device, DeviceModel, FreeForm};

/// What a key's value must be.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Text.
    Text,
    /// An integer within the bounds.
    Int(i64, i64),
    /// Any number.
    Number,
    /// A number other than 0.
    NonZero,
    /// `true` or `false`.
    Bool,
    /// One of the words, compared without case.
    OneOf(&'static [&'static str]),
    /// Text starting with the prefix.
    Prefixed(&'static str),
    /// Any value.
    Any,
}

/// One key a mapper reads.
#[derive(Debug, Clone, Copy)]
struct Key {
    name: &'static str,
    aliases: &'static [&'static str],
    kind: Kind,
}

const fn key(name: &'static str, kind: Kind) -> Key {
    Key {
        name,
        aliases: &[],
        kind,
    }
}

/// The configData shape of one protocol.
#[derive(Debug)]
struct Shape {
    protocol: &'static str,
    mapper: &'static str,
    device: &'static [Key],
    /// Groups of device keys of which one must be present.
    device_required: &'static [&'static [&'static str]],
    visitor: &'static [Key],
    visitor_required: &'static [&'static str],
}

const MODBUS_REGISTERS: &[&str] = &[
    "CoilRegister",
    "DiscreteInputRegister",
    "HoldingRegister",
    "InputRegister",
    "coil",
    "coils",
    "discreteinput",
    "discrete",
    "holding",
    "input",
];

/// Visitor `dataType` of mapper-opcua: OPC-UA built-in types and KubeEdge's
/// names (`float`, `double`, `boolean`, `string` are built-in names too), with
/// `[]` for a one-dimensional array.
const OPCUA_TYPES: &[&str] = &[
    "Boolean",
    "SByte",
    "Byte",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Float",
    "Double",
    "String",
    "DateTime",
    "Guid",
    "ByteString",
    "LocalizedText",
    "int",
    "integer",
    "bool",
    "bytes",
    "uint8",
    "int8",
    "Boolean[]",
    "SByte[]",
    "Byte[]",
    "Int16[]",
    "UInt16[]",
    "Int32[]",
    "UInt32[]",
    "Int64[]",
    "UInt64[]",
    "Float[]",
    "Double[]",
    "String[]",
    "DateTime[]",
    "Guid[]",
    "ByteString[]",
    "LocalizedText[]",
    "int[]",
    "integer[]",
    "bool[]",
    "bytes[]",
    "uint8[]",
    "int8[]",
];

const SHAPES: &[Shape] = &[
    Shape {
        protocol: "modbus",
        mapper: "mapper-modbus",
        device: &[
            key("ip", Kind::Text),
            key("port", Kind::Int(1, 65535)),
            key("serialPort", Kind::Text),
            key("baudRate", Kind::Int(1, u32::MAX as i64)),
            key("dataBits", Kind::Int(5, 8)),
            key(
                "parity",
                Kind::OneOf(&["none", "even", "odd", "N", "E", "O"]),
            ),
            key("stopBits", Kind::Int(1, 2)),
            Key {
                name: "slaveID",
                aliases: &["slaveId", "unitId"],
                kind: Kind::Int(0, 255),
            },
            key("timeout", Kind::Int(1, i64::MAX)),
            key("maxGap", Kind::Int(0, 65535)),
            key("maxRegisters", Kind::Int(1, 125)),
            key("maxBits", Kind::Int(1, 2000)),
            key("planning", Kind::Bool),
        ],
        device_required: &[&["ip", "serialPort"]],
        visitor: &[
            key("register", Kind::OneOf(MODBUS_REGISTERS)),
            key("offset", Kind::Int(0, 65535)),
            key("limit", Kind::Int(0, 65535)),
            key("scale", Kind::NonZero),
            key("isSwap", Kind::Bool),
            key("isRegisterSwap", Kind::Bool),
            key(
                "dataType",
                Kind::OneOf(&[
                    "bool", "boolean", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                    "float32", "float", "float64", "double", "string", "bit",
                ]),
            ),
            key("bit", Kind::Int(0, 15)),
            key("valueOffset", Kind::Number),
            key("stringEncoding", Kind::OneOf(&["ascii", "utf8", "utf-8"])),
        ],
        visitor_required: &["register", "offset"],
    },
    Shape {
        protocol: "opcua",
        mapper: "mapper-opcua",
        device: &[
            key("url", Kind::Prefixed("opc.tcp://")),
            key(
                "securityPolicy",
                Kind::OneOf(&[
                    "None",
                    "Basic128Rsa15",
                    "Basic256",
                    "Basic256Sha256",
                    "Aes128_Sha256_RsaOaep",
                    "Aes256_Sha256_RsaPss",
                    "Aes128Sha256RsaOaep",
                    "Aes256Sha256RsaPss",
                ]),
            ),
            key(
                "securityMode",
                Kind::OneOf(&["None", "Sign", "SignAndEncrypt"]),
            ),
            key("userName", Kind::Text),
            key("password", Kind::Text),
            key("certificate", Kind::Text),
            key("privateKey", Kind::Text),
            key("remoteCertificate", Kind::Text),
            key("userCertificate", Kind::Text),
            key("userPrivateKey", Kind::Text),
            key("timeout", Kind::Int(0, i64::MAX)),
            key("sessionTimeout", Kind::Int(0, i64::MAX)),
            key("maxNodesPerRead", Kind::Int(1, u32::MAX as i64)),
            key("subscribe", Kind::Bool),
            key("publishingInterval", Kind::Int(0, i64::MAX)),
        ],
        device_required: &[&["url"]],
        visitor: &[
            Key {
                name: "nodeID",
                aliases: &["nodeId", "nodeid"],
                kind: Kind::Text,
            },
            key("dataType", Kind::OneOf(OPCUA_TYPES)),
        ],
        visitor_required: &["nodeID"],
    },
    Shape {
        protocol: "virtual",
        mapper: "mapper-virtual",
        device: &[
            key("connectDelayMs", Kind::Int(0, i64::MAX)),
            key("offline", Kind::Bool),
        ],
        device_required: &[],
        visitor: &[
            key(
                "pattern",
                Kind::OneOf(&[
                    "constant",
                    "counter",
                    "ramp",
                    "sine",
                    "randomWalk",
                    "setpoint",
                ]),
            ),
            key("value", Kind::Any),
            key("amplitude", Kind::Number),
            key("periodMs", Kind::Int(0, i64::MAX)),
            key("min", Kind::Number),
            key("max", Kind::Number),
            key("step", Kind::Number),
            key("key", Kind::Text),
        ],
        visitor_required: &[],
    },
];

/// The protocols whose configData is checked.
pub fn known_protocols() -> impl Iterator<Item = &'static str> {
    SHAPES.iter().map(|s| s.protocol)
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s}` (text)"),
        other => format!("`{other}`"),
    }
}

/// Checks one value against `kind`; the reason when it does not fit.
fn fits(kind: Kind, v: &Value) -> Result<(), String> {
    match kind {
        Kind::Any => Ok(()),
        Kind::Text => match v {
            Value::String(_) => Ok(()),
            other => Err(format!("{} is not text", describe(other))),
        },
        Kind::Bool => match v {
            Value::Bool(_) => Ok(()),
            other => Err(format!("{} is not true or false", describe(other))),
        },
        Kind::Number => match v {
            Value::Number(_) => Ok(()),
            other => Err(format!("{} is not a number", describe(other))),
        },
        Kind::NonZero => match v.as_f64() {
            Some(x) if x != 0.0 => Ok(()),
            Some(_) => Err("must not be 0".into()),
            None => Err(format!("{} is not a number", describe(v))),
        },
        Kind::Int(lo, hi) => match v.as_i64() {
            Some(n) if (lo..=hi).contains(&n) => Ok(()),
            Some(n) => Err(format!("{n} is outside {lo}..={hi}")),
            None => match v.as_u64() {
                Some(n) => Err(format!("{n} is outside {lo}..={hi}")),
                None => Err(format!("{} is not an integer", describe(v))),
            },
        },
        Kind::OneOf(words) => match v {
            Value::String(s) if words.iter().any(|w| w.eq_ignore_ascii_case(s)) => Ok(()),
            other => Err(format!(
                "{} is not one of {}",
                describe(other),
                words.join(", ")
            )),
        },
        Kind::Prefixed(p) => match v {
            Value::String(s) if s.starts_with(p) => Ok(()),
            other => Err(format!("{} does not start with {p}", describe(other))),
        },
    }
}

/// Checks `data` against `keys`; `at` is where `data` is, `what` names it in
/// messages (`device configData`, `property t`).
fn check_map(
    data: &FreeForm,
    keys: &[Key],
    required: &[&[&str]],
    at: &Path,
    what: &str,
    mapper: &str,
    out: &mut Vec<Problem>,
) {
    for (k, v) in data {
        let spec = keys
            .iter()
            .find(|s| s.name == k || s.aliases.contains(&k.as_str()));
        match spec {
            Some(spec) => {
                if let Err(e) = fits(spec.kind, v) {
                    out.push(Problem::error(at.key(k), format!("{what}: {k}: {e}")));
                }
            }
            None => out.push(Problem::warning(
                at.key(k),
                format!(
                    "{what}: {mapper} does not read configData key `{k}` (it reads {})",
                    keys.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
    for group in required {
        let present = group.iter().any(|name| {
            data.keys().any(|k| {
                k == name
                    || keys
                        .iter()
                        .any(|s| s.name == *name && s.aliases.contains(&k.as_str()))
            })
        });
        if !present {
            out.push(Problem::error(
                at.clone(),
                format!(
                    "{what}: configData needs {}",
                    group
                        .iter()
                        .map(|g| format!("`{g}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ));
        }
    }
}

/// Checks the configData of `device` (merged with its model's
/// `protocolConfigData` defaults, as EdgeCore v1.22+ does) for its protocol,
/// when that protocol is one of [`known_protocols`]; nothing for others.
pub fn config_problems(device: &Device, model: Option<&DeviceModel>) -> Vec<Problem> {
    let protocol = device.spec.protocol_name().map(str::to_owned).or_else(|| {
        model
            .map(|m| m.spec.protocol.clone())
            .filter(|p| !p.is_empty())
    });
    let Some(shape) = protocol
        .as_deref()
        .and_then(|p| SHAPES.iter().find(|s| s.protocol == p))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut merged = model
        .and_then(|m| m.spec.protocol_config_data.clone())
        .unwrap_or_default();
    let own = device
        .spec
        .protocol
        .as_ref()
        .and_then(|p| p.config_data.clone())
        .unwrap_or_default();
    merged.extend(own);
    let required: Vec<&[&str]> = shape.device_required.to_vec();
    check_map(
        &merged,
        shape.device,
        &required,
        &Path::keys(&["spec", "protocol", "configData"]),
        "device configData",
        shape.mapper,
        &mut out,
    );
    let visitor_required: Vec<&[&str]> = shape
        .visitor_required
        .iter()
        .map(std::slice::from_ref)
        .collect();
    for (i, p) in device.spec.properties.iter().enumerate() {
        let at = Path::keys(&["spec", "properties"]).index(i);
        let data = p.visitors.as_ref().and_then(|v| v.config_data.as_ref());
        match data {
            Some(data) => check_map(
                data,
                shape.visitor,
                &visitor_required,
                &at.key("visitors").key("configData"),
                &format!("property {}", p.name),
                shape.mapper,
                &mut out,
            ),
            None if !shape.visitor_required.is_empty() => out.push(Problem::error(
                at.key("name"),
                format!(
                    "property {}: no visitors.configData; {} needs {}",
                    p.name,
                    shape.mapper,
                    shape.visitor_required.join(", ")
                ),
            )),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Severity;

    fn device(protocol: &str, config: Value, visitor: Value) -> Device {
        serde_json::from_value(serde_json::json!({
            "apiVersion": crate::API_VERSION, "kind": "Device",
            "metadata": {"name": "d"},
            "spec": {
                "deviceModelRef": {"name": "m"},
                "protocol": {"protocolName": protocol, "configData": config},
                "properties": [{"name": "t", "visitors": {"protocolName": protocol, "configData": visitor}}]
            }
        }))
        .unwrap()
    }

    fn found(d: &Device) -> Vec<(Severity, String, String)> {
        config_problems(d, None)
            .into_iter()
            .map(|p| (p.severity, p.path.to_string(), p.message))
            .collect()
    }

    #[test]
    fn a_good_modbus_device_has_no_problems() {
        let d = device(
            "modbus",
            serde_json::json!({"ip": "10.0.0.5", "port": 502, "slaveId": 1}),
            serde_json::json!({"register": "HoldingRegister", "offset": 2, "limit": 1, "scale": 0.1}),
        );
        assert_eq!(found(&d), []);
    }

    #[test]
    fn modbus_mistakes_are_named_with_their_field() {
        let d = device(
            "modbus",
            serde_json::json!({"port": "502", "slaveID": 300}),
            serde_json::json!({"register": "HoldingRegisters2", "ofset": 2}),
        );
        let got = found(&d);
        let at: Vec<&str> = got.iter().map(|(_, p, _)| p.as_str()).collect();
        assert_eq!(
            at,
            [
                "spec.protocol.configData.port",
                "spec.protocol.configData.slaveID",
                "spec.protocol.configData",
                "spec.properties.0.visitors.configData.ofset",
                "spec.properties.0.visitors.configData.register",
                "spec.properties.0.visitors.configData",
            ],
            "{got:#?}"
        );
        assert_eq!(got[3].0, Severity::Warning);
        assert!(
            got[0].2.contains("`502` (text) is not an integer"),
            "{}",
            got[0].2
        );
        assert!(got[1].2.contains("300 is outside 0..=255"), "{}", got[1].2);
        assert!(got[2].2.contains("`ip` or `serialPort`"), "{}", got[2].2);
        assert!(got[5].2.contains("needs `offset`"), "{}", got[5].2);
    }

    #[test]
    fn model_defaults_count_and_unknown_protocols_are_not_checked() {
        let mut d = device(
            "modbus",
            serde_json::json!({}),
            serde_json::json!({"register": "coil", "offset": 0}),
        );
        let m: DeviceModel = serde_json::from_value(serde_json::json!({
            "apiVersion": crate::API_VERSION, "kind": "DeviceModel", "metadata": {"name": "m"},
            "spec": {"protocol": "modbus", "protocolConfigData": {"ip": "10.0.0.5"}}
        }))
        .unwrap();
        assert_eq!(config_problems(&d, Some(&m)), []);
        d.spec.protocol.as_mut().unwrap().protocol_name = "acme".into();
        assert_eq!(config_problems(&d, None), []);
    }
}
