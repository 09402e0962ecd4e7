//! The rules a Device or DeviceModel must meet, in one place: the edge loader
//! (edgecore-dmi's YAML directory source), the cloud controller's Ready
//! condition and `edgecore-dmi validate` all apply these functions.
//!
//! Each rule yields a [`Problem`] with the [`Path`] of the field it is about
//! (`spec.properties.2.collectCycle`), so a caller that has the YAML text can
//! point at the line and column.
//!
//! * [`model_problems`]: property names unique and not empty, `type` one of
//!   KubeEdge's types, `accessMode` ReadWrite or ReadOnly, `minimum` and
//!   `maximum` numbers;
//! * [`device_problems`]: property names unique and not empty, cycles not
//!   negative;
//! * [`device_against_model`]: the model reference, the protocol, every
//!   property declared by the model, desired values valid for their property
//!   ([`edge_rt::desired`], the rule the mappers apply before writing);
//! * [`crate::protocols::config_problems`]: configData of the protocols this
//!   project ships mappers for.

use std::collections::HashSet;

use crate::{Device, DeviceModel, ModelProperty};

/// Where a problem is, as object keys and list indices from the document
/// root, e.g. `spec.properties.2.visitors.configData.offset`. Shown with `.`
/// between segments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(pub Vec<Segment>);

/// One step of a [`Path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// An object key.
    Key(String),
    /// A list index, 0-based.
    Index(usize),
}

impl Path {
    /// A path of object keys.
    pub fn keys(keys: &[&str]) -> Self {
        Self(keys.iter().map(|k| Segment::Key((*k).to_owned())).collect())
    }

    /// `self` followed by key `k`.
    pub fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Key(k.to_owned()));
        p
    }

    /// `self` followed by index `i`.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Index(i));
        p
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            match s {
                Segment::Key(k) => f.write_str(k)?,
                Segment::Index(n) => write!(f, "{n}")?,
            }
        }
        Ok(())
    }
}

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Works, but probably not as meant (a configData key no mapper reads).
    Warning,
    /// The object is refused or cannot work.
    Error,
}

/// One rule an object breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The field it is about.
    pub path: Path,
    /// What is wrong, naming the property where there is one.
    pub message: String,
}

impl Problem {
    /// An error at `path`.
    pub fn error(path: Path, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            path,
            message: message.into(),
        }
    }

    /// A warning at `path`.
    pub fn warning(path: Path, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            path,
            message: message.into(),
        }
    }
}

fn properties() -> Path {
    Path::keys(&["spec", "properties"])
}

/// Names empty or listed twice, as problems at `spec.properties.N.name`.
fn unique_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<Problem> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, n) in names.enumerate() {
        let at = properties().index(i).key("name");
        if n.is_empty() {
            out.push(Problem::error(at, "a property has an empty name"));
        } else if !seen.insert(n) {
            out.push(Problem::error(
                at,
                format!("property `{n}` is listed twice"),
            ));
        }
    }
    out
}

/// The rules a DeviceModel meets on its own (see the module docs).
pub fn model_problems(m: &DeviceModel) -> Vec<Problem> {
    let mut out = unique_names(m.spec.properties.iter().map(|p| p.name.as_str()));
    for (i, p) in m.spec.properties.iter().enumerate() {
        let at = properties().index(i);
        if !crate::PROPERTY_TYPES.contains(&p.type_.to_ascii_uppercase().as_str()) {
            out.push(Problem::error(
                at.key("type"),
                format!(
                    "property {}: type `{}` is not one of {}",
                    p.name,
                    p.type_,
                    crate::PROPERTY_TYPES.join(", ")
                ),
            ));
        }
        if !p.access_mode.is_empty() && !crate::ACCESS_MODES.contains(&p.access_mode.as_str()) {
            out.push(Problem::error(
                at.key("accessMode"),
                format!(
                    "property {}: accessMode `{}` is not ReadWrite or ReadOnly",
                    p.name, p.access_mode
                ),
            ));
        }
        for (what, v) in [("minimum", &p.minimum), ("maximum", &p.maximum)] {
            if !v.is_empty() && v.trim().parse::<f64>().is_err() {
                out.push(Problem::error(
                    at.key(what),
                    format!("property {}: {what} `{v}` is not a number", p.name),
                ));
            }
        }
    }
    out
}

/// The rules a Device meets on its own (see the module docs).
pub fn device_problems(d: &Device) -> Vec<Problem> {
    let mut out = unique_names(d.spec.properties.iter().map(|p| p.name.as_str()));
    for (i, p) in d.spec.properties.iter().enumerate() {
        for (what, v) in [
            ("collectCycle", p.collect_cycle),
            ("reportCycle", p.report_cycle),
        ] {
            if v.is_some_and(|v| v < 0) {
                out.push(Problem::error(
                    properties().index(i).key(what),
                    format!("property {}: {what} must not be negative", p.name),
                ));
            }
        }
    }
    out
}

/// Checks a desired value against a model property with the rules the
/// mappers apply ([`edge_rt::desired`]), so a device the controller calls
/// valid is one the mappers accept. A model type KubeEdge does not define is
/// not checked here (the mapper reports it).
///
/// # Errors
/// The reason, naming the property: read-only property, not an integer /
/// number / boolean, below the minimum or above the maximum.
pub fn check_desired(p: &ModelProperty, value: &str) -> Result<(), String> {
    use edge_rt::desired::DesiredError as E;
    let name = &p.name;
    match edge_rt::desired::check_text(&p.type_, &p.access_mode, &p.minimum, &p.maximum, value) {
        Ok(_) | Err(E::UnknownType(_)) => Ok(()),
        Err(E::ReadOnly) => Err(format!(
            "property `{name}` is {} but has a desired value",
            if p.access_mode.is_empty() {
                "ReadOnly"
            } else {
                &p.access_mode
            }
        )),
        Err(E::NotInteger(v)) => Err(format!("desired `{v}` of `{name}` is not an integer")),
        Err(E::NotNumber(v)) => Err(format!("desired `{v}` of `{name}` is not a number")),
        Err(E::NotBoolean(v)) => Err(format!("desired `{v}` of `{name}` is not a boolean")),
        Err(E::BelowMinimum { value, minimum }) => Err(format!(
            "desired {value} of `{name}` is below the minimum {minimum}"
        )),
        Err(E::AboveMaximum { value, maximum }) => Err(format!(
            "desired {value} of `{name}` is above the maximum {maximum}"
        )),
    }
}

/// Why a Device does not match its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelCheck {
    /// `spec.deviceModelRef.name` is empty.
    NoModelRef,
    /// The model is not there (`namespace/name` as the device names it).
    ModelNotFound(String),
    /// The model is there; these rules are broken (empty: the device is valid).
    Checked(Vec<Problem>),
}

/// The cloud controller's rules for a Device and its model (`None`: not
/// found in the device's namespace): see the module docs.
pub fn device_against_model(d: &Device, model: Option<&DeviceModel>) -> ModelCheck {
    use crate::MetaExt;
    let Some(model_name) = d.spec.model_name() else {
        return ModelCheck::NoModelRef;
    };
    let Some(model) = model else {
        return ModelCheck::ModelNotFound(format!(
            "{}/{model_name}",
            d.metadata.namespace_or_default()
        ));
    };
    let mut out = Vec::new();
    if d.spec.protocol_name().is_none() && model.spec.protocol.is_empty() {
        out.push(Problem::error(
            Path::keys(&["spec", "protocol", "protocolName"]),
            "neither spec.protocol.protocolName nor the model's spec.protocol is set",
        ));
    }
    let mut seen = HashSet::new();
    for (i, p) in d.spec.properties.iter().enumerate() {
        let at = properties().index(i);
        if !seen.insert(p.name.as_str()) {
            out.push(Problem::error(
                at.key("name"),
                format!("property `{}` is listed twice", p.name),
            ));
            continue;
        }
        let Some(mp) = model.spec.properties.iter().find(|m| m.name == p.name) else {
            out.push(Problem::error(
                at.key("name"),
                format!("property `{}` is not in DeviceModel {model_name}", p.name),
            ));
            continue;
        };
        if let Some(desired) = p.desired.as_ref().filter(|d| !d.value.is_empty())
            && let Err(e) = check_desired(mp, &desired.value)
        {
            out.push(Problem::error(at.key("desired").key("value"), e));
        }
        for (what, v) in [
            ("collectCycle", p.collect_cycle),
            ("reportCycle", p.report_cycle),
        ] {
            if v.is_some_and(|v| v < 0) {
                out.push(Problem::error(
                    at.key(what),
                    format!("property `{}`: {what} is negative", p.name),
                ));
            }
        }
    }
    ModelCheck::Checked(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(props: serde_json::Value) -> DeviceModel {
        serde_json::from_value(serde_json::json!({
            "apiVersion": crate::API_VERSION, "kind": "DeviceModel",
            "metadata": {"name": "m"}, "spec": {"properties": props}
        }))
        .unwrap()
    }

    fn device(props: serde_json::Value) -> Device {
        serde_json::from_value(serde_json::json!({
            "apiVersion": crate::API_VERSION, "kind": "Device",
            "metadata": {"name": "d"},
            "spec": {"deviceModelRef": {"name": "m"}, "protocol": {"protocolName": "modbus"}, "properties": props}
        }))
        .unwrap()
    }

    #[test]
    fn model_problems_point_at_the_field() {
        let m = model(serde_json::json!([
            {"name": "a", "type": "INT", "minimum": "x"},
            {"name": "a", "type": "WORD", "accessMode": "Write"}
        ]));
        let got: Vec<String> = model_problems(&m)
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        assert_eq!(
            got,
            [
                "spec.properties.1.name: property `a` is listed twice",
                "spec.properties.0.minimum: property a: minimum `x` is not a number",
                "spec.properties.1.type: property a: type `WORD` is not one of INT, FLOAT, DOUBLE, STRING, BOOLEAN, BYTES, STREAM",
                "spec.properties.1.accessMode: property a: accessMode `Write` is not ReadWrite or ReadOnly",
            ]
        );
    }

    #[test]
    fn device_rules_against_the_model() {
        let m = model(serde_json::json!([
            {"name": "t", "type": "INT", "accessMode": "ReadWrite", "maximum": "10"}
        ]));
        let d = device(serde_json::json!([
            {"name": "t", "desired": {"value": "11"}, "collectCycle": -1},
            {"name": "ghost"}
        ]));
        let ModelCheck::Checked(problems) = device_against_model(&d, Some(&m)) else {
            panic!("model is there");
        };
        let got: Vec<String> = problems.iter().map(|p| p.path.to_string()).collect();
        assert_eq!(
            got,
            [
                "spec.properties.0.desired.value",
                "spec.properties.0.collectCycle",
                "spec.properties.1.name"
            ]
        );
        assert_eq!(
            device_against_model(&d, None),
            ModelCheck::ModelNotFound("default/m".into())
        );
        assert_eq!(
            device_problems(&d)
                .iter()
                .map(|p| p.path.to_string())
                .collect::<Vec<_>>(),
            ["spec.properties.0.collectCycle"]
        );
    }
}
