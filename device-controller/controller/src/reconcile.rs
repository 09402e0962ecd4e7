//! Reconcile decisions as plain functions: what a Device's conditions and labels
//! should be, which devices reference a model, what a model's status says. The
//! controller applies them; tests exercise them without any API server.

use device_crds::{Condition, Device, DeviceModel, MetaExt, NODE_LABEL};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// Condition type written on Devices and DeviceModels.
pub const READY: &str = "Ready";
/// Condition type written on DeviceModels that devices reference.
pub const IN_USE: &str = "InUse";

/// The verdict on one Device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCheck {
    /// Everything checks out.
    pub ready: bool,
    /// `Valid`, `ModelNotFound` or `Invalid`.
    pub reason: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

/// Checks a desired value against a model property; see
/// [`device_crds::check::check_desired`].
///
/// # Errors
/// As that function.
pub fn check_desired(p: &device_crds::ModelProperty, value: &str) -> Result<(), String> {
    device_crds::check::check_desired(p, value)
}

/// Checks a Device against its model (`None`: not found in the namespace)
/// with [`device_crds::check::device_against_model`], the rules
/// `edgecore-dmi validate` applies too. A model being deleted counts as
/// not found.
pub fn check_device(dev: &Device, model: Option<&DeviceModel>) -> DeviceCheck {
    use device_crds::check::{ModelCheck, device_against_model};
    let model = model.filter(|m| m.metadata.deletion_timestamp.is_none());
    match device_against_model(dev, model) {
        ModelCheck::NoModelRef => DeviceCheck {
            ready: false,
            reason: "Invalid",
            message: "spec.deviceModelRef.name is empty".into(),
        },
        ModelCheck::ModelNotFound(id) => DeviceCheck {
            ready: false,
            reason: "ModelNotFound",
            message: format!("DeviceModel {id} does not exist"),
        },
        ModelCheck::Checked(problems) if problems.is_empty() => DeviceCheck {
            ready: true,
            reason: "Valid",
            message: format!(
                "matches DeviceModel {}",
                dev.spec.model_name().unwrap_or_default()
            ),
        },
        ModelCheck::Checked(problems) => DeviceCheck {
            ready: false,
            reason: "Invalid",
            message: problems
                .into_iter()
                .map(|p| p.message)
                .collect::<Vec<_>>()
                .join("; "),
        },
    }
}

/// The Ready condition for a verdict, keeping the transition time when the
/// status did not change.
pub fn ready_condition(
    check: &DeviceCheck,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    condition(
        READY,
        check.ready,
        check.reason,
        &check.message,
        generation,
        previous,
        now,
    )
}

/// A condition of `type_`, keeping the transition time when the status is unchanged.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Whether two condition lists say the same (ignoring transition times).
pub fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

/// The merge patch that makes the node label follow `spec.nodeName`, if needed.
pub fn node_label_patch(dev: &Device) -> Option<Value> {
    let want = dev.spec.node_name.as_deref().filter(|n| !n.is_empty());
    let have = dev
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(NODE_LABEL))
        .map(String::as_str);
    (want != have).then(|| json!({"metadata": {"labels": {NODE_LABEL: want}}}))
}

/// Names of the devices in the model's namespace that reference it, sorted.
pub fn model_references<'a>(
    model: &DeviceModel,
    devices: impl IntoIterator<Item = &'a Device>,
) -> Vec<String> {
    let ns = model.metadata.namespace_or_default();
    let name = model.metadata.name_str();
    let mut refs: Vec<String> = devices
        .into_iter()
        .filter(|d| d.metadata.namespace_or_default() == ns && d.spec.model_name() == Some(name))
        .map(|d| d.metadata.name_str().to_owned())
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

/// What to do with a model's finalizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelAction {
    /// Not being deleted: make sure the finalizer is there.
    KeepFinalizer,
    /// Being deleted and unreferenced: remove the finalizer so it goes.
    Release,
    /// Being deleted but still referenced: keep it and say why.
    Block(String),
}

/// Decides a model's finalizer.
pub fn model_action(model: &DeviceModel, refs: &[String]) -> ModelAction {
    if model.metadata.deletion_timestamp.is_none() {
        return ModelAction::KeepFinalizer;
    }
    if refs.is_empty() {
        ModelAction::Release
    } else {
        ModelAction::Block(format!(
            "DeviceModel {} is still referenced by {} device(s): {}; delete or re-point them first",
            model.metadata.name_str(),
            refs.len(),
            refs.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(props: serde_json::Value) -> DeviceModel {
        serde_json::from_value(json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "m", "namespace": "plant"}, "spec": {"protocol": "modbus", "properties": props}}))
        .unwrap()
    }

    fn device(props: serde_json::Value) -> Device {
        serde_json::from_value(json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": "d", "namespace": "plant"},
            "spec": {"deviceModelRef": {"name": "m"}, "nodeName": "edge-1", "protocol": {"protocolName": "modbus"},
                     "properties": props}}))
        .unwrap()
    }

    fn std_model() -> DeviceModel {
        model(json!([
            {"name": "temp", "type": "INT", "accessMode": "ReadWrite", "minimum": "1", "maximum": "100"},
            {"name": "ratio", "type": "FLOAT", "accessMode": "ReadWrite", "maximum": "1.5"},
            {"name": "on", "type": "BOOLEAN", "accessMode": "ReadWrite"},
            {"name": "name", "type": "STRING", "accessMode": "ReadWrite"},
            {"name": "ro", "type": "INT", "accessMode": "ReadOnly"}
        ]))
    }

    fn verdict(props: serde_json::Value) -> DeviceCheck {
        check_device(&device(props), Some(&std_model()))
    }

    #[test]
    fn valid_device() {
        let c = verdict(
            json!([{"name": "temp", "desired": {"value": "30"}}, {"name": "ratio", "desired": {"value": "0.5"}},
            {"name": "on", "desired": {"value": "ON"}}, {"name": "name", "desired": {"value": "any text"}}, {"name": "ro"}]),
        );
        assert_eq!(
            c,
            DeviceCheck {
                ready: true,
                reason: "Valid",
                message: "matches DeviceModel m".into()
            }
        );
    }

    #[test]
    fn model_missing_or_deleting() {
        let c = check_device(&device(json!([])), None);
        assert_eq!(
            (c.ready, c.reason, c.message.as_str()),
            (false, "ModelNotFound", "DeviceModel plant/m does not exist")
        );
        let mut m = std_model();
        m.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert_eq!(
            check_device(&device(json!([])), Some(&m)).reason,
            "ModelNotFound"
        );
        let mut d = device(json!([]));
        d.spec.device_model_ref = None;
        assert_eq!(
            check_device(&d, Some(&std_model())).message,
            "spec.deviceModelRef.name is empty"
        );
    }

    #[test]
    fn invalid_cases_each_named() {
        let cases = [
            (
                json!([{"name": "nope"}]),
                "property `nope` is not in DeviceModel m",
            ),
            (
                json!([{"name": "temp"}, {"name": "temp"}]),
                "property `temp` is listed twice",
            ),
            (
                json!([{"name": "temp", "desired": {"value": "abc"}}]),
                "desired `abc` of `temp` is not an integer",
            ),
            (
                json!([{"name": "temp", "desired": {"value": "3.5"}}]),
                "desired `3.5` of `temp` is not an integer",
            ),
            (
                json!([{"name": "temp", "desired": {"value": "0"}}]),
                "desired 0 of `temp` is below the minimum 1",
            ),
            (
                json!([{"name": "temp", "desired": {"value": "101"}}]),
                "desired 101 of `temp` is above the maximum 100",
            ),
            (
                json!([{"name": "ratio", "desired": {"value": "1.6"}}]),
                "desired 1.6 of `ratio` is above the maximum 1.5",
            ),
            (
                json!([{"name": "ratio", "desired": {"value": "NaN"}}]),
                "desired `NaN` of `ratio` is not a number",
            ),
            (
                json!([{"name": "on", "desired": {"value": "maybe"}}]),
                "desired `maybe` of `on` is not a boolean",
            ),
            (
                json!([{"name": "ro", "desired": {"value": "1"}}]),
                "property `ro` is ReadOnly but has a desired value",
            ),
            (
                json!([{"name": "temp", "collectCycle": -5}]),
                "property `temp`: collectCycle is negative",
            ),
        ];
        for (props, want) in cases {
            let c = verdict(props.clone());
            assert_eq!((c.ready, c.reason), (false, "Invalid"), "{props}");
            assert_eq!(c.message, want, "{props}");
        }
        // Several problems are all listed.
        let c = verdict(json!([{"name": "nope"}, {"name": "temp", "desired": {"value": "999"}}]));
        assert_eq!(
            c.message,
            "property `nope` is not in DeviceModel m; desired 999 of `temp` is above the maximum 100"
        );
    }

    #[test]
    fn empty_desired_and_whole_float_integers_are_fine() {
        assert!(verdict(json!([{"name": "temp", "desired": {"value": ""}}])).ready);
        assert!(verdict(json!([{"name": "temp", "desired": {"value": "30.0"}}])).ready);
    }

    #[test]
    fn protocol_must_come_from_somewhere() {
        let mut d = device(json!([]));
        d.spec.protocol = None;
        assert!(
            check_device(&d, Some(&std_model())).ready,
            "the model's protocol is enough"
        );
        let mut m = std_model();
        m.spec.protocol.clear();
        assert!(
            check_device(&d, Some(&m))
                .message
                .contains("neither spec.protocol.protocolName")
        );
    }

    #[test]
    fn conditions_keep_transition_time_while_status_holds() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let ok = DeviceCheck {
            ready: true,
            reason: "Valid",
            message: "m".into(),
        };
        let first = ready_condition(&ok, Some(1), &[], t0);
        let again = ready_condition(&ok, Some(2), std::slice::from_ref(&first), t1);
        assert_eq!(again.last_transition_time, Time(t0));
        let bad = DeviceCheck {
            ready: false,
            reason: "Invalid",
            message: "x".into(),
        };
        let flipped = ready_condition(&bad, Some(3), std::slice::from_ref(&again), t1);
        assert_eq!(
            (
                flipped.status.as_str(),
                flipped.last_transition_time.clone()
            ),
            ("False", Time(t1))
        );
        assert!(same_conditions(
            std::slice::from_ref(&first),
            &[ready_condition(&ok, Some(1), &[], t1)]
        ));
        assert!(!same_conditions(&[first], &[flipped]));
    }

    #[test]
    fn node_label_follows_node_name() {
        let mut d = device(json!([]));
        assert_eq!(
            node_label_patch(&d),
            Some(json!({"metadata": {"labels": {NODE_LABEL: "edge-1"}}}))
        );
        d.metadata.labels = Some([(NODE_LABEL.to_owned(), "edge-1".to_owned())].into());
        assert_eq!(node_label_patch(&d), None);
        d.spec.node_name = Some("edge-2".into());
        assert_eq!(
            node_label_patch(&d),
            Some(json!({"metadata": {"labels": {NODE_LABEL: "edge-2"}}}))
        );
        d.spec.node_name = None;
        assert_eq!(
            node_label_patch(&d),
            Some(json!({"metadata": {"labels": {NODE_LABEL: null}}}))
        );
    }

    #[test]
    fn model_references_and_finalizer_decisions() {
        let m = std_model();
        let mut other_ns = device(json!([]));
        other_ns.metadata.namespace = Some("elsewhere".into());
        let mut other_model = device(json!([]));
        other_model.metadata.name = Some("x".into());
        other_model.spec.device_model_ref = Some(device_crds::LocalObjectReference {
            name: "other".into(),
        });
        let mut b = device(json!([]));
        b.metadata.name = Some("b".into());
        let devices = [device(json!([])), other_ns, other_model, b];
        let refs = model_references(&m, &devices);
        assert_eq!(refs, vec!["b".to_owned(), "d".to_owned()]);
        assert_eq!(model_action(&m, &refs), ModelAction::KeepFinalizer);
        let mut deleting = m.clone();
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert_eq!(model_action(&deleting, &[]), ModelAction::Release);
        let ModelAction::Block(msg) = model_action(&deleting, &refs) else {
            panic!()
        };
        assert_eq!(
            msg,
            "DeviceModel m is still referenced by 2 device(s): b, d; delete or re-point them first"
        );
    }
}
