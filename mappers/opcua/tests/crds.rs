//! `edgecore-dmi validate` (device-crds' configData table for `opcua`) and
//! this mapper agree: what one refuses the other refuses, and keys the table
//! warns about are the keys the mapper ignores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use device_crds::check::Severity;
use mapper_opcua::{OpcuaConfig, OpcuaDriver};
use mapper_sdk::DynDriver;
use serde_json::{Value, json};

fn device(config: &Value, visitor: &Value) -> device_crds::Device {
    serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": "d", "namespace": "default"},
        "spec": {
            "deviceModelRef": {"name": "m"},
            "protocol": {"protocolName": "opcua", "configData": config},
            "properties": [{"name": "p", "visitors": {"protocolName": "opcua", "configData": visitor}}]
        }
    }))
    .unwrap()
}

/// (refused, keys warned about) as the table says.
fn table(config: &Value, visitor: &Value) -> (bool, Vec<String>) {
    let problems = device_crds::protocols::config_problems(&device(config, visitor), None);
    let refused = problems.iter().any(|p| p.severity == Severity::Error);
    let mut warned: Vec<String> = problems
        .iter()
        .filter(|p| p.severity == Severity::Warning)
        .map(|p| p.path.to_string().rsplit('.').next().unwrap().to_owned())
        .collect();
    warned.sort();
    (refused, warned)
}

/// (refused, keys ignored) as the mapper does it.
fn mapper(config: &Value, visitor: &Value) -> (bool, Vec<String>) {
    let driver = OpcuaDriver::new("/nonexistent");
    let mut ignored = Vec::new();
    let mut refused = false;
    match driver.config(config.as_object().unwrap()) {
        Ok(c) => {
            ignored.extend(c.ignored);
            let cfg = c.value.downcast_ref::<OpcuaConfig>().unwrap();
            refused |= cfg.endpoint().is_err();
        }
        Err(_) => refused = true,
    }
    match driver.address(visitor.as_object().unwrap(), None) {
        Ok(a) => ignored.extend(a.ignored),
        Err(_) => refused = true,
    }
    ignored.sort();
    (refused, ignored)
}

#[test]
fn the_mapper_and_the_validate_table_agree() {
    let file = std::env::current_exe().unwrap();
    let file = file.to_str().unwrap();
    let good = json!({"nodeID": "ns=2;s=Temperature"});
    let cases: Vec<(Value, Value, bool)> = vec![
        (
            json!({
                "url": "opc.tcp://10.0.0.5:4840/plant", "securityPolicy": "Basic256Sha256",
                "securityMode": "Sign", "timeout": 3000, "sessionTimeout": 30000,
                "maxNodesPerRead": 100, "subscribe": true, "publishingInterval": 500,
                "userName": "op", "password": file, "remoteCertificate": file
            }),
            json!({"nodeID": "ns=2;i=7", "dataType": "Int16"}),
            false,
        ),
        (
            json!({"url": "opc.tcp://h:4840", "securityPolicy": "basic256sha256"}),
            good.clone(),
            false,
        ),
        (
            json!({"url": "opc.tcp://h:4840", "securityPolicy": "Aes128_Sha256_RsaOaep", "securityMode": "SignAndEncrypt"}),
            good.clone(),
            false,
        ),
        (
            json!({"url": "opc.tcp://h:4840", "timeout": 0}),
            good.clone(),
            false,
        ),
        (json!({}), good.clone(), true),
        (json!({"url": "http://h:4840"}), good.clone(), true),
        (
            json!({"url": "opc.tcp://h:4840", "securityPolicy": "Basic512"}),
            good.clone(),
            true,
        ),
        (
            json!({"url": "opc.tcp://h:4840", "securityPolicy": "Basic256", "securityMode": "Encrypt"}),
            good.clone(),
            true,
        ),
        (
            json!({"url": "opc.tcp://h:4840", "subscribe": "yes"}),
            good.clone(),
            true,
        ),
        (
            json!({"url": "opc.tcp://h:4840", "maxNodesPerRead": 0}),
            good.clone(),
            true,
        ),
        (
            json!({"url": "opc.tcp://h:4840", "timeout": "5000"}),
            good.clone(),
            true,
        ),
        (
            json!({"url": "opc.tcp://h:4840", "securityPolicyy": "None"}),
            good.clone(),
            false,
        ),
        (
            json!({"url": "opc.tcp://h:4840"}),
            json!({"nodeId": "ns=2;s=T", "browseName": "T"}),
            false,
        ),
        (
            json!({"url": "opc.tcp://h:4840"}),
            json!({"nodeIDs": "ns=2;s=T"}),
            true,
        ),
        (
            json!({"url": "opc.tcp://h:4840"}),
            json!({"nodeID": 7}),
            true,
        ),
        (
            json!({"url": "opc.tcp://h:4840"}),
            json!({"nodeID": "ns=2;s=A", "dataType": "double[]"}),
            false,
        ),
        (
            json!({"url": "opc.tcp://h:4840"}),
            json!({"nodeID": "ns=2;s=A", "dataType": "Decimal"}),
            true,
        ),
    ];
    for (config, visitor, refused) in cases {
        let t = table(&config, &visitor);
        let m = mapper(&config, &visitor);
        assert_eq!(t.0, refused, "table on {config} / {visitor}");
        assert_eq!(m.0, refused, "mapper on {config} / {visitor}");
        if !refused {
            assert_eq!(t.1, m.1, "warned vs ignored keys on {config} / {visitor}");
        }
    }
}
