//! The node's device state: devices, models, mappers and twins, and what each
//! mapper has been sent. All changes go through here; the dispatcher tasks make
//! each mapper's devices match (level-triggered, so a mapper that was down, a
//! restart or a burst of changes all converge the same way), and the persister
//! writes changed records to the store.
//!
//! Everything sits behind one lock ([`Hub`] holds a `Mutex<State>`), held only
//! for short, synchronous steps and never across an `.await`. The code is split
//! by concern, each file an `impl Hub` block over the shared state:
//!
//! * `catalog`: devices and models, as a source's snapshot or the store gave
//!   them, each device with the fingerprint of its DMI message;
//! * `mappers`: the link to each registered mapper (its channel, what it was
//!   sent, what it refused);
//! * `plan`: the calls that bring one mapper up to date, and their outcome;
//! * `twins`: reported twins and states, and which devices need a status
//!   write-back;
//! * `persist`: which records changed since the store was last written;
//! * `view`: the admin API's views;
//! * `desired`: desired values set on the edge (the MQTT bridge), checked as
//!   the cloud controller checks YAML ones and sent to mappers the way YAML
//!   edits are;
//! * `observe`: accepted twin and state reports, broadcast to observers (the
//!   MQTT bridge).

mod catalog;
mod desired;
mod mappers;
mod observe;
mod persist;
mod plan;
mod twins;
mod view;

#[cfg(test)]
mod fixtures;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use dmi_proto::config_data::NumberEncoding;
use tokio::sync::{Notify, broadcast};

use crate::key::ObjectKey;
use crate::records::TwinState;

use self::catalog::{DeviceEntry, ModelEntry};
use self::mappers::MapperLink;
use self::persist::Dirty;

pub use self::desired::DesiredRefusal;
pub(crate) use self::mappers::NewMapperHook;
pub use self::mappers::{MAPPER_EXPIRY, MAX_MAPPERS};
pub use self::observe::{CHANGE_QUEUE, Change, StateChange, TwinChange, TwinsChange};
pub(crate) use self::plan::Action;
pub use self::twins::{
    MAX_METADATA_ENTRIES, MAX_METADATA_KEY, MAX_METADATA_VALUE, ReportError, desired_status,
};

/// Everything the hub knows, behind its one lock.
#[derive(Default)]
struct State {
    /// The node's devices.
    devices: BTreeMap<ObjectKey, DeviceEntry>,
    /// The models.
    models: BTreeMap<ObjectKey, ModelEntry>,
    /// Latest twins and state per device.
    twins: HashMap<ObjectKey, TwinState>,
    /// Registered mappers by name.
    mappers: BTreeMap<String, MapperLink>,
    /// The device source's problems (bad files), for the views.
    source_errors: Vec<String>,
    /// Records changed since the store was last written.
    dirty: HashSet<Dirty>,
    /// Devices whose twins or state changed since the last status write-back.
    status_dirty: HashSet<ObjectKey>,
    /// Devices removed from the node so far (the status writer forgets what
    /// it wrote when this moves: a device that comes back starts afresh).
    removals: u64,
}

/// The node's device state. See the module docs.
pub struct Hub {
    state: Mutex<State>,
    /// How configData numbers are encoded in the DMI messages to mappers.
    encoding: NumberEncoding,
    /// Wakes the persister.
    persist_kick: Notify,
    /// Options of the channels to mappers.
    channel_opts: dmi_proto::transport::ChannelOptions,
    /// Called when a mapper link is created.
    on_new_mapper: NewMapperHook,
    /// Accepted reports, for observers ([`Hub::subscribe_changes`]).
    changes: broadcast::Sender<Change>,
    /// Most mapper records kept ([`MAX_MAPPERS`] unless configured).
    max_mappers: std::sync::atomic::AtomicUsize,
    /// Counters of `/metrics`.
    metrics: crate::metrics::NodeMetrics,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Hub")
            .field("devices", &s.devices.len())
            .field("mappers", &s.mappers.len())
            .finish()
    }
}

impl Hub {
    /// A hub; `on_new_mapper(name, kick)` is called when a mapper link is created
    /// (the caller spawns its dispatcher).
    pub(crate) fn new(
        encoding: NumberEncoding,
        channel_opts: dmi_proto::transport::ChannelOptions,
        on_new_mapper: NewMapperHook,
    ) -> Self {
        Self {
            state: Mutex::new(State::default()),
            encoding,
            persist_kick: Notify::new(),
            channel_opts,
            on_new_mapper,
            changes: broadcast::channel(CHANGE_QUEUE).0,
            max_mappers: std::sync::atomic::AtomicUsize::new(MAX_MAPPERS),
            metrics: crate::metrics::NodeMetrics::default(),
        }
    }

    /// Sets how many mapper records are kept (default [`MAX_MAPPERS`], at
    /// least 1): registrations beyond it are refused while every kept mapper
    /// is reachable (`maxMappers`, [`crate::config::Config::max_mappers`]).
    pub fn set_max_mappers(&self, n: usize) {
        self.max_mappers
            .store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// The node's counters ([`crate::metrics`]).
    pub fn metrics(&self) -> &crate::metrics::NodeMetrics {
        &self.metrics
    }

    /// The gauges of [`crate::metrics`] now.
    pub fn gauges(&self) -> crate::metrics::Gauges {
        let st = self.lock();
        let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
        for k in st.devices.keys() {
            let state = st
                .twins
                .get(k)
                .and_then(|t| t.state.as_deref())
                .filter(|s| !s.is_empty())
                .unwrap_or("unknown");
            *by_state.entry(state.to_owned()).or_default() += 1;
        }
        crate::metrics::Gauges {
            devices: st.devices.len(),
            models: st.models.len(),
            by_state: by_state.into_iter().collect(),
            mappers: st.mappers.len(),
            mappers_unreachable: st
                .mappers
                .values()
                .filter(|l| l.unreachable_since.is_some())
                .count(),
            status_queue: st.status_dirty.len(),
        }
    }

    /// The `/metrics` text: counters and the gauges now.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(&self.gauges())
    }

    /// The state. A panic while the lock was held (a bug) does not take the
    /// whole hub down with it: the state is used as that step left it.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
