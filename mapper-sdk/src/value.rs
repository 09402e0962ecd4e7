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

pub use edge_rt::desired::{AccessMode, PropertyType};

/// Converts a value a driver read into the model's type (e.g. a register's
/// integer into FLOAT). Returns `None` when the value cannot represent the type.
pub fn coerce(ty: PropertyType, v: Value) -> Option<Value> {
    Some(match (ty, v) {
        (PropertyType::Int, v) => Value::Int(
            v.as_i64()
                .or_else(|| v.as_f64().map(|f| f.round() as i64))?,
        ),
        (PropertyType::Float | PropertyType::Double, v) => Value::Float(v.as_f64()?),
        (PropertyType::Boolean, Value::Bool(b)) => Value::Bool(b),
        (PropertyType::Boolean, v) => Value::Bool(v.as_f64()? != 0.0),
        (PropertyType::String | PropertyType::Stream, v) => Value::String(v.to_string()),
        (PropertyType::Bytes, Value::Bytes(b)) => Value::Bytes(b),
        (PropertyType::Bytes, Value::String(s)) => Value::Bytes(s.into_bytes()),
        (PropertyType::Bytes, _) => return None,
    })
}

/// Parses desired-value text as `ty` with the shared rules of
/// [`edge_rt::desired::parse`] (BOOLEAN accepts `true/false`, `1/0`, `on/off`,
/// `yes/no`; INT accepts `30.0`).
///
/// # Errors
/// [`edge_rt::desired::DesiredError`] naming the text.
pub fn parse_value(ty: PropertyType, text: &str) -> Result<Value, edge_rt::desired::DesiredError> {
    edge_rt::desired::parse(ty, text).map(Value::from)
}

impl From<edge_rt::desired::Desired> for Value {
    fn from(d: edge_rt::desired::Desired) -> Self {
        use edge_rt::desired::Desired;
        match d {
            Desired::Int(i) => Value::Int(i),
            Desired::Number(f) => Value::Float(f),
            Desired::Bool(b) => Value::Bool(b),
            Desired::Text(t) => Value::String(t),
            Desired::Bytes(b) => Value::Bytes(b),
        }
    }
}

/// `raw × scale + offset`, rounded to the decimals its inputs imply, so that
/// binary noise does not reach the twin: raw 217 with scale 0.1 is `21.7`, not
/// `21.700000000000003`.
///
/// * `raw`: the value as read (a register's integer, or a decoded float).
/// * `raw_decimals`: decimals of `raw` as the device meant it: 0 for integers;
///   for floats, the decimals of the shortest text that reads back as the
///   decoded value (as `f32` for a float32 register, e.g. 1.8f → 1).
/// * `scale`, `offset`: as configured; their decimals are those of their
///   shortest text (0.1 → 1, 0.25 → 2, −40 → 0).
///
/// **Rule.** The exact result has at most `d = max(raw_decimals + decimals(scale),
/// decimals(offset))` decimals. The computed result is rounded to `d` decimals,
/// but never to more than 15 significant digits (what an `f64` always holds),
/// so Rust's shortest `Display` prints the decimal the inputs imply. The
/// rounding only removes binary noise: if it would move the result by more than
/// a few units in the last place of the terms (the inputs had more digits than
/// `raw_decimals` says), or the result has 16 or more integer digits, or is not
/// finite, the unrounded result is returned. A zero result is `0`, never `-0`.
///
/// ```no_run
/// use mapper_sdk::scale_linear;
/// assert_eq!(scale_linear(217.0, 0, 0.1, 0.0).to_string(), "21.7");
/// assert_eq!(scale_linear(3.0, 0, 0.1, 0.0).to_string(), "0.3");
/// assert_eq!(scale_linear(625.0, 0, 0.1, -40.0).to_string(), "22.5");
/// assert_eq!(scale_linear(-25.0, 0, 0.01, 0.0).to_string(), "-0.25");
/// assert_eq!(scale_linear(1.8, 1, 0.1, 0.0).to_string(), "0.18");
/// ```
///
/// (The same cases run in this module's unit tests.)
pub fn scale_linear(raw: f64, raw_decimals: u32, scale: f64, offset: f64) -> f64 {
    let product = raw * scale;
    let exact = product + offset;
    if !exact.is_finite() {
        return exact;
    }
    if exact == 0.0 {
        return 0.0;
    }
    let wanted = raw_decimals
        .saturating_add(shortest_decimals(scale))
        .max(shortest_decimals(offset));
    // Digits before the decimal point (≤ 0 for |x| < 1).
    let integer_digits = exact.abs().log10().floor() as i64 + 1;
    let decimals = i64::from(wanted).min(MAX_SIGNIFICANT - integer_digits);
    // 10^d is exact up to 10^22; beyond (results below 1e-7 with 15 digits)
    // the noise is not worth a slower path.
    if !(0..=22).contains(&decimals) {
        return exact;
    }
    let p = 10f64.powi(decimals as i32);
    let rounded = (exact * p).round() / p;
    // Binary noise of `raw × scale + offset` is a few ulps of its terms.
    let noise = 16.0 * f64::EPSILON * (product.abs() + offset.abs());
    if (rounded - exact).abs() > noise {
        return exact;
    }
    if rounded == 0.0 { 0.0 } else { rounded }
}

/// Significant decimal digits an `f64` always holds.
const MAX_SIGNIFICANT: i64 = 15;

/// Decimals of the shortest text that reads back as `x` (what `Display`
/// prints), at most 17; 0 for whole and non-finite numbers. Drivers use it for
/// the `raw_decimals` of [`scale_linear`] when the raw value is a float.
pub fn shortest_decimals(x: f64) -> u32 {
    if !x.is_finite() || x.fract() == 0.0 {
        return 0;
    }
    (1..=17)
        .find(|&d| {
            let p = 10f64.powi(d);
            (x * p).round() / p == x
        })
        .map_or(17, |d| d as u32)
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
        assert_eq!(parse_value(PropertyType::Int, "42"), Ok(Value::Int(42)));
        assert_eq!(parse_value(PropertyType::Int, "-7"), Ok(Value::Int(-7)));
        assert_eq!(parse_value(PropertyType::Int, "30.0"), Ok(Value::Int(30)));
        assert!(parse_value(PropertyType::Int, "30.5").is_err());
        assert!(
            parse_value(PropertyType::Int, "abc")
                .unwrap_err()
                .to_string()
                .contains("`abc` is not an integer")
        );
        assert_eq!(
            parse_value(PropertyType::Float, "1.5"),
            Ok(Value::Float(1.5))
        );
        assert!(parse_value(PropertyType::Double, "NaN").is_err());
        assert_eq!(
            parse_value(PropertyType::Boolean, "ON"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            parse_value(PropertyType::Boolean, "0"),
            Ok(Value::Bool(false))
        );
        assert!(parse_value(PropertyType::Boolean, "maybe").is_err());
        assert_eq!(
            parse_value(PropertyType::String, "a b"),
            Ok(Value::String("a b".into()))
        );
    }

    #[test]
    fn coerce_reads_to_model_type() {
        assert_eq!(
            coerce(PropertyType::Float, Value::Int(3)),
            Some(Value::Float(3.0))
        );
        assert_eq!(
            coerce(PropertyType::Int, Value::Float(2.6)),
            Some(Value::Int(3))
        );
        assert_eq!(
            coerce(PropertyType::Boolean, Value::Int(0)),
            Some(Value::Bool(false))
        );
        assert_eq!(
            coerce(PropertyType::String, Value::Float(1.5)),
            Some(Value::String("1.5".into()))
        );
        assert_eq!(coerce(PropertyType::Int, Value::String("x".into())), None);
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
    fn text(raw: f64, raw_decimals: u32, scale: f64, offset: f64) -> String {
        scale_linear(raw, raw_decimals, scale, offset).to_string()
    }

    #[test]
    fn scale_linear_prints_the_decimal_its_inputs_imply() {
        // Tenths, hundredths, halves: the common register encodings.
        assert_eq!(text(217.0, 0, 0.1, 0.0), "21.7");
        assert_eq!(text(3.0, 0, 0.1, 0.0), "0.3");
        assert_eq!(text(7.0, 0, 0.1, 0.0), "0.7");
        assert_eq!(text(1234.0, 0, 0.01, 0.0), "12.34");
        assert_eq!(text(29.0, 0, 0.01, 0.0), "0.29");
        assert_eq!(text(43.0, 0, 0.5, 0.0), "21.5");
        assert_eq!(text(12345.0, 0, 0.001, 0.0), "12.345");
        // Every raw value of a 16-bit register with scale 0.1 prints as its tenths.
        for raw in 0..=65535u32 {
            let want = format!("{}.{}", raw / 10, raw % 10);
            let want = want.strip_suffix(".0").unwrap_or(&want);
            assert_eq!(text(f64::from(raw), 0, 0.1, 0.0), want, "{raw}");
        }
    }

    #[test]
    fn scale_linear_offsets_and_signs() {
        assert_eq!(text(625.0, 0, 0.1, -40.0), "22.5");
        assert_eq!(text(401.0, 0, 0.1, -40.0), "0.1");
        assert_eq!(text(400.0, 0, 0.1, -40.0), "0", "no -0");
        assert_eq!(text(0.0, 0, -0.1, 0.0), "0", "no -0");
        assert_eq!(text(-25.0, 0, 0.01, 0.0), "-0.25");
        assert_eq!(text(-217.0, 0, 0.1, 0.0), "-21.7");
        assert_eq!(text(3.0, 0, 0.1, 0.05), "0.35");
        assert_eq!(text(1.0, 0, 1.0, 0.1), "1.1");
        assert_eq!(text(100001.0, 0, 0.01, -1000.0), "0.01", "cancellation");
        assert_eq!(text(5.0, 0, -0.2, 0.0), "-1");
    }

    #[test]
    fn scale_linear_large_and_float_raws() {
        assert_eq!(text(4_294_967_295.0, 0, 0.001, 0.0), "4294967.295");
        assert_eq!(text(123_456_789.0, 0, 0.000001, 0.0), "123.456789");
        assert_eq!(text(1e15, 0, 0.1, 0.0), "100000000000000");
        // 16 or more integer digits: not rounded, whatever it prints.
        let big = 9.007_199_254_740_993e18;
        assert_eq!(scale_linear(big, 0, 0.1, 0.0), big * 0.1);
        // Float raws, with the decimals of their shortest text.
        assert_eq!(text(1.8, 1, 0.1, 0.0), "0.18");
        assert_eq!(text(-12.5, 1, 0.1, 0.0), "-1.25");
        assert_eq!(text(1234.5678, 4, 0.001, 0.0), "1.2345678");
        assert_eq!(text(0.07, 2, 3.0, 0.0), "0.21");
        assert_eq!(text(1e-7, 7, 0.1, 0.0), "0.00000001");
        // At most 15 significant digits, even when the raw has 17.
        assert_eq!(text(0.1 + 0.2, 17, 1.0, 0.0), "0.3");
        assert!(scale_linear(f64::INFINITY, 0, 0.1, 0.0).is_infinite());
        assert!(scale_linear(f64::NAN, 0, 0.1, 0.0).is_nan());
    }

    #[test]
    fn scale_linear_only_removes_noise() {
        // raw_decimals too small for the raw: rounding would change the value,
        // so the exact product comes back.
        assert_eq!(scale_linear(21.75, 0, 0.1, 0.0), 21.75 * 0.1);
        assert_eq!(scale_linear(1.25, 0, 2.0, 0.0), 2.5);
        // A float32 widened to f64 carries the f32's own error (1.8f is
        // 1.7999999523162842): that is a value, not noise, and stays (at 15
        // digits). Callers pass the float32's shortest decimal instead.
        assert_eq!(text(f64::from(1.8f32), 16, 10.0, 0.0), "17.9999995231628");
        assert_eq!(text(1.8, 1, 10.0, 0.0), "18");
    }
}
