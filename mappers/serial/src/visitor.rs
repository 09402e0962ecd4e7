//! A property's `visitors.configData`: what to send, how the answer is framed
//! and checked, where the value is in it, and how a value is written.
//!
//! Keys (camelCase; unknown keys are errors naming them):
//!
//! | key | meaning |
//! |---|---|
//! | `request` | bytes sent to ask for the value ([`crate::escape`]: text with `\r \n \t \\ \xNN`, or `hex:01 03 ...`); absent for a value the device sends unasked (streaming) |
//! | `terminator` | frames end with these bytes (escapes as `request`); default `\r\n` |
//! | `length` | frames are exactly this many bytes (instead of a terminator) |
//! | `lengthByte`, `lengthAdjust` | the byte at this 0-based index counts the bytes after it; frame = `lengthByte + 1 + count + lengthAdjust` bytes ([`crate::frame`]) |
//! | `regex` | the value is the text of the one capture group of this regex, searched in the payload |
//! | `start`, `end` | the value is the payload's bytes `start ..< end` (0-based, end exclusive) |
//! | `dataType` | how a byte range is read: `int8`, `uint8`, `int16`, `uint16`, `int32`, `uint32`, `int64`, `uint64`, `float32`, `float64`, `string` (text, the default), `bytes` |
//! | `byteOrder` | `big` (default) or `little`, for numeric byte ranges |
//! | `scale`, `offset` | numbers are reported as `raw × scale + offset` (defaults 1 and 0) |
//! | `checksum` | `xor`, `sum8`, `crc16-modbus` or `lrc`; checked on every frame ([`crate::checksum`]) |
//! | `checksumPosition`, `checksumStart`, `checksumEnd`, `checksumEncoding` | where the checksum is, what it covers, `binary` or `hex` ([`crate::checksum`]) |
//! | `write` | for ReadWrite properties: the bytes sent to write, `{value}` replaced by the value's text |
//! | `ack` | regex the answer to a write must match (else the write is refused); without it nothing is awaited |
//!
//! The **payload** is the frame without its terminator; every index is into
//! it. With neither `regex` nor `start` the whole payload is the value's text.
//! Text is trimmed and read as the model's type: numbers (a leading `+` is
//! fine), booleans (`true`/`false`, `1`/`0`, `on`/`off`, `yes`/`no`), text,
//! or bytes.

use std::sync::Arc;

use mapper_sdk::{PropertyType, Value, parse_value, scale_linear, shortest_decimals};
use regex::bytes::Regex;
use serde::Deserialize;

use crate::checksum::{Checksum, ChecksumEncoding, ChecksumError, ChecksumKind};
use crate::escape;
use crate::frame::{Framing, MAX_FRAME};

/// How the bytes of a range are read (visitor `dataType`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// IEEE 754 single.
    Float32,
    /// IEEE 754 double.
    Float64,
    /// Text, read as the model's type.
    #[default]
    #[serde(alias = "text")]
    String,
    /// The bytes themselves.
    Bytes,
}

impl DataType {
    /// Bytes a numeric type takes; `None` for text and bytes.
    pub fn width(self) -> Option<usize> {
        Some(match self {
            Self::Int8 | Self::Uint8 => 1,
            Self::Int16 | Self::Uint16 => 2,
            Self::Int32 | Self::Uint32 | Self::Float32 => 4,
            Self::Int64 | Self::Uint64 | Self::Float64 => 8,
            Self::String | Self::Bytes => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Int8 => "int8",
            Self::Uint8 => "uint8",
            Self::Int16 => "int16",
            Self::Uint16 => "uint16",
            Self::Int32 => "int32",
            Self::Uint32 => "uint32",
            Self::Int64 => "int64",
            Self::Uint64 => "uint64",
            Self::Float32 => "float32",
            Self::Float64 => "float64",
            Self::String => "string",
            Self::Bytes => "bytes",
        }
    }
}

/// Byte order of numeric byte ranges (visitor `byteOrder`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ByteOrder {
    /// Most significant byte first.
    #[default]
    Big,
    /// Least significant byte first.
    Little,
}

/// Where the value is in a payload.
#[derive(Debug, Clone)]
pub enum Extract {
    /// The whole payload, as text.
    Whole,
    /// The one capture group of a regex, as text.
    Regex(Regex),
    /// Bytes `start ..< end` (0-based); `end: None` runs to the payload's end
    /// (text and bytes only).
    Range {
        /// First byte.
        start: usize,
        /// One past the last byte.
        end: Option<usize>,
        /// How the bytes are read.
        data_type: DataType,
        /// Byte order of numbers.
        order: ByteOrder,
    },
}

/// A write template: literal bytes with `{value}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Bytes(Vec<u8>),
    Value,
}

impl Template {
    /// Parses a template; `{value}` marks where the value goes.
    ///
    /// # Errors
    /// A malformed escape, or `{value}` in a `hex:` template.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with("hex:") {
            if text.contains("{value}") {
                return Err("a `hex:` template cannot hold `{value}`; write the template as text with \\xNN escapes".into());
            }
            return Ok(Self {
                parts: vec![Part::Bytes(escape::parse(text)?)],
            });
        }
        let mut parts = Vec::new();
        for (i, piece) in text.split("{value}").enumerate() {
            if i > 0 {
                parts.push(Part::Value);
            }
            let bytes = escape::parse(piece)?;
            if !bytes.is_empty() {
                parts.push(Part::Bytes(bytes));
            }
        }
        Ok(Self { parts })
    }

    /// The bytes with `value` in place of each `{value}`.
    pub fn render(&self, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.parts {
            match p {
                Part::Bytes(b) => out.extend_from_slice(b),
                Part::Value => out.extend_from_slice(value),
            }
        }
        out
    }
}

/// What a payload gave for a property.
#[derive(Debug, Clone, PartialEq)]
pub enum Extracted {
    /// The value.
    Value(Value),
    /// Not this property's frame (the regex does not match, the frame is too
    /// short for the range): the reason.
    NoMatch(String),
    /// This property's frame, but the value cannot be read (text that is not
    /// a number for a numeric property): the reason.
    Bad(String),
}

/// A prepared visitor: everything parsed and checked once.
#[derive(Debug, Clone)]
pub struct Visitor {
    /// Bytes sent to ask; `None` for a streamed value.
    pub request: Option<Vec<u8>>,
    /// How answers (or streamed frames) are cut.
    pub framing: Framing,
    /// Checked on every frame, when set.
    pub checksum: Option<Checksum>,
    /// Where the value is.
    pub extract: Extract,
    /// Multiplier of numbers.
    pub scale: f64,
    /// Added after `scale`.
    pub offset: f64,
    /// Write template.
    pub write: Option<Template>,
    /// Regex the answer to a write must match.
    pub ack: Option<Regex>,
    /// The model's type of the property, once prepared.
    pub model_type: Option<PropertyType>,
}

/// A property's `visitors.configData` (module docs), checked and prepared.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawAddress")]
pub struct SerialAddress {
    visitor: Arc<Visitor>,
}

impl SerialAddress {
    /// The prepared visitor.
    pub fn visitor(&self) -> &Arc<Visitor> {
        &self.visitor
    }

    /// Records the model's type of the property (how text is read).
    pub fn set_model_type(&mut self, ty: Option<PropertyType>) {
        Arc::make_mut(&mut self.visitor).model_type = ty;
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAddress {
    request: Option<String>,
    terminator: Option<String>,
    length: Option<u32>,
    length_byte: Option<u32>,
    length_adjust: Option<i64>,
    regex: Option<String>,
    start: Option<u32>,
    end: Option<u32>,
    data_type: Option<DataType>,
    byte_order: Option<ByteOrder>,
    scale: Option<f64>,
    offset: Option<f64>,
    checksum: Option<ChecksumKind>,
    checksum_position: Option<i64>,
    checksum_start: Option<i64>,
    checksum_end: Option<i64>,
    checksum_encoding: Option<ChecksumEncoding>,
    write: Option<String>,
    ack: Option<String>,
}

fn compile(key: &str, re: &str) -> Result<Regex, String> {
    Regex::new(re).map_err(|e| format!("`{key}` `{re}` is not a valid regex: {e}"))
}

impl TryFrom<RawAddress> for SerialAddress {
    type Error = String;

    fn try_from(r: RawAddress) -> Result<Self, String> {
        let request = match r.request.as_deref() {
            None => None,
            Some(text) => {
                let bytes = escape::parse(text).map_err(|e| format!("`request`: {e}"))?;
                if bytes.is_empty() {
                    return Err(
                        "`request` is empty; leave it out for a value the device sends unasked"
                            .into(),
                    );
                }
                Some(bytes)
            }
        };
        let framing = framing(&r)?;
        let checksum = checksum(&r)?;
        let extract = extract(&r)?;
        if let (Some(n), Some(c)) = (framing.fixed_len(), &checksum)
            && c.placement(n).is_none()
        {
            return Err(format!(
                "the checksum (position {}, covering {}..{}) does not fit in the {n}-byte frame (`length: {n}`)",
                c.position,
                c.start,
                c.end
                    .map_or_else(|| c.position.to_string(), |e| e.to_string())
            ));
        }
        if let (Some(n), Extract::Range { start, end, .. }) = (framing.fixed_len(), &extract) {
            let last = end.unwrap_or(*start + 1);
            if last > n {
                return Err(format!(
                    "bytes {start}..{last} are outside the {n}-byte frame (`length: {n}`)"
                ));
            }
        }
        let scale = r.scale.unwrap_or(1.0);
        if scale == 0.0 {
            return Err("`scale` 0 would make every value the same; leave it out for 1".into());
        }
        let write = r
            .write
            .as_deref()
            .map(|t| Template::parse(t).map_err(|e| format!("`write`: {e}")))
            .transpose()?;
        if write.as_ref().is_some_and(|t| t.parts.is_empty()) {
            return Err("`write` is empty".into());
        }
        let ack = match (&r.ack, &write) {
            (None, _) => None,
            (Some(_), None) => return Err("`ack` needs a `write` template".into()),
            (Some(a), Some(_)) => Some(compile("ack", a)?),
        };
        Ok(Self {
            visitor: Arc::new(Visitor {
                request,
                framing,
                checksum,
                extract,
                scale,
                offset: r.offset.unwrap_or(0.0),
                write,
                ack,
                model_type: None,
            }),
        })
    }
}

fn framing(r: &RawAddress) -> Result<Framing, String> {
    let given: Vec<&str> = [
        ("terminator", r.terminator.is_some()),
        ("length", r.length.is_some()),
        ("lengthByte", r.length_byte.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| *k)
    .collect();
    if given.len() > 1 {
        return Err(format!("give one framing, not `{}`", given.join("` and `")));
    }
    if r.length_adjust.is_some() && r.length_byte.is_none() {
        return Err("`lengthAdjust` needs `lengthByte`".into());
    }
    let max = u32::try_from(MAX_FRAME).unwrap_or(u32::MAX);
    if let Some(t) = &r.terminator {
        let t = escape::parse(t).map_err(|e| format!("`terminator`: {e}"))?;
        if t.is_empty() {
            return Err("`terminator` is empty".into());
        }
        return Ok(Framing::Terminator(t));
    }
    if let Some(n) = r.length {
        if n == 0 || n > max {
            return Err(format!("`length` {n} is not 1 to {MAX_FRAME}"));
        }
        return Ok(Framing::Length(n as usize));
    }
    if let Some(i) = r.length_byte {
        if i >= max {
            return Err(format!(
                "`lengthByte` {i} is past the longest frame ({MAX_FRAME} bytes)"
            ));
        }
        return Ok(Framing::LengthByte {
            index: i as usize,
            adjust: r.length_adjust.unwrap_or(0),
        });
    }
    Ok(Framing::default())
}

fn checksum(r: &RawAddress) -> Result<Option<Checksum>, String> {
    let Some(kind) = r.checksum else {
        for (k, set) in [
            ("checksumPosition", r.checksum_position.is_some()),
            ("checksumStart", r.checksum_start.is_some()),
            ("checksumEnd", r.checksum_end.is_some()),
            ("checksumEncoding", r.checksum_encoding.is_some()),
        ] {
            if set {
                return Err(format!("`{k}` needs `checksum`"));
            }
        }
        return Ok(None);
    };
    let mut c = Checksum::new(kind, r.checksum_encoding.unwrap_or_default());
    if let Some(p) = r.checksum_position {
        c.position = p;
    }
    c.start = r.checksum_start.unwrap_or(0);
    c.end = r.checksum_end;
    // Indexes of the same sign can be checked now.
    let end = c.end.unwrap_or(c.position);
    if (c.start >= 0) == (end >= 0) && c.start > end {
        return Err(format!(
            "`checksumStart` {} is after the end of the covered bytes ({end})",
            c.start
        ));
    }
    Ok(Some(c))
}

fn extract(r: &RawAddress) -> Result<Extract, String> {
    if r.end.is_some() && r.start.is_none() {
        return Err("`end` needs `start`".into());
    }
    if r.byte_order.is_some() && r.start.is_none() {
        return Err("`byteOrder` applies to byte ranges (`start`/`end`)".into());
    }
    match (&r.regex, r.start) {
        (Some(_), Some(_)) => Err("give `regex` or `start`/`end`, not both".into()),
        (Some(re), None) => {
            if r.data_type.is_some_and(|d| d != DataType::String) {
                return Err(
                    "`dataType` applies to byte ranges (`start`/`end`); a regex captures text"
                        .into(),
                );
            }
            let rx = compile("regex", re)?;
            let groups = rx.captures_len() - 1;
            if groups != 1 {
                return Err(format!(
                    "`regex` `{re}` has {groups} capture groups; it needs exactly one (use (?:...) for grouping)"
                ));
            }
            Ok(Extract::Regex(rx))
        }
        (None, Some(start)) => {
            let start = start as usize;
            let data_type = r.data_type.unwrap_or_default();
            let end = match (data_type.width(), r.end) {
                (Some(w), None) => Some(start + w),
                (Some(w), Some(end)) => {
                    let end = end as usize;
                    if end <= start {
                        return Err(format!(
                            "byte range {start}..{end} is empty (`end` is exclusive)"
                        ));
                    }
                    if end - start != w {
                        return Err(format!(
                            "bytes {start}..{end} are {} bytes; {} needs {w}",
                            end - start,
                            data_type.name()
                        ));
                    }
                    Some(end)
                }
                (None, Some(end)) => {
                    let end = end as usize;
                    if end <= start {
                        return Err(format!(
                            "byte range {start}..{end} is empty (`end` is exclusive)"
                        ));
                    }
                    Some(end)
                }
                (None, None) => None,
            };
            if end.unwrap_or(start) > MAX_FRAME {
                return Err(format!(
                    "byte range {start}..{} is past the longest frame ({MAX_FRAME} bytes)",
                    end.unwrap_or(start)
                ));
            }
            Ok(Extract::Range {
                start,
                end,
                data_type,
                order: r.byte_order.unwrap_or_default(),
            })
        }
        (None, None) => {
            if r.data_type.is_some_and(|d| d != DataType::String) {
                return Err("`dataType` applies to byte ranges: give `start` (and `end`)".into());
            }
            Ok(Extract::Whole)
        }
    }
}

/// Decimals written in a number's text (`+0012.34` → 2); for exponent
/// notation, those of the shortest text of `raw`.
fn text_decimals(text: &str, raw: f64) -> u32 {
    if text.contains(['e', 'E']) {
        return shortest_decimals(raw);
    }
    text.split_once('.').map_or(0, |(_, frac)| {
        u32::try_from(frac.chars().take_while(char::is_ascii_digit).count()).unwrap_or(0)
    })
}

impl Visitor {
    /// Whether the device sends this value unasked.
    pub fn is_streamed(&self) -> bool {
        self.request.is_none()
    }

    fn scaled(&self) -> bool {
        self.scale != 1.0 || self.offset != 0.0
    }

    /// Checks the checksum of a payload (always fine without one).
    ///
    /// # Errors
    /// As [`Checksum::verify`].
    pub fn verify(&self, payload: &[u8]) -> Result<(), ChecksumError> {
        match &self.checksum {
            Some(c) => c.verify(payload),
            None => Ok(()),
        }
    }

    /// Whether a payload is the acknowledgement of a write (no `ack`: any).
    pub fn ack_matches(&self, payload: &[u8]) -> bool {
        self.ack.as_ref().is_none_or(|a| a.is_match(payload))
    }

    /// The value in a payload whose checksum was verified.
    pub fn extract(&self, payload: &[u8]) -> Extracted {
        match &self.extract {
            Extract::Whole => self.text_value(payload),
            Extract::Regex(re) => match re.captures(payload).and_then(|c| c.get(1)) {
                Some(m) => self.text_value(m.as_bytes()),
                None => Extracted::NoMatch(format!("does not match regex `{}`", re.as_str())),
            },
            Extract::Range {
                start,
                end,
                data_type,
                order,
            } => {
                let end = end.unwrap_or(payload.len());
                if end > payload.len() || *start >= end {
                    return Extracted::NoMatch(format!(
                        "{} bytes are too few for bytes {start}..{end}",
                        payload.len()
                    ));
                }
                self.range_value(&payload[*start..end], *data_type, *order)
            }
        }
    }

    fn number(&self, raw: f64, raw_decimals: u32, integer: Option<i64>) -> Value {
        if self.scaled() {
            return Value::Float(scale_linear(raw, raw_decimals, self.scale, self.offset));
        }
        match integer {
            Some(i) => Value::Int(i),
            None => Value::Float(raw),
        }
    }

    fn text_value(&self, bytes: &[u8]) -> Extracted {
        if self.model_type == Some(PropertyType::Bytes) {
            return Extracted::Value(Value::Bytes(bytes.to_vec()));
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Extracted::Bad(format!("`{}` is not UTF-8 text", escape::show(bytes, 64)));
        };
        let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        match self.model_type {
            Some(PropertyType::String | PropertyType::Stream) => {
                Extracted::Value(Value::String(text.to_owned()))
            }
            Some(PropertyType::Boolean) => match parse_value(PropertyType::Boolean, text) {
                Ok(v) => Extracted::Value(v),
                Err(_) => Extracted::Bad(format!("`{text}` is not a boolean")),
            },
            Some(PropertyType::Int | PropertyType::Float | PropertyType::Double) => {
                match self.parse_number(text) {
                    Some(v) => Extracted::Value(v),
                    None => Extracted::Bad(format!("`{text}` is not a number")),
                }
            }
            _ => Extracted::Value(
                self.parse_number(text)
                    .unwrap_or_else(|| Value::String(text.to_owned())),
            ),
        }
    }

    fn parse_number(&self, text: &str) -> Option<Value> {
        let t = text.strip_prefix('+').unwrap_or(text);
        let raw: f64 = t.parse().ok().filter(|f: &f64| f.is_finite())?;
        Some(self.number(raw, text_decimals(t, raw), t.parse::<i64>().ok()))
    }

    fn range_value(&self, bytes: &[u8], dt: DataType, order: ByteOrder) -> Extracted {
        let Some(width) = dt.width() else {
            return match dt {
                DataType::Bytes => Extracted::Value(Value::Bytes(bytes.to_vec())),
                _ => self.text_value(bytes),
            };
        };
        // Checked when the visitor was prepared; a defensive no-match otherwise.
        if bytes.len() != width {
            return Extracted::NoMatch(format!(
                "{} bytes, {} needs {width}",
                bytes.len(),
                dt.name()
            ));
        }
        let mut be = [0u8; 8];
        match order {
            ByteOrder::Big => be[8 - width..].copy_from_slice(bytes),
            ByteOrder::Little => {
                for (i, b) in bytes.iter().rev().enumerate() {
                    be[8 - width + i] = *b;
                }
            }
        }
        let u = u64::from_be_bytes(be);
        let shift = 64 - 8 * width as u32;
        // Sign-extend from the type's width.
        let signed = ((u << shift) as i64) >> shift;
        let v = match dt {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
                self.number(signed as f64, 0, Some(signed))
            }
            DataType::Uint8 | DataType::Uint16 | DataType::Uint32 | DataType::Uint64 => {
                self.number(u as f64, 0, i64::try_from(u).ok())
            }
            DataType::Float32 => {
                let f = f32::from_bits(u as u32);
                if !f.is_finite() {
                    return Extracted::Bad(format!("float32 {f} is not a number"));
                }
                // The float32's shortest text, so 1.8f reads as 1.8.
                let raw: f64 = f.to_string().parse().unwrap_or(f64::from(f));
                self.number(raw, shortest_decimals(raw), None)
            }
            DataType::Float64 => {
                let f = f64::from_bits(u);
                if !f.is_finite() {
                    return Extracted::Bad(format!("float64 {f} is not a number"));
                }
                self.number(f, shortest_decimals(f), None)
            }
            DataType::String | DataType::Bytes => return self.text_value(bytes),
        };
        Extracted::Value(v)
    }

    /// The text a value is written as in place of `{value}`: numbers as
    /// `(value − offset) / scale` in decimal (whole numbers without a point,
    /// INT properties rounded), booleans as `1`/`0`, text and bytes as they
    /// are.
    ///
    /// # Errors
    /// A message when the number is not finite after scaling.
    pub fn value_bytes(&self, v: &Value) -> Result<Vec<u8>, String> {
        let x = match v {
            Value::Bytes(b) => return Ok(b.clone()),
            Value::String(s) => return Ok(s.clone().into_bytes()),
            Value::Bool(b) => return Ok(if *b { b"1".to_vec() } else { b"0".to_vec() }),
            Value::Int(i) if !self.scaled() => return Ok(i.to_string().into_bytes()),
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
        };
        let mut raw = (x - self.offset) / self.scale;
        if !raw.is_finite() {
            return Err(format!("{x} does not scale to a finite number"));
        }
        if self.scaled() {
            // Drop the division's binary noise: 21.5 / 0.1 is 215, not 214.99999999999997.
            raw = round_significant(raw, 12);
        }
        if self.model_type == Some(PropertyType::Int) {
            raw = raw.round();
        }
        Ok(if raw.fract() == 0.0 && raw.abs() < 9.0e15 {
            format!("{}", raw as i64)
        } else {
            format!("{raw}")
        }
        .into_bytes())
    }
}

fn round_significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = digits - 1 - magnitude;
    if !(0..=22).contains(&decimals) {
        return x;
    }
    let p = 10f64.powi(decimals);
    (x * p).round() / p
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn addr(v: serde_json::Value, ty: Option<PropertyType>) -> Result<SerialAddress, String> {
        let mut a: SerialAddress = serde_json::from_value(v).map_err(|e| e.to_string())?;
        a.set_model_type(ty);
        Ok(a)
    }

    fn value(v: serde_json::Value, ty: Option<PropertyType>, payload: &[u8]) -> Extracted {
        addr(v, ty).unwrap().visitor().extract(payload)
    }

    #[test]
    fn regex_extraction_reads_the_models_type() {
        let scale = json!({"request": "W\\r\\n", "regex": "^ST,GS,([+-]?[0-9.]+)kg$"});
        assert_eq!(
            value(
                scale.clone(),
                Some(PropertyType::Float),
                b"ST,GS,+0012.34kg"
            ),
            Extracted::Value(Value::Float(12.34))
        );
        assert_eq!(
            value(
                scale.clone(),
                Some(PropertyType::Float),
                b"ST,GS,-0000.50kg"
            ),
            Extracted::Value(Value::Float(-0.5))
        );
        assert!(matches!(
            value(
                scale.clone(),
                Some(PropertyType::Float),
                b"US,GS,+0012.34lb"
            ),
            Extracted::NoMatch(_)
        ));
        assert!(matches!(
            value(scale, Some(PropertyType::Float), b"ST,GS,1.2.3kg"),
            Extracted::Bad(m) if m.contains("`1.2.3` is not a number")
        ));
        let int = json!({"regex": "T=(\\d+)"});
        assert_eq!(
            value(int.clone(), Some(PropertyType::Int), b"T=0042"),
            Extracted::Value(Value::Int(42))
        );
        assert_eq!(
            value(int, Some(PropertyType::String), b"T=0042"),
            Extracted::Value(Value::String("0042".into()))
        );
        assert_eq!(
            value(
                json!({"regex": "P=(\\w+)"}),
                Some(PropertyType::Boolean),
                b"P=on"
            ),
            Extracted::Value(Value::Bool(true))
        );
        // Unknown model type: a number when it reads as one, else text.
        assert_eq!(
            value(json!({}), None, b" 7.5 "),
            Extracted::Value(Value::Float(7.5))
        );
        assert_eq!(
            value(json!({}), None, b"READY"),
            Extracted::Value(Value::String("READY".into()))
        );
    }

    #[test]
    fn scale_and_offset_keep_the_implied_decimals() {
        let v = json!({"regex": "([0-9]+)", "scale": 0.1, "offset": -40});
        assert_eq!(
            value(v, Some(PropertyType::Float), b"625"),
            Extracted::Value(Value::Float(22.5))
        );
        let v = json!({"regex": "([0-9.]+)", "scale": 0.01});
        match value(v, Some(PropertyType::Float), b"1234.5") {
            Extracted::Value(v) => assert_eq!(v.to_string(), "12.345"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn byte_ranges_every_type_and_order() {
        let frame = [0x01, 0x03, 0x04, 0xFF, 0x38, 0x00, 0x2A, 0x00, 0x00];
        let at = |dt: &str, start: u32, order: &str| {
            value(
                json!({"length": 9, "start": start, "dataType": dt, "byteOrder": order}),
                Some(PropertyType::Int),
                &frame,
            )
        };
        assert_eq!(at("int16", 3, "big"), Extracted::Value(Value::Int(-200)));
        assert_eq!(at("uint16", 3, "big"), Extracted::Value(Value::Int(65336)));
        assert_eq!(
            at("int16", 3, "little"),
            Extracted::Value(Value::Int(0x38FF))
        );
        assert_eq!(at("int8", 3, "big"), Extracted::Value(Value::Int(-1)));
        assert_eq!(at("uint8", 3, "big"), Extracted::Value(Value::Int(255)));
        assert_eq!(
            at("uint32", 3, "big"),
            Extracted::Value(Value::Int(0xFF38_002A))
        );
        assert_eq!(
            at("int32", 3, "big"),
            Extracted::Value(Value::Int(0xFF38_002Au32 as i32 as i64))
        );
        assert_eq!(
            at("int32", 4, "little"),
            Extracted::Value(Value::Int(0x002A_0038))
        );
        let f32_bytes = 21.5f32.to_be_bytes();
        let mut f = vec![0u8; 2];
        f.extend_from_slice(&f32_bytes);
        assert_eq!(
            value(
                json!({"length": 6, "start": 2, "dataType": "float32"}),
                Some(PropertyType::Float),
                &f
            ),
            Extracted::Value(Value::Float(21.5))
        );
        let le = 1.8f32.to_le_bytes();
        match value(
            json!({"start": 0, "dataType": "float32", "byteOrder": "little"}),
            None,
            &le,
        ) {
            Extracted::Value(v) => assert_eq!(v.to_string(), "1.8"),
            other => panic!("{other:?}"),
        }
        let d = (-0.125f64).to_be_bytes();
        assert_eq!(
            value(json!({"start": 0, "dataType": "float64"}), None, &d),
            Extracted::Value(Value::Float(-0.125))
        );
        let big = u64::MAX.to_be_bytes();
        assert_eq!(
            value(json!({"start": 0, "dataType": "uint64"}), None, &big),
            Extracted::Value(Value::Float(u64::MAX as f64))
        );
        assert_eq!(
            value(json!({"start": 0, "dataType": "int64"}), None, &big),
            Extracted::Value(Value::Int(-1))
        );
        // Scaled integers.
        assert_eq!(
            value(
                json!({"start": 0, "dataType": "uint16", "scale": 0.1}),
                None,
                &[0x00, 0xD9]
            ),
            Extracted::Value(Value::Float(21.7))
        );
        // Text and bytes ranges; a range past a short frame is not a match.
        assert_eq!(
            value(
                json!({"start": 6, "end": 14}),
                Some(PropertyType::Float),
                b"ST,GS,+0012.34kg"
            ),
            Extracted::Value(Value::Float(12.34))
        );
        assert_eq!(
            value(json!({"start": 1, "dataType": "bytes"}), None, &[9, 8, 7]),
            Extracted::Value(Value::Bytes(vec![8, 7]))
        );
        assert!(matches!(
            value(
                json!({"start": 6, "end": 14}),
                Some(PropertyType::Float),
                b"ST,GS"
            ),
            Extracted::NoMatch(_)
        ));
    }

    #[test]
    fn bad_visitors_are_precise_config_errors() {
        let err = |v: serde_json::Value| addr(v, None).unwrap_err();
        let e = err(json!({"request": "W\\q"}));
        assert!(e.contains("`request`: unknown escape `\\q`"), "{e}");
        let e = err(json!({"terminator": "\\x0"}));
        assert!(e.contains("`terminator`: escape `\\x`"), "{e}");
        let e = err(json!({"start": 0, "dataType": "int128"}));
        assert!(e.contains("unknown variant `int128`"), "{e}");
        let e = err(json!({"regex": "(a)(b)"}));
        assert!(
            e.contains("has 2 capture groups; it needs exactly one"),
            "{e}"
        );
        let e = err(json!({"regex": "abc"}));
        assert!(e.contains("has 0 capture groups"), "{e}");
        let e = err(json!({"regex": "(unclosed"}));
        assert!(
            e.contains("`regex` `(unclosed` is not a valid regex"),
            "{e}"
        );
        let e = err(json!({"checksum": "crc32"}));
        assert!(e.contains("unknown variant `crc32`"), "{e}");
        let e = err(json!({"length": 6, "start": 4, "dataType": "int32"}));
        assert!(e.contains("bytes 4..8 are outside the 6-byte frame"), "{e}");
        let e = err(json!({"start": 2, "end": 4, "dataType": "int32"}));
        assert!(e.contains("bytes 2..4 are 2 bytes; int32 needs 4"), "{e}");
        let e = err(json!({"start": 4, "end": 4}));
        assert!(e.contains("empty"), "{e}");
        let e = err(json!({"length": 2, "checksum": "crc16-modbus", "checksumStart": 1}));
        assert!(e.contains("does not fit in the 2-byte frame"), "{e}");
        let e = err(json!({"terminator": "\\n", "length": 4}));
        assert!(
            e.contains("give one framing, not `terminator` and `length`"),
            "{e}"
        );
        let e = err(json!({"lengthAdjust": 2}));
        assert!(e.contains("`lengthAdjust` needs `lengthByte`"), "{e}");
        let e = err(json!({"checksumPosition": -1}));
        assert!(e.contains("`checksumPosition` needs `checksum`"), "{e}");
        let e = err(json!({"ack": "OK"}));
        assert!(e.contains("`ack` needs a `write`"), "{e}");
        let e = err(json!({"regex": "(x)", "start": 1}));
        assert!(e.contains("not both"), "{e}");
        let e = err(json!({"regex": "(x)", "dataType": "int16"}));
        assert!(e.contains("a regex captures text"), "{e}");
        let e = err(json!({"request": ""}));
        assert!(e.contains("`request` is empty"), "{e}");
        let e = err(json!({"write": "hex:01 {value}"}));
        assert!(e.contains("cannot hold `{value}`"), "{e}");
        let e = err(json!({"reqest": "W"}));
        assert!(e.contains("unknown field `reqest`"), "{e}");
        let e = err(json!({"length": 0}));
        assert!(e.contains("`length` 0 is not 1 to 4096"), "{e}");
        let e = err(json!({"scale": 0}));
        assert!(e.contains("`scale` 0"), "{e}");
    }

    #[test]
    fn write_templates() {
        let a = addr(
            json!({"regex": "T=(\\d+)", "write": "T{value}\\r\\n", "ack": "^OK$"}),
            Some(PropertyType::Int),
        )
        .unwrap();
        let v = a.visitor();
        let text = v.value_bytes(&Value::Int(42)).unwrap();
        assert_eq!(v.write.as_ref().unwrap().render(&text), b"T42\r\n");
        assert!(v.ack_matches(b"OK"));
        assert!(!v.ack_matches(b"ERR"));
        // Scaled: the raw number goes out, noise dropped.
        let a = addr(
            json!({"write": "S={value}\\r", "scale": 0.1}),
            Some(PropertyType::Float),
        )
        .unwrap();
        assert_eq!(
            a.visitor().value_bytes(&Value::Float(21.5)).unwrap(),
            b"215"
        );
        assert_eq!(
            a.visitor().value_bytes(&Value::Float(21.55)).unwrap(),
            b"215.5"
        );
        let a = addr(json!({"write": "{value}"}), Some(PropertyType::Int)).unwrap();
        assert_eq!(a.visitor().value_bytes(&Value::Float(2.6)).unwrap(), b"3");
        assert_eq!(a.visitor().value_bytes(&Value::Bool(true)).unwrap(), b"1");
        assert_eq!(
            a.visitor()
                .value_bytes(&Value::String("on".into()))
                .unwrap(),
            b"on"
        );
        // Two placeholders, escapes around them.
        let t = Template::parse("\\x02{value},{value}\\x03").unwrap();
        assert_eq!(t.render(b"7"), b"\x027,7\x03");
        assert_eq!(Template::parse("hex:01 06").unwrap().render(b"x"), [1, 6]);
    }
}
