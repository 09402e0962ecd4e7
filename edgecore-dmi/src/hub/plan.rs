//! Dispatch planning: the calls that bring one mapper from what it has to what
//! it should have, and what became of each call (done, or refused and held
//! back for a while).

use std::collections::HashSet;
use std::time::Instant;

use dmi_proto::v1beta1 as pb;

use super::Hub;
use super::catalog::fingerprint;
use super::mappers::Refusal;
use crate::key::ObjectKey;

/// Most device messages ([`Action::Register`], [`Action::Update`]) one plan
/// carries. A dispatcher plans again once it has made a plan's calls, so a
/// mapper of 10 000 devices gets them in rounds of this many and the node
/// never holds more than this many built messages per mapper (they are
/// about 3 KB each while built; 10 000 at once were 43 MB at 10 mappers).
pub(crate) const PLAN_BATCH: usize = 128;

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
    /// `CreateDeviceModel`.
    CreateModel(ObjectKey, pb::DeviceModel),
    /// `UpdateDeviceModel`.
    UpdateModel(ObjectKey, pb::DeviceModel),
    /// `RemoveDeviceModel`.
    RemoveModel(ObjectKey),
    /// `RegisterDevice`.
    Register(ObjectKey, pb::Device),
    /// `UpdateDevice`.
    Update(ObjectKey, pb::Device),
    /// `RemoveDevice`.
    Remove(ObjectKey),
}

/// The link of mapper `name`, which just answered a call: no longer unreachable.
fn answered<'a>(
    st: &'a mut super::State,
    name: &str,
) -> Option<&'a mut super::mappers::MapperLink> {
    let link = st.mappers.get_mut(name)?;
    link.last_error = None;
    link.unreachable_since = None;
    link.last_contact_ms = Some(super::twins::now_ms());
    Some(link)
}

impl Hub {
    /// The calls that bring mapper `name` up to date.
    ///
    /// * Devices and models the mapper refused are left out until their retry
    ///   time (or until they change), so one refusal never holds up the others.
    /// * Devices of a model the mapper refused wait for that model: a Go
    ///   mapper would spend seconds on each before refusing it too.
    /// * Fresh work goes first, retries of refused calls last, so a device
    ///   that keeps failing never delays the others.
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
        let wanted = Self::wanted_for(&st, &link.record.protocol);
        let mut actions = Vec::new();
        let mut retries = Vec::new();
        // Devices to send, built below up to PLAN_BATCH: fresh ones first,
        // then retries of refused ones; `true` for a device the mapper has.
        let mut devices: Vec<(ObjectKey, bool)> = Vec::new();
        let mut device_retries: Vec<(ObjectKey, bool)> = Vec::new();
        let mut planned_models = HashSet::new();
        let mut waiting_models = HashSet::new();
        let mut keep = HashSet::new();
        let model = |mk: &ObjectKey| st.models.get(mk).map(|m| m.proto.clone());
        for w in wanted {
            keep.insert(w.device.clone());
            let mk = w.model;
            if planned_models.insert(mk.clone()) {
                let model_sent = link.sent_models.get(&mk) == Some(&w.model_fingerprint);
                if held(link.refused_models.get(&mk), w.model_fingerprint) {
                    if !link.sent_models.contains_key(&mk) {
                        waiting_models.insert(mk.clone());
                    }
                } else if !model_sent {
                    let queue = if link.refused_models.contains_key(&mk) {
                        &mut retries
                    } else {
                        &mut actions
                    };
                    match link.sent_models.get(&mk) {
                        None => {
                            queue.extend(model(&mk).map(|m| Action::CreateModel(mk.clone(), m)))
                        }
                        Some(_) => {
                            queue.extend(model(&mk).map(|m| Action::UpdateModel(mk.clone(), m)))
                        }
                    }
                }
            }
            if waiting_models.contains(&mk) {
                continue;
            }
            let k = w.device;
            if held(link.refused_devices.get(&k), w.device_fingerprint) {
                continue;
            }
            let queue = if link.refused_devices.contains_key(&k) {
                &mut device_retries
            } else {
                &mut devices
            };
            match link.sent_devices.get(&k) {
                None => queue.push((k, false)),
                Some(old) if *old != w.device_fingerprint => queue.push((k, true)),
                Some(_) => {}
            }
        }
        let mut built = 0;
        let fresh = devices.into_iter().map(|d| (d, false));
        for ((k, update), retry) in fresh.chain(device_retries.into_iter().map(|d| (d, true))) {
            if built == PLAN_BATCH {
                break;
            }
            let Some(d) = self.device_proto(&st, &k) else {
                continue;
            };
            built += 1;
            let queue = if retry { &mut retries } else { &mut actions };
            queue.push(if update {
                Action::Update(k, d)
            } else {
                Action::Register(k, d)
            });
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
        actions.append(&mut retries);
        Plan {
            actions,
            next_retry,
        }
    }

    /// Records that mapper `name` carried out `action`.
    pub(crate) fn action_done(&self, name: &str, action: &Action) {
        let mut st = self.lock();
        let Some(link) = answered(&mut st, name) else {
            return;
        };
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
        let Some(link) = answered(&mut st, name) else {
            return;
        };
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixtures::{
        NODE, deliver_all, device, device_of, hub, keys, model, record, snapshot,
    };
    use super::super::mappers::REFUSAL_RETRY_MIN;
    use super::*;

    #[tokio::test]
    async fn a_refused_device_waits_its_turn_and_never_blocks_the_others() {
        let hub = hub();
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

    #[tokio::test]
    async fn a_device_that_leaves_is_removed_from_the_mapper() {
        let hub = hub();
        snapshot(
            &hub,
            &format!("{NODE}{}{}", device("a", "1"), device("b", "1")),
        );
        deliver_all(&hub);
        snapshot(&hub, &format!("{NODE}{}", device("b", "1")));
        let plan = hub.plan("go-mapper");
        assert_eq!(keys(&plan), ["remove default/a"]);
        hub.action_done("go-mapper", &plan.actions[0]);
        assert!(hub.plan("go-mapper").actions.is_empty());

        // A device that moves to another protocol leaves this mapper too.
        snapshot(
            &hub,
            &format!("{NODE}{}", device_of("b", "m", "modbus", "1")),
        );
        assert_eq!(keys(&hub.plan("go-mapper")), ["remove default/b"]);
    }

    #[tokio::test]
    async fn a_refused_removal_counts_as_done() {
        let hub = hub();
        snapshot(&hub, &format!("{NODE}{}", device("a", "1")));
        deliver_all(&hub);
        snapshot(&hub, NODE);
        let plan = hub.plan("go-mapper");
        assert_eq!(keys(&plan), ["remove default/a"]);
        hub.action_refused("go-mapper", &plan.actions[0], "not found".into());
        assert!(hub.plan("go-mapper").actions.is_empty());
    }

    #[tokio::test]
    async fn a_model_is_updated_with_its_devices_and_removed_after_them() {
        let hub = hub();
        let with = |seed| format!("{}{}", model("m", "virtual", seed), device("a", "1"));
        snapshot(&hub, &with(1));
        deliver_all(&hub);

        snapshot(&hub, &with(2));
        assert_eq!(
            keys(&hub.plan("go-mapper")),
            ["update-model default/m", "update default/a"]
        );
        deliver_all(&hub);

        // The device and its model leave together: both are removed, the
        // device first.
        snapshot(&hub, "");
        assert_eq!(
            keys(&hub.plan("go-mapper")),
            ["remove default/a", "remove-model default/m"]
        );
    }

    #[tokio::test]
    async fn a_model_without_devices_stays_until_it_is_deleted() {
        let hub = hub();
        snapshot(&hub, &format!("{NODE}{}", device("a", "1")));
        deliver_all(&hub);
        // The model's last device leaves; the model stays on the node, and so
        // with the mapper.
        snapshot(&hub, NODE);
        assert_eq!(keys(&hub.plan("go-mapper")), ["remove default/a"]);
        deliver_all(&hub);
        assert!(hub.plan("go-mapper").actions.is_empty());
        // Deleted from the node: removed from the mapper.
        snapshot(&hub, "");
        let plan = hub.plan("go-mapper");
        assert_eq!(keys(&plan), ["remove-model default/m"]);
        hub.action_done("go-mapper", &plan.actions[0]);
        assert!(hub.plan("go-mapper").actions.is_empty());
    }

    #[tokio::test]
    async fn many_devices_go_out_in_batches_and_all_arrive() {
        let hub = hub();
        let n = PLAN_BATCH * 2 + 5;
        let devices: String = (0..n).map(|i| device(&format!("d{i:04}"), "1")).collect();
        snapshot(&hub, &format!("{NODE}{devices}"));
        hub.register_mapper(super::super::fixtures::record(), false);
        let mut sent = std::collections::BTreeSet::new();
        let mut rounds = 0;
        loop {
            let plan = hub.plan("go-mapper");
            if plan.actions.is_empty() {
                break;
            }
            rounds += 1;
            let registers = keys(&plan)
                .into_iter()
                .filter(|k| k.starts_with("register "))
                .count();
            assert!(
                registers <= PLAN_BATCH,
                "{registers} device messages in one plan"
            );
            for a in &plan.actions {
                if let Action::Register(k, _) = a {
                    assert!(sent.insert(k.to_string()), "{k} planned twice");
                }
                hub.action_done("go-mapper", a);
            }
        }
        assert_eq!(sent.len(), n);
        assert_eq!(rounds, 3);
        // Only what changed is planned after that.
        snapshot(&hub, &format!("{NODE}{devices}{}", device("late", "1")));
        let plan = hub.plan("go-mapper");
        assert_eq!(keys(&plan), ["register default/late"]);
    }

    #[test]
    fn an_unknown_mapper_has_nothing_to_do() {
        let hub = hub();
        let plan = hub.plan("nobody");
        assert!(plan.actions.is_empty() && plan.next_retry.is_none());
    }
}
