//! [`Mapper`]: the composition root that wires the DMI server, registration,
//! the report senders, the device supervisor and metrics around one driver.

use std::sync::Arc;
use std::time::Duration;

use dmi_proto::transport::{self, ChannelOptions};
use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use dmi_proto::v1beta1::device_mapper_service_server::DeviceMapperServiceServer;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::MapperConfig;
use crate::driver::{Driver, DynDriver};
use crate::error::{Error, Result};
use crate::metrics::{self, Metrics};
use crate::runtime::Supervisor;
use crate::sample::SampleSink;
use crate::sink::DataPlane;
use crate::{dmi, panel, twin};

/// How long tasks get to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Largest message the mapper decodes from its EdgeCore, bytes (64 MiB): the
/// `MapperRegisterResponse` carries every device and model of the protocol
/// (800 B to 1 KiB per device of five properties), and tonic's default of
/// 4 MiB (grpc-go's too) stopped a mapper at 4 000–5 000 such devices:
/// registration failed and was retried forever. EdgeCore is the local, trusted peer.
pub(crate) const MAX_REGISTRATION_BYTES: usize = 64 * 1024 * 1024;

/// A mapper: the SDK runtime around one driver.
pub struct Mapper {
    config: MapperConfig,
    driver: Arc<dyn DynDriver>,
    sinks: Vec<Arc<dyn SampleSink>>,
}

impl std::fmt::Debug for Mapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapper")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Mapper {
    /// A mapper of `driver` with `config` (validated by [`Mapper::run`]).
    pub fn new(config: MapperConfig, driver: impl Driver) -> Self {
        Self::with_dyn(config, Arc::new(driver))
    }

    /// A mapper of a type-erased driver (a plugin host).
    pub fn with_dyn(config: MapperConfig, driver: Arc<dyn DynDriver>) -> Self {
        Self {
            config,
            driver,
            sinks: Vec::new(),
        }
    }

    /// Adds a consumer of every sample (push target, database, data panel).
    #[must_use]
    pub fn with_sink(mut self, sink: Arc<dyn SampleSink>) -> Self {
        self.sinks.push(sink);
        self
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
        let reporter = twin::Reporter::new(metrics.clone());
        let mut data = cfg.data.clone();
        data.client_name = cfg.name.clone();
        let plane: Arc<dyn SampleSink> = Arc::new(DataPlane::new(
            data,
            metrics.clone(),
            tracker.clone(),
            shutdown.clone(),
        ));
        let mut sinks = vec![plane];
        sinks.extend(self.sinks);
        let supervisor = Arc::new(Supervisor::new(
            self.driver,
            sinks,
            cfg.runtime.clone(),
            reporter.clone(),
            metrics.clone(),
            tracker.clone(),
            shutdown.clone(),
        ));
        if let Some(port) = cfg.http_port {
            let addr = std::net::SocketAddr::from((cfg.http_bind, port));
            let access = match (&cfg.http_token, cfg.http_bind.is_loopback()) {
                (Some(t), _) => panel::Access::Token(t.clone()),
                (None, true) => panel::Access::Open,
                (None, false) => {
                    tracing::warn!(%addr, "the HTTP port is bound beyond loopback without a token: the data panel answers 403 (set MAPPER_HTTP_TOKEN or common.http_token_file); /metrics stays open");
                    panel::Access::Closed
                }
            };
            let panel = panel::router(supervisor.clone(), access);
            let (m, sd) = (metrics.clone(), shutdown.clone());
            tracker.spawn(async move {
                if let Err(e) = metrics::serve(addr, m, panel, sd).await {
                    tracing::error!(%addr, error = %e, "metrics endpoint failed");
                }
            });
        }
        let devices = Arc::new(dmi::server::Devices::new(supervisor));
        let client = DeviceManagerServiceClient::new(transport::channel(
            &cfg.edgecore_sock,
            ChannelOptions {
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(5),
            },
        ))
        .max_decoding_message_size(MAX_REGISTRATION_BYTES);
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
            Arc::new(twin::Pacer::default()),
            reregister.clone(),
            metrics,
            shutdown.clone(),
        ));
        tracker.spawn(dmi::client::register_loop(
            client,
            info,
            cfg.edgecore_sock.clone(),
            devices.clone(),
            reregister,
            (cfg.runtime.backoff_min, cfg.runtime.backoff_max),
            shutdown.clone(),
        ));
        let service = DeviceMapperServiceServer::new(dmi::server::MapperService { devices });
        let limits = transport::ServerLimits::default();
        let served = limits
            .apply(tonic::transport::Server::builder())
            .add_service(service)
            .serve_with_incoming_shutdown(
                listener.incoming_with(limits),
                shutdown.clone().cancelled_owned(),
            )
            .await;
        shutdown.cancel();
        edge_rt::shutdown::drain(&tracker, SHUTDOWN_GRACE).await;
        tracing::info!("mapper stopped");
        served.map_err(Error::from)
    }
}
