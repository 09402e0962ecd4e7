//! Visitor configData: which characteristic, how its bytes become the value,
//! and what a write sends.

use mapper_sdk::{DriverError, DriverResult, PropertyType, Value};
use serde::Deserialize;
use serde_json::Value as Json;
use uuid::Uuid;

use crate::codec::{ByteOrder, Conversion, Converter, DataType, Flat};
use crate::config::parse_uuid;

/// A property's `visitors.configData` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAddress {
    #[serde(rename = "characteristicUUID", alias = "characteristicUuid")]
    characteristic_uuid: Option<String>,
    start_index: Option<usize>,
    end_index: Option<usize>,
    data_type: Option<DataType>,
    byte_order: Option<ByteOrder>,
    scale: Option<f64>,
    offset: Option<f64>,
    data_converter: Option<Json>,
    data_write: Option<Json>,
    write_with_response: Option<bool>,
    notify: Option<bool>,
}

/// A property's `visitors.configData`, checked.
///
/// | key | meaning |
/// |---|---|
/// | `characteristicUUID` | KubeEdge's key: the GATT characteristic (128-bit, or a 16/32-bit short form like `2a6e`) |
/// | `startIndex`, `endIndex` | the property's bytes in the value, **0-based, inclusive** (`endIndex` optional) |
/// | `dataType` | `int8` … `uint64`, `int`/`uint` (as wide as the range), `float32`, `float64`, `string`, `bytes` |
/// | `byteOrder` | `little` (default, GATT's order) or `big` |
/// | `scale`, `offset` | value = raw × scale + offset |
/// | `dataConverter` | KubeEdge's nested form instead of the five keys above: an object, or the same as a JSON string |
/// | `dataWrite` | KubeEdge's map from desired values to the bytes written (hex text or byte arrays); an object or a JSON string |
/// | `writeWithResponse` | `true`/`false` to choose the write type; default from the characteristic's flags |
/// | `notify` | `false` polls a characteristic that could notify; default `true` |
///
/// Conversion rules: [`crate::codec`]. Unknown keys are errors naming them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawAddress")]
pub struct BleAddress {
    /// The characteristic.
    pub characteristic: Uuid,
    /// Bytes ⇄ value.
    pub conversion: Conversion,
    /// Desired value → bytes, when given.
    pub data_write: Option<WriteMap>,
    /// Write type override.
    pub write_with_response: Option<bool>,
    /// Whether notifications are used when the characteristic offers them.
    pub notify: bool,
}

/// A nested value given as itself or as a JSON string of it (a flat
/// configData, all stock EdgeCore can carry, holds only the string).
fn unstring(json: Json) -> Result<Json, String> {
    match json {
        Json::String(text) => {
            serde_json::from_str(&text).map_err(|e| format!("the text is not JSON: {e}"))
        }
        other => Ok(other),
    }
}

/// Reads a nested key given as an object or as a JSON string of one.
fn nested<T: serde::de::DeserializeOwned>(key: &str, json: Json) -> Result<T, String> {
    let json = unstring(json).map_err(|e| format!("{key}: {e}"))?;
    serde_json::from_value(json).map_err(|e| format!("{key}: {e}"))
}

impl TryFrom<RawAddress> for BleAddress {
    type Error = String;

    fn try_from(raw: RawAddress) -> Result<Self, String> {
        let uuid_text = raw
            .characteristic_uuid
            .ok_or("missing characteristicUUID (the GATT characteristic)")?;
        let characteristic =
            parse_uuid(&uuid_text).map_err(|e| format!("characteristicUUID: {e}"))?;
        let conversion = match raw.data_converter {
            Some(json) => {
                let flat_keys: Vec<&str> = [
                    ("startIndex", raw.start_index.is_some()),
                    ("endIndex", raw.end_index.is_some()),
                    ("dataType", raw.data_type.is_some()),
                    ("byteOrder", raw.byte_order.is_some()),
                    ("scale", raw.scale.is_some()),
                    ("offset", raw.offset.is_some()),
                ]
                .into_iter()
                .filter_map(|(k, set)| set.then_some(k))
                .collect();
                if !flat_keys.is_empty() {
                    return Err(format!(
                        "{} belong(s) to the flat form; with dataConverter give its startIndex/endIndex/shiftLeft/shiftRight/orderOfOperations instead",
                        flat_keys.join(", ")
                    ));
                }
                let c: Converter = nested("dataConverter", json)?;
                c.check().map_err(|e| match e {
                    DriverError::Config(m) => m,
                    other => other.to_string(),
                })?;
                Conversion::Converter(c)
            }
            None => Conversion::Flat(Flat {
                start: raw.start_index.unwrap_or(0),
                end: raw.end_index,
                data_type: raw.data_type,
                byte_order: raw.byte_order.unwrap_or_default(),
                scale: raw.scale,
                offset: raw.offset,
            }),
        };
        let data_write = raw
            .data_write
            .map(|json| WriteMap::from_json(json).map_err(|e| format!("dataWrite: {e}")))
            .transpose()?;
        Ok(Self {
            characteristic,
            conversion,
            data_write,
            write_with_response: raw.write_with_response,
            notify: raw.notify.unwrap_or(true),
        })
    }
}

impl BleAddress {
    /// Resolves defaults from the model's type and checks the flat form
    /// (see [`Flat::prepare`]).
    ///
    /// # Errors
    /// [`DriverError::Config`] naming what is wrong.
    pub fn prepare(&mut self, model: Option<PropertyType>) -> DriverResult<()> {
        match &mut self.conversion {
            Conversion::Flat(f) => f.prepare(model),
            Conversion::Converter(c) => c.check(),
        }
    }

    /// Decodes and prepares a visitor (for tools and tests; the SDK does the
    /// same with key paths in the message).
    ///
    /// # Errors
    /// [`DriverError::Config`] naming the key or what is wrong.
    pub fn from_json(json: Json, model: Option<PropertyType>) -> DriverResult<Self> {
        let mut a: Self =
            serde_json::from_value(json).map_err(|e| DriverError::Config(e.to_string()))?;
        a.prepare(model)?;
        Ok(a)
    }

    /// The bytes a write of `value` sends, given the current value when
    /// [`Conversion::wants_current`] and it could be read.
    ///
    /// # Errors
    /// [`DriverError::Value`] when the value has no `dataWrite` entry or does
    /// not fit the conversion.
    pub fn encode(&self, value: &Value, current: Option<&[u8]>) -> DriverResult<Vec<u8>> {
        match &self.data_write {
            Some(map) => map.bytes_for(value).map(<[u8]>::to_vec),
            None => self.conversion.encode(value, current),
        }
    }

    /// Whether a write reads the current value first.
    pub fn wants_current(&self) -> bool {
        self.data_write.is_none() && self.conversion.wants_current()
    }
}

/// KubeEdge's `dataWrite`: desired value → the bytes written, in the order
/// given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteMap(pub Vec<(String, Vec<u8>)>);

/// Parses hex text: an optional `0x`, then pairs of hex digits, optionally
/// separated by spaces, `:`, `-` or `_`.
fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let digits: Vec<u8> = t
        .bytes()
        .filter(|b| !matches!(b, b' ' | b':' | b'-' | b'_'))
        .collect();
    let bad =
        || format!("`{text}` is not hex bytes (like 0x01 or \"01 ff\") or a byte array ([1, 255])");
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return Err(bad());
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

fn byte_of(j: &Json) -> Option<u8> {
    j.as_u64()
        .or_else(|| {
            j.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        })
        .and_then(|n| u8::try_from(n).ok())
}

impl WriteMap {
    /// From an object (or a JSON string of one) whose values are hex text,
    /// arrays of bytes, or one byte as a number.
    ///
    /// # Errors
    /// A message naming the entry.
    pub fn from_json(json: Json) -> Result<Self, String> {
        let obj = match unstring(json)? {
            Json::Object(obj) => obj,
            other => return Err(format!("{other} is not an object of value → bytes")),
        };
        if obj.is_empty() {
            return Err("no entries".into());
        }
        obj.into_iter()
            .map(|(k, v)| {
                let bytes = match &v {
                    Json::String(s) => parse_hex(s),
                    Json::Array(items) => items
                        .iter()
                        .map(|i| byte_of(i).ok_or_else(|| format!("{i} is not a byte (0 to 255)")))
                        .collect(),
                    n @ Json::Number(_) => byte_of(n)
                        .map(|b| vec![b])
                        .ok_or_else(|| format!("{n} is not a byte (0 to 255)")),
                    other => Err(format!("{other} is not hex text or a byte array")),
                }
                .map_err(|e| format!("`{k}`: {e}"))?;
                Ok((k, bytes))
            })
            .collect::<Result<_, String>>()
            .map(Self)
    }

    /// The bytes for a desired value: the entry whose key is the value's
    /// text (exactly, then ignoring case), a boolean's usual spellings
    /// (`on`/`off`, `1`/`0`, `yes`/`no`), or a number equal to it.
    ///
    /// # Errors
    /// [`DriverError::Value`] listing the keys.
    pub fn bytes_for(&self, v: &Value) -> DriverResult<&[u8]> {
        let text = v.to_string();
        let exact = self.0.iter().find(|(k, _)| *k == text);
        let found = exact
            .or_else(|| self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(&text)))
            .or_else(|| {
                let Value::Bool(b) = v else { return None };
                let names: &[&str] = if *b {
                    &["true", "on", "1", "yes"]
                } else {
                    &["false", "off", "0", "no"]
                };
                self.0
                    .iter()
                    .find(|(k, _)| names.iter().any(|n| k.trim().eq_ignore_ascii_case(n)))
            })
            .or_else(|| {
                let x = v.as_f64().filter(|_| !matches!(v, Value::Bool(_)))?;
                self.0
                    .iter()
                    .find(|(k, _)| k.trim().parse::<f64>().is_ok_and(|kx| kx == x))
            });
        found.map(|(_, b)| b.as_slice()).ok_or_else(|| {
            let keys: Vec<&str> = self.0.iter().map(|(k, _)| k.as_str()).collect();
            DriverError::Value(format!(
                "no dataWrite entry for `{text}` (entries: {})",
                keys.join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn addr(v: Json, model: Option<PropertyType>) -> DriverResult<BleAddress> {
        BleAddress::from_json(v, model)
    }

    #[test]
    fn flat_visitor_with_kubeedge_uuid_key() {
        let a = addr(
            json!({"characteristicUUID": "00002a6e-0000-1000-8000-00805f9b34fb",
                   "dataType": "uint16", "scale": 0.01}),
            Some(PropertyType::Float),
        )
        .unwrap();
        assert_eq!(a.characteristic, parse_uuid("2a6e").unwrap());
        assert!(a.notify);
        assert_eq!(
            a.conversion.decode(&[0x66, 0x08]).unwrap(),
            Value::Float(21.5)
        );
        // No dataType: the model decides.
        let s = addr(
            json!({"characteristicUuid": "2a00"}),
            Some(PropertyType::String),
        )
        .unwrap();
        assert_eq!(
            s.conversion.decode(b"Tag").unwrap(),
            Value::String("Tag".into())
        );
        let n = addr(
            json!({"characteristicUUID": "2a19"}),
            Some(PropertyType::Int),
        )
        .unwrap();
        assert_eq!(n.conversion.decode(&[87]).unwrap(), Value::Int(87));
    }

    #[test]
    fn nested_converter_as_object_or_json_string() {
        let conv = json!({"startIndex": 1, "endIndex": 0,
            "orderOfOperations": [{"operationType": "Multiply", "operationValue": 0.01}]});
        let as_object = addr(
            json!({"characteristicUUID": "2a6e", "dataConverter": conv.clone()}),
            Some(PropertyType::Float),
        )
        .unwrap();
        let as_text = addr(
            json!({"characteristicUUID": "2a6e", "dataConverter": conv.to_string()}),
            Some(PropertyType::Float),
        )
        .unwrap();
        assert_eq!(as_object, as_text);
        assert_eq!(
            as_text.conversion.decode(&[0x66, 0x08]).unwrap(),
            Value::Float(21.5)
        );
        let e = addr(
            json!({"characteristicUUID": "2a6e", "dataConverter": "{not json"}),
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("dataConverter: the text is not JSON"),
            "{e}"
        );
        let e = addr(
            json!({"characteristicUUID": "2a6e", "scale": 2, "dataConverter": {}}),
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("scale belong(s) to the flat form"),
            "{e}"
        );
        let e = addr(
            json!({"characteristicUUID": "2a6e", "dataConverter": {"startIndex": 0, "endIndex": 9}}),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("at most 8"), "{e}");
    }

    #[test]
    fn visitor_errors_name_the_key() {
        let e = addr(json!({"characteristicUUID": "xyz"}), None).unwrap_err();
        assert!(matches!(e, DriverError::Config(_)));
        assert!(
            e.to_string()
                .contains("characteristicUUID: `xyz` is not a UUID"),
            "{e}"
        );
        let e = addr(json!({"dataType": "uint8"}), None).unwrap_err();
        assert!(e.to_string().contains("missing characteristicUUID"), "{e}");
        let e = addr(
            json!({"characteristicUUID": "2a6e", "dataType": "uint12"}),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown dataType `uint12`"), "{e}");
        let e = addr(json!({"characteristicUUID": "2a6e", "scal": 1}), None).unwrap_err();
        assert!(e.to_string().contains("unknown field `scal`"), "{e}");
        let e = addr(
            json!({"characteristicUUID": "2a6e", "byteOrder": "middle"}),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("byteOrder `middle`"), "{e}");
        let e = addr(
            json!({"characteristicUUID": "2a6e", "dataType": "uint16", "startIndex": 1, "endIndex": 1}),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("uint16 takes 2"), "{e}");
    }

    #[test]
    fn data_write_maps_values_to_bytes() {
        let a = addr(
            json!({"characteristicUUID": "2a6e",
                   "dataWrite": {"ON": [1], "OFF": "0x00", "Blink": "01 02", "3": 3}}),
            Some(PropertyType::String),
        )
        .unwrap();
        let m = a.data_write.as_ref().unwrap();
        assert_eq!(m.bytes_for(&Value::String("ON".into())).unwrap(), [1]);
        assert_eq!(m.bytes_for(&Value::String("on".into())).unwrap(), [1]);
        assert_eq!(m.bytes_for(&Value::Bool(false)).unwrap(), [0]);
        assert_eq!(m.bytes_for(&Value::Bool(true)).unwrap(), [1]);
        assert_eq!(m.bytes_for(&Value::String("blink".into())).unwrap(), [1, 2]);
        assert_eq!(m.bytes_for(&Value::Float(3.0)).unwrap(), [3]);
        let e = m.bytes_for(&Value::String("dim".into())).unwrap_err();
        assert!(matches!(e, DriverError::Value(_)));
        assert!(
            e.to_string().contains("no dataWrite entry for `dim`"),
            "{e}"
        );
        // dataWrite wins over the conversion, and needs no current value.
        assert!(!a.wants_current());
        assert_eq!(a.encode(&Value::String("OFF".into()), None).unwrap(), [0]);
        // As a JSON string (what a flat configData can carry).
        let t = addr(
            json!({"characteristicUUID": "2a6e", "dataWrite": "{\"ON\": [1], \"OFF\": [0]}"}),
            None,
        )
        .unwrap();
        assert_eq!(t.data_write.unwrap().0.len(), 2);
        for bad in [
            json!({"X": [256]}),
            json!({"X": "0x1"}),
            json!({"X": "zz"}),
            json!({}),
            json!({"X": true}),
        ] {
            let e = addr(
                json!({"characteristicUUID": "2a6e", "dataWrite": bad.clone()}),
                None,
            )
            .unwrap_err();
            assert!(e.to_string().contains("dataWrite"), "{bad}: {e}");
        }
    }

    #[test]
    fn writes_without_data_write_encode_by_type() {
        let a = addr(
            json!({"characteristicUUID": "2a6e", "dataType": "int16", "byteOrder": "big",
                   "scale": 0.5, "offset": 10}),
            Some(PropertyType::Float),
        )
        .unwrap();
        // (30 − 10) ÷ 0.5 = 40
        assert_eq!(a.encode(&Value::Float(30.0), None).unwrap(), [0, 40]);
        let part = addr(
            json!({"characteristicUUID": "2a6e", "dataType": "uint8", "startIndex": 1}),
            Some(PropertyType::Int),
        )
        .unwrap();
        assert!(part.wants_current());
        assert_eq!(
            part.encode(&Value::Int(7), Some(&[1, 2, 3])).unwrap(),
            [1, 7, 3]
        );
    }
}
