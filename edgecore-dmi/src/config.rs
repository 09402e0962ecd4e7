//! edgecore-dmi configuration: a YAML file, then flags.
//!
//! ```yaml
//! dmiSocket: /etc/kubeedge/dmi.sock        # DeviceManagerService socket
//! adminSocket: /etc/kubeedge/edgecore-dmi.admin.sock   # local API for the CLI
//! stateDir: /var/lib/edgecore-dmi          # embedded store (store.redb)
//! devicesDir: /etc/kubeedge/devices        # Device/DeviceModel YAML directory
//! configDataEncoding: stock                # stock | lossless
//! mapperCallTimeout: 10s                   # deadline of calls to mappers
//! maxMappers: 256                          # mapper registrations kept (more are refused while all are reachable)
//! source: directory                        # directory | kubernetes
//! nodeName: edge-node-1                    # kubernetes: this node (default: $NODE_NAME)
//! statusMode: deviceStatus                 # kubernetes: deviceStatus (v1.23+) | legacy
//! statusInterval: 1s                       # kubernetes: at most one status patch per device per interval
//! statusRefresh: 60s                       # kubernetes: unchanged values (only timestamps moved) re-patched this often
//! statusQps: 50                            # kubernetes: status patches per second, at most
//! mqttBroker: tcp://127.0.0.1:1883         # the MQTT bridge (off when unset); ssl:// or mqtts:// for TLS
//! mqttQos: 0                               # 0 (as stock EdgeCore) or 1
//! mqttClientId: edgecore-dmi-node-1        # default: edgecore-dmi-<pid>-<random>
//! mqttCaFile: /etc/kubeedge/ca.crt         # TLS: CA bundle (default: the system's)
//! mqttCertFile: /etc/kubeedge/client.crt   # TLS: client certificate (with mqttKeyFile)
//! mqttKeyFile: /etc/kubeedge/client.key
//! http:                                    # the read-only dashboard and JSON API (off when unset)
//!   addr: 127.0.0.1:8080                   # port 0 picks a free one; loopback only unless...
//!   allowRemote: false                     # ...this is true (the dashboard has no authentication)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dmi_proto::config_data::NumberEncoding;
use serde::Deserialize;

/// Default DMI socket, as stock EdgeCore.
pub const DEFAULT_DMI_SOCKET: &str = "/etc/kubeedge/dmi.sock";

/// How configData numbers are encoded toward mappers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum Encoding {
    /// Every number as FloatValue, as stock EdgeCore (Go mappers understand it).
    #[default]
    Stock,
    /// Int64Value/DoubleValue; for Rust mappers only.
    Lossless,
}

impl From<Encoding> for NumberEncoding {
    fn from(e: Encoding) -> Self {
        match e {
            Encoding::Stock => NumberEncoding::Stock,
            Encoding::Lossless => NumberEncoding::Lossless,
        }
    }
}

/// Where devices come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum SourceKind {
    /// A directory of KubeEdge YAML.
    #[default]
    Directory,
    /// The Kubernetes API: this node's Devices (feature `kubernetes`).
    Kubernetes,
}

/// Where twins are written back in Kubernetes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum StatusTarget {
    /// DeviceStatus objects (KubeEdge v1.23+).
    #[default]
    DeviceStatus,
    /// The Device's own status (before v1.23).
    Legacy,
}

/// The config file as written; every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    /// DeviceManagerService socket.
    pub dmi_socket: Option<PathBuf>,
    /// Local admin API socket.
    pub admin_socket: Option<PathBuf>,
    /// Directory of the embedded store.
    pub state_dir: Option<PathBuf>,
    /// Device/DeviceModel YAML directory.
    pub devices_dir: Option<PathBuf>,
    /// configData number encoding.
    pub config_data_encoding: Option<Encoding>,
    /// Deadline of each call to a mapper.
    #[serde(default, with = "humantime_serde")]
    pub mapper_call_timeout: Option<Duration>,
    /// Device source.
    pub source: Option<SourceKind>,
    /// This node's name (Kubernetes source).
    pub node_name: Option<String>,
    /// Where twins are written back.
    pub status_mode: Option<StatusTarget>,
    /// Coalescing interval of status write-back.
    #[serde(default, with = "humantime_serde")]
    pub status_interval: Option<Duration>,
    /// Most mapper registrations kept.
    pub max_mappers: Option<usize>,
    /// How often a device whose values did not change (only timestamps
    /// moved) is patched again.
    #[serde(default, with = "humantime_serde")]
    pub status_refresh: Option<Duration>,
    /// Status patches per second, at most.
    pub status_qps: Option<u32>,
    /// How often reported twins are written to the embedded store (what a
    /// `kill -9` can lose of acknowledged reports).
    #[serde(default, with = "humantime_serde")]
    pub persist_interval: Option<Duration>,
    /// MQTT broker of the device-topic bridge.
    pub mqtt_broker: Option<String>,
    /// QoS of the bridge's messages and subscriptions (0 or 1).
    pub mqtt_qos: Option<u8>,
    /// The bridge's MQTT client id.
    pub mqtt_client_id: Option<String>,
    /// CA bundle for a TLS broker.
    pub mqtt_ca_file: Option<PathBuf>,
    /// Client certificate for a TLS broker.
    pub mqtt_cert_file: Option<PathBuf>,
    /// Its private key.
    pub mqtt_key_file: Option<PathBuf>,
    /// The dashboard and JSON API ([`crate::web`]).
    pub http: Option<HttpFile>,
}

/// The `http` section of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFile {
    /// Address to serve the dashboard on.
    pub addr: Option<SocketAddr>,
    /// Whether a non-loopback address is allowed.
    pub allow_remote: Option<bool>,
}

/// The read-only dashboard and JSON API ([`crate::web`]); served when `addr`
/// is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address to listen on (port 0: any free port, logged at start).
    pub addr: Option<SocketAddr>,
    /// Allow an address other than loopback (the dashboard has no
    /// authentication).
    pub allow_remote: bool,
}

/// The MQTT device-topic bridge ([`crate::bridge`]); it runs when `broker`
/// is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttConfig {
    /// Broker URL (`tcp://host:1883`, `mqtt://`, `ssl://`, `mqtts://`).
    pub broker: Option<String>,
    /// QoS 0 (the default, as stock EdgeCore's `mqttQOS`) or 1.
    pub qos: u8,
    /// Client id (default: `edgecore-dmi-<pid>-<random>`).
    pub client_id: Option<String>,
    /// CA bundle for TLS (default: `$SSL_CERT_FILE`, then the system's).
    pub ca_file: Option<PathBuf>,
    /// Client certificate for TLS (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    pub key_file: Option<PathBuf>,
}

/// Resolved configuration, passed by value into [`crate::run`].
#[derive(Debug, Clone)]
pub struct Config {
    /// DeviceManagerService socket.
    pub dmi_socket: PathBuf,
    /// Local admin API socket (read by `edgecore-dmi devices`).
    pub admin_socket: PathBuf,
    /// Directory of the embedded store.
    pub state_dir: PathBuf,
    /// Device/DeviceModel YAML directory.
    pub devices_dir: PathBuf,
    /// configData number encoding.
    pub encoding: Encoding,
    /// Deadline of each call to a mapper.
    pub mapper_call_timeout: Duration,
    /// Device source.
    pub source: SourceKind,
    /// This node's name (Kubernetes source).
    pub node_name: Option<String>,
    /// Where twins are written back.
    pub status_mode: StatusTarget,
    /// Coalescing interval of status write-back.
    pub status_interval: Duration,
    /// Most mapper registrations kept (default
    /// [`crate::hub::MAX_MAPPERS`], 256); a new mapper beyond it is refused
    /// with `RESOURCE_EXHAUSTED` while every kept one is reachable.
    pub max_mappers: usize,
    /// A device whose reports changed only timestamps (same values, same
    /// state) is patched at most once per this (default 60 s); a changed value
    /// is patched within `status_interval`. Bounds how stale `lastOnlineTime`
    /// and twin timestamps in the cluster get.
    pub status_refresh: Duration,
    /// How often reported twins are written to the store (default
    /// [`crate::PERSIST_INTERVAL`], 1 s; at least 10 ms).
    pub persist_interval: Duration,
    /// Status patches per second, at most.
    pub status_qps: u32,
    /// The MQTT device-topic bridge (off unless a broker is set).
    pub mqtt: MqttConfig,
    /// The dashboard (off unless an address is set).
    pub http: HttpConfig,
}

/// The admin socket that belongs to a DMI socket: same directory.
pub fn admin_socket_for(dmi_socket: &Path) -> PathBuf {
    dmi_socket.with_file_name("edgecore-dmi.admin.sock")
}

impl Default for Config {
    fn default() -> Self {
        let dmi = PathBuf::from(DEFAULT_DMI_SOCKET);
        Self {
            admin_socket: admin_socket_for(&dmi),
            dmi_socket: dmi,
            state_dir: PathBuf::from("/var/lib/edgecore-dmi"),
            devices_dir: PathBuf::from("/etc/kubeedge/devices"),
            encoding: Encoding::Stock,
            mapper_call_timeout: Duration::from_secs(10),
            source: SourceKind::Directory,
            node_name: None,
            status_mode: StatusTarget::DeviceStatus,
            status_interval: Duration::from_secs(1),
            status_refresh: Duration::from_secs(60),
            max_mappers: crate::hub::MAX_MAPPERS,
            persist_interval: crate::PERSIST_INTERVAL,
            status_qps: 50,
            mqtt: MqttConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

impl Config {
    /// Applies a config file over the defaults.
    pub fn from_file(file: ConfigFile) -> Self {
        let mut c = Self::default();
        if let Some(v) = file.dmi_socket {
            c.admin_socket = admin_socket_for(&v);
            c.dmi_socket = v;
        }
        if let Some(v) = file.admin_socket {
            c.admin_socket = v;
        }
        if let Some(v) = file.state_dir {
            c.state_dir = v;
        }
        if let Some(v) = file.devices_dir {
            c.devices_dir = v;
        }
        if let Some(v) = file.config_data_encoding {
            c.encoding = v;
        }
        if let Some(v) = file.mapper_call_timeout {
            c.mapper_call_timeout = v;
        }
        if let Some(v) = file.source {
            c.source = v;
        }
        if let Some(v) = file.node_name {
            c.node_name = Some(v);
        }
        if let Some(v) = file.status_mode {
            c.status_mode = v;
        }
        if let Some(v) = file.persist_interval {
            c.persist_interval = v.max(Duration::from_millis(10));
        }
        if let Some(v) = file.status_interval {
            c.status_interval = v;
        }
        if let Some(v) = file.max_mappers {
            c.max_mappers = v.max(1);
        }
        if let Some(v) = file.status_refresh {
            c.status_refresh = v;
        }
        if let Some(v) = file.status_qps {
            c.status_qps = v;
        }
        c.mqtt = MqttConfig {
            broker: file.mqtt_broker,
            qos: file.mqtt_qos.unwrap_or_default(),
            client_id: file.mqtt_client_id,
            ca_file: file.mqtt_ca_file,
            cert_file: file.mqtt_cert_file,
            key_file: file.mqtt_key_file,
        };
        if let Some(h) = file.http {
            c.http = HttpConfig {
                addr: h.addr,
                allow_remote: h.allow_remote.unwrap_or_default(),
            };
        }
        c
    }

    /// Parses config file text.
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<Self> {
        let file: ConfigFile =
            yaml_serde::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", origin.display()))?;
        Ok(Self::from_file(file))
    }

    /// Path of the store file.
    pub fn store_path(&self) -> PathBuf {
        self.state_dir.join("store.redb")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_admin_socket_follows_dmi_socket() {
        let c = Config::parse(
            "dmiSocket: /run/x/dmi.sock\nstateDir: /var/x\nconfigDataEncoding: lossless\nmapperCallTimeout: 3s\n",
            Path::new("c.yaml"),
        )
        .unwrap();
        assert_eq!(c.dmi_socket, PathBuf::from("/run/x/dmi.sock"));
        assert_eq!(
            c.admin_socket,
            PathBuf::from("/run/x/edgecore-dmi.admin.sock")
        );
        assert_eq!(c.store_path(), PathBuf::from("/var/x/store.redb"));
        assert_eq!(c.encoding, Encoding::Lossless);
        assert_eq!(c.mapper_call_timeout, Duration::from_secs(3));
        assert_eq!(
            Config::default().dmi_socket,
            PathBuf::from(DEFAULT_DMI_SOCKET)
        );
    }

    #[test]
    fn the_persist_interval_is_configurable_with_a_floor() {
        assert_eq!(Config::default().persist_interval, Duration::from_secs(1));
        let c = Config::parse("persistInterval: 200ms\n", Path::new("c.yaml")).unwrap();
        assert_eq!(c.persist_interval, Duration::from_millis(200));
        let c = Config::parse("persistInterval: 0s\n", Path::new("c.yaml")).unwrap();
        assert_eq!(c.persist_interval, Duration::from_millis(10));
    }

    #[test]
    fn the_mqtt_bridge_is_off_unless_a_broker_is_set() {
        assert_eq!(Config::default().mqtt, MqttConfig::default());
        let c = Config::parse(
            "mqttBroker: ssl://b:8883\nmqttQos: 1\nmqttCaFile: /ca.pem\n",
            Path::new("c.yaml"),
        )
        .unwrap();
        assert_eq!(c.mqtt.broker.as_deref(), Some("ssl://b:8883"));
        assert_eq!(c.mqtt.qos, 1);
        assert_eq!(c.mqtt.ca_file, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn the_dashboard_is_off_unless_an_address_is_set() {
        assert_eq!(Config::default().http, HttpConfig::default());
        let c = Config::parse(
            "http:\n  addr: 127.0.0.1:0\n  allowRemote: true\n",
            Path::new("c.yaml"),
        )
        .unwrap();
        assert_eq!(c.http.addr, Some("127.0.0.1:0".parse().unwrap()));
        assert!(c.http.allow_remote);
        let e = Config::parse("http:\n  address: x\n", Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("address"), "{e}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = Config::parse("dmiSockett: /x\n", Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.yaml") && e.contains("dmiSockett"), "{e}");
    }
}
