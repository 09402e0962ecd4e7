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

use std::time::Duration;

use mapper_wasm_guest::tcp::TcpStream;
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
            Probe::Panic => panic!("the probe panics on purpose"),
            Probe::Ok => Ok(Value::Int(1)),
        }
    }

    fn write(&mut self, _: &ProbeAddress, _: Value) -> DriverResult<()> {
        Err(DriverError::value("read-only"))
    }
}

export_driver!(ProbeDriver);
