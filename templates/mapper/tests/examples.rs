//! The files shipped with the crate fit the code: `config.yaml` and the
//! DaemonSet's config load for this protocol, and the configData of
//! `examples/device.yaml` decodes into the driver's types (so a renamed or new
//! field cannot leave the examples behind).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use mapper_sdk::{Driver, MapperConfig, PropertyType};
use serde::Deserialize;
use serde_json::Value as Json;
use {{crate_name}}::{ {{type_prefix}}Address, {{type_prefix}}Config, {{driver_type}}, PROTOCOL };

fn file(name: &str) -> (std::path::PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

#[test]
fn config_yaml_is_a_mapper_config_for_this_protocol() {
    let (path, text) = file("config.yaml");
    let config = MapperConfig::from_yaml(PROTOCOL, &text, &path).unwrap();
    assert_eq!(config.protocol, PROTOCOL);
    assert_eq!(config.name, format!("{PROTOCOL}-mapper"));
}

#[test]
fn the_example_device_decodes_into_the_drivers_types() {
    let (_, text) = file("examples/device.yaml");
    let docs: Vec<Json> = yaml_serde::Deserializer::from_str(&text)
        .map(|d| Json::deserialize(d).unwrap())
        .collect();
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap();
    let (model, device) = (kind("DeviceModel"), kind("Device"));
    assert_eq!(model["spec"]["protocol"], PROTOCOL);
    let protocol = &device["spec"]["protocol"];
    assert_eq!(protocol["protocolName"], PROTOCOL);
    let _: {{type_prefix}}Config = serde_json::from_value(protocol["configData"].clone()).unwrap();

    let driver = {{driver_type}}::default();
    let properties = device["spec"]["properties"].as_array().unwrap();
    assert!(!properties.is_empty());
    for p in properties {
        let model_type = model["spec"]["properties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == p["name"])
            .and_then(|m| PropertyType::parse(m["type"].as_str()?))
            .unwrap_or_else(|| panic!("{} is not in the model", p["name"]));
        assert_eq!(p["visitors"]["protocolName"], PROTOCOL);
        let mut address: {{type_prefix}}Address =
            serde_json::from_value(p["visitors"]["configData"].clone()).unwrap();
        driver
            .prepare_address(&mut address, Some(model_type))
            .unwrap_or_else(|e| panic!("{}: {e}", p["name"]));
    }
}

#[test]
fn the_daemonset_config_is_a_mapper_config_for_this_protocol() {
    let (path, text) = file("deploy/daemonset.yaml");
    let docs: Vec<Json> = yaml_serde::Deserializer::from_str(&text)
        .map(|d| Json::deserialize(d).unwrap())
        .collect();
    let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let embedded = config_map["data"]["config.yaml"].as_str().unwrap();
    let config = MapperConfig::from_yaml(PROTOCOL, embedded, &path).unwrap();
    assert_eq!(config.protocol, PROTOCOL);
    let daemon_set = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let args = &daemon_set["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[1], "/config/config.yaml");
}
