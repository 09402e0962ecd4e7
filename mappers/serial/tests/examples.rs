//! The example devices in `examples/serial/` decode with this driver: every
//! protocol configData and every visitor, with the model's property types.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;

use mapper_sdk::{DynDriver, PropertyType};
use mapper_serial::SerialDriver;
use serde::Deserialize;
use serde_json::Value;

fn property_type(text: &str) -> Option<PropertyType> {
    match text {
        "INT" => Some(PropertyType::Int),
        "FLOAT" => Some(PropertyType::Float),
        "DOUBLE" => Some(PropertyType::Double),
        "BOOLEAN" => Some(PropertyType::Boolean),
        "STRING" => Some(PropertyType::String),
        "BYTES" => Some(PropertyType::Bytes),
        _ => None,
    }
}

#[test]
fn every_example_device_decodes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/serial");
    let driver = SerialDriver::default();
    let mut devices = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = yaml_serde::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
        let mut types: HashMap<String, Option<PropertyType>> = HashMap::new();
        for d in docs.iter().filter(|d| d["kind"] == "DeviceModel") {
            for p in d["spec"]["properties"].as_array().unwrap() {
                types.insert(
                    p["name"].as_str().unwrap().to_owned(),
                    property_type(p["type"].as_str().unwrap()),
                );
            }
        }
        for d in docs.iter().filter(|d| d["kind"] == "Device") {
            devices += 1;
            let spec = &d["spec"];
            assert_eq!(spec["protocol"]["protocolName"], "serial", "{path:?}");
            let cfg = spec["protocol"]["configData"].as_object().unwrap();
            if let Err(e) = driver.config(cfg) {
                panic!("{path:?}: protocol configData: {e}");
            }
            for p in spec["properties"].as_array().unwrap() {
                let name = p["name"].as_str().unwrap();
                let visitor = p["visitors"]["configData"].as_object().unwrap();
                let ty = types.get(name).copied().flatten();
                if let Err(e) = driver.address(visitor, ty) {
                    panic!("{path:?}: property {name}: {e}");
                }
            }
        }
    }
    assert!(devices >= 2, "no example devices found in {dir:?}");
}
