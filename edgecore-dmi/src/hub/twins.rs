//! Twins and states reported by mappers, and the bookkeeping of the status
//! write-back: which devices changed since their status was last written.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use dmi_proto::v1beta1 as pb;

use super::Hub;
use super::observe::{Change, StateChange, TwinChange, TwinsChange};
use super::persist::Dirty;
use crate::key::ObjectKey;
use crate::records::{TwinRecord, TwinState};

/// Most metadata entries kept per twin half.
pub const MAX_METADATA_ENTRIES: usize = 16;
/// Longest metadata key, bytes.
pub const MAX_METADATA_KEY: usize = 64;
/// Longest metadata value, bytes.
pub const MAX_METADATA_VALUE: usize = 1024;

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The device is not on this node.
    #[error("device {0} is not known to this node")]
    UnknownDevice(ObjectKey),
    /// Twins for properties the device does not declare.
    #[error("device {device} declares no propert{} {}", if names.len() == 1 { "y" } else { "ies" }, names.join(", "))]
    UndeclaredProperties {
        /// The device.
        device: ObjectKey,
        /// The properties named in the report that it does not declare (at
        /// most 10 are listed).
        names: Vec<String>,
    },
    /// Metadata too large: more than [`MAX_METADATA_ENTRIES`] entries, or a
    /// key or value over [`MAX_METADATA_KEY`] / [`MAX_METADATA_VALUE`] bytes.
    #[error("device {device} property {property}: {what}")]
    Metadata {
        /// The device.
        device: ObjectKey,
        /// The property.
        property: String,
        /// What is too large.
        what: String,
    },
}

fn check_metadata(
    device: &ObjectKey,
    property: &str,
    half: &str,
    m: &std::collections::BTreeMap<String, String>,
) -> Result<(), ReportError> {
    let bad = |what: String| ReportError::Metadata {
        device: device.clone(),
        property: property.to_owned(),
        what,
    };
    if m.len() > MAX_METADATA_ENTRIES {
        return Err(bad(format!(
            "{half}.metadata has {} entries (at most {MAX_METADATA_ENTRIES})",
            m.len()
        )));
    }
    for (k, v) in m {
        if k.len() > MAX_METADATA_KEY {
            return Err(bad(format!(
                "{half}.metadata key of {} bytes (at most {MAX_METADATA_KEY})",
                k.len()
            )));
        }
        if v.len() > MAX_METADATA_VALUE {
            return Err(bad(format!(
                "{half}.metadata `{k}` of {} bytes (at most {MAX_METADATA_VALUE})",
                v.len()
            )));
        }
    }
    Ok(())
}

/// Milliseconds since the epoch.
pub(super) fn now_ms() -> u64 {
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
        return Some(st.to_owned());
    }
    if !twin.reported.is_empty() && dmi_proto::rules::same_twin_value(&twin.reported, desired) {
        return Some("applied".to_owned());
    }
    observed.then(|| "received".to_owned())
}

impl Hub {
    /// Stores reported twins.
    pub(crate) fn report_twins(
        &self,
        k: ObjectKey,
        twins: Vec<pb::Twin>,
    ) -> Result<(), ReportError> {
        let mut st = self.lock();
        let Some(entry) = st.devices.get(&k) else {
            return Err(ReportError::UnknownDevice(k));
        };
        // Only what the device declares is kept: a peer cannot grow the node's
        // state (or its store records) with properties of its own invention.
        let undeclared: Vec<String> = twins
            .iter()
            .filter(|t| !entry.stored.declares(&t.property_name))
            .map(|t| t.property_name.clone())
            .take(10)
            .collect();
        if !undeclared.is_empty() {
            return Err(ReportError::UndeclaredProperties {
                device: k,
                names: undeclared,
            });
        }
        let empty = std::collections::BTreeMap::new();
        for t in &twins {
            let halves = [
                ("reported", t.reported.as_ref()),
                ("observedDesired", t.observed_desired.as_ref()),
            ];
            for (half, h) in halves {
                let m = h.map_or(&empty, |h| &h.metadata);
                check_metadata(&k, &t.property_name, half, m)?;
            }
        }
        let now = now_ms();
        let observed = self.observed();
        let mut updated = Vec::new();
        let state = st.twins.entry(k.clone()).or_default();
        let new = twins
            .iter()
            .filter(|t| !state.twins.contains_key(&t.property_name))
            .count();
        state.twins.reserve(new);
        for t in twins {
            let reported = t.reported.unwrap_or_default();
            let desired = t.observed_desired.unwrap_or_default();
            let record = TwinRecord {
                reported: reported.value,
                reported_meta: reported.metadata.into(),
                observed_desired: desired.value,
                desired_meta: desired.metadata.into(),
                updated_ms: now,
            };
            let current = observed.then(|| record.clone());
            let last = state.twins.insert(&t.property_name, record);
            if let Some(current) = current {
                updated.push(TwinChange {
                    property: t.property_name,
                    last,
                    current,
                });
            }
        }
        let change = observed.then(|| TwinsChange {
            device: k.clone(),
            at_ms: now,
            updated,
            with_desired: state
                .twins
                .iter()
                .filter(|(_, t)| !t.observed_desired.is_empty())
                .map(|(p, t)| (p.to_owned(), t.clone()))
                .collect(),
        });
        st.status_dirty.insert(k.clone());
        for link in st.mappers.values_mut() {
            if link.sent_devices.contains_key(&k) {
                link.last_contact_ms = Some(now);
            }
        }
        st.dirty.insert(Dirty::Twins(k));
        drop(st);
        if let Some(c) = change {
            self.emit(Change::Twins(Arc::new(c)));
        }
        Ok(())
    }

    /// Stores a reported state (already validated and lowercased).
    pub(crate) fn report_state(&self, k: ObjectKey, state: String) -> Result<(), ReportError> {
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
        let now = now_ms();
        let change = self.observed().then(|| StateChange {
            device: k.clone(),
            state: state.clone(),
            last_online: t.last_online.clone(),
            at_ms: now,
        });
        t.state = Some(state);
        t.state_ms = Some(now);
        st.status_dirty.insert(k.clone());
        st.dirty.insert(Dirty::Twins(k));
        drop(st);
        if let Some(c) = change {
            self.emit(Change::State(Arc::new(c)));
        }
        Ok(())
    }

    /// Takes the devices whose status changed since the last call (coalesced:
    /// each appears once however many reports arrived), in key order.
    pub fn take_status_dirty(&self) -> Vec<ObjectKey> {
        let mut keys: Vec<ObjectKey> = self.lock().status_dirty.drain().collect();
        keys.sort();
        keys
    }

    /// How many devices were removed from the node so far: when it moves,
    /// the status writer forgets which values it already wrote
    /// ([`crate::kubernetes::RefreshPolicy::forget_all`]), so a device that
    /// is re-created or moves back to this node gets a full patch.
    pub fn removals(&self) -> u64 {
        self.lock().removals
    }

    /// Puts devices back for the next status write-back (the write failed).
    /// Devices no longer on the node are dropped.
    pub fn mark_status_dirty(&self, keys: impl IntoIterator<Item = ObjectKey>) {
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
        let keys: Vec<ObjectKey> = st
            .twins
            .keys()
            .filter(|k| st.devices.contains_key(*k))
            .cloned()
            .collect();
        st.status_dirty.extend(keys);
    }

    /// The latest twins and state of device `k` (`namespace/name`), if it is
    /// still on this node.
    pub fn twin_state(&self, k: &str) -> Option<TwinState> {
        let st = self.lock();
        st.devices
            .contains_key(k)
            .then(|| st.twins.get(k).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{NODE, device, hub, snapshot};
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

    fn pb_twin(name: &str, reported: &str) -> pb::Twin {
        pb::Twin {
            property_name: name.into(),
            reported: Some(pb::TwinProperty {
                value: reported.into(),
                metadata: [("type".to_owned(), "int".to_owned())].into(),
            }),
            observed_desired: Some(pb::TwinProperty::default()),
        }
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("", name)
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

    #[test]
    fn reports_for_an_unknown_device_are_refused() {
        let hub = hub();
        snapshot(&hub, &format!("{NODE}{}", device("a", "1")));
        let err = hub.report_twins(key("ghost"), vec![pb_twin("set", "1")]);
        assert!(
            matches!(&err, Err(ReportError::UnknownDevice(k)) if k == "default/ghost"),
            "{err:?}"
        );
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("device default/ghost is not known to this node".to_owned())
        );
        assert!(matches!(
            hub.report_state(key("ghost"), "online".into()),
            Err(ReportError::UnknownDevice(_))
        ));
        assert_eq!(hub.twin_state("default/ghost"), None);
        assert!(hub.take_status_dirty().is_empty());
    }

    #[test]
    fn twins_of_undeclared_properties_and_oversized_metadata_are_refused() {
        let hub = hub();
        snapshot(&hub, &format!("{NODE}{}", device("a", "1")));
        // A peer cannot add properties of its own invention.
        let err = hub
            .report_twins(key("a"), vec![pb_twin("set", "1"), pb_twin("x1", "1")])
            .unwrap_err();
        assert_eq!(err.to_string(), "device default/a declares no property x1");
        assert!(
            hub.twin_state("default/a")
                .unwrap_or_default()
                .twins
                .is_empty()
        );
        // Metadata is bounded in entries, key and value size.
        let mut big = pb_twin("set", "1");
        if let Some(r) = big.reported.as_mut() {
            r.metadata
                .insert("note".into(), "x".repeat(MAX_METADATA_VALUE + 1));
        }
        let err = hub.report_twins(key("a"), vec![big]).unwrap_err();
        assert!(
            err.to_string()
                .contains("reported.metadata `note` of 1025 bytes"),
            "{err}"
        );
        let mut many = pb_twin("set", "1");
        if let Some(d) = many.observed_desired.as_mut() {
            for i in 0..=MAX_METADATA_ENTRIES {
                d.metadata.insert(format!("k{i}"), "v".into());
            }
        }
        assert!(matches!(
            hub.report_twins(key("a"), vec![many]),
            Err(ReportError::Metadata { .. })
        ));
        hub.report_twins(key("a"), vec![pb_twin("set", "1")])
            .unwrap();
        assert_eq!(
            hub.twin_state("default/a").unwrap_or_default().twins.len(),
            1
        );
    }

    #[test]
    fn reported_twins_are_kept_per_property_and_marked_for_write_back() {
        let hub = hub();
        snapshot(
            &hub,
            &format!("{NODE}{}{}", device("a", "1"), device("b", "1")),
        );
        assert_eq!(hub.twin_state("default/a"), Some(TwinState::default()));
        hub.report_twins(key("b"), vec![pb_twin("set", "1")])
            .unwrap();
        hub.report_twins(key("a"), vec![pb_twin("set", "1")])
            .unwrap();
        hub.report_twins(key("a"), vec![pb_twin("set", "2")])
            .unwrap();
        let t = hub.twin_state("default/a").unwrap_or_default();
        assert_eq!(t.twins["set"].reported, "2");
        assert_eq!(t.twins["set"].reported_meta.get("type"), Some("int"));
        assert!(t.twins["set"].updated_ms > 0);
        // Coalesced and in key order; taken once.
        assert_eq!(hub.take_status_dirty(), [key("a"), key("b")]);
        assert!(hub.take_status_dirty().is_empty());
        // A failed write puts them back, except devices that left meanwhile.
        snapshot(&hub, &format!("{NODE}{}", device("a", "1")));
        hub.mark_status_dirty([key("a"), key("b")]);
        assert_eq!(hub.take_status_dirty(), [key("a")]);
    }

    #[test]
    fn last_online_is_set_by_online_and_ok_and_cleared_by_other_states() {
        let hub = hub();
        snapshot(&hub, &format!("{NODE}{}", device("a", "1")));
        let last_online = |state: &str| {
            hub.report_state(key("a"), state.to_owned()).unwrap();
            let t = hub.twin_state("default/a").unwrap_or_default();
            assert_eq!(t.state.as_deref(), Some(state));
            assert!(t.state_ms.is_some());
            t.last_online
        };
        for state in ["online", "ok"] {
            let at = last_online(state).unwrap_or_default();
            assert!(humantime::parse_rfc3339(&at).is_ok(), "{state}: {at:?}");
        }
        for state in ["offline", "unhealthy", "unknown"] {
            assert_eq!(last_online(state), None, "{state}");
        }
        assert_eq!(hub.take_status_dirty(), [key("a")]);
    }

    #[test]
    fn after_a_restart_every_stored_twin_is_written_back_once() {
        let hub = hub();
        snapshot(
            &hub,
            &format!("{NODE}{}{}", device("a", "1"), device("b", "1")),
        );
        hub.report_state(key("a"), "online".into()).unwrap();
        hub.take_status_dirty();
        hub.mark_all_status_dirty();
        assert_eq!(hub.take_status_dirty(), [key("a")]);
    }
}
