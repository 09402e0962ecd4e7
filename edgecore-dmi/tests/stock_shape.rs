//! Every device sample of the project, converted the way edgecore-dmi sends it,
//! has every sub-message stock EdgeCore always sets (`convert` module docs): a
//! mapper generated from KubeEdge's mapper-framework dereferences them without
//! nil checks and would crash on a missing one.
//!
//! Samples: every YAML file under `examples/` and `tests/`, the YAML string
//! literals in the workspace's test sources (`tests/*.rs`), a set of minimal
//! documents below that leave out every optional field, and, when the field
//! cases are checked out next to the repository (`../shared/cases`), their
//! device files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dmi_proto::config_data::NumberEncoding;
use edgecore_dmi::convert::{device_to_proto, missing_stock_fields, model_to_proto};
use edgecore_dmi::source::parse_file;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
}

/// The string literals of a Rust source that hold a Device or DeviceModel
/// (plain `"..."` with escapes, and raw `r#"..."#`).
fn yaml_literals(src: &str) -> Vec<String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if b[i] == b'\'' {
            // A char literal such as '"' (skip it), or a lifetime.
            if b.get(i + 2) == Some(&b'\'') {
                i += 3;
                continue;
            }
            if b.get(i + 1) == Some(&b'\\') && b.get(i + 3) == Some(&b'\'') {
                i += 4;
                continue;
            }
        }
        if b[i] == b'r' && matches!(b.get(i + 1), Some(b'#') | Some(b'"')) {
            let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
            if b.get(i + 1 + hashes) == Some(&b'"') {
                let start = i + 2 + hashes;
                let close = format!("\"{}", "#".repeat(hashes));
                if let Some(end) = src[start..].find(&close) {
                    out.push(src[start..start + end].to_owned());
                    i = start + end + close.len();
                    continue;
                }
            }
        }
        if b[i] == b'"' {
            let mut s = String::new();
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' && j + 1 < b.len() {
                    match b[j + 1] {
                        b'n' => s.push('\n'),
                        b't' => s.push('\t'),
                        b'\n' => {
                            // Line continuation: skip the following indentation.
                            j += 2;
                            while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                                j += 1;
                            }
                            continue;
                        }
                        c => s.push(c as char),
                    }
                    j += 2;
                    continue;
                }
                let ch_len = src[j..].chars().next().map_or(1, char::len_utf8);
                s.push_str(&src[j..j + ch_len]);
                j += ch_len;
            }
            out.push(s);
            i = j + 1;
            continue;
        }
        i += 1;
    }
    out.into_iter()
        .filter(|s| s.contains("kind: Device"))
        .collect()
}

/// Minimal documents: everything optional left out, in turn.
const MINIMAL: &str = "apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: { name: bare-model }
spec:
  protocol: virtual
  properties:
    - { name: temp, type: FLOAT, accessMode: ReadOnly }
    - { name: set, type: INT, accessMode: ReadWrite }
---
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: { name: empty-model }
spec: {}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: { name: bare }
spec:
  deviceModelRef: { name: bare-model }
  protocol: { protocolName: virtual }
  properties:
    - name: temp
    - name: set
      desired: { value: \"3\" }
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: { name: no-properties }
spec:
  deviceModelRef: { name: empty-model }
  protocol: { protocolName: virtual }
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: { name: visitors-without-data }
spec:
  deviceModelRef: { name: bare-model }
  protocol: { protocolName: virtual, configData: {} }
  properties:
    - name: temp
      visitors: { protocolName: virtual }
      pushMethod:
        dbMethod:
          influxdb2: {}
          redis: {}
          TDEngine: {}
          mysql: {}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: { name: legacy-status }
spec:
  deviceModelRef: { name: bare-model }
  protocol: { protocolName: virtual }
  properties:
    - { name: temp, reportToCloud: true }
status:
  reportToCloud: true
  reportCycle: 5000
";

struct Checked {
    devices: usize,
    failures: Vec<String>,
}

fn check_text(origin: &str, text: &str, acc: &mut Checked) {
    let parsed = parse_file(origin, text);
    let models: HashMap<String, _> = parsed
        .models
        .iter()
        .map(|m| (m.crd.metadata.name.clone().unwrap_or_default(), &m.crd))
        .collect();
    for m in &parsed.models {
        if model_to_proto(&m.crd).spec.is_none() {
            acc.failures.push(format!("{origin}: model without spec"));
        }
    }
    for d in &parsed.devices {
        let d = match d.crd() {
            Ok(d) => d,
            Err(e) => {
                acc.failures.push(format!("{origin}: {e}"));
                continue;
            }
        };
        let model = d
            .spec
            .device_model_ref
            .as_ref()
            .and_then(|r| models.get(&r.name).copied());
        for enc in [NumberEncoding::Stock, NumberEncoding::Lossless] {
            // A device that cannot be converted is never sent (bad-input samples).
            let Ok(p) = device_to_proto(&d, model, enc) else {
                continue;
            };
            acc.devices += 1;
            let missing = missing_stock_fields(&p);
            if !missing.is_empty() {
                acc.failures.push(format!(
                    "{origin}: device {}: {}",
                    p.name,
                    missing.join(", ")
                ));
            }
        }
    }
}

#[test]
fn every_sample_device_has_the_sub_messages_stock_edgecore_always_sets() {
    let root = workspace();
    let mut acc = Checked {
        devices: 0,
        failures: Vec::new(),
    };
    let mut yaml = Vec::new();
    files_under(&root.join("examples"), "yaml", &mut yaml);
    files_under(&root.join("tests"), "yaml", &mut yaml);
    files_under(&root.join("../shared/cases"), "yaml", &mut yaml);
    assert!(
        yaml.iter().any(|p| p.starts_with(root.join("examples"))),
        "no example YAML found under {}",
        root.display()
    );
    for p in &yaml {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        check_text(&p.display().to_string(), &text, &mut acc);
    }
    let mut sources = Vec::new();
    files_under(&root.join("tests"), "rs", &mut sources);
    let mut literals = 0;
    for p in &sources {
        let src = std::fs::read_to_string(p).unwrap_or_default();
        for (i, lit) in yaml_literals(&src).into_iter().enumerate() {
            literals += 1;
            check_text(&format!("{} literal {i}", p.display()), &lit, &mut acc);
        }
    }
    assert!(
        literals >= 3,
        "found only {literals} YAML literals in tests/*.rs"
    );
    check_text("minimal documents", MINIMAL, &mut acc);
    assert!(
        acc.devices >= 20,
        "only {} device conversions checked",
        acc.devices
    );
    assert!(
        acc.failures.is_empty(),
        "fields stock EdgeCore always sets are missing:\n{}",
        acc.failures.join("\n")
    );
}

#[test]
fn a_property_without_desired_goes_out_with_an_empty_desired_value() {
    let parsed = parse_file("minimal", MINIMAL);
    let model = &parsed.models[0].crd;
    let bare = parsed
        .devices
        .iter()
        .find(|d| d.key().name() == "bare")
        .and_then(|d| d.crd().ok());
    let Some(bare) = bare else {
        panic!("sample device `bare` not parsed: {:?}", parsed.errors);
    };
    let p = match device_to_proto(&bare, Some(model), NumberEncoding::Stock) {
        Ok(p) => p,
        Err(e) => panic!("conversion failed: {e}"),
    };
    assert_eq!(missing_stock_fields(&p), Vec::<String>::new());
    let spec = p.spec.unwrap_or_default();
    let temp = &spec.properties[0];
    assert_eq!(temp.desired.as_ref().map(|d| d.value.as_str()), Some(""));
    let vis = temp.visitors.as_ref();
    assert_eq!(vis.map(|v| v.protocol_name.as_str()), Some("virtual"));
    assert!(vis.and_then(|v| v.config_data.as_ref()).is_some());
    assert_eq!(
        spec.properties[1]
            .desired
            .as_ref()
            .map(|d| d.value.as_str()),
        Some("3")
    );
}

#[test]
fn the_checker_names_what_is_missing() {
    use dmi_proto::v1beta1 as pb;
    let d = pb::Device {
        name: "d".into(),
        spec: Some(pb::DeviceSpec {
            protocol: Some(pb::ProtocolConfig::default()),
            properties: vec![pb::DeviceProperty {
                name: "temp".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        missing_stock_fields(&d),
        [
            "status",
            "spec.protocol.configData",
            "spec.properties[temp].desired",
            "spec.properties[temp].visitors"
        ]
    );
}
