//! A mapper-wasm driver plugin. As generated it speaks a small line protocol
//! over TCP, through the host's TCP capability (the device must grant
//! `host:port` in `grantTcp`):
//!
//! ```text
//! READ <register>\n           → <value>\n  or  ERR <reason>\n
//! WRITE <register> <value>\n  → OK\n       or  ERR <reason>\n
//! ```
//!
//! Replace `{{driver_type}}::exchange` and the two parsers with your
//! device's protocol. Build: `cargo build --target wasm32-wasip2 --release`.

use std::time::Duration;

use mapper_wasm_guest::tcp::TcpStream;
use mapper_wasm_guest::{Driver, DriverError, DriverResult, Value, export_driver};
use serde::Deserialize;

/// Protocol configData (besides the host's `plugin`, `sha256`, `grantTcp`,
/// `grantUdp`, `grantSerial`, `memoryLimitMiB`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Device host name or address, as granted.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Per-request timeout, ms (default 1000).
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// A property's visitor configData.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// The device's register name: letters, digits, `_`.
    pub register: String,
}

/// One connected device.
#[derive(Debug)]
pub struct {{driver_type}} {
    stream: TcpStream,
    timeout: Duration,
    pending: Vec<u8>,
}

/// The device's answer to a read: a number or text.
///
/// # Errors
/// `Device` with the device's reason for `ERR ...`.
pub fn parse_value(line: &str) -> DriverResult<Value> {
    if let Some(reason) = line.strip_prefix("ERR ") {
        return Err(DriverError::device(None, reason));
    }
    if let Ok(i) = line.parse::<i64>() {
        return Ok(Value::Int(i));
    }
    match line.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(Value::Float(f)),
        _ => Ok(Value::Text(line.to_owned())),
    }
}

/// The device's answer to a write.
///
/// # Errors
/// `Device` with the device's reason, `Protocol` for anything else.
pub fn parse_ack(line: &str) -> DriverResult<()> {
    match line {
        "OK" => Ok(()),
        _ => match line.strip_prefix("ERR ") {
            Some(reason) => Err(DriverError::device(None, reason)),
            None => Err(DriverError::protocol(format!("unexpected answer `{line}`"))),
        },
    }
}

fn check_register(r: &str) -> DriverResult<&str> {
    if !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(r)
    } else {
        Err(DriverError::config(format!("register `{r}`: letters, digits and _ only")))
    }
}

impl {{driver_type}} {
    /// Sends one request line and returns the answer line.
    fn exchange(&mut self, request: &str) -> DriverResult<String> {
        self.stream.send(format!("{request}\n").as_bytes())?;
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return String::from_utf8(line)
                    .map(|s| s.trim_end().to_owned())
                    .map_err(|_| DriverError::protocol("answer is not UTF-8"));
            }
            let chunk = self.stream.recv(1024, self.timeout)?;
            if chunk.is_empty() {
                return Err(DriverError::transport("the device closed the connection"));
            }
            self.pending.extend_from_slice(&chunk);
        }
    }
}

impl Driver for {{driver_type}} {
    type Config = Config;
    type Address = Address;

    fn connect(config: Config) -> DriverResult<Self> {
        let timeout = Duration::from_millis(config.timeout.unwrap_or(1000).max(1));
        let stream = TcpStream::connect(&format!("{}:{}", config.host, config.port), timeout)?;
        Ok(Self {
            stream,
            timeout,
            pending: Vec::new(),
        })
    }

    fn read(&mut self, at: &Address) -> DriverResult<Value> {
        let line = self.exchange(&format!("READ {}", check_register(&at.register)?))?;
        parse_value(&line)
    }

    fn write(&mut self, at: &Address, value: Value) -> DriverResult<()> {
        let text = match value {
            Value::Boolean(b) => u8::from(b).to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Text(t) if !t.contains(['\n', ' ']) => t,
            _ => return Err(DriverError::value("this device takes numbers and single words")),
        };
        let line = self.exchange(&format!("WRITE {} {text}", check_register(&at.register)?))?;
        parse_ack(&line)
    }
}

export_driver!({{driver_type}});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed() {
        assert_eq!(parse_value("42").ok(), Some(Value::Int(42)));
        assert_eq!(parse_value("21.5").ok(), Some(Value::Float(21.5)));
        assert_eq!(parse_value("idle").ok(), Some(Value::Text("idle".into())));
        assert!(matches!(parse_value("ERR no such register"), Err(DriverError::Device(_))));
        assert!(parse_ack("OK").is_ok());
        assert!(matches!(parse_ack("what"), Err(DriverError::Protocol(_))));
        assert!(check_register("temp_1").is_ok());
        assert!(check_register("a b").is_err());
    }
}
