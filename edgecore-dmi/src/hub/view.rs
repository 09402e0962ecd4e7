//! The admin API's views ([`StatusView`]): every device with its state,
//! desired and reported values and problems, every mapper, and the device
//! source's errors.

use std::time::Instant;

use super::catalog::DeviceEntry;
use super::desired::effective_desired;
use super::twins::{desired_status, now_ms};
use super::{Hub, State};
use crate::key::ObjectKey;
use crate::views::{DeviceView, MapperView, PropertyView, StatusView};

impl Hub {
    /// Everything, for the admin API and the CLI.
    pub fn status(&self) -> StatusView {
        let st = self.lock();
        let now = now_ms();
        let devices = st
            .devices
            .iter()
            .map(|(k, e)| device_view(&st, k, e, now))
            .collect();
        let mappers = st
            .mappers
            .values()
            .map(|l| MapperView {
                record: l.record.clone(),
                devices: l.sent_devices.len(),
                last_error: l.last_error.clone(),
                last_contact: l.last_contact_ms.map(rfc3339_ms),
                refusals: l
                    .refused_models
                    .iter()
                    .map(|(k, r)| format!("DeviceModel {k}: {}", r.reason))
                    .chain(
                        l.refused_devices
                            .iter()
                            .map(|(k, r)| format!("Device {k}: {}", r.reason)),
                    )
                    .collect(),
            })
            .collect();
        StatusView {
            devices,
            mappers,
            source_errors: st.source_errors.clone(),
        }
    }
}

/// `ms` since the epoch as RFC 3339 (seconds).
fn rfc3339_ms(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The view of device `k`; `now` is ms since the epoch.
fn device_view(st: &State, k: &ObjectKey, e: &DeviceEntry, now: u64) -> DeviceView {
    let crd = e.stored.crd();
    if let Err(err) = &crd {
        tracing::error!("{err}");
    }
    let spec = crd.as_ref().ok().map(|c| &c.spec);
    let protocol = e
        .protocol()
        .map(str::to_owned)
        .or_else(|| spec.and_then(|s| s.protocol_name()).map(str::to_owned))
        .unwrap_or_default();
    let mappers: Vec<String> = st
        .mappers
        .values()
        .filter(|l| l.sent_devices.contains_key(k))
        .map(|l| l.record.name.clone())
        .collect();
    let twin = st.twins.get(k);
    // What the views say of a desired value no mapper has reported on: the
    // mapper refused the device, or the device has not reached one at all.
    let refused = st
        .mappers
        .values()
        .any(|l| l.refused_devices.contains_key(k));
    let fallback = if refused {
        Some("refused by the mapper")
    } else if mappers.is_empty() {
        Some("not delivered")
    } else {
        None
    };
    let properties = spec
        .map(|s| s.properties.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let t = twin.and_then(|t| t.twins.get(&p.name));
            let desired = effective_desired(twin, p).filter(|v| !v.is_empty());
            PropertyView {
                name: p.name.clone(),
                desired: desired.map(str::to_owned),
                observed_desired: t
                    .map(|t| t.observed_desired.clone())
                    .filter(|v| !v.is_empty()),
                desired_status: desired_status(desired, t)
                    .or_else(|| desired.and(fallback.map(str::to_owned))),
                desired_reason: t.and_then(|t| t.desired_meta.get("reason").map(str::to_owned)),
                reported: t.map(|t| t.reported.clone()).filter(|r| !r.is_empty()),
                age_ms: t.map(|t| now.saturating_sub(t.updated_ms)),
                error: t.and_then(|t| t.reported_meta.get("error").map(str::to_owned)),
                sink_error: t.and_then(|t| t.reported_meta.get("sinkError").map(str::to_owned)),
            }
        })
        .collect();
    DeviceView {
        namespace: k.namespace().to_owned(),
        name: k.name().to_owned(),
        model: e
            .stored
            .model_key()
            .map(|m| m.name().to_owned())
            .unwrap_or_default(),
        errors: device_errors(st, k, e, &protocol),
        protocol,
        mappers,
        state: twin.and_then(|t| t.state.clone()),
        last_online: twin.and_then(|t| t.last_online.clone()),
        origin: e.stored.origin().to_owned(),
        properties,
    }
}

/// What keeps device `k` (of `protocol`) from working: why it cannot be
/// dispatched, a missing mapper, refusals by mappers.
fn device_errors(st: &State, k: &ObjectKey, e: &DeviceEntry, protocol: &str) -> Vec<String> {
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
        if let Some(mk) = &e.model_key
            && let Some(r) = l.refused_models.get(mk)
        {
            errors.push(format!(
                "mapper {} refused the model {mk}: {}",
                l.record.name, r.reason
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::super::Action;
    use super::super::fixtures::{NODE, deliver_all, device, device_of, hub, record, snapshot};
    use super::*;
    use dmi_proto::v1beta1 as pb;

    fn errors(view: &StatusView, name: &str) -> Vec<String> {
        view.devices
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.errors.clone())
            .unwrap_or_else(|| panic!("no device {name} in the view"))
    }

    #[tokio::test]
    async fn errors_show_a_missing_model_and_a_protocol_without_mapper() {
        let hub = hub();
        snapshot(
            &hub,
            &format!(
                "{NODE}{}{}{}",
                device("a", "1"),
                device_of("lost", "nope", "virtual", "1"),
                device_of("field", "m", "modbus", "1"),
            ),
        );
        let view = hub.status();
        assert_eq!(errors(&view, "lost"), ["model default/nope not found"]);
        assert_eq!(
            errors(&view, "a"),
            ["no mapper registered for protocol `virtual`"]
        );
        assert_eq!(
            errors(&view, "field"),
            ["no mapper registered for protocol `modbus`"]
        );
        // The protocol comes from the device even when it cannot be dispatched.
        let lost = view.devices.iter().find(|d| d.name == "lost");
        assert_eq!(lost.map(|d| d.protocol.as_str()), Some("virtual"));

        hub.register_mapper(record(), false);
        let view = hub.status();
        assert!(errors(&view, "a").is_empty());
        assert_eq!(errors(&view, "lost"), ["model default/nope not found"]);
        assert_eq!(
            errors(&view, "field"),
            ["no mapper registered for protocol `modbus`"]
        );
    }

    #[tokio::test]
    async fn a_refused_model_shows_under_its_devices() {
        let hub = hub();
        snapshot(&hub, &format!("{NODE}{}", device("a", "1")));
        hub.register_mapper(record(), false);
        for a in &hub.plan("go-mapper").actions {
            match a {
                Action::CreateModel(..) => hub.action_refused("go-mapper", a, "bad model".into()),
                _ => hub.action_done("go-mapper", a),
            }
        }
        assert_eq!(
            errors(&hub.status(), "a"),
            ["mapper go-mapper refused the model default/m: bad model"]
        );
    }

    #[tokio::test]
    async fn the_view_shows_state_values_mappers_and_source_errors() {
        let hub = hub();
        snapshot(&hub, &format!("{NODE}{}", device("a", "22")));
        deliver_all(&hub);
        let a = ObjectKey::new("", "a");
        hub.report_state(a.clone(), "online".into()).unwrap();
        let tp = |v: &str| pb::TwinProperty {
            value: v.into(),
            metadata: Default::default(),
        };
        let twin = pb::Twin {
            property_name: "set".into(),
            reported: Some(tp("22")),
            observed_desired: Some(tp("22")),
        };
        hub.report_twins(a, vec![twin]).unwrap();
        let view = hub.status();
        assert!(view.source_errors.is_empty());
        let [d] = view.devices.as_slice() else {
            panic!("{:?}", view.devices);
        };
        assert_eq!(
            (d.namespace.as_str(), d.name.as_str(), d.model.as_str()),
            ("default", "a", "m")
        );
        assert_eq!(
            (d.protocol.as_str(), d.origin.as_str()),
            ("virtual", "test")
        );
        assert_eq!(d.mappers, ["go-mapper"]);
        assert_eq!(d.state.as_deref(), Some("online"));
        assert!(d.last_online.is_some());
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let [p] = d.properties.as_slice() else {
            panic!("{:?}", d.properties);
        };
        assert_eq!(p.desired.as_deref(), Some("22"));
        assert_eq!(p.reported.as_deref(), Some("22"));
        assert_eq!(p.desired_status.as_deref(), Some("applied"));
        assert!(p.age_ms.is_some());
        let [m] = view.mappers.as_slice() else {
            panic!("{:?}", view.mappers);
        };
        assert_eq!((m.record.name.as_str(), m.devices), ("go-mapper", 1));

        hub.apply_snapshot(Vec::new(), Vec::new(), vec!["x.yaml:1:1: bad".into()]);
        let view = hub.status();
        assert_eq!(view.source_errors, ["x.yaml:1:1: bad"]);
        assert!(view.devices.is_empty());
    }
}
