//! The node's device state: devices, models, mappers and twins, and what each
//! mapper has been sent. All changes go through here; the dispatcher tasks make
//! each mapper's devices match (level-triggered, so a mapper that was down, a
//! restart or a burst of changes all converge the same way), and the persister
//! writes changed records to the store.

use device_crds::MetaExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dmi_proto::config_data::NumberEncoding;
use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_mapper_service_client::DeviceMapperServiceClient;
use tokio::sync::Notify;
use tonic::transport::Channel;

use crate::convert::{device_to_proto, model_to_proto};
use crate::model::{
    DeviceView, MapperRecord, MapperView, PropertyView, StatusView, StoredDevice, StoredModel,
    TwinRecord, TwinState,
};
use crate::store::{Op, Table};

/// `namespace/name`.
pub type Key = String;

/// Builds a key.
pub fn key(namespace: &str, name: &str) -> Key {
    let ns = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    format!("{ns}/{name}")
}

/// A fingerprint of a message's encoding: what a mapper was sent is remembered
/// by fingerprint, not by copy.
fn fingerprint<M: prost::Message>(m: &M) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.encode_to_vec().hash(&mut h);
    h.finish()
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// What became of the current desired value of a property, for the views:
/// the mapper's own word (`observedDesired.metadata.status`: `applied`,
/// `rejected`, `pending`) when it reported about this desired value; otherwise
/// `applied` when the reported value equals it (mappers generated from
/// KubeEdge's mapper-framework send no such metadata, see
/// [`dmi_proto::rules::same_twin_value`]), `received` when the mapper reports
/// seeing it but the device does not show it yet, and `None` when the mapper has
/// not reported it at all.
pub fn desired_status(desired: Option<&str>, twin: Option<&TwinRecord>) -> Option<String> {
    let desired = desired.filter(|d| !d.is_empty())?;
    let twin = twin?;
    let observed = twin.observed_desired == desired;
    if observed && let Some(st) = twin.desired_meta.get("status") {
        return Some(st.clone());
    }
    if !twin.reported.is_empty() && dmi_proto::rules::same_twin_value(&twin.reported, desired) {
        return Some("applied".to_owned());
    }
    observed.then(|| "received".to_owned())
}

/// A device of the node. Its DMI message is built when it is sent (rarely), not
/// kept: only its fingerprint and protocol are, which keeps 10 000 devices small.
struct DeviceEntry {
    stored: Arc<StoredDevice>,
    /// Fingerprint of the DMI message (0 when it cannot be built).
    fingerprint: u64,
    /// The protocol it goes to, or why it cannot be dispatched.
    protocol: Result<String, String>,
    model_key: Option<Key>,
}

pub(crate) struct MapperLink {
    pub(crate) record: MapperRecord,
    pub(crate) client: DeviceMapperServiceClient<Channel>,
    pub(crate) kick: Arc<Notify>,
    /// Fingerprints of what the mapper has.
    sent_devices: HashMap<Key, u64>,
    sent_models: HashMap<Key, u64>,
    /// Devices and models the mapper refused, by key: not offered again before
    /// their retry time unless they change.
    refused_devices: HashMap<Key, Refusal>,
    refused_models: HashMap<Key, Refusal>,
    last_error: Option<String>,
}

/// First delay before a refused device or model is offered again.
const REFUSAL_RETRY_MIN: Duration = Duration::from_secs(2);
/// Longest delay between offers of a refused device or model.
const REFUSAL_RETRY_MAX: Duration = Duration::from_secs(60);

/// A mapper's answer "no" to one device or model.
#[derive(Debug, Clone)]
struct Refusal {
    /// Fingerprint of what was refused; another version is offered at once.
    fingerprint: u64,
    /// The mapper's message.
    reason: String,
    /// Refusals of this version in a row.
    attempts: u32,
    /// When to offer it again.
    retry_at: Instant,
}

impl Refusal {
    fn next(previous: Option<&Refusal>, fingerprint: u64, reason: String) -> Self {
        let attempts = previous
            .filter(|r| r.fingerprint == fingerprint)
            .map_or(1, |r| r.attempts.saturating_add(1));
        let delay = REFUSAL_RETRY_MIN
            .saturating_mul(1 << (attempts - 1).min(16))
            .min(REFUSAL_RETRY_MAX);
        Self {
            fingerprint,
            reason,
            attempts,
            retry_at: Instant::now() + delay,
        }
    }

    /// Whether `fingerprint` is what was refused and its retry time has not come.
    fn holds(&self, fingerprint: u64, now: Instant) -> bool {
        self.fingerprint == fingerprint && now < self.retry_at
    }
}

/// What a dispatcher should do next for one mapper.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Calls to make now, in order.
    pub(crate) actions: Vec<Action>,
    /// The earliest time a refused device or model is due to be offered again.
    pub(crate) next_retry: Option<Instant>,
}

/// One call a dispatcher makes to bring a mapper up to date.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    CreateModel(Key, pb::DeviceModel),
    UpdateModel(Key, pb::DeviceModel),
    RemoveModel(Key),
    Register(Key, pb::Device),
    Update(Key, pb::Device),
    Remove(Key),
}

struct ModelEntry {
    stored: Arc<StoredModel>,
    proto: pb::DeviceModel,
    fingerprint: u64,
}

impl ModelEntry {
    fn new(stored: Arc<StoredModel>) -> Self {
        let proto = model_to_proto(&stored.crd);
        let fingerprint = fingerprint(&proto);
        Self {
            stored,
            proto,
            fingerprint,
        }
    }
}

#[derive(Default)]
struct State {
    devices: BTreeMap<Key, DeviceEntry>,
    models: BTreeMap<Key, ModelEntry>,
    twins: HashMap<Key, TwinState>,
    mappers: BTreeMap<String, MapperLink>,
    source_errors: Vec<String>,
    dirty: HashSet<(Table, Key)>,
    /// Devices whose twins or state changed since the last status write-back.
    status_dirty: HashSet<Key>,
}

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The device is not on this node.
    #[error("device {0} is not known to this node")]
    UnknownDevice(Key),
}

/// Called with a new mapper's name and kick when its link is created.
pub(crate) type NewMapperHook = Box<dyn Fn(&str, Arc<Notify>) + Send + Sync>;

/// The node's device state. See the module docs.
pub struct Hub {
    state: Mutex<State>,
    encoding: NumberEncoding,
    persist_kick: Notify,
    channel_opts: dmi_proto::transport::ChannelOptions,
    on_new_mapper: NewMapperHook,
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
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads what the store held, before the device source's first scan.
    pub(crate) fn restore(
        &self,
        devices: Vec<Arc<StoredDevice>>,
        models: Vec<Arc<StoredModel>>,
        mappers: Vec<MapperRecord>,
        twins: Vec<(Key, TwinState)>,
    ) {
        {
            let mut st = self.lock();
            for m in models {
                st.models.insert(
                    key(
                        m.crd.metadata.namespace_or_default(),
                        m.crd.metadata.name_str(),
                    ),
                    ModelEntry::new(m),
                );
            }
            for d in devices {
                let k = key(
                    d.crd.metadata.namespace_or_default(),
                    d.crd.metadata.name_str(),
                );
                let entry = self.entry(&st, d);
                st.devices.insert(k, entry);
            }
            st.twins.extend(twins);
        }
        for m in mappers {
            tracing::info!(mapper = %m.name, protocol = %m.protocol, address = %m.address, "re-dialing known mapper");
            self.upsert_link(m, false);
        }
    }

    /// The DMI message of a device, merged with its model.
    fn build(
        &self,
        st: &State,
        stored: &StoredDevice,
        model_key: Option<&Key>,
    ) -> Result<pb::Device, String> {
        let model = model_key
            .and_then(|k| st.models.get(k))
            .map(|m| &m.stored.crd);
        match (model_key, model) {
            (None, _) => Err("spec.deviceModelRef.name is empty".to_owned()),
            (Some(mk), None) => Err(format!("model {mk} not found")),
            (Some(_), Some(m)) => {
                device_to_proto(&stored.crd, Some(m), self.encoding).map_err(|e| e.to_string())
            }
        }
    }

    fn entry(&self, st: &State, stored: Arc<StoredDevice>) -> DeviceEntry {
        let model_key = stored
            .crd
            .spec
            .model_name()
            .map(|m| key(stored.crd.metadata.namespace_or_default(), m));
        let proto = self.build(st, &stored, model_key.as_ref()).and_then(|p| {
            let proto_name = p
                .spec
                .as_ref()
                .and_then(|s| s.protocol.as_ref())
                .map(|p| p.protocol_name.as_str());
            if proto_name.unwrap_or_default().is_empty() {
                Err(
                    "device has no spec.protocol.protocolName (and its model no spec.protocol)"
                        .to_owned(),
                )
            } else {
                Ok(p)
            }
        });
        let fingerprint = proto.as_ref().map(fingerprint).unwrap_or_default();
        let protocol = proto.map(|p| {
            p.spec
                .and_then(|s| s.protocol)
                .map(|p| p.protocol_name)
                .unwrap_or_default()
        });
        DeviceEntry {
            stored,
            fingerprint,
            protocol,
            model_key,
        }
    }

    /// Replaces all devices and models with a source's complete view. Unchanged
    /// objects are left alone; changes reach mappers through the dispatchers.
    pub(crate) fn apply_snapshot(
        &self,
        devices: Vec<Arc<StoredDevice>>,
        models: Vec<Arc<StoredModel>>,
        errors: Vec<String>,
    ) {
        let mut st = self.lock();
        st.source_errors = errors;
        let new_models: BTreeMap<Key, Arc<StoredModel>> = models
            .into_iter()
            .map(|m| {
                (
                    key(
                        m.crd.metadata.namespace_or_default(),
                        m.crd.metadata.name_str(),
                    ),
                    m,
                )
            })
            .collect();
        let mut changed_models = HashSet::new();
        for (k, m) in &new_models {
            if st.models.get(k).map(|o| &o.stored.crd) != Some(&m.crd) {
                tracing::info!(model = %k, origin = %m.origin, "model {}", if st.models.contains_key(k) { "changed" } else { "added" });
                changed_models.insert(k.clone());
                st.dirty.insert((Table::Models, k.clone()));
            }
        }
        let removed_models: Vec<Key> = st
            .models
            .keys()
            .filter(|k| !new_models.contains_key(*k))
            .cloned()
            .collect();
        for k in &removed_models {
            tracing::info!(model = %k, "model removed");
            changed_models.insert(k.clone());
            st.dirty.insert((Table::Models, k.clone()));
        }
        let mut models = std::mem::take(&mut st.models);
        models.retain(|k, _| new_models.contains_key(k));
        for (k, m) in new_models {
            if changed_models.contains(&k) || !models.contains_key(&k) {
                models.insert(k, ModelEntry::new(m));
            }
        }
        st.models = models;

        let new_devices: BTreeMap<Key, Arc<StoredDevice>> = devices
            .into_iter()
            .map(|d| {
                (
                    key(
                        d.crd.metadata.namespace_or_default(),
                        d.crd.metadata.name_str(),
                    ),
                    d,
                )
            })
            .collect();
        let removed: Vec<Key> = st
            .devices
            .keys()
            .filter(|k| !new_devices.contains_key(*k))
            .cloned()
            .collect();
        for k in removed {
            tracing::info!(device = %k, "device removed");
            st.devices.remove(&k);
            st.twins.remove(&k);
            st.dirty.insert((Table::Devices, k.clone()));
            st.dirty.insert((Table::Twins, k));
        }
        for (k, d) in new_devices {
            let same = st.devices.get(&k).is_some_and(|o| o.stored.crd == d.crd);
            let model_changed = st
                .devices
                .get(&k)
                .and_then(|o| o.model_key.as_ref())
                .is_some_and(|mk| changed_models.contains(mk));
            if same && !model_changed {
                continue;
            }
            if !same {
                tracing::info!(device = %k, origin = %d.origin, "device {}", if st.devices.contains_key(&k) { "changed" } else { "added" });
                st.dirty.insert((Table::Devices, k.clone()));
            }
            let entry = self.entry(&st, d);
            if let Err(e) = &entry.protocol {
                tracing::error!(device = %k, origin = %entry.stored.origin, "device cannot be dispatched: {e}");
            }
            st.devices.insert(k, entry);
        }
        // Devices whose model appeared or changed get rebuilt too.
        let rebuild: Vec<Key> = st
            .devices
            .iter()
            .filter(|(_, e)| {
                e.model_key
                    .as_ref()
                    .is_some_and(|mk| changed_models.contains(mk))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in rebuild {
            if let Some(old) = st.devices.remove(&k) {
                let entry = self.entry(&st, old.stored);
                st.devices.insert(k, entry);
            }
        }
        for link in st.mappers.values() {
            link.kick.notify_one();
        }
        drop(st);
        self.persist_kick.notify_one();
    }

    fn protocol_of(e: &DeviceEntry) -> Option<&str> {
        e.protocol.as_deref().ok()
    }

    /// The devices a mapper of `protocol` should have: (device key, device
    /// fingerprint, model key, model fingerprint).
    fn desired_for(st: &State, protocol: &str) -> Vec<(Key, u64, Key, u64)> {
        st.devices
            .iter()
            .filter(|(_, e)| Self::protocol_of(e) == Some(protocol))
            .filter_map(|(k, e)| {
                let mk = e.model_key.clone()?;
                let model = st.models.get(&mk)?;
                Some((k.clone(), e.fingerprint, mk, model.fingerprint))
            })
            .collect()
    }

    fn device_proto(&self, st: &State, k: &str) -> Option<pb::Device> {
        let e = st.devices.get(k)?;
        self.build(st, &e.stored, e.model_key.as_ref()).ok()
    }

    fn upsert_link(&self, record: MapperRecord, registered: bool) -> Arc<Notify> {
        let mut st = self.lock();
        if let Some(link) = st.mappers.get_mut(&record.name) {
            if link.record.address != record.address {
                link.client = DeviceMapperServiceClient::new(dmi_proto::transport::channel(
                    &record.address,
                    self.channel_opts,
                ));
                link.sent_devices.clear();
                link.sent_models.clear();
            }
            link.record = record.clone();
            link.last_error = None;
            let kick = link.kick.clone();
            st.dirty.insert((Table::Mappers, record.name));
            return kick;
        }
        let kick = Arc::new(Notify::new());
        let name = record.name.clone();
        let link = MapperLink {
            client: DeviceMapperServiceClient::new(dmi_proto::transport::channel(
                &record.address,
                self.channel_opts,
            )),
            record,
            kick: kick.clone(),
            sent_devices: HashMap::new(),
            sent_models: HashMap::new(),
            refused_devices: HashMap::new(),
            refused_models: HashMap::new(),
            last_error: None,
        };
        st.mappers.insert(name.clone(), link);
        if registered {
            st.dirty.insert((Table::Mappers, name.clone()));
        }
        drop(st);
        (self.on_new_mapper)(&name, kick.clone());
        kick.notify_one();
        kick
    }

    /// Registers a mapper; returns its devices and their models (each model once),
    /// which count as delivered.
    pub(crate) fn register_mapper(
        &self,
        record: MapperRecord,
        with_data: bool,
    ) -> (Vec<pb::DeviceModel>, Vec<pb::Device>) {
        let protocol = record.protocol.clone();
        let name = record.name.clone();
        let kick = self.upsert_link(record, true);
        let mut st = self.lock();
        let desired = Self::desired_for(&st, &protocol);
        let mut models = Vec::new();
        let mut devices = Vec::new();
        let mut sent_models = HashMap::new();
        let mut sent_devices = HashMap::new();
        if with_data {
            for (k, df, mk, mf) in desired {
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    sent_models.entry(mk.clone())
                {
                    slot.insert(mf);
                    if let Some(m) = st.models.get(&mk) {
                        models.push(m.proto.clone());
                    }
                }
                if let Some(d) = self.device_proto(&st, &k) {
                    sent_devices.insert(k, df);
                    devices.push(d);
                }
            }
        }
        if let Some(link) = st.mappers.get_mut(&name) {
            link.sent_devices = sent_devices;
            link.sent_models = sent_models;
            link.refused_devices.clear();
            link.refused_models.clear();
        }
        drop(st);
        kick.notify_one();
        self.persist_kick.notify_one();
        (models, devices)
    }

    /// The calls that bring mapper `name` up to date. Devices and models the
    /// mapper refused are left out until their retry time (or until they change),
    /// so one refusal never holds up the others.
    pub(crate) fn plan(&self, name: &str) -> Plan {
        let st = self.lock();
        let Some(link) = st.mappers.get(name) else {
            return Plan::default();
        };
        let now = Instant::now();
        let mut next_retry: Option<Instant> = None;
        let mut held = |r: Option<&Refusal>, fingerprint: u64| match r {
            Some(r) if r.holds(fingerprint, now) => {
                next_retry = Some(next_retry.map_or(r.retry_at, |t| t.min(r.retry_at)));
                true
            }
            _ => false,
        };
        let desired = Self::desired_for(&st, &link.record.protocol);
        let mut actions = Vec::new();
        let mut planned_models = HashSet::new();
        let mut keep = HashSet::new();
        let model = |mk: &str| st.models.get(mk).map(|m| m.proto.clone());
        for (k, df, mk, mf) in desired {
            keep.insert(k.clone());
            if planned_models.insert(mk.clone()) && !held(link.refused_models.get(&mk), mf) {
                match link.sent_models.get(&mk) {
                    None => actions.extend(model(&mk).map(|m| Action::CreateModel(mk.clone(), m))),
                    Some(old) if *old != mf => {
                        actions.extend(model(&mk).map(|m| Action::UpdateModel(mk.clone(), m)))
                    }
                    Some(_) => {}
                }
            }
            if held(link.refused_devices.get(&k), df) {
                continue;
            }
            match link.sent_devices.get(&k) {
                None => actions.extend(
                    self.device_proto(&st, &k)
                        .map(|d| Action::Register(k.clone(), d)),
                ),
                Some(old) if *old != df => actions.extend(
                    self.device_proto(&st, &k)
                        .map(|d| Action::Update(k.clone(), d)),
                ),
                Some(_) => {}
            }
        }
        for k in link.sent_devices.keys().filter(|k| !keep.contains(*k)) {
            actions.push(Action::Remove(k.clone()));
        }
        for k in link
            .sent_models
            .keys()
            .filter(|k| !planned_models.contains(*k) && !st.models.contains_key(*k))
        {
            actions.push(Action::RemoveModel(k.clone()));
        }
        Plan {
            actions,
            next_retry,
        }
    }

    /// Records that mapper `name` carried out `action`.
    pub(crate) fn action_done(&self, name: &str, action: &Action) {
        let mut st = self.lock();
        let Some(link) = st.mappers.get_mut(name) else {
            return;
        };
        link.last_error = None;
        match action {
            Action::CreateModel(k, m) | Action::UpdateModel(k, m) => {
                link.sent_models.insert(k.clone(), fingerprint(m));
                link.refused_models.remove(k);
            }
            Action::RemoveModel(k) => {
                link.sent_models.remove(k);
                link.refused_models.remove(k);
            }
            Action::Register(k, d) | Action::Update(k, d) => {
                link.sent_devices.insert(k.clone(), fingerprint(d));
                link.refused_devices.remove(k);
            }
            Action::Remove(k) => {
                link.sent_devices.remove(k);
                link.refused_devices.remove(k);
            }
        }
    }

    /// Records that mapper `name` answered `action` with an error (`reason`).
    ///
    /// A refused registration, update or model is kept apart with its reason
    /// (shown under the device in the views) and offered again after a delay that
    /// doubles with each refusal of the same version (2 s up to 60 s), or at once
    /// when it changes. What the mapper already holds is unchanged: a refused
    /// `UpdateDevice` leaves the previous version recorded as delivered. A refused
    /// removal counts as done: the mapper either does not have the object or
    /// will not let go of it, and asking again cannot change that.
    pub(crate) fn action_refused(&self, name: &str, action: &Action, reason: String) {
        let mut st = self.lock();
        let Some(link) = st.mappers.get_mut(name) else {
            return;
        };
        link.last_error = None;
        match action {
            Action::CreateModel(k, m) | Action::UpdateModel(k, m) => {
                let r = Refusal::next(link.refused_models.get(k), fingerprint(m), reason);
                link.refused_models.insert(k.clone(), r);
            }
            Action::Register(k, d) | Action::Update(k, d) => {
                let r = Refusal::next(link.refused_devices.get(k), fingerprint(d), reason);
                link.refused_devices.insert(k.clone(), r);
            }
            Action::RemoveModel(k) => {
                link.sent_models.remove(k);
                link.refused_models.remove(k);
            }
            Action::Remove(k) => {
                link.sent_devices.remove(k);
                link.refused_devices.remove(k);
            }
        }
    }

    /// Records that mapper `name` could not be reached.
    pub(crate) fn mapper_unreachable(&self, name: &str, error: String) {
        if let Some(link) = self.lock().mappers.get_mut(name) {
            link.last_error = Some(error);
        }
    }

    /// The client of mapper `name`.
    pub(crate) fn client(&self, name: &str) -> Option<DeviceMapperServiceClient<Channel>> {
        self.lock().mappers.get(name).map(|l| l.client.clone())
    }

    /// Stores reported twins.
    pub(crate) fn report_twins(&self, k: Key, twins: Vec<pb::Twin>) -> Result<(), ReportError> {
        let mut st = self.lock();
        if !st.devices.contains_key(&k) {
            return Err(ReportError::UnknownDevice(k));
        }
        let now = now_ms();
        let state = st.twins.entry(k.clone()).or_default();
        for t in twins {
            let reported = t.reported.unwrap_or_default();
            let desired = t.observed_desired.unwrap_or_default();
            state.twins.insert(
                t.property_name,
                TwinRecord {
                    reported: reported.value,
                    reported_meta: reported.metadata.into_iter().collect(),
                    observed_desired: desired.value,
                    desired_meta: desired.metadata.into_iter().collect(),
                    updated_ms: now,
                },
            );
        }
        st.status_dirty.insert(k.clone());
        st.dirty.insert((Table::Twins, k));
        Ok(())
    }

    /// Stores a reported state (already validated and lowercased).
    pub(crate) fn report_state(&self, k: Key, state: String) -> Result<(), ReportError> {
        let mut st = self.lock();
        if !st.devices.contains_key(&k) {
            return Err(ReportError::UnknownDevice(k));
        }
        let t = st.twins.entry(k.clone()).or_default();
        // As stock EdgeCore: lastOnline is now for online/ok and cleared otherwise.
        t.last_online = if state == "online" || state == "ok" {
            Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string())
        } else {
            None
        };
        t.state = Some(state);
        t.state_ms = Some(now_ms());
        st.status_dirty.insert(k.clone());
        st.dirty.insert((Table::Twins, k));
        Ok(())
    }

    /// Takes the devices whose status changed since the last call (coalesced:
    /// each appears once however many reports arrived).
    pub fn take_status_dirty(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.lock().status_dirty.drain().collect();
        keys.sort();
        keys
    }

    /// Puts devices back for the next status write-back (the write failed).
    pub fn mark_status_dirty(&self, keys: impl IntoIterator<Item = Key>) {
        let mut st = self.lock();
        for k in keys {
            if st.devices.contains_key(&k) {
                st.status_dirty.insert(k);
            }
        }
    }

    /// Marks every device with stored twins or state for write-back (after a
    /// restart nothing records what was already written).
    pub fn mark_all_status_dirty(&self) {
        let mut st = self.lock();
        let keys: Vec<Key> = st
            .twins
            .keys()
            .filter(|k| st.devices.contains_key(*k))
            .cloned()
            .collect();
        st.status_dirty.extend(keys);
    }

    /// The latest twins and state of a device, if it is still on this node.
    pub fn twin_state(&self, k: &str) -> Option<TwinState> {
        let st = self.lock();
        st.devices
            .contains_key(k)
            .then(|| st.twins.get(k).cloned().unwrap_or_default())
    }

    /// Waits until something needs persisting.
    pub(crate) async fn persist_needed(&self) {
        self.persist_kick.notified().await;
    }

    /// Takes the changed records as store operations.
    pub(crate) fn take_dirty(&self) -> Vec<Op> {
        let mut st = self.lock();
        let dirty = std::mem::take(&mut st.dirty);
        let mut ops = Vec::with_capacity(dirty.len());
        for (table, k) in dirty {
            let bytes = match table {
                Table::Devices => st.devices.get(&k).map(|e| serde_json::to_vec(&*e.stored)),
                Table::Models => st.models.get(&k).map(|m| serde_json::to_vec(&*m.stored)),
                Table::Mappers => st.mappers.get(&k).map(|l| serde_json::to_vec(&l.record)),
                Table::Twins => st.twins.get(&k).map(serde_json::to_vec),
            };
            match bytes {
                Some(Ok(b)) => ops.push(Op::Put(table, k, b)),
                Some(Err(e)) => tracing::error!(record = %k, error = %e, "cannot serialize record"),
                None => ops.push(Op::Delete(table, k)),
            }
        }
        ops
    }

    /// Everything, for the admin API and the CLI.
    pub fn status(&self) -> StatusView {
        let st = self.lock();
        let now = now_ms();
        let devices = st
            .devices
            .iter()
            .map(|(k, e)| {
                let crd = &e.stored.crd;
                let protocol = Self::protocol_of(e)
                    .map(str::to_owned)
                    .or_else(|| crd.spec.protocol_name().map(str::to_owned))
                    .unwrap_or_default();
                let mappers: Vec<String> = st
                    .mappers
                    .values()
                    .filter(|l| l.sent_devices.contains_key(k))
                    .map(|l| l.record.name.clone())
                    .collect();
                let mut errors = Vec::new();
                if let Err(err) = &e.protocol {
                    errors.push(err.clone());
                } else if !st.mappers.values().any(|l| l.record.protocol == protocol) {
                    errors.push(format!("no mapper registered for protocol `{protocol}`"));
                }
                for l in st.mappers.values() {
                    if let Some(r) = l.refused_devices.get(k) {
                        errors.push(format!(
                            "mapper {} refused the device ({} time{}, offered again in {}s): {}",
                            l.record.name,
                            r.attempts,
                            if r.attempts == 1 { "" } else { "s" },
                            r.retry_at
                                .saturating_duration_since(Instant::now())
                                .as_secs(),
                            r.reason
                        ));
                    }
                    if let Some(r) = e.model_key.as_ref().and_then(|mk| l.refused_models.get(mk)) {
                        errors.push(format!(
                            "mapper {} refused the model {}: {}",
                            l.record.name,
                            e.model_key.as_deref().unwrap_or_default(),
                            r.reason
                        ));
                    }
                }
                let twin = st.twins.get(k);
                let properties = crd
                    .spec
                    .properties
                    .iter()
                    .map(|p| {
                        let t = twin.and_then(|t| t.twins.get(&p.name));
                        PropertyView {
                            name: p.name.clone(),
                            desired: p
                                .desired
                                .as_ref()
                                .map(|d| d.value.clone())
                                .filter(|v| !v.is_empty()),
                            observed_desired: t
                                .map(|t| t.observed_desired.clone())
                                .filter(|v| !v.is_empty()),
                            desired_status: desired_status(
                                p.desired.as_ref().map(|d| d.value.as_str()),
                                t,
                            ),
                            desired_reason: t.and_then(|t| t.desired_meta.get("reason").cloned()),
                            reported: t.map(|t| t.reported.clone()).filter(|r| !r.is_empty()),
                            age_ms: t.map(|t| now.saturating_sub(t.updated_ms)),
                            error: t.and_then(|t| t.reported_meta.get("error").cloned()),
                        }
                    })
                    .collect();
                DeviceView {
                    namespace: crd.metadata.namespace_or_default().to_owned(),
                    name: crd.metadata.name_str().to_owned(),
                    model: crd.spec.model_name().unwrap_or_default().to_owned(),
                    protocol,
                    mappers,
                    state: twin.and_then(|t| t.state.clone()),
                    last_online: twin.and_then(|t| t.last_online.clone()),
                    errors,
                    origin: e.stored.origin.clone(),
                    properties,
                }
            })
            .collect();
        let mappers = st
            .mappers
            .values()
            .map(|l| MapperView {
                record: l.record.clone(),
                devices: l.sent_devices.len(),
                last_error: l.last_error.clone(),
            })
            .collect();
        StatusView {
            devices,
            mappers,
            source_errors: st.source_errors.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twin(reported: &str, observed: &str, status: Option<&str>) -> TwinRecord {
        TwinRecord {
            reported: reported.into(),
            observed_desired: observed.into(),
            desired_meta: status
                .map(|s| [("status".to_owned(), s.to_owned())].into_iter().collect())
                .unwrap_or_default(),
            ..TwinRecord::default()
        }
    }

    #[test]
    fn a_go_mapper_reporting_the_desired_value_shows_applied() {
        // mapper-framework sends observedDesired without any status metadata.
        let t = twin("22", "22", None);
        assert_eq!(
            desired_status(Some("22"), Some(&t)).as_deref(),
            Some("applied")
        );
        let t = twin("22.0", "", None);
        assert_eq!(
            desired_status(Some("22"), Some(&t)).as_deref(),
            Some("applied")
        );
        let t = twin("20", "22", None);
        assert_eq!(
            desired_status(Some("22"), Some(&t)).as_deref(),
            Some("received")
        );
        let t = twin("20", "18", None);
        assert_eq!(desired_status(Some("22"), Some(&t)), None);
        assert_eq!(desired_status(Some("22"), None), None);
        assert_eq!(desired_status(None, Some(&t)), None);
    }

    const NODE: &str = "apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: { name: m }
spec:
  protocol: virtual
  properties:
    - { name: set, type: INT, accessMode: ReadWrite }
";

    fn device(name: &str, desired: &str) -> String {
        format!(
            "---\napiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {{ name: {name} }}\n\
             spec:\n  deviceModelRef: {{ name: m }}\n  protocol: {{ protocolName: virtual }}\n  \
             properties:\n    - {{ name: set, desired: {{ value: \"{desired}\" }} }}\n"
        )
    }

    fn snapshot(hub: &Hub, text: &str) {
        let parsed = crate::source::parse_file("test", text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        hub.apply_snapshot(
            parsed.devices.into_iter().map(Arc::new).collect(),
            parsed.models.into_iter().map(Arc::new).collect(),
            Vec::new(),
        );
    }

    fn record() -> MapperRecord {
        MapperRecord {
            name: "go-mapper".into(),
            version: String::new(),
            api_version: String::new(),
            protocol: "virtual".into(),
            address: "/nonexistent/go.sock".into(),
            state: "ok".into(),
            registered_at: String::new(),
        }
    }

    fn keys(plan: &Plan) -> Vec<String> {
        plan.actions
            .iter()
            .map(|a| match a {
                Action::CreateModel(k, _) => format!("create-model {k}"),
                Action::UpdateModel(k, _) => format!("update-model {k}"),
                Action::RemoveModel(k) => format!("remove-model {k}"),
                Action::Register(k, _) => format!("register {k}"),
                Action::Update(k, _) => format!("update {k}"),
                Action::Remove(k) => format!("remove {k}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_refused_device_waits_its_turn_and_never_blocks_the_others() {
        let hub = Hub::new(
            NumberEncoding::Stock,
            dmi_proto::transport::ChannelOptions::default(),
            Box::new(|_, _| {}),
        );
        snapshot(
            &hub,
            &format!("{NODE}{}{}", device("a", "1"), device("b", "1")),
        );
        hub.register_mapper(record(), false);
        let plan = hub.plan("go-mapper");
        assert_eq!(
            keys(&plan),
            [
                "create-model default/m",
                "register default/a",
                "register default/b"
            ]
        );
        for a in &plan.actions {
            match a {
                Action::Register(k, _) if k == "default/a" => {
                    hub.action_refused("go-mapper", a, "add device failed: bad visitor".into())
                }
                _ => hub.action_done("go-mapper", a),
            }
        }
        // Refused: held back, with a retry time; nothing else is pending.
        let plan = hub.plan("go-mapper");
        assert!(plan.actions.is_empty(), "{:?}", keys(&plan));
        let retry = plan
            .next_retry
            .map(|t| t.saturating_duration_since(Instant::now()));
        assert!(retry.is_some_and(|d| d > Duration::from_secs(1) && d <= REFUSAL_RETRY_MIN));
        let view = hub.status();
        let a = view
            .devices
            .iter()
            .find(|d| d.name == "a")
            .map(|d| d.errors.clone());
        assert!(a.unwrap_or_default().iter().any(|e| {
            e.contains("mapper go-mapper refused the device (1 time") && e.contains("bad visitor")
        }),);
        // A device added later goes out at once, past the refused one.
        snapshot(
            &hub,
            &format!(
                "{NODE}{}{}{}",
                device("a", "1"),
                device("b", "1"),
                device("c", "1")
            ),
        );
        assert_eq!(keys(&hub.plan("go-mapper")), ["register default/c"]);
        // An edit of b goes out at once too.
        snapshot(
            &hub,
            &format!(
                "{NODE}{}{}{}",
                device("a", "1"),
                device("b", "2"),
                device("c", "1")
            ),
        );
        assert_eq!(
            keys(&hub.plan("go-mapper")),
            ["update default/b", "register default/c"]
        );
        // When its time comes, the refused device is offered again; a second
        // refusal doubles the delay.
        if let Some(link) = hub.lock().mappers.get_mut("go-mapper")
            && let Some(r) = link.refused_devices.get_mut("default/a")
        {
            r.retry_at = Instant::now();
        }
        let plan = hub.plan("go-mapper");
        let again = plan
            .actions
            .iter()
            .find(|a| matches!(a, Action::Register(k, _) if k == "default/a"));
        let Some(again) = again.cloned() else {
            panic!("refused device not offered again: {:?}", keys(&plan));
        };
        hub.action_refused("go-mapper", &again, "still bad".into());
        let st = hub.lock();
        let r = &st.mappers["go-mapper"].refused_devices["default/a"];
        assert_eq!(r.attempts, 2);
        assert!(r.retry_at.saturating_duration_since(Instant::now()) > REFUSAL_RETRY_MIN);
        drop(st);
        // Once accepted, the refusal is forgotten.
        hub.action_done("go-mapper", &again);
        assert!(hub.status().devices.iter().all(|d| d.errors.is_empty()));
    }

    #[test]
    fn the_mappers_own_word_wins_for_the_current_desired_value() {
        let t = twin("20", "22", Some("rejected"));
        assert_eq!(
            desired_status(Some("22"), Some(&t)).as_deref(),
            Some("rejected")
        );
        // A status about an older desired value says nothing about this one.
        let t = twin("20", "18", Some("applied"));
        assert_eq!(desired_status(Some("22"), Some(&t)), None);
    }
}
