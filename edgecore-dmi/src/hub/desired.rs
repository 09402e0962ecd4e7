//! Desired values set on the edge, by the MQTT bridge
//! (`$hw/events/device/<ns>/<name>/twin/update`), next to the ones the device
//! source (YAML or Kubernetes) gives.
//!
//! * **Checked as YAML ones are.** A value must suit the model property
//!   exactly as the cloud controller requires of a YAML `desired` value
//!   ([`edge_rt::desired::check_text`]: ReadWrite, the type, `minimum` and
//!   `maximum`); the device and the property must be on this node. A refused
//!   value changes nothing.
//! * **Sent as YAML edits are.** An accepted value is kept with the device's
//!   twins ([`EdgeDesired`] in [`crate::records::TwinState`], so it is
//!   persisted and survives a restart) and replaces the source's desired
//!   value of that property in the device's DMI message; the message's
//!   fingerprint changes and the dispatchers send `UpdateDevice`, the path
//!   every YAML edit takes.
//! * **The newest write wins.** An edge value holds until the source's
//!   desired value of its property changes (from the one it had when the edge
//!   value was set): that edit is newer and replaces it. Edits of anything
//!   else, restarts and re-reads of unchanged files leave it in place; the
//!   device leaving the node drops it.

use device_crds::Device;
use dmi_proto::v1beta1 as pb;
use edge_rt::desired::DesiredError;

use super::persist::Dirty;
use super::twins::now_ms;
use super::{Hub, State};
use crate::key::ObjectKey;
use crate::records::{EdgeDesired, StoredDevice, TwinState};

/// Why a desired value set on the edge was refused. The messages name the
/// device and the property.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DesiredRefusal {
    /// The device is not on this node.
    #[error("device {0} is not known to this node")]
    UnknownDevice(ObjectKey),
    /// The device declares no such property.
    #[error("device {device} declares no property {property}")]
    UnknownProperty {
        /// The device.
        device: ObjectKey,
        /// The property named.
        property: String,
    },
    /// The property's model definition is missing (no model, or the model
    /// does not define the property).
    #[error("device {device} property {property}: {reason}")]
    NoModelProperty {
        /// The device.
        device: ObjectKey,
        /// The property.
        property: String,
        /// What is missing.
        reason: String,
    },
    /// The value does not suit the model property (ReadOnly, type, range).
    #[error("device {device} property {property}: {error}")]
    Invalid {
        /// The device.
        device: ObjectKey,
        /// The property.
        property: String,
        /// What is wrong with the value.
        error: DesiredError,
    },
    /// The device's record could not be read back from its compact form
    /// ([`crate::records::StoredDevice::crd`]); not the caller's fault.
    #[error("{reason}")]
    Unreadable {
        /// The device.
        device: ObjectKey,
        /// Why.
        reason: String,
    },
}

/// The desired value of `property` in `crd` (empty when it has none);
/// `None` when the device does not declare the property.
fn source_value(crd: &Device, property: &str) -> Option<String> {
    crd.spec
        .properties
        .iter()
        .find(|p| p.name == property)
        .map(|p| {
            p.desired
                .as_ref()
                .map(|d| d.value.clone())
                .unwrap_or_default()
        })
}

/// The desired value in force for property `p`: the edge one when set, else
/// the source's.
pub(super) fn effective_desired<'a>(
    twin: Option<&'a TwinState>,
    p: &'a device_crds::DeviceProperty,
) -> Option<&'a str> {
    twin.and_then(|t| t.edge_desired.get(&p.name))
        .map(|d| d.value.as_str())
        .or_else(|| p.desired.as_ref().map(|d| d.value.as_str()))
}

impl Hub {
    /// Sets desired values of device `device` on the edge: `values` are
    /// `(property, value)` pairs, all applied or (the first refusal returned)
    /// none. See the module docs for the checks and what wins later.
    ///
    /// # Errors
    /// [`DesiredRefusal`], naming the device and property.
    pub fn set_edge_desired(
        &self,
        device: &ObjectKey,
        values: &[(String, String)],
    ) -> Result<(), DesiredRefusal> {
        let mut st = self.lock();
        let entry = st
            .devices
            .get(device)
            .ok_or_else(|| DesiredRefusal::UnknownDevice(device.clone()))?;
        if values.is_empty() {
            return Ok(());
        }
        let crd = &entry
            .stored
            .crd()
            .map_err(|reason| DesiredRefusal::Unreadable {
                device: device.clone(),
                reason,
            })?;
        let model = entry.model_key.as_ref().and_then(|mk| st.models.get(mk));
        let now = now_ms();
        let mut accepted = Vec::with_capacity(values.len());
        for (property, value) in values {
            let Some(source_value) = source_value(crd, property) else {
                return Err(DesiredRefusal::UnknownProperty {
                    device: device.clone(),
                    property: property.clone(),
                });
            };
            let mp = match (&entry.model_key, model) {
                (None, _) => Err("spec.deviceModelRef.name is empty".to_owned()),
                (Some(mk), None) => Err(format!("model {mk} not found")),
                (Some(mk), Some(m)) => m
                    .stored
                    .crd
                    .spec
                    .properties
                    .iter()
                    .find(|p| p.name == *property)
                    .ok_or_else(|| format!("model {mk} defines no property {property}")),
            }
            .map_err(|reason| DesiredRefusal::NoModelProperty {
                device: device.clone(),
                property: property.clone(),
                reason,
            })?;
            match edge_rt::desired::check_text(
                &mp.type_,
                &mp.access_mode,
                &mp.minimum,
                &mp.maximum,
                value,
            ) {
                // As the cloud controller: a type KubeEdge does not define is
                // left to the mapper, which reports it.
                Ok(_) | Err(DesiredError::UnknownType(_)) => {}
                Err(error) => {
                    return Err(DesiredRefusal::Invalid {
                        device: device.clone(),
                        property: property.clone(),
                        error,
                    });
                }
            }
            accepted.push((
                property.clone(),
                EdgeDesired {
                    value: value.clone(),
                    source_value,
                    set_ms: now,
                },
            ));
        }
        let stored = entry.stored.clone();
        let twins = st.twins.entry(device.clone()).or_default();
        twins.edge_desired.extend(accepted);
        // Rebuilt with the new values: a new fingerprint, so the dispatchers
        // send UpdateDevice as for a YAML edit.
        let entry = self.entry(&st, stored);
        st.devices.insert(device.clone(), entry);
        st.dirty.insert(Dirty::Twins(device.clone()));
        for link in st.mappers.values() {
            link.kick.notify_one();
        }
        drop(st);
        self.persist_kick.notify_one();
        Ok(())
    }

    /// Puts the edge desired values of device `k` into its DMI message.
    pub(super) fn apply_edge_desired(st: &State, k: &ObjectKey, device: &mut pb::Device) {
        let Some(edge) = st.twins.get(k).map(|t| &t.edge_desired) else {
            return;
        };
        if edge.is_empty() {
            return;
        }
        for p in device.spec.iter_mut().flat_map(|s| s.properties.iter_mut()) {
            if let Some(d) = edge.get(&p.name) {
                p.desired.get_or_insert_with(Default::default).value = d.value.clone();
            }
        }
    }

    /// Drops the edge desired values of device `k` that its new resource
    /// `crd` replaces: the source's desired value of the property changed
    /// since the edge value was set (a newer write), or the property is gone.
    pub(super) fn reconcile_edge_desired(st: &mut State, k: &ObjectKey, stored: &StoredDevice) {
        let Some(t) = st.twins.get_mut(k).filter(|t| !t.edge_desired.is_empty()) else {
            return;
        };
        let crd = match stored.crd() {
            Ok(crd) => crd,
            Err(e) => {
                tracing::error!(device = %k, "{e}");
                return;
            }
        };
        let crd = &crd;
        let before = t.edge_desired.len();
        t.edge_desired.retain(|property, d| match source_value(crd, property) {
            Some(v) if v == d.source_value => true,
            Some(v) => {
                tracing::info!(device = %k, %property, source = %v, edge = %d.value,
                    "the device source changed the desired value: it replaces the one set over MQTT");
                false
            }
            None => {
                tracing::info!(device = %k, %property,
                    "the property left the device: its desired value set over MQTT is dropped");
                false
            }
        });
        if t.edge_desired.len() != before {
            st.dirty.insert(Dirty::Twins(k.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{deliver_all, device, hub, keys, snapshot};
    use super::*;

    /// Model `m` with a ranged writable `set`, a read-only `temp`; device `a`
    /// with both, desired `set` = `desired`.
    fn yaml(desired: &str, description: &str) -> String {
        format!(
            "apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {{ name: m }}
spec:
  protocol: virtual
  properties:
    - {{ name: set, type: INT, accessMode: ReadWrite, minimum: \"5\", maximum: \"30\" }}
    - {{ name: temp, type: FLOAT, accessMode: ReadOnly }}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{ name: a, annotations: {{ note: \"{description}\" }} }}
spec:
  deviceModelRef: {{ name: m }}
  protocol: {{ protocolName: virtual }}
  properties:
    - {{ name: set, desired: {{ value: \"{desired}\" }} }}
    - {{ name: temp }}
"
        )
    }

    fn a() -> ObjectKey {
        ObjectKey::new("", "a")
    }

    fn set(hub: &Hub, property: &str, value: &str) -> Result<(), DesiredRefusal> {
        hub.set_edge_desired(&a(), &[(property.to_owned(), value.to_owned())])
    }

    /// The desired value of `set` in the message the mapper gets.
    fn sent_desired(hub: &Hub) -> Option<String> {
        let st = hub.lock();
        let d = hub.device_proto(&st, &a())?;
        d.spec?
            .properties
            .into_iter()
            .find(|p| p.name == "set")
            .and_then(|p| p.desired)
            .map(|d| d.value)
    }

    fn shown_desired(hub: &Hub) -> Option<String> {
        hub.status().devices[0]
            .properties
            .iter()
            .find(|p| p.name == "set")
            .and_then(|p| p.desired.clone())
    }

    #[tokio::test]
    async fn an_accepted_value_is_sent_as_an_update_and_shown() {
        let hub = hub();
        snapshot(&hub, &yaml("20", "x"));
        deliver_all(&hub);
        assert!(keys(&hub.plan("go-mapper")).is_empty());
        set(&hub, "set", "25").unwrap();
        assert_eq!(sent_desired(&hub).as_deref(), Some("25"));
        assert_eq!(shown_desired(&hub).as_deref(), Some("25"));
        assert_eq!(keys(&hub.plan("go-mapper")), ["update default/a"]);
        let t = hub.twin_state("default/a").unwrap_or_default();
        assert_eq!(t.edge_desired["set"].value, "25");
        assert_eq!(t.edge_desired["set"].source_value, "20");
        assert!(hub.lock().dirty.contains(&Dirty::Twins(a())));
    }

    #[tokio::test]
    async fn refusals_name_device_and_property_and_change_nothing() {
        let hub = hub();
        snapshot(&hub, &format!("{}{}", yaml("20", "x"), device("b", "1")));
        deliver_all(&hub);
        hub.lock().dirty.clear();
        let cases = [
            (
                "set",
                "31",
                "device default/a property set: 31 is above the maximum 30",
            ),
            (
                "set",
                "4",
                "device default/a property set: 4 is below the minimum 5",
            ),
            (
                "set",
                "abc",
                "device default/a property set: `abc` is not an integer",
            ),
            (
                "temp",
                "1",
                "device default/a property temp: property is ReadOnly",
            ),
            ("nope", "1", "device default/a declares no property nope"),
        ];
        for (property, value, message) in cases {
            let e = set(&hub, property, value).unwrap_err();
            assert_eq!(e.to_string(), message);
        }
        let e = hub
            .set_edge_desired(&ObjectKey::new("", "ghost"), &[("set".into(), "1".into())])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "device default/ghost is not known to this node"
        );
        // All or nothing: a good value next to a bad one is not applied.
        let both = [
            ("set".to_owned(), "25".to_owned()),
            ("temp".into(), "1".into()),
        ];
        assert!(hub.set_edge_desired(&a(), &both).is_err());
        assert_eq!(sent_desired(&hub).as_deref(), Some("20"));
        assert!(keys(&hub.plan("go-mapper")).is_empty());
        assert!(hub.lock().dirty.is_empty());
        assert!(
            hub.twin_state("default/a")
                .unwrap_or_default()
                .edge_desired
                .is_empty()
        );
    }

    #[tokio::test]
    async fn the_newest_write_wins() {
        let hub = hub();
        snapshot(&hub, &yaml("20", "x"));
        set(&hub, "set", "25").unwrap();
        // An edit of something else keeps the edge value.
        snapshot(&hub, &yaml("20", "y"));
        assert_eq!(sent_desired(&hub).as_deref(), Some("25"));
        // Another edge write replaces it.
        set(&hub, "set", "26").unwrap();
        assert_eq!(sent_desired(&hub).as_deref(), Some("26"));
        // A YAML edit of the desired value is newer: it wins, and the edge
        // value is gone for good.
        snapshot(&hub, &yaml("18", "y"));
        assert_eq!(sent_desired(&hub).as_deref(), Some("18"));
        assert_eq!(shown_desired(&hub).as_deref(), Some("18"));
        assert!(
            hub.twin_state("default/a")
                .unwrap_or_default()
                .edge_desired
                .is_empty()
        );
        snapshot(&hub, &yaml("18", "z"));
        assert_eq!(sent_desired(&hub).as_deref(), Some("18"));
        // And a later edge write wins over that.
        set(&hub, "set", "27").unwrap();
        assert_eq!(sent_desired(&hub).as_deref(), Some("27"));
    }

    #[tokio::test]
    async fn edge_values_survive_a_restart_until_the_source_changes_them() {
        let hub1 = hub();
        snapshot(&hub1, &yaml("20", "x"));
        set(&hub1, "set", "25").unwrap();
        let stored = |hub: &Hub| {
            let st = hub.lock();
            let d = st.devices[&a()].stored.clone();
            let m: Vec<_> = st.models.values().map(|m| m.stored.clone()).collect();
            let t = st.twins.get(&a()).cloned().unwrap_or_default();
            // Through the store's encoding.
            let t: TwinState = serde_json::from_slice(&serde_json::to_vec(&t).unwrap()).unwrap();
            (vec![d], m, t)
        };
        let (d, m, t) = stored(&hub1);
        let hub2 = hub();
        hub2.restore(d.clone(), m.clone(), Vec::new(), vec![(a(), t.clone())]);
        assert_eq!(sent_desired(&hub2).as_deref(), Some("25"));
        // The same files read again: still the edge value.
        snapshot(&hub2, &yaml("20", "x"));
        assert_eq!(sent_desired(&hub2).as_deref(), Some("25"));
        // The file was edited while edgecore-dmi was down: the edit wins.
        let hub3 = hub();
        hub3.restore(d, m, Vec::new(), vec![(a(), t)]);
        snapshot(&hub3, &yaml("19", "x"));
        assert_eq!(sent_desired(&hub3).as_deref(), Some("19"));
    }
}
