//! The optional EdgeCore MQTT device-topic bridge (`--mqtt-broker`): the
//! `$hw/events/device/...` topics stock EdgeCore's devicetwin module uses
//! with its MQTT broker, so applications written against them work with
//! edgecore-dmi.
//!
//! Topics carry the device as `<namespace>/<name>`, as KubeEdge v1beta1 does
//! (`dtcommon.DeviceETPrefix + util.GetResourceID(ns, name) + suffix`).
//!
//! **Published** (QoS 0 by default, as EdgeCore's `eventBus.mqttQOS`; never
//! retained):
//!
//! * `$hw/events/device/<ns>/<name>/twin/update/document` for every twin
//!   report the hub accepts from a mapper: [`DeviceTwinDocument`], each
//!   reported property with its twin before (`last`, `null` for the first
//!   report) and after (`current`): `expected` is the mapper's
//!   `observedDesired` (left out when empty), `actual` the reported value,
//!   each with `metadata.timestamp` (ms). `event_id` is empty, as stock sets
//!   it for DMI reports.
//! * `.../twin/update/delta` after such a report when a twin of the device
//!   has an expected value its reported value does not show:
//!   [`DeviceTwinDelta`], with every twin that has an expected value and
//!   `delta: {property: expected}`. A twin is in the delta unless the admin
//!   view calls its expected value `applied` ([`crate::hub::desired_status`]:
//!   the mapper says so, or the values are equal as numbers or booleans, `22`
//!   and `22.0`), where stock compares text.
//! * `.../state/update/result` for every state report: [`DeviceStateResult`]
//!   (`{event_id, timestamp, device: {name, state, last_online}}`), as stock
//!   devicetwin publishes it after a `state/update`.
//! * `.../twin/update/result` answering each message on `.../twin/update`:
//!   [`DeviceTwinResult`] (the accepted expected values) or [`ErrorResult`]
//!   (`code` 400 or 404 and `reason`), with the request's `event_id`.
//!
//! **Subscribed**: `$hw/events/device/+/+/twin/update` (and the pre-namespace
//! form `$hw/events/device/+/twin/update`, a device in `default`). A
//! [`DeviceTwinUpdate`] there sets desired values: each twin's
//! `expected.value` goes through [`Hub::set_edge_desired`], the checks a YAML
//! `desired` value gets from the cloud controller (ReadWrite, type,
//! minimum/maximum) and the `UpdateDevice` path YAML edits take. Refused
//! (unknown device or property, ReadOnly, out of range, malformed JSON, a twin
//! without an expected value): a warning naming device and property, an
//! [`ErrorResult`], and nothing changes. Desired values set this way are
//! persisted with the device's twins; the newest write wins (a later change
//! of the property's `desired` in the YAML replaces one, see
//! [`crate::records::EdgeDesired`]).
//!
//! The connection lives in [`mqtt`]: one persistent client, reconnecting with
//! backoff, fed from the hub's bounded change broadcast so a dead broker
//! never slows a DMI report.

pub mod mqtt;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hub::{Change, DesiredRefusal, Hub, StateChange, TwinsChange};
use crate::key::ObjectKey;
use crate::records::TwinRecord;

/// Largest `twin/update` message taken, bytes (larger ones are answered with
/// 400; the connection accepts up to [`mqtt::MAX_INCOMING_PACKET`]).
pub const MAX_TWIN_UPDATE: usize = 64 * 1024;

/// Refusals of `twin/update` messages are logged at most once per 10 s (any
/// broker client can send them).
static REFUSAL_LOG: edge_rt::logging::Throttle =
    edge_rt::logging::Throttle::new(std::time::Duration::from_secs(10));

pub use mqtt::{BrokerUrl, MqttBridge};

/// Prefix of every device topic.
pub const DEVICE_TOPIC_PREFIX: &str = "$hw/events/device/";
/// Suffix of the topic that sets desired values (subscribed).
pub const TWIN_UPDATE: &str = "/twin/update";
/// Suffix of the answer to a [`TWIN_UPDATE`] message.
pub const TWIN_UPDATE_RESULT: &str = "/twin/update/result";
/// Suffix of the twin document published after each twin report.
pub const TWIN_UPDATE_DOCUMENT: &str = "/twin/update/document";
/// Suffix of the twin delta (expected values not shown yet).
pub const TWIN_UPDATE_DELTA: &str = "/twin/update/delta";
/// Suffix of the state published after each state report.
pub const STATE_UPDATE_RESULT: &str = "/state/update/result";
/// The topic filters the bridge subscribes to: `<ns>/<name>` (v1beta1) and
/// the older `<name>` form (namespace `default`).
pub const SUBSCRIPTIONS: [&str; 2] = [
    "$hw/events/device/+/+/twin/update",
    "$hw/events/device/+/twin/update",
];

/// Stock `dtcommon.BadRequestCode`.
pub const BAD_REQUEST: u16 = 400;
/// Stock `dtcommon.NotFoundCode`.
pub const NOT_FOUND: u16 = 404;
/// Stock `dtcommon.InternalErrorCode`.
pub const INTERNAL_ERROR: u16 = 500;

/// The topic of device `device` with `suffix` (one of the constants above).
pub fn device_topic(device: &ObjectKey, suffix: &str) -> String {
    format!(
        "{DEVICE_TOPIC_PREFIX}{}/{}{suffix}",
        device.namespace(),
        device.name()
    )
}

/// The device a [`TWIN_UPDATE`] topic names, and the device part of the topic
/// as written (`<ns>/<name>` or `<name>`) for the answer's topic. `None` for
/// any other topic.
pub fn parse_twin_update_topic(topic: &str) -> Option<(ObjectKey, &str)> {
    let id = topic
        .strip_prefix(DEVICE_TOPIC_PREFIX)?
        .strip_suffix(TWIN_UPDATE)?;
    let key = match id.split('/').collect::<Vec<_>>().as_slice() {
        [name] if !name.is_empty() => ObjectKey::new("", name),
        [ns, name] if !ns.is_empty() && !name.is_empty() => ObjectKey::new(ns, name),
        _ => return None,
    };
    Some((key, id))
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The topic.
    pub topic: String,
    /// The JSON payload.
    pub payload: Vec<u8>,
}

impl Publication {
    fn json<T: Serialize>(topic: String, body: &T) -> Option<Self> {
        match serde_json::to_vec(body) {
            Ok(payload) => Some(Self { topic, payload }),
            Err(e) => {
                tracing::error!(%topic, error = %e, "cannot encode an MQTT message");
                None
            }
        }
    }
}

/// A twin value (stock `dttype.TwinValue`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TwinValue {
    /// The value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// When it was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ValueMetadata>,
}

/// Stock `dttype.ValueMetadata`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueMetadata {
    /// Ms since the epoch (left out when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timestamp: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Stock `dttype.TypeMetadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeMetadata {
    /// The value's type (`int`, `float`, `string`, ...).
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub type_: String,
}

/// One twin (stock `dttype.MsgTwin`, without the version fields).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MsgTwin {
    /// The desired value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<TwinValue>,
    /// The reported value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<TwinValue>,
    /// Whether the twin may be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// The value's type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TypeMetadata>,
}

impl MsgTwin {
    /// The twin of a stored record: `expected` when the mapper reported a
    /// desired value, `actual` always, both stamped with the report's time;
    /// the type when the mapper sent one.
    pub fn of_record(t: &TwinRecord) -> Self {
        let stamp = Some(ValueMetadata {
            timestamp: i64::try_from(t.updated_ms).unwrap_or(i64::MAX),
        });
        Self {
            expected: (!t.observed_desired.is_empty()).then(|| TwinValue {
                value: Some(t.observed_desired.clone()),
                metadata: stamp,
            }),
            actual: Some(TwinValue {
                value: Some(t.reported.clone()),
                metadata: stamp,
            }),
            optional: None,
            metadata: t
                .reported_meta
                .get("type")
                .filter(|ty| !ty.is_empty())
                .map(|ty| TypeMetadata {
                    type_: ty.to_owned(),
                }),
        }
    }
}

/// A property's twin before and after an update (stock `dttype.TwinDoc`;
/// `null` halves are written).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TwinDoc {
    /// Before.
    pub last: Option<MsgTwin>,
    /// After.
    pub current: Option<MsgTwin>,
}

/// `.../twin/update/document` (stock `dttype.DeviceTwinDocument`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceTwinDocument {
    /// Event id (empty for mapper reports, as stock).
    pub event_id: String,
    /// Ms since the epoch.
    pub timestamp: i64,
    /// The updated twins.
    pub twin: BTreeMap<String, TwinDoc>,
}

/// `.../twin/update/delta` (stock `dttype.DeviceTwinDelta`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceTwinDelta {
    /// Event id (a fresh UUID, as stock).
    pub event_id: String,
    /// Ms since the epoch.
    pub timestamp: i64,
    /// Every twin with an expected value.
    pub twin: BTreeMap<String, MsgTwin>,
    /// The expected values the reported ones do not show yet.
    pub delta: BTreeMap<String, String>,
}

/// The successful answer on `.../twin/update/result` (stock
/// `dttype.DeviceTwinResult`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceTwinResult {
    /// The request's event id.
    pub event_id: String,
    /// Ms since the epoch.
    pub timestamp: i64,
    /// The accepted expected values.
    pub twin: BTreeMap<String, MsgTwin>,
}

/// A refusal on `.../twin/update/result` (stock `dttype.Result`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResult {
    /// The request's event id (empty when it could not be read).
    pub event_id: String,
    /// Ms since the epoch.
    pub timestamp: i64,
    /// [`BAD_REQUEST`], [`NOT_FOUND`] or [`INTERNAL_ERROR`].
    #[serde(default, skip_serializing_if = "is_zero_u16")]
    pub code: u16,
    /// Why, naming device and property.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

fn is_zero_u16(n: &u16) -> bool {
    *n == 0
}

/// `.../state/update/result` (stock `dttype.DeviceMsg`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStateResult {
    /// Event id (a fresh UUID, as stock).
    pub event_id: String,
    /// Ms since the epoch.
    pub timestamp: i64,
    /// The device.
    pub device: DeviceState,
}

/// The device part of [`DeviceStateResult`] (stock `dttype.Device`, the
/// fields it fills).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// The device's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The state.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Last time online (RFC 3339; empty unless `online` or `ok`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_online: String,
}

/// A message on `.../twin/update` (stock `dttype.DeviceTwinUpdate`). Unknown
/// fields (versions, ...) are ignored, as Go's decoder does.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DeviceTwinUpdate {
    /// Event id, echoed in the answer.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Ms since the epoch.
    #[serde(default)]
    pub timestamp: Option<i64>,
    /// The twins to update (`null` entries delete in stock; refused here).
    #[serde(default)]
    pub twin: Option<BTreeMap<String, Option<MsgTwin>>>,
}

/// A random UUID (version 4), as stock's `BuildBaseMessage` makes event ids.
pub fn new_event_id() -> String {
    use rand::RngExt;
    let n: u128 = rand::rng().random();
    let n = (n & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Ms since the epoch, now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// What to publish for an accepted report (module docs).
pub fn publications(change: &Change) -> Vec<Publication> {
    match change {
        Change::Twins(c) => twin_publications(c),
        Change::State(c) => state_publication(c).into_iter().collect(),
    }
}

fn twin_publications(c: &TwinsChange) -> Vec<Publication> {
    let timestamp = i64::try_from(c.at_ms).unwrap_or(i64::MAX);
    let document = DeviceTwinDocument {
        event_id: String::new(),
        timestamp,
        twin: c
            .updated
            .iter()
            .map(|u| {
                let doc = TwinDoc {
                    last: u.last.as_ref().map(MsgTwin::of_record),
                    current: Some(MsgTwin::of_record(&u.current)),
                };
                (u.property.clone(), doc)
            })
            .collect(),
    };
    let mut out: Vec<Publication> =
        Publication::json(device_topic(&c.device, TWIN_UPDATE_DOCUMENT), &document)
            .into_iter()
            .collect();
    let delta: BTreeMap<String, String> = c
        .with_desired
        .iter()
        .filter(|(_, t)| {
            crate::hub::desired_status(Some(&t.observed_desired), Some(t)).as_deref()
                != Some("applied")
        })
        .map(|(p, t)| (p.clone(), t.observed_desired.clone()))
        .collect();
    if !delta.is_empty() {
        let body = DeviceTwinDelta {
            event_id: new_event_id(),
            timestamp: now_ms(),
            twin: c
                .with_desired
                .iter()
                .map(|(p, t)| (p.clone(), MsgTwin::of_record(t)))
                .collect(),
            delta,
        };
        out.extend(Publication::json(
            device_topic(&c.device, TWIN_UPDATE_DELTA),
            &body,
        ));
    }
    out
}

fn state_publication(c: &StateChange) -> Option<Publication> {
    let body = DeviceStateResult {
        event_id: new_event_id(),
        timestamp: i64::try_from(c.at_ms).unwrap_or(i64::MAX),
        device: DeviceState {
            name: c.device.name().to_owned(),
            state: c.state.clone(),
            last_online: c.last_online.clone().unwrap_or_default(),
        },
    };
    Publication::json(device_topic(&c.device, STATE_UPDATE_RESULT), &body)
}

/// A refused twin update: what to log and answer.
struct Refused {
    code: u16,
    property: Option<String>,
    reason: String,
}

impl Refused {
    fn bad(property: Option<&str>, reason: String) -> Self {
        Self {
            code: BAD_REQUEST,
            property: property.map(str::to_owned),
            reason,
        }
    }
}

/// Handles a message on a [`TWIN_UPDATE`] topic: sets the desired values it
/// carries through [`Hub::set_edge_desired`] (all or none) and returns the
/// answer for `.../twin/update/result`. Refusals are logged with the device
/// and property. `None` for a topic that names no device.
pub fn handle_twin_update(hub: &Hub, topic: &str, payload: &[u8]) -> Option<Publication> {
    let (device, id) = parse_twin_update_topic(topic)?;
    let result_topic = format!("{DEVICE_TOPIC_PREFIX}{id}{TWIN_UPDATE_RESULT}");
    let parsed = if payload.len() > MAX_TWIN_UPDATE {
        Err(format!(
            "the message has {} bytes; a twin update may have at most {MAX_TWIN_UPDATE}",
            payload.len()
        ))
    } else {
        serde_json::from_slice::<DeviceTwinUpdate>(payload).map_err(|e| e.to_string())
    };
    let (event_id, outcome) = match parsed {
        Ok(msg) => {
            let event_id = msg.event_id.clone().unwrap_or_default();
            (event_id, apply_twin_update(hub, &device, msg))
        }
        Err(e) => (
            String::new(),
            Err(Refused::bad(
                None,
                format!("device {device}: the update is not a twin update message: {e}"),
            )),
        ),
    };
    match outcome {
        Ok(twin) => Publication::json(
            result_topic,
            &DeviceTwinResult {
                event_id,
                timestamp: now_ms(),
                twin,
            },
        ),
        Err(refused) => {
            let property = refused.property.as_deref().unwrap_or("-");
            if let Some(held_back) = REFUSAL_LOG.allow() {
                tracing::warn!(%device, %property, reason = %refused.reason, held_back, "refused a desired value over MQTT");
            }
            Publication::json(
                result_topic,
                &ErrorResult {
                    event_id,
                    timestamp: now_ms(),
                    code: refused.code,
                    reason: refused.reason,
                },
            )
        }
    }
}

/// Checks and applies one parsed update; the accepted twins for the answer.
fn apply_twin_update(
    hub: &Hub,
    device: &ObjectKey,
    msg: DeviceTwinUpdate,
) -> Result<BTreeMap<String, MsgTwin>, Refused> {
    let Some(twins) = msg.twin else {
        return Err(Refused::bad(
            None,
            format!("device {device}: the update has no `twin`"),
        ));
    };
    let mut values = Vec::with_capacity(twins.len());
    for (property, twin) in twins {
        if !dmi_proto::rules::is_valid_twin_name(&property) {
            return Err(Refused::bad(
                Some(&property),
                format!(
                    "device {device}: twin name `{property}` must be 1-{} characters of [a-zA-Z0-9-_.,:/@#]",
                    dmi_proto::rules::TWIN_NAME_MAX
                ),
            ));
        }
        let Some(value) = twin.and_then(|t| t.expected).and_then(|e| e.value) else {
            return Err(Refused::bad(
                Some(&property),
                format!(
                    "device {device} property {property}: no expected value (edgecore-dmi takes reported values from mappers over DMI, and deletes no twins)"
                ),
            ));
        };
        if !dmi_proto::rules::is_valid_twin_value(&value) {
            return Err(Refused::bad(
                Some(&property),
                format!(
                    "device {device} property {property}: value `{value}` must be at most {} characters of [a-zA-Z0-9-_.,:/@#]",
                    dmi_proto::rules::TWIN_VALUE_MAX
                ),
            ));
        }
        values.push((property, value));
    }
    hub.set_edge_desired(device, &values).map_err(|e| {
        let (code, property) = match &e {
            DesiredRefusal::UnknownDevice(_) => (NOT_FOUND, None),
            DesiredRefusal::Unreadable { .. } => (INTERNAL_ERROR, None),
            DesiredRefusal::UnknownProperty { property, .. }
            | DesiredRefusal::NoModelProperty { property, .. }
            | DesiredRefusal::Invalid { property, .. } => (BAD_REQUEST, Some(property.clone())),
        };
        Refused {
            code,
            property,
            reason: e.to_string(),
        }
    })?;
    let stamp = Some(ValueMetadata {
        timestamp: now_ms(),
    });
    for (property, value) in &values {
        tracing::info!(%device, %property, %value, "desired value set over MQTT");
    }
    Ok(values
        .into_iter()
        .map(|(property, value)| {
            let twin = MsgTwin {
                expected: Some(TwinValue {
                    value: Some(value),
                    metadata: stamp,
                }),
                ..MsgTwin::default()
            };
            (property, twin)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::hub::TwinChange;

    fn record(reported: &str, desired: &str, at: u64) -> TwinRecord {
        TwinRecord {
            reported: reported.into(),
            reported_meta: [("type".to_owned(), "int".to_owned())].into(),
            observed_desired: desired.into(),
            updated_ms: at,
            ..TwinRecord::default()
        }
    }

    fn body(p: &Publication) -> Value {
        serde_json::from_slice(&p.payload).unwrap_or(Value::Null)
    }

    #[test]
    fn topics_carry_namespace_and_name() {
        let k = ObjectKey::new("ns1", "pump");
        assert_eq!(
            device_topic(&k, TWIN_UPDATE_DOCUMENT),
            "$hw/events/device/ns1/pump/twin/update/document"
        );
        assert_eq!(
            parse_twin_update_topic("$hw/events/device/ns1/pump/twin/update"),
            Some((k, "ns1/pump"))
        );
        assert_eq!(
            parse_twin_update_topic("$hw/events/device/pump/twin/update"),
            Some((ObjectKey::new("default", "pump"), "pump"))
        );
        for t in [
            "$hw/events/device//twin/update",
            "$hw/events/device/a/b/c/twin/update",
            "$hw/events/device/a/b/twin/update/result",
            "$hw/events/device/a//twin/update",
        ] {
            assert_eq!(parse_twin_update_topic(t), None, "{t}");
        }
    }

    #[test]
    fn a_twin_report_makes_a_stock_document_and_a_delta_when_needed() {
        let c = TwinsChange {
            device: ObjectKey::new("default", "t1"),
            at_ms: 1700,
            updated: vec![
                TwinChange {
                    property: "setpoint".into(),
                    last: Some(record("20", "20", 1000)),
                    current: record("20", "25", 1700),
                },
                TwinChange {
                    property: "temp".into(),
                    last: None,
                    current: record("21.5", "", 1700),
                },
            ],
            with_desired: vec![("setpoint".into(), record("20", "25", 1700))],
        };
        let out = publications(&Change::Twins(Arc::new(c.clone())));
        let topics: Vec<&str> = out.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "$hw/events/device/default/t1/twin/update/document",
                "$hw/events/device/default/t1/twin/update/delta"
            ]
        );
        assert_eq!(
            body(&out[0]),
            json!({
                "event_id": "",
                "timestamp": 1700,
                "twin": {
                    "setpoint": {
                        "last": {
                            "expected": {"value": "20", "metadata": {"timestamp": 1000}},
                            "actual": {"value": "20", "metadata": {"timestamp": 1000}},
                            "metadata": {"type": "int"}
                        },
                        "current": {
                            "expected": {"value": "25", "metadata": {"timestamp": 1700}},
                            "actual": {"value": "20", "metadata": {"timestamp": 1700}},
                            "metadata": {"type": "int"}
                        }
                    },
                    "temp": {
                        "last": null,
                        "current": {
                            "actual": {"value": "21.5", "metadata": {"timestamp": 1700}},
                            "metadata": {"type": "int"}
                        }
                    }
                }
            })
        );
        let delta = body(&out[1]);
        assert_eq!(delta["delta"], json!({"setpoint": "25"}));
        assert_eq!(delta["twin"]["setpoint"]["expected"]["value"], "25");
        assert_eq!(delta["event_id"].as_str().map(str::len), Some(36));
        assert!(delta["timestamp"].as_i64().unwrap_or_default() > 0);

        // Applied (numerically equal, or the mapper says so): no delta.
        let mut applied = c;
        applied.with_desired = vec![("setpoint".into(), record("25.0", "25", 1700))];
        let out = publications(&Change::Twins(Arc::new(applied.clone())));
        assert_eq!(out.len(), 1);
        let mut said = record("true", "on", 1700);
        said.desired_meta.insert("status", "applied");
        applied.with_desired = vec![("heating".into(), said)];
        let out = publications(&Change::Twins(Arc::new(applied)));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_state_report_makes_the_stock_state_result() {
        let c = StateChange {
            device: ObjectKey::new("default", "t1"),
            state: "online".into(),
            last_online: Some("2026-01-01T00:00:00Z".into()),
            at_ms: 5,
        };
        let out = publications(&Change::State(Arc::new(c)));
        assert_eq!(
            out[0].topic,
            "$hw/events/device/default/t1/state/update/result"
        );
        let b = body(&out[0]);
        assert_eq!(
            b["device"],
            json!({"name": "t1", "state": "online", "last_online": "2026-01-01T00:00:00Z"})
        );
        assert_eq!(b["timestamp"], 5);
        let offline = StateChange {
            device: ObjectKey::new("default", "t1"),
            state: "offline".into(),
            last_online: None,
            at_ms: 5,
        };
        let out = publications(&Change::State(Arc::new(offline)));
        assert_eq!(
            body(&out[0])["device"],
            json!({"name": "t1", "state": "offline"})
        );
    }

    #[test]
    fn event_ids_are_version_4_uuids() {
        let a = new_event_id();
        assert_ne!(a, new_event_id());
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{a}");
        assert!(matches!(parts[3].as_bytes()[0], b'8'..=b'b'), "{a}");
    }

    fn hub_with_thermostat() -> Hub {
        let hub = Hub::new(
            dmi_proto::config_data::NumberEncoding::Stock,
            dmi_proto::transport::ChannelOptions::default(),
            Box::new(|_, _| {}),
        );
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/devices/thermostat.yaml"
        ))
        .unwrap_or_default();
        let parsed = crate::source::parse_file("thermostat.yaml", &text);
        hub.apply_snapshot(
            parsed.devices.into_iter().map(Arc::new).collect(),
            parsed.models.into_iter().map(Arc::new).collect(),
            Vec::new(),
        );
        hub
    }

    fn update(hub: &Hub, topic: &str, payload: &str) -> (String, Value) {
        let p = handle_twin_update(hub, topic, payload.as_bytes()).unwrap_or_else(|| Publication {
            topic: String::new(),
            payload: Vec::new(),
        });
        let b = body(&p);
        (p.topic, b)
    }

    fn desired(hub: &Hub) -> Option<String> {
        hub.status()
            .devices
            .iter()
            .find(|d| d.name == "thermostat-1")?
            .properties
            .iter()
            .find(|p| p.name == "setpoint")?
            .desired
            .clone()
    }

    const TOPIC: &str = "$hw/events/device/default/thermostat-1/twin/update";

    #[test]
    fn a_twin_update_sets_a_desired_value_and_answers() {
        let hub = hub_with_thermostat();
        let (topic, b) = update(
            &hub,
            TOPIC,
            r#"{"event_id":"e1","timestamp":1,"twin":{"setpoint":{"expected":{"value":"25"},"metadata":{"type":"int"}}}}"#,
        );
        assert_eq!(
            topic,
            "$hw/events/device/default/thermostat-1/twin/update/result"
        );
        assert_eq!(b["event_id"], "e1");
        assert_eq!(b["twin"]["setpoint"]["expected"]["value"], "25");
        assert!(b.get("code").is_none(), "{b}");
        assert_eq!(desired(&hub).as_deref(), Some("25"));
        // The old topic form: a device in `default`.
        let (topic, b) = update(
            &hub,
            "$hw/events/device/thermostat-1/twin/update",
            r#"{"twin":{"setpoint":{"expected":{"value":"26"}}}}"#,
        );
        assert_eq!(topic, "$hw/events/device/thermostat-1/twin/update/result");
        assert_eq!(b["event_id"], "");
        assert_eq!(desired(&hub).as_deref(), Some("26"));
    }

    #[test]
    fn bad_updates_are_refused_with_stock_codes_and_change_nothing() {
        let hub = hub_with_thermostat();
        let cases = [
            (TOPIC, "{not json", 400, "not a twin update message"),
            (TOPIC, r#"{"event_id":"x"}"#, 400, "has no `twin`"),
            (
                TOPIC,
                r#"{"event_id":"x","twin":{"setpoint":{"expected":{"value":"31"}}}}"#,
                400,
                "device default/thermostat-1 property setpoint: 31 is above the maximum 30",
            ),
            (
                TOPIC,
                r#"{"twin":{"temperature":{"expected":{"value":"1"}}}}"#,
                400,
                "property temperature: property is ReadOnly",
            ),
            (
                TOPIC,
                r#"{"twin":{"nope":{"expected":{"value":"1"}}}}"#,
                400,
                "declares no property nope",
            ),
            (
                TOPIC,
                r#"{"twin":{"setpoint":{"actual":{"value":"1"}}}}"#,
                400,
                "no expected value",
            ),
            (
                TOPIC,
                r#"{"twin":{"setpoint":null}}"#,
                400,
                "no expected value",
            ),
            (
                TOPIC,
                r#"{"twin":{"setpoint":{"expected":{"value":"2 5"}}}}"#,
                400,
                "value `2 5` must be",
            ),
            (
                "$hw/events/device/default/ghost/twin/update",
                r#"{"twin":{"setpoint":{"expected":{"value":"25"}}}}"#,
                404,
                "device default/ghost is not known",
            ),
        ];
        for (topic, payload, code, reason) in cases {
            let (_, b) = update(&hub, topic, payload);
            assert_eq!(b["code"], code, "{payload}: {b}");
            let text = b["reason"].as_str().unwrap_or_default();
            assert!(text.contains(reason), "{payload}: {text}");
            assert_eq!(desired(&hub).as_deref(), Some("22"), "{payload}");
        }
        assert!(
            hub.twin_state("default/thermostat-1")
                .unwrap_or_default()
                .edge_desired
                .is_empty()
        );
    }
}
