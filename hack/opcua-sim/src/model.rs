//! The simulated variables: their place in the address space (fixed at
//! start) and their values, statuses and patterns (the source of truth; the
//! address space is refreshed from it).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Instant;

use opcua::types::{DataValue, DateTime, Identifier, NodeId, StatusCode, SubStatusCode, Variant};
use rand::RngExt;

use crate::config::{NodeConfig, Pattern, SimConfig, SimType};
use crate::value;

/// The namespace index of every simulated node (0 is OPC UA's, 1 the server's).
pub const SIM_NAMESPACE: u16 = 2;

/// Parses `i=1001`, `s=Boiler.Temperature`, `g=…`, `b=…`, with or without
/// `ns=2;` before it; other namespaces are refused.
pub(crate) fn parse_node_id(text: &str) -> Result<NodeId, String> {
    let text = text.trim();
    let parsed =
        NodeId::from_str(text).map_err(|_| format!("`{text}` is not a node id (i=.., s=..)"))?;
    if !text.starts_with("ns=") {
        return Ok(NodeId::new(SIM_NAMESPACE, parsed.identifier));
    }
    if parsed.namespace != SIM_NAMESPACE {
        return Err(format!(
            "`{text}`: simulated nodes are in namespace {SIM_NAMESPACE}"
        ));
    }
    Ok(parsed)
}

/// Parses a status code name such as `BadSensorFailure` or
/// `UncertainLastUsableValue` (not `Good`).
pub(crate) fn parse_status(name: &str) -> Result<StatusCode, String> {
    let sub = SubStatusCode::from_str(name)
        .map_err(|()| format!("`{name}` is not a status code name (e.g. BadSensorFailure)"))?;
    let code = StatusCode::from_category(sub);
    if code.is_good() {
        return Err(format!(
            "`{name}` is a good status; use `good <node>` to clear a fault"
        ));
    }
    Ok(code)
}

/// A folder under Objects.
#[derive(Debug, Clone)]
pub(crate) struct Folder {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    pub(crate) parent: NodeId,
}

/// Where and what a variable is.
#[derive(Debug, Clone)]
pub(crate) struct VarLayout {
    pub(crate) id: NodeId,
    pub(crate) browse_name: String,
    pub(crate) display_name: String,
    pub(crate) description: Option<String>,
    pub(crate) parent: NodeId,
    pub(crate) ty: SimType,
    pub(crate) array: bool,
    pub(crate) writable: bool,
}

/// The address space shape, fixed at start.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    pub(crate) folders: Vec<Folder>,
    pub(crate) vars: Vec<VarLayout>,
}

/// A pattern with its parameters resolved.
#[derive(Debug, Clone)]
struct Dynamic {
    pattern: Pattern,
    /// Per element (one for a scalar): the initial value, or the walk position.
    bases: Vec<f64>,
    lo: f64,
    hi: f64,
    step: f64,
    period_s: f64,
    amplitude: f64,
    /// Random walk: the last period a step was taken in.
    last_period: u64,
}

impl Dynamic {
    fn new(n: &NodeConfig, bases: Vec<f64>) -> Result<Self, String> {
        let ty = n.data_type;
        let (type_lo, type_hi) = ty.range();
        let first = bases.iter().copied().fold(f64::INFINITY, f64::min);
        let first = if first.is_finite() { first } else { 0.0 };
        let (lo, hi) = match n.pattern {
            Pattern::Counter => (n.min.unwrap_or(first.min(0.0)), n.max.unwrap_or(type_hi)),
            Pattern::Ramp => (n.min.unwrap_or(0.0), n.max.unwrap_or(100.0)),
            Pattern::Sine | Pattern::RandomWalk | Pattern::Constant => {
                (n.min.unwrap_or(type_lo), n.max.unwrap_or(type_hi))
            }
        };
        if lo > hi {
            return Err(format!("min {lo} is above max {hi}"));
        }
        let period_ms = n.period_ms.unwrap_or(1000);
        if period_ms == 0 {
            return Err("periodMs must be at least 1".to_owned());
        }
        let step = n.step.unwrap_or(1.0);
        if !step.is_finite() {
            return Err(format!("step {step} is not a number"));
        }
        Ok(Dynamic {
            pattern: n.pattern,
            bases: bases.into_iter().map(|b| b.clamp(lo, hi)).collect(),
            lo,
            hi,
            step,
            period_s: period_ms as f64 / 1000.0,
            amplitude: n.amplitude.unwrap_or(1.0),
            last_period: 0,
        })
    }

    /// The element values at `t` seconds after start.
    fn eval(&mut self, t: f64) -> Vec<f64> {
        let periods = (t / self.period_s).floor();
        match self.pattern {
            Pattern::Constant => self.bases.clone(),
            Pattern::Counter => {
                let span = self.hi - self.lo + self.step.abs();
                self.bases
                    .iter()
                    .map(|b| {
                        let raw = b - self.lo + self.step * periods;
                        if span > 0.0 && span.is_finite() {
                            self.lo + raw.rem_euclid(span)
                        } else {
                            (self.lo + raw).clamp(self.lo, self.hi)
                        }
                    })
                    .collect()
            }
            Pattern::Ramp => {
                let x = self.lo + (self.hi - self.lo) * (t / self.period_s).fract();
                vec![x; self.bases.len()]
            }
            Pattern::Sine => {
                let s = (std::f64::consts::TAU * t / self.period_s).sin();
                self.bases
                    .iter()
                    .map(|b| (b + self.amplitude * s).clamp(self.lo, self.hi))
                    .collect()
            }
            Pattern::RandomWalk => {
                let now = periods as u64;
                if now > self.last_period {
                    self.last_period = now;
                    let mut rng = rand::rng();
                    for b in &mut self.bases {
                        let delta = rng.random_range(-1.0..=1.0) * self.step;
                        *b = (*b + delta).clamp(self.lo, self.hi);
                    }
                }
                self.bases.clone()
            }
        }
    }
}

/// One variable's state.
#[derive(Debug, Clone)]
pub(crate) struct Point {
    pub(crate) id: NodeId,
    pub(crate) ty: SimType,
    pub(crate) array: bool,
    /// Clients may write it.
    pub(crate) writable: bool,
    /// The value (kept while a Bad status hides it).
    pub(crate) value: Variant,
    /// Good, or the fault set by `bad` / the `status` field.
    pub(crate) status: StatusCode,
    /// When value or status last changed.
    pub(crate) changed: DateTime,
    /// `min` and `max` from the configuration: client writes outside get
    /// BadOutOfRange.
    pub(crate) bounds: (Option<f64>, Option<f64>),
    dynamic: Option<Dynamic>,
}

impl Point {
    /// The DataValue a Read returns: a null value under a Bad status. (The
    /// null variant is stored rather than no value, because async-opcua's
    /// variables report no status when they hold no value.)
    pub(crate) fn data_value(&self) -> DataValue {
        DataValue {
            value: Some(if self.status.is_bad() {
                Variant::Empty
            } else {
                self.value.clone()
            }),
            status: Some(self.status),
            source_timestamp: Some(self.changed),
            source_picoseconds: None,
            server_timestamp: Some(DateTime::now()),
            server_picoseconds: None,
        }
    }

    /// Whether a written value is within `min..=max` (every element of an
    /// array; non-numeric values always are).
    pub(crate) fn in_bounds(&self, v: &Variant) -> bool {
        let ok = |x: &Variant| {
            value::as_f64(x).is_none_or(|x| {
                self.bounds.0.is_none_or(|lo| x >= lo) && self.bounds.1.is_none_or(|hi| x <= hi)
            })
        };
        match v {
            Variant::Array(a) => a.values.iter().all(ok),
            scalar => ok(scalar),
        }
    }

    /// Sets the value as a client write would; the pattern stops.
    pub(crate) fn set(&mut self, v: Variant) {
        self.value = v;
        self.dynamic = None;
        self.changed = DateTime::now();
    }

    /// Sets the status (Good clears a fault).
    pub(crate) fn set_status(&mut self, status: StatusCode) {
        self.status = status;
        self.changed = DateTime::now();
    }
}

/// Every variable's state.
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) points: Vec<Point>,
    index: HashMap<NodeId, usize>,
    started: Instant,
}

impl Model {
    /// The index of a simulated variable.
    pub(crate) fn find(&self, id: &NodeId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Starts pattern time from now (patterns begin when the server serves,
    /// not when the configuration was read).
    pub(crate) fn restart_clock(&mut self) {
        self.started = Instant::now();
    }

    /// Evaluates the patterns; returns the points whose value changed.
    pub(crate) fn tick(&mut self) -> Vec<usize> {
        let t = self.started.elapsed().as_secs_f64();
        let mut changed = Vec::new();
        for (i, p) in self.points.iter_mut().enumerate() {
            let Some(d) = p.dynamic.as_mut() else {
                continue;
            };
            let xs = d.eval(t);
            let v = if p.array {
                let values: Vec<Variant> = xs.iter().map(|x| p.ty.nearest(*x)).collect();
                match opcua::types::Array::new(p.ty.scalar_type(), values) {
                    Ok(a) => Variant::Array(Box::new(a)),
                    Err(_) => continue,
                }
            } else {
                match xs.first() {
                    Some(x) => p.ty.nearest(*x),
                    None => continue,
                }
            };
            if v != p.value {
                p.value = v;
                p.changed = DateTime::now();
                changed.push(i);
            }
        }
        changed
    }
}

fn default_browse_name(id: &NodeId) -> String {
    match &id.identifier {
        Identifier::String(s) => s.as_ref().to_owned(),
        Identifier::Numeric(n) => format!("i{n}"),
        other => other.to_string(),
    }
}

/// Checks the configuration and builds the layout and the initial state.
/// Errors name the node (or field) at fault.
pub(crate) fn build(cfg: &SimConfig) -> Result<(Layout, Model), String> {
    if cfg.namespace == cfg.application_uri {
        return Err("namespace and applicationUri must differ".to_owned());
    }
    if cfg.tick_ms == 0 {
        return Err("tickMs must be at least 1".to_owned());
    }
    let mut layout = Layout::default();
    let mut points = Vec::with_capacity(cfg.nodes.len());
    let mut index = HashMap::with_capacity(cfg.nodes.len());
    let mut folders: HashMap<String, NodeId> = HashMap::new();
    let objects = NodeId::objects_folder_id();
    for n in &cfg.nodes {
        let at = |e: String| format!("node {}: {e}", n.node_id);
        let id = parse_node_id(&n.node_id).map_err(at)?;
        if index.contains_key(&id) {
            return Err(at("node id used twice".to_owned()));
        }
        let mut parent = objects.clone();
        if let Some(path) = &n.folder {
            let mut prefix = String::new();
            for part in path.split('/').filter(|p| !p.is_empty()) {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                let folder_id = folders
                    .entry(prefix.clone())
                    .or_insert_with(|| {
                        let fid = NodeId::new(SIM_NAMESPACE, prefix.clone());
                        layout.folders.push(Folder {
                            id: fid.clone(),
                            name: part.to_owned(),
                            parent: parent.clone(),
                        });
                        fid
                    })
                    .clone();
                parent = folder_id;
            }
        }
        let ty = n.data_type;
        if n.array && !ty.is_numeric() {
            return Err(at(format!(
                "arrays of {ty:?} are not supported (numeric types and Boolean)"
            )));
        }
        if n.pattern != Pattern::Constant && !ty.is_numeric() {
            return Err(at(format!(
                "pattern {:?} needs a numeric dataType",
                n.pattern
            )));
        }
        let value = match &n.value {
            Some(v) => value::from_json(ty, n.array, v).map_err(at)?,
            None if n.array => value::from_json(ty, true, &serde_json::json!([])).map_err(at)?,
            None => ty.default_value(),
        };
        let dynamic = if n.pattern == Pattern::Constant {
            None
        } else {
            let bases = match &value {
                Variant::Array(a) => a.values.iter().filter_map(value::as_f64).collect(),
                v => vec![value::as_f64(v).unwrap_or(0.0)],
            };
            Some(Dynamic::new(n, bases).map_err(at)?)
        };
        let status = match &n.status {
            Some(s) => parse_status(s).map_err(at)?,
            None => StatusCode::Good,
        };
        let browse_name = n
            .browse_name
            .clone()
            .unwrap_or_else(|| default_browse_name(&id));
        index.insert(id.clone(), points.len());
        points.push(Point {
            id: id.clone(),
            ty,
            array: n.array,
            writable: n.writable,
            value,
            status,
            changed: DateTime::now(),
            bounds: (n.min, n.max),
            dynamic,
        });
        layout.vars.push(VarLayout {
            id,
            display_name: n
                .display_name
                .clone()
                .unwrap_or_else(|| browse_name.clone()),
            browse_name,
            description: n.description.clone(),
            parent,
            ty,
            array: n.array,
            writable: n.writable,
        });
    }
    let folder_ids: HashSet<&NodeId> = layout.folders.iter().map(|f| &f.id).collect();
    if let Some(v) = layout.vars.iter().find(|v| folder_ids.contains(&v.id)) {
        return Err(format!("node {}: the same id as a folder", v.id));
    }
    let mut model = Model {
        points,
        index,
        started: Instant::now(),
    };
    model.tick();
    Ok((layout, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;

    fn cfg(nodes: Vec<NodeConfig>) -> SimConfig {
        SimConfig {
            nodes,
            ..SimConfig::default()
        }
    }

    #[test]
    fn node_ids_default_to_namespace_2() {
        assert_eq!(parse_node_id("i=1001").unwrap(), NodeId::new(2, 1001u32));
        assert_eq!(
            parse_node_id("ns=2;s=Boiler.T").unwrap(),
            NodeId::new(2, "Boiler.T")
        );
        assert!(parse_node_id("ns=3;i=1").is_err());
        assert!(parse_node_id("x=1").is_err());
    }

    #[test]
    fn status_names() {
        assert_eq!(
            parse_status("BadSensorFailure").unwrap(),
            StatusCode::BadSensorFailure
        );
        assert!(
            parse_status("UncertainLastUsableValue")
                .unwrap()
                .is_uncertain()
        );
        assert!(parse_status("Good").is_err());
        assert!(parse_status("Broken").is_err());
    }

    #[test]
    fn folders_are_shared_and_nested() {
        let mut a = NodeConfig::new("s=A", SimType::Double);
        a.folder = Some("Plant/Boiler".into());
        let mut b = NodeConfig::new("s=B", SimType::Int32);
        b.folder = Some("Plant/Boiler".into());
        let mut c = NodeConfig::new("i=5", SimType::Boolean);
        c.folder = Some("Plant".into());
        let (layout, model) = build(&cfg(vec![a, b, c])).unwrap();
        assert_eq!(layout.folders.len(), 2);
        assert_eq!(layout.folders[1].parent, layout.folders[0].id);
        assert_eq!(layout.vars[0].parent, NodeId::new(2, "Plant/Boiler"));
        assert_eq!(layout.vars[2].browse_name, "i5");
        assert_eq!(model.points[1].value, Variant::Int32(0));
    }

    #[test]
    fn bad_configurations_name_the_node() {
        let mut n = NodeConfig::new("s=Text", SimType::String);
        n.pattern = Pattern::Counter;
        let e = build(&cfg(vec![n])).unwrap_err();
        assert!(e.contains("s=Text") && e.contains("numeric"), "{e}");
        let n = NodeConfig::new("s=X", SimType::Double);
        let e = build(&cfg(vec![n.clone(), n])).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let mut n = NodeConfig::new("s=Y", SimType::Byte);
        n.value = Some(serde_json::json!(300));
        assert!(build(&cfg(vec![n])).unwrap_err().contains("out of range"));
    }

    #[test]
    fn counter_steps_per_period_and_wraps() {
        let mut n = NodeConfig::new("s=C", SimType::UInt16);
        n.pattern = Pattern::Counter;
        n.value = Some(serde_json::json!(8));
        n.max = Some(10.0);
        n.step = Some(1.0);
        let mut d = Dynamic::new(&n, vec![8.0]).unwrap();
        assert_eq!(d.eval(0.5), vec![8.0]);
        assert_eq!(d.eval(1.0), vec![9.0]);
        assert_eq!(d.eval(2.0), vec![10.0]);
        assert_eq!(d.eval(3.0), vec![0.0]);
    }

    #[test]
    fn ramp_sine_and_walk_stay_in_bounds() {
        let mut n = NodeConfig::new("s=R", SimType::Double);
        n.pattern = Pattern::Ramp;
        n.period_ms = Some(10_000);
        let mut d = Dynamic::new(&n, vec![0.0]).unwrap();
        assert_eq!(d.eval(5.0), vec![50.0]);
        n.pattern = Pattern::Sine;
        n.amplitude = Some(10.0);
        let mut d = Dynamic::new(&n, vec![20.0]).unwrap();
        assert!((d.eval(2.5)[0] - 30.0).abs() < 1e-9);
        n.pattern = Pattern::RandomWalk;
        n.min = Some(0.0);
        n.max = Some(1.0);
        n.step = Some(5.0);
        let mut d = Dynamic::new(&n, vec![0.5]).unwrap();
        for s in 1..50 {
            let x = d.eval(f64::from(s) * 10.0)[0];
            assert!((0.0..=1.0).contains(&x), "{x}");
        }
    }

    #[test]
    fn writes_stop_the_pattern_and_bad_hides_the_value() {
        let mut n = NodeConfig::new("s=C", SimType::Double);
        n.pattern = Pattern::Counter;
        n.period_ms = Some(1);
        let (_, mut model) = build(&cfg(vec![n])).unwrap();
        model.points[0].set(Variant::Double(42.0));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(model.tick().is_empty());
        let mut bounded = NodeConfig::new("s=B", SimType::Int32);
        bounded.min = Some(0.0);
        bounded.max = Some(10.0);
        let (_, b) = build(&cfg(vec![bounded])).unwrap();
        assert!(b.points[0].in_bounds(&Variant::Int32(10)));
        assert!(!b.points[0].in_bounds(&Variant::Int32(11)));
        model.points[0].set_status(StatusCode::BadSensorFailure);
        let dv = model.points[0].data_value();
        assert_eq!(dv.status, Some(StatusCode::BadSensorFailure));
        assert_eq!(dv.value, Some(Variant::Empty));
    }
}
