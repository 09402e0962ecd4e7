//! The example YAML works: `examples/opcua/plant.yaml` (DeviceModel and two
//! Devices) validates as `edgecore-dmi validate` checks it and is served by
//! opcua-sim running `examples/opcua/plant-sim.yaml`; the mapper config
//! `examples/config/opcua-mapper.yaml` loads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use device_crds::{Device, DeviceModel};
use futures::StreamExt;
use mapper_sdk::{DeviceClient, MapperConfig, PropertyType, Value};
use opcua_sim::{SimConfig, Simulator};

fn example(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap()
}

#[test]
fn the_mapper_config_loads() {
    let path = repo().join("examples/config/opcua-mapper.yaml");
    let cfg = MapperConfig::from_yaml(
        "opcua",
        &example("examples/config/opcua-mapper.yaml"),
        &path,
    )
    .unwrap();
    assert_eq!(cfg.protocol, "opcua");
    assert_eq!(
        cfg.state_dir(),
        std::path::Path::new("/var/lib/edge-dmi/opcua-mapper")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plant_example_validates_and_runs_against_opcua_sim() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim_cfg: SimConfig =
        yaml_serde::from_str(&example("examples/opcua/plant-sim.yaml")).unwrap();
    sim_cfg.port = 0;
    sim_cfg.pki_dir = dir.path().join("sim-pki");
    let sim = Simulator::start(sim_cfg).await.unwrap();

    let text = example("examples/opcua/plant.yaml");
    let docs: Vec<&str> = text.split("\n---\n").collect();
    assert_eq!(docs.len(), 3);
    let model: DeviceModel = yaml_serde::from_str(docs[0]).unwrap();
    let devices: Vec<Device> = docs[1..]
        .iter()
        .map(|d| yaml_serde::from_str(d).unwrap())
        .collect();
    assert!(device_crds::check::model_problems(&model).is_empty());
    let driver = driver(dir.path());
    let mut conns = Vec::new();
    for device in &devices {
        assert!(device_crds::check::device_problems(device).is_empty());
        assert!(matches!(
            device_crds::check::device_against_model(device, Some(&model)),
            device_crds::check::ModelCheck::Checked(ref p) if p.is_empty()
        ));
        let problems = device_crds::protocols::config_problems(device, Some(&model));
        assert!(problems.is_empty(), "{problems:?}");

        let mut config = serde_json::to_value(
            device
                .spec
                .protocol
                .as_ref()
                .unwrap()
                .config_data
                .clone()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(config["url"], "opc.tcp://127.0.0.1:14840/");
        config["url"] = serde_json::json!(sim.endpoint_url());
        let dev = connect(&driver, config.clone()).await;
        let mut addrs = Vec::new();
        for p in &device.spec.properties {
            let ty = model
                .spec
                .properties
                .iter()
                .find(|m| m.name == p.name)
                .and_then(|m| PropertyType::parse(&m.type_));
            let visitor = p.visitors.as_ref().unwrap().config_data.clone().unwrap();
            let cycle = Duration::from_millis(p.collect_cycle.unwrap() as u64);
            addrs.push((
                p,
                address_with(serde_json::to_value(visitor).unwrap(), ty, cycle),
                ty,
            ));
        }
        let refs: Vec<_> = addrs.iter().map(|(_, a, _)| a).collect();
        let values = dev.read_batch(&refs).await;
        for ((p, _, ty), v) in addrs.iter().zip(&values) {
            let v = v.as_ref().unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert!(
                mapper_sdk::coerce(ty.unwrap(), v.clone()).is_some(),
                "{}: {v:?} is not a {ty:?}",
                p.name
            );
        }
        if device.metadata.name.as_deref() == Some("press-1") {
            let serial = addrs
                .iter()
                .position(|(p, _, _)| p.name == "serial")
                .unwrap();
            assert_eq!(
                values[serial].as_ref().unwrap(),
                &Value::String("PL-0042".into())
            );
            let zones = addrs
                .iter()
                .position(|(p, _, _)| p.name == "zones")
                .unwrap();
            assert_eq!(
                values[zones].as_ref().unwrap(),
                &Value::String("61.5,62,63.25".into())
            );
            for (p, a, ty) in &addrs {
                if let Some(d) = &p.desired {
                    let v = mapper_sdk::parse_value(ty.unwrap(), &d.value).unwrap();
                    dev.write(a, &v).await.unwrap();
                    assert_eq!(
                        mapper_sdk::coerce(ty.unwrap(), dev.read(a).await.unwrap()),
                        Some(v)
                    );
                }
            }
        } else {
            let sub = dev.subscribe(&refs).await.unwrap().unwrap();
            assert!(sub.covered.iter().all(|c| *c));
            let mut stream = sub.stream;
            let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .unwrap()
                .unwrap();
            assert!(first.value.is_ok(), "{first:?}");
        }
        conns.push(dev);
    }
    // Both devices name the same endpoint: one session.
    assert!(std::sync::Arc::ptr_eq(conns[0].conn(), conns[1].conn()));
    drop(conns);
    sim.shutdown().await;
}
