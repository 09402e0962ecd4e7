//! OPC-UA values ⇄ the SDK's [`Value`], and the node types writes are
//! encoded as.
//!
//! **Reads.** Boolean → BOOLEAN; SByte … Int64, Byte … UInt32 → INT; UInt64
//! → INT (above `i64::MAX`: its decimal text); Float and Double → a number
//! (a Float as the shortest decimal that reads back as the same `f32`, so
//! 0.1f is `0.1`, not `0.10000000149011612`); String, XmlElement → text;
//! LocalizedText → its text; DateTime → RFC 3339 in UTC with milliseconds
//! (`2024-05-01T12:00:00.000Z`); Guid → `72962b91-fa75-4ae6-8d28-b404dc7daf63`;
//! ByteString → bytes (the twin shows them as hex); NodeId, QualifiedName,
//! StatusCode → their text.
//!
//! **Arrays** (one dimension) are reported as their elements' text joined
//! by `,` with no spaces and no brackets: `1,2,3`, `true,false`, `1.5,-2`,
//! ByteString elements in hex. That stays inside EdgeCore's twin charset
//! (`[a-zA-Z0-9-_.,:/@#]`, which has no brackets, quotes or spaces); an
//! empty array is the empty text. Strings that contain `,` cannot be told
//! apart from two elements. A desired value for an array node is written in
//! the same form.
//!
//! **Writes** are encoded as the node's own DataType ([`NodeType`]): the
//! desired value is checked to fit (range of the integer type, `f32` range,
//! a Guid or RFC 3339 text) and refused with [`DriverError::Value`] when it
//! does not.

use mapper_sdk::{DriverError, DriverResult, Value};
use opcua::types::{
    Array, ByteString, DataTypeId, DateTime, Guid, LocalizedText, NodeId, UAString, Variant,
    VariantScalarTypeId,
};

/// The OPC-UA built-in types this mapper reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// Boolean.
    Boolean,
    /// Signed 8-bit.
    SByte,
    /// Unsigned 8-bit.
    Byte,
    /// Signed 16-bit.
    Int16,
    /// Unsigned 16-bit.
    UInt16,
    /// Signed 32-bit.
    Int32,
    /// Unsigned 32-bit.
    UInt32,
    /// Signed 64-bit.
    Int64,
    /// Unsigned 64-bit.
    UInt64,
    /// IEEE 754 single.
    Float,
    /// IEEE 754 double.
    Double,
    /// Text.
    String,
    /// Date and time.
    DateTime,
    /// GUID.
    Guid,
    /// Bytes.
    ByteString,
    /// Text with a locale.
    LocalizedText,
}

impl Builtin {
    /// Every type, in the order of the OPC-UA built-in type ids.
    pub const ALL: [Builtin; 16] = [
        Builtin::Boolean,
        Builtin::SByte,
        Builtin::Byte,
        Builtin::Int16,
        Builtin::UInt16,
        Builtin::Int32,
        Builtin::UInt32,
        Builtin::Int64,
        Builtin::UInt64,
        Builtin::Float,
        Builtin::Double,
        Builtin::String,
        Builtin::DateTime,
        Builtin::Guid,
        Builtin::ByteString,
        Builtin::LocalizedText,
    ];

    /// The OPC-UA name.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Boolean => "Boolean",
            Builtin::SByte => "SByte",
            Builtin::Byte => "Byte",
            Builtin::Int16 => "Int16",
            Builtin::UInt16 => "UInt16",
            Builtin::Int32 => "Int32",
            Builtin::UInt32 => "UInt32",
            Builtin::Int64 => "Int64",
            Builtin::UInt64 => "UInt64",
            Builtin::Float => "Float",
            Builtin::Double => "Double",
            Builtin::String => "String",
            Builtin::DateTime => "DateTime",
            Builtin::Guid => "Guid",
            Builtin::ByteString => "ByteString",
            Builtin::LocalizedText => "LocalizedText",
        }
    }

    /// The variant type of a value of this type.
    pub fn scalar_type(self) -> VariantScalarTypeId {
        match self {
            Builtin::Boolean => VariantScalarTypeId::Boolean,
            Builtin::SByte => VariantScalarTypeId::SByte,
            Builtin::Byte => VariantScalarTypeId::Byte,
            Builtin::Int16 => VariantScalarTypeId::Int16,
            Builtin::UInt16 => VariantScalarTypeId::UInt16,
            Builtin::Int32 => VariantScalarTypeId::Int32,
            Builtin::UInt32 => VariantScalarTypeId::UInt32,
            Builtin::Int64 => VariantScalarTypeId::Int64,
            Builtin::UInt64 => VariantScalarTypeId::UInt64,
            Builtin::Float => VariantScalarTypeId::Float,
            Builtin::Double => VariantScalarTypeId::Double,
            Builtin::String => VariantScalarTypeId::String,
            Builtin::DateTime => VariantScalarTypeId::DateTime,
            Builtin::Guid => VariantScalarTypeId::Guid,
            Builtin::ByteString => VariantScalarTypeId::ByteString,
            Builtin::LocalizedText => VariantScalarTypeId::LocalizedText,
        }
    }

    /// The type of a variant type, when it is one of these.
    pub fn from_scalar(t: VariantScalarTypeId) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.scalar_type() == t)
    }

    /// The type a DataType node id stands for: the built-in types, and the
    /// standard subtypes that are encoded as one of them (UtcTime, Duration,
    /// Enumeration values, LocaleId, ...). `None` for other types.
    pub fn from_data_type(id: &NodeId) -> Option<Builtin> {
        if id.namespace != 0 {
            return None;
        }
        let opcua::types::Identifier::Numeric(n) = id.identifier else {
            return None;
        };
        if (1..=15).contains(&n) {
            return Builtin::ALL
                .into_iter()
                .find(|b| b.scalar_type() as u32 == n);
        }
        let t = DataTypeId::try_from(n).ok()?;
        Some(match t {
            DataTypeId::LocalizedText => Builtin::LocalizedText,
            DataTypeId::UtcTime => Builtin::DateTime,
            DataTypeId::Duration => Builtin::Double,
            DataTypeId::Enumeration | DataTypeId::Integer => Builtin::Int32,
            DataTypeId::UInteger | DataTypeId::IntegerId | DataTypeId::Counter => Builtin::UInt32,
            DataTypeId::Number => Builtin::Double,
            DataTypeId::LocaleId | DataTypeId::NumericRange | DataTypeId::DateString => {
                Builtin::String
            }
            DataTypeId::Image
            | DataTypeId::ImageBMP
            | DataTypeId::ImageGIF
            | DataTypeId::ImageJPG
            | DataTypeId::ImagePNG
            | DataTypeId::AudioDataType => Builtin::ByteString,
            DataTypeId::BitFieldMaskDataType => Builtin::UInt64,
            _ => return None,
        })
    }

    /// The KubeEdge model type values of this type are reported as.
    pub fn kubeedge_type(self) -> &'static str {
        match self {
            Builtin::Boolean => "boolean",
            Builtin::SByte
            | Builtin::Byte
            | Builtin::Int16
            | Builtin::UInt16
            | Builtin::Int32
            | Builtin::UInt32
            | Builtin::Int64
            | Builtin::UInt64 => "int",
            Builtin::Float => "float",
            Builtin::Double => "double",
            Builtin::ByteString => "bytes",
            Builtin::String | Builtin::DateTime | Builtin::Guid | Builtin::LocalizedText => {
                "string"
            }
        }
    }
}

/// What a node holds: a built-in type, as one value or a one-dimensional array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeType {
    /// The (element) type.
    pub builtin: Builtin,
    /// A one-dimensional array of them.
    pub array: bool,
}

impl std::fmt::Display for NodeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.builtin.name())?;
        if self.array {
            f.write_str("[]")?;
        }
        Ok(())
    }
}

impl NodeType {
    /// The KubeEdge model type values of this node are reported as (arrays
    /// are text).
    pub fn kubeedge_type(self) -> &'static str {
        if self.array {
            "string"
        } else {
            self.builtin.kubeedge_type()
        }
    }

    /// Parses a visitor `dataType`: an OPC-UA built-in type name (`Int16`,
    /// `Double`, `LocalizedText`, any case), or a KubeEdge type (`int` =
    /// Int64, `float`, `double`, `boolean`, `string`, `bytes`), with `[]`
    /// for a one-dimensional array.
    ///
    /// # Errors
    /// [`DriverError::Config`] naming the text and the known names.
    pub fn parse(text: &str) -> DriverResult<NodeType> {
        let t = text.trim();
        let (name, array) = match t.strip_suffix("[]") {
            Some(n) => (n.trim(), true),
            None => (t, false),
        };
        let lower = name.to_ascii_lowercase();
        let builtin = Builtin::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(name))
            .or(match lower.as_str() {
                "int" | "integer" => Some(Builtin::Int64),
                "bool" => Some(Builtin::Boolean),
                "bytes" => Some(Builtin::ByteString),
                "uint8" => Some(Builtin::Byte),
                "int8" => Some(Builtin::SByte),
                _ => None,
            });
        match builtin {
            Some(builtin) => Ok(NodeType { builtin, array }),
            None => Err(DriverError::Config(format!(
                "`dataType` `{text}` is not an OPC-UA built-in type ({}) or int, float, double, boolean, string, bytes; add [] for an array",
                Builtin::ALL.map(Builtin::name).join(", ")
            ))),
        }
    }
}

/// `f32` as the `f64` of its shortest decimal text (0.1f → 0.1).
fn f32_to_f64(f: f32) -> f64 {
    if !f.is_finite() {
        return f64::from(f);
    }
    f.to_string().parse().unwrap_or(f64::from(f))
}

fn text_of_string(s: &UAString) -> String {
    s.value().clone().unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A scalar variant as a value. `Ok(None)` for types this mapper does not
/// decode.
fn scalar_value(v: &Variant) -> Option<Value> {
    Some(match v {
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(x) => Value::Int(i64::from(*x)),
        Variant::Byte(x) => Value::Int(i64::from(*x)),
        Variant::Int16(x) => Value::Int(i64::from(*x)),
        Variant::UInt16(x) => Value::Int(i64::from(*x)),
        Variant::Int32(x) => Value::Int(i64::from(*x)),
        Variant::UInt32(x) => Value::Int(i64::from(*x)),
        Variant::Int64(x) => Value::Int(*x),
        Variant::UInt64(x) => match i64::try_from(*x) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::String(x.to_string()),
        },
        Variant::Float(f) => Value::Float(f32_to_f64(*f)),
        Variant::Double(f) => Value::Float(*f),
        Variant::String(s) => Value::String(text_of_string(s)),
        Variant::XmlElement(s) => Value::String(s.to_string()),
        Variant::LocalizedText(t) => Value::String(text_of_string(&t.text)),
        Variant::DateTime(d) => Value::String(d.to_rfc3339()),
        Variant::Guid(g) => Value::String(g.to_string()),
        Variant::ByteString(b) => Value::Bytes(b.value.clone().unwrap_or_default()),
        Variant::NodeId(n) => Value::String(n.to_string()),
        Variant::ExpandedNodeId(n) => Value::String(n.to_string()),
        Variant::QualifiedName(q) => Value::String(q.to_string()),
        Variant::StatusCode(s) => Value::String(s.to_string()),
        _ => return None,
    })
}

/// One array element as text (see the module docs).
fn element_text(v: &Variant) -> Option<String> {
    Some(match scalar_value(v)? {
        Value::Bytes(b) => hex(&b),
        other => other.to_string(),
    })
}

/// The value of a variant read from a node (see the module docs).
///
/// # Errors
/// [`DriverError::Value`] for a node without a value (null), a
/// multi-dimensional array, or a type this mapper does not decode
/// (structures, DiagnosticInfo).
pub fn to_value(v: &Variant) -> DriverResult<Value> {
    match v {
        Variant::Empty => Err(DriverError::Value("the node has no value (null)".into())),
        Variant::Array(a) => {
            if a.dimensions.as_ref().is_some_and(|d| d.len() > 1) {
                return Err(DriverError::Value(format!(
                    "a {}-dimensional array is not supported (only one dimension)",
                    a.dimensions.as_ref().map_or(0, Vec::len)
                )));
            }
            let mut parts = Vec::with_capacity(a.values.len());
            for e in &a.values {
                parts.push(element_text(e).ok_or_else(|| {
                    DriverError::Value(format!("arrays of {} are not supported", a.value_type))
                })?);
            }
            Ok(Value::String(parts.join(",")))
        }
        Variant::Variant(inner) => to_value(inner),
        other => scalar_value(other).ok_or_else(|| {
            DriverError::Value(format!(
                "values of type {} are not supported",
                other
                    .scalar_type_id()
                    .map_or_else(|| "unknown".to_owned(), |t| t.to_string())
            ))
        }),
    }
}

/// The node type of a variant, when this mapper can write it.
pub fn type_of(v: &Variant) -> Option<NodeType> {
    match v {
        Variant::Array(a) => {
            if a.dimensions.as_ref().is_some_and(|d| d.len() > 1) {
                return None;
            }
            Some(NodeType {
                builtin: Builtin::from_scalar(a.value_type)?,
                array: true,
            })
        }
        other => Some(NodeType {
            builtin: Builtin::from_scalar(other.scalar_type_id()?)?,
            array: false,
        }),
    }
}

fn value_error(value: &str, ty: Builtin, why: impl std::fmt::Display) -> DriverError {
    DriverError::Value(format!("`{value}` does not fit {}: {why}", ty.name()))
}

/// An integer from a value: INT, a whole number, or decimal text.
fn integer(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(i128::from(*i)),
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1.8e19 => {
            Some(*f as i128)
        }
        Value::Float(_) => None,
        Value::String(s) => {
            let t = s.trim();
            t.parse::<i128>().ok().or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 1.8e19)
                    .map(|f| f as i128)
            })
        }
        Value::Bytes(_) => None,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => s.trim().parse().ok(),
        other => other.as_f64(),
    }
}

/// A value as a scalar variant of `ty`.
fn scalar_variant(v: &Value, ty: Builtin) -> DriverResult<Variant> {
    let shown = v.to_string();
    macro_rules! int {
        ($t:ty, $variant:ident) => {{
            let i = integer(v).ok_or_else(|| value_error(&shown, ty, "not an integer"))?;
            let x = <$t>::try_from(i).map_err(|_| {
                value_error(&shown, ty, format!("outside {}..={}", <$t>::MIN, <$t>::MAX))
            })?;
            Variant::$variant(x)
        }};
    }
    Ok(match ty {
        Builtin::Boolean => Variant::Boolean(match v {
            Value::Bool(b) => *b,
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "on" | "yes" => true,
                "false" | "0" | "off" | "no" => false,
                _ => return Err(value_error(&shown, ty, "not true or false")),
            },
            other => match other.as_f64() {
                Some(0.0) => false,
                Some(1.0) => true,
                _ => return Err(value_error(&shown, ty, "not true or false")),
            },
        }),
        Builtin::SByte => int!(i8, SByte),
        Builtin::Byte => int!(u8, Byte),
        Builtin::Int16 => int!(i16, Int16),
        Builtin::UInt16 => int!(u16, UInt16),
        Builtin::Int32 => int!(i32, Int32),
        Builtin::UInt32 => int!(u32, UInt32),
        Builtin::Int64 => int!(i64, Int64),
        Builtin::UInt64 => int!(u64, UInt64),
        Builtin::Float => {
            let f = number(v).ok_or_else(|| value_error(&shown, ty, "not a number"))?;
            if !f.is_finite() || f.abs() > f64::from(f32::MAX) {
                return Err(value_error(
                    &shown,
                    ty,
                    "outside the range of a 32-bit float",
                ));
            }
            Variant::Float(f as f32)
        }
        Builtin::Double => {
            let f = number(v).ok_or_else(|| value_error(&shown, ty, "not a number"))?;
            if !f.is_finite() {
                return Err(value_error(&shown, ty, "not a finite number"));
            }
            Variant::Double(f)
        }
        Builtin::String => Variant::String(UAString::from(shown.as_str())),
        Builtin::LocalizedText => Variant::LocalizedText(Box::new(LocalizedText {
            locale: UAString::null(),
            text: UAString::from(shown.as_str()),
        })),
        Builtin::DateTime => {
            let d = DateTime::parse_from_rfc3339(shown.trim()).map_err(|e| {
                value_error(&shown, ty, format!("not RFC 3339 date and time ({e})"))
            })?;
            Variant::DateTime(Box::new(d))
        }
        Builtin::Guid => {
            let g: Guid = shown
                .trim()
                .parse()
                .map_err(|e| value_error(&shown, ty, format!("not a GUID ({e})")))?;
            Variant::Guid(Box::new(g))
        }
        Builtin::ByteString => Variant::ByteString(match v {
            Value::Bytes(b) => ByteString::from(b.clone()),
            other => ByteString::from(other.to_string().into_bytes()),
        }),
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A desired value encoded as `ty` (see the module docs).
///
/// # Errors
/// [`DriverError::Value`] naming the value and the type when it does not fit.
pub fn to_variant(v: &Value, ty: NodeType) -> DriverResult<Variant> {
    if !ty.array {
        return scalar_variant(v, ty.builtin);
    }
    let text = v.to_string();
    let text = text.trim();
    let mut values = Vec::new();
    if !text.is_empty() {
        for part in text.split(',') {
            let part = part.trim();
            let element = match ty.builtin {
                Builtin::ByteString => Value::Bytes(unhex(part).ok_or_else(|| {
                    value_error(part, ty.builtin, "array elements of ByteString are hex")
                })?),
                _ => Value::String(part.to_owned()),
            };
            values.push(scalar_variant(&element, ty.builtin)?);
        }
    }
    let array = Array::new(ty.builtin.scalar_type(), values)
        .map_err(|e| DriverError::Value(format!("cannot build a {ty} array: {e:?}")))?;
    Ok(Variant::Array(Box::new(array)))
}

/// Whether a value read back equals the one written (Floats compared as
/// `f32`, arrays element by element).
pub fn same(written: &Variant, read: &Variant) -> bool {
    match (written, read) {
        (Variant::Float(a), Variant::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
        (Variant::Array(a), Variant::Array(b)) => {
            a.values.len() == b.values.len()
                && a.values.iter().zip(&b.values).all(|(x, y)| same(x, y))
        }
        (Variant::LocalizedText(a), Variant::LocalizedText(b)) => a.text == b.text,
        (Variant::ByteString(a), Variant::ByteString(b)) => {
            a.value.as_deref().unwrap_or_default() == b.value.as_deref().unwrap_or_default()
        }
        (Variant::String(a), Variant::String(b)) => {
            a.value().as_deref().unwrap_or_default() == b.value().as_deref().unwrap_or_default()
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(t: VariantScalarTypeId, v: Vec<Variant>) -> Variant {
        Variant::Array(Box::new(Array::new(t, v).unwrap()))
    }

    #[test]
    fn reads_every_type() {
        let g: Guid = "72962b91-fa75-4ae6-8d28-b404dc7daf63".parse().unwrap();
        let cases: Vec<(Variant, Value)> = vec![
            (Variant::Boolean(true), Value::Bool(true)),
            (Variant::SByte(-5), Value::Int(-5)),
            (Variant::Byte(250), Value::Int(250)),
            (Variant::Int16(-300), Value::Int(-300)),
            (Variant::UInt16(60000), Value::Int(60000)),
            (Variant::Int32(-70000), Value::Int(-70000)),
            (Variant::UInt32(4_000_000_000), Value::Int(4_000_000_000)),
            (Variant::Int64(-9_000_000_000), Value::Int(-9_000_000_000)),
            (Variant::UInt64(42), Value::Int(42)),
            (
                Variant::UInt64(u64::MAX),
                Value::String(u64::MAX.to_string()),
            ),
            (Variant::Float(0.1), Value::Float(0.1)),
            (Variant::Double(2.5), Value::Float(2.5)),
            (Variant::String("hi".into()), Value::String("hi".into())),
            (
                Variant::LocalizedText(Box::new(LocalizedText::new("en", "Pump"))),
                Value::String("Pump".into()),
            ),
            (
                Variant::DateTime(Box::new(DateTime::ymd_hms(2024, 5, 1, 12, 0, 0))),
                Value::String("2024-05-01T12:00:00.000Z".into()),
            ),
            (
                Variant::Guid(Box::new(g)),
                Value::String("72962b91-fa75-4ae6-8d28-b404dc7daf63".into()),
            ),
            (
                Variant::ByteString(ByteString::from(vec![1u8, 0xab])),
                Value::Bytes(vec![1, 0xab]),
            ),
        ];
        for (v, want) in cases {
            assert_eq!(to_value(&v).unwrap(), want, "{v:?}");
        }
        assert!(
            to_value(&Variant::Empty)
                .unwrap_err()
                .to_string()
                .contains("no value")
        );
    }

    #[test]
    fn arrays_are_comma_separated_text_inside_the_twin_charset() {
        let a = arr(
            VariantScalarTypeId::Int32,
            vec![Variant::Int32(1), Variant::Int32(-2), Variant::Int32(3)],
        );
        assert_eq!(to_value(&a).unwrap(), Value::String("1,-2,3".into()));
        let f = arr(
            VariantScalarTypeId::Float,
            vec![Variant::Float(0.1), Variant::Float(2.0)],
        );
        let text = to_value(&f).unwrap().to_string();
        assert_eq!(text, "0.1,2");
        assert!(mapper_sdk::is_valid_twin_value(&text));
        let b = arr(
            VariantScalarTypeId::ByteString,
            vec![Variant::ByteString(ByteString::from(vec![0xde, 0xad]))],
        );
        assert_eq!(to_value(&b).unwrap(), Value::String("dead".into()));
        let empty = arr(VariantScalarTypeId::Boolean, vec![]);
        assert_eq!(to_value(&empty).unwrap(), Value::String(String::new()));
        // And back.
        let t = NodeType {
            builtin: Builtin::Int32,
            array: true,
        };
        let w = to_variant(&Value::String("1, -2,3".into()), t).unwrap();
        assert!(same(&w, &a));
        let e = to_variant(&Value::String("1,x".into()), t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`x` does not fit Int32: not an integer"), "{e}");
        let bt = NodeType {
            builtin: Builtin::ByteString,
            array: true,
        };
        assert!(same(
            &to_variant(&Value::String("dead".into()), bt).unwrap(),
            &b
        ));
    }

    #[test]
    fn writes_are_checked_against_the_node_type() {
        let t = |b| NodeType {
            builtin: b,
            array: false,
        };
        assert_eq!(
            to_variant(&Value::Int(200), t(Builtin::Byte)).unwrap(),
            Variant::Byte(200)
        );
        let e = to_variant(&Value::Int(300), t(Builtin::Byte))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`300` does not fit Byte: outside 0..=255"),
            "{e}"
        );
        let e = to_variant(&Value::Int(-1), t(Builtin::UInt32))
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside 0..=4294967295"), "{e}");
        assert_eq!(
            to_variant(&Value::Float(30.0), t(Builtin::Int16)).unwrap(),
            Variant::Int16(30)
        );
        assert!(to_variant(&Value::Float(30.5), t(Builtin::Int16)).is_err());
        assert_eq!(
            to_variant(
                &Value::String("18446744073709551615".into()),
                t(Builtin::UInt64)
            )
            .unwrap(),
            Variant::UInt64(u64::MAX)
        );
        assert_eq!(
            to_variant(&Value::Float(1.5), t(Builtin::Float)).unwrap(),
            Variant::Float(1.5)
        );
        assert!(to_variant(&Value::Float(1e300), t(Builtin::Float)).is_err());
        assert_eq!(
            to_variant(&Value::Int(1), t(Builtin::Boolean)).unwrap(),
            Variant::Boolean(true)
        );
        assert!(to_variant(&Value::Int(2), t(Builtin::Boolean)).is_err());
        assert_eq!(
            to_variant(&Value::Int(7), t(Builtin::String)).unwrap(),
            Variant::String("7".into())
        );
        let d = to_variant(
            &Value::String("2024-05-01T12:00:00Z".into()),
            t(Builtin::DateTime),
        )
        .unwrap();
        assert_eq!(
            to_value(&d).unwrap(),
            Value::String("2024-05-01T12:00:00.000Z".into())
        );
        assert!(to_variant(&Value::String("yesterday".into()), t(Builtin::DateTime)).is_err());
        assert!(to_variant(&Value::String("not-a-guid".into()), t(Builtin::Guid)).is_err());
        let lt = to_variant(&Value::String("x".into()), t(Builtin::LocalizedText)).unwrap();
        assert_eq!(to_value(&lt).unwrap(), Value::String("x".into()));
    }

    #[test]
    fn data_types_and_visitor_names() {
        assert_eq!(
            Builtin::from_data_type(&NodeId::new(0, 6u32)),
            Some(Builtin::Int32)
        );
        assert_eq!(
            Builtin::from_data_type(&NodeId::new(0, 294u32)),
            Some(Builtin::DateTime)
        );
        assert_eq!(
            Builtin::from_data_type(&NodeId::new(0, 290u32)),
            Some(Builtin::Double)
        );
        assert_eq!(Builtin::from_data_type(&NodeId::new(2, 6u32)), None);
        assert_eq!(
            NodeType::parse("uint16").unwrap(),
            NodeType {
                builtin: Builtin::UInt16,
                array: false
            }
        );
        assert_eq!(
            NodeType::parse("Double[]").unwrap(),
            NodeType {
                builtin: Builtin::Double,
                array: true
            }
        );
        assert_eq!(NodeType::parse("int").unwrap().builtin, Builtin::Int64);
        assert_eq!(
            NodeType::parse("bytes").unwrap().builtin,
            Builtin::ByteString
        );
        let e = NodeType::parse("Int128").unwrap_err().to_string();
        assert!(
            e.contains("`dataType` `Int128` is not an OPC-UA built-in type"),
            "{e}"
        );
    }
}
