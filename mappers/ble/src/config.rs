//! Protocol configData: which peripheral, on which adapter, how long to look.

use std::time::Duration;

use btleplug::api::BDAddr;
use mapper_sdk::{DriverError, DriverResult};
use serde::Deserialize;
use uuid::Uuid;

/// Default time to scan for a peripheral BlueZ does not know yet.
pub const DEFAULT_SCAN_TIMEOUT: Duration = Duration::from_millis(5000);
/// Default time for a GATT connection (and service discovery).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(5000);
/// Default interval of the link check while notifications are subscribed.
pub const DEFAULT_LINK_CHECK: Duration = Duration::from_millis(2000);

/// The Bluetooth base UUID that 16- and 32-bit short UUIDs expand into
/// (`0000xxxx-0000-1000-8000-00805f9b34fb`).
const BASE_UUID: u128 = 0x0000_0000_0000_1000_8000_0080_5f9b_34fb;

/// A device's `spec.protocol.configData` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    mac_address: Option<String>,
    name: Option<String>,
    #[serde(alias = "serviceUUID")]
    service_uuid: Option<String>,
    adapter: Option<String>,
    scan_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    link_check_ms: Option<u64>,
}

/// A device's `spec.protocol.configData`, checked.
///
/// | key | meaning | default |
/// |---|---|---|
/// | `macAddress` | KubeEdge's key: the peripheral's address, `11:22:33:44:55:66` | – |
/// | `name` | its advertised local name (exact) | – |
/// | `serviceUuid` | a service UUID it advertises (128-bit or short form) | – |
/// | `adapter` | the adapter, e.g. `hci0` | the first one BlueZ lists |
/// | `scanTimeoutMs` | how long to scan when BlueZ does not know the peripheral yet, ms | 5000 |
/// | `connectTimeoutMs` | how long to wait for the GATT connection and services, ms | 5000 |
/// | `linkCheckMs` | while notifications are subscribed, how often the connection is checked, ms (0: never) | 2000 |
///
/// At least one of `macAddress`, `name`, `serviceUuid` is needed; a peripheral
/// must match every one given. Unknown keys are errors naming them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct BleConfig {
    /// The peripheral's address.
    pub mac_address: Option<BDAddr>,
    /// Its advertised local name.
    pub name: Option<String>,
    /// A service it advertises.
    pub service_uuid: Option<Uuid>,
    /// The adapter (`hci0`); `None`: the first.
    pub adapter: Option<String>,
    /// Scan time.
    pub scan_timeout: Duration,
    /// Connect time.
    pub connect_timeout: Duration,
    /// Link-check interval while subscribed; `None`: off.
    pub link_check: Option<Duration>,
}

impl TryFrom<RawConfig> for BleConfig {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, String> {
        let mac_address = raw
            .mac_address
            .as_deref()
            .map(|m| parse_mac(m).map_err(|e| format!("macAddress: {e}")))
            .transpose()?;
        let service_uuid = raw
            .service_uuid
            .as_deref()
            .map(|u| parse_uuid(u).map_err(|e| format!("serviceUuid: {e}")))
            .transpose()?;
        let name = raw.name.filter(|n| !n.is_empty());
        if mac_address.is_none() && name.is_none() && service_uuid.is_none() {
            return Err(
                "give macAddress (KubeEdge's key), name or serviceUuid to find the peripheral"
                    .into(),
            );
        }
        let ms = |v: Option<u64>, default: Duration, key: &str| match v {
            Some(0) => Err(format!("{key} must be above 0")),
            Some(ms) => Ok(Duration::from_millis(ms)),
            None => Ok(default),
        };
        Ok(Self {
            mac_address,
            name,
            service_uuid,
            adapter: raw.adapter.filter(|a| !a.is_empty()),
            scan_timeout: ms(raw.scan_timeout_ms, DEFAULT_SCAN_TIMEOUT, "scanTimeoutMs")?,
            connect_timeout: ms(
                raw.connect_timeout_ms,
                DEFAULT_CONNECT_TIMEOUT,
                "connectTimeoutMs",
            )?,
            link_check: match raw.link_check_ms {
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
                None => Some(DEFAULT_LINK_CHECK),
            },
        })
    }
}

impl BleConfig {
    /// What the peripheral is found by, for messages.
    pub fn target(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.mac_address {
            parts.push(format!("address {m}"));
        }
        if let Some(n) = &self.name {
            parts.push(format!("name `{n}`"));
        }
        if let Some(u) = self.service_uuid {
            parts.push(format!("service {u}"));
        }
        parts.join(", ")
    }
}

/// Parses a Bluetooth address: six hex pairs separated by `:` or `-`, or none.
///
/// # Errors
/// A message quoting the text.
pub fn parse_mac(text: &str) -> Result<BDAddr, String> {
    let bad = || format!("`{text}` is not a MAC address (like 11:22:33:44:55:66)");
    let t = text.trim();
    let parts: Vec<&str> = if t.contains([':', '-']) {
        t.split([':', '-']).collect()
    } else if t.len() == 12 && t.is_ascii() {
        (0..6).map(|i| &t[2 * i..2 * i + 2]).collect()
    } else {
        return Err(bad());
    };
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(BDAddr::from(out))
}

/// Parses a UUID: 128-bit (`00002a6e-0000-1000-8000-00805f9b34fb`, with or
/// without dashes) or a 16/32-bit short form (`2a6e`, `0x2A6E`) expanded
/// with the Bluetooth base UUID.
///
/// # Errors
/// A message quoting the text.
pub fn parse_uuid(text: &str) -> Result<Uuid, String> {
    let t = text.trim();
    let short = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if (short.len() == 4 || short.len() == 8) && short.chars().all(|c| c.is_ascii_hexdigit()) {
        let n = u32::from_str_radix(short, 16).map_err(|e| e.to_string())?;
        return Ok(Uuid::from_u128(BASE_UUID | (u128::from(n) << 96)));
    }
    Uuid::parse_str(t).map_err(|_| {
        format!("`{text}` is not a UUID (128-bit, or a 16/32-bit short form like 2a6e)")
    })
}

/// Decodes configData JSON into a [`BleConfig`] (for tools and tests; the SDK
/// does the same with key paths in the message).
///
/// # Errors
/// [`DriverError::Config`] naming the key.
pub fn config_from_json(json: serde_json::Value) -> DriverResult<BleConfig> {
    serde_json::from_value(json).map_err(|e| DriverError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubeedge_mac_address_and_defaults() {
        let c = config_from_json(json!({"macAddress": "11:22:33:44:55:66"})).unwrap();
        assert_eq!(
            c.mac_address,
            Some(BDAddr::from([0x11, 0x22, 0x33, 0x44, 0x55, 0x66]))
        );
        assert_eq!(c.scan_timeout, DEFAULT_SCAN_TIMEOUT);
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.link_check, Some(DEFAULT_LINK_CHECK));
        assert_eq!(c.adapter, None);
        let c = config_from_json(json!({
            "name": "SensorTag", "serviceUuid": "181a", "adapter": "hci1",
            "scanTimeoutMs": 1500, "connectTimeoutMs": 2500, "linkCheckMs": 0
        }))
        .unwrap();
        assert_eq!(
            c.service_uuid,
            Some(Uuid::parse_str("0000181a-0000-1000-8000-00805f9b34fb").unwrap())
        );
        assert_eq!(c.adapter.as_deref(), Some("hci1"));
        assert_eq!(c.scan_timeout, Duration::from_millis(1500));
        assert_eq!(c.link_check, None);
        assert_eq!(
            c.target(),
            "name `SensorTag`, service 0000181a-0000-1000-8000-00805f9b34fb"
        );
    }

    #[test]
    fn malformed_mac_uuid_and_unknown_keys_are_named() {
        let e = config_from_json(json!({"macAddress": "11:22:33:44:55"})).unwrap_err();
        assert!(matches!(e, DriverError::Config(_)));
        assert!(
            e.to_string()
                .contains("macAddress: `11:22:33:44:55` is not a MAC address"),
            "{e}"
        );
        for bad in [
            "zz:22:33:44:55:66",
            "ééééééé",
            "112233445566778",
            "1:2:3:4:5:6",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_mac("112233445566").unwrap(),
            parse_mac("11-22-33-44-55-66").unwrap()
        );
        let e = config_from_json(json!({"serviceUuid": "not-a-uuid"})).unwrap_err();
        assert!(
            e.to_string()
                .contains("serviceUuid: `not-a-uuid` is not a UUID"),
            "{e}"
        );
        let e = config_from_json(json!({"macAddress": "11:22:33:44:55:66", "mac": 1})).unwrap_err();
        assert!(e.to_string().contains("unknown field `mac`"), "{e}");
        let e = config_from_json(json!({})).unwrap_err();
        assert!(e.to_string().contains("give macAddress"), "{e}");
        let e = config_from_json(json!({"name": "x", "scanTimeoutMs": 0})).unwrap_err();
        assert!(
            e.to_string().contains("scanTimeoutMs must be above 0"),
            "{e}"
        );
    }

    #[test]
    fn short_and_long_uuids() {
        let full = Uuid::parse_str("00002a6e-0000-1000-8000-00805f9b34fb").unwrap();
        assert_eq!(parse_uuid("2a6e").unwrap(), full);
        assert_eq!(parse_uuid("0x2A6E").unwrap(), full);
        assert_eq!(parse_uuid("00002A6E").unwrap(), full);
        assert_eq!(
            parse_uuid("00002a6e00001000800000805f9b34fb").unwrap(),
            full
        );
        assert!(parse_uuid("2a6").is_err());
        assert!(parse_uuid("").is_err());
    }
}
