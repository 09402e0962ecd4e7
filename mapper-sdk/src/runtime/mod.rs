//! The device supervisor: every device and model this mapper knows, and one
//! task per device ([`task`]), all over one type-erased driver.
//!
//! * A device whose model has not arrived yet is kept and started when the model
//!   comes (EdgeCore may send RegisterDevice before CreateDeviceModel).
//! * An update that changes only desired values is handed to the running task;
//!   anything else restarts the device (the old task is awaited first, so a
//!   serial port or a single-connection device is never opened twice).

mod snapshot;
mod task;

pub use snapshot::{DesiredOutcome, DeviceSnapshot, PropertySnapshot};
pub use task::WriteError;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::RuntimeConfig;
use crate::driver::DynDriver;
use crate::metrics::Metrics;
use crate::sample::SampleSink;
use crate::spec::{DeviceModel, DeviceSpec, ObjectId};
use crate::twin::Reporter;

/// How long a restarting device waits for its old task to let go.
const STOP_GRACE: Duration = Duration::from_secs(10);

struct Running {
    model: Arc<DeviceModel>,
    desired_tx: watch::Sender<Arc<DeviceSpec>>,
    commands: tokio::sync::mpsc::Sender<task::WriteCommand>,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

struct Entry {
    spec: Arc<DeviceSpec>,
    running: Option<Running>,
    snapshot: Arc<Mutex<DeviceSnapshot>>,
}

#[derive(Default)]
struct State {
    models: HashMap<ObjectId, Arc<DeviceModel>>,
    devices: HashMap<ObjectId, Entry>,
}

/// Writes waiting for one device (REST data panel); beyond it a write is
/// refused at once.
const WRITE_QUEUE: usize = 16;

/// All devices and models of one mapper; see the module docs.
pub struct Supervisor {
    driver: Arc<dyn DynDriver>,
    sinks: Arc<[Arc<dyn SampleSink>]>,
    state: Mutex<State>,
    runtime: RuntimeConfig,
    reporter: Reporter,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Devices started so far (each start's order number).
    started: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Supervisor")
            .field("models", &s.models.len())
            .field("devices", &s.devices.len())
            .finish()
    }
}

impl Supervisor {
    pub(crate) fn new(
        driver: Arc<dyn DynDriver>,
        sinks: Vec<Arc<dyn SampleSink>>,
        runtime: RuntimeConfig,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            driver,
            sinks: sinks.into(),
            state: Mutex::new(State::default()),
            runtime,
            reporter,
            metrics,
            tracker,
            shutdown,
            started: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces a model; devices using a changed model restart, devices
    /// waiting for it start.
    pub fn upsert_model(&self, model: DeviceModel) {
        let model = Arc::new(model);
        let mut st = self.lock();
        let unchanged = st.models.get(&model.id).is_some_and(|old| **old == *model);
        st.models.insert(model.id.clone(), model.clone());
        if unchanged {
            return;
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
    }

    /// Forgets a model. Running devices keep the copy they started with.
    pub fn remove_model(&self, id: &ObjectId) {
        if self.lock().models.remove(id).is_some() {
            tracing::info!(model = %id, "model removed");
        }
    }

    /// Adds or replaces a device (RegisterDevice and UpdateDevice); returns its id.
    pub fn upsert_device(&self, spec: DeviceSpec) -> ObjectId {
        let spec = Arc::new(spec);
        let id = spec.id.clone();
        let mut st = self.lock();
        let model = st.models.get(&spec.model).cloned();
        if let Some(entry) = st.devices.get_mut(&id) {
            if *entry.spec == *spec {
                return id;
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
                return id;
            }
        } else {
            st.devices.insert(
                id.clone(),
                Entry {
                    spec,
                    running: None,
                    snapshot: Arc::new(Mutex::new(DeviceSnapshot::default())),
                },
            );
        }
        self.start_locked(&mut st, &id);
        id
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
        let (commands, commands_rx) = tokio::sync::mpsc::channel(WRITE_QUEUE);
        *entry.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = DeviceSnapshot::default();
        for sink in self.sinks.iter() {
            sink.device_started(&spec, &model);
        }
        let ctx = task::DeviceCtx {
            driver: self.driver.clone(),
            sinks: self.sinks.clone(),
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
                task::run_device(ctx, desired_rx, commands_rx, token).await;
            }
            .instrument(span),
        );
        tracing::info!(device = %id, model = %model.id, properties = spec.properties.len(), "device started");
        entry.running = Some(Running {
            model,
            desired_tx,
            commands,
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
                for sink in self.sinks.iter() {
                    sink.device_stopped(id);
                }
                tracing::info!(device = %id, "device removed");
                true
            }
            None => false,
        }
    }

    /// Makes the supervisor hold exactly these models and devices (what
    /// MapperRegister returned). Unchanged devices keep running untouched.
    pub fn sync(&self, models: Vec<DeviceModel>, devices: Vec<DeviceSpec>) {
        for m in models {
            self.upsert_model(m);
        }
        let mut keep = HashSet::new();
        for d in devices {
            keep.insert(d.id.clone());
            self.upsert_device(d);
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
    }

    /// Latest snapshot of a device.
    pub fn snapshot(&self, id: &ObjectId) -> Option<DeviceSnapshot> {
        let st = self.lock();
        let e = st.devices.get(id)?;
        let s = e.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(s)
    }

    /// The spec and model of a running device.
    pub fn device(&self, id: &ObjectId) -> Option<(Arc<DeviceSpec>, Arc<DeviceModel>)> {
        let st = self.lock();
        let e = st.devices.get(id)?;
        let model = e.running.as_ref()?.model.clone();
        Some((e.spec.clone(), model))
    }

    /// Writes `value` (text, converted per the model) to `property` of device
    /// `id` now, outside the desired-value path: mapper-framework's
    /// device-method write (spec §4.6). Waits for the device's answer, at most
    /// twice the runtime's `io_timeout`.
    ///
    /// # Errors
    /// [`WriteError`]: unknown device or property, a value the model refuses,
    /// the device unreachable (or not answering in time), or refusing.
    pub async fn write_property(
        &self,
        id: &ObjectId,
        property: &str,
        value: &str,
    ) -> Result<(), WriteError> {
        let tx = {
            let st = self.lock();
            let e = st
                .devices
                .get(id)
                .ok_or_else(|| WriteError::UnknownDevice(id.to_string()))?;
            match &e.running {
                Some(r) => r.commands.clone(),
                None => {
                    return Err(WriteError::Unreachable {
                        device: id.to_string(),
                        reason: "waiting for its device model".into(),
                    });
                }
            }
        };
        let unreachable = |reason: &str| WriteError::Unreachable {
            device: id.to_string(),
            reason: reason.to_owned(),
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        let cmd = task::WriteCommand {
            property: property.to_owned(),
            value: value.to_owned(),
            reply,
        };
        let wait = self.runtime.io_timeout * 2;
        tx.try_send(cmd).map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(_) => WriteError::Busy(id.to_string()),
            tokio::sync::mpsc::error::TrySendError::Closed(_) => unreachable("the device stopped"),
        })?;
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(unreachable("the device stopped")),
            Err(_) => Err(unreachable(&format!("no answer within {wait:?}"))),
        }
    }

    /// Ids of all known devices.
    pub fn device_ids(&self) -> Vec<ObjectId> {
        let mut ids: Vec<ObjectId> = self.lock().devices.keys().cloned().collect();
        ids.sort();
        ids
    }
}
