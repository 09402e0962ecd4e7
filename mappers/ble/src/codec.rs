//! Characteristic bytes ⇄ property values: the flat form (`startIndex`,
//! `endIndex`, `dataType`, `byteOrder`, `scale`, `offset`) and KubeEdge's
//! nested `dataConverter`. Pure functions, no Bluetooth.
//!
//! Byte positions are **0-based and inclusive**: `startIndex: 1, endIndex: 2`
//! is the second and third byte of the characteristic value.
//!
//! **Flat form.** The bytes `startIndex..=endIndex` are read as `dataType` in
//! `byteOrder` (little-endian by default, as GATT values are), then
//! `raw × scale + offset`, rounded to the decimals its inputs imply
//! ([`mapper_sdk::scale_linear`]): `0x66 0x08` as `uint16` × 0.01 is `21.5`.
//! Fixed-size types need no `endIndex` (given, it must match the size);
//! `int`/`uint` take the width of the range (1 to 8 bytes: 24-bit values
//! are common in GATT), `string` (UTF-8, up to the first NUL) and `bytes` take
//! the range or, without `endIndex`, the rest of the value.
//!
//! **KubeEdge's `dataConverter`.** The bytes from `startIndex` to `endIndex`
//! (inclusive; taken in reverse order when `startIndex > endIndex`, which is
//! how a little-endian value is written) form an unsigned big-endian integer
//! of up to 8 bytes; it is shifted left by `shiftLeft` bits, or else right by
//! `shiftRight` bits, and then `orderOfOperations` (`Add`, `Subtract`,
//! `Multiply`, `Divide` with `operationValue`, names case-insensitive) is
//! applied in order. KubeEdge's Go mapper joins the bytes' *decimal* digits
//! instead (`0x66 0x08` → `1028`), which agrees with a binary integer only for
//! a single byte; here the bytes form the integer the bit shifts imply
//! (`0x6608` = 26120). Each operation's result is rounded to 15 significant
//! digits so that binary noise does not reach the twin (`2150 × 0.01` is
//! `21.5`).
//!
//! **Writes** invert the read: the value minus `offset`, divided by `scale`,
//! rounded for integer types and range-checked; KubeEdge's operations are
//! undone in reverse order and the shift reversed. See [`Conversion::encode`]
//! for where the bytes go.

use std::fmt;

use mapper_sdk::{DriverError, DriverResult, PropertyType, Value, scale_linear, shortest_decimals};
use serde::{Deserialize, Deserializer};

/// Byte order of multi-byte numbers in the flat form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ByteOrder {
    /// Least significant byte first (GATT's order; the default).
    #[default]
    Little,
    /// Most significant byte first.
    Big,
}

impl<'de> Deserialize<'de> for ByteOrder {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().replace(['-', '_', ' '], "").as_str() {
            "little" | "littleendian" | "le" => Ok(Self::Little),
            "big" | "bigendian" | "be" => Ok(Self::Big),
            _ => Err(serde::de::Error::custom(format!(
                "byteOrder `{s}` is not `little` or `big`"
            ))),
        }
    }
}

/// How the bytes of a property are read (visitor `dataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// Signed 8-bit.
    Int8,
    /// Unsigned 8-bit.
    Uint8,
    /// Signed 16-bit.
    Int16,
    /// Unsigned 16-bit.
    Uint16,
    /// Signed 32-bit.
    Int32,
    /// Unsigned 32-bit.
    Uint32,
    /// Signed 64-bit.
    Int64,
    /// Unsigned 64-bit.
    Uint64,
    /// Signed integer as wide as the byte range (1 to 8 bytes).
    Int,
    /// Unsigned integer as wide as the byte range (1 to 8 bytes).
    Uint,
    /// IEEE 754 single.
    Float32,
    /// IEEE 754 double.
    Float64,
    /// UTF-8 text, up to the first NUL byte.
    String,
    /// The bytes themselves (reported as hex).
    Bytes,
}

/// Every name `dataType` accepts, for error messages.
const DATA_TYPES: &str = "int8, uint8, int16, uint16, int32, uint32, int64, uint64, int, uint, float32, float64, string, bytes";

impl DataType {
    /// Bytes the type occupies; `None` when the range decides.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            Self::Int8 | Self::Uint8 => 1,
            Self::Int16 | Self::Uint16 => 2,
            Self::Int32 | Self::Uint32 | Self::Float32 => 4,
            Self::Int64 | Self::Uint64 | Self::Float64 => 8,
            Self::Int | Self::Uint | Self::String | Self::Bytes => return None,
        })
    }

    fn signed(self) -> bool {
        matches!(
            self,
            Self::Int8 | Self::Int16 | Self::Int32 | Self::Int64 | Self::Int
        )
    }

    fn is_integer(self) -> bool {
        !matches!(
            self,
            Self::Float32 | Self::Float64 | Self::String | Self::Bytes
        )
    }

    fn is_number(self) -> bool {
        !matches!(self, Self::String | Self::Bytes)
    }

    /// The visitor's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            Self::Int8 => "int8",
            Self::Uint8 => "uint8",
            Self::Int16 => "int16",
            Self::Uint16 => "uint16",
            Self::Int32 => "int32",
            Self::Uint32 => "uint32",
            Self::Int64 => "int64",
            Self::Uint64 => "uint64",
            Self::Int => "int",
            Self::Uint => "uint",
            Self::Float32 => "float32",
            Self::Float64 => "float64",
            Self::String => "string",
            Self::Bytes => "bytes",
        }
    }
}

impl std::str::FromStr for DataType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "int8" => Self::Int8,
            "uint8" => Self::Uint8,
            "int16" => Self::Int16,
            "uint16" => Self::Uint16,
            "int32" => Self::Int32,
            "uint32" => Self::Uint32,
            "int64" => Self::Int64,
            "uint64" => Self::Uint64,
            "int" => Self::Int,
            "uint" => Self::Uint,
            "float32" | "float" => Self::Float32,
            "float64" | "double" => Self::Float64,
            "string" => Self::String,
            "bytes" => Self::Bytes,
            _ => return Err(format!("unknown dataType `{s}`; use one of {DATA_TYPES}")),
        })
    }
}

impl<'de> Deserialize<'de> for DataType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The flat conversion (module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Flat {
    /// First byte, 0-based.
    pub start: usize,
    /// Last byte, 0-based and inclusive; `None`: as the type needs, or the
    /// rest of the value.
    pub end: Option<usize>,
    /// The type; `None` until [`Flat::prepare`] resolves it from the model.
    pub data_type: Option<DataType>,
    /// Byte order of numbers.
    pub byte_order: ByteOrder,
    /// Multiplier (not 0).
    pub scale: Option<f64>,
    /// Added after `scale`.
    pub offset: Option<f64>,
}

/// One step of KubeEdge's `orderOfOperations`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Operation {
    /// What to do.
    pub kind: OperationType,
    /// With which operand.
    pub value: f64,
}

/// KubeEdge's `operationType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationType {
    /// `x + value`.
    Add,
    /// `x − value`.
    Subtract,
    /// `x × value`.
    Multiply,
    /// `x ÷ value` (value not 0).
    Divide,
}

impl<'de> Deserialize<'de> for OperationType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.to_ascii_lowercase().as_str() {
            "add" => Self::Add,
            "subtract" => Self::Subtract,
            "multiply" => Self::Multiply,
            "divide" => Self::Divide,
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "unknown operationType `{s}`; use Add, Subtract, Multiply or Divide"
                )));
            }
        })
    }
}

/// KubeEdge's nested `dataConverter` (module docs), as it is written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Converter {
    /// First byte taken, 0-based.
    #[serde(default)]
    pub start_index: usize,
    /// Last byte taken, 0-based and inclusive; below `start_index` the bytes
    /// are taken in reverse order.
    #[serde(default)]
    pub end_index: usize,
    /// Bits to shift left (applied instead of `shift_right` when not 0).
    #[serde(default)]
    pub shift_left: u32,
    /// Bits to shift right.
    #[serde(default)]
    pub shift_right: u32,
    /// Arithmetic applied in order after the shift.
    #[serde(default)]
    pub order_of_operations: Vec<RawOperation>,
}

/// One entry of `orderOfOperations` as written.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawOperation {
    /// `Add`, `Subtract`, `Multiply` or `Divide`.
    pub operation_type: OperationType,
    /// The operand.
    pub operation_value: f64,
}

/// How a property's bytes become its value and back.
#[derive(Debug, Clone, PartialEq)]
pub enum Conversion {
    /// `startIndex`/`endIndex`/`dataType`/`byteOrder`/`scale`/`offset`.
    Flat(Flat),
    /// KubeEdge's `dataConverter`.
    Converter(Converter),
}

fn config(msg: impl Into<String>) -> DriverError {
    DriverError::Config(msg.into())
}

fn bad_value(msg: impl Into<String>) -> DriverError {
    DriverError::Value(msg.into())
}

/// Rounds to 15 significant digits (what an `f64` always holds), which
/// removes the binary noise of one arithmetic step (`0.1 + 0.2` → `0.3`).
fn tidy(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return if x == 0.0 { 0.0 } else { x };
    }
    format!("{x:.14e}").parse().unwrap_or(x)
}

/// Bytes in `start..=end`, when `end` is not before `start`.
fn span(start: usize, end: usize) -> Option<usize> {
    end.checked_sub(start).map(|d| d + 1)
}

/// The bytes `lo..=hi` of `value`, or an error naming the range.
fn range(value: &[u8], lo: usize, hi: usize) -> DriverResult<&[u8]> {
    value.get(lo..=hi).ok_or_else(|| {
        bad_value(format!(
            "bytes {lo}..={hi} are outside the {}-byte value",
            value.len()
        ))
    })
}

fn uint_of(bytes: &[u8], order: ByteOrder) -> u64 {
    let fold = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
    match order {
        ByteOrder::Big => bytes.iter().fold(0, fold),
        ByteOrder::Little => bytes.iter().rev().fold(0, fold),
    }
}

fn int_of(bytes: &[u8], order: ByteOrder) -> i64 {
    let u = uint_of(bytes, order);
    let bits = 8 * bytes.len() as u32;
    if bits >= 64 || bits == 0 {
        return u as i64;
    }
    // Sign-extend from the range's width.
    let shift = 64 - bits;
    ((u << shift) as i64) >> shift
}

/// The low `width` bytes of `u` (at most 8).
fn bytes_of(u: u64, width: usize, order: ByteOrder) -> Vec<u8> {
    let be = u.to_be_bytes();
    let mut out = be[8usize.saturating_sub(width)..].to_vec();
    if order == ByteOrder::Little {
        out.reverse();
    }
    out
}

/// A float32 as the decimal it prints as (1.8f32 → 1.8, not 1.7999999523).
fn widen(f: f32) -> f64 {
    f.to_string().parse().unwrap_or(f64::from(f))
}

fn number_of(v: &Value, ty: &str) -> DriverResult<f64> {
    match v {
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .ok_or_else(|| bad_value(format!("`{s}` is not a number for {ty}"))),
        other => other
            .as_f64()
            .filter(|f| f.is_finite())
            .ok_or_else(|| bad_value(format!("{other:?} is not a number for {ty}"))),
    }
}

impl Flat {
    /// The data type after [`Flat::prepare`] (`uint` until then).
    pub fn data_type(&self) -> DataType {
        self.data_type.unwrap_or(DataType::Uint)
    }

    /// Resolves the type from the model when `dataType` is absent (STRING →
    /// `string`, BYTES → `bytes`, anything else → `uint` of the range) and
    /// checks the range, type and scale.
    ///
    /// # Errors
    /// [`DriverError::Config`] naming what does not fit.
    pub fn prepare(&mut self, model: Option<PropertyType>) -> DriverResult<()> {
        let ty = match self.data_type {
            Some(t) => t,
            None => match model {
                Some(PropertyType::String | PropertyType::Stream) => DataType::String,
                Some(PropertyType::Bytes) => DataType::Bytes,
                _ => DataType::Uint,
            },
        };
        self.data_type = Some(ty);
        if let Some(end) = self.end {
            if end < self.start {
                return Err(config(format!(
                    "endIndex {end} is before startIndex {}; byte ranges run forward (use byteOrder for little- or big-endian numbers)",
                    self.start
                )));
            }
            let width = end - self.start + 1; // end ≥ start, checked above
            match ty.size() {
                Some(n) if n != width => {
                    return Err(config(format!(
                        "bytes {}..={end} are {width} byte(s), but dataType {ty} takes {n}",
                        self.start
                    )));
                }
                None if matches!(ty, DataType::Int | DataType::Uint) && width > 8 => {
                    return Err(config(format!(
                        "bytes {}..={end} are {width} bytes; dataType {ty} takes 1 to 8",
                        self.start
                    )));
                }
                _ => {}
            }
        }
        if self.scale == Some(0.0) {
            return Err(config("scale must not be 0"));
        }
        if self.scale.is_some_and(|s| !s.is_finite()) || self.offset.is_some_and(|o| !o.is_finite())
        {
            return Err(config("scale and offset must be finite numbers"));
        }
        if !ty.is_number() && (self.scale.is_some() || self.offset.is_some()) {
            return Err(config(format!(
                "scale and offset apply to numbers, not dataType {ty}"
            )));
        }
        Ok(())
    }

    /// The bytes of the property inside `value`.
    fn field<'a>(&self, value: &'a [u8]) -> DriverResult<&'a [u8]> {
        let ty = self.data_type();
        match (self.end, ty.size()) {
            (Some(end), _) => range(value, self.start, end),
            (None, Some(n)) => range(value, self.start, self.start + n - 1),
            (None, None) => {
                let rest = value.get(self.start..).ok_or_else(|| {
                    bad_value(format!(
                        "startIndex {} is outside the {}-byte value",
                        self.start,
                        value.len()
                    ))
                })?;
                if matches!(ty, DataType::Int | DataType::Uint) && !(1..=8).contains(&rest.len()) {
                    return Err(bad_value(format!(
                        "dataType {ty} needs 1 to 8 bytes from byte {}, the value has {}; set endIndex",
                        self.start,
                        rest.len()
                    )));
                }
                Ok(rest)
            }
        }
    }

    fn scaled(&self, raw: f64, raw_decimals: u32) -> Value {
        Value::Float(scale_linear(
            raw,
            raw_decimals,
            self.scale.unwrap_or(1.0),
            self.offset.unwrap_or(0.0),
        ))
    }

    fn decode(&self, value: &[u8]) -> DriverResult<Value> {
        let ty = self.data_type();
        let bytes = self.field(value)?;
        let order = self.byte_order;
        let scaling = self.scale.is_some() || self.offset.is_some();
        Ok(match ty {
            DataType::String => {
                let text = bytes.split(|b| *b == 0).next().unwrap_or_default();
                Value::String(
                    std::str::from_utf8(text)
                        .map_err(|e| bad_value(format!("the text is not UTF-8: {e}")))?
                        .to_owned(),
                )
            }
            DataType::Bytes => Value::Bytes(bytes.to_vec()),
            DataType::Float32 => {
                let b = <[u8; 4]>::try_from(bytes).map_err(|_| {
                    bad_value(format!("float32 needs 4 bytes, not {}", bytes.len()))
                })?;
                let f = match order {
                    ByteOrder::Little => f32::from_le_bytes(b),
                    ByteOrder::Big => f32::from_be_bytes(b),
                };
                if !f.is_finite() {
                    return Err(bad_value(format!("float32 {f} is not a finite number")));
                }
                let x = widen(f);
                if scaling {
                    self.scaled(x, shortest_decimals(x))
                } else {
                    Value::Float(x)
                }
            }
            DataType::Float64 => {
                let b = <[u8; 8]>::try_from(bytes).map_err(|_| {
                    bad_value(format!("float64 needs 8 bytes, not {}", bytes.len()))
                })?;
                let x = match order {
                    ByteOrder::Little => f64::from_le_bytes(b),
                    ByteOrder::Big => f64::from_be_bytes(b),
                };
                if !x.is_finite() {
                    return Err(bad_value(format!("float64 {x} is not a finite number")));
                }
                if scaling {
                    self.scaled(x, shortest_decimals(x))
                } else {
                    Value::Float(x)
                }
            }
            _ if ty.signed() => {
                let i = int_of(bytes, order);
                if scaling {
                    self.scaled(i as f64, 0)
                } else {
                    Value::Int(i)
                }
            }
            _ => {
                let u = uint_of(bytes, order);
                match i64::try_from(u) {
                    Ok(i) if !scaling => Value::Int(i),
                    // Above i64::MAX: only a float can carry it.
                    _ => {
                        if scaling {
                            self.scaled(u as f64, 0)
                        } else {
                            Value::Float(u as f64)
                        }
                    }
                }
            }
        })
    }

    /// The property's bytes for `v` (no placement).
    fn encode_field(&self, v: &Value, width_hint: Option<usize>) -> DriverResult<Vec<u8>> {
        let ty = self.data_type();
        let order = self.byte_order;
        match ty {
            DataType::String | DataType::Bytes => {
                let mut b = match v {
                    Value::String(s) => s.as_bytes().to_vec(),
                    Value::Bytes(b) => b.clone(),
                    other if ty == DataType::String => other.to_string().into_bytes(),
                    other => return Err(bad_value(format!("{other:?} is not bytes"))),
                };
                // A fixed range is filled up with NUL bytes.
                if let Some(end) = self.end {
                    let width = span(self.start, end).unwrap_or(0);
                    if b.len() > width {
                        return Err(bad_value(format!(
                            "{} bytes do not fit bytes {}..={end}",
                            b.len(),
                            self.start
                        )));
                    }
                    b.resize(width, 0);
                }
                Ok(b)
            }
            DataType::Float32 | DataType::Float64 => {
                let x = self.unscale(number_of(v, ty.name())?);
                Ok(match (ty, order) {
                    (DataType::Float32, _) if (x as f32).is_infinite() => {
                        return Err(bad_value(format!("{x} is out of range for float32")));
                    }
                    (DataType::Float32, ByteOrder::Little) => (x as f32).to_le_bytes().to_vec(),
                    (DataType::Float32, ByteOrder::Big) => (x as f32).to_be_bytes().to_vec(),
                    (_, ByteOrder::Little) => x.to_le_bytes().to_vec(),
                    (_, ByteOrder::Big) => x.to_be_bytes().to_vec(),
                })
            }
            _ => {
                let width = match (ty.size(), self.end, width_hint) {
                    (Some(n), _, _) => n,
                    (None, Some(end), _) => match span(self.start, end) {
                        Some(w) if (1..=8).contains(&w) => w,
                        _ => {
                            return Err(bad_value(format!(
                                "bytes {}..={end} do not make a 1- to 8-byte {ty}",
                                self.start
                            )));
                        }
                    },
                    (None, None, Some(w)) if (1..=8).contains(&w) => w,
                    _ => {
                        return Err(bad_value(format!(
                            "dataType {ty} without endIndex takes its width from the current value, which could not be read; set endIndex or a sized dataType"
                        )));
                    }
                };
                // Exact for integers without scaling; otherwise through f64.
                let raw: i128 = match v {
                    Value::Int(i) if self.scale.is_none() && self.offset.is_none() => {
                        i128::from(*i)
                    }
                    Value::Bool(b) if self.scale.is_none() && self.offset.is_none() => {
                        i128::from(*b)
                    }
                    _ => {
                        let x = self.unscale(number_of(v, ty.name())?).round();
                        if x.abs() > 1.9e19 {
                            return Err(bad_value(format!("{v} is out of range for {ty}")));
                        }
                        x as i128
                    }
                };
                let bits = 8 * width as u32;
                let (min, max) = if ty.signed() {
                    (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
                } else {
                    (0, (1i128 << bits) - 1)
                };
                if raw < min || raw > max {
                    return Err(bad_value(format!(
                        "{v} is out of range for {ty} ({width} byte(s): {min} to {max}{})",
                        if self.scale.is_some() || self.offset.is_some() {
                            " before scale and offset"
                        } else {
                            ""
                        }
                    )));
                }
                // Two's complement of the low `width` bytes.
                Ok(bytes_of(raw as u64, width, order))
            }
        }
    }

    /// `(x − offset) ÷ scale`: the raw value of a scaled number.
    fn unscale(&self, x: f64) -> f64 {
        let raw = (x - self.offset.unwrap_or(0.0)) / self.scale.unwrap_or(1.0);
        if self.data_type().is_integer() {
            raw
        } else {
            tidy(raw)
        }
    }
}

impl Converter {
    /// The operations, checked.
    fn operations(&self) -> DriverResult<Vec<Operation>> {
        self.order_of_operations
            .iter()
            .enumerate()
            .map(|(i, op)| {
                if !op.operation_value.is_finite() {
                    return Err(config(format!(
                        "dataConverter.orderOfOperations[{i}]: operationValue must be a finite number"
                    )));
                }
                if op.operation_type == OperationType::Divide && op.operation_value == 0.0 {
                    return Err(config(format!(
                        "dataConverter.orderOfOperations[{i}]: Divide by 0"
                    )));
                }
                Ok(Operation {
                    kind: op.operation_type,
                    value: op.operation_value,
                })
            })
            .collect()
    }

    /// Checks the range, shifts and operations.
    ///
    /// # Errors
    /// [`DriverError::Config`] naming what is wrong.
    pub fn check(&self) -> DriverResult<()> {
        let width = self.width();
        if width > 8 {
            return Err(config(format!(
                "dataConverter: bytes {}..{} are {width} bytes; at most 8 make one integer",
                self.start_index, self.end_index
            )));
        }
        if self.shift_left != 0 && self.shift_right != 0 {
            return Err(config(
                "dataConverter: give shiftLeft or shiftRight, not both (KubeEdge's mapper would ignore shiftRight)",
            ));
        }
        if self.shift_left >= 64 || self.shift_right >= 64 {
            return Err(config("dataConverter: shifts are below 64 bits"));
        }
        self.operations().map(|_| ())
    }

    fn width(&self) -> usize {
        self.start_index.abs_diff(self.end_index) + 1
    }

    fn lo(&self) -> usize {
        self.start_index.min(self.end_index)
    }

    fn decode(&self, value: &[u8]) -> DriverResult<Value> {
        let hi = self.start_index.max(self.end_index);
        let mut bytes = range(value, self.lo(), hi)?.to_vec();
        if self.start_index > self.end_index {
            bytes.reverse();
        }
        let raw = uint_of(&bytes, ByteOrder::Big);
        let shifted = if self.shift_left != 0 {
            raw.checked_shl(self.shift_left).unwrap_or(0)
        } else if self.shift_right != 0 {
            raw.checked_shr(self.shift_right).unwrap_or(0)
        } else {
            raw
        };
        let ops = self.operations()?;
        if ops.is_empty()
            && let Ok(i) = i64::try_from(shifted)
        {
            return Ok(Value::Int(i));
        }
        let mut x = shifted as f64;
        for op in ops {
            x = tidy(match op.kind {
                OperationType::Add => x + op.value,
                OperationType::Subtract => x - op.value,
                OperationType::Multiply => x * op.value,
                OperationType::Divide => x / op.value,
            });
        }
        Ok(Value::Float(x))
    }

    fn encode_field(&self, v: &Value) -> DriverResult<Vec<u8>> {
        let mut x = number_of(v, "dataConverter")?;
        for op in self.operations()?.iter().rev() {
            x = tidy(match op.kind {
                OperationType::Add => x - op.value,
                OperationType::Subtract => x + op.value,
                OperationType::Multiply if op.value == 0.0 => {
                    return Err(bad_value(
                        "dataConverter multiplies by 0; the value cannot be written back",
                    ));
                }
                OperationType::Multiply => x / op.value,
                OperationType::Divide => x * op.value,
            });
        }
        let r = x.round();
        let width = self.width();
        if width > 8 {
            return Err(bad_value(format!(
                "dataConverter: {width} bytes do not make one integer"
            )));
        }
        let bits = 8 * width as u32;
        let out_of_range = || {
            bad_value(format!(
                "{v} is out of range for dataConverter's {width}-byte unsigned integer"
            ))
        };
        if !(0.0..1.9e19).contains(&r) {
            return Err(out_of_range());
        }
        let shifted = r as u64;
        let raw = if self.shift_left != 0 {
            shifted >> self.shift_left
        } else if self.shift_right != 0 {
            if shifted.leading_zeros() < self.shift_right {
                return Err(out_of_range());
            }
            shifted << self.shift_right
        } else {
            shifted
        };
        if bits < 64 && raw >= 1u64 << bits {
            return Err(out_of_range());
        }
        let mut out = bytes_of(raw, width, ByteOrder::Big);
        if self.start_index > self.end_index {
            out.reverse();
        }
        Ok(out)
    }
}

impl Conversion {
    /// The property's value from the characteristic value.
    ///
    /// # Errors
    /// [`DriverError::Value`] when the range is outside the value or the
    /// bytes are not valid for the type.
    pub fn decode(&self, value: &[u8]) -> DriverResult<Value> {
        match self {
            Self::Flat(f) => f.decode(value),
            Self::Converter(c) => c.decode(value),
        }
    }

    /// Whether [`Conversion::encode`] wants the current characteristic value:
    /// when the property is part of a larger value (`startIndex > 0`, an
    /// explicit `endIndex`, KubeEdge's converter) or takes its width from it
    /// (`int`/`uint` without `endIndex`).
    pub fn wants_current(&self) -> bool {
        match self {
            Self::Flat(f) => {
                f.start > 0
                    || f.end.is_some()
                    || matches!(f.data_type(), DataType::Int | DataType::Uint)
            }
            Self::Converter(_) => true,
        }
    }

    /// The new characteristic value for `v`. With `current` (the value read
    /// just before), the property's bytes replace their range in it;
    /// without, they are written alone, which needs the range to start at
    /// byte 0.
    ///
    /// # Errors
    /// [`DriverError::Value`] when `v` does not fit the type or range.
    pub fn encode(&self, v: &Value, current: Option<&[u8]>) -> DriverResult<Vec<u8>> {
        let (field, at) = match self {
            Self::Flat(f) => {
                let hint = current.map(|c| c.len().saturating_sub(f.start));
                (f.encode_field(v, hint)?, f.start)
            }
            Self::Converter(c) => (c.encode_field(v)?, c.lo()),
        };
        match current {
            None if at == 0 => Ok(field),
            None => Err(bad_value(format!(
                "the property starts at byte {at}; writing it needs the rest of the value, which could not be read"
            ))),
            Some(cur) => {
                let is_text = matches!(
                    self,
                    Self::Flat(Flat {
                        data_type: Some(DataType::String | DataType::Bytes),
                        end: None,
                        ..
                    })
                );
                if is_text {
                    // Text without endIndex is the rest of the value.
                    let mut out = cur.get(..at).unwrap_or(cur).to_vec();
                    out.resize(at, 0);
                    out.extend_from_slice(&field);
                    return Ok(out);
                }
                let end = at + field.len();
                if end > cur.len() {
                    return Err(bad_value(format!(
                        "bytes {at}..={} are outside the {}-byte value",
                        end - 1,
                        cur.len()
                    )));
                }
                let mut out = cur.to_vec();
                out[at..end].copy_from_slice(&field);
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(ty: DataType) -> Flat {
        Flat {
            start: 0,
            end: None,
            data_type: Some(ty),
            byte_order: ByteOrder::Little,
            scale: None,
            offset: None,
        }
    }

    fn conv(start: usize, end: usize) -> Converter {
        Converter {
            start_index: start,
            end_index: end,
            shift_left: 0,
            shift_right: 0,
            order_of_operations: vec![],
        }
    }

    fn op(kind: OperationType, value: f64) -> RawOperation {
        RawOperation {
            operation_type: kind,
            operation_value: value,
        }
    }

    #[test]
    fn sensortag_temperature_is_uint16_le_hundredths() {
        let mut f = flat(DataType::Uint16);
        f.scale = Some(0.01);
        let c = Conversion::Flat(f);
        assert_eq!(c.decode(&[0x66, 0x08]).unwrap(), Value::Float(21.5));
        assert_eq!(c.decode(&[0x2a, 0x09]).unwrap(), Value::Float(23.46));
        assert_eq!(c.encode(&Value::Float(22.5), None).unwrap(), [0xca, 0x08]);
        assert!(!c.wants_current());
    }

    #[test]
    fn every_integer_type_and_byte_order() {
        let bytes = [0xfe, 0xff, 0x01, 0x80, 0x00, 0x00, 0x00, 0x80];
        let cases: &[(DataType, ByteOrder, Value)] = &[
            (DataType::Int8, ByteOrder::Little, Value::Int(-2)),
            (DataType::Uint8, ByteOrder::Little, Value::Int(254)),
            (DataType::Int16, ByteOrder::Little, Value::Int(-2)),
            (DataType::Int16, ByteOrder::Big, Value::Int(-257)),
            (DataType::Uint16, ByteOrder::Little, Value::Int(0xfffe)),
            (DataType::Uint16, ByteOrder::Big, Value::Int(0xfeff)),
            (
                DataType::Int32,
                ByteOrder::Little,
                Value::Int(0x8001_fffe_u32 as i32 as i64),
            ),
            (DataType::Uint32, ByteOrder::Big, Value::Int(0xfeff_0180)),
            (
                DataType::Int64,
                ByteOrder::Little,
                Value::Int(0x8000_0000_8001_fffe_u64 as i64),
            ),
            (DataType::Uint64, ByteOrder::Big, Value::Int(0)),
        ];
        for (ty, order, want) in cases {
            let mut f = flat(*ty);
            f.byte_order = *order;
            let c = Conversion::Flat(f);
            if *ty == DataType::Uint64 {
                // Above i64::MAX: reported as a float.
                assert_eq!(
                    c.decode(&bytes).unwrap(),
                    Value::Float(0xfeff_0180_0000_0080_u64 as f64)
                );
                continue;
            }
            assert_eq!(&c.decode(&bytes).unwrap(), want, "{ty} {order:?}");
            // And back.
            let size = ty.size().unwrap();
            assert_eq!(
                c.encode(want, None).unwrap(),
                bytes[..size],
                "{ty} {order:?}"
            );
        }
    }

    #[test]
    fn width_of_range_types_take_24_bit_values() {
        let mut f = flat(DataType::Uint);
        f.start = 1;
        f.end = Some(3);
        f.prepare(None).unwrap();
        let c = Conversion::Flat(f.clone());
        assert_eq!(
            c.decode(&[9, 0x01, 0x02, 0x03]).unwrap(),
            Value::Int(0x030201)
        );
        f.data_type = Some(DataType::Int);
        let c = Conversion::Flat(f);
        assert_eq!(c.decode(&[9, 0xff, 0xff, 0xff]).unwrap(), Value::Int(-1));
        assert!(c.wants_current());
        assert_eq!(
            c.encode(&Value::Int(-2), Some(&[9, 0, 0, 0, 7])).unwrap(),
            [9, 0xfe, 0xff, 0xff, 7]
        );
        // No endIndex: the whole value, 1 to 8 bytes.
        let c = Conversion::Flat(flat(DataType::Uint));
        assert_eq!(c.decode(&[0x66, 0x08]).unwrap(), Value::Int(2150));
        assert!(
            c.decode(&[0; 9])
                .unwrap_err()
                .to_string()
                .contains("needs 1 to 8 bytes")
        );
        assert_eq!(
            c.encode(&Value::Int(2151), Some(&[0, 0])).unwrap(),
            [0x67, 0x08]
        );
        assert!(c.encode(&Value::Int(1), None).is_err());
    }

    #[test]
    fn floats_strings_and_bytes() {
        let c = Conversion::Flat(flat(DataType::Float32));
        let b = 1.8f32.to_le_bytes();
        assert_eq!(c.decode(&b).unwrap(), Value::Float(1.8));
        assert_eq!(c.encode(&Value::Float(1.8), None).unwrap(), b);
        let mut f = flat(DataType::Float64);
        f.byte_order = ByteOrder::Big;
        let c = Conversion::Flat(f);
        assert_eq!(
            c.decode(&(-2.25f64).to_be_bytes()).unwrap(),
            Value::Float(-2.25)
        );
        let nan = Conversion::Flat(flat(DataType::Float32));
        assert!(nan.decode(&f32::NAN.to_le_bytes()).is_err());

        let mut s = flat(DataType::String);
        s.start = 1;
        let c = Conversion::Flat(s);
        assert_eq!(
            c.decode(b"xhello\0junk").unwrap(),
            Value::String("hello".into())
        );
        assert!(
            c.decode(&[0, 0xff, 0xfe])
                .unwrap_err()
                .to_string()
                .contains("not UTF-8")
        );
        assert_eq!(
            c.encode(&Value::String("hi".into()), Some(b"xold text"))
                .unwrap(),
            b"xhi"
        );
        let c = Conversion::Flat(flat(DataType::Bytes));
        assert_eq!(c.decode(&[1, 2]).unwrap(), Value::Bytes(vec![1, 2]));
        assert_eq!(c.encode(&Value::Bytes(vec![3]), None).unwrap(), [3]);
    }

    #[test]
    fn scale_and_offset_round_trip_and_range_checks() {
        let mut f = flat(DataType::Int16);
        f.scale = Some(0.1);
        f.offset = Some(-40.0);
        let c = Conversion::Flat(f);
        // 625 × 0.1 − 40 = 22.5
        assert_eq!(c.decode(&625i16.to_le_bytes()).unwrap(), Value::Float(22.5));
        assert_eq!(
            c.encode(&Value::Float(22.5), None).unwrap(),
            625i16.to_le_bytes()
        );
        // 4000 °C needs raw 40400: past int16.
        let e = c.encode(&Value::Float(4000.0), None).unwrap_err();
        assert!(e.to_string().contains("out of range for int16"), "{e}");
        assert!(e.to_string().contains("before scale and offset"), "{e}");
        let c = Conversion::Flat(flat(DataType::Uint8));
        assert!(c.encode(&Value::Int(-1), None).is_err());
        assert!(c.encode(&Value::Int(256), None).is_err());
        assert_eq!(c.encode(&Value::Bool(true), None).unwrap(), [1]);
        assert!(c.encode(&Value::String("abc".into()), None).is_err());
    }

    #[test]
    fn byte_ranges_outside_the_value_are_value_errors() {
        let mut f = flat(DataType::Uint16);
        f.start = 1;
        let c = Conversion::Flat(f);
        let e = c.decode(&[1, 2]).unwrap_err();
        assert!(matches!(e, DriverError::Value(_)), "{e:?}");
        assert!(
            e.to_string()
                .contains("bytes 1..=2 are outside the 2-byte value"),
            "{e}"
        );
        let e = Conversion::Converter(conv(0, 3))
            .decode(&[1, 2])
            .unwrap_err();
        assert!(e.to_string().contains("bytes 0..=3"), "{e}");
        let mut s = flat(DataType::String);
        s.start = 5;
        assert!(Conversion::Flat(s).decode(&[1]).is_err());
        // Writing part of a value that could not be read.
        let mut f = flat(DataType::Uint8);
        f.start = 1;
        assert!(Conversion::Flat(f).encode(&Value::Int(1), None).is_err());
    }

    #[test]
    fn flat_prepare_errors() {
        let mut f = flat(DataType::Uint16);
        f.end = Some(2);
        let e = f.prepare(None).unwrap_err().to_string();
        assert!(
            e.contains("bytes 0..=2 are 3 byte(s), but dataType uint16 takes 2"),
            "{e}"
        );
        let mut f = flat(DataType::Uint8);
        f.start = 2;
        f.end = Some(1);
        assert!(
            f.prepare(None)
                .unwrap_err()
                .to_string()
                .contains("before startIndex")
        );
        let mut f = flat(DataType::Uint);
        f.end = Some(8);
        assert!(f.prepare(None).unwrap_err().to_string().contains("1 to 8"));
        let mut f = flat(DataType::Uint8);
        f.scale = Some(0.0);
        assert!(
            f.prepare(None)
                .unwrap_err()
                .to_string()
                .contains("scale must not be 0")
        );
        let mut f = flat(DataType::String);
        f.scale = Some(2.0);
        assert!(
            f.prepare(None)
                .unwrap_err()
                .to_string()
                .contains("not dataType string")
        );
        // Defaults from the model.
        let mut f = flat(DataType::Uint);
        f.data_type = None;
        f.prepare(Some(PropertyType::String)).unwrap();
        assert_eq!(f.data_type(), DataType::String);
        f.data_type = None;
        f.prepare(Some(PropertyType::Float)).unwrap();
        assert_eq!(f.data_type(), DataType::Uint);
        let e = "decimal".parse::<DataType>().unwrap_err();
        assert!(e.contains("unknown dataType `decimal`"), "{e}");
    }

    #[test]
    fn kubeedge_converter_range_order_and_shifts() {
        // Forward: big-endian.
        let c = Conversion::Converter(conv(0, 1));
        assert_eq!(c.decode(&[0x66, 0x08]).unwrap(), Value::Int(0x6608));
        // Reverse: little-endian.
        let c = Conversion::Converter(conv(1, 0));
        assert_eq!(c.decode(&[0x66, 0x08]).unwrap(), Value::Int(2150));
        // One byte in the middle (KubeEdge's Xiaomi humidity example).
        let c = Conversion::Converter(conv(2, 2));
        assert_eq!(c.decode(&[1, 2, 55, 4]).unwrap(), Value::Int(55));
        // Shifts, as bit fields.
        let mut s = conv(1, 2);
        s.shift_left = 1;
        assert_eq!(
            Conversion::Converter(s.clone()).decode(&[3, 0, 1]).unwrap(),
            Value::Int(2)
        );
        s.shift_left = 0;
        s.shift_right = 4;
        assert_eq!(
            Conversion::Converter(s.clone())
                .decode(&[0, 0xab, 0xcd])
                .unwrap(),
            Value::Int(0xabc)
        );
        // Writes undo the shift.
        assert_eq!(
            Conversion::Converter(s)
                .encode(&Value::Int(0xabc), Some(&[9, 0, 0]))
                .unwrap(),
            [9, 0xab, 0xc0]
        );
    }

    #[test]
    fn kubeedge_operations_in_order_and_inverted_for_writes() {
        let mut c = conv(1, 0);
        c.order_of_operations = vec![op(OperationType::Multiply, 0.01)];
        let conv1 = Conversion::Converter(c.clone());
        assert_eq!(conv1.decode(&[0x66, 0x08]).unwrap(), Value::Float(21.5));
        assert_eq!(
            conv1.encode(&Value::Float(22.5), Some(&[0, 0])).unwrap(),
            [0xca, 0x08]
        );

        for (kind, value, want) in [
            (OperationType::Add, 0.5, 10.5),
            (OperationType::Subtract, 40.0, -30.0),
            (OperationType::Multiply, 0.1, 1.0),
            (OperationType::Divide, 4.0, 2.5),
        ] {
            let mut c = conv(0, 0);
            c.order_of_operations = vec![op(kind, value)];
            let conv = Conversion::Converter(c);
            assert_eq!(conv.decode(&[10]).unwrap(), Value::Float(want), "{kind:?}");
            assert_eq!(
                conv.encode(&Value::Float(want), None).unwrap(),
                [10],
                "{kind:?}"
            );
        }
        // Order matters: (10 − 2) ÷ 4 = 2, not 10 − 2 ÷ 4.
        let mut c = conv(0, 0);
        c.order_of_operations = vec![
            op(OperationType::Subtract, 2.0),
            op(OperationType::Divide, 4.0),
        ];
        let conv2 = Conversion::Converter(c);
        assert_eq!(conv2.decode(&[10]).unwrap(), Value::Float(2.0));
        assert_eq!(conv2.encode(&Value::Float(2.0), None).unwrap(), [10]);
        // Binary noise is rounded away.
        let mut c = conv(0, 0);
        c.order_of_operations = vec![
            op(OperationType::Multiply, 0.1),
            op(OperationType::Add, 0.2),
        ];
        assert_eq!(
            Conversion::Converter(c).decode(&[1]).unwrap(),
            Value::Float(0.3)
        );
        // Out of range for one byte.
        assert!(conv2.encode(&Value::Float(100.0), None).is_err());
        assert!(conv2.encode(&Value::Float(-5.0), None).is_err());
    }

    #[test]
    fn kubeedge_converter_errors() {
        let mut c = conv(0, 8);
        assert!(c.check().unwrap_err().to_string().contains("at most 8"));
        c = conv(0, 1);
        c.shift_left = 1;
        c.shift_right = 1;
        assert!(c.check().unwrap_err().to_string().contains("not both"));
        c.shift_right = 0;
        c.shift_left = 64;
        assert!(c.check().is_err());
        c.shift_left = 0;
        c.order_of_operations = vec![op(OperationType::Divide, 0.0)];
        assert!(c.check().unwrap_err().to_string().contains("Divide by 0"));
        c.order_of_operations = vec![op(OperationType::Multiply, 0.0)];
        c.check().unwrap();
        assert!(
            Conversion::Converter(c)
                .encode(&Value::Int(1), Some(&[0, 0]))
                .is_err()
        );
        let e = serde_json::from_value::<Converter>(serde_json::json!({
            "orderOfOperations": [{"operationType": "Modulo", "operationValue": 2}]
        }))
        .unwrap_err();
        assert!(
            e.to_string().contains("unknown operationType `Modulo`"),
            "{e}"
        );
        let e =
            serde_json::from_value::<Converter>(serde_json::json!({"startindex": 1})).unwrap_err();
        assert!(e.to_string().contains("unknown field `startindex`"), "{e}");
        // Case-insensitive names, as KubeEdge compares them.
        let c: Converter = serde_json::from_value(serde_json::json!({
            "orderOfOperations": [{"operationType": "MULTIPLY", "operationValue": 2}]
        }))
        .unwrap();
        assert_eq!(
            c.order_of_operations[0].operation_type,
            OperationType::Multiply
        );
    }

    #[test]
    fn unprepared_ranges_are_errors_not_panics() {
        // Public fields can be set without `prepare`; nothing may panic.
        let mut f = flat(DataType::Float32);
        f.end = Some(1);
        let c = Conversion::Flat(f);
        assert!(c.decode(&[0; 8]).is_err());
        let mut f = flat(DataType::Uint);
        f.start = 3;
        f.end = Some(1);
        let c = Conversion::Flat(f);
        assert!(c.decode(&[0; 8]).is_err());
        assert!(c.encode(&Value::Int(1), Some(&[0; 8])).is_err());
        let mut f = flat(DataType::String);
        f.start = 3;
        f.end = Some(1);
        assert!(
            Conversion::Flat(f)
                .encode(&Value::String("x".into()), Some(&[0; 8]))
                .is_err()
        );
        let c = Conversion::Converter(conv(0, 11));
        assert!(c.decode(&[0; 4]).is_err());
        assert!(c.encode(&Value::Int(1), Some(&[0; 12])).is_err());
    }

    #[test]
    fn tidy_only_removes_noise() {
        assert_eq!(tidy(0.1 + 0.2), 0.3);
        assert_eq!(tidy(2150.0 * 0.01), 21.5);
        assert_eq!(tidy(1.0 / 3.0), 0.333333333333333);
        assert_eq!(tidy(123_456_789_012.0), 123_456_789_012.0);
        assert_eq!(tidy(-0.0), 0.0);
        assert!(tidy(f64::NAN).is_nan());
    }
}
