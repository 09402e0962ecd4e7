//! Protocol and visitor configData, as KubeEdge's v1beta1 Modbus examples write them.

use std::time::Duration;

use mapper_sdk::{DriverError, DriverResult, PropertyType};
use serde::{Deserialize, Deserializer};

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Protocol limit of registers per read (function codes 3 and 4).
pub const MAX_REGISTERS: u16 = 125;
/// Protocol limit of bits per read (function codes 1 and 2).
pub const MAX_BITS: u16 = 2000;
/// Default largest gap (registers or bits) merged into one read.
pub const DEFAULT_MAX_GAP: u16 = 16;

/// A device's `spec.protocol.configData`.
///
/// TCP: `ip`, `port` (default 502), `slaveID` (default 1).
/// RTU: `serialPort`, `baudRate` (9600), `dataBits` (8), `parity` (`none`, `even`,
/// `odd`, or `N`/`E`/`O`), `stopBits` (1), `slaveID`.
/// Both: `timeout` (ms per request, default 1000), `maxGap` (registers/bits a
/// merged read may skip, default 16), `maxRegisters` (per read, ≤ 125),
/// `maxBits` (per read, ≤ 2000), `planning` (default true; false reads every
/// property with its own request, as KubeEdge's Go mapper does).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModbusConfig {
    /// TCP host.
    pub ip: Option<String>,
    /// TCP port.
    pub port: Option<u16>,
    /// Serial device path (RTU).
    pub serial_port: Option<String>,
    /// Baud rate (RTU).
    pub baud_rate: Option<u32>,
    /// Data bits, 5–8 (RTU).
    pub data_bits: Option<u8>,
    /// Parity (RTU).
    pub parity: Option<String>,
    /// Stop bits, 1 or 2 (RTU).
    pub stop_bits: Option<u8>,
    /// Unit id (Modbus slave id).
    #[serde(rename = "slaveID", alias = "slaveId", alias = "unitId")]
    pub slave_id: Option<u8>,
    /// Per-request timeout, ms.
    pub timeout: Option<u64>,
    /// Largest gap merged into one read.
    pub max_gap: Option<u16>,
    /// Registers per read.
    pub max_registers: Option<u16>,
    /// Bits per read.
    pub max_bits: Option<u16>,
    /// Whether reads are merged.
    pub planning: Option<bool>,
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parity {
    /// None.
    None,
    /// Even.
    Even,
    /// Odd.
    Odd,
}

/// Where a device is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Modbus TCP.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// Modbus RTU on a serial line.
    Rtu {
        /// Serial device path.
        path: String,
        /// Baud rate.
        baud: u32,
        /// Data bits.
        data_bits: u8,
        /// Parity.
        parity: Parity,
        /// Stop bits.
        stop_bits: u8,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::Rtu { path, baud, .. } => write!(f, "rtu://{path}@{baud}"),
        }
    }
}

/// Read-planning limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Largest gap merged.
    pub max_gap: u16,
    /// Registers per read.
    pub max_registers: u16,
    /// Bits per read.
    pub max_bits: u16,
    /// Merge at all.
    pub enabled: bool,
}

impl ModbusConfig {
    /// The endpoint, or a precise error.
    pub fn endpoint(&self) -> DriverResult<Endpoint> {
        let bad = |m: String| DriverError::Config(m);
        match (&self.ip, &self.serial_port) {
            (Some(_), Some(_)) => Err(bad(
                "give either `ip` (TCP) or `serialPort` (RTU), not both".into(),
            )),
            (None, None) => Err(bad(
                "missing `ip` (Modbus TCP) or `serialPort` (Modbus RTU)".into(),
            )),
            (Some(ip), None) if ip.trim().is_empty() => Err(bad("`ip` is empty".into())),
            (Some(ip), None) => Ok(Endpoint::Tcp {
                host: ip.trim().to_owned(),
                port: self.port.unwrap_or(502),
            }),
            (None, Some(path)) => {
                let parity = match self
                    .parity
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                {
                    None | Some("none" | "n" | "") => Parity::None,
                    Some("even" | "e") => Parity::Even,
                    Some("odd" | "o") => Parity::Odd,
                    Some(other) => {
                        return Err(bad(format!("`parity` `{other}` is not none, even or odd")));
                    }
                };
                let data_bits = self.data_bits.unwrap_or(8);
                if !(5..=8).contains(&data_bits) {
                    return Err(bad(format!("`dataBits` {data_bits} is not 5 to 8")));
                }
                let stop_bits = self.stop_bits.unwrap_or(1);
                if !(1..=2).contains(&stop_bits) {
                    return Err(bad(format!("`stopBits` {stop_bits} is not 1 or 2")));
                }
                Ok(Endpoint::Rtu {
                    path: path.clone(),
                    baud: self.baud_rate.unwrap_or(9600),
                    data_bits,
                    parity,
                    stop_bits,
                })
            }
        }
    }

    /// Unit id (default 1).
    pub fn unit(&self) -> u8 {
        self.slave_id.unwrap_or(1)
    }

    /// Per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
            .filter(|t| *t > 0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
    }

    /// Read-planning limits, clamped to the protocol's.
    pub fn limits(&self) -> PlanLimits {
        PlanLimits {
            max_gap: self.max_gap.unwrap_or(DEFAULT_MAX_GAP),
            max_registers: self
                .max_registers
                .unwrap_or(MAX_REGISTERS)
                .clamp(1, MAX_REGISTERS),
            max_bits: self.max_bits.unwrap_or(MAX_BITS).clamp(1, MAX_BITS),
            enabled: self.planning.unwrap_or(true),
        }
    }
}

/// A Modbus table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Coils: read/write bits (fc 1, 5, 15).
    Coil,
    /// Discrete inputs: read-only bits (fc 2).
    DiscreteInput,
    /// Holding registers: read/write words (fc 3, 6, 16).
    Holding,
    /// Input registers: read-only words (fc 4).
    Input,
}

impl Table {
    /// Bit tables hold single bits; the others 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    /// Whether writes are possible.
    pub fn writable(self) -> bool {
        matches!(self, Table::Coil | Table::Holding)
    }

    /// KubeEdge's name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Coil => "CoilRegister",
            Table::DiscreteInput => "DiscreteInputRegister",
            Table::Holding => "HoldingRegister",
            Table::Input => "InputRegister",
        }
    }
}

impl<'de> Deserialize<'de> for Table {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let k = s.to_ascii_lowercase().replace(['_', '-', ' '], "");
        Ok(match k.trim_end_matches("register").trim_end_matches('s') {
            "coil" => Table::Coil,
            "discreteinput" | "discrete" => Table::DiscreteInput,
            "holding" => Table::Holding,
            "input" => Table::Input,
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "unknown register type `{s}`; use CoilRegister, DiscreteInputRegister, HoldingRegister or InputRegister"
                )));
            }
        })
    }
}

/// How the registers of a property are interpreted (visitor `dataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// Any non-zero register (or a set coil) is true.
    #[serde(alias = "boolean")]
    Bool,
    /// Signed 16-bit.
    Int16,
    /// Unsigned 16-bit.
    Uint16,
    /// Signed 32-bit, two registers.
    Int32,
    /// Unsigned 32-bit, two registers.
    Uint32,
    /// Signed 64-bit, four registers.
    Int64,
    /// Unsigned 64-bit, four registers.
    Uint64,
    /// IEEE 754 single, two registers.
    #[serde(alias = "float")]
    Float32,
    /// IEEE 754 double, four registers.
    #[serde(alias = "double")]
    Float64,
    /// Text of `limit` registers, two bytes each; it ends at the first NUL
    /// byte (bytes after it are not part of it) and trailing spaces are dropped.
    String,
    /// One bit (`bit`: 0 = least significant) of a register.
    Bit,
}

impl DataType {
    /// Registers the type occupies (`String`: none fixed).
    pub fn registers(self) -> Option<u16> {
        Some(match self {
            DataType::Bool | DataType::Int16 | DataType::Uint16 | DataType::Bit => 1,
            DataType::Int32 | DataType::Uint32 | DataType::Float32 => 2,
            DataType::Int64 | DataType::Uint64 | DataType::Float64 => 4,
            DataType::String => return None,
        })
    }
}

/// Text encoding of `string` registers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StringEncoding {
    /// ASCII only (default).
    #[default]
    Ascii,
    /// UTF-8.
    #[serde(alias = "utf-8")]
    Utf8,
}

/// A property's `visitors.configData`.
///
/// | key | meaning |
/// |---|---|
/// | `register` | `CoilRegister`, `DiscreteInputRegister`, `HoldingRegister`, `InputRegister` |
/// | `offset` | protocol address, **0-based** (`mbpoll -r 1` is offset 0) |
/// | `limit` | how many registers (or bits) the value spans |
/// | `scale` | value = raw × scale (+ `valueOffset`), rounded to the decimals of its inputs ([`mapper_sdk::scale_linear`]); writes divide and round |
/// | `isSwap` | swap the two bytes inside each register |
/// | `isRegisterSwap` | reverse the order of the registers (low word first) |
/// | `dataType` | extension: `bool`, `int16`, `uint16`, `int32`, `uint32`, `int64`, `uint64`, `float32`, `float64`, `string`, `bit` |
/// | `bit` | extension: bit number (0–15) for `dataType: bit` |
/// | `valueOffset` | extension: added after `scale` |
/// | `stringEncoding` | extension: `ascii` (default) or `utf8` |
///
/// Without `dataType`, as KubeEdge's Go mapper does: coils and discrete inputs
/// are booleans; for registers the model type and `limit` decide: INT reads
/// `limit` 1/2/4 registers as **unsigned** 16/32/64-bit, FLOAT/DOUBLE reads 2 as
/// float32 and 4 as float64 (1 as uint16), BOOLEAN is "any register non-zero",
/// STRING is `limit` registers of text. Set `dataType` for signed values.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModbusAddress {
    /// Table.
    pub register: Table,
    /// First address, 0-based.
    pub offset: u16,
    /// Registers or bits.
    pub limit: Option<u16>,
    /// Multiplier: value = raw × scale (+ `value_offset`), rounded to the
    /// decimals of raw and scale; must not be 0.
    pub scale: Option<f64>,
    /// Byte swap within registers.
    #[serde(default)]
    pub is_swap: bool,
    /// Word order swap.
    #[serde(default)]
    pub is_register_swap: bool,
    /// Data type (resolved by [`ModbusAddress::prepare`] when absent).
    pub data_type: Option<DataType>,
    /// Bit number for `dataType: bit`.
    pub bit: Option<u8>,
    /// Added after scaling (same unit as the reported value).
    pub value_offset: Option<f64>,
    /// Text encoding.
    pub string_encoding: Option<StringEncoding>,
}

impl ModbusAddress {
    /// The data type after [`Self::prepare`].
    pub fn data_type(&self) -> DataType {
        self.data_type.unwrap_or(DataType::Uint16)
    }

    /// Registers (or bits) one read of this property covers.
    pub fn register_count(&self) -> u16 {
        if self.register.is_bits() {
            return 1;
        }
        self.data_type()
            .registers()
            .unwrap_or_else(|| self.limit.unwrap_or(1))
            .max(1)
    }

    /// Resolves the default data type and checks everything that can be checked
    /// before talking to the device.
    pub fn prepare(&mut self, model: Option<PropertyType>) -> DriverResult<()> {
        let bad = |m: String| Err(DriverError::Config(m));
        if self.register.is_bits() {
            match (self.data_type, self.limit) {
                (None | Some(DataType::Bool), None | Some(1)) => {
                    self.data_type = Some(DataType::Bool)
                }
                (Some(dt), _) if dt != DataType::Bool => {
                    return bad(format!(
                        "{} holds single bits; dataType {dt:?} needs registers",
                        self.register.name()
                    ));
                }
                (_, Some(n)) => {
                    return bad(format!(
                        "{} reads one bit per property; limit {n} is not supported",
                        self.register.name()
                    ));
                }
                _ => {}
            }
        } else {
            let limit = self.limit;
            let dt = match self.data_type {
                Some(dt) => dt,
                None => match (model, limit.unwrap_or(1)) {
                    (Some(PropertyType::Boolean), _) => DataType::Bool,
                    (Some(PropertyType::String | PropertyType::Bytes), _) => DataType::String,
                    (Some(PropertyType::Float | PropertyType::Double), 2) => DataType::Float32,
                    (Some(PropertyType::Float | PropertyType::Double), 4) => DataType::Float64,
                    (_, 1) => DataType::Uint16,
                    (_, 2) => DataType::Uint32,
                    (_, 4) => DataType::Uint64,
                    (_, n) => {
                        return bad(format!(
                            "limit {n} does not fit a number; use 1, 2 or 4, or set dataType"
                        ));
                    }
                },
            };
            match (dt.registers(), limit) {
                (Some(n), Some(l)) if l != n => {
                    return bad(format!(
                        "limit {l} does not fit dataType {dt:?}, which takes {n} register(s)"
                    ));
                }
                (None, None | Some(0)) => {
                    return bad("dataType string needs limit (registers of text)".into());
                }
                (None, Some(l)) if l > MAX_REGISTERS => {
                    return bad(format!(
                        "limit {l} is above the {MAX_REGISTERS} registers one read can return"
                    ));
                }
                _ => {}
            }
            if dt == DataType::Bit && self.bit.unwrap_or(0) > 15 {
                return bad(format!("bit {} is not 0 to 15", self.bit.unwrap_or(0)));
            }
            self.data_type = Some(dt);
        }
        if self.scale == Some(0.0) {
            return bad("scale must not be 0".into());
        }
        let end = u32::from(self.offset) + u32::from(self.register_count());
        if end > 0x1_0000 {
            return bad(format!(
                "offset {} + {} register(s) is past the last address 65535",
                self.offset,
                self.register_count()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn address(v: serde_json::Value, model: Option<PropertyType>) -> DriverResult<ModbusAddress> {
        let mut a: ModbusAddress =
            serde_json::from_value(v).map_err(|e| DriverError::Config(e.to_string()))?;
        a.prepare(model)?;
        Ok(a)
    }

    #[test]
    fn kubeedge_visitor_parses_with_defaults() {
        let a = address(
            json!({"register": "HoldingRegister", "offset": 2, "limit": 1, "scale": 1, "isSwap": true, "isRegisterSwap": true}),
            Some(PropertyType::Int),
        )
        .unwrap();
        assert_eq!(
            (a.register, a.offset, a.data_type(), a.register_count()),
            (Table::Holding, 2, DataType::Uint16, 1)
        );
        let f = address(
            json!({"register": "InputRegister", "offset": 0, "limit": 2}),
            Some(PropertyType::Float),
        )
        .unwrap();
        assert_eq!(f.data_type(), DataType::Float32);
        let c = address(
            json!({"register": "CoilRegister", "offset": 7}),
            Some(PropertyType::Boolean),
        )
        .unwrap();
        assert_eq!(c.data_type(), DataType::Bool);
    }

    #[test]
    fn precise_errors() {
        let e = serde_json::from_value::<ModbusAddress>(
            json!({"register": "MagicRegister", "offset": 1}),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown register type `MagicRegister`"),
            "{e}"
        );
        let e = address(
            json!({"register": "HoldingRegister", "offset": 65535, "dataType": "int32"}),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("past the last address 65535"), "{e}");
        let e = address(
            json!({"register": "HoldingRegister", "offset": 0, "limit": 1, "dataType": "float32"}),
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("limit 1 does not fit dataType Float32"),
            "{e}"
        );
        let e = address(
            json!({"register": "HoldingRegister", "offset": 0, "limit": 3}),
            Some(PropertyType::Int),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("limit 3 does not fit a number"),
            "{e}"
        );
        let e = address(
            json!({"register": "CoilRegister", "offset": 0, "limit": 4}),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("one bit per property"), "{e}");
    }

    #[test]
    fn endpoints() {
        let c: ModbusConfig =
            serde_json::from_value(json!({"ip": "10.0.0.2", "port": 1502, "slaveID": 3})).unwrap();
        assert_eq!(
            c.endpoint().unwrap(),
            Endpoint::Tcp {
                host: "10.0.0.2".into(),
                port: 1502
            }
        );
        assert_eq!(c.unit(), 3);
        let r: ModbusConfig = serde_json::from_value(
            json!({"serialPort": "/dev/ttyS0", "baudRate": 19200, "parity": "E", "stopBits": 1}),
        )
        .unwrap();
        assert!(matches!(
            r.endpoint().unwrap(),
            Endpoint::Rtu {
                baud: 19200,
                parity: Parity::Even,
                ..
            }
        ));
        let none: ModbusConfig = serde_json::from_value(json!({})).unwrap();
        assert!(
            none.endpoint()
                .unwrap_err()
                .to_string()
                .contains("missing `ip`")
        );
        let bad: ModbusConfig =
            serde_json::from_value(json!({"serialPort": "/dev/x", "parity": "mark"})).unwrap();
        assert!(
            bad.endpoint()
                .unwrap_err()
                .to_string()
                .contains("`parity` `mark`")
        );
        assert_eq!(
            ModbusConfig {
                max_registers: Some(500),
                ..Default::default()
            }
            .limits()
            .max_registers,
            125
        );
    }
}
