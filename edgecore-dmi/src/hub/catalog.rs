//! The catalog: the node's devices and models, as the device source's latest
//! snapshot (or the store, at start) gave them. A device is kept with the
//! fingerprint of its DMI message and the protocol it goes to, or why it cannot
//! be dispatched; its message is built again only when it is sent.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use dmi_proto::v1beta1 as pb;

use super::persist::Dirty;
use super::{Hub, State};
use crate::convert::{device_to_proto, model_to_proto};
use crate::key::ObjectKey;
use crate::records::{MapperRecord, StoredDevice, StoredModel, TwinState};

/// A fingerprint of a message's encoding: what a mapper was sent is remembered
/// by fingerprint, not by copy.
pub(super) fn fingerprint<M: prost::Message>(m: &M) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.encode_to_vec().hash(&mut h);
    h.finish()
}

/// A device of the node. Its DMI message is built when it is sent (rarely), not
/// kept: only its fingerprint and protocol are, which keeps 10 000 devices small.
pub(super) struct DeviceEntry {
    /// The resource and its origin.
    pub(super) stored: Arc<StoredDevice>,
    /// Fingerprint of the DMI message (0 when it cannot be built).
    pub(super) fingerprint: u64,
    /// The protocol it goes to (shared with its model's when they are the
    /// same name, as they nearly always are), or why it cannot be dispatched.
    pub(super) protocol: Result<Arc<str>, String>,
    /// Its model, when it names one.
    pub(super) model_key: Option<ObjectKey>,
}

impl DeviceEntry {
    /// The protocol it goes to, if it can be dispatched.
    pub(super) fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref().ok()
    }
}

/// A model of the node, with its DMI message (models are few and small).
pub(super) struct ModelEntry {
    /// The resource and its origin.
    pub(super) stored: Arc<StoredModel>,
    /// Its DMI message.
    pub(super) proto: pb::DeviceModel,
    /// Fingerprint of `proto`.
    pub(super) fingerprint: u64,
    /// `spec.protocol`, shared by the entries of its devices.
    pub(super) protocol: Arc<str>,
}

impl ModelEntry {
    fn new(stored: Arc<StoredModel>) -> Self {
        let proto = model_to_proto(&stored.crd);
        let fingerprint = fingerprint(&proto);
        Self {
            protocol: stored.crd.spec.protocol.as_str().into(),
            stored,
            proto,
            fingerprint,
        }
    }
}

/// One device a mapper should have, with its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Wanted {
    /// The device.
    pub(super) device: ObjectKey,
    /// Fingerprint of its DMI message.
    pub(super) device_fingerprint: u64,
    /// Its model.
    pub(super) model: ObjectKey,
    /// Fingerprint of the model's DMI message.
    pub(super) model_fingerprint: u64,
}

impl Hub {
    /// Loads what the store held, before the device source's first scan, and
    /// re-dials the mappers it knew.
    pub(crate) fn restore(
        &self,
        devices: Vec<Arc<StoredDevice>>,
        models: Vec<Arc<StoredModel>>,
        mappers: Vec<MapperRecord>,
        twins: Vec<(ObjectKey, TwinState)>,
    ) {
        {
            let mut st = self.lock();
            // Twins first: they hold the desired values set on the edge,
            // which the devices' messages include.
            st.twins.extend(twins);
            for m in models {
                st.models
                    .insert(ObjectKey::from_meta(&m.crd.metadata), ModelEntry::new(m));
            }
            for d in devices {
                let k = d.key().clone();
                let entry = self.entry(&st, d);
                st.devices.insert(k, entry);
            }
        }
        for m in mappers {
            tracing::info!(mapper = %m.name, protocol = %m.protocol, address = %m.address, "re-dialing known mapper");
            self.upsert_link(m, false);
        }
    }

    /// The DMI message of a device, merged with its model, with the desired
    /// values set on the edge (`desired`).
    fn build(
        &self,
        st: &State,
        stored: &StoredDevice,
        model_key: Option<&ObjectKey>,
    ) -> Result<pb::Device, String> {
        let model = model_key
            .and_then(|k| st.models.get(k))
            .map(|m| &m.stored.crd);
        match (model_key, model) {
            (None, _) => Err("spec.deviceModelRef.name is empty".to_owned()),
            (Some(mk), None) => Err(format!("model {mk} not found")),
            (Some(_), Some(m)) => device_to_proto(&stored.crd()?, Some(m), self.encoding)
                .map(|mut d| {
                    Self::apply_edge_desired(st, stored.key(), &mut d);
                    d
                })
                .map_err(|e| e.to_string()),
        }
    }

    /// The catalog entry of a device, against the models in `st`.
    pub(super) fn entry(&self, st: &State, stored: Arc<StoredDevice>) -> DeviceEntry {
        let model_key = stored.model_key().cloned();
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
        let model = model_key.as_ref().and_then(|k| st.models.get(k));
        let protocol = proto.map(|p| {
            let name = p
                .spec
                .and_then(|s| s.protocol)
                .map(|p| p.protocol_name)
                .unwrap_or_default();
            match model {
                Some(m) if *m.protocol == *name => m.protocol.clone(),
                _ => name.into(),
            }
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
        let new_models: BTreeMap<ObjectKey, Arc<StoredModel>> = models
            .into_iter()
            .map(|m| (ObjectKey::from_meta(&m.crd.metadata), m))
            .collect();
        let mut changed_models = HashSet::new();
        for (k, m) in &new_models {
            if st.models.get(k).map(|o| &o.stored.crd) != Some(&m.crd) {
                tracing::info!(model = %k, origin = %m.origin, "model {}", if st.models.contains_key(k) { "changed" } else { "added" });
                changed_models.insert(k.clone());
                st.dirty.insert(Dirty::Model(k.clone()));
            }
        }
        let removed_models: Vec<ObjectKey> = st
            .models
            .keys()
            .filter(|k| !new_models.contains_key(*k))
            .cloned()
            .collect();
        for k in &removed_models {
            tracing::info!(model = %k, "model removed");
            changed_models.insert(k.clone());
            st.dirty.insert(Dirty::Model(k.clone()));
        }
        let mut models = std::mem::take(&mut st.models);
        models.retain(|k, _| new_models.contains_key(k));
        for (k, m) in new_models {
            if changed_models.contains(&k) || !models.contains_key(&k) {
                models.insert(k, ModelEntry::new(m));
            }
        }
        st.models = models;

        let new_devices: BTreeMap<ObjectKey, Arc<StoredDevice>> =
            devices.into_iter().map(|d| (d.key().clone(), d)).collect();
        let removed: Vec<ObjectKey> = st
            .devices
            .keys()
            .filter(|k| !new_devices.contains_key(*k))
            .cloned()
            .collect();
        for k in removed {
            tracing::info!(device = %k, "device removed");
            st.devices.remove(&k);
            st.twins.remove(&k);
            st.removals += 1;
            st.dirty.insert(Dirty::Device(k.clone()));
            st.dirty.insert(Dirty::Twins(k));
        }
        for (k, d) in new_devices {
            let same = st
                .devices
                .get(&k)
                .is_some_and(|o| o.stored.same_resource(&d));
            let model_changed = st
                .devices
                .get(&k)
                .and_then(|o| o.model_key.as_ref())
                .is_some_and(|mk| changed_models.contains(mk));
            if same && !model_changed {
                // The same resource in another record (the store's, at start):
                // keep the source's, which it holds anyway, so that the node
                // holds one copy of each device, not two. Re-inserted, so that
                // the map's key is the source's too.
                let other_record = st
                    .devices
                    .get(&k)
                    .is_some_and(|o| !Arc::ptr_eq(&o.stored, &d));
                if other_record && let Some(mut o) = st.devices.remove(&k) {
                    o.model_key = d.model_key().cloned();
                    o.stored = d;
                    st.devices.insert(k, o);
                }
                continue;
            }
            if !same {
                tracing::info!(device = %k, origin = %d.origin(), "device {}", if st.devices.contains_key(&k) { "changed" } else { "added" });
                st.dirty.insert(Dirty::Device(k.clone()));
                Self::reconcile_edge_desired(&mut st, &k, &d);
            }
            let entry = self.entry(&st, d);
            if let Err(e) = &entry.protocol {
                tracing::error!(device = %k, origin = %entry.stored.origin(), "device cannot be dispatched: {e}");
            }
            st.devices.insert(k, entry);
        }
        // Devices whose model appeared or changed get rebuilt too.
        let rebuild: Vec<ObjectKey> = st
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

    /// The devices a mapper of `protocol` should have, with their models, in
    /// device key order. Devices that cannot be dispatched or whose model is
    /// missing are left out.
    pub(super) fn wanted_for(st: &State, protocol: &str) -> Vec<Wanted> {
        st.devices
            .iter()
            .filter(|(_, e)| e.protocol() == Some(protocol))
            .filter_map(|(k, e)| {
                let model = e.model_key.clone()?;
                let m = st.models.get(&model)?;
                Some(Wanted {
                    device: k.clone(),
                    device_fingerprint: e.fingerprint,
                    model,
                    model_fingerprint: m.fingerprint,
                })
            })
            .collect()
    }

    /// The DMI message of device `k`, if it can be built.
    pub(super) fn device_proto(&self, st: &State, k: &ObjectKey) -> Option<pb::Device> {
        let e = st.devices.get(k)?;
        self.build(st, &e.stored, e.model_key.as_ref()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{NODE, device, device_of, hub, model, snapshot};
    use super::*;

    fn fingerprints(hub: &Hub) -> Vec<(String, u64)> {
        hub.lock()
            .devices
            .iter()
            .map(|(k, e)| (k.to_string(), e.fingerprint))
            .collect()
    }

    #[test]
    fn a_snapshot_adds_changes_and_removes_devices() {
        let hub = hub();
        snapshot(
            &hub,
            &format!("{NODE}{}{}", device("a", "1"), device("b", "1")),
        );
        let before = fingerprints(&hub);
        assert_eq!(
            before.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["default/a", "default/b"]
        );
        assert!(before.iter().all(|(_, f)| *f != 0));
        hub.lock().dirty.clear();

        // b changes, a leaves, c arrives.
        snapshot(
            &hub,
            &format!("{NODE}{}{}", device("b", "2"), device("c", "1")),
        );
        let after = fingerprints(&hub);
        assert_eq!(
            after.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["default/b", "default/c"]
        );
        assert_ne!(before[1].1, after[0].1, "b's fingerprint did not change");
        let st = hub.lock();
        let dirty = |d: Dirty| st.dirty.contains(&d);
        let k = ObjectKey::parse;
        assert!(dirty(Dirty::Device(k("default/a"))));
        assert!(dirty(Dirty::Twins(k("default/a"))));
        assert!(dirty(Dirty::Device(k("default/b"))));
        assert!(dirty(Dirty::Device(k("default/c"))));
        assert!(!dirty(Dirty::Model(k("default/m"))));
    }

    #[test]
    fn an_unchanged_snapshot_changes_nothing() {
        let hub = hub();
        let text = format!("{NODE}{}", device("a", "1"));
        snapshot(&hub, &text);
        let before = fingerprints(&hub);
        hub.lock().dirty.clear();
        snapshot(&hub, &text);
        assert!(hub.lock().dirty.is_empty());
        assert_eq!(fingerprints(&hub), before);
    }

    #[test]
    fn a_model_change_rebuilds_its_devices_fingerprints() {
        let hub = hub();
        let devices = format!(
            "{}{}{}",
            device("a", "1"),
            device("b", "1"),
            device_of("other", "m2", "virtual", "1")
        );
        let models = |seed| {
            format!(
                "{}{}",
                model("m", "virtual", seed),
                model("m2", "virtual", 1)
            )
        };
        snapshot(&hub, &format!("{}{devices}", models(1)));
        let before = fingerprints(&hub);
        hub.lock().dirty.clear();
        snapshot(&hub, &format!("{}{devices}", models(2)));
        let after = fingerprints(&hub);
        assert_eq!(
            after.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["default/a", "default/b", "default/other"]
        );
        assert_ne!(
            before[0].1, after[0].1,
            "a kept the old model's fingerprint"
        );
        assert_ne!(
            before[1].1, after[1].1,
            "b kept the old model's fingerprint"
        );
        assert_eq!(before[2].1, after[2].1, "a device of another model changed");
        // Only the model is rewritten to the store: the devices did not change.
        let st = hub.lock();
        let dirty: Vec<&Dirty> = st.dirty.iter().collect();
        assert_eq!(dirty, [&Dirty::Model(ObjectKey::parse("default/m"))]);
    }

    #[test]
    fn a_device_without_its_model_waits_for_it() {
        let hub = hub();
        snapshot(&hub, &device("a", "1"));
        {
            let st = hub.lock();
            let e = &st.devices["default/a"];
            assert_eq!(
                e.protocol.as_deref(),
                Err(&"model default/m not found".to_owned())
            );
            assert_eq!(e.fingerprint, 0);
        }
        snapshot(&hub, &format!("{NODE}{}", device("a", "1")));
        let st = hub.lock();
        assert_eq!(st.devices["default/a"].protocol(), Some("virtual"));
        assert_ne!(st.devices["default/a"].fingerprint, 0);
    }

    #[test]
    fn a_bad_device_records_an_error_and_does_not_block_the_others() {
        let hub = hub();
        snapshot(
            &hub,
            &format!(
                "{}{}{}{}{}",
                model("m", "virtual", 1),
                model("bare", "", 1),
                device_of("lost", "nope", "virtual", "1"),
                device_of("no-protocol", "bare", "", "1"),
                device("good", "1"),
            ),
        );
        let st = hub.lock();
        let error = |k: &str| st.devices[k].protocol.clone().err().unwrap_or_default();
        assert_eq!(error("default/lost"), "model default/nope not found");
        assert!(
            error("default/no-protocol").contains("no spec.protocol.protocolName"),
            "{}",
            error("default/no-protocol")
        );
        assert_eq!(st.devices["default/good"].protocol(), Some("virtual"));
        let wanted = Hub::wanted_for(&st, "virtual");
        assert_eq!(
            wanted.iter().map(|w| w.device.as_str()).collect::<Vec<_>>(),
            ["default/good"]
        );
        assert_eq!(wanted[0].model, "default/m");
    }

    #[tokio::test]
    async fn restore_loads_devices_models_twins_and_mappers_without_rewriting_them() {
        let hub = hub();
        let parsed = crate::source::parse_file("test", &format!("{NODE}{}", device("a", "1")));
        let twins = TwinState {
            state: Some("online".into()),
            ..TwinState::default()
        };
        hub.restore(
            parsed.devices.into_iter().map(Arc::new).collect(),
            parsed.models.into_iter().map(Arc::new).collect(),
            vec![super::super::fixtures::record()],
            vec![(ObjectKey::parse("default/a"), twins.clone())],
        );
        assert_eq!(hub.twin_state("default/a"), Some(twins));
        let st = hub.lock();
        assert_eq!(st.devices["default/a"].protocol(), Some("virtual"));
        assert!(st.mappers.contains_key("go-mapper"));
        assert!(st.dirty.is_empty(), "restored records are written back");
    }

    #[test]
    fn a_snapshot_of_what_the_store_held_keeps_one_copy_and_writes_nothing() {
        let hub = hub();
        let text = format!("{NODE}{}", device("a", "1"));
        let restored = crate::source::parse_file("store", &text);
        hub.restore(
            restored.devices.into_iter().map(Arc::new).collect(),
            restored.models.into_iter().map(Arc::new).collect(),
            Vec::new(),
            Vec::new(),
        );
        let fp = hub.lock().devices["default/a"].fingerprint;
        let scanned: Vec<Arc<_>> = crate::source::parse_file("store", &text)
            .devices
            .into_iter()
            .map(Arc::new)
            .collect();
        let source_copy = scanned[0].clone();
        hub.apply_snapshot(
            scanned,
            crate::source::parse_file("store", &text)
                .models
                .into_iter()
                .map(Arc::new)
                .collect(),
            Vec::new(),
        );
        let st = hub.lock();
        let e = &st.devices["default/a"];
        assert!(
            Arc::ptr_eq(&e.stored, &source_copy),
            "the store's copy is dropped"
        );
        let shared = e
            .protocol
            .as_ref()
            .is_ok_and(|p| Arc::ptr_eq(p, &st.models["default/m"].protocol));
        assert!(shared, "the device's protocol name is its model's");
        assert_eq!(e.fingerprint, fp);
        assert!(
            st.dirty.is_empty(),
            "an unchanged device is not written again"
        );
    }
}
