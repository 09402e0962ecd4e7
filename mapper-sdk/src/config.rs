//! Mapper configuration: mapper-framework's `config.yaml` keys plus flags.
//!
//! ```yaml
//! grpc_server:
//!   socket_path: /etc/kubeedge/virtual.sock   # this mapper's DMI socket
//! common:
//!   name: virtual-mapper                      # MapperInfo.name
//!   version: v1.0.0
//!   api_version: v1.0.0
//!   protocol: virtual                         # must equal the devices' protocolName
//!   address: 127.0.0.1                        # accepted, unused (as upstream)
//!   edgecore_sock: /etc/kubeedge/dmi.sock     # EdgeCore's DMI socket
//!   http_port: "7777"                         # HTTP port: /metrics, /healthz (off when absent)
//! runtime:                                    # extension, all optional
//!   io_timeout: 5s                            # deadline of each driver call
//!   backoff_min: 500ms
//!   backoff_max: 30s
//! data:                                       # extension: push/db sinks, see mapper_sdk::sink::options
//!   state_dir: /var/lib/edge-dmi/virtual-mapper
//! ```
//! Load order: file, then flags (flags win).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::Error;

/// `grpc_server` section.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GrpcServerConfig {
    /// This mapper's DMI socket path; sent verbatim to EdgeCore as `MapperInfo.address`.
    #[serde(default)]
    pub socket_path: Option<PathBuf>,
}

/// `common` section.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CommonConfig {
    /// Mapper name (`MapperInfo.name`, the key EdgeCore stores it under).
    #[serde(default)]
    pub name: Option<String>,
    /// Free-text version.
    #[serde(default)]
    pub version: Option<String>,
    /// Free-text API version.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Protocol this mapper serves; must equal the devices' `protocolName`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Parsed and unused, as in mapper-framework.
    #[serde(default)]
    pub address: Option<String>,
    /// EdgeCore's DMI socket.
    #[serde(default)]
    pub edgecore_sock: Option<PathBuf>,
    /// Data panel HTTP port (text, as upstream writes it).
    #[serde(default)]
    pub http_port: Option<String>,
    /// Address the HTTP port binds to (an extension of this project; default
    /// `127.0.0.1`: metrics stay on the node unless an address is given, e.g.
    /// `0.0.0.0` for all interfaces).
    #[serde(default)]
    pub http_bind: Option<std::net::IpAddr>,
    /// File holding the bearer token the REST data panel requires when the
    /// port is bound beyond loopback (an extension; `MAPPER_HTTP_TOKEN`
    /// overrides it).
    #[serde(default)]
    pub http_token_file: Option<PathBuf>,
}

/// `runtime` section (extension).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Deadline of each driver call (connect, write; reads get it per property).
    #[serde(with = "humantime_serde")]
    pub io_timeout: Duration,
    /// First reconnect delay.
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            io_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// The config file as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `grpc_server`.
    #[serde(default)]
    pub grpc_server: GrpcServerConfig,
    /// `common`.
    #[serde(default)]
    pub common: CommonConfig,
    /// `runtime`.
    #[serde(default)]
    pub runtime: Option<RuntimeConfig>,
    /// `data` (push and database sinks; an extension, see [`crate::sink::options`]).
    #[serde(default)]
    pub data: Option<crate::sink::DataOptions>,
}

/// Command-line flags of every mapper binary.
#[derive(Debug, Clone, clap::Parser, Default)]
#[command(about = "A KubeEdge DMI device mapper")]
pub struct Flags {
    /// mapper-framework compatible config file.
    #[arg(long = "config-file", env = "MAPPER_CONFIG")]
    pub config_file: Option<PathBuf>,
    /// This mapper's DMI socket (overrides grpc_server.socket_path).
    #[arg(long, env = "MAPPER_SOCKET")]
    pub socket_path: Option<PathBuf>,
    /// EdgeCore's DMI socket (overrides common.edgecore_sock).
    #[arg(long, env = "EDGECORE_SOCK")]
    pub edgecore_sock: Option<PathBuf>,
    /// Mapper name (overrides common.name).
    #[arg(long)]
    pub name: Option<String>,
    /// Protocol (overrides common.protocol).
    #[arg(long)]
    pub protocol: Option<String>,
    /// HTTP port for /metrics (overrides common.http_port).
    #[arg(long)]
    pub http_port: Option<u16>,
    /// Address for the HTTP port (overrides common.http_bind; default
    /// 127.0.0.1, `0.0.0.0` for all interfaces).
    #[arg(long)]
    pub http_bind: Option<std::net::IpAddr>,
    /// Directory for the sink spool (overrides data.state_dir).
    #[arg(long, env = "MAPPER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log filter, e.g. `info` or `mapper_sdk=debug` (RUST_LOG also works).
    #[arg(long, env = "MAPPER_LOG", default_value = "info")]
    pub log: String,
    /// Log line format: `text` or `json` (one JSON object per line).
    #[arg(long, env = "MAPPER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: edge_rt::logging::LogFormat,
    /// Print the completion script for this shell (bash, zsh, fish,
    /// elvish, powershell) and exit.
    #[arg(long, value_name = "SHELL")]
    pub completions: Option<edge_rt::cli::Shell>,
}

/// Resolved mapper configuration, passed by value into [`crate::Mapper`].
#[derive(Debug, Clone)]
pub struct MapperConfig {
    /// Mapper name.
    pub name: String,
    /// Version text.
    pub version: String,
    /// API version text.
    pub api_version: String,
    /// Protocol served.
    pub protocol: String,
    /// This mapper's DMI socket.
    pub socket_path: PathBuf,
    /// EdgeCore's DMI socket.
    pub edgecore_sock: PathBuf,
    /// HTTP port for `/metrics` (mapper-framework's data panel port); none: off.
    pub http_port: Option<u16>,
    /// Address the HTTP port binds to. Loopback unless configured: the
    /// endpoint has no authentication, and mappers often run with
    /// `hostNetwork` on a plant network.
    pub http_bind: std::net::IpAddr,
    /// Runtime tuning.
    pub runtime: RuntimeConfig,
    /// Bearer token of the REST data panel (`MAPPER_HTTP_TOKEN`, else the
    /// content of `common.http_token_file`); required for the panel when
    /// `http_bind` is not loopback.
    pub http_token: Option<String>,
    /// Push and database sinks.
    pub data: crate::sink::DataOptions,
}

/// Default EdgeCore socket.
pub const DEFAULT_EDGECORE_SOCK: &str = "/etc/kubeedge/dmi.sock";

impl MapperConfig {
    /// Defaults for a mapper of `protocol`, as mapper-framework's template writes them.
    pub fn for_protocol(protocol: &str) -> Self {
        Self {
            name: format!("{protocol}-mapper"),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            api_version: "v1beta1".to_owned(),
            protocol: protocol.to_owned(),
            socket_path: PathBuf::from(format!("/etc/kubeedge/{protocol}.sock")),
            edgecore_sock: PathBuf::from(DEFAULT_EDGECORE_SOCK),
            http_port: None,
            http_bind: std::net::IpAddr::from([127, 0, 0, 1]),
            runtime: RuntimeConfig::default(),
            http_token: None,
            data: crate::sink::DataOptions::default(),
        }
    }

    /// Parses config file text over the defaults of `protocol`.
    pub fn from_yaml(protocol: &str, text: &str, origin: &Path) -> Result<Self, Error> {
        let file: ConfigFile = yaml_serde::from_str(text)
            .map_err(|e| Error::Config(format!("{}: {e}", origin.display())))?;
        let mut c = Self::for_protocol(file.common.protocol.as_deref().unwrap_or(protocol));
        if let Some(v) = file.common.name {
            c.name = v;
        }
        if let Some(v) = file.common.version {
            c.version = v;
        }
        if let Some(v) = file.common.api_version {
            c.api_version = v;
        }
        if let Some(v) = file.common.edgecore_sock {
            c.edgecore_sock = v;
        }
        if let Some(v) = file.grpc_server.socket_path {
            c.socket_path = v;
        }
        if let Some(p) = file.common.http_port.filter(|p| !p.trim().is_empty()) {
            c.http_port = Some(p.trim().parse().map_err(|_| {
                Error::Config(format!(
                    "{}: common.http_port `{p}` is not a port number",
                    origin.display()
                ))
            })?);
        }
        if let Some(b) = file.common.http_bind {
            c.http_bind = b;
        }
        if let Some(path) = &file.common.http_token_file {
            let t = std::fs::read_to_string(path).map_err(|e| {
                Error::Config(format!(
                    "{}: common.http_token_file {}: {e}",
                    origin.display(),
                    path.display()
                ))
            })?;
            c.http_token = Some(t.trim().to_owned()).filter(|t| !t.is_empty());
        }
        if let Some(r) = file.runtime {
            c.runtime = r;
        }
        if let Some(d) = file.data {
            c.data = d;
        }
        Ok(c)
    }

    /// Loads the file named by the flags (if any) and applies the flags.
    pub fn load(protocol: &str, flags: &Flags) -> Result<Self, Error> {
        let mut c = match &flags.config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
                Self::from_yaml(protocol, &text, path)?
            }
            None => Self::for_protocol(protocol),
        };
        if let Some(v) = &flags.socket_path {
            c.socket_path = v.clone();
        }
        if let Some(v) = &flags.edgecore_sock {
            c.edgecore_sock = v.clone();
        }
        if let Some(v) = &flags.name {
            c.name = v.clone();
        }
        if let Some(v) = &flags.protocol {
            c.protocol = v.clone();
        }
        if let Some(v) = flags.http_port {
            c.http_port = Some(v);
        }
        if let Some(v) = flags.http_bind {
            c.http_bind = v;
        }
        if let Some(t) = std::env::var("MAPPER_HTTP_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
        {
            c.http_token = Some(t.trim().to_owned());
        }
        if let Some(v) = &flags.state_dir {
            c.data.state_dir = Some(v.clone());
        }
        c.validate()?;
        Ok(c)
    }

    /// The mapper's state directory: `data.state_dir` (or `--state-dir`),
    /// else `$STATE_DIRECTORY`, else `/var/lib/edge-dmi/<name>`. The sink
    /// spool lives there, and drivers may keep their own state under it.
    pub fn state_dir(&self) -> PathBuf {
        let mut data = self.data.clone();
        data.client_name = self.name.clone();
        data.resolved_state_dir()
    }

    /// Checks the rules EdgeCore and the runtime rely on.
    pub fn validate(&self) -> Result<(), Error> {
        if self.protocol.trim().is_empty() {
            return Err(Error::Config(
                "common.protocol is empty; EdgeCore rejects such a mapper".into(),
            ));
        }
        if self.name.trim().is_empty() {
            return Err(Error::Config("common.name is empty".into()));
        }
        if self.socket_path.as_os_str().is_empty() {
            return Err(Error::Config("grpc_server.socket_path is empty".into()));
        }
        if self.runtime.io_timeout.is_zero() {
            return Err(Error::Config(
                "runtime.io_timeout must be above zero".into(),
            ));
        }
        self.data.validate().map_err(Error::Config)?;
        if self.runtime.backoff_min > self.runtime.backoff_max {
            return Err(Error::Config(
                "runtime.backoff_min is above runtime.backoff_max".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_bind_to_loopback_unless_configured() {
        let c = MapperConfig::for_protocol("modbus");
        assert_eq!(c.http_bind, std::net::IpAddr::from([127, 0, 0, 1]));
        let c = MapperConfig::from_yaml(
            "modbus",
            "common:\n  http_port: \"7777\"\n  http_bind: 0.0.0.0\n",
            std::path::Path::new("config.yaml"),
        )
        .unwrap();
        assert_eq!(c.http_bind, std::net::IpAddr::from([0, 0, 0, 0]));
        assert_eq!(c.http_port, Some(7777));
    }

    #[test]
    fn reads_mapper_framework_config() {
        let text = r#"
grpc_server:
  socket_path: /tmp/x/modbus.sock
common:
  name: Modbus-mapper
  version: v1.13.0
  api_version: v1.0.0
  protocol: modbus
  address: 127.0.0.1
  edgecore_sock: /tmp/x/dmi.sock
  http_port: "7777"
"#;
        let c = MapperConfig::from_yaml("virtual", text, Path::new("config.yaml")).unwrap();
        assert_eq!(c.name, "Modbus-mapper");
        assert_eq!(c.protocol, "modbus");
        assert_eq!(c.socket_path, PathBuf::from("/tmp/x/modbus.sock"));
        assert_eq!(c.edgecore_sock, PathBuf::from("/tmp/x/dmi.sock"));
        assert_eq!(c.http_port, Some(7777));
        c.validate().unwrap();
    }

    #[test]
    fn unknown_key_and_bad_port_are_errors() {
        let e =
            MapperConfig::from_yaml("v", "common:\n  nmae: x\n", Path::new("c.yaml")).unwrap_err();
        assert!(e.to_string().contains("nmae"), "{e}");
        let e = MapperConfig::from_yaml("v", "common:\n  http_port: abc\n", Path::new("c.yaml"))
            .unwrap_err();
        assert!(e.to_string().contains("http_port `abc`"), "{e}");
    }

    #[test]
    fn empty_protocol_is_rejected() {
        let mut c = MapperConfig::for_protocol("x");
        c.protocol = String::new();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("protocol is empty")
        );
    }
}
