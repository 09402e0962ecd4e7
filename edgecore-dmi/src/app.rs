//! The composition root: builds the hub from the configuration and the store,
//! wires the tasks around it, serves the DMI socket, and shuts everything down.
//!
//! Tasks, each owned by one [`TaskTracker`]:
//!
//! * `dispatchers`: starts a dispatcher ([`crate::dispatch`]) for each mapper
//!   link the hub creates;
//! * `persister`: writes changed records to the store ([`crate::persist`]);
//! * `device source`: the YAML directory or the Kubernetes watcher;
//! * `snapshots`: applies the source's snapshots to the hub;
//! * `status writer` (Kubernetes source): patches twins and state back;
//! * `admin API`: serves `edgecore-dmi devices`;
//! * `MQTT bridge connection` and `MQTT bridge publisher` (with
//!   `--mqtt-broker`): [`crate::bridge`];
//! * `dashboard feed` and `dashboard HTTP` (with `--http-addr`):
//!   [`crate::web`];
//! * the DMI server itself, on the caller's task.
//!
//! All but the per-mapper dispatchers are critical ([`spawn_critical`]): if one
//! ends or fails before shutdown, the shutdown token is cancelled and the whole
//! server stops, rather than running on without it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use dmi_proto::transport::ChannelOptions;
use dmi_proto::v1beta1::device_manager_service_server::DeviceManagerServiceServer;
use futures::FutureExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, SourceKind};
use crate::hub::Hub;
use crate::source::{DeviceSource, DirectorySource, SourceEvent};
use crate::{admin, bridge, dispatch, persist, server, web};

/// How long tasks get to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// New mapper links waiting for their dispatcher to be started.
const NEW_MAPPER_QUEUE: usize = 1024;
/// Snapshots of the device source waiting to be applied (each replaces the
/// previous one, so a short queue is enough).
const SOURCE_QUEUE: usize = 4;
/// Connect timeout of the channels to mappers.
const MAPPER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Spawns `task` on `tasks` as a critical task named `name`.
///
/// When it returns before `shutdown` is cancelled, with an error, with `Ok`
/// or by panicking, the error is logged with the task's name and `shutdown` is
/// cancelled, so the process stops instead of running half-dead. After
/// shutdown has started, an error is logged as a warning and nothing else
/// happens.
pub(crate) fn spawn_critical<F>(
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
    name: &'static str,
    task: F,
) where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        let outcome = match AssertUnwindSafe(task).catch_unwind().await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(panic) => Err(panic_message(panic.as_ref())),
        };
        if shutdown.is_cancelled() {
            if let Err(error) = outcome {
                tracing::warn!(task = name, %error, "task failed while shutting down");
            }
            return;
        }
        match outcome {
            Ok(()) => tracing::error!(task = name, "critical task ended; stopping edgecore-dmi"),
            Err(error) => {
                tracing::error!(task = name, %error, "critical task failed; stopping edgecore-dmi")
            }
        }
        shutdown.cancel();
    });
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown payload".to_owned());
    format!("panicked: {text}")
}

/// Runs the server for `cfg` until `shutdown` is cancelled (or a critical task
/// stops), then drains the tasks for up to [`SHUTDOWN_GRACE`]. Returns the DMI
/// server's error, if it failed.
pub(crate) async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    // A dashboard address that would be refused stops the start before
    // anything is touched.
    if let Some(addr) = cfg.http.addr {
        web::check_addr(addr, cfg.http.allow_remote)?;
    }
    let dmi_listener = dmi_proto::transport::bind(&cfg.dmi_socket).await?;
    let store = persist::open(cfg.store_path()).await?;
    let (new_mapper_tx, new_mapper_rx) = mpsc::channel(NEW_MAPPER_QUEUE);
    let hub = Arc::new(Hub::new(
        cfg.encoding.into(),
        ChannelOptions {
            connect_timeout: MAPPER_CONNECT_TIMEOUT,
            request_timeout: cfg.mapper_call_timeout,
        },
        Box::new(move |name, kick| {
            if new_mapper_tx.try_send((name.to_owned(), kick)).is_err() {
                tracing::error!(mapper = %name, "cannot start the mapper's dispatcher");
            }
        }),
    ));
    hub.set_max_mappers(cfg.max_mappers);
    persist::restore(&store, &hub).await?;
    let source = Source::from_config(&cfg, &hub).await?;
    // Built before anything is served: a bad broker URL or TLS file stops the
    // start; a broker that is down does not.
    let mqtt = match cfg.mqtt.broker {
        Some(_) => Some(bridge::MqttBridge::new(&cfg.mqtt, hub.clone())?),
        None => None,
    };
    // Bound before anything is served, too: a refused or busy address stops
    // the start.
    let dashboard = match cfg.http.addr {
        Some(_) => Some(web::WebServer::bind(&cfg.http, hub.clone()).await?),
        None => None,
    };

    let tasks = TaskTracker::new();
    spawn_critical(
        &tasks,
        &shutdown,
        "dispatchers",
        start_dispatchers(hub.clone(), new_mapper_rx, tasks.clone(), shutdown.clone()),
    );
    spawn_critical(
        &tasks,
        &shutdown,
        "persister",
        persist::run(hub.clone(), store, cfg.persist_interval, shutdown.clone()),
    );
    let (source_tx, source_rx) = mpsc::channel(SOURCE_QUEUE);
    source.spawn(&tasks, &shutdown, source_tx);
    spawn_critical(
        &tasks,
        &shutdown,
        "snapshots",
        apply_snapshots(hub.clone(), source_rx, shutdown.clone()),
    );
    {
        let (hub, sd, path) = (hub.clone(), shutdown.clone(), cfg.admin_socket.clone());
        spawn_critical(&tasks, &shutdown, "admin API", async move {
            admin::serve(&path, hub, sd).await
        });
    }
    if let Some(mqtt) = mqtt {
        mqtt.spawn(&tasks, &shutdown);
    }
    if let Some(dashboard) = dashboard {
        dashboard.spawn(&tasks, &shutdown);
    }

    tracing::info!(
        dmi = %cfg.dmi_socket.display(), admin = %cfg.admin_socket.display(),
        devices_dir = %cfg.devices_dir.display(), state_dir = %cfg.state_dir.display(), "edgecore-dmi serving"
    );
    // Each mapper keeps a connection open: when more mappers than the default
    // are allowed, room for all of them and 64 more.
    let mut limits = dmi_proto::transport::ServerLimits::default();
    if cfg.max_mappers > crate::hub::MAX_MAPPERS {
        limits.max_connections = limits
            .max_connections
            .max(cfg.max_mappers.saturating_add(64));
    }
    let served = limits
        .apply(tonic::transport::Server::builder())
        .add_service(DeviceManagerServiceServer::new(server::ManagerService {
            hub,
        }))
        .serve_with_incoming_shutdown(
            dmi_listener.incoming_with(limits),
            shutdown.clone().cancelled_owned(),
        )
        .await;
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("forced exit after {SHUTDOWN_GRACE:?} grace period");
    }
    tracing::info!("edgecore-dmi stopped");
    served.map_err(Into::into)
}

/// Starts a dispatcher on `tasks` for each new mapper link, until `shutdown`.
async fn start_dispatchers(
    hub: Arc<Hub>,
    mut new_mappers: mpsc::Receiver<(String, Arc<Notify>)>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            n = new_mappers.recv() => n,
        };
        // The hub is gone: nothing more to start.
        let Some((name, kick)) = next else {
            return Ok(());
        };
        tasks.spawn(dispatch::run(hub.clone(), name, kick, shutdown.clone()));
    }
}

/// Applies the device source's snapshots to the hub until `shutdown`.
async fn apply_snapshots(
    hub: Arc<Hub>,
    mut events: mpsc::Receiver<SourceEvent>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            e = events.recv() => e,
        };
        match event {
            Some(SourceEvent::Snapshot {
                devices,
                models,
                errors,
            }) => hub.apply_snapshot(devices, models, errors),
            // The source stopped (it reports why, if it failed).
            None => return Ok(()),
        }
    }
}

/// The configured device source, and what comes with it.
enum Source {
    /// A directory of YAML.
    Directory(DirectorySource),
    /// This node's Devices in Kubernetes, and the status write-back.
    #[cfg(feature = "kubernetes")]
    Kubernetes {
        /// The watcher.
        source: crate::kubernetes::KubeSource,
        /// The status write-back.
        writer: crate::kubernetes::StatusWriter,
    },
}

impl Source {
    /// The source `cfg` asks for; fails on a configuration it cannot serve.
    #[cfg_attr(not(feature = "kubernetes"), allow(unused_variables))]
    async fn from_config(cfg: &Config, hub: &Arc<Hub>) -> anyhow::Result<Self> {
        match cfg.source {
            SourceKind::Directory => Ok(Self::Directory(DirectorySource::new(
                cfg.devices_dir.clone(),
            ))),
            #[cfg(feature = "kubernetes")]
            SourceKind::Kubernetes => {
                use crate::kubernetes;
                let node = cfg
                    .node_name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "the kubernetes source needs nodeName (or --node-name / NODE_NAME)"
                        )
                    })?;
                let client = kubernetes::client().await?;
                // Nothing records which stored twins were already written: write them all once.
                hub.mark_all_status_dirty();
                let writer = kubernetes::StatusWriter::new(
                    client.clone(),
                    hub.clone(),
                    cfg.status_mode,
                    cfg.status_interval,
                    cfg.status_refresh,
                    cfg.status_qps,
                );
                Ok(Self::Kubernetes {
                    source: kubernetes::KubeSource::new(client, node),
                    writer,
                })
            }
            #[cfg(not(feature = "kubernetes"))]
            SourceKind::Kubernetes => {
                anyhow::bail!("this edgecore-dmi was built without the `kubernetes` feature")
            }
        }
    }

    /// Spawns the source (and the status writer) on `tasks`, sending to `tx`.
    fn spawn(
        self,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
        tx: mpsc::Sender<SourceEvent>,
    ) {
        match self {
            Self::Directory(source) => {
                spawn_critical(
                    tasks,
                    shutdown,
                    "device source",
                    source.run(tx, shutdown.clone()),
                );
            }
            #[cfg(feature = "kubernetes")]
            Self::Kubernetes { source, writer } => {
                spawn_critical(
                    tasks,
                    shutdown,
                    "device source",
                    source.run(tx, shutdown.clone()),
                );
                let sd = shutdown.clone();
                spawn_critical(tasks, shutdown, "status writer", async move {
                    writer.run(sd).await;
                    Ok(())
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn stopped(shutdown: &CancellationToken) -> bool {
        tokio::time::timeout(Duration::from_secs(5), shutdown.cancelled())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_critical_task_that_fails_stops_everything() {
        let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
        spawn_critical(&tasks, &shutdown, "failing", async {
            anyhow::bail!("broken")
        });
        assert!(stopped(&shutdown).await);
    }

    #[tokio::test]
    async fn a_critical_task_that_ends_early_stops_everything() {
        let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
        spawn_critical(&tasks, &shutdown, "quitter", async { Ok(()) });
        assert!(stopped(&shutdown).await);
    }

    #[tokio::test]
    async fn a_critical_task_that_panics_stops_everything() {
        let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
        spawn_critical(&tasks, &shutdown, "panicking", async {
            panic!("bug");
        });
        assert!(stopped(&shutdown).await);
        tasks.close();
        tasks.wait().await;
    }

    #[tokio::test]
    async fn a_critical_task_that_ends_at_shutdown_is_fine() {
        let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let sd = shutdown.clone();
        spawn_critical(&tasks, &shutdown, "worker", async move {
            sd.cancelled().await;
            Ok(())
        });
        let other = CancellationToken::new();
        spawn_critical(&tasks, &other, "idle", std::future::pending());
        shutdown.cancel();
        tasks.close();
        assert!(
            tokio::time::timeout(Duration::from_millis(100), tasks.wait())
                .await
                .is_err(),
            "the idle task still runs"
        );
        assert!(!other.is_cancelled());
    }
}
