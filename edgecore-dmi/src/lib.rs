//! # edgecore-dmi
//!
//! The edge side of KubeEdge's Device Management Interface: what stock EdgeCore's
//! devicetwin/DMI modules do for mappers, as a small standalone server.
//!
//! * serves `DeviceManagerService` on a Unix socket (default
//!   `/etc/kubeedge/dmi.sock`, mode 0660; a stale socket is replaced, a live one
//!   refused), accepting stock grpc-go mappers' percent-encoded `:authority`;
//! * keeps a registry of mappers by name (several per protocol); each device goes
//!   to every mapper registered for its `spec.protocol.protocolName`, over a
//!   persistent channel per mapper, with RegisterDevice/UpdateDevice/RemoveDevice
//!   and the model calls computed from the difference between what the mapper
//!   has and what it should have;
//! * validates reports as stock EdgeCore does and refuses bad ones with
//!   `InvalidArgument` and a message;
//! * reads Device/DeviceModel YAML from a directory ([`source::DirectorySource`]),
//!   merging model defaults into devices as EdgeCore v1.22+ does;
//! * keeps devices, models, mappers and the latest twins and state in an embedded
//!   store (redb), serves from it right after a restart and re-dials the mappers
//!   it knew;
//! * answers `edgecore-dmi devices` through a local admin socket.
//!
//! Layering: `edgecore-dmi → dmi-proto, device-crds`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! edgecore_dmi::run(edgecore_dmi::Config::default(), shutdown).await
//! # }
//! ```
//!
//! ## Feature flags
//! * `kubernetes` (default): the Kubernetes device source
//!   ([`kubernetes::KubeSource`]) and status write-back
//!   ([`kubernetes::StatusWriter`]), with kube-rs.

pub mod admin;
pub mod cli;
pub mod config;
pub mod convert;
mod dispatch;
pub mod hub;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod model;
pub mod server;
pub mod source;
pub mod store;

pub use config::Config;

use std::sync::Arc;
use std::time::Duration;

use dmi_proto::transport::ChannelOptions;
use dmi_proto::v1beta1::device_manager_service_server::DeviceManagerServiceServer;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::Hub;
use crate::model::{MapperRecord, StoredDevice, StoredModel, TwinState};
use crate::source::{DeviceSource, DirectorySource, SourceEvent};
use crate::store::{Store, Table};

/// How often reported twins are written to the store.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
/// How long tasks get to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn decode_rows<T: serde::de::DeserializeOwned>(
    store: &Store,
    table: Table,
) -> anyhow::Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for (k, v) in store.scan(table)? {
        match serde_json::from_slice(&v) {
            Ok(t) => out.push((k, t)),
            Err(e) => {
                tracing::error!(record = %k, ?table, error = %e, "skipping unreadable stored record")
            }
        }
    }
    Ok(out)
}

/// Runs edgecore-dmi until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let dmi_listener = dmi_proto::transport::bind(&cfg.dmi_socket).await?;
    let store_path = cfg.store_path();
    let store = Arc::new(
        tokio::task::spawn_blocking(move || Store::open(&store_path))
            .await?
            .map_err(|e| {
                anyhow::anyhow!("{e} (is another edgecore-dmi using this state directory?)")
            })?,
    );
    let tracker = TaskTracker::new();
    let (new_mapper_tx, mut new_mapper_rx) = mpsc::channel::<(String, Arc<Notify>)>(1024);
    let hub = Arc::new(Hub::new(
        cfg.encoding.into(),
        ChannelOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: cfg.mapper_call_timeout,
        },
        Box::new(move |name, kick| {
            if new_mapper_tx.try_send((name.to_owned(), kick)).is_err() {
                tracing::error!(mapper = %name, "cannot start the mapper's dispatcher");
            }
        }),
    ));
    {
        let s = store.clone();
        let (devices, models, mappers, twins) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                Ok((
                    decode_rows::<StoredDevice>(&s, Table::Devices)?,
                    decode_rows::<StoredModel>(&s, Table::Models)?,
                    decode_rows::<MapperRecord>(&s, Table::Mappers)?,
                    decode_rows::<TwinState>(&s, Table::Twins)?,
                ))
            })
            .await??;
        tracing::info!(
            devices = devices.len(),
            models = models.len(),
            mappers = mappers.len(),
            "restored from the store"
        );
        hub.restore(
            devices.into_iter().map(|(_, d)| Arc::new(d)).collect(),
            models.into_iter().map(|(_, m)| Arc::new(m)).collect(),
            mappers.into_iter().map(|(_, m)| m).collect(),
            twins,
        );
    }

    // Dispatchers, one per mapper link.
    {
        let (hub, sd, tr) = (hub.clone(), shutdown.clone(), tracker.clone());
        tracker.spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = sd.cancelled() => return,
                    n = new_mapper_rx.recv() => n,
                };
                let Some((name, kick)) = next else { return };
                tr.spawn(dispatch::run(hub.clone(), name, kick, sd.clone()));
            }
        });
    }

    // Persister.
    {
        let (hub, store, sd) = (hub.clone(), store.clone(), shutdown.clone());
        tracker.spawn(async move {
            loop {
                let stop = tokio::select! {
                    _ = sd.cancelled() => true,
                    _ = hub.persist_needed() => false,
                    _ = tokio::time::sleep(PERSIST_INTERVAL) => false,
                };
                let ops = hub.take_dirty();
                if !ops.is_empty() {
                    let s = store.clone();
                    match tokio::task::spawn_blocking(move || s.apply(&ops)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "store write failed"),
                        Err(e) => tracing::error!(error = %e, "store writer panicked"),
                    }
                }
                if stop {
                    return;
                }
            }
        });
    }

    // Device source.
    let (src_tx, mut src_rx) = mpsc::channel::<SourceEvent>(4);
    {
        let sd = shutdown.clone();
        match cfg.source {
            config::SourceKind::Directory => {
                let source = DirectorySource::new(cfg.devices_dir.clone());
                tracker.spawn(async move {
                    if let Err(e) = source.run(src_tx, sd.clone()).await {
                        tracing::error!(error = %e, "device source failed");
                        sd.cancel();
                    }
                });
            }
            #[cfg(feature = "kubernetes")]
            config::SourceKind::Kubernetes => {
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
                let source = kubernetes::KubeSource::new(client.clone(), node);
                tracker.spawn(async move {
                    if let Err(e) = source.run(src_tx, sd.clone()).await {
                        tracing::error!(error = %e, "device source failed");
                        sd.cancel();
                    }
                });
                // Nothing records which stored twins were already written: write them all once.
                hub.mark_all_status_dirty();
                let writer = kubernetes::StatusWriter::new(
                    client,
                    hub.clone(),
                    cfg.status_mode,
                    cfg.status_interval,
                    cfg.status_qps,
                );
                tracker.spawn(writer.run(shutdown.clone()));
            }
            #[cfg(not(feature = "kubernetes"))]
            config::SourceKind::Kubernetes => {
                anyhow::bail!("this edgecore-dmi was built without the `kubernetes` feature");
            }
        }
        let (hub, sd) = (hub.clone(), shutdown.clone());
        tracker.spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = sd.cancelled() => return,
                    e = src_rx.recv() => e,
                };
                match ev {
                    Some(SourceEvent::Snapshot {
                        devices,
                        models,
                        errors,
                    }) => hub.apply_snapshot(devices, models, errors),
                    None => return,
                }
            }
        });
    }

    // Admin API.
    {
        let (hub, sd, path) = (hub.clone(), shutdown.clone(), cfg.admin_socket.clone());
        tracker.spawn(async move {
            if let Err(e) = admin::serve(&path, hub, sd.clone()).await {
                tracing::error!(error = %e, "admin API failed");
                sd.cancel();
            }
        });
    }

    tracing::info!(
        dmi = %cfg.dmi_socket.display(), admin = %cfg.admin_socket.display(),
        devices_dir = %cfg.devices_dir.display(), state_dir = %cfg.state_dir.display(), "edgecore-dmi serving"
    );
    let served = tonic::transport::Server::builder()
        .add_service(DeviceManagerServiceServer::new(server::ManagerService {
            hub,
        }))
        .serve_with_incoming_shutdown(dmi_listener.incoming(), shutdown.clone().cancelled_owned())
        .await;
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("forced exit after {SHUTDOWN_GRACE:?} grace period");
    }
    tracing::info!("edgecore-dmi stopped");
    served.map_err(Into::into)
}
