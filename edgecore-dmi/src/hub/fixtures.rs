//! Shared pieces of the hub's unit tests.

use std::sync::Arc;

use dmi_proto::config_data::NumberEncoding;

use super::plan::Plan;
use super::{Action, Hub};
use crate::records::MapperRecord;

/// Model `m` of protocol `virtual` with one writable property `set`.
pub(super) const NODE: &str = "apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: { name: m }
spec:
  protocol: virtual
  properties:
    - { name: set, type: INT, accessMode: ReadWrite }
";

/// A hub that calls nothing when a mapper link is created.
pub(super) fn hub() -> Hub {
    Hub::new(
        NumberEncoding::Stock,
        dmi_proto::transport::ChannelOptions::default(),
        Box::new(|_, _| {}),
    )
}

/// Model `name` of `protocol`, with `seed` in its `protocolConfigData` (merged
/// into its devices' messages, so changing it changes theirs) and in the
/// description of its property `set` (so it changes the model's message too).
pub(super) fn model(name: &str, protocol: &str, seed: u32) -> String {
    format!(
        "---\napiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata: {{ name: {name} }}\n\
         spec:\n  protocol: \"{protocol}\"\n  protocolConfigData: {{ seed: {seed} }}\n  \
         properties:\n    - {{ name: set, type: INT, accessMode: ReadWrite, description: \"v{seed}\" }}\n"
    )
}

/// Device `name` of model `model` and `protocol` (none when empty), with the
/// desired value `desired` on property `set`.
pub(super) fn device_of(name: &str, model: &str, protocol: &str, desired: &str) -> String {
    let protocol = if protocol.is_empty() {
        String::new()
    } else {
        format!("  protocol: {{ protocolName: {protocol} }}\n")
    };
    format!(
        "---\napiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {{ name: {name} }}\n\
         spec:\n  deviceModelRef: {{ name: {model} }}\n{protocol}  \
         properties:\n    - {{ name: set, desired: {{ value: \"{desired}\" }} }}\n"
    )
}

/// Device `name` of model `m` and protocol `virtual`.
pub(super) fn device(name: &str, desired: &str) -> String {
    device_of(name, "m", "virtual", desired)
}

/// Applies `text` (YAML documents) as the source's complete snapshot.
pub(super) fn snapshot(hub: &Hub, text: &str) {
    let parsed = crate::source::parse_file("test", text);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    hub.apply_snapshot(
        parsed.devices.into_iter().map(Arc::new).collect(),
        parsed.models.into_iter().map(Arc::new).collect(),
        Vec::new(),
    );
}

/// The record of mapper `go-mapper` for protocol `virtual`.
pub(super) fn record() -> MapperRecord {
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

/// A plan as text, one `verb key` per action.
pub(super) fn keys(plan: &Plan) -> Vec<String> {
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

/// Registers [`record`] unless it is, then records every planned action as
/// done.
pub(super) fn deliver_all(hub: &Hub) {
    if !hub.lock().mappers.contains_key("go-mapper") {
        hub.register_mapper(record(), false);
    }
    for a in &hub.plan("go-mapper").actions {
        hub.action_done("go-mapper", a);
    }
}
