//! edgecore-dmi configuration: a YAML file, then flags.
//!
//! ```yaml
//! dmiSocket: /etc/kubeedge/dmi.sock        # DeviceManagerService socket
//! adminSocket: /etc/kubeedge/edgecore-dmi.admin.sock   # local API for the CLI
//! stateDir: /var/lib/edgecore-dmi          # embedded store (store.redb)
//! devicesDir: /etc/kubeedge/devices        # Device/DeviceModel YAML directory
//! configDataEncoding: stock                # stock | lossless
//! mapperCallTimeout: 10s                   # deadline of calls to mappers
//! ```

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
    fn unknown_key_is_an_error_naming_it() {
        let e = Config::parse("dmiSockett: /x\n", Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.yaml") && e.contains("dmiSockett"), "{e}");
    }
}
