//! Typed property values, the model's property types, and the twin text format.

use std::fmt;

/// A property value as a driver reads or writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// BOOLEAN.
    Bool(bool),
    /// INT (64-bit signed).
    Int(i64),
    /// FLOAT and DOUBLE.
    Float(f64),
    /// STRING (and STREAM URIs).
    String(String),
    /// BYTES.
    Bytes(Vec<u8>),
}

impl Value {
    /// The value as `f64` when it is numeric or boolean.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The value as `i64` when it is an integer, a whole float or a boolean.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Bool(b) => Some(i64::from(*b)),
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(*f as i64),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::String(s) => f.write_str(s),
            Value::Bytes(b) => {
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// The `type` of a model property (`INT`, `FLOAT`, ...), matched case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropertyType {
    /// `INT`.
    Int,
    /// `FLOAT`.
    Float,
    /// `DOUBLE`.
    Double,
    /// `STRING`.
    String,
    /// `BOOLEAN`.
    Boolean,
    /// `BYTES`.
    Bytes,
    /// `STREAM` (camera streams; not collected as twins).
    Stream,
}

impl PropertyType {
    /// Parses the CRD enum text, case-insensitively. Unknown text is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "int" | "integer" => Self::Int,
            "float" => Self::Float,
            "double" => Self::Double,
            "string" => Self::String,
            "boolean" | "bool" => Self::Boolean,
            "bytes" => Self::Bytes,
            "stream" => Self::Stream,
            _ => return None,
        })
    }

    /// The lowercase name used in twin metadata (`"type"`), as the Go framework does.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Int => "int",
            Self::Float => "float",
            Self::Double => "double",
            Self::String => "string",
            Self::Boolean => "boolean",
            Self::Bytes => "bytes",
            Self::Stream => "stream",
        }
    }

    /// Converts a value a driver read into this type (e.g. a register's integer into
    /// FLOAT). Returns `None` when the value cannot represent the type.
    pub fn coerce(self, v: Value) -> Option<Value> {
        Some(match (self, v) {
            (Self::Int, v) => Value::Int(
                v.as_i64()
                    .or_else(|| v.as_f64().map(|f| f.round() as i64))?,
            ),
            (Self::Float | Self::Double, v) => Value::Float(v.as_f64()?),
            (Self::Boolean, Value::Bool(b)) => Value::Bool(b),
            (Self::Boolean, v) => Value::Bool(v.as_f64()? != 0.0),
            (Self::String | Self::Stream, v) => Value::String(v.to_string()),
            (Self::Bytes, Value::Bytes(b)) => Value::Bytes(b),
            (Self::Bytes, Value::String(s)) => Value::Bytes(s.into_bytes()),
            (Self::Bytes, _) => return None,
        })
    }

    /// Parses desired-value text as this type.
    ///
    /// BOOLEAN accepts `true/false`, `1/0`, `on/off` and `yes/no` in any case. INT
    /// accepts a whole number written with a fractional zero (`30.0`).
    pub fn parse_value(self, text: &str) -> Result<Value, String> {
        let t = text.trim();
        match self {
            Self::Int => t
                .parse::<i64>()
                .ok()
                .or_else(|| {
                    t.parse::<f64>()
                        .ok()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                        .map(|f| f as i64)
                })
                .map(Value::Int)
                .ok_or_else(|| format!("`{text}` is not an integer")),
            Self::Float | Self::Double => t
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Value::Float)
                .ok_or_else(|| format!("`{text}` is not a number")),
            Self::Boolean => match t.to_ascii_lowercase().as_str() {
                "true" | "1" | "on" | "yes" => Ok(Value::Bool(true)),
                "false" | "0" | "off" | "no" => Ok(Value::Bool(false)),
                _ => Err(format!("`{text}` is not a boolean")),
            },
            Self::String | Self::Stream => Ok(Value::String(text.to_owned())),
            Self::Bytes => Ok(Value::Bytes(text.as_bytes().to_vec())),
        }
    }
}

/// `accessMode` of a model property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessMode {
    /// Collected only; desired values are rejected.
    #[default]
    ReadOnly,
    /// Collected and written from desired values.
    ReadWrite,
}

impl AccessMode {
    /// Parses `ReadWrite`/`ReadOnly` case-insensitively; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "readwrite" => Some(Self::ReadWrite),
            "readonly" | "" => Some(Self::ReadOnly),
            _ => None,
        }
    }
}

pub use dmi_proto::rules::{
    TWIN_NAME_MAX, TWIN_VALUE_MAX, is_twin_char, is_valid_twin_name, is_valid_twin_value,
};

/// Renders text as a twin value stock EdgeCore accepts: characters outside its
/// charset become `_` and the result is cut at 512 characters. Returns whether
/// anything was changed.
pub fn sanitize_twin_value(text: &str) -> (String, bool) {
    let mut changed = false;
    let mut out: String = text
        .chars()
        .map(|c| {
            if is_twin_char(c) {
                c
            } else {
                changed = true;
                '_'
            }
        })
        .collect();
    if out.len() > TWIN_VALUE_MAX {
        out.truncate(TWIN_VALUE_MAX);
        changed = true;
    }
    (out, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_desired_values_by_type() {
        assert_eq!(PropertyType::Int.parse_value("42"), Ok(Value::Int(42)));
        assert_eq!(PropertyType::Int.parse_value("-7"), Ok(Value::Int(-7)));
        assert_eq!(PropertyType::Int.parse_value("30.0"), Ok(Value::Int(30)));
        assert!(PropertyType::Int.parse_value("30.5").is_err());
        assert!(
            PropertyType::Int
                .parse_value("abc")
                .unwrap_err()
                .contains("`abc` is not an integer")
        );
        assert_eq!(
            PropertyType::Float.parse_value("1.5"),
            Ok(Value::Float(1.5))
        );
        assert!(PropertyType::Double.parse_value("NaN").is_err());
        assert_eq!(
            PropertyType::Boolean.parse_value("ON"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            PropertyType::Boolean.parse_value("0"),
            Ok(Value::Bool(false))
        );
        assert!(PropertyType::Boolean.parse_value("maybe").is_err());
        assert_eq!(
            PropertyType::String.parse_value("a b"),
            Ok(Value::String("a b".into()))
        );
    }

    #[test]
    fn coerce_reads_to_model_type() {
        assert_eq!(
            PropertyType::Float.coerce(Value::Int(3)),
            Some(Value::Float(3.0))
        );
        assert_eq!(
            PropertyType::Int.coerce(Value::Float(2.6)),
            Some(Value::Int(3))
        );
        assert_eq!(
            PropertyType::Boolean.coerce(Value::Int(0)),
            Some(Value::Bool(false))
        );
        assert_eq!(
            PropertyType::String.coerce(Value::Float(1.5)),
            Some(Value::String("1.5".into()))
        );
        assert_eq!(PropertyType::Int.coerce(Value::String("x".into())), None);
    }

    #[test]
    fn twin_charset() {
        assert_eq!(
            sanitize_twin_value("hello world!"),
            ("hello_world_".into(), true)
        );
        assert_eq!(sanitize_twin_value("ok"), ("ok".into(), false));
        let (long, changed) = sanitize_twin_value(&"x".repeat(600));
        assert_eq!((long.len(), changed), (512, true));
    }

    #[test]
    fn display_is_twin_safe_for_numbers() {
        assert_eq!(Value::Float(21.5).to_string(), "21.5");
        assert_eq!(Value::Float(-0.001).to_string(), "-0.001");
        assert_eq!(Value::Bytes(vec![0xab, 0x01]).to_string(), "ab01");
        assert!(is_valid_twin_value(&Value::Float(1e300).to_string()));
    }
}
