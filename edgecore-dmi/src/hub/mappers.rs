//! Mapper links: for each registered mapper its record, its persistent channel,
//! the fingerprints of what it has been sent and what it refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_mapper_service_client::DeviceMapperServiceClient;
use tokio::sync::Notify;
use tonic::transport::Channel;

use super::Hub;
use super::persist::Dirty;
use crate::key::ObjectKey;
use crate::records::MapperRecord;

/// Called with a new mapper's name and kick when its link is created.
pub(crate) type NewMapperHook = Box<dyn Fn(&str, Arc<Notify>) + Send + Sync>;

/// First delay before a refused device or model is offered again.
pub(super) const REFUSAL_RETRY_MIN: Duration = Duration::from_secs(2);
/// Longest delay between offers of a refused device or model.
const REFUSAL_RETRY_MAX: Duration = Duration::from_secs(60);

/// The link to one registered mapper.
pub(super) struct MapperLink {
    /// What the mapper said when it registered.
    pub(super) record: MapperRecord,
    /// Its persistent channel.
    pub(super) client: DeviceMapperServiceClient<Channel>,
    /// Wakes its dispatcher.
    pub(super) kick: Arc<Notify>,
    /// Fingerprints of the devices the mapper has.
    pub(super) sent_devices: HashMap<ObjectKey, u64>,
    /// Fingerprints of the models the mapper has.
    pub(super) sent_models: HashMap<ObjectKey, u64>,
    /// Devices the mapper refused: not offered again before their retry time
    /// unless they change.
    pub(super) refused_devices: HashMap<ObjectKey, Refusal>,
    /// Models the mapper refused, likewise.
    pub(super) refused_models: HashMap<ObjectKey, Refusal>,
    /// Why the mapper could not be reached, until it answers again.
    pub(super) last_error: Option<String>,
    /// Since when it has been unreachable without a break.
    pub(super) unreachable_since: Option<Instant>,
    /// When it last registered, answered a call or reported for one of its
    /// devices, ms since the epoch.
    pub(super) last_contact_ms: Option<u64>,
}

/// Most mapper records kept by default. A node runs one mapper per protocol,
/// a few at most; the bound keeps a peer from filling memory and the store
/// with names. `maxMappers` ([`crate::config::Config::max_mappers`]) changes it.
pub const MAX_MAPPERS: usize = 256;
/// A mapper unreachable this long without a break is forgotten (its record
/// leaves the store; it comes back when it registers again).
pub const MAPPER_EXPIRY: Duration = Duration::from_secs(600);

/// A mapper's answer "no" to one device or model.
#[derive(Debug, Clone)]
pub(super) struct Refusal {
    /// Fingerprint of what was refused; another version is offered at once.
    pub(super) fingerprint: u64,
    /// The mapper's message.
    pub(super) reason: String,
    /// Refusals of this version in a row.
    pub(super) attempts: u32,
    /// When to offer it again.
    pub(super) retry_at: Instant,
}

impl Refusal {
    /// The refusal of version `fingerprint`, after `previous`: the delay doubles
    /// with each refusal of the same version, from [`REFUSAL_RETRY_MIN`] up to
    /// [`REFUSAL_RETRY_MAX`].
    pub(super) fn next(previous: Option<&Refusal>, fingerprint: u64, reason: String) -> Self {
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
    pub(super) fn holds(&self, fingerprint: u64, now: Instant) -> bool {
        self.fingerprint == fingerprint && now < self.retry_at
    }
}

impl Hub {
    /// Creates or updates the link of `record.name`; returns its kick. A new
    /// address gets a new channel and clears what the mapper was sent (it may
    /// be another process). `registered` marks the record for the store (false
    /// when it comes from the store).
    pub(super) fn upsert_link(&self, record: MapperRecord, registered: bool) -> Arc<Notify> {
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
            link.unreachable_since = None;
            if registered {
                link.last_contact_ms = Some(super::twins::now_ms());
            }
            let kick = link.kick.clone();
            st.dirty.insert(Dirty::Mapper(record.name));
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
            unreachable_since: None,
            last_contact_ms: registered.then(super::twins::now_ms),
        };
        st.mappers.insert(name.clone(), link);
        if registered {
            st.dirty.insert(Dirty::Mapper(name.clone()));
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
        let wanted = Self::wanted_for(&st, &protocol);
        let mut models = Vec::new();
        let mut devices = Vec::new();
        let mut sent_models = HashMap::new();
        let mut sent_devices = HashMap::new();
        if with_data {
            for w in wanted {
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    sent_models.entry(w.model.clone())
                {
                    slot.insert(w.model_fingerprint);
                    if let Some(m) = st.models.get(&w.model) {
                        models.push(m.proto.clone());
                    }
                }
                if let Some(d) = self.device_proto(&st, &w.device) {
                    sent_devices.insert(w.device, w.device_fingerprint);
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

    /// Makes room for a registration of `name`: a known name always fits;
    /// a new one fits while fewer than the most kept ([`MAX_MAPPERS`] by
    /// default, [`Hub::set_max_mappers`]) are kept, or by forgetting the
    /// mapper that has been unreachable longest.
    ///
    /// # Errors
    /// When all kept records are of reachable mappers.
    pub(crate) fn admit_mapper(&self, name: &str) -> Result<(), String> {
        let max = self.max_mappers.load(std::sync::atomic::Ordering::Relaxed);
        let mut st = self.lock();
        if st.mappers.contains_key(name) || st.mappers.len() < max {
            return Ok(());
        }
        let oldest = st
            .mappers
            .iter()
            .filter_map(|(n, l)| l.unreachable_since.map(|t| (t, n.clone())))
            .min();
        match oldest {
            Some((_, evict)) => {
                tracing::warn!(mapper = %evict, "forgetting an unreachable mapper to make room for {name}");
                st.mappers.remove(&evict);
                st.dirty.insert(Dirty::Mapper(evict));
                Ok(())
            }
            None => Err(format!(
                "this node already has {max} mappers registered, all reachable (maxMappers)"
            )),
        }
    }

    /// Records that mapper `name` could not be reached. Returns true when it
    /// has been unreachable for [`MAPPER_EXPIRY`] and was therefore forgotten
    /// (its dispatcher should stop).
    pub(crate) fn mapper_unreachable(&self, name: &str, error: String) -> bool {
        let mut st = self.lock();
        let Some(link) = st.mappers.get_mut(name) else {
            return true;
        };
        link.last_error = Some(error);
        let since = *link.unreachable_since.get_or_insert_with(Instant::now);
        if since.elapsed() < MAPPER_EXPIRY {
            return false;
        }
        tracing::warn!(mapper = %name, after = ?MAPPER_EXPIRY, "mapper unreachable for too long; forgetting it until it registers again");
        st.mappers.remove(name);
        st.dirty.insert(Dirty::Mapper(name.to_owned()));
        drop(st);
        self.persist_kick.notify_one();
        true
    }

    /// The client of mapper `name`.
    pub(crate) fn client(&self, name: &str) -> Option<DeviceMapperServiceClient<Channel>> {
        self.lock().mappers.get(name).map(|l| l.client.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::super::fixtures::{
        NODE, deliver_all, device, device_of, hub, keys, model, record, snapshot,
    };
    use super::*;

    #[tokio::test]
    async fn registering_with_data_returns_each_model_once_and_the_devices() {
        let hub = hub();
        snapshot(
            &hub,
            &format!(
                "{NODE}{}{}{}{}{}",
                model("m2", "virtual", 1),
                device("a", "1"),
                device_of("b", "m2", "virtual", "1"),
                device("c", "1"),
                device_of("other", "m", "modbus", "1"),
            ),
        );
        let (models, devices) = hub.register_mapper(record(), true);
        let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["m", "m2"]);
        let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        // What was returned counts as delivered.
        assert!(hub.plan("go-mapper").actions.is_empty());
        let view = hub.status();
        assert_eq!(view.mappers[0].devices, 3);
    }

    #[tokio::test]
    async fn registering_without_data_leaves_everything_to_the_dispatcher() {
        let hub = hub();
        snapshot(&hub, &format!("{NODE}{}", device("a", "1")));
        let (models, devices) = hub.register_mapper(record(), false);
        assert!(models.is_empty() && devices.is_empty());
        assert_eq!(
            keys(&hub.plan("go-mapper")),
            ["create-model default/m", "register default/a"]
        );
    }

    #[tokio::test]
    async fn re_registering_with_a_new_address_clears_what_was_sent() {
        let hub = hub();
        snapshot(&hub, &format!("{NODE}{}", device("a", "1")));
        deliver_all(&hub);
        assert!(hub.plan("go-mapper").actions.is_empty());

        // The same address: the mapper still has its devices.
        hub.upsert_link(record(), true);
        assert!(hub.plan("go-mapper").actions.is_empty());

        // Another address: another process, which has nothing yet.
        let moved = MapperRecord {
            address: "/nonexistent/elsewhere.sock".into(),
            ..record()
        };
        hub.upsert_link(moved.clone(), true);
        assert_eq!(
            keys(&hub.plan("go-mapper")),
            ["create-model default/m", "register default/a"]
        );
        assert_eq!(hub.status().mappers[0].record, moved);

        // A registration without data also starts from nothing, and forgets
        // refusals.
        deliver_all(&hub);
        hub.register_mapper(moved, false);
        assert_eq!(
            keys(&hub.plan("go-mapper")),
            ["create-model default/m", "register default/a"]
        );
    }

    #[tokio::test]
    async fn a_new_mapper_gets_a_dispatcher_once() {
        let started = Arc::new(Mutex::new(Vec::new()));
        let seen = started.clone();
        let hub = Hub::new(
            dmi_proto::config_data::NumberEncoding::Stock,
            dmi_proto::transport::ChannelOptions::default(),
            Box::new(move |name, _| {
                if let Ok(mut v) = seen.lock() {
                    v.push(name.to_owned());
                }
            }),
        );
        hub.register_mapper(record(), false);
        hub.register_mapper(record(), true);
        hub.mapper_unreachable("go-mapper", "connection refused".into());
        assert_eq!(
            hub.status().mappers[0].last_error.as_deref(),
            Some("connection refused")
        );
        hub.register_mapper(record(), false);
        assert_eq!(hub.status().mappers[0].last_error, None);
        assert_eq!(*started.lock().unwrap(), ["go-mapper"]);
        assert!(hub.client("go-mapper").is_some());
        assert!(hub.client("nobody").is_none());
    }

    #[test]
    fn refusals_of_the_same_version_back_off_and_a_new_version_starts_over() {
        let first = Refusal::next(None, 7, "no".into());
        assert_eq!(first.attempts, 1);
        let now = Instant::now();
        assert!(first.holds(7, now));
        assert!(!first.holds(8, now), "another version is offered at once");
        let mut r = first.clone();
        for _ in 0..10 {
            r = Refusal::next(Some(&r), 7, "no".into());
        }
        assert_eq!(r.attempts, 11);
        let wait = r.retry_at.saturating_duration_since(Instant::now());
        assert!(wait <= REFUSAL_RETRY_MAX && wait > REFUSAL_RETRY_MAX / 2);
        let other = Refusal::next(Some(&r), 8, "no".into());
        assert_eq!(other.attempts, 1);
    }
    #[tokio::test]
    async fn the_bound_on_mappers_is_configurable() {
        let hub = hub();
        hub.set_max_mappers(2);
        for n in 0..2 {
            let name = format!("m{n}");
            hub.admit_mapper(&name).unwrap();
            hub.register_mapper(MapperRecord { name, ..record() }, false);
        }
        let e = hub.admit_mapper("m2").unwrap_err();
        assert!(
            e.contains("already has 2 mappers") && e.contains("maxMappers"),
            "{e}"
        );
        hub.set_max_mappers(MAX_MAPPERS * 2);
        hub.admit_mapper("m2").unwrap();
    }

    #[tokio::test]
    async fn the_mapper_registry_is_bounded_and_forgets_long_unreachable_mappers() {
        let hub = hub();
        let named = |n: usize| MapperRecord {
            name: format!("m{n}"),
            ..record()
        };
        for n in 0..MAX_MAPPERS {
            hub.admit_mapper(&format!("m{n}")).unwrap();
            hub.register_mapper(named(n), false);
        }
        // Full of reachable mappers: a new name is refused, a known one admitted.
        assert!(hub.admit_mapper("newcomer").is_err());
        hub.admit_mapper("m3").unwrap();
        // An unreachable one makes room.
        assert!(!hub.mapper_unreachable("m7", "connection refused".into()));
        hub.admit_mapper("newcomer").unwrap();
        assert_eq!(hub.status().mappers.len(), MAX_MAPPERS - 1);
        assert!(hub.status().mappers.iter().all(|m| m.record.name != "m7"));
        // Unreachable past the expiry: forgotten, and its record leaves the store.
        assert!(!hub.mapper_unreachable("m8", "connection refused".into()));
        if let Some(l) = hub.lock().mappers.get_mut("m8") {
            l.unreachable_since = Some(Instant::now() - MAPPER_EXPIRY);
        }
        assert!(hub.mapper_unreachable("m8", "connection refused".into()));
        assert!(hub.status().mappers.iter().all(|m| m.record.name != "m8"));
        let ops = hub.take_dirty(usize::MAX);
        assert!(
            ops.iter().any(|op| matches!(op, crate::store::Op::Delete(crate::store::Table::Mappers, k) if k == "m8")),
            "{ops:?}"
        );
    }
}
