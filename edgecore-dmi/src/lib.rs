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
//! * answers `edgecore-dmi devices` and `mappers` through a local admin socket,
//!   which also serves Prometheus [`metrics`] at `/metrics`;
//! * optionally bridges KubeEdge's `$hw/events/device/...` MQTT topics
//!   ([`bridge`], `--mqtt-broker`): twin documents, deltas and states out,
//!   desired values in;
//! * optionally serves a read-only dashboard and JSON API over HTTP
//!   ([`web`], `--http-addr`): devices, twins, problems and live charts.
//!
//! Layering: `edgecore-dmi → dmi-proto, device-crds`.
//!
//! Inside, the [`hub`] holds the node's state behind one lock; around it the
//! DMI server ([`server`]), one dispatcher task per mapper, the persister (to
//! the [`store`]), the device [`source`] and the [`admin`] API, wired together
//! by [`run`]. Devices and models are named by [`ObjectKey`]; what is stored is
//! in [`records`], what the admin API shows in [`views`].
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
//! * `jemalloc` (default): the `edgecore-dmi` binary allocates with jemalloc
//!   (tikv-jemallocator), configured in `.cargo/config.toml` to give freed
//!   pages back to the system after about a second from a background thread.
//!   With glibc's allocator a start with 10 000 devices left the process at
//!   82 MiB where its live heap was under 20 MB (benches/README.md,
//!   "edgecore-dmi memory at 10 000 devices"). The library itself never sets
//!   an allocator.

#![warn(missing_docs)]

pub mod admin;
mod app;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod convert;
mod dispatch;
pub mod hub;
pub mod key;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod metrics;
mod persist;
pub mod records;
pub mod server;
pub mod source;
pub mod store;
mod twin_maps;
pub mod validate;
pub mod views;
pub mod web;

pub use app::SHUTDOWN_GRACE;
pub use config::Config;
pub use key::ObjectKey;
pub use persist::PERSIST_INTERVAL;

use tokio_util::sync::CancellationToken;

/// Runs edgecore-dmi with `cfg` until `shutdown` is cancelled, or until one of
/// its tasks (device source, persister, admin API, ...) stops on its own, which
/// cancels `shutdown` too. Tasks then get [`SHUTDOWN_GRACE`] to finish.
///
/// Fails when the configuration cannot be served (socket in use, store locked,
/// a Kubernetes source without a node name) or the DMI server fails.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    app::run(cfg, shutdown).await
}
