//! Protocol configData: the serial port and its line settings.

use std::time::Duration;

use serde::Deserialize;

/// Default baud rate.
pub const DEFAULT_BAUD: u32 = 9600;
/// Default answer timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);

/// Parity (`parity`: `none`, `even`, `odd`; also `N`/`E`/`O`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Parity {
    /// No parity bit.
    #[default]
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// Flow control (`flowControl`: `none`, `software` (XON/XOFF), `hardware`
/// (RTS/CTS)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum FlowControl {
    /// None.
    #[default]
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// How a port is driven; every device on one port must give the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LineSettings {
    /// Bits per second.
    pub baud_rate: u32,
    /// Data bits, 5 to 8.
    pub data_bits: u8,
    /// Parity.
    pub parity: Parity,
    /// Stop bits, 1 or 2.
    pub stop_bits: u8,
    /// Flow control.
    pub flow_control: FlowControl,
    /// Silence kept on the line before each request and that ends a frame
    /// (see [`SerialConfig`]); zero: none.
    pub inter_frame_gap: Duration,
}

impl std::fmt::Display for LineSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parity = match self.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        };
        let flow = match self.flow_control {
            FlowControl::None => "none",
            FlowControl::Software => "software",
            FlowControl::Hardware => "hardware",
        };
        write!(
            f,
            "{} {}{parity}{}, flowControl {flow}, interFrameGapMs {}",
            self.baud_rate,
            self.data_bits,
            self.stop_bits,
            self.inter_frame_gap.as_millis()
        )
    }
}

/// A device's `spec.protocol.configData` (keys camelCase; unknown keys are
/// errors naming them):
///
/// | key | meaning | default |
/// |---|---|---|
/// | `serialPort` | device path (KubeEdge's key), e.g. `/dev/ttyUSB0` | required |
/// | `baudRate` | bits per second | 9600 |
/// | `dataBits` | 5 to 8 | 8 |
/// | `parity` | `none`, `even`, `odd` | `none` |
/// | `stopBits` | 1 or 2 | 1 |
/// | `flowControl` | `none`, `software`, `hardware` | `none` |
/// | `interFrameGapMs` | ms of silence before each request is sent (RS-485 turnaround), and that ends a frame: an unfinished frame followed by this much silence is discarded; 0 = neither | 0 |
/// | `timeoutMs` | ms to wait for an answer to a request | 1000 |
///
/// Every device on one `serialPort` must give the same line settings (all
/// keys but `timeoutMs`); the port has one owner.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct SerialConfig {
    /// Device path as given (the pool key: one owner per path).
    pub serial_port: String,
    /// Line settings.
    pub line: LineSettings,
    /// Answer timeout.
    pub timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    serial_port: Option<String>,
    baud_rate: Option<u32>,
    data_bits: Option<u8>,
    parity: Option<String>,
    stop_bits: Option<u8>,
    flow_control: Option<String>,
    inter_frame_gap_ms: Option<u64>,
    timeout_ms: Option<u64>,
}

impl TryFrom<RawConfig> for SerialConfig {
    type Error = String;

    fn try_from(r: RawConfig) -> Result<Self, String> {
        let serial_port = match r.serial_port.as_deref().map(str::trim) {
            None => return Err("missing `serialPort` (the device path, e.g. /dev/ttyUSB0)".into()),
            Some("") => return Err("`serialPort` is empty".into()),
            Some(p) => p.to_owned(),
        };
        let parity = match r.parity.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("none" | "n") => Parity::None,
            Some("even" | "e") => Parity::Even,
            Some("odd" | "o") => Parity::Odd,
            Some(_) => {
                return Err(format!(
                    "`parity` `{}` is not none, even or odd",
                    r.parity.unwrap_or_default()
                ));
            }
        };
        let flow_control = match r
            .flow_control
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("none") => FlowControl::None,
            Some("software" | "xonxoff") => FlowControl::Software,
            Some("hardware" | "rtscts") => FlowControl::Hardware,
            Some(_) => {
                return Err(format!(
                    "`flowControl` `{}` is not none, software or hardware",
                    r.flow_control.unwrap_or_default()
                ));
            }
        };
        let data_bits = r.data_bits.unwrap_or(8);
        if !(5..=8).contains(&data_bits) {
            return Err(format!("`dataBits` {data_bits} is not 5 to 8"));
        }
        let stop_bits = r.stop_bits.unwrap_or(1);
        if !(1..=2).contains(&stop_bits) {
            return Err(format!("`stopBits` {stop_bits} is not 1 or 2"));
        }
        let baud_rate = r.baud_rate.unwrap_or(DEFAULT_BAUD);
        if baud_rate == 0 {
            return Err("`baudRate` 0 is not a baud rate".into());
        }
        let timeout = match r.timeout_ms {
            None => DEFAULT_TIMEOUT,
            Some(0) => return Err("`timeoutMs` must be above 0".into()),
            Some(ms) => Duration::from_millis(ms),
        };
        Ok(Self {
            serial_port,
            line: LineSettings {
                baud_rate,
                data_bits,
                parity,
                stop_bits,
                flow_control,
                inter_frame_gap: Duration::from_millis(r.inter_frame_gap_ms.unwrap_or(0)),
            },
            timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: serde_json::Value) -> Result<SerialConfig, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_every_key() {
        let c = cfg(json!({"serialPort": "/dev/ttyUSB0"})).unwrap();
        assert_eq!(c.serial_port, "/dev/ttyUSB0");
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(
            c.line.to_string(),
            "9600 8N1, flowControl none, interFrameGapMs 0"
        );
        let c = cfg(json!({
            "serialPort": "/dev/ttyS1", "baudRate": 19200, "dataBits": 7, "parity": "even",
            "stopBits": 2, "flowControl": "hardware", "interFrameGapMs": 5, "timeoutMs": 250
        }))
        .unwrap();
        assert_eq!(
            c.line.to_string(),
            "19200 7E2, flowControl hardware, interFrameGapMs 5"
        );
        assert_eq!(c.timeout, Duration::from_millis(250));
    }

    #[test]
    fn bad_keys_are_named() {
        let e = cfg(json!({"serialPort": "/dev/x", "baudrate": 9600})).unwrap_err();
        assert!(e.contains("unknown field `baudrate`"), "{e}");
        let e = cfg(json!({"baudRate": 9600})).unwrap_err();
        assert!(e.contains("missing `serialPort`"), "{e}");
        let e = cfg(json!({"serialPort": "/dev/x", "dataBits": 9})).unwrap_err();
        assert!(e.contains("`dataBits` 9 is not 5 to 8"), "{e}");
        let e = cfg(json!({"serialPort": "/dev/x", "stopBits": 3})).unwrap_err();
        assert!(e.contains("`stopBits` 3"), "{e}");
        let e = cfg(json!({"serialPort": "/dev/x", "parity": "mark"})).unwrap_err();
        assert!(e.contains("`parity` `mark`"), "{e}");
        let e = cfg(json!({"serialPort": "/dev/x", "flowControl": "dtr"})).unwrap_err();
        assert!(e.contains("`flowControl` `dtr`"), "{e}");
        let e = cfg(json!({"serialPort": "/dev/x", "timeoutMs": 0})).unwrap_err();
        assert!(e.contains("`timeoutMs`"), "{e}");
        let e = cfg(json!({"serialPort": " "})).unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }
}
