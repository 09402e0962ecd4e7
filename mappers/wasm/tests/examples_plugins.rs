//! The example plugins (built by hack/build-plugins.sh) through the real SDK
//! runtime: the driver contract (`check_driver`), the simulated device with
//! desired values, the Modbus plugin against the Modbus simulator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use mapper_sdk::testing::{Conformance, TestDevice, check_driver};
use mapper_sdk::{PropertyType, Value};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_plugin_keeps_the_driver_contract() {
    common::logs();
    let plugin = common::built_plugin("wasm_sim");
    let broken = check_driver(
        common::dyn_driver(Duration::from_secs(5)),
        Conformance {
            config: json!({"plugin": plugin.to_str().unwrap(), "name": "x"}),
            readable: vec![
                (json!({"pattern": "counter"}), Some(PropertyType::Int)),
                (json!({"pattern": "name"}), Some(PropertyType::String)),
            ],
            writable: Some((
                json!({"pattern": "setpoint", "value": 20}),
                Some(PropertyType::Int),
                Value::Int(22),
            )),
        },
    )
    .await;
    assert!(broken.is_empty(), "{broken:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_plugin_reports_and_takes_desired_values() {
    common::logs();
    let plugin = common::built_plugin("wasm_sim");
    let driver = common::driver(Duration::from_secs(5));
    let ec = mapper_sdk::testing::FakeEdgeCore::start().await.unwrap();
    ec.add_device(
        TestDevice::new("room", "wasm", json!({"plugin": plugin.to_str().unwrap()}))
            .read_only(
                "ticks",
                "INT",
                json!({"pattern": "counter", "value": 1}),
                100,
            )
            .read_write(
                "setpoint",
                "INT",
                json!({"pattern": "setpoint", "value": 18, "key": "room"}),
                100,
                Some("21"),
            )
            .read_only(
                "temperature",
                "FLOAT",
                json!({"pattern": "follow", "value": 15, "key": "room"}),
                100,
            ),
    )
    .await
    .unwrap();
    ec.spawn_mapper("wasm", std::sync::Arc::new(driver.clone()));
    ec.wait_for(
        "set-point 21 and warming up",
        Duration::from_secs(20),
        |ec| {
            let t: f64 = ec.twin("room", "temperature")?.value.parse().ok()?;
            (ec.twin("room", "setpoint")?.value == "21" && t > 18.0).then_some(())
        },
    )
    .await
    .unwrap();
    assert_eq!(ec.state("room").as_deref(), Some("online"));
    ec.set_desired("room", "setpoint", "25").await.unwrap();
    ec.wait_for("set-point 25", Duration::from_secs(10), |ec| {
        (ec.twin("room", "setpoint")?.value == "25").then_some(())
    })
    .await
    .unwrap();
    assert_eq!(driver.compiles(), 1);
}

fn points(t: &[(u16, &[u16])]) -> Vec<modbus_sim::Point> {
    t.iter()
        .map(|(a, w)| serde_json::from_value(json!({"address": a, "values": w})).unwrap())
        .collect()
}

async fn plc() -> modbus_sim::Simulator {
    let mut d: modbus_sim::DeviceConfig = serde_json::from_value(
        json!({"name": "plc", "tcp": "127.0.0.1:0", "unit": 1, "size": 200}),
    )
    .unwrap();
    // 0: int16 -25 (tenths), 1-2: uint32 65538, 3-4: float32 21.5 word-swapped, 10: 300.
    let f = 21.5f32.to_bits();
    d.holding = points(&[
        (0, &[0xFFE7]),
        (1, &[1, 2]),
        (3, &[f as u16, (f >> 16) as u16]),
        (10, &[300]),
    ]);
    d.input = points(&[(5, &[0x3412])]);
    d.coils = points(&[(2, &[1])]);
    d.discrete_inputs = points(&[(1, &[1])]);
    modbus_sim::Simulator::start(modbus_sim::SimConfig { devices: vec![d] })
        .await
        .unwrap()
}

fn modbus_config(sim: &modbus_sim::Simulator, grant: bool) -> serde_json::Value {
    let port = sim.tcp_addr("plc").unwrap().port();
    let plugin = common::built_plugin("wasm_modbus");
    let mut c = json!({"plugin": plugin.to_str().unwrap(), "ip": "127.0.0.1", "port": port, "slaveID": 1, "timeout": 500});
    if grant {
        c["grantTcp"] = json!(format!("127.0.0.1:{port}"));
    }
    c
}

fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_modbus_plugin_reads_and_writes_the_simulator() {
    use mapper_sdk::DynDriver;
    common::logs();
    let sim = plc().await;
    let driver = common::driver(Duration::from_secs(5));
    let d: &dyn DynDriver = &driver;
    let cfg = d.config(&obj(modbus_config(&sim, true))).unwrap();
    let client = d.connect(&cfg.value).await.unwrap();
    let addr = |v: serde_json::Value| d.address(&obj(v), None).unwrap().value;
    let visitors = [
        addr(
            json!({"register": "HoldingRegister", "offset": 0, "limit": 1, "dataType": "int16", "scale": 0.1}),
        ),
        addr(json!({"register": "HoldingRegister", "offset": 1, "limit": 2})),
        addr(
            json!({"register": "HoldingRegister", "offset": 3, "limit": 2, "dataType": "float32", "isRegisterSwap": true}),
        ),
        addr(json!({"register": "InputRegister", "offset": 5, "limit": 1, "isSwap": true})),
        addr(json!({"register": "CoilRegister", "offset": 2})),
        addr(json!({"register": "DiscreteInputRegister", "offset": 1})),
        addr(json!({"register": "HoldingRegister", "offset": 10})),
    ];
    let refs: Vec<_> = visitors.iter().collect();
    let got: Vec<Value> = client
        .read_batch(&refs)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        got,
        vec![
            Value::Float(-2.5),
            Value::Int(65538),
            Value::Float(21.5),
            Value::Int(0x1234),
            Value::Bool(true),
            Value::Bool(true),
            Value::Int(300),
        ]
    );
    // Writes: a scaled int16, a 32-bit value, a coil.
    client
        .write(&visitors[0], &Value::Float(-1.2))
        .await
        .unwrap();
    assert_eq!(
        sim.read("plc", modbus_sim::Table::Holding, 0, 1).unwrap(),
        vec![0xFFF4]
    );
    client
        .write(&visitors[1], &Value::Int(131_073))
        .await
        .unwrap();
    assert_eq!(
        sim.read("plc", modbus_sim::Table::Holding, 1, 2).unwrap(),
        vec![2, 1]
    );
    client
        .write(&visitors[4], &Value::Bool(false))
        .await
        .unwrap();
    assert_eq!(
        sim.read("plc", modbus_sim::Table::Coils, 2, 1).unwrap(),
        vec![0]
    );
    let e = client
        .write(&visitors[3], &Value::Int(1))
        .await
        .unwrap_err();
    assert!(matches!(e, mapper_sdk::DriverError::Value(_)), "{e}");
    // An exception is the device's refusal, with its code.
    sim.set_faults(
        "plc",
        modbus_sim::Faults {
            exception: Some(2),
            ..Default::default()
        },
    );
    let e = client.read_batch(&refs[..1]).await.remove(0).unwrap_err();
    assert!(
        matches!(e, mapper_sdk::DriverError::Device(ref f) if f.code == Some(2)),
        "{e}"
    );
    sim.set_faults("plc", modbus_sim::Faults::default());
    // The simulator drops the connection: a link failure, the SDK reconnects.
    sim.drop_connections("plc");
    let e = client.read_batch(&refs[..1]).await.remove(0).unwrap_err();
    assert!(e.is_link_failure(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_modbus_plugin_keeps_the_driver_contract_and_needs_its_grant() {
    use mapper_sdk::DynDriver;
    common::logs();
    let sim = plc().await;
    let broken = check_driver(
        common::dyn_driver(Duration::from_secs(5)),
        Conformance {
            config: modbus_config(&sim, true),
            readable: vec![
                (
                    json!({"register": "HoldingRegister", "offset": 10, "limit": 1}),
                    Some(PropertyType::Int),
                ),
                (
                    json!({"register": "CoilRegister", "offset": 2}),
                    Some(PropertyType::Boolean),
                ),
            ],
            writable: Some((
                json!({"register": "HoldingRegister", "offset": 10, "limit": 1}),
                Some(PropertyType::Int),
                Value::Int(7),
            )),
        },
    )
    .await;
    assert!(broken.is_empty(), "{broken:#?}");
    // Without the grant the plugin cannot open its connection.
    let driver = common::driver(Duration::from_secs(5));
    let d: &dyn DynDriver = &driver;
    let cfg = d.config(&obj(modbus_config(&sim, false))).unwrap();
    let e = d.connect(&cfg.value).await.err().unwrap();
    let port = sim.tcp_addr("plc").unwrap().port();
    assert!(matches!(e, mapper_sdk::DriverError::Config(_)), "{e}");
    assert!(
        e.to_string().contains(&format!("127.0.0.1:{port} denied")),
        "{e}"
    );
}
