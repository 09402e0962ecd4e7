//! deploy/mapper-wasm.yaml: its mapper config is valid for the `wasm`
//! protocol, and the DaemonSet mounts the plugins directory read-only from
//! the node at the path configData names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

fn manifest() -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/mapper-wasm.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    yaml_serde::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == "mapper-wasm")
        .unwrap_or_else(|| panic!("no {kind} mapper-wasm"))
}

#[test]
fn the_config_map_is_a_valid_wasm_mapper_config() {
    let docs = manifest();
    let text = kind(&docs, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    let cfg = mapper_sdk::MapperConfig::from_yaml("wasm", text, Path::new("config.yaml")).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.protocol, "wasm");
    assert_eq!(cfg.socket_path, PathBuf::from("/etc/kubeedge/wasm.sock"));
    assert_eq!(cfg.edgecore_sock, PathBuf::from("/etc/kubeedge/dmi.sock"));
}

#[test]
fn the_daemonset_mounts_the_plugins_read_only_and_a_serial_port() {
    let docs = manifest();
    let spec = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    assert!(spec["nodeSelector"].is_object());
    let volumes = spec["volumes"].as_array().unwrap();
    let host_path = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))["hostPath"]
            .clone()
    };
    assert_eq!(host_path("plugins")["path"], "/var/lib/edge-dmi/plugins");
    assert_eq!(host_path("plugins")["type"], "Directory");
    assert_eq!(host_path("kubeedge")["path"], "/etc/kubeedge");
    assert_eq!(host_path("ttyusb0")["type"], "CharDevice");
    let mounts = spec["containers"][0]["volumeMounts"].as_array().unwrap();
    let plugins = mounts.iter().find(|m| m["name"] == "plugins").unwrap();
    assert_eq!(plugins["mountPath"], "/var/lib/edge-dmi/plugins");
    assert_eq!(
        plugins["readOnly"], true,
        "plugins must be mounted read-only"
    );
    let ttys = mounts.iter().find(|m| m["name"] == "ttyusb0").unwrap();
    assert_eq!(ttys["mountPath"], host_path("ttyusb0")["path"]);
}
