//! Discovery: walk a server's address space and list its variables, as a
//! table or as a ready-to-apply KubeEdge DeviceModel and Device.
//!
//! The walk starts at a node (default: the Objects folder), follows
//! hierarchical references (except `HasProperty`, whose children are
//! metadata such as `EURange`) down to a depth, and skips the standard
//! `Server` object (`i=2253`) unless the walk starts inside it. For each
//! variable it reads DataType, ValueRank, AccessLevel, UserAccessLevel and
//! Value in batched Read calls; types are resolved to built-in types through
//! the DataType's supertypes.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use mapper_sdk::{DriverError, DriverResult};
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResult, ByteString, NodeClass, NodeId,
    ObjectId, ReadValueId, ReferenceTypeId, Variant,
};

use crate::config::OpcuaConfig;
use crate::convert::{self, Builtin, NodeType};
use crate::session::Conn;

/// Nodes per Browse call.
const NODES_PER_BROWSE: usize = 100;

/// What to walk.
#[derive(Debug, Clone)]
pub struct Options {
    /// The first node (default: the Objects folder, `i=85`).
    pub start: NodeId,
    /// How many levels below `start` (1: its children only).
    pub depth: usize,
    /// Stop after this many nodes (a safety bound on huge address spaces).
    pub max_nodes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            start: ObjectId::ObjectsFolder.into(),
            depth: 5,
            max_nodes: 50_000,
        }
    }
}

/// One variable found.
#[derive(Debug, Clone)]
pub struct Variable {
    /// Its NodeId.
    pub node_id: NodeId,
    /// Browse names from below the start node down to it.
    pub path: Vec<String>,
    /// Its type, or why this mapper cannot use it.
    pub node_type: Result<NodeType, String>,
    /// The DataType as the server names it (`Int32`, `Double[]`, or a NodeId).
    pub data_type: String,
    /// Whether this user may read it.
    pub readable: bool,
    /// Whether this user may write it.
    pub writable: bool,
}

impl Variable {
    /// `Boiler/Temperature`.
    pub fn browse_path(&self) -> String {
        self.path.join("/")
    }

    /// `R`, `W`, `RW` or `-`.
    pub fn access(&self) -> &'static str {
        match (self.readable, self.writable) {
            (true, true) => "RW",
            (true, false) => "R",
            (false, true) => "W",
            (false, false) => "-",
        }
    }
}

async fn browse_all(conn: &Conn, nodes: &[NodeId]) -> DriverResult<Vec<BrowseResult>> {
    let descriptions: Vec<BrowseDescription> = nodes
        .iter()
        .map(|n| BrowseDescription {
            node_id: n.clone(),
            browse_direction: BrowseDirection::Forward,
            reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
            include_subtypes: true,
            node_class_mask: NodeClass::Object as u32 | NodeClass::Variable as u32,
            result_mask: 0x3f,
        })
        .collect();
    conn.count();
    let mut results = conn
        .session()
        .browse(&descriptions, 0, None)
        .await
        .map_err(|e| conn.failed(&e))?;
    // Follow continuation points.
    loop {
        let pending: Vec<(usize, ByteString)> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.continuation_point.is_null_or_empty())
            .map(|(i, r)| (i, r.continuation_point.clone()))
            .collect();
        if pending.is_empty() {
            return Ok(results);
        }
        for (i, _) in &pending {
            results[*i].continuation_point = ByteString::null();
        }
        let points: Vec<ByteString> = pending.iter().map(|(_, p)| p.clone()).collect();
        conn.count();
        let more = conn
            .session()
            .browse_next(false, &points)
            .await
            .map_err(|e| conn.failed(&e))?;
        for ((i, _), r) in pending.iter().zip(more) {
            results[*i]
                .references
                .get_or_insert_with(Vec::new)
                .extend(r.references.unwrap_or_default());
            results[*i].continuation_point = r.continuation_point;
        }
    }
}

/// Walks the address space below `opts.start` and describes its variables,
/// in walk order. Cancellation safe (it only reads).
///
/// # Errors
/// [`DriverError::Device`] when the start node cannot be browsed; link
/// errors as the session's.
pub async fn browse(conn: &Conn, opts: &Options) -> DriverResult<Vec<Variable>> {
    let server: NodeId = ObjectId::Server.into();
    let has_property: NodeId = ReferenceTypeId::HasProperty.into();
    let mut seen: HashSet<NodeId> = HashSet::from([opts.start.clone()]);
    let mut level: Vec<(NodeId, Vec<String>)> = vec![(opts.start.clone(), Vec::new())];
    let mut found: Vec<(NodeId, Vec<String>)> = Vec::new();
    for depth in 0..opts.depth {
        let mut next = Vec::new();
        for chunk in level.chunks(NODES_PER_BROWSE) {
            let ids: Vec<NodeId> = chunk.iter().map(|(n, _)| n.clone()).collect();
            let results = browse_all(conn, &ids).await?;
            for ((_, path), r) in chunk.iter().zip(results) {
                if r.status_code.is_bad() {
                    if depth == 0 {
                        return Err(crate::error::device_fault(
                            r.status_code,
                            &format!("browsing {}", opts.start),
                        ));
                    }
                    continue;
                }
                for reference in r.references.unwrap_or_default() {
                    let is_property = reference.reference_type_id == has_property;
                    let target = reference.node_id.node_id;
                    if is_property
                        || reference.node_id.server_index != 0
                        || (target == server && opts.start != server)
                        || !seen.insert(target.clone())
                    {
                        continue;
                    }
                    let mut p = path.clone();
                    p.push(reference.browse_name.name.as_ref().to_owned());
                    if reference.node_class == NodeClass::Variable {
                        found.push((target.clone(), p.clone()));
                    }
                    next.push((target, p));
                }
            }
            if seen.len() > opts.max_nodes {
                tracing::warn!(nodes = seen.len(), "browse stopped at the node limit");
                next.clear();
                break;
            }
        }
        level = next;
        if level.is_empty() {
            break;
        }
    }
    describe(conn, found).await
}

/// Reads what the YAML needs of each variable.
async fn describe(conn: &Conn, found: Vec<(NodeId, Vec<String>)>) -> DriverResult<Vec<Variable>> {
    const ATTRS: [AttributeId; 5] = [
        AttributeId::DataType,
        AttributeId::ValueRank,
        AttributeId::AccessLevel,
        AttributeId::UserAccessLevel,
        AttributeId::Value,
    ];
    let per_call = (conn.server_max_nodes_per_read().unwrap_or(1000) as usize / ATTRS.len()).max(1);
    let mut supertypes: HashMap<NodeId, Option<Builtin>> = HashMap::new();
    let mut out = Vec::with_capacity(found.len());
    for chunk in found.chunks(per_call) {
        let ids: Vec<ReadValueId> = chunk
            .iter()
            .flat_map(|(n, _)| ATTRS.map(|a| ReadValueId::new(n.clone(), a)))
            .collect();
        let values = conn.read_values(&ids).await?;
        for ((node_id, path), v) in chunk.iter().zip(values.chunks(ATTRS.len())) {
            let byte = |i: usize| match &v[i].value {
                Some(Variant::Byte(b)) if v[i].status().is_good() => Some(*b),
                _ => None,
            };
            let level = byte(3).or(byte(2)).unwrap_or(1);
            let rank = match &v[1].value {
                Some(Variant::Int32(r)) => *r,
                _ => -1,
            };
            let from_value = v[4]
                .value
                .as_ref()
                .filter(|_| v[4].status().is_good())
                .and_then(convert::type_of);
            let (node_type, data_type) = match (&v[0].value, from_value) {
                (_, Some(t)) => (Ok(t), t.to_string()),
                (Some(Variant::NodeId(dt)), None) => {
                    let b = match supertypes.get(dt.as_ref()) {
                        Some(b) => *b,
                        None => {
                            let b = crate::device::builtin_of(conn, dt, || {}).await?;
                            supertypes.insert((**dt).clone(), b);
                            b
                        }
                    };
                    match b {
                        Some(builtin) if rank <= 1 => {
                            let t = NodeType {
                                builtin,
                                array: rank == 1 || rank == 0,
                            };
                            (Ok(t), t.to_string())
                        }
                        Some(_) => (
                            Err(format!("{rank}-dimensional arrays are not supported")),
                            dt.to_string(),
                        ),
                        None => (
                            Err(format!(
                                "DataType {dt} is not a built-in type this mapper reads"
                            )),
                            dt.to_string(),
                        ),
                    }
                }
                _ => (
                    Err(format!(
                        "DataType unreadable ({})",
                        v[0].status().sub_code()
                    )),
                    "?".to_owned(),
                ),
            };
            out.push(Variable {
                node_id: node_id.clone(),
                path: path.clone(),
                node_type,
                data_type,
                readable: level & 1 != 0,
                writable: level & 2 != 0,
            });
        }
    }
    Ok(out)
}

/// The variables as an aligned text table: NodeId, browse path, DataType,
/// access (`R`, `W`, `RW`).
pub fn table(vars: &[Variable]) -> String {
    let head = ["NODEID", "BROWSE PATH", "DATATYPE", "ACCESS"];
    let rows: Vec<[String; 4]> = vars
        .iter()
        .map(|v| {
            [
                v.node_id.to_string(),
                v.browse_path(),
                v.data_type.clone(),
                v.access().to_owned(),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: [&str; 4]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i == 3 {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, head);
    for r in &rows {
        line(&mut out, [&r[0], &r[1], &r[2], &r[3]]);
    }
    out
}

/// A property name from a browse path: letters, digits, `-` and `_` (others
/// become `-`), levels joined by `-`, at most 128 characters.
fn property_name(path: &[String]) -> String {
    let joined = path.join("-");
    let mut name: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(mapper_sdk::TWIN_NAME_MAX);
    let name = name.trim_matches('-').to_owned();
    if name.is_empty() {
        "value".to_owned()
    } else {
        name
    }
}

/// Text as a YAML scalar (a JSON string is a valid double-quoted YAML one).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// What the generated Device is called and where it goes.
#[derive(Debug, Clone)]
pub struct YamlOptions {
    /// Device name (the model is `<name>-model`).
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Collect cycle of every property, ms.
    pub collect_cycle_ms: u64,
    /// `nodeName` of the Device, if any.
    pub node_name: Option<String>,
}

/// A KubeEdge DeviceModel and Device (devices.kubeedge.io/v1beta1) for the
/// variables this mapper can read: types from the servers' DataTypes,
/// `accessMode` ReadWrite for writable ones; the device's configData is
/// `cfg`'s keys as given. Variables it cannot use are listed in a comment.
pub fn yaml(vars: &[Variable], cfg: &OpcuaConfig, o: &YamlOptions) -> String {
    let mut names: HashSet<String> = HashSet::new();
    let mut props: Vec<(String, &Variable, NodeType)> = Vec::new();
    let mut skipped = Vec::new();
    for v in vars {
        match &v.node_type {
            Ok(t) if v.readable => {
                let base = property_name(&v.path);
                let mut name = base.clone();
                let mut n = 2;
                while !names.insert(name.clone()) {
                    name = format!("{base}-{n}");
                    n += 1;
                }
                props.push((name, v, *t));
            }
            Ok(_) => skipped.push(format!("{} ({}): not readable", v.node_id, v.browse_path())),
            Err(e) => skipped.push(format!("{} ({}): {e}", v.node_id, v.browse_path())),
        }
    }
    let model = format!("{}-model", o.name);
    let mut y = String::new();
    let _ = writeln!(y, "# Generated by mapper-opcua browse from {}.", cfg.url);
    for s in &skipped {
        let _ = writeln!(y, "# skipped {s}");
    }
    let _ = writeln!(y, "apiVersion: devices.kubeedge.io/v1beta1");
    let _ = writeln!(y, "kind: DeviceModel");
    let _ = writeln!(
        y,
        "metadata:\n  name: {}\n  namespace: {}",
        quoted(&model),
        quoted(&o.namespace)
    );
    let _ = writeln!(y, "spec:\n  protocol: opcua");
    if props.is_empty() {
        let _ = writeln!(y, "  properties: []");
    } else {
        let _ = writeln!(y, "  properties:");
    }
    for (name, v, t) in &props {
        let _ = writeln!(y, "    - name: {}", quoted(name));
        let _ = writeln!(
            y,
            "      description: {}",
            quoted(&format!("{} ({t})", v.browse_path()))
        );
        let _ = writeln!(y, "      type: {}", t.kubeedge_type().to_ascii_uppercase());
        let _ = writeln!(
            y,
            "      accessMode: {}",
            if v.writable { "ReadWrite" } else { "ReadOnly" }
        );
    }
    let _ = writeln!(y, "---");
    let _ = writeln!(y, "apiVersion: devices.kubeedge.io/v1beta1");
    let _ = writeln!(y, "kind: Device");
    let _ = writeln!(
        y,
        "metadata:\n  name: {}\n  namespace: {}",
        quoted(&o.name),
        quoted(&o.namespace)
    );
    let _ = writeln!(y, "spec:\n  deviceModelRef:\n    name: {}", quoted(&model));
    if let Some(n) = &o.node_name {
        let _ = writeln!(y, "  nodeName: {}", quoted(n));
    }
    let _ = writeln!(y, "  protocol:\n    protocolName: opcua\n    configData:");
    let config = serde_json::to_value(ConfigOut::from(cfg)).unwrap_or_default();
    if let Some(map) = config.as_object() {
        for (k, v) in map {
            let text = match v {
                serde_json::Value::String(s) => quoted(s),
                other => other.to_string(),
            };
            let _ = writeln!(y, "      {k}: {text}");
        }
    }
    let _ = writeln!(
        y,
        "  stateReport:\n    reportToCloud: true\n    reportCycle: 10000"
    );
    if props.is_empty() {
        let _ = writeln!(y, "  properties: []");
    } else {
        let _ = writeln!(y, "  properties:");
    }
    for (name, v, _) in &props {
        let _ = writeln!(y, "    - name: {}", quoted(name));
        let _ = writeln!(y, "      collectCycle: {}", o.collect_cycle_ms);
        let _ = writeln!(y, "      reportCycle: {}", o.collect_cycle_ms);
        let _ = writeln!(y, "      reportToCloud: true");
        let _ = writeln!(
            y,
            "      visitors:\n        protocolName: opcua\n        configData:"
        );
        let _ = writeln!(y, "          nodeID: {}", quoted(&v.node_id.to_string()));
    }
    y
}

/// The configData keys as given, in KubeEdge's order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigOut<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    security_policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    security_mode: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_certificate: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_certificate: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_private_key: Option<&'a str>,
}

impl<'a> From<&'a OpcuaConfig> for ConfigOut<'a> {
    fn from(c: &'a OpcuaConfig) -> Self {
        Self {
            url: &c.url,
            security_policy: c.security_policy.as_deref(),
            security_mode: c.security_mode.as_deref(),
            user_name: c.user_name.as_deref(),
            password: c.password.as_deref(),
            certificate: c.certificate.as_deref(),
            private_key: c.private_key.as_deref(),
            remote_certificate: c.remote_certificate.as_deref(),
            user_certificate: c.user_certificate.as_deref(),
            user_private_key: c.user_private_key.as_deref(),
        }
    }
}

/// Parses `--node`.
///
/// # Errors
/// [`DriverError::Config`] as [`crate::NodeRef::parse`]; `nsu=` forms are
/// resolved against the server's namespace array.
pub fn start_node(conn: &Conn, text: &str) -> DriverResult<NodeId> {
    let r = crate::NodeRef::parse(text)?;
    conn.resolve(&r)
        .map_err(|e| DriverError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(path: &[&str], t: Result<NodeType, String>, writable: bool) -> Variable {
        Variable {
            node_id: NodeId::new(2, path.join(".")),
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            data_type: t.as_ref().map_or("?".into(), |t| t.to_string()),
            node_type: t,
            readable: true,
            writable,
        }
    }

    #[test]
    fn table_and_yaml() {
        let int = NodeType {
            builtin: Builtin::Int32,
            array: false,
        };
        let dbl_arr = NodeType {
            builtin: Builtin::Double,
            array: true,
        };
        let vars = vec![
            var(
                &["Boiler", "Temperature"],
                Ok(NodeType {
                    builtin: Builtin::Double,
                    array: false,
                }),
                false,
            ),
            var(&["Boiler", "Setpoint"], Ok(int), true),
            var(&["Boiler", "Curve"], Ok(dbl_arr), false),
            var(
                &["Boiler", "Blob"],
                Err("DataType ns=2;i=9 is not a built-in type".into()),
                false,
            ),
            var(&["Boiler 2", "Temperature"], Ok(int), false),
        ];
        let t = table(&vars);
        assert!(t.starts_with("NODEID"), "{t}");
        assert!(t.contains("ns=2;s=Boiler.Setpoint"), "{t}");
        assert!(t.contains("Boiler/Setpoint"), "{t}");
        assert!(t.lines().nth(2).unwrap().trim_end().ends_with("RW"), "{t}");
        let cfg: OpcuaConfig =
            serde_json::from_value(serde_json::json!({"url": "opc.tcp://127.0.0.1:4840"})).unwrap();
        let y = yaml(
            &vars,
            &cfg,
            &YamlOptions {
                name: "plant".into(),
                namespace: "default".into(),
                collect_cycle_ms: 1000,
                node_name: None,
            },
        );
        assert!(y.contains("# skipped ns=2;s=Boiler.Blob"), "{y}");
        assert!(y.contains("name: \"Boiler-Setpoint\"\n      description: \"Boiler/Setpoint (Int32)\"\n      type: INT\n      accessMode: ReadWrite"), "{y}");
        assert!(y.contains("type: STRING"), "{y}"); // the array
        assert!(y.contains("name: \"Boiler-2-Temperature\""), "{y}");
        assert!(y.contains("nodeID: \"ns=2;s=Boiler.Temperature\""), "{y}");
        assert!(y.contains("url: \"opc.tcp://127.0.0.1:4840\""), "{y}");
        assert_eq!(property_name(&["a b".into(), "c/d".into()]), "a-b-c-d");
    }
}
