//! A test plugin for the sandbox (not an example): each property's visitor
//! names something a plugin should not be able to do, and reading it tries.
//! An attempt that the sandbox stops is that property's error (`config`,
//! naming what was denied); one that succeeded would read back as text
//! starting with `ALLOWED`, which the tests treat as a failure.
//!
//! Visitor `probe`: `file` (open `path`), `listDir` (`path`), `env` (the
//! variable `name`, and the count of all variables), `wasiSocket` (a
//! `std::net::TcpStream` to `address`), `tcp` (the host's TCP capability to
//! `address`), `panic`, `ok` (reads 1).
//!
//! Two probes exercise the host's capabilities with a peer the test runs:
//! `udp` sends `payload` in one datagram over a socket to `address` and
//! reads the first answer as text; `serial` opens the port at `path`
//! (`baudRate`, default 9600; `dataBits` 8; `parity` `none`; `stopBits` 1),
//! writes `payload` and reads `expect` bytes of answer (default: as many as
//! it wrote) as text. Their host errors (not granted, timeouts, bad
//! settings) are the property's errors as they came.

use std::time::Duration;

use mapper_wasm_guest::serial::{Parity, SerialPort, Settings};
use mapper_wasm_guest::tcp::TcpStream;
use mapper_wasm_guest::udp::UdpSocket;
use mapper_wasm_guest::{Driver, DriverError, DriverResult, Value, export_driver};
use serde::Deserialize;

#[derive(Deserialize)]
struct ProbeConfig {}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum Probe {
    File,
    ListDir,
    Env,
    WasiSocket,
    Tcp,
    Udp,
    Serial,
    Panic,
    Ok,
}

#[derive(Deserialize)]
struct ProbeAddress {
    probe: Probe,
    #[serde(default)]
    path: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    expect: Option<usize>,
    #[serde(default = "default_baud_rate", rename = "baudRate")]
    baud_rate: u32,
    #[serde(default = "default_data_bits", rename = "dataBits")]
    data_bits: u8,
    #[serde(default)]
    parity: ParityName,
    #[serde(default = "default_stop_bits", rename = "stopBits")]
    stop_bits: u8,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ParityName {
    #[default]
    None,
    Odd,
    Even,
}

fn default_baud_rate() -> u32 {
    9600
}

fn default_data_bits() -> u8 {
    8
}

fn default_stop_bits() -> u8 {
    1
}

const WAIT: Duration = Duration::from_millis(1000);

fn text(bytes: Vec<u8>) -> DriverResult<Value> {
    String::from_utf8(bytes)
        .map(Value::Text)
        .map_err(|e| DriverError::protocol(format!("answer is not UTF-8: {e}")))
}

fn udp(at: &ProbeAddress) -> DriverResult<Value> {
    let socket = UdpSocket::open(&at.address, WAIT)?;
    text(socket.exchange(at.payload.as_bytes(), 65536, WAIT)?)
}

fn serial(at: &ProbeAddress) -> DriverResult<Value> {
    let parity = match at.parity {
        ParityName::None => Parity::None,
        ParityName::Odd => Parity::Odd,
        ParityName::Even => Parity::Even,
    };
    let settings = Settings::new(at.baud_rate)
        .data_bits(at.data_bits)
        .parity(parity)
        .stop_bits(at.stop_bits);
    let port = SerialPort::open(&at.path, settings, WAIT)?;
    port.write(at.payload.as_bytes())?;
    text(port.read_exact(at.expect.unwrap_or(at.payload.len()), WAIT)?)
}

struct ProbeDriver;

fn denied(what: String) -> DriverResult<Value> {
    Err(DriverError::config(format!("denied: {what}")))
}

impl Driver for ProbeDriver {
    type Config = ProbeConfig;
    type Address = ProbeAddress;

    fn connect(_: ProbeConfig) -> DriverResult<Self> {
        Ok(ProbeDriver)
    }

    fn read(&mut self, at: &ProbeAddress) -> DriverResult<Value> {
        match at.probe {
            Probe::File => match std::fs::read(&at.path) {
                Ok(b) => Ok(Value::Text(format!(
                    "ALLOWED: read {} bytes of {}",
                    b.len(),
                    at.path
                ))),
                Err(e) => denied(format!("open {}: {e}", at.path)),
            },
            Probe::ListDir => match std::fs::read_dir(&at.path) {
                Ok(d) => Ok(Value::Text(format!(
                    "ALLOWED: {} entries in {}",
                    d.count(),
                    at.path
                ))),
                Err(e) => denied(format!("list {}: {e}", at.path)),
            },
            Probe::Env => {
                let all = std::env::vars().count();
                match std::env::var(&at.name) {
                    Ok(v) => Ok(Value::Text(format!("ALLOWED: {}={v}", at.name))),
                    Err(e) => denied(format!("env {}: {e} ({all} variables visible)", at.name)),
                }
            }
            Probe::WasiSocket => match std::net::TcpStream::connect(at.address.as_str()) {
                Ok(_) => Ok(Value::Text(format!(
                    "ALLOWED: WASI socket to {}",
                    at.address
                ))),
                Err(e) => denied(format!("WASI socket to {}: {e}", at.address)),
            },
            Probe::Tcp => match TcpStream::connect(&at.address, Duration::from_millis(500)) {
                Ok(_) => Ok(Value::Text(format!("ALLOWED: host TCP to {}", at.address))),
                Err(e) => Err(e),
            },
            Probe::Udp => udp(at),
            Probe::Serial => serial(at),
            Probe::Panic => panic!("the probe panics on purpose"),
            Probe::Ok => Ok(Value::Int(1)),
        }
    }

    fn write(&mut self, _: &ProbeAddress, _: Value) -> DriverResult<()> {
        Err(DriverError::value("read-only"))
    }
}

export_driver!(ProbeDriver);
