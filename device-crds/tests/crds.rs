//! The committed CRD YAML in deploy/crds/ matches the Rust types. Run with
//! `UPDATE_CRDS=1` to rewrite the files after changing the types.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

#[test]
fn committed_crds_match_the_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    let update = std::env::var_os("UPDATE_CRDS").is_some();
    let mut stale = Vec::new();
    for (name, yaml) in device_crds::crd_files() {
        let path = dir.join(name);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &yaml).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != yaml {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "deploy/crds is out of date for {stale:?}; run UPDATE_CRDS=1 cargo test -p device-crds --test crds"
    );
}

#[test]
fn crds_have_the_upstream_names_and_status_subresources() {
    for (name, yaml) in device_crds::crd_files() {
        let crd: serde_json::Value = yaml_serde::from_str(&yaml).unwrap();
        assert_eq!(crd["spec"]["group"], "devices.kubeedge.io", "{name}");
        assert_eq!(crd["spec"]["scope"], "Namespaced", "{name}");
        let v = &crd["spec"]["versions"][0];
        assert_eq!(v["name"], "v1beta1");
        assert!(
            v["subresources"]["status"].is_object(),
            "{name} has a status subresource"
        );
    }
    let files = device_crds::crd_files();
    let device: serde_json::Value = yaml_serde::from_str(&files[0].1).unwrap();
    assert_eq!(device["metadata"]["name"], "devices.devices.kubeedge.io");
    let schema = &device["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"];
    assert_eq!(
        schema["protocol"]["properties"]["configData"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    assert!(schema["properties"]["items"]["properties"]["collectCycle"].is_object());
}
