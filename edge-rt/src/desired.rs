//! What a valid desired value is, for a model property: the one rule used by
//! the mappers (before they write) and by the cloud controller (before a device
//! is marked valid), so the two can never disagree.
//!
//! * The property must be `ReadWrite` (KubeEdge's `accessMode`; an empty mode is
//!   `ReadOnly`).
//! * INT: a whole number (`30` or `30.0`, within ±9.2e18); FLOAT and DOUBLE: a
//!   finite number; BOOLEAN: `true/false`, `1/0`, `on/off`, `yes/no` in any
//!   case; STRING, BYTES, STREAM: any text.
//! * Numbers must lie within the model's `minimum` and `maximum` when given.
//!
//! Type names are KubeEdge's CRD enum (INT, FLOAT, DOUBLE, STRING, BOOLEAN,
//! BYTES, STREAM) in any case, plus the `integer` and `bool` spellings that
//! EdgeCore's devicetwin and older YAML use.

/// A model property's type.
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
    /// `STREAM` (not a twin: mappers do not collect it).
    Stream,
}

impl PropertyType {
    /// Parses the CRD enum text, case-insensitively (module docs). Unknown
    /// text is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
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

    /// The lowercase name used in twin metadata (`"type"`), as the Go
    /// framework writes it.
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
    /// Parses `ReadWrite`/`ReadOnly` case-insensitively (empty is ReadOnly);
    /// anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "readwrite" => Some(Self::ReadWrite),
            "readonly" | "" => Some(Self::ReadOnly),
            _ => None,
        }
    }
}

/// A desired value that passed [`check`].
#[derive(Debug, Clone, PartialEq)]
pub enum Desired {
    /// INT.
    Int(i64),
    /// FLOAT or DOUBLE.
    Number(f64),
    /// BOOLEAN.
    Bool(bool),
    /// STRING or STREAM.
    Text(String),
    /// BYTES (the text's bytes).
    Bytes(Vec<u8>),
}

/// Why a desired value is not valid. The messages name the value, not the
/// property: callers add which device and property it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DesiredError {
    /// The property is not ReadWrite.
    #[error("property is ReadOnly")]
    ReadOnly,
    /// The model's type is not one KubeEdge defines.
    #[error("model type `{0}` is unknown")]
    UnknownType(String),
    /// INT property, text that is not a whole number.
    #[error("`{0}` is not an integer")]
    NotInteger(String),
    /// FLOAT/DOUBLE property, text that is not a finite number.
    #[error("`{0}` is not a number")]
    NotNumber(String),
    /// BOOLEAN property, text that is not one of the boolean spellings.
    #[error("`{0}` is not a boolean")]
    NotBoolean(String),
    /// Below the model's minimum.
    #[error("{value} is below the minimum {minimum}")]
    BelowMinimum {
        /// The desired text.
        value: String,
        /// The model's minimum.
        minimum: f64,
    },
    /// Above the model's maximum.
    #[error("{value} is above the maximum {maximum}")]
    AboveMaximum {
        /// The desired text.
        value: String,
        /// The model's maximum.
        maximum: f64,
    },
}

/// Parses `text` as a value of `ty` (no access or range check).
///
/// # Errors
/// [`DesiredError::NotInteger`], [`NotNumber`](DesiredError::NotNumber) or
/// [`NotBoolean`](DesiredError::NotBoolean).
pub fn parse(ty: PropertyType, text: &str) -> Result<Desired, DesiredError> {
    let t = text.trim();
    match ty {
        PropertyType::Int => t
            .parse::<i64>()
            .ok()
            .or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                    .map(|f| f as i64)
            })
            .map(Desired::Int)
            .ok_or_else(|| DesiredError::NotInteger(text.to_owned())),
        PropertyType::Float | PropertyType::Double => t
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Desired::Number)
            .ok_or_else(|| DesiredError::NotNumber(text.to_owned())),
        PropertyType::Boolean => match t.to_ascii_lowercase().as_str() {
            "true" | "1" | "on" | "yes" => Ok(Desired::Bool(true)),
            "false" | "0" | "off" | "no" => Ok(Desired::Bool(false)),
            _ => Err(DesiredError::NotBoolean(text.to_owned())),
        },
        PropertyType::String | PropertyType::Stream => Ok(Desired::Text(text.to_owned())),
        PropertyType::Bytes => Ok(Desired::Bytes(text.as_bytes().to_vec())),
    }
}

/// Checks a desired value against a model property (module docs).
///
/// # Errors
/// [`DesiredError::ReadOnly`] first, then the parse errors of [`parse`], then
/// [`BelowMinimum`](DesiredError::BelowMinimum) /
/// [`AboveMaximum`](DesiredError::AboveMaximum) for INT, FLOAT and DOUBLE.
pub fn check(
    ty: PropertyType,
    access: AccessMode,
    minimum: Option<f64>,
    maximum: Option<f64>,
    text: &str,
) -> Result<Desired, DesiredError> {
    if access != AccessMode::ReadWrite {
        return Err(DesiredError::ReadOnly);
    }
    let v = parse(ty, text)?;
    let x = match v {
        Desired::Int(i) => i as f64,
        Desired::Number(f) => f,
        _ => return Ok(v),
    };
    if let Some(min) = minimum.filter(|m| x < *m) {
        return Err(DesiredError::BelowMinimum {
            value: text.trim().to_owned(),
            minimum: min,
        });
    }
    if let Some(max) = maximum.filter(|m| x > *m) {
        return Err(DesiredError::AboveMaximum {
            value: text.trim().to_owned(),
            maximum: max,
        });
    }
    Ok(v)
}

/// [`check`] with the model's fields as the CRD writes them (type and access
/// mode text, `minimum`/`maximum` strings; a bound that is empty or not a
/// number is not checked).
///
/// # Errors
/// As [`check`], plus [`DesiredError::UnknownType`].
pub fn check_text(
    type_text: &str,
    access_mode: &str,
    minimum: &str,
    maximum: &str,
    text: &str,
) -> Result<Desired, DesiredError> {
    let access = AccessMode::parse(access_mode).unwrap_or_default();
    if access != AccessMode::ReadWrite {
        return Err(DesiredError::ReadOnly);
    }
    let ty = PropertyType::parse(type_text)
        .ok_or_else(|| DesiredError::UnknownType(type_text.to_owned()))?;
    let bound = |b: &str| b.trim().parse::<f64>().ok();
    check(ty, access, bound(minimum), bound(maximum), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules() {
        let rw = |ty, text| check(ty, AccessMode::ReadWrite, Some(0.0), Some(100.0), text);
        assert_eq!(rw(PropertyType::Int, "42"), Ok(Desired::Int(42)));
        assert_eq!(rw(PropertyType::Int, "30.0"), Ok(Desired::Int(30)));
        assert_eq!(
            rw(PropertyType::Int, "3.5").unwrap_err().to_string(),
            "`3.5` is not an integer"
        );
        assert_eq!(
            rw(PropertyType::Int, "150").unwrap_err().to_string(),
            "150 is above the maximum 100"
        );
        assert_eq!(
            rw(PropertyType::Float, "-1").unwrap_err().to_string(),
            "-1 is below the minimum 0"
        );
        assert_eq!(rw(PropertyType::Boolean, "ON"), Ok(Desired::Bool(true)));
        assert!(rw(PropertyType::Boolean, "maybe").is_err());
        assert!(rw(PropertyType::Float, "inf").is_err());
        assert_eq!(
            check(PropertyType::Int, AccessMode::ReadOnly, None, None, "1"),
            Err(DesiredError::ReadOnly)
        );
    }

    #[test]
    fn text_form_accepts_the_crd_enum_and_the_aliases() {
        for t in ["INT", "int", "integer", "Integer"] {
            assert_eq!(check_text(t, "ReadWrite", "", "", "5"), Ok(Desired::Int(5)));
        }
        assert_eq!(
            check_text("bool", "readwrite", "", "", "no"),
            Ok(Desired::Bool(false))
        );
        assert_eq!(
            check_text("INT", "", "", "", "5"),
            Err(DesiredError::ReadOnly)
        );
        assert_eq!(
            check_text("DECIMAL", "ReadWrite", "", "", "5"),
            Err(DesiredError::UnknownType("DECIMAL".into()))
        );
        assert_eq!(
            check_text("INT", "ReadWrite", "1", "x", "0")
                .unwrap_err()
                .to_string(),
            "0 is below the minimum 1"
        );
    }
}
