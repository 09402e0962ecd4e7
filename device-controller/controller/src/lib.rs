//! # device-controller
//!
//! The cloud side of this project: a kube-rs controller for
//! `devices.kubeedge.io/v1beta1` Devices and DeviceModels. It validates devices
//! against their models and writes a `Ready` condition (reasons `Valid`,
//! `ModelNotFound`, `Invalid`) with events, keeps the
//! `devices.kubeedge.io/node-name` label equal to `spec.nodeName` so edge nodes
//! can watch only their own devices, manages DeviceStatus objects (KubeEdge
//! v1.23 shape) owner-referenced to their Device, and guards DeviceModels that
//! devices still reference with a finalizer. Two replicas are safe (Lease
//! leader election); `/metrics` serves Prometheus counters.
//!
//! Layering: `device-controller → device-crds`. The decisions are plain
//! functions in [`reconcile`], tested without an API server.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use device_controller::{controller::{Context, StatusMode, run}, metrics::Metrics};
//! let client = kube::Client::try_default().await?;
//! let ctx = Context::new(client, Default::default(), StatusMode::DeviceStatus, "replica-1");
//! run(ctx, None, tokio_util::sync::CancellationToken::new()).await;
//! # Ok(()) }
//! ```
//!
//! ## Feature flags
//! None.

pub mod controller;
pub mod leader;
pub mod metrics;
pub mod reconcile;
