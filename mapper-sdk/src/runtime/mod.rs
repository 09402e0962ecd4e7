//! The device panel: every device and model this mapper knows, and one task per
//! device.
//!
//! * A device whose model has not arrived yet is kept and started when the model
//!   comes (EdgeCore may send RegisterDevice before CreateDeviceModel).
//! * An update that changes only desired values is handed to the running task;
//!   anything else restarts the device (the old task is awaited first, so a
//!   serial port or a single-connection device is never opened twice).

mod backoff;
mod device;
mod snapshot;

pub use snapshot::{DesiredOutcome, DeviceSnapshot, PropertySnapshot};

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dmi_proto::v1beta1 as pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::RuntimeConfig;
use crate::device::{DeviceModel, DeviceSpec, ObjectId, device_from_proto, model_from_proto};
use crate::driver::Driver;
use crate::error::SpecError;
use crate::metrics::Metrics;
use crate::report::Reporter;

/// How long a restarting device waits for its old task to let go.
const STOP_GRACE: Duration = Duration::from_secs(10);

struct Running {
    model: Arc<DeviceModel>,
    desired_tx: watch::Sender<Arc<DeviceSpec>>,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

struct Entry {
    proto: pb::Device,
    spec: Arc<DeviceSpec>,
    running: Option<Running>,
    snapshot: Arc<Mutex<DeviceSnapshot>>,
}

#[derive(Default)]
struct State {
    models: HashMap<ObjectId, Arc<DeviceModel>>,
    devices: HashMap<ObjectId, Entry>,
}

/// All devices and models of one mapper; see the module docs.
pub struct Panel<D: Driver> {
    state: Mutex<State>,
    runtime: RuntimeConfig,
    reporter: Reporter,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Devices started so far (each start's order number).
    started: std::sync::atomic::AtomicU64,
    _driver: PhantomData<fn() -> D>,
}

impl<D: Driver> std::fmt::Debug for Panel<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Panel")
            .field("models", &s.models.len())
            .field("devices", &s.devices.len())
            .finish()
    }
}

impl<D: Driver> Panel<D> {
    pub(crate) fn new(
        runtime: RuntimeConfig,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            state: Mutex::new(State::default()),
            runtime,
            reporter,
            metrics,
            tracker,
            shutdown,
            started: std::sync::atomic::AtomicU64::new(0),
            _driver: PhantomData,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces a model; devices using a changed model restart, devices
    /// waiting for it start.
    pub fn upsert_model(&self, proto: &pb::DeviceModel) -> Result<(), SpecError> {
        let model = Arc::new(model_from_proto(proto)?);
        let mut st = self.lock();
        let unchanged = st.models.get(&model.id).is_some_and(|old| **old == *model);
        st.models.insert(model.id.clone(), model.clone());
        if unchanged {
            return Ok(());
        }
        tracing::info!(model = %model.id, properties = model.properties.len(), "model stored");
        let affected: Vec<ObjectId> = st
            .devices
            .iter()
            .filter(|(_, e)| e.spec.model == model.id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in affected {
            self.start_locked(&mut st, &id);
        }
        Ok(())
    }

    /// Forgets a model. Running devices keep the copy they started with.
    pub fn remove_model(&self, id: &ObjectId) {
        if self.lock().models.remove(id).is_some() {
            tracing::info!(model = %id, "model removed");
        }
    }

    /// Adds or replaces a device (RegisterDevice and UpdateDevice).
    pub fn upsert_device(&self, proto: &pb::Device) -> Result<ObjectId, SpecError> {
        let spec = Arc::new(device_from_proto(proto)?);
        let id = spec.id.clone();
        let mut st = self.lock();
        let model = st.models.get(&spec.model).cloned();
        if let Some(entry) = st.devices.get_mut(&id) {
            entry.proto = proto.clone();
            if *entry.spec == *spec {
                return Ok(id);
            }
            let only_desired = entry.spec.without_desired() == spec.without_desired();
            entry.spec = spec.clone();
            if let Some(run) = entry
                .running
                .as_ref()
                .filter(|r| only_desired && model.as_ref() == Some(&r.model))
            {
                tracing::info!(device = %id, "desired values updated");
                run.desired_tx.send_replace(spec);
                return Ok(id);
            }
        } else {
            st.devices.insert(
                id.clone(),
                Entry {
                    proto: proto.clone(),
                    spec,
                    running: None,
                    snapshot: Arc::new(Mutex::new(DeviceSnapshot::default())),
                },
            );
        }
        self.start_locked(&mut st, &id);
        Ok(id)
    }

    /// (Re)starts the device `id` if its model is known.
    fn start_locked(&self, st: &mut State, id: &ObjectId) {
        let Some(entry) = st.devices.get(id) else {
            return;
        };
        let Some(model) = st.models.get(&entry.spec.model).cloned() else {
            tracing::info!(device = %id, model = %entry.spec.model, "waiting for the device model");
            return;
        };
        let Some(entry) = st.devices.get_mut(id) else {
            return;
        };
        let previous = entry.running.take().map(|r| {
            r.cancel.cancel();
            r.handle
        });
        let spec = entry.spec.clone();
        let cancel = self.shutdown.child_token();
        let (desired_tx, desired_rx) = watch::channel(spec.clone());
        *entry.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = DeviceSnapshot::default();
        let ctx = device::DeviceCtx {
            spec: spec.clone(),
            model: model.clone(),
            runtime: self.runtime.clone(),
            reporter: self.reporter.clone(),
            snapshot: entry.snapshot.clone(),
            metrics: self.metrics.clone(),
            label: Metrics::device(id),
            seq: self
                .started
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        let token = cancel.clone();
        let span = tracing::info_span!("device", device = %id);
        let handle = self.tracker.spawn(
            async move {
                if let Some(prev) = previous
                    && tokio::time::timeout(STOP_GRACE, prev).await.is_err()
                {
                    tracing::warn!("previous instance did not stop within {STOP_GRACE:?}");
                }
                device::run_device::<D>(ctx, desired_rx, token).await;
            }
            .instrument(span),
        );
        tracing::info!(device = %id, model = %model.id, properties = spec.properties.len(), "device started");
        entry.running = Some(Running {
            model,
            desired_tx,
            cancel,
            handle,
        });
    }

    /// Stops and forgets a device. Returns whether it was known.
    pub fn remove_device(&self, id: &ObjectId) -> bool {
        let removed = self.lock().devices.remove(id);
        match removed {
            Some(entry) => {
                if let Some(r) = entry.running {
                    r.cancel.cancel();
                }
                self.reporter.forget(id);
                tracing::info!(device = %id, "device removed");
                true
            }
            None => false,
        }
    }

    /// Makes the panel hold exactly these models and devices (MapperRegister data).
    /// Unchanged devices keep running untouched. Returns the devices that failed
    /// to convert, with the reason.
    pub fn sync(&self, models: &[pb::DeviceModel], devices: &[pb::Device]) -> Vec<SpecError> {
        let mut errors = Vec::new();
        for m in models {
            if let Err(e) = self.upsert_model(m) {
                errors.push(e);
            }
        }
        let mut keep = HashSet::new();
        for d in devices {
            keep.insert(ObjectId::new(&d.namespace, &d.name));
            if let Err(e) = self.upsert_device(d) {
                errors.push(e);
            }
        }
        let stale: Vec<ObjectId> = self
            .lock()
            .devices
            .keys()
            .filter(|id| !keep.contains(*id))
            .cloned()
            .collect();
        for id in stale {
            self.remove_device(&id);
        }
        errors
    }

    /// The device as EdgeCore sent it, with `status.twins` filled from the latest
    /// readings (GetDevice).
    pub fn device(&self, id: &ObjectId) -> Option<pb::Device> {
        let st = self.lock();
        let entry = st.devices.get(id)?;
        let snap = entry
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut d = entry.proto.clone();
        let status = d.status.get_or_insert_with(Default::default);
        status.twins = snap
            .properties
            .iter()
            .map(|p| pb::Twin {
                property_name: p.name.clone(),
                reported: Some(pb::TwinProperty {
                    value: p
                        .reported
                        .as_ref()
                        .map(|v| crate::value::sanitize_twin_value(&v.to_string()).0)
                        .unwrap_or_default(),
                    metadata: Default::default(),
                }),
                observed_desired: Some(pb::TwinProperty {
                    value: p.desired.as_ref().map(|d| d.0.clone()).unwrap_or_default(),
                    metadata: Default::default(),
                }),
            })
            .collect();
        Some(d)
    }

    /// Latest snapshot of a device.
    pub fn snapshot(&self, id: &ObjectId) -> Option<DeviceSnapshot> {
        let st = self.lock();
        let e = st.devices.get(id)?;
        let s = e.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(s)
    }

    /// Ids of all known devices.
    pub fn device_ids(&self) -> Vec<ObjectId> {
        let mut ids: Vec<ObjectId> = self.lock().devices.keys().cloned().collect();
        ids.sort();
        ids
    }
}
