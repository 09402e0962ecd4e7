//! `edgecore-dmi`: run the server (default) or inspect a running one.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use edgecore_dmi::Config;
use edgecore_dmi::cli::Output;
use edgecore_dmi::config::{Encoding, SourceKind, StatusTarget, admin_socket_for};
use tokio_util::sync::CancellationToken;

/// The allocator (feature `jemalloc`, on by default): it returns freed pages
/// to the system within about a second, so a burst (a start with 10 000
/// devices, a rescan) does not leave the process at its peak size the way
/// glibc's per-thread arenas do.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Most threads the runtime runs blocking work on (store transactions, YAML
/// reads and parses).
const BLOCKING_THREADS: usize = 2;

#[derive(Debug, Parser)]
#[command(version, about = "KubeEdge-compatible DMI server for an edge node")]
struct Cli {
    /// Config file (YAML).
    #[arg(long, global = true, env = "EDGECORE_DMI_CONFIG")]
    config: Option<PathBuf>,
    /// DeviceManagerService socket.
    #[arg(long, global = true, env = "EDGECORE_DMI_SOCKET")]
    dmi_socket: Option<PathBuf>,
    /// Admin API socket (default: edgecore-dmi.admin.sock next to the DMI socket).
    #[arg(long, global = true)]
    admin_socket: Option<PathBuf>,
    /// Log filter (RUST_LOG also works).
    #[arg(long, global = true, default_value = "info", env = "EDGECORE_DMI_LOG")]
    log: String,
    /// Log line format: `text` or `json` (one JSON object per line).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "EDGECORE_DMI_LOG_FORMAT"
    )]
    log_format: edge_rt::logging::LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve {
        /// Directory of the embedded store.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Device/DeviceModel YAML directory.
        #[arg(long)]
        devices_dir: Option<PathBuf>,
        /// configData number encoding toward mappers.
        #[arg(long, value_enum)]
        encoding: Option<Encoding>,
        /// Where devices come from.
        #[arg(long, value_enum)]
        source: Option<SourceKind>,
        /// This node's name (kubernetes source).
        #[arg(long, env = "NODE_NAME")]
        node_name: Option<String>,
        /// Where twins are written back (kubernetes source).
        #[arg(long, value_enum)]
        status_mode: Option<StatusTarget>,
        /// Most mapper registrations kept (default 256).
        #[arg(long)]
        max_mappers: Option<usize>,
        /// Patch a device whose values did not change (only timestamps moved)
        /// at most this often (kubernetes source; e.g. 60s, the default).
        #[arg(long, value_parser = humantime::parse_duration)]
        status_refresh: Option<std::time::Duration>,
        /// MQTT broker of the device-topic bridge (tcp://host:1883, mqtt://,
        /// ssl:// or mqtts://); no bridge when unset.
        #[arg(long, env = "EDGECORE_DMI_MQTT_BROKER")]
        mqtt_broker: Option<String>,
        /// QoS of the bridge's messages (0, as stock EdgeCore, or 1).
        #[arg(long, env = "EDGECORE_DMI_MQTT_QOS", value_parser = clap::value_parser!(u8).range(0..=1))]
        mqtt_qos: Option<u8>,
        /// Serve the read-only dashboard and JSON API on this address (e.g.
        /// 127.0.0.1:8080; port 0 picks a free one, logged as `http listening
        /// on ADDR`); off when unset.
        #[arg(long, env = "EDGECORE_DMI_HTTP_ADDR")]
        http_addr: Option<std::net::SocketAddr>,
        /// Allow --http-addr to be a non-loopback address (the dashboard has
        /// no authentication).
        #[arg(long)]
        http_allow_remote: bool,
    },
    /// Show the running server's devices: state, desired and reported values.
    Devices {
        /// Refresh continuously.
        #[arg(long, short)]
        watch: bool,
        /// Refresh interval with --watch.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
        /// Only these devices (`name` or `namespace/name`; repeat or
        /// comma-separate for several).
        #[arg(long, value_delimiter = ',')]
        device: Vec<String>,
        /// Only devices of these protocols.
        #[arg(long, value_delimiter = ',')]
        protocol: Vec<String>,
        /// Only devices in these states (`online`, `offline`, ...; `unknown`
        /// for devices that have not reported one).
        #[arg(long, value_delimiter = ',')]
        state: Vec<String>,
    },
    /// Show the registered mappers: protocol, devices, last contact, refusals.
    Mappers {
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// Check Device/DeviceModel YAML files offline with the rules of the
    /// loader and the cloud controller; prints `file:line:col: message` per
    /// problem and exits 1 when there is an error (2 when a file cannot be
    /// read).
    Validate {
        /// Files or directories (their `*.yaml`/`*.yml` files) to check
        /// together: devices are checked against the models found in them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Treat warnings (unknown configData keys) as errors.
        #[arg(long)]
        strict: bool,
    },
    /// Print the completion script for a shell (bash, zsh, fish, elvish,
    /// powershell), e.g. `edgecore-dmi completions bash >
    /// /etc/bash_completion.d/edgecore-dmi`.
    Completions {
        /// The shell.
        shell: edge_rt::cli::Shell,
    },
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = match &cli.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?;
            Config::parse(&text, p)?
        }
        None => Config::default(),
    };
    if let Some(s) = &cli.dmi_socket {
        cfg.dmi_socket = s.clone();
        cfg.admin_socket = admin_socket_for(s);
    }
    if let Some(s) = &cli.admin_socket {
        cfg.admin_socket = s.clone();
    }
    if let Some(Command::Serve {
        state_dir,
        devices_dir,
        encoding,
        source,
        node_name,
        status_mode,
        status_refresh,
        max_mappers,
        mqtt_broker,
        mqtt_qos,
        http_addr,
        http_allow_remote,
    }) = &cli.command
    {
        if let Some(v) = http_addr {
            cfg.http.addr = Some(*v);
        }
        if *http_allow_remote {
            cfg.http.allow_remote = true;
        }
        if let Some(v) = mqtt_broker {
            cfg.mqtt.broker = Some(v.clone());
        }
        if let Some(v) = mqtt_qos {
            cfg.mqtt.qos = *v;
        }
        if let Some(v) = source {
            cfg.source = *v;
        }
        if let Some(v) = node_name {
            cfg.node_name = Some(v.clone());
        }
        if let Some(v) = status_mode {
            cfg.status_mode = *v;
        }
        if let Some(v) = status_refresh {
            cfg.status_refresh = *v;
        }
        if let Some(v) = max_mappers {
            cfg.max_mappers = (*v).max(1);
        }
        if let Some(v) = state_dir {
            cfg.state_dir = v.clone();
        }
        if let Some(v) = devices_dir {
            cfg.devices_dir = v.clone();
        }
        if let Some(v) = encoding {
            cfg.encoding = *v;
        }
    }
    Ok(cfg)
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    let cfg = load(&cli)?;
    match cli.command {
        Some(Command::Devices {
            watch,
            interval,
            output,
            device,
            protocol,
            state,
        }) => {
            let filter = edgecore_dmi::cli::DeviceFilter {
                devices: device,
                protocols: protocol,
                states: state,
            };
            edgecore_dmi::cli::devices(&cfg.admin_socket, output, watch, interval, &filter).await
        }
        Some(Command::Mappers { output }) => {
            edgecore_dmi::cli::mappers(&cfg.admin_socket, output).await
        }
        // Both run in `main`, before the runtime starts.
        Some(Command::Validate { .. } | Command::Completions { .. }) => Ok(()),
        None | Some(Command::Serve { .. }) => {
            let shutdown = CancellationToken::new();
            let signal = shutdown.clone();
            tokio::spawn(async move {
                edge_rt::shutdown::terminate_signal().await;
                tracing::info!("shutting down");
                signal.cancel();
            });
            edgecore_dmi::run(cfg, shutdown).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Completions { shell }) => {
            edge_rt::cli::print_completions::<Cli>(*shell, "edgecore-dmi");
            return ExitCode::SUCCESS;
        }
        Some(Command::Validate { files, strict }) => {
            return edgecore_dmi::validate::main(files, *strict);
        }
        _ => {}
    }
    edge_rt::logging::init_with(&cli.log, cli.log_format);
    // Few blocking threads: each thread that allocates gets a malloc arena of
    // its own, which keeps what it once held (benches/README.md, "edgecore-dmi
    // memory at 10 000 devices"). Two are enough for the store and the YAML
    // reads of a node.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
