//! Modbus TCP as a `mapper-wasm` plugin: frames built and parsed by
//! [`rmodbus`], bytes moved by the host's TCP capability (the device's
//! `grants.tcp` must list `ip:port` exactly as configured here).
//!
//! Protocol configData: `ip`, `port` (default 502), `slaveID` (default 1),
//! `timeout` (ms per request, default 1000), `maxGap` (registers a merged read
//! may skip, default 16; `0` reads every property on its own).
//!
//! Visitor configData, the keys of KubeEdge's Modbus mapper (and
//! `mapper-modbus`):
//!
//! | key | meaning |
//! |---|---|
//! | `register` | `CoilRegister`, `DiscreteInputRegister`, `HoldingRegister`, `InputRegister` |
//! | `offset` | protocol address, 0-based |
//! | `limit` | registers the value spans: 1, 2 or 4 (bit tables: 1) |
//! | `scale` | reported value = raw × scale; a write divides and rounds |
//! | `isSwap` | swap the two bytes of every register |
//! | `isRegisterSwap` | reverse the register order (low word first) |
//! | `dataType` | *extension*: `int16`, `uint16`, `int32`, `uint32`, `int64`, `uint64`, `float32`, `float64` |
//!
//! Supported: coils and discrete inputs as booleans (coils writable);
//! holding and input registers as integers of 1, 2 or 4 registers (unsigned
//! big-endian without `dataType`, as KubeEdge reads INT) or floats
//! (`dataType: float32`/`float64`), scaled; holding registers writable (one
//! register with function 6, more with function 16). Not supported: strings,
//! single bits of a register, Modbus RTU. Reads due in the same tick are
//! merged per table into requests of at most 125 registers (2000 bits); a
//! merged request the device refuses is retried property by property.

use std::time::Duration;

use mapper_wasm_guest::tcp::TcpStream;
use mapper_wasm_guest::{DriverError, DriverResult, Value, export_driver};
use rmodbus::ErrorKind;
use rmodbus::client::ModbusRequest;
use serde::Deserialize;

const MAX_REGISTERS: u16 = 125;
const MAX_BITS: u16 = 2000;

/// Protocol configData.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModbusConfig {
    ip: String,
    #[serde(default = "default_port")]
    port: u16,
    #[serde(default = "default_unit", rename = "slaveID", alias = "slaveId")]
    slave_id: u8,
    #[serde(default = "default_timeout")]
    timeout: u64,
    #[serde(default = "default_gap")]
    max_gap: u16,
}

fn default_port() -> u16 {
    502
}
fn default_unit() -> u8 {
    1
}
fn default_timeout() -> u64 {
    1000
}
fn default_gap() -> u16 {
    16
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Table {
    #[serde(rename = "CoilRegister", alias = "Coil", alias = "coil")]
    Coil,
    #[serde(rename = "DiscreteInputRegister", alias = "DiscreteInput")]
    Discrete,
    #[serde(rename = "HoldingRegister", alias = "Holding", alias = "holding")]
    Holding,
    #[serde(rename = "InputRegister", alias = "Input", alias = "input")]
    Input,
}

impl Table {
    fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum DataType {
    Int16,
    Uint16,
    Int32,
    Uint32,
    Int64,
    Uint64,
    Float32,
    Float64,
}

impl DataType {
    fn registers(self) -> u16 {
        match self {
            DataType::Int16 | DataType::Uint16 => 1,
            DataType::Int32 | DataType::Uint32 | DataType::Float32 => 2,
            DataType::Int64 | DataType::Uint64 | DataType::Float64 => 4,
        }
    }
}

/// Visitor configData.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct ModbusAddress {
    register: Table,
    offset: u16,
    #[serde(default)]
    limit: Option<u16>,
    #[serde(default)]
    scale: Option<f64>,
    #[serde(default)]
    is_swap: bool,
    #[serde(default)]
    is_register_swap: bool,
    #[serde(default)]
    data_type: Option<DataType>,
}

impl ModbusAddress {
    /// Registers (or bits) the value spans, checked.
    fn width(&self) -> DriverResult<u16> {
        if self.register.is_bits() {
            return Ok(1);
        }
        let width = match (self.data_type, self.limit) {
            (Some(t), _) => t.registers(),
            (None, Some(n @ (1 | 2 | 4))) => n,
            (None, None) => 1,
            (None, Some(n)) => {
                return Err(DriverError::config(format!(
                    "`limit` {n}: this plugin reads 1, 2 or 4 registers"
                )));
            }
        };
        if u32::from(self.offset) + u32::from(width) > 65536 {
            return Err(DriverError::config("`offset` + `limit` passes 65535"));
        }
        Ok(width)
    }

    fn scale(&self) -> f64 {
        self.scale.filter(|s| *s != 0.0).unwrap_or(1.0)
    }

    /// Registers → value (registers as the device sent them).
    fn decode(&self, words: &[u16]) -> DriverResult<Value> {
        let mut words: Vec<u16> = words.to_vec();
        if self.is_swap {
            for w in &mut words {
                *w = w.swap_bytes();
            }
        }
        if self.is_register_swap {
            words.reverse();
        }
        let raw: u64 = words.iter().fold(0, |acc, w| (acc << 16) | u64::from(*w));
        let (number, decimals) = match self.data_type {
            None | Some(DataType::Uint16 | DataType::Uint32 | DataType::Uint64) => (raw as f64, 0),
            Some(DataType::Int16) => (f64::from(raw as u16 as i16), 0),
            Some(DataType::Int32) => (f64::from(raw as u32 as i32), 0),
            Some(DataType::Int64) => (raw as i64 as f64, 0),
            Some(DataType::Float32) => {
                let f = f32::from_bits(raw as u32);
                (f64::from(f), decimals_f32(f))
            }
            Some(DataType::Float64) => {
                let f = f64::from_bits(raw);
                (f, decimals(f))
            }
        };
        if !number.is_finite() {
            return Err(DriverError::value(format!(
                "registers {words:04x?} are not a finite number"
            )));
        }
        let scale = self.scale();
        let is_float = matches!(self.data_type, Some(DataType::Float32 | DataType::Float64));
        if scale == 1.0 && !is_float {
            return Ok(Value::Int(match self.data_type {
                None | Some(DataType::Uint64) if raw > i64::MAX as u64 => {
                    return Err(DriverError::value(format!(
                        "{raw} does not fit a signed 64-bit INT"
                    )));
                }
                None | Some(DataType::Uint16 | DataType::Uint32 | DataType::Uint64) => raw as i64,
                Some(DataType::Int64) => raw as i64,
                _ => number as i64,
            }));
        }
        let d = decimals + self::decimals(scale);
        Ok(Value::Float(round(number * scale, d)))
    }

    /// Value → registers to write (in the device's order).
    fn encode(&self, value: &Value) -> DriverResult<Vec<u16>> {
        let x = value
            .as_f64()
            .ok_or_else(|| DriverError::value("holding registers take numbers"))?
            / self.scale();
        let width = self.width()?;
        let is_float = matches!(self.data_type, Some(DataType::Float32 | DataType::Float64));
        let raw: u64 = if is_float {
            match self.data_type {
                Some(DataType::Float32) => u64::from((x as f32).to_bits()),
                _ => x.to_bits(),
            }
        } else {
            let r = x.round();
            let signed = matches!(
                self.data_type,
                Some(DataType::Int16 | DataType::Int32 | DataType::Int64)
            );
            let bits = u32::from(width) * 16;
            let (lo, hi) = if signed {
                (
                    -(2f64.powi(bits as i32 - 1)),
                    2f64.powi(bits as i32 - 1) - 1.0,
                )
            } else {
                (0.0, 2f64.powi(bits as i32) - 1.0)
            };
            if !(lo..=hi).contains(&r) {
                return Err(DriverError::value(format!(
                    "{r} does not fit {width} register(s){}",
                    if signed { " (signed)" } else { "" }
                )));
            }
            (r as i64) as u64
        };
        let mut words: Vec<u16> = (0..width)
            .rev()
            .map(|i| (raw >> (16 * u32::from(i))) as u16)
            .collect();
        if self.is_register_swap {
            words.reverse();
        }
        if self.is_swap {
            for w in &mut words {
                *w = w.swap_bytes();
            }
        }
        Ok(words)
    }
}

/// Decimals of the shortest text of `x` (at most 12).
fn decimals(x: f64) -> i32 {
    if !x.is_finite() || x.fract() == 0.0 {
        return 0;
    }
    (1..=12)
        .find(|&d| {
            let p = 10f64.powi(d);
            (x * p).round() / p == x
        })
        .unwrap_or(12)
}

/// As [`decimals`], for a float32 read from the device (1.8f is 1 decimal).
fn decimals_f32(x: f32) -> i32 {
    if !x.is_finite() || x.fract() == 0.0 {
        return 0;
    }
    (1..=9)
        .find(|&d| {
            let p = 10f32.powi(d);
            (x * p).round() / p == x
        })
        .unwrap_or(9)
}

fn round(x: f64, d: i32) -> f64 {
    let d = d.clamp(0, 12);
    let p = 10f64.powi(d);
    let r = (x * p).round() / p;
    if r == 0.0 { 0.0 } else { r }
}

struct Modbus {
    stream: TcpStream,
    unit: u8,
    timeout: Duration,
    max_gap: u16,
    tr_id: u16,
}

fn frame_error(e: ErrorKind) -> DriverError {
    if e.is_modbus_error() {
        let code = match e {
            ErrorKind::IllegalFunction => 1,
            ErrorKind::IllegalDataAddress => 2,
            ErrorKind::IllegalDataValue => 3,
            ErrorKind::SlaveDeviceFailure => 4,
            ErrorKind::Acknowledge => 5,
            ErrorKind::SlaveDeviceBusy => 6,
            ErrorKind::NegativeAcknowledge => 7,
            ErrorKind::MemoryParityError => 8,
            ErrorKind::GatewayPathUnavailable => 10,
            ErrorKind::GatewayTargetFailed => 11,
            _ => 0,
        };
        DriverError::device(Some(code), format!("Modbus exception: {e:?}"))
    } else {
        DriverError::protocol(format!("bad Modbus frame: {e:?}"))
    }
}

/// One request: read `count` registers or bits of `table` from `start`.
#[derive(Debug)]
struct Span {
    table: Table,
    start: u16,
    count: u16,
    /// Indices into the batch.
    members: Vec<usize>,
}

enum Answer {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

impl Modbus {
    fn request(&mut self) -> ModbusRequest {
        self.tr_id = self.tr_id.wrapping_add(1);
        ModbusRequest::new_tcp_udp(self.unit, self.tr_id)
    }

    /// Sends `frame` and returns the whole response frame (MBAP header included).
    fn exchange(&mut self, frame: &[u8]) -> DriverResult<Vec<u8>> {
        self.stream.send(frame)?;
        let mut response = self.stream.recv_exact(6, self.timeout)?;
        let len = usize::from(u16::from_be_bytes([response[4], response[5]]));
        if !(2..=254).contains(&len) {
            return Err(DriverError::protocol(format!("MBAP length {len}")));
        }
        response.extend(self.stream.recv_exact(len, self.timeout)?);
        Ok(response)
    }

    fn read_span(&mut self, table: Table, start: u16, count: u16) -> DriverResult<Answer> {
        let mut req = self.request();
        let mut frame = Vec::new();
        match table {
            Table::Coil => req.generate_get_coils(start, count, &mut frame),
            Table::Discrete => req.generate_get_discretes(start, count, &mut frame),
            Table::Holding => req.generate_get_holdings(start, count, &mut frame),
            Table::Input => req.generate_get_inputs(start, count, &mut frame),
        }
        .map_err(|e| DriverError::config(format!("cannot build the request: {e:?}")))?;
        let response = self.exchange(&frame)?;
        // rmodbus parses a register payload without checking that it is
        // there; an answer shorter than asked is a protocol error.
        req.parse_ok(&response).map_err(frame_error)?;
        if table.is_bits() {
            let mut bits = Vec::new();
            req.parse_bool(&response, &mut bits).map_err(frame_error)?;
            if bits.len() < usize::from(count) {
                return Err(DriverError::protocol("short answer"));
            }
            Ok(Answer::Bits(bits))
        } else {
            if response.len() < 9 + 2 * usize::from(count) {
                return Err(DriverError::protocol("short answer"));
            }
            let mut words = Vec::new();
            req.parse_u16(&response, &mut words).map_err(frame_error)?;
            if words.len() < usize::from(count) {
                return Err(DriverError::protocol("short answer"));
            }
            Ok(Answer::Words(words))
        }
    }

    fn read_one(&mut self, at: &ModbusAddress) -> DriverResult<Value> {
        let width = at.width()?;
        match self.read_span(at.register, at.offset, width)? {
            Answer::Bits(b) => Ok(Value::Boolean(b.first().copied().unwrap_or(false))),
            Answer::Words(w) => at.decode(&w),
        }
    }

    /// Groups the batch into requests: per table, by address, merged across
    /// gaps of up to `max_gap`, within the protocol's size limits.
    fn plan(&self, at: &[&ModbusAddress]) -> (Vec<Span>, Vec<(usize, DriverError)>) {
        let mut bad = Vec::new();
        let mut items: Vec<(Table, u16, u16, usize)> = Vec::new();
        for (i, a) in at.iter().enumerate() {
            match a.width() {
                Ok(w) => items.push((a.register, a.offset, w, i)),
                Err(e) => bad.push((i, e)),
            }
        }
        items.sort();
        let mut spans: Vec<Span> = Vec::new();
        for (table, offset, width, i) in items {
            let limit = if table.is_bits() {
                MAX_BITS
            } else {
                MAX_REGISTERS
            };
            let end = u32::from(offset) + u32::from(width);
            if let Some(s) = spans.last_mut() {
                let s_end = u32::from(s.start) + u32::from(s.count);
                if s.table == table
                    && self.max_gap > 0
                    && u32::from(offset) <= s_end + u32::from(self.max_gap)
                    && end.max(s_end) - u32::from(s.start) <= u32::from(limit)
                {
                    s.count = (end.max(s_end) - u32::from(s.start)) as u16;
                    s.members.push(i);
                    continue;
                }
            }
            spans.push(Span {
                table,
                start: offset,
                count: width,
                members: vec![i],
            });
        }
        (spans, bad)
    }
}

impl mapper_wasm_guest::Driver for Modbus {
    type Config = ModbusConfig;
    type Address = ModbusAddress;

    fn connect(config: ModbusConfig) -> DriverResult<Self> {
        let timeout = Duration::from_millis(config.timeout.max(1));
        let address = format!("{}:{}", config.ip.trim(), config.port);
        let stream = TcpStream::connect(&address, timeout)?;
        Ok(Modbus {
            stream,
            unit: config.slave_id,
            timeout,
            max_gap: config.max_gap,
            tr_id: 0,
        })
    }

    fn read(&mut self, at: &ModbusAddress) -> DriverResult<Value> {
        self.read_one(at)
    }

    fn read_batch(&mut self, at: &[&ModbusAddress]) -> Vec<DriverResult<Value>> {
        let mut out: Vec<Option<DriverResult<Value>>> = at.iter().map(|_| None).collect();
        let (spans, bad) = self.plan(at);
        for (i, e) in bad {
            out[i] = Some(Err(e));
        }
        for span in spans {
            match self.read_span(span.table, span.start, span.count) {
                Ok(answer) => {
                    for &i in &span.members {
                        let a = at[i];
                        let from = usize::from(a.offset - span.start);
                        out[i] = Some(match &answer {
                            Answer::Bits(b) => b
                                .get(from)
                                .map(|b| Value::Boolean(*b))
                                .ok_or_else(|| DriverError::protocol("short answer")),
                            Answer::Words(w) => a
                                .width()
                                .and_then(|n| {
                                    w.get(from..from + usize::from(n))
                                        .ok_or_else(|| DriverError::protocol("short answer"))
                                })
                                .and_then(|words| a.decode(words)),
                        });
                    }
                }
                // The device refused a merged request: ask property by property
                // (one of them, or the gap between, is not served).
                Err(DriverError::Device(_)) if span.members.len() > 1 => {
                    for &i in &span.members {
                        out[i] = Some(self.read_one(at[i]));
                    }
                }
                Err(e) => {
                    let link = matches!(
                        e,
                        DriverError::Transport(_)
                            | DriverError::Timeout(_)
                            | DriverError::Protocol(_)
                    );
                    for &i in &span.members {
                        out[i] = Some(Err(e.clone()));
                    }
                    if link {
                        // The link is gone: the host reconnects with a new instance.
                        break;
                    }
                }
            }
        }
        let last_error = out.iter().flatten().find_map(|r| r.as_ref().err().cloned());
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(last_error
                        .clone()
                        .unwrap_or_else(|| DriverError::protocol("not read")))
                })
            })
            .collect()
    }

    fn write(&mut self, at: &ModbusAddress, value: Value) -> DriverResult<()> {
        let mut req = self.request();
        let mut frame = Vec::new();
        match at.register {
            Table::Coil => {
                let on = value
                    .as_f64()
                    .ok_or_else(|| DriverError::value("a coil takes a boolean"))?
                    != 0.0;
                req.generate_set_coil(at.offset, u8::from(on), &mut frame)
            }
            Table::Holding => {
                let words = at.encode(&value)?;
                if let [w] = words.as_slice() {
                    req.generate_set_holding(at.offset, *w, &mut frame)
                } else {
                    req.generate_set_holdings_bulk(at.offset, &words, &mut frame)
                }
            }
            Table::Discrete | Table::Input => {
                return Err(DriverError::value(format!(
                    "{:?} registers are read-only",
                    at.register
                )));
            }
        }
        .map_err(|e| DriverError::config(format!("cannot build the request: {e:?}")))?;
        let response = self.exchange(&frame)?;
        req.parse_ok(&response).map_err(frame_error)
    }
}

export_driver!(Modbus);

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(json: &str) -> ModbusAddress {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn decodes_like_mapper_modbus() {
        let a = addr(
            r#"{"register":"HoldingRegister","offset":0,"limit":1,"scale":0.1,"dataType":"int16"}"#,
        );
        assert_eq!(a.decode(&[0xFFFF - 9]).unwrap(), Value::Float(-1.0));
        let a = addr(r#"{"register":"InputRegister","offset":0,"limit":2}"#);
        assert_eq!(a.decode(&[1, 2]).unwrap(), Value::Int(65538));
        let a = addr(r#"{"register":"InputRegister","offset":0,"limit":2,"isRegisterSwap":true}"#);
        assert_eq!(a.decode(&[2, 1]).unwrap(), Value::Int(65538));
        let a = addr(r#"{"register":"HoldingRegister","offset":0,"dataType":"float32"}"#);
        let bits = 1.8f32.to_bits();
        assert_eq!(
            a.decode(&[(bits >> 16) as u16, bits as u16]).unwrap(),
            Value::Float(1.8)
        );
    }

    #[test]
    fn encodes_what_it_decodes() {
        let a = addr(
            r#"{"register":"HoldingRegister","offset":0,"limit":2,"scale":0.5,"isSwap":true}"#,
        );
        let w = a.encode(&Value::Float(21.5)).unwrap();
        assert_eq!(a.decode(&w).unwrap(), Value::Float(21.5));
        assert!(a.encode(&Value::Int(-1)).is_err());
    }
}
