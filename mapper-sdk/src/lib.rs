//! # mapper-sdk
//!
//! The framework for KubeEdge-compatible device mappers. A protocol crate
//! implements [`Driver`]; the SDK does everything else:
//!
//! * serves `DeviceMapperService` on the mapper's Unix socket (stock Go EdgeCore
//!   and `edgecore-dmi` both reach it) and registers with EdgeCore
//!   (`withData=true`, retried with backoff, again whenever EdgeCore restarts);
//! * runs one task per device: connect with exponential backoff and jitter, read
//!   each property on its `collectCycle` (milliseconds, default 1 s) with one
//!   batched read per tick, report twins (`ReportDeviceStatus`, both twin halves
//!   always set, values inside EdgeCore's charset) and state
//!   (`ReportDeviceStates`, only the five accepted strings, on
//!   `status.reportCycle` and on every change);
//! * reports `online` only once the device answered a read or write (an answered
//!   fault makes it `unhealthy`), resets the reconnect backoff only then, and
//!   shares transports fairly between devices ([`link`]);
//! * hands reports to a coalescing sender (see [Reports](crate#reports)):
//!   the latest twin per property and the latest state per device, one
//!   `ReportDeviceStatus` per device with all its changed twins, paced
//!   adaptively when EdgeCore throttles (stock EdgeCore: 1 call/s per node),
//!   without re-registering; only transport failures trigger a new
//!   registration;
//! * validates desired values against the model (type, minimum/maximum,
//!   ReadWrite) and writes them; a rejected value is logged and reported in the
//!   twin's `observedDesired.metadata` (`status: rejected`, `reason`), never
//!   dropped silently; an UpdateDevice that changes only desired values does not
//!   reconnect the device;
//! * reads mapper-framework's `config.yaml`, logs with `tracing`, stops cleanly on
//!   SIGTERM or Ctrl-C;
//! * serves Prometheus metrics at `/metrics` on `common.http_port` when set
//!   (see [`Metrics`] for the list).
//!
//! Layering: `mappers/* → mapper-sdk → dmi-proto`. Drivers never see tonic or the
//! DMI types.
//!
//! ```no_run
//! use mapper_sdk::{Driver, DriverResult, Value};
//!
//! #[derive(serde::Deserialize, Clone)]
//! struct Cfg {}
//! #[derive(serde::Deserialize)]
//! struct Addr { value: i64 }
//! struct Fixed;
//! impl Driver for Fixed {
//!     type Config = Cfg;
//!     type Address = Addr;
//!     async fn connect(_: &Cfg) -> DriverResult<Self> { Ok(Fixed) }
//!     async fn read(&self, a: &Addr) -> DriverResult<Value> { Ok(Value::Int(a.value)) }
//!     async fn write(&self, _: &Addr, _: &Value) -> DriverResult<()> { Ok(()) }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     mapper_sdk::main::<Fixed>("fixed")
//! }
//! ```
//!
//! ## Reports
//!
//! Device tasks never wait for EdgeCore. Per device the SDK keeps only the
//! newest undelivered twin of each property and the newest state, so memory is
//! bounded by devices × properties whatever EdgeCore does. Senders take devices
//! round robin, one at a time each (so a device's reports keep their order), and
//! send everything a device has in one call. A failed call is classified
//! ([`dmi_proto::status::classify`]): transport failures keep the data and ask
//! for a new registration; throttling keeps the data and the registration and
//! slows the pace (additive increase, multiplicative decrease, starting at
//! 1 call/s) while unchanged values and states stop being repeated; refusals
//! drop that report and count it (`mapper_reports_dropped_total`).
//!
//! ## Feature flags
//! None yet; push targets and the data panel will come behind features.

#![deny(missing_docs)]

mod config;
mod device;
mod dmi;
mod driver;
mod error;
pub mod link;
mod metrics;
mod report;
mod runtime;
mod typed;
mod value;

pub use config::{
    CommonConfig, ConfigFile, DEFAULT_EDGECORE_SOCK, Flags, GrpcServerConfig, MapperConfig,
    RuntimeConfig,
};
pub use device::{
    DEFAULT_CYCLE, DeviceModel, DeviceSpec, ModelProperty, ObjectId, PropertySpec, SUSPICIOUS_CYCLE,
};
pub use driver::{DeviceState, Driver};
pub use error::{DeviceFault, DriverError, DriverResult, Error, Result, SpecError};
pub use metrics::Metrics;
pub use runtime::{DesiredOutcome, DeviceSnapshot, Panel, PropertySnapshot};
pub use value::{
    AccessMode, PropertyType, TWIN_NAME_MAX, TWIN_VALUE_MAX, Value, is_twin_char,
    is_valid_twin_name, is_valid_twin_value, sanitize_twin_value, scale_linear,
};

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use dmi_proto::transport::{self, ChannelOptions};
use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use dmi_proto::v1beta1::device_mapper_service_server::DeviceMapperServiceServer;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long tasks get to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A mapper: the SDK runtime around one [`Driver`] type.
#[derive(Debug)]
pub struct Mapper<D: Driver> {
    config: MapperConfig,
    _driver: std::marker::PhantomData<fn() -> D>,
}

impl<D: Driver> Mapper<D> {
    /// A mapper with a validated configuration.
    pub fn new(config: MapperConfig) -> Self {
        Self {
            config,
            _driver: std::marker::PhantomData,
        }
    }

    /// Serves until `shutdown` is cancelled, then stops every device and returns.
    ///
    /// Fails at start when the config is invalid or the socket is held by another
    /// live server.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let cfg = self.config;
        cfg.validate()?;
        let listener = transport::bind(&cfg.socket_path).await?;
        let tracker = TaskTracker::new();
        let metrics = Arc::new(Metrics::new());
        let reporter = report::Reporter::new(metrics.clone());
        let panel = Arc::new(Panel::<D>::new(
            cfg.runtime.clone(),
            reporter.clone(),
            metrics.clone(),
            tracker.clone(),
            shutdown.clone(),
        ));
        if let Some(port) = cfg.http_port {
            let addr = std::net::SocketAddr::from((cfg.http_bind, port));
            let (m, sd) = (metrics.clone(), shutdown.clone());
            tracker.spawn(async move {
                if let Err(e) = metrics::serve(addr, m, sd).await {
                    tracing::error!(%addr, error = %e, "metrics endpoint failed");
                }
            });
        }
        let client = DeviceManagerServiceClient::new(transport::channel(
            &cfg.edgecore_sock,
            ChannelOptions {
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(5),
            },
        ));
        let reregister = Arc::new(Notify::new());
        let info = pb::MapperInfo {
            name: cfg.name.clone(),
            version: cfg.version.clone(),
            api_version: cfg.api_version.clone(),
            protocol: cfg.protocol.clone(),
            address: cfg.socket_path.as_os_str().as_encoded_bytes().to_vec(),
            state: "ok".to_owned(),
        };
        tracing::info!(
            mapper = %cfg.name, protocol = %cfg.protocol, socket = %cfg.socket_path.display(),
            edgecore = %cfg.edgecore_sock.display(), "mapper starting"
        );
        tracker.spawn(dmi::client::report_loop(
            client.clone(),
            reporter,
            Arc::new(report::Pacer::default()),
            reregister.clone(),
            metrics,
            shutdown.clone(),
        ));
        tracker.spawn(dmi::client::register_loop(
            client,
            info,
            cfg.edgecore_sock.clone(),
            panel.clone(),
            reregister,
            (cfg.runtime.backoff_min, cfg.runtime.backoff_max),
            shutdown.clone(),
        ));
        let service = DeviceMapperServiceServer::new(dmi::server::MapperService { panel });
        let served = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(listener.incoming(), shutdown.clone().cancelled_owned())
            .await;
        shutdown.cancel();
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("forced exit after {SHUTDOWN_GRACE:?} grace period");
        }
        tracing::info!("mapper stopped");
        served.map_err(Error::from)
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn terminate_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Sets up `tracing` with `filter` (overridden by `RUST_LOG`).
pub fn init_tracing(filter: &str) {
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The whole `main` of a mapper binary: flags, config file, logging, signals.
/// `protocol` is the default `common.protocol`.
pub fn main<D: Driver>(protocol: &str) -> ExitCode {
    use clap::Parser;
    let flags = Flags::parse();
    init_tracing(&flags.log);
    let config = match MapperConfig::load(protocol, &flags) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            terminate_signal().await;
            tracing::info!("shutting down");
            signal.cancel();
        });
        Mapper::<D>::new(config).run(shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
