//! `edgecore-dmi validate FILE...`: Device/DeviceModel YAML checked offline,
//! for CI pipelines and before `kubectl apply`.
//!
//! The files are read as the YAML directory source reads them
//! ([`crate::source`]: size and nesting limits, `apiVersion`, the typed CRD)
//! and checked with the rules of [`device_crds::check`] (what the loader and
//! the cloud controller apply: the model is present among the files given,
//! property names, types, minimum/maximum, access mode, desired values) and
//! [`device_crds::protocols`] (configData shape of the known protocols).
//!
//! Each problem is one line, `file:line:col: error: message` (or `warning:`),
//! pointing at the field; the exit code is 0 when there is no error (and, with
//! `--strict`, no warning), 1 when there is, 2 when a file cannot be read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use device_crds::check::{ModelCheck, Problem, Segment, Severity};
use device_crds::{Device, DeviceModel, MetaExt};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::source::parse::{Document, parse_documents};

/// One problem found, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file, as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column; `None` when only the line is known.
    pub column: Option<usize>,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match self.column {
            Some(c) => write!(
                f,
                "{}:{}:{c}: {level}: {}",
                self.file, self.line, self.message
            ),
            None => write!(f, "{}:{}: {level}: {}", self.file, self.line, self.message),
        }
    }
}

/// A YAML node with the location of every key and value, enough to point at
/// a [`device_crds::check::Path`].
#[derive(Debug)]
enum Node {
    Map(Vec<(Spanned<Key>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

/// A mapping key as text, whatever scalar it is.
#[derive(Debug)]
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key(String::new()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = m.next_key::<Spanned<Key>>()? {
                    let v = m.next_value::<Spanned<Node>>()?;
                    entries.push((k, v));
                }
                Ok(Node::Map(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = s.next_element::<Spanned<Node>>()? {
                    items.push(v);
                }
                Ok(Node::Seq(items))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
        }
        d.deserialize_any(V)
    }
}

/// `(line, column)` of a spanned value, 1-based; `None` when unknown.
fn at<T>(s: &Spanned<T>) -> Option<(usize, usize)> {
    let (l, c) = (s.referenced.line(), s.referenced.column());
    (l > 0).then(|| {
        (
            usize::try_from(l).unwrap_or(usize::MAX),
            usize::try_from(c).unwrap_or(0),
        )
    })
}

/// Where `path` is in `root` (1-based, in the document): the value for a
/// scalar, the key for a mapping or list, the nearest enclosing key when the
/// path ends at a field that is not there.
fn locate(root: &Node, path: &[Segment]) -> Option<(usize, usize)> {
    let mut node = root;
    let mut best: Option<(usize, usize)> = None;
    for seg in path {
        let next = match (node, seg) {
            (Node::Map(entries), Segment::Key(k)) => entries
                .iter()
                .find(|(key, _)| key.value.0 == *k)
                .map(|(key, value)| match value.value {
                    Node::Scalar => (at(value).or_else(|| at(key)), &value.value),
                    _ => (at(key), &value.value),
                }),
            (Node::Seq(items), Segment::Index(i)) => {
                items.get(*i).map(|item| (at(item), &item.value))
            }
            _ => None,
        };
        match next {
            Some((loc, child)) => {
                best = loc.or(best);
                node = child;
            }
            None => break,
        }
    }
    best
}

/// What a document holds, for the cross-file checks.
struct Object {
    file: String,
    first_line: usize,
    tree: Option<Node>,
}

impl Object {
    fn finding(&self, p: Problem) -> Finding {
        let (line, column) = match self.tree.as_ref().and_then(|t| locate(t, &p.path.0)) {
            Some((l, c)) => (self.first_line + l - 1, Some(c)),
            None => (self.first_line, None),
        };
        Finding {
            file: self.file.clone(),
            line,
            column,
            severity: p.severity,
            message: format!("{} (at {})", p.message, p.path),
        }
    }
}

/// Splits a loader message `file:line[:col]: text` into a [`Finding`].
fn loader_finding(file: &str, message: &str) -> Finding {
    let rest = message
        .strip_prefix(file)
        .and_then(|r| r.strip_prefix(':'))
        .unwrap_or(message);
    let mut numbers = Vec::new();
    let mut text = rest;
    while numbers.len() < 2 {
        let digits = text.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 || !text[digits..].starts_with(':') {
            break;
        }
        numbers.push(text[..digits].parse::<usize>().unwrap_or(0));
        text = &text[digits + 1..];
    }
    Finding {
        file: file.to_owned(),
        line: numbers.first().copied().unwrap_or(1),
        column: numbers.get(1).copied(),
        severity: Severity::Error,
        message: text.trim_start().to_owned(),
    }
}

/// Checks the files `(name, text)` together: every device against the
/// models found in any of them. Findings come in file order, then by line.
pub fn check_texts(files: &[(String, String)]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut devices: Vec<(Object, Device)> = Vec::new();
    let mut models: BTreeMap<String, (Object, DeviceModel)> = BTreeMap::new();
    for (file, text) in files {
        let docs = match parse_documents(file, text) {
            Ok(d) => d,
            Err(e) => {
                findings.push(loader_finding(file, &e));
                continue;
            }
        };
        for (first_line, doc_text, doc) in docs {
            let object = || Object {
                file: file.clone(),
                first_line,
                tree: serde_saphyr::from_str::<Node>(&doc_text).ok(),
            };
            match doc {
                Document::Other => {}
                Document::Failed { message, .. } => findings.push(loader_finding(file, &message)),
                Document::Device(d) => devices.push((object(), *d)),
                Document::Model(m) => {
                    let id = format!(
                        "{}/{}",
                        m.metadata.namespace_or_default(),
                        m.metadata.name_str()
                    );
                    let o = object();
                    if let Some((first, _)) = models.get(&id) {
                        findings.push(o.finding(Problem::error(
                            device_crds::check::Path::keys(&["metadata", "name"]),
                            format!(
                                "DeviceModel {id} is also defined at {}:{}",
                                first.file, first.first_line
                            ),
                        )));
                        continue;
                    }
                    for p in device_crds::check::model_problems(&m) {
                        findings.push(o.finding(p));
                    }
                    models.insert(id, (o, *m));
                }
            }
        }
    }
    for (o, d) in &devices {
        let id = format!(
            "{}/{}",
            d.metadata.namespace_or_default(),
            d.metadata.name_str()
        );
        let named = |p: Problem| Problem {
            message: format!("Device {id}: {}", p.message),
            ..p
        };
        for p in device_crds::check::device_problems(d) {
            findings.push(o.finding(named(p)));
        }
        let model_id = d
            .spec
            .model_name()
            .map(|m| format!("{}/{m}", d.metadata.namespace_or_default()));
        let model = model_id
            .as_ref()
            .and_then(|m| models.get(m))
            .map(|(_, m)| m);
        match device_crds::check::device_against_model(d, model) {
            ModelCheck::NoModelRef => findings.push(o.finding(named(Problem::error(
                device_crds::check::Path::keys(&["spec", "deviceModelRef", "name"]),
                "spec.deviceModelRef.name is empty",
            )))),
            ModelCheck::ModelNotFound(m) => findings.push(o.finding(named(Problem::error(
                device_crds::check::Path::keys(&["spec", "deviceModelRef", "name"]),
                format!("DeviceModel {m} is not in the files given"),
            )))),
            ModelCheck::Checked(problems) => {
                // device_problems already named duplicates and negative cycles.
                for p in problems.into_iter().filter(|p| {
                    !p.message.contains("is listed twice") && !p.message.contains("is negative")
                }) {
                    findings.push(o.finding(named(p)));
                }
            }
        }
        for p in device_crds::protocols::config_problems(d, model) {
            findings.push(o.finding(named(p)));
        }
    }
    findings.sort_by(|a, b| {
        let order = |f: &Finding| files.iter().position(|(n, _)| *n == f.file);
        order(a)
            .cmp(&order(b))
            .then(a.line.cmp(&b.line))
            .then(a.column.cmp(&b.column))
    });
    findings
}

/// The YAML files under `path`: itself when it is a file, else its `*.yaml`
/// and `*.yml` files, recursively, sorted.
fn expand(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !path.is_dir() {
        out.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            expand(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
    Ok(())
}

/// The whole `validate` command: prints each finding on stdout and a summary
/// on stderr; see the module docs for the exit codes.
pub fn main(paths: &[PathBuf], strict: bool) -> ExitCode {
    use std::io::Write;
    let mut stderr = std::io::stderr().lock();
    // A closed pipe must not panic; what cannot be written is dropped.
    let mut eprint = |line: String| {
        let _ = writeln!(stderr, "{line}");
    };
    let mut files = Vec::new();
    let mut unreadable = false;
    for p in paths {
        if let Err(e) = expand(p, &mut files) {
            eprint(format!("{}: cannot list: {e}", p.display()));
            unreadable = true;
        }
    }
    let mut texts = Vec::new();
    for f in &files {
        match std::fs::read(f) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => texts.push((f.display().to_string(), t)),
                Err(_) => {
                    eprint(format!("{}: not UTF-8 text", f.display()));
                    unreadable = true;
                }
            },
            Err(e) => {
                eprint(format!("{}: cannot read: {e}", f.display()));
                unreadable = true;
            }
        }
    }
    let findings = check_texts(&texts);
    let mut stdout = std::io::stdout().lock();
    for f in &findings {
        let _ = writeln!(stdout, "{f}");
    }
    let _ = stdout.flush();
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    eprint(format!(
        "{} file(s) checked: {errors} error(s), {warnings} warning(s)",
        texts.len()
    ));
    if unreadable {
        ExitCode::from(2)
    } else if errors > 0 || (strict && warnings > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = "\
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: thermo
spec:
  protocol: modbus
  properties:
    - name: temperature
      type: INT
      accessMode: ReadWrite
      maximum: \"100\"
";

    fn device(props: &str) -> String {
        format!(
            "\
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: t1
spec:
  deviceModelRef:
    name: thermo
  protocol:
    protocolName: modbus
    configData:
      ip: 127.0.0.1
      port: 502
  properties:
{props}"
        )
    }

    fn run(files: &[(&str, &str)]) -> Vec<String> {
        let owned: Vec<(String, String)> = files
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        check_texts(&owned).iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn a_valid_pair_has_no_findings() {
        let dev = device(
            "    - name: temperature
      desired:
        value: \"42\"
      visitors:
        protocolName: modbus
        configData:
          register: HoldingRegister
          offset: 0
",
        );
        assert_eq!(
            run(&[("m.yaml", MODEL), ("d.yaml", &dev)]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_problem_points_at_its_line_and_column() {
        let dev = device(
            "    - name: temperature
      desired:
        value: \"420\"
      visitors:
        protocolName: modbus
        configData:
          register: HoldingRegistr
          offset: 70000
          slave: 1
    - name: humidity
",
        );
        let text = format!("{MODEL}---\n{dev}");
        let got = run(&[("all.yaml", &text)]);
        // The device document starts at line 13 of the file.
        assert_eq!(got.len(), 6, "{got:#?}");
        let expect = [
            "all.yaml:28:16: error: Device default/t1: desired 420 of `temperature` is above the maximum 100",
            "all.yaml:32:21: error: Device default/t1: property temperature: register: `HoldingRegistr` (text) is not one of",
            "all.yaml:33:19: error: Device default/t1: property temperature: offset: 70000 is outside 0..=65535",
            "all.yaml:34:18: warning: Device default/t1: property temperature: mapper-modbus does not read configData key `slave`",
            "all.yaml:35:13: error: Device default/t1: property `humidity` is not in DeviceModel thermo",
            "all.yaml:35:13: error: Device default/t1: property humidity: no visitors.configData; mapper-modbus needs register, offset",
        ];
        for (g, e) in got.iter().zip(expect) {
            assert!(g.starts_with(e), "{g}\n  expected {e}");
        }
    }

    #[test]
    fn a_missing_model_and_loader_errors_are_reported() {
        let dev = device("    - name: temperature\n");
        let got = run(&[
            ("d.yaml", &dev),
            (
                "bad.yaml",
                "kind: Device\napiVersion: devices.kubeedge.io/v1beta1\nmetadata: {name: x}\nspec: [1, 2\n",
            ),
        ]);
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(
            got[0].starts_with(
                "d.yaml:7:11: error: Device default/t1: DeviceModel default/thermo is not in the files given"
            ),
            "{}",
            got[0]
        );
        assert!(
            got[1].starts_with("d.yaml:14:13: error: Device default/t1: property temperature: no visitors.configData"),
            "{}",
            got[1]
        );
        assert!(
            got[2].starts_with("bad.yaml:5:1: error: did not find expected ','"),
            "{}",
            got[2]
        );
    }

    #[test]
    fn model_rules_are_located_too() {
        let model = MODEL.replace("type: INT", "type: WORD");
        let got = run(&[("m.yaml", &model)]);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].starts_with("m.yaml:9:13: error: property temperature: type `WORD`"),
            "{}",
            got[0]
        );
    }
}
