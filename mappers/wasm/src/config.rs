//! The device's `protocol.configData` and the properties' visitor configData,
//! as the host reads them.

use std::collections::BTreeSet;
use std::path::PathBuf;

use mapper_sdk::{DriverError, DriverResult};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value as Json};

/// Default memory cap of one plugin instance (one device), MiB.
pub const DEFAULT_MEMORY_LIMIT_MIB: u32 = 64;
/// Largest memory cap a device may ask for, MiB.
pub const MAX_MEMORY_LIMIT_MIB: u32 = 1024;

/// A device's `protocol.configData`: the host's keys and everything else,
/// which the plugin receives as a JSON object.
///
/// | key | meaning |
/// |---|---|
/// | `plugin` | path of the plugin component (`.wasm`); absolute, or relative to the mapper's working directory |
/// | `sha256` | optional: the plugin file's SHA-256 (64 hex digits); another file is refused |
/// | `grantTcp` | optional: `host:port` addresses the plugin may open TCP connections to, separated by commas or spaces |
/// | `grantUdp` | optional: `host:port` addresses the plugin may open UDP sockets to, separated by commas or spaces |
/// | `grantSerial` | optional: serial device paths the plugin may open (`/dev/ttyUSB0`), separated by commas or spaces |
/// | `memoryLimitMiB` | optional: the instance's memory cap, MiB (default 64, at most 1024) |
///
/// configData is a flat map of scalars (DMI carries nothing nested), hence
/// one text for the list of grants. Every other key goes to the plugin.
#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// The plugin file.
    pub plugin: PathBuf,
    /// The pinned SHA-256 of the plugin file, lower-case hex.
    pub sha256: Option<String>,
    /// What the plugin may do beyond computing.
    pub grants: Grants,
    /// Memory cap of the instance, bytes.
    pub memory_limit: usize,
    /// The rest of configData, for the plugin.
    pub plugin_config: Map<String, Json>,
}

/// Capabilities granted to one device's plugin instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// `host:port` addresses TCP connections may go to, as written
    /// (lower-case).
    pub tcp: BTreeSet<String>,
    /// `host:port` addresses UDP sockets may be connected to, as written
    /// (lower-case).
    pub udp: BTreeSet<String>,
    /// Serial device paths that may be opened, exactly as written.
    pub serial: BTreeSet<String>,
}

/// Items of a grant list: separated by commas or white space.
fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split([',', ' ', '\t', '\n', '\r'])
        .filter(|s| !s.is_empty())
}

/// Parses a list of `host:port` items for the configData key `key`.
fn parse_addresses(key: &str, text: &str) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for item in items(text) {
        let bad = || format!("`{key}` item `{item}` is not host:port");
        let (host, port) = item.rsplit_once(':').ok_or_else(bad)?;
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
        if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad());
        }
        out.insert(item.to_ascii_lowercase());
    }
    Ok(out)
}

fn list(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "none".into()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

impl Grants {
    /// Parses `grantTcp`: `host:port` items separated by commas or white space.
    ///
    /// # Errors
    /// A text naming the item that is not `host:port`.
    pub fn parse_tcp(text: &str) -> Result<BTreeSet<String>, String> {
        parse_addresses("grantTcp", text)
    }

    /// Parses `grantUdp`: `host:port` items separated by commas or white
    /// space, as [`Grants::parse_tcp`].
    ///
    /// # Errors
    /// A text naming the item that is not `host:port`.
    pub fn parse_udp(text: &str) -> Result<BTreeSet<String>, String> {
        parse_addresses("grantUdp", text)
    }

    /// Parses `grantSerial`: absolute device paths separated by commas or
    /// white space (so a path cannot contain either). Paths are kept as
    /// written: they are matched exactly, case included, and not resolved.
    ///
    /// # Errors
    /// A text naming the item that is not an absolute path.
    pub fn parse_serial(text: &str) -> Result<BTreeSet<String>, String> {
        let mut out = BTreeSet::new();
        for item in items(text) {
            if !item.starts_with('/') || item.len() < 2 || item.contains('\0') {
                return Err(format!(
                    "`grantSerial` item `{item}` is not an absolute device path"
                ));
            }
            out.insert(item.to_owned());
        }
        Ok(out)
    }

    /// Whether a TCP connection to `address` is granted.
    pub fn allows_tcp(&self, address: &str) -> bool {
        self.tcp.contains(&address.trim().to_ascii_lowercase())
    }

    /// Whether a UDP socket connected to `address` is granted.
    pub fn allows_udp(&self, address: &str) -> bool {
        self.udp.contains(&address.trim().to_ascii_lowercase())
    }

    /// Whether the serial port at `path` (compared exactly) is granted.
    pub fn allows_serial(&self, path: &str) -> bool {
        self.serial.contains(path)
    }

    /// The granted TCP addresses, for messages (`none` when there are none).
    pub fn tcp_list(&self) -> String {
        list(&self.tcp)
    }

    /// The granted UDP addresses, for messages (`none` when there are none).
    pub fn udp_list(&self) -> String {
        list(&self.udp)
    }

    /// The granted serial paths, for messages (`none` when there are none).
    pub fn serial_list(&self) -> String {
        list(&self.serial)
    }
}

/// Takes the grant list `key` out of configData and parses it with `parse`.
fn take_grant<E: serde::de::Error>(
    map: &mut Map<String, Json>,
    key: &str,
    what: &str,
    parse: fn(&str) -> Result<BTreeSet<String>, String>,
) -> Result<BTreeSet<String>, E> {
    match map.remove(key) {
        None => Ok(BTreeSet::new()),
        Some(Json::String(s)) => parse(&s).map_err(E::custom),
        Some(other) => Err(E::custom(format!(
            "`{key}` must be text ({what}, ...), not {other}"
        ))),
    }
}

impl<'de> Deserialize<'de> for WasmConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = Map::<String, Json>::deserialize(d)?;
        let plugin = match map.remove("plugin") {
            Some(Json::String(p)) if !p.trim().is_empty() => PathBuf::from(p.trim()),
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "`plugin` must be the path of a .wasm file, not {other}"
                )));
            }
            None => {
                return Err(D::Error::custom(
                    "missing `plugin` (path of the .wasm file)",
                ));
            }
        };
        let sha256 = match map.remove("sha256") {
            None => None,
            Some(Json::String(s)) => {
                let s = s.trim().to_ascii_lowercase();
                if s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(D::Error::custom(format!(
                        "`sha256` `{s}` is not 64 hexadecimal digits"
                    )));
                }
                Some(s)
            }
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "`sha256` must be text (64 hexadecimal digits), not {other}"
                )));
            }
        };
        let tcp = take_grant::<D::Error>(&mut map, "grantTcp", "host:port", Grants::parse_tcp)?;
        let udp = take_grant::<D::Error>(&mut map, "grantUdp", "host:port", Grants::parse_udp)?;
        let serial = take_grant::<D::Error>(
            &mut map,
            "grantSerial",
            "/dev/ttyUSB0",
            Grants::parse_serial,
        )?;
        let mib = match map.remove("memoryLimitMiB") {
            None => DEFAULT_MEMORY_LIMIT_MIB,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=u64::from(MAX_MEMORY_LIMIT_MIB)).contains(&n) => n as u32,
                _ => {
                    return Err(D::Error::custom(format!(
                        "`memoryLimitMiB` {v} is not a whole number from 1 to {MAX_MEMORY_LIMIT_MIB}"
                    )));
                }
            },
        };
        Ok(WasmConfig {
            plugin,
            sha256,
            grants: Grants { tcp, udp, serial },
            memory_limit: (mib as usize) << 20,
            plugin_config: map,
        })
    }
}

/// A property's visitor configData, passed to the plugin's `prepare` as JSON
/// text once per instance; the handle it returns is remembered here.
#[derive(Debug, Clone)]
pub struct WasmAddress {
    json: std::sync::Arc<str>,
    /// `(instance serial << 32) | handle` of the last instance that prepared
    /// it; 0 when none did.
    handle: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl PartialEq for WasmAddress {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl Eq for WasmAddress {}

impl WasmAddress {
    /// The visitor configData as a JSON object.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// An address from a visitor configData object.
    pub fn new(visitor: &Map<String, Json>) -> Self {
        Self {
            json: Json::Object(visitor.clone()).to_string().into(),
            handle: Default::default(),
        }
    }

    /// The parts a call needs (it owns them).
    pub(crate) fn parts(&self) -> AddressParts {
        AddressParts {
            json: self.json.clone(),
            handle: self.handle.clone(),
        }
    }
}

/// A [`WasmAddress`] as a call carries it.
pub(crate) struct AddressParts {
    pub(crate) json: std::sync::Arc<str>,
    pub(crate) handle: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<'de> Deserialize<'de> for WasmAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::new(&Map::<String, Json>::deserialize(d)?))
    }
}

/// `DriverError::Config` with `message`.
pub(crate) fn config_error(message: impl Into<String>) -> DriverError {
    DriverError::Config(message.into())
}

/// The plugin's configuration as JSON text.
pub(crate) fn plugin_json(cfg: &WasmConfig) -> DriverResult<String> {
    serde_json::to_string(&cfg.plugin_config).map_err(|e| config_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Json) -> Result<WasmConfig, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn host_keys_are_taken_and_the_rest_passes_through() {
        let c = cfg(json!({
            "plugin": "/p/modbus.wasm", "grantTcp": "127.0.0.1:502, plc.local:1502",
            "ip": "127.0.0.1", "port": 502, "memoryLimitMiB": 16
        }))
        .unwrap();
        assert_eq!(c.plugin, PathBuf::from("/p/modbus.wasm"));
        assert!(c.grants.allows_tcp("127.0.0.1:502"));
        assert!(c.grants.allows_tcp("PLC.local:1502"));
        assert!(!c.grants.allows_tcp("127.0.0.1:503"));
        assert_eq!(c.memory_limit, 16 << 20);
        assert_eq!(plugin_json(&c).unwrap(), r#"{"ip":"127.0.0.1","port":502}"#);
    }

    #[test]
    fn bad_host_keys_are_named() {
        assert!(cfg(json!({})).unwrap_err().contains("missing `plugin`"));
        assert!(
            cfg(json!({"plugin": "x", "sha256": "abc"}))
                .unwrap_err()
                .contains("`sha256`")
        );
        assert!(
            cfg(json!({"plugin": "x", "grantTcp": "nohost"}))
                .unwrap_err()
                .contains("`nohost`")
        );
        assert!(
            cfg(json!({"plugin": "x", "grantTcp": "h:0"}))
                .unwrap_err()
                .contains("`h:0`")
        );
        assert!(
            cfg(json!({"plugin": "x", "memoryLimitMiB": 0}))
                .unwrap_err()
                .contains("memoryLimitMiB")
        );
        assert_eq!(
            cfg(json!({"plugin": "x"})).unwrap().grants.tcp_list(),
            "none"
        );
    }

    #[test]
    fn udp_and_serial_grants_are_parsed_and_matched_exactly() {
        let c = cfg(json!({
            "plugin": "x",
            "grantUdp": "127.0.0.1:5683,  Sensor.local:47808",
            "grantSerial": "/dev/ttyUSB0, /dev/serial/by-id/usb-FTDI-if00\n/dev/ttyS1",
            "baud": 9600
        }))
        .unwrap();
        assert!(c.grants.allows_udp("127.0.0.1:5683"));
        assert!(c.grants.allows_udp("sensor.LOCAL:47808"));
        assert!(!c.grants.allows_udp("127.0.0.1:5684"));
        assert!(
            !c.grants.allows_tcp("127.0.0.1:5683"),
            "a UDP grant is not a TCP grant"
        );
        assert!(c.grants.allows_serial("/dev/ttyUSB0"));
        assert!(c.grants.allows_serial("/dev/serial/by-id/usb-FTDI-if00"));
        assert!(c.grants.allows_serial("/dev/ttyS1"));
        for other in [
            "/dev/ttyusb0",
            "/dev/ttyUSB1",
            "/dev/../dev/ttyUSB0",
            "ttyUSB0",
            "",
        ] {
            assert!(!c.grants.allows_serial(other), "{other}");
        }
        assert_eq!(c.grants.udp_list(), "127.0.0.1:5683, sensor.local:47808");
        assert_eq!(plugin_json(&c).unwrap(), r#"{"baud":9600}"#);
        let none = cfg(json!({"plugin": "x"})).unwrap().grants;
        assert_eq!(
            (none.udp_list(), none.serial_list()),
            ("none".into(), "none".into())
        );
    }

    #[test]
    fn bad_udp_and_serial_grants_are_named() {
        let e = cfg(json!({"plugin": "x", "grantUdp": "10.0.0.1"})).unwrap_err();
        assert!(e.contains("`grantUdp`") && e.contains("`10.0.0.1`"), "{e}");
        let e = cfg(json!({"plugin": "x", "grantUdp": 5683})).unwrap_err();
        assert!(e.contains("`grantUdp` must be text"), "{e}");
        let e = cfg(json!({"plugin": "x", "grantSerial": "ttyUSB0"})).unwrap_err();
        assert!(
            e.contains("`grantSerial`") && e.contains("`ttyUSB0`"),
            "{e}"
        );
        let e = cfg(json!({"plugin": "x", "grantSerial": true})).unwrap_err();
        assert!(e.contains("`grantSerial` must be text"), "{e}");
    }
}
