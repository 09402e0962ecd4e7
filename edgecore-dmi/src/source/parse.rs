//! Parsing KubeEdge YAML files: several documents per file, Device and
//! DeviceModel kinds; other kinds are skipped. Errors carry file, line and field.
//!
//! The text is untrusted: a file over [`MAX_FILE_BYTES`] is refused whole, and
//! each document is checked against [`MAX_DEPTH`] and an alias expansion budget
//! before it reaches the parser (see [`super::limits`]), so parsing any file
//! costs time linear in its size.

use device_crds::{API_VERSION, Device, DeviceModel};

use super::limits::{self, MAX_DEPTH, MAX_FILE_BYTES, MIN_NODE_BUDGET};
use crate::records::{StoredDevice, StoredModel};

/// Result of parsing one file.
#[derive(Debug, Default)]
pub struct ParsedFile {
    /// Devices found.
    pub devices: Vec<StoredDevice>,
    /// Models found.
    pub models: Vec<StoredModel>,
    /// Problems, each `file:line:col: message`.
    pub errors: Vec<String>,
    /// `(kind, namespace/name)` of documents that failed but could be identified.
    pub failed_objects: Vec<(String, String)>,
}

/// Splits YAML text at `---` lines; returns (first line number, text) per document.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut start = 1;
    let mut cur = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") || t == "..." {
            docs.push((start, std::mem::take(&mut cur)));
            start = i + 2;
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    docs.push((start, cur));
    docs.into_iter()
        .filter(|(_, d)| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// Rewrites the parser's "at line N" (counted from the document start) to file lines.
fn shift_lines(msg: &str, first_line: usize) -> String {
    const AT: &str = "at line ";
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(AT) {
        out.push_str(&rest[..i + AT.len()]);
        rest = &rest[i + AT.len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + first_line - 1).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

fn located(origin: &str, first_line: usize, e: &yaml_serde::Error) -> String {
    let msg = shift_lines(&e.to_string(), first_line);
    match e.location() {
        Some(l) => format!(
            "{origin}:{}:{}: {msg}",
            first_line + l.line() - 1,
            l.column()
        ),
        None => format!("{origin}:{first_line}: {msg}"),
    }
}

/// Checks `doc` (starting at file line `first_line`) against the parser limits.
fn check_limits(origin: &str, first_line: usize, doc: &str) -> Result<(), String> {
    if let Err(at) = limits::check_depth(doc, MAX_DEPTH) {
        return Err(format!(
            "{origin}:{}:{}: nesting deeper than {MAX_DEPTH} levels; the document is not parsed",
            first_line + at.line - 1,
            at.column
        ));
    }
    // Only an alias (`*name`) can make a document expand.
    if doc.contains('*') {
        limits::check_expansion(doc, MIN_NODE_BUDGET.max(doc.len()))
            .map_err(|e| located(origin, first_line, &e))?;
    }
    Ok(())
}

/// One document of a file, parsed but not yet checked against the rules of
/// [`device_crds::check`].
#[derive(Debug)]
pub(crate) enum Document {
    /// Not a Device or DeviceModel (skipped).
    Other,
    /// A Device.
    Device(Box<Device>),
    /// A DeviceModel.
    Model(Box<DeviceModel>),
    /// Cannot be read: `message` is `file:line[:col]: ...`; `object` is
    /// `(kind, namespace/name)` when it could be identified.
    Failed {
        /// The located message.
        message: String,
        /// What failed, if known.
        object: Option<(String, String)>,
    },
}

/// A document's `kind` and `namespace/name` (namespace `default` when unset).
pub(crate) fn identity(kind: &str, d: &Document) -> Option<(String, String)> {
    use device_crds::MetaExt;
    match d {
        Document::Device(x) => Some((
            kind.into(),
            format!(
                "{}/{}",
                x.metadata.namespace_or_default(),
                x.metadata.name_str()
            ),
        )),
        Document::Model(x) => Some((
            kind.into(),
            format!(
                "{}/{}",
                x.metadata.namespace_or_default(),
                x.metadata.name_str()
            ),
        )),
        Document::Failed { object, .. } => object.clone(),
        Document::Other => None,
    }
}

/// Splits `text` into documents and parses each (limits, apiVersion, name,
/// the typed CRD), returning `(first line, document text, result)` per
/// document; or the file-level error when `text` is over [`MAX_FILE_BYTES`].
pub(crate) fn parse_documents(
    origin: &str,
    text: &str,
) -> Result<Vec<(usize, String, Document)>, String> {
    if text.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{origin}: the file is {} bytes; the limit is {MAX_FILE_BYTES} bytes (4 MiB)",
            text.len()
        ));
    }
    Ok(documents(text)
        .into_iter()
        .map(|(line, doc)| {
            let parsed = parse_document(origin, line, &doc);
            (line, doc, parsed)
        })
        .collect())
}

fn parse_document(origin: &str, line: usize, doc: &str) -> Document {
    if let Err(message) = check_limits(origin, line, doc) {
        return Document::Failed {
            message,
            object: None,
        };
    }
    let head: yaml_serde::Value = match yaml_serde::from_str(doc) {
        Ok(v) => v,
        Err(e) => {
            return Document::Failed {
                message: located(origin, line, &e),
                object: None,
            };
        }
    };
    let field = |k: &str| {
        head.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let kind = field("kind");
    let api = field("apiVersion");
    let meta = |k: &str| {
        head.get("metadata")
            .and_then(|m| m.get(k))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let name = meta("name");
    let ns = meta("namespace");
    let id = format!("{}/{name}", if ns.is_empty() { "default" } else { &ns });
    if kind != "Device" && kind != "DeviceModel" {
        tracing::info!(file = %origin, line, kind = %kind, "skipping document that is not a Device or DeviceModel");
        return Document::Other;
    }
    let fail = |message: String| Document::Failed {
        message,
        object: (!name.is_empty()).then(|| (kind.clone(), id.clone())),
    };
    if api != API_VERSION {
        return fail(format!(
            "{origin}:{line}: {kind} {id}: apiVersion `{api}` is not supported; use {API_VERSION}"
        ));
    }
    if name.is_empty() {
        return fail(format!("{origin}:{line}: {kind} has no metadata.name"));
    }
    if kind == "Device" {
        match yaml_serde::from_str::<Device>(doc) {
            Ok(mut crd) => {
                // Thousands of devices stay in memory: no spare capacity.
                crd.spec.properties.shrink_to_fit();
                Document::Device(Box::new(crd))
            }
            Err(e) => fail(format!("{} (Device {id})", located(origin, line, &e))),
        }
    } else {
        match yaml_serde::from_str::<DeviceModel>(doc) {
            Ok(crd) => Document::Model(Box::new(crd)),
            Err(e) => fail(format!("{} (DeviceModel {id})", located(origin, line, &e))),
        }
    }
}

/// Parses one file's text. `origin` names it in messages.
///
/// Text over [`MAX_FILE_BYTES`] yields only an error; a document nested deeper
/// than [`MAX_DEPTH`] or expanding through aliases to more nodes than it has
/// bytes (at least 100 000) yields an error for that document. A Device or
/// DeviceModel that breaks a rule of [`device_crds::check`] is an error too
/// (the first rule it breaks is named).
pub fn parse_file(origin: &str, text: &str) -> ParsedFile {
    let mut out = ParsedFile::default();
    let docs = match parse_documents(origin, text) {
        Ok(d) => d,
        Err(e) => {
            out.errors.push(e);
            return out;
        }
    };
    // One copy of the origin for all the file's devices.
    let shared_origin: std::sync::Arc<str> = origin.into();
    for (line, _, doc) in docs {
        let checked = match &doc {
            Document::Device(d) => check_device(d).map_err(|e| ("Device", e)),
            Document::Model(m) => check_model(m).map_err(|e| ("DeviceModel", e)),
            _ => Ok(()),
        };
        if let Err((kind, e)) = checked {
            if let Some(obj) = identity(kind, &doc) {
                out.errors
                    .push(format!("{origin}:{line}: {kind} {}: {e}", obj.1));
                out.failed_objects.push(obj);
            }
            continue;
        }
        match doc {
            Document::Other => {}
            Document::Device(crd) => match StoredDevice::new(&crd, shared_origin.clone()) {
                Ok(d) => out.devices.push(d),
                Err(e) => {
                    out.errors.push(format!("{origin}:{line}: {e}"));
                    out.failed_objects
                        .extend(identity("Device", &Document::Device(crd)));
                }
            },
            Document::Model(crd) => out.models.push(StoredModel {
                crd: *crd,
                origin: origin.to_owned(),
            }),
            Document::Failed { message, object } => {
                out.errors.push(message);
                out.failed_objects.extend(object);
            }
        }
    }
    out
}

/// The first error of the shared rules ([`device_crds::check`]).
fn first_error(problems: Vec<device_crds::check::Problem>) -> Result<(), String> {
    match problems
        .into_iter()
        .find(|p| p.severity == device_crds::check::Severity::Error)
    {
        Some(p) => Err(p.message),
        None => Ok(()),
    }
}

fn check_device(d: &Device) -> Result<(), String> {
    first_error(device_crds::check::device_problems(d))
}

fn check_model(m: &DeviceModel) -> Result<(), String> {
    first_error(device_crds::check::model_problems(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: m
spec:
  protocol: virtual
  properties:
    - name: temp
      type: INT
      accessMode: ReadWrite
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: other
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: d1
spec:
  deviceModelRef:
    name: m
  protocol:
    protocolName: virtual
  properties:
    - name: temp
      collectCycle: 1000
";

    #[test]
    fn multi_document_file_with_other_kinds() {
        let p = parse_file("a.yaml", GOOD);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.models.len(), 1);
        assert_eq!(p.devices.len(), 1);
        assert_eq!(p.devices[0].key().name(), "d1");
    }

    #[test]
    fn field_error_has_file_line_and_field() {
        let bad = GOOD.replace("      collectCycle: 1000", "      collectCycle: soon");
        let p = parse_file("dir/a.yaml", &bad);
        assert_eq!(p.devices.len(), 0);
        assert_eq!(p.models.len(), 1);
        assert_eq!(p.errors.len(), 1);
        let e = &p.errors[0];
        assert!(e.starts_with("dir/a.yaml:28:"), "{e}");
        assert!(e.contains("collectCycle"), "{e}");
        assert!(e.contains("Device default/d1"), "{e}");
        assert_eq!(
            p.failed_objects,
            vec![("Device".to_owned(), "default/d1".to_owned())]
        );
    }

    #[test]
    fn parser_lines_become_file_lines() {
        assert_eq!(
            shift_lines("bad at line 3 column 2, while x at line 4", 10),
            "bad at line 12 column 2, while x at line 13"
        );
        assert_eq!(shift_lines("no position", 10), "no position");
    }

    #[test]
    fn syntax_error_is_reported_with_line() {
        let p = parse_file("b.yaml", "kind: Device\nmetadata: [unclosed\n");
        assert_eq!(p.errors.len(), 1);
        assert!(p.errors[0].starts_with("b.yaml:"), "{}", p.errors[0]);
    }

    #[test]
    fn model_checks() {
        let p = parse_file("c.yaml", &GOOD.replace("type: INT", "type: INTEGER"));
        assert!(
            p.errors[0].contains("type `INTEGER` is not one of"),
            "{:?}",
            p.errors
        );
        let dup = GOOD.replace(
            "      collectCycle: 1000",
            "      collectCycle: 1000\n    - name: temp",
        );
        let p = parse_file("c.yaml", &dup);
        assert!(
            p.errors[0].contains("`temp` is listed twice"),
            "{:?}",
            p.errors
        );
    }

    #[test]
    fn oversized_text_is_refused_whole() {
        let text = format!("{GOOD}#{}", "x".repeat(MAX_FILE_BYTES));
        let p = parse_file("big.yaml", &text);
        assert!(p.devices.is_empty() && p.models.is_empty());
        assert_eq!(
            p.errors,
            [format!(
                "big.yaml: the file is {} bytes; the limit is 4194304 bytes (4 MiB)",
                text.len()
            )]
        );
        // No object is named, so the caller keeps every last good object.
        assert!(p.failed_objects.is_empty());
    }

    #[test]
    fn a_deep_document_is_refused_quickly_and_alone() {
        let started = std::time::Instant::now();
        let text = format!("{GOOD}---\nspec: {}\n", "[".repeat(100_000));
        let p = parse_file("deep.yaml", &text);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!((p.models.len(), p.devices.len()), (1, 1));
        assert_eq!(
            p.errors,
            ["deep.yaml:30:70: nesting deeper than 64 levels; the document is not parsed"]
        );
        // Deep block nesting too.
        let block: String = (0..80).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        let p = parse_file("block.yaml", &block);
        assert!(
            p.errors[0].starts_with("block.yaml:65:65: nesting deeper"),
            "{:?}",
            p.errors
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text =
            String::from("apiVersion: v1\nkind: ConfigMap\na: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            text.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 10].join(", ")
            ));
        }
        let started = std::time::Instant::now();
        let p = parse_file("bomb.yaml", &format!("{GOOD}---\n{text}"));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!((p.models.len(), p.devices.len(), p.errors.len()), (1, 1, 1));
        assert!(p.errors[0].starts_with("bomb.yaml:"), "{:?}", p.errors);
        // Ordinary aliases still work.
        let aliased = GOOD.replace(
            "    - name: temp\n      collectCycle: 1000",
            "    - &p\n      name: temp\n      collectCycle: 1000",
        );
        let p = parse_file("alias.yaml", &aliased);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
    }
}
