//! `configData` ⇄ JSON: the `map<string, google.protobuf.Any>` encoding of the
//! CRDs' free-form objects (`CustomizedValue.data`, `AnomalyDetection.data`).
//!
//! **Decoding** ([`from_any_map`]) accepts every protobuf wrapper type: String,
//! Bool, Float, Double, Int32, Int64, UInt32, UInt64 and Bytes (as base64-free
//! UTF-8 text when possible, otherwise an array of numbers is refused: bytes that
//! are not UTF-8 are an error naming the key). A `FloatValue` is turned into JSON
//! the way Go's `encoding/json` prints a `float32`: `1.0f` becomes `1` and `0.1f`
//! becomes `0.1`, so integer fields of a driver's config deserialize from what
//! stock EdgeCore sends.
//!
//! **Encoding** ([`to_any_map`]) follows [`NumberEncoding`]:
//! * [`NumberEncoding::Stock`] (the default) does what stock EdgeCore does:
//!   strings → `StringValue`, bools → `BoolValue`, every number → `FloatValue`
//!   (float32). Stock Go mappers decode exactly these. Integers above 2^24 lose
//!   precision, as they do with stock EdgeCore.
//! * [`NumberEncoding::Lossless`] keeps integers as `Int64Value` (`UInt64Value`
//!   above `i64::MAX`) and other numbers as `DoubleValue`. Use it between Rust
//!   peers; stock Go mappers silently drop Double/UInt64 keys.
//!
//! Nested objects and arrays cannot cross DMI; stock EdgeCore silently drops the
//! whole device. Here they are an error naming the key.

use std::collections::BTreeMap;

use prost::Message;
use prost_types::Any;
use serde_json::{Map, Number, Value};

const TYPE_PREFIX: &str = "type.googleapis.com/google.protobuf.";

/// How numbers are encoded into `Any`. See the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NumberEncoding {
    /// `FloatValue` for every number, as stock EdgeCore sends.
    #[default]
    Stock,
    /// `Int64Value`/`UInt64Value` for integers, `DoubleValue` otherwise.
    Lossless,
}

/// A configData entry that cannot be converted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigDataError {
    /// The value is an object or an array; DMI carries only top-level scalars.
    #[error(
        "configData key `{key}` holds a nested {kind}; DMI carries only flat key → scalar maps"
    )]
    Nested {
        /// The top-level key.
        key: String,
        /// `object` or `array`.
        kind: &'static str,
    },
    /// The value is JSON `null`, which has no wrapper type.
    #[error("configData key `{key}` is null; remove the key or give it a value")]
    Null {
        /// The top-level key.
        key: String,
    },
    /// The `Any` carries a type this decoder does not know.
    #[error("configData key `{key}` has unsupported type `{type_url}`")]
    UnsupportedType {
        /// The top-level key.
        key: String,
        /// The `Any.type_url`.
        type_url: String,
    },
    /// The `Any` payload does not decode as its declared type.
    #[error("configData key `{key}` is not a valid `{type_url}`: {reason}")]
    Malformed {
        /// The top-level key.
        key: String,
        /// The `Any.type_url`.
        type_url: String,
        /// The decode failure.
        reason: String,
    },
    /// A float is NaN or infinite, which JSON cannot hold.
    #[error("configData key `{key}` is not a finite number")]
    NonFinite {
        /// The top-level key.
        key: String,
    },
}

fn any_of<M: Message>(name: &str, msg: &M) -> Any {
    Any {
        type_url: format!("{TYPE_PREFIX}{name}"),
        value: msg.encode_to_vec(),
    }
}

/// Encodes one JSON scalar.
pub fn value_to_any(key: &str, value: &Value, enc: NumberEncoding) -> Result<Any, ConfigDataError> {
    Ok(match value {
        Value::String(s) => any_of("StringValue", s),
        Value::Bool(b) => any_of("BoolValue", b),
        Value::Number(n) => match enc {
            NumberEncoding::Stock => {
                // Stock EdgeCore decodes JSON numbers into float64 and sends float32.
                let f = n.as_f64().unwrap_or_default() as f32;
                any_of("FloatValue", &f)
            }
            NumberEncoding::Lossless => {
                if let Some(i) = n.as_i64() {
                    any_of("Int64Value", &i)
                } else if let Some(u) = n.as_u64() {
                    any_of("UInt64Value", &u)
                } else {
                    any_of("DoubleValue", &n.as_f64().unwrap_or_default())
                }
            }
        },
        Value::Null => {
            return Err(ConfigDataError::Null {
                key: key.to_owned(),
            });
        }
        Value::Object(_) => {
            return Err(ConfigDataError::Nested {
                key: key.to_owned(),
                kind: "object",
            });
        }
        Value::Array(_) => {
            return Err(ConfigDataError::Nested {
                key: key.to_owned(),
                kind: "array",
            });
        }
    })
}

/// Encodes a flat JSON object into `map<string, Any>`.
pub fn to_any_map(
    obj: &Map<String, Value>,
    enc: NumberEncoding,
) -> Result<BTreeMap<String, Any>, ConfigDataError> {
    obj.iter()
        .map(|(k, v)| Ok((k.clone(), value_to_any(k, v, enc)?)))
        .collect()
}

fn decode<M: Message + Default>(key: &str, any: &Any) -> Result<M, ConfigDataError> {
    M::decode(any.value.as_slice()).map_err(|e| ConfigDataError::Malformed {
        key: key.to_owned(),
        type_url: any.type_url.clone(),
        reason: e.to_string(),
    })
}

fn finite(key: &str, f: f64) -> Result<Value, ConfigDataError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| ConfigDataError::NonFinite {
            key: key.to_owned(),
        })
}

/// A float as JSON, integral values as JSON integers (Go prints `1.0` as `1`).
fn float_json(key: &str, f: f64) -> Result<Value, ConfigDataError> {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
        // Exact: |f| < 2^53 and integral.
        return Ok(Value::from(f as i64));
    }
    finite(key, f)
}

/// Decodes one `Any` holding a protobuf wrapper type.
pub fn any_to_value(key: &str, any: &Any) -> Result<Value, ConfigDataError> {
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    Ok(match name {
        "google.protobuf.StringValue" => Value::String(decode::<String>(key, any)?),
        "google.protobuf.BoolValue" => Value::Bool(decode::<bool>(key, any)?),
        "google.protobuf.FloatValue" => {
            let f = decode::<f32>(key, any)?;
            if !f.is_finite() {
                return Err(ConfigDataError::NonFinite {
                    key: key.to_owned(),
                });
            }
            // Shortest float32 text, then float64: 0.1f reads back as 0.1, not 0.10000000149.
            let f64v: f64 = f.to_string().parse().unwrap_or(f64::from(f));
            float_json(key, f64v)?
        }
        "google.protobuf.DoubleValue" => float_json(key, decode::<f64>(key, any)?)?,
        "google.protobuf.Int32Value" => Value::from(decode::<i32>(key, any)?),
        "google.protobuf.Int64Value" => Value::from(decode::<i64>(key, any)?),
        "google.protobuf.UInt32Value" => Value::from(decode::<u32>(key, any)?),
        "google.protobuf.UInt64Value" => Value::from(decode::<u64>(key, any)?),
        "google.protobuf.BytesValue" => {
            let bytes = decode::<Vec<u8>>(key, any)?;
            match String::from_utf8(bytes) {
                Ok(s) => Value::String(s),
                Err(_) => {
                    return Err(ConfigDataError::Malformed {
                        key: key.to_owned(),
                        type_url: any.type_url.clone(),
                        reason: "bytes are not UTF-8 text".to_owned(),
                    });
                }
            }
        }
        _ => {
            return Err(ConfigDataError::UnsupportedType {
                key: key.to_owned(),
                type_url: any.type_url.clone(),
            });
        }
    })
}

/// Decodes `map<string, Any>` into a JSON object. Keys come out sorted.
pub fn from_any_map(map: &BTreeMap<String, Any>) -> Result<Map<String, Value>, ConfigDataError> {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    keys.into_iter()
        .map(|k| Ok((k.clone(), any_to_value(k, &map[k])?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn stock_encoding_matches_edgecore() {
        let m = to_any_map(
            &obj(json!({"ip": "127.0.0.1", "port": 502, "tls": false, "scale": 0.5})),
            NumberEncoding::Stock,
        )
        .unwrap();
        assert_eq!(
            m["ip"].type_url,
            "type.googleapis.com/google.protobuf.StringValue"
        );
        assert_eq!(
            m["tls"].type_url,
            "type.googleapis.com/google.protobuf.BoolValue"
        );
        assert_eq!(
            m["port"].type_url,
            "type.googleapis.com/google.protobuf.FloatValue"
        );
        assert_eq!(
            m["scale"].type_url,
            "type.googleapis.com/google.protobuf.FloatValue"
        );
        assert_eq!(f32::decode(m["port"].value.as_slice()).unwrap(), 502.0);
        // And it decodes back to the same JSON, integers as integers.
        let back = from_any_map(&m).unwrap();
        assert_eq!(
            Value::Object(back),
            json!({"ip": "127.0.0.1", "port": 502, "tls": false, "scale": 0.5})
        );
    }

    #[test]
    fn stock_encoding_loses_precision_above_2_pow_24_like_edgecore() {
        let m = to_any_map(&obj(json!({"big": 16_777_217})), NumberEncoding::Stock).unwrap();
        assert_eq!(from_any_map(&m).unwrap()["big"], json!(16_777_216));
    }

    #[test]
    fn lossless_encoding_keeps_integers_and_doubles() {
        let input = json!({"big": 9_007_199_254_740_993_i64, "huge": u64::MAX, "pi": 1.234567890123456, "neg": -7});
        let m = to_any_map(&obj(input.clone()), NumberEncoding::Lossless).unwrap();
        assert_eq!(
            m["big"].type_url,
            "type.googleapis.com/google.protobuf.Int64Value"
        );
        assert_eq!(
            m["huge"].type_url,
            "type.googleapis.com/google.protobuf.UInt64Value"
        );
        assert_eq!(
            m["pi"].type_url,
            "type.googleapis.com/google.protobuf.DoubleValue"
        );
        assert_eq!(Value::Object(from_any_map(&m).unwrap()), input);
    }

    #[test]
    fn decodes_every_wrapper_type() {
        let mut m = BTreeMap::new();
        m.insert("s".into(), any_of("StringValue", &"x".to_string()));
        m.insert("b".into(), any_of("BoolValue", &true));
        m.insert("f".into(), any_of("FloatValue", &0.1f32));
        m.insert("d".into(), any_of("DoubleValue", &2.5f64));
        m.insert("i32".into(), any_of("Int32Value", &-5i32));
        m.insert("i64".into(), any_of("Int64Value", &-6_000_000_000i64));
        m.insert("u32".into(), any_of("UInt32Value", &7u32));
        m.insert("u64".into(), any_of("UInt64Value", &u64::MAX));
        m.insert("y".into(), any_of("BytesValue", &b"COM1".to_vec()));
        let v = Value::Object(from_any_map(&m).unwrap());
        assert_eq!(
            v,
            json!({"s": "x", "b": true, "f": 0.1, "d": 2.5, "i32": -5, "i64": -6_000_000_000i64,
                   "u32": 7, "u64": u64::MAX, "y": "COM1"})
        );
    }

    #[test]
    fn float_one_becomes_integer_one() {
        let a = any_of("FloatValue", &1.0f32);
        assert_eq!(any_to_value("k", &a).unwrap(), json!(1));
        let a = any_of("FloatValue", &-3.0f32);
        assert_eq!(any_to_value("k", &a).unwrap(), json!(-3));
        let a = any_of("FloatValue", &f32::NAN);
        assert_eq!(
            any_to_value("k", &a),
            Err(ConfigDataError::NonFinite { key: "k".into() })
        );
    }

    #[test]
    fn nested_values_are_errors_naming_the_key() {
        let e = to_any_map(
            &obj(json!({"ok": 1, "conn": {"ip": "x"}})),
            NumberEncoding::Stock,
        )
        .unwrap_err();
        assert_eq!(
            e,
            ConfigDataError::Nested {
                key: "conn".into(),
                kind: "object"
            }
        );
        assert!(e.to_string().contains("`conn`"));
        let e = to_any_map(&obj(json!({"list": [1, 2]})), NumberEncoding::Stock).unwrap_err();
        assert_eq!(
            e,
            ConfigDataError::Nested {
                key: "list".into(),
                kind: "array"
            }
        );
        let e = to_any_map(&obj(json!({"n": null})), NumberEncoding::Stock).unwrap_err();
        assert_eq!(e, ConfigDataError::Null { key: "n".into() });
    }

    #[test]
    fn unknown_and_malformed_any_are_errors() {
        let a = Any {
            type_url: "type.googleapis.com/google.protobuf.Struct".into(),
            value: vec![],
        };
        assert!(matches!(
            any_to_value("k", &a),
            Err(ConfigDataError::UnsupportedType { .. })
        ));
        let a = Any {
            type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
            value: vec![0x0a, 0x05, b'a'],
        };
        assert!(matches!(
            any_to_value("k", &a),
            Err(ConfigDataError::Malformed { .. })
        ));
        let a = any_of("BytesValue", &vec![0xffu8, 0xfe]);
        assert!(matches!(
            any_to_value("k", &a),
            Err(ConfigDataError::Malformed { .. })
        ));
    }
}
