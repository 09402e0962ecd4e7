//! Simulator configuration (YAML).
//!
//! ```yaml
//! devices:
//!   - name: boiler              # used in logs and control commands
//!     tcp: 127.0.0.1:5020       # listen address (port 0 picks a free one); or:
//!     # rtu: { path: /tmp/ttyV0, baud: 9600 }
//!     unit: 1                   # unit id; several devices may share one address
//!     size: 10000               # addresses per table; beyond → IllegalDataAddress
//!     holding:
//!       - { address: 0, value: 215 }                       # uint16 by default
//!       - { address: 1, value: -40, dataType: int16 }
//!       - { address: 2, value: 21.5, dataType: float32 }   # 2 registers, high word first
//!       - { address: 10, values: [1, 2, 3, 4] }            # raw words
//!       - { address: 20, pattern: sine, value: 50, amplitude: 10, periodMs: 10000 }
//!       - { address: 21, pattern: counter, step: 1, periodMs: 1000, max: 65535 }
//!     input: [ ... ]            # same form
//!     coils: [ { address: 0, value: true } ]
//!     discreteInputs: [ ... ]
//!     missing:                  # addresses the unit lacks (holes in its map)
//!       holding: [11175, [200, 299]]   # an address, or [first, last] inclusive
//!       coils: [3]
//!     faults: { latencyMs: 0, silent: false, exception: null }
//! ```

use serde::Deserialize;

/// The whole simulator.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Simulated devices.
    pub devices: Vec<DeviceConfig>,
}

/// An RTU line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtuConfig {
    /// Serial device (e.g. one end of a socat PTY pair).
    pub path: String,
    /// Baud rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
}

fn default_baud() -> u32 {
    9600
}

/// One simulated unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceConfig {
    /// Name.
    pub name: String,
    /// TCP listen address.
    #[serde(default)]
    pub tcp: Option<String>,
    /// RTU line.
    #[serde(default)]
    pub rtu: Option<RtuConfig>,
    /// Unit id.
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// Addresses per table.
    #[serde(default = "default_size")]
    pub size: u16,
    /// Coils.
    #[serde(default)]
    pub coils: Vec<Point>,
    /// Discrete inputs.
    #[serde(default)]
    pub discrete_inputs: Vec<Point>,
    /// Holding registers.
    #[serde(default)]
    pub holding: Vec<Point>,
    /// Input registers.
    #[serde(default)]
    pub input: Vec<Point>,
    /// Addresses the unit lacks.
    #[serde(default)]
    pub missing: Missing,
    /// Faults from the start.
    #[serde(default)]
    pub faults: Faults,
}

/// Addresses a unit lacks, per table, as devices with holes in their map do:
/// any request touching one (a read spanning it, or a write) is answered with
/// exception 02 (IllegalDataAddress). Addresses at or past `size` are missing
/// anyway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Missing {
    /// Coils.
    #[serde(default)]
    pub coils: Vec<Addresses>,
    /// Discrete inputs.
    #[serde(default)]
    pub discrete_inputs: Vec<Addresses>,
    /// Holding registers.
    #[serde(default)]
    pub holding: Vec<Addresses>,
    /// Input registers.
    #[serde(default)]
    pub input: Vec<Addresses>,
}

/// One address (`7`) or an inclusive range (`[first, last]`), 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Addresses {
    /// One address.
    One(u16),
    /// `[first, last]`, both included.
    Range([u16; 2]),
}

impl Addresses {
    /// First and last address, both included.
    pub fn bounds(self) -> (u16, u16) {
        match self {
            Addresses::One(a) => (a, a),
            Addresses::Range([a, b]) => (a, b),
        }
    }
}

fn default_unit() -> u8 {
    1
}

fn default_size() -> u16 {
    10_000
}

/// How a point's value is laid out in registers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimType {
    /// One register, unsigned.
    #[default]
    Uint16,
    /// One register, two's complement.
    Int16,
    /// Two registers, high word first.
    Uint32,
    /// Two registers, high word first.
    Int32,
    /// Two registers, IEEE 754, high word first.
    Float32,
}

impl SimType {
    /// Registers taken.
    pub fn registers(self) -> u16 {
        match self {
            SimType::Uint16 | SimType::Int16 => 1,
            _ => 2,
        }
    }

    /// The registers holding `x`.
    pub fn encode(self, x: f64) -> Vec<u16> {
        match self {
            SimType::Uint16 => vec![x.round().clamp(0.0, 65535.0) as u16],
            SimType::Int16 => vec![x.round().clamp(-32768.0, 32767.0) as i16 as u16],
            SimType::Uint32 => split(x.round().clamp(0.0, u32::MAX as f64) as u32),
            SimType::Int32 => {
                split(x.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32 as u32)
            }
            SimType::Float32 => split((x as f32).to_bits()),
        }
    }

    /// The value in `words` (as many as [`Self::registers`]).
    pub fn decode(self, words: &[u16]) -> f64 {
        let join = || (u32::from(words[0]) << 16) | u32::from(words[1]);
        match self {
            SimType::Uint16 => f64::from(words[0]),
            SimType::Int16 => f64::from(words[0] as i16),
            SimType::Uint32 => f64::from(join()),
            SimType::Int32 => f64::from(join() as i32),
            SimType::Float32 => f64::from(f32::from_bits(join())),
        }
    }
}

fn split(v: u32) -> Vec<u16> {
    vec![(v >> 16) as u16, v as u16]
}

/// How a point's value changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Pattern {
    /// `value + step` every `periodMs`, wrapping from `max` to `min`.
    Counter,
    /// `min` to `max` over `periodMs`, again and again.
    Ramp,
    /// `value + amplitude·sin(2π·t/periodMs)`.
    Sine,
    /// A random step of at most `step` per read, within `min..=max`.
    RandomWalk,
}

/// One configured point.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Point {
    /// First address, 0-based.
    pub address: u16,
    /// Initial value (number or boolean).
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// Raw words (or bits as 0/1) from `address` on.
    #[serde(default)]
    pub values: Option<Vec<i64>>,
    /// Register layout of `value`.
    #[serde(default)]
    pub data_type: SimType,
    /// Dynamic behaviour.
    #[serde(default)]
    pub pattern: Option<Pattern>,
    /// Lower bound.
    #[serde(default)]
    pub min: Option<f64>,
    /// Upper bound.
    #[serde(default)]
    pub max: Option<f64>,
    /// Counter increment, largest walk step.
    #[serde(default)]
    pub step: Option<f64>,
    /// Period, ms.
    #[serde(default)]
    pub period_ms: Option<u64>,
    /// Sine amplitude.
    #[serde(default)]
    pub amplitude: Option<f64>,
}

/// Faults a unit shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Faults {
    /// Delay before every answer, ms.
    #[serde(default)]
    pub latency_ms: u64,
    /// Never answer.
    #[serde(default)]
    pub silent: bool,
    /// Answer every request with this exception code.
    #[serde(default)]
    pub exception: Option<u8>,
}
