//! Values: configuration and command text ⇄ OPC-UA variants, numbers ⇄
//! variants for patterns.

use std::str::FromStr;

use opcua::types::{
    Array, ByteString, DataTypeId, DateTime, Guid, LocalizedText, UAString, Variant,
    VariantScalarTypeId,
};

use crate::config::SimType;

impl SimType {
    /// The scalar type id of the variant holding this type.
    pub(crate) fn scalar_type(self) -> VariantScalarTypeId {
        match self {
            SimType::Boolean => VariantScalarTypeId::Boolean,
            SimType::SByte => VariantScalarTypeId::SByte,
            SimType::Byte => VariantScalarTypeId::Byte,
            SimType::Int16 => VariantScalarTypeId::Int16,
            SimType::UInt16 => VariantScalarTypeId::UInt16,
            SimType::Int32 => VariantScalarTypeId::Int32,
            SimType::UInt32 => VariantScalarTypeId::UInt32,
            SimType::Int64 => VariantScalarTypeId::Int64,
            SimType::UInt64 => VariantScalarTypeId::UInt64,
            SimType::Float => VariantScalarTypeId::Float,
            SimType::Double => VariantScalarTypeId::Double,
            SimType::String => VariantScalarTypeId::String,
            SimType::DateTime => VariantScalarTypeId::DateTime,
            SimType::ByteString => VariantScalarTypeId::ByteString,
            SimType::LocalizedText => VariantScalarTypeId::LocalizedText,
            SimType::Guid => VariantScalarTypeId::Guid,
        }
    }

    /// The DataType attribute of a variable of this type.
    pub(crate) fn data_type_id(self) -> DataTypeId {
        match self {
            SimType::Boolean => DataTypeId::Boolean,
            SimType::SByte => DataTypeId::SByte,
            SimType::Byte => DataTypeId::Byte,
            SimType::Int16 => DataTypeId::Int16,
            SimType::UInt16 => DataTypeId::UInt16,
            SimType::Int32 => DataTypeId::Int32,
            SimType::UInt32 => DataTypeId::UInt32,
            SimType::Int64 => DataTypeId::Int64,
            SimType::UInt64 => DataTypeId::UInt64,
            SimType::Float => DataTypeId::Float,
            SimType::Double => DataTypeId::Double,
            SimType::String => DataTypeId::String,
            SimType::DateTime => DataTypeId::DateTime,
            SimType::ByteString => DataTypeId::ByteString,
            SimType::LocalizedText => DataTypeId::LocalizedText,
            SimType::Guid => DataTypeId::Guid,
        }
    }

    /// Smallest and largest value as f64 (numeric types).
    pub(crate) fn range(self) -> (f64, f64) {
        match self {
            SimType::Boolean => (0.0, 1.0),
            SimType::SByte => (f64::from(i8::MIN), f64::from(i8::MAX)),
            SimType::Byte => (0.0, f64::from(u8::MAX)),
            SimType::Int16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
            SimType::UInt16 => (0.0, f64::from(u16::MAX)),
            SimType::Int32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
            SimType::UInt32 => (0.0, f64::from(u32::MAX)),
            SimType::Int64 => (i64::MIN as f64, i64::MAX as f64),
            SimType::UInt64 => (0.0, u64::MAX as f64),
            SimType::Float => (f64::from(f32::MIN), f64::from(f32::MAX)),
            _ => (f64::MIN, f64::MAX),
        }
    }

    /// The variant of this (numeric) type nearest to `x`: integers rounded and
    /// clamped to the type's range, Boolean true from 0.5 on.
    pub(crate) fn nearest(self, x: f64) -> Variant {
        let (lo, hi) = self.range();
        let i = if x.is_nan() {
            0.0
        } else {
            x.round().clamp(lo, hi)
        };
        // The casts below are exact or saturating: `i` is already within range.
        match self {
            SimType::Boolean => Variant::Boolean(x >= 0.5),
            SimType::SByte => Variant::SByte(i as i8),
            SimType::Byte => Variant::Byte(i as u8),
            SimType::Int16 => Variant::Int16(i as i16),
            SimType::UInt16 => Variant::UInt16(i as u16),
            SimType::Int32 => Variant::Int32(i as i32),
            SimType::UInt32 => Variant::UInt32(i as u32),
            SimType::Int64 => Variant::Int64(i as i64),
            SimType::UInt64 => Variant::UInt64(i as u64),
            SimType::Float => Variant::Float(x as f32),
            _ => Variant::Double(x),
        }
    }

    /// The zero (or empty, or current time) value.
    pub(crate) fn default_value(self) -> Variant {
        match self {
            SimType::String => Variant::String(UAString::from("")),
            SimType::DateTime => Variant::DateTime(Box::new(DateTime::now())),
            SimType::ByteString => Variant::ByteString(ByteString::from(Vec::<u8>::new())),
            SimType::LocalizedText => Variant::LocalizedText(Box::new(LocalizedText::new("", ""))),
            SimType::Guid => Variant::Guid(Box::new(Guid::null())),
            numeric => numeric.nearest(0.0),
        }
    }
}

/// A number of a numeric variant (Boolean as 0/1).
pub(crate) fn as_f64(v: &Variant) -> Option<f64> {
    match v {
        Variant::Boolean(b) => Some(f64::from(u8::from(*b))),
        other => other.as_f64(),
    }
}

/// Converts one JSON value (from YAML or a command) to a scalar of `ty`.
/// Integers must fit the type exactly; nothing is rounded.
pub(crate) fn scalar_from_json(ty: SimType, v: &serde_json::Value) -> Result<Variant, String> {
    use serde_json::Value as J;
    let int = |lo: i128, hi: i128| -> Result<i128, String> {
        let n = match v {
            J::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 1e30)
                        .map(|f| f as i128)
                }),
            J::Bool(b) => Some(i128::from(*b)),
            _ => None,
        }
        .ok_or_else(|| format!("{v} is not an integer"))?;
        if n < lo || n > hi {
            return Err(format!("{n} is out of range for {ty:?} ({lo}..={hi})"));
        }
        Ok(n)
    };
    let float =
        || -> Result<f64, String> { v.as_f64().ok_or_else(|| format!("{v} is not a number")) };
    let text = || -> Result<&str, String> {
        v.as_str()
            .ok_or_else(|| format!("{v} is not a string (for {ty:?})"))
    };
    // Each `int` call is bounded by the target type, so the casts are exact.
    Ok(match ty {
        SimType::Boolean => match v {
            J::Bool(b) => Variant::Boolean(*b),
            J::Number(_) => Variant::Boolean(int(0, 1)? == 1),
            _ => return Err(format!("{v} is not a boolean")),
        },
        SimType::SByte => Variant::SByte(int(i8::MIN.into(), i8::MAX.into())? as i8),
        SimType::Byte => Variant::Byte(int(0, u8::MAX.into())? as u8),
        SimType::Int16 => Variant::Int16(int(i16::MIN.into(), i16::MAX.into())? as i16),
        SimType::UInt16 => Variant::UInt16(int(0, u16::MAX.into())? as u16),
        SimType::Int32 => Variant::Int32(int(i32::MIN.into(), i32::MAX.into())? as i32),
        SimType::UInt32 => Variant::UInt32(int(0, u32::MAX.into())? as u32),
        SimType::Int64 => Variant::Int64(int(i64::MIN.into(), i64::MAX.into())? as i64),
        SimType::UInt64 => Variant::UInt64(int(0, u64::MAX.into())? as u64),
        SimType::Float => Variant::Float(float()? as f32),
        SimType::Double => Variant::Double(float()?),
        SimType::String => Variant::String(UAString::from(text()?)),
        SimType::DateTime => {
            let t = text()?;
            let dt = if t == "now" {
                DateTime::now()
            } else {
                DateTime::from_str(t).map_err(|e| format!("`{t}` is not an RFC 3339 time: {e}"))?
            };
            Variant::DateTime(Box::new(dt))
        }
        SimType::ByteString => {
            let t = text()?;
            Variant::ByteString(
                ByteString::from_base64(t).ok_or_else(|| format!("`{t}` is not base64"))?,
            )
        }
        SimType::LocalizedText => match v {
            J::String(s) => Variant::LocalizedText(Box::new(LocalizedText::new("", s))),
            J::Object(m) => {
                let field = |k: &str| m.get(k).and_then(J::as_str).unwrap_or_default();
                if m.keys().any(|k| k != "locale" && k != "text") {
                    return Err(format!("{v}: LocalizedText takes only `locale` and `text`"));
                }
                Variant::LocalizedText(Box::new(LocalizedText::new(field("locale"), field("text"))))
            }
            _ => return Err(format!("{v} is not a string or {{locale, text}}")),
        },
        SimType::Guid => {
            let t = text()?;
            Variant::Guid(Box::new(
                Guid::from_str(t).map_err(|e| format!("`{t}` is not a GUID: {e}"))?,
            ))
        }
    })
}

/// Converts a JSON value to a variable's value: a scalar of `ty`, or for an
/// array a list of them.
pub(crate) fn from_json(
    ty: SimType,
    array: bool,
    v: &serde_json::Value,
) -> Result<Variant, String> {
    if !array {
        return scalar_from_json(ty, v);
    }
    let items = v
        .as_array()
        .ok_or_else(|| format!("{v} is not a list (the variable is an array)"))?;
    let values = items
        .iter()
        .enumerate()
        .map(|(i, x)| scalar_from_json(ty, x).map_err(|e| format!("element {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Array::new(ty.scalar_type(), values)
        .map(|a| Variant::Array(Box::new(a)))
        .map_err(|e| format!("array: {e:?}"))
}

/// Parses command text as a value of the variable: JSON first (`21.5`,
/// `true`, `[1, 2]`, `"text"`), then, for the text-like types, the text as
/// it stands (`set ns=2;s=Name hello world`).
pub(crate) fn from_text(ty: SimType, array: bool, text: &str) -> Result<Variant, String> {
    let json = serde_json::from_str::<serde_json::Value>(text);
    match json {
        Ok(j) => match from_json(ty, array, &j) {
            Ok(v) => Ok(v),
            Err(e) if array || ty.is_numeric() => Err(e),
            Err(_) => from_json(ty, array, &serde_json::Value::String(text.to_owned())),
        },
        Err(_) if !array && !ty.is_numeric() => {
            from_json(ty, array, &serde_json::Value::String(text.to_owned()))
        }
        Err(e) => Err(format!("`{text}` is not a value: {e}")),
    }
}

/// Whether a variant written to a variable has exactly its type and shape
/// (a scalar of the type, or a one-dimensional array of it).
pub(crate) fn check_type(ty: SimType, array: bool, v: &Variant) -> bool {
    match v {
        Variant::Array(a) => {
            array
                && a.dimensions.as_ref().is_none_or(|d| d.len() <= 1)
                && a.value_type == ty.scalar_type()
        }
        Variant::Empty => false,
        scalar => !array && scalar.scalar_type_id() == Some(ty.scalar_type()),
    }
}

/// The value as compact JSON-like text for `get`: numbers, `true`/`false`,
/// quoted strings (ByteString in base64, DateTime in RFC 3339, Guid and
/// LocalizedText as text), lists in brackets.
pub(crate) fn to_text(v: &Variant) -> String {
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""));
    match v {
        Variant::Empty => "null".to_owned(),
        Variant::Boolean(b) => b.to_string(),
        Variant::SByte(x) => x.to_string(),
        Variant::Byte(x) => x.to_string(),
        Variant::Int16(x) => x.to_string(),
        Variant::UInt16(x) => x.to_string(),
        Variant::Int32(x) => x.to_string(),
        Variant::UInt32(x) => x.to_string(),
        Variant::Int64(x) => x.to_string(),
        Variant::UInt64(x) => x.to_string(),
        Variant::Float(x) => x.to_string(),
        Variant::Double(x) => x.to_string(),
        Variant::String(s) => quoted(s.as_ref()),
        Variant::DateTime(d) => quoted(&d.to_rfc3339()),
        Variant::ByteString(b) => quoted(&b.as_base64()),
        Variant::LocalizedText(t) => quoted(t.text.as_ref()),
        Variant::Guid(g) => quoted(&g.to_string()),
        Variant::Array(a) => format!(
            "[{}]",
            a.values.iter().map(to_text).collect::<Vec<_>>().join(",")
        ),
        other => quoted(&format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_must_fit() {
        assert_eq!(
            scalar_from_json(SimType::Byte, &json!(255)).unwrap(),
            Variant::Byte(255)
        );
        assert!(scalar_from_json(SimType::Byte, &json!(256)).is_err());
        assert!(scalar_from_json(SimType::Int16, &json!(1.5)).is_err());
        assert_eq!(
            scalar_from_json(SimType::UInt64, &json!(u64::MAX)).unwrap(),
            Variant::UInt64(u64::MAX)
        );
        assert_eq!(
            scalar_from_json(SimType::Int64, &json!(-5)).unwrap(),
            Variant::Int64(-5)
        );
    }

    #[test]
    fn text_types() {
        let g = "72962b91-fa75-4ae6-8d28-b404dc7daf63";
        let v = from_text(SimType::Guid, false, g).unwrap();
        assert_eq!(to_text(&v), format!("\"{g}\""));
        let v = from_text(SimType::String, false, "hello world").unwrap();
        assert_eq!(to_text(&v), "\"hello world\"");
        let v = from_text(SimType::String, false, "\"quoted\"").unwrap();
        assert_eq!(to_text(&v), "\"quoted\"");
        let v = from_text(SimType::String, false, "42").unwrap();
        assert_eq!(to_text(&v), "\"42\"");
        let v = from_text(SimType::ByteString, false, "AQID").unwrap();
        assert_eq!(v, Variant::ByteString(ByteString::from(vec![1u8, 2, 3])));
        let v = from_text(
            SimType::LocalizedText,
            false,
            r#"{"locale":"de","text":"Kessel"}"#,
        )
        .unwrap();
        assert_eq!(to_text(&v), "\"Kessel\"");
        let v = from_text(SimType::DateTime, false, "2024-05-01T12:00:00Z").unwrap();
        assert!(
            to_text(&v).starts_with("\"2024-05-01T12:00:00"),
            "{}",
            to_text(&v)
        );
        assert!(from_text(SimType::Double, false, "warm").is_err());
    }

    #[test]
    fn arrays() {
        let v = from_text(SimType::Float, true, "[1.5, 2, -3]").unwrap();
        assert_eq!(to_text(&v), "[1.5,2,-3]");
        assert!(check_type(SimType::Float, true, &v));
        assert!(!check_type(SimType::Double, true, &v));
        assert!(!check_type(SimType::Float, false, &v));
        assert!(from_text(SimType::Int32, true, "[1, \"x\"]").is_err());
        assert!(from_text(SimType::Int32, true, "1").is_err());
    }

    #[test]
    fn numbers_from_patterns_are_clamped() {
        assert_eq!(SimType::Byte.nearest(300.0), Variant::Byte(255));
        assert_eq!(SimType::Int16.nearest(-1.6), Variant::Int16(-2));
        assert_eq!(SimType::Boolean.nearest(0.7), Variant::Boolean(true));
        assert_eq!(SimType::Double.nearest(0.25), Variant::Double(0.25));
    }
}
