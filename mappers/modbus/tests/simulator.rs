//! The driver against our simulator (in process): every table and data type,
//! both byte and word orders, negative numbers, scale, writes read back; read
//! planning; exceptions; a dead unit on a shared gateway; dropped connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use mapper_modbus::ModbusDevice;
use mapper_sdk::{DeviceClient, Driver, DriverError, PropertyType, Value};
use modbus_sim::{DeviceConfig, Faults, Point, SimConfig, Simulator, Table};
use serde_json::json;

fn points(t: Vec<(u16, Vec<u16>)>) -> Vec<Point> {
    t.into_iter()
        .map(|(a, w)| {
            serde_json::from_value(json!({"address": a, "values": w.iter().map(|x| i64::from(*x)).collect::<Vec<_>>()})).unwrap()
        })
        .collect()
}

fn device(name: &str, tcp: &str, unit: u8) -> DeviceConfig {
    serde_json::from_value(json!({"name": name, "tcp": tcp, "unit": unit, "size": 200})).unwrap()
}

async fn sim_with_map() -> Simulator {
    let mut d = device("plc", "127.0.0.1:0", 1);
    d.holding = points(holding());
    d.input = points(input());
    d.coils = points(coils());
    d.discrete_inputs = points(discrete());
    Simulator::start(SimConfig { devices: vec![d] })
        .await
        .unwrap()
}

async fn connect(sim: &Simulator, name: &str, extra: serde_json::Value) -> ModbusDevice {
    let addr = sim.tcp_addr(name).unwrap();
    let mut cfg = json!({"ip": "127.0.0.1", "port": addr.port(), "slaveID": 1, "timeout": 300});
    cfg.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    common::driver().connect(&config(cfg)).await.unwrap()
}

#[tokio::test]
async fn reads_every_type_and_order() {
    let sim = sim_with_map().await;
    let d = connect(&sim, "plc", json!({})).await;
    check_reads(&d).await;
}

#[tokio::test]
async fn writes_are_read_back() {
    let sim = sim_with_map().await;
    let d = connect(&sim, "plc", json!({})).await;
    check_writes(&d).await;
    // And the simulator holds what was written last at 50 (-10.5 / 0.5 = -21).
    assert_eq!(
        sim.read("plc", Table::Holding, 50, 1).unwrap(),
        vec![(-21i16) as u16]
    );
    // The scaled set-point: desired 21.7 at scale 0.1 is register 217.
    assert_eq!(sim.read("plc", Table::Holding, 64, 1).unwrap(), vec![217]);
}

#[tokio::test]
async fn planning_merges_and_limits() {
    let sim = sim_with_map().await;
    let contiguous: Vec<_> = (0..100u16)
        .map(|i| {
            address(
                json!({"register": "HoldingRegister", "offset": i, "limit": 1}),
                Some(PropertyType::Int),
            )
        })
        .collect();
    let refs: Vec<_> = contiguous.iter().collect();
    let planned = connect(&sim, "plc", json!({})).await;
    let r = planned.read_batch(&refs).await;
    assert!(r.iter().all(Result::is_ok));
    assert_eq!(
        planned.requests(),
        1,
        "100 contiguous registers in one request"
    );
    let per_property = connect(&sim, "plc", json!({"planning": false})).await;
    per_property.read_batch(&refs).await;
    assert_eq!(per_property.requests(), 100);
    let small = connect(&sim, "plc", json!({"maxRegisters": 30})).await;
    small.read_batch(&refs).await;
    assert_eq!(small.requests(), 4, "30-register requests");
    // Sparse map: gaps of 20 with the default allowance of 16 split every time.
    let sparse: Vec<_> = (0..5u16)
        .map(|i| {
            address(
                json!({"register": "HoldingRegister", "offset": i * 21, "limit": 1}),
                Some(PropertyType::Int),
            )
        })
        .collect();
    let s = connect(&sim, "plc", json!({})).await;
    s.read_batch(&sparse.iter().collect::<Vec<_>>()).await;
    assert_eq!(s.requests(), 5);
    let wide = connect(&sim, "plc", json!({"maxGap": 20})).await;
    wide.read_batch(&sparse.iter().collect::<Vec<_>>()).await;
    assert_eq!(wide.requests(), 1);
}

#[tokio::test]
async fn exceptions_are_device_faults_with_the_code() {
    let sim = sim_with_map().await;
    let d = connect(&sim, "plc", json!({})).await;
    let beyond = address(
        json!({"register": "HoldingRegister", "offset": 199, "dataType": "int32"}),
        Some(PropertyType::Int),
    );
    match d.read(&beyond).await {
        Err(DriverError::Device(f)) => assert_eq!(f.code, Some(2), "IllegalDataAddress"),
        other => panic!("expected a device fault, got {other:?}"),
    }
    sim.set_faults(
        "plc",
        Faults {
            exception: Some(4),
            ..Faults::default()
        },
    );
    let ok = address(
        json!({"register": "HoldingRegister", "offset": 1}),
        Some(PropertyType::Int),
    );
    match d.read(&ok).await {
        Err(DriverError::Device(f)) => assert_eq!(f.code, Some(4)),
        other => panic!("expected exception 4, got {other:?}"),
    }
    sim.set_faults("plc", Faults::default());
    assert_eq!(d.read(&ok).await.unwrap(), Value::Int(54321));
}

#[tokio::test]
async fn dead_unit_on_a_gateway_does_not_stall_the_others() {
    let mut a = device("a", "127.0.0.1:0", 1);
    a.holding = points(vec![(0, vec![11])]);
    let cfg = SimConfig { devices: vec![a] };
    let sim = Simulator::start(cfg).await.unwrap();
    let port = sim.tcp_addr("a").unwrap().port();
    // A second simulator process-wide is not needed: unit 2 simply does not exist
    // behind this address (exception 0x0B) and unit 1 is made silent in turn.
    let one = common::driver()
        .connect(&config(
            json!({"ip": "127.0.0.1", "port": port, "slaveID": 1, "timeout": 200}),
        ))
        .await
        .unwrap();
    let two = common::driver()
        .connect(&config(
            json!({"ip": "127.0.0.1", "port": port, "slaveID": 2, "timeout": 200}),
        ))
        .await
        .unwrap();
    assert!(
        std::sync::Arc::ptr_eq(one.link(), two.link()),
        "one connection per endpoint"
    );
    let reg = address(
        json!({"register": "HoldingRegister", "offset": 0}),
        Some(PropertyType::Int),
    );
    match two.read(&reg).await {
        Err(DriverError::Device(f)) => assert_eq!(f.code, Some(0x0B)),
        other => panic!("{other:?}"),
    }
    sim.set_faults(
        "a",
        Faults {
            silent: true,
            ..Faults::default()
        },
    );
    let t0 = Instant::now();
    assert!(matches!(one.read(&reg).await, Err(DriverError::Timeout(_))));
    assert!(
        t0.elapsed() < Duration::from_millis(600),
        "bounded by the request timeout"
    );
    sim.set_faults("a", Faults::default());
    // The link was dropped after the timeout and reopens by itself.
    assert_eq!(one.read(&reg).await.unwrap(), Value::Int(11));
}

#[tokio::test]
async fn dropped_connections_fail_then_recover() {
    let sim = sim_with_map().await;
    let d = connect(&sim, "plc", json!({})).await;
    let reg = address(
        json!({"register": "HoldingRegister", "offset": 1}),
        Some(PropertyType::Int),
    );
    assert_eq!(d.read(&reg).await.unwrap(), Value::Int(54321));
    let connects = d.link().connects();
    sim.drop_connections("plc");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = d.read(&reg).await.unwrap_err();
    assert!(e.is_link_failure(), "{e}");
    assert_eq!(d.read(&reg).await.unwrap(), Value::Int(54321));
    assert_eq!(d.link().connects(), connects + 1);
}

#[tokio::test]
async fn latency_is_added() {
    let sim = sim_with_map().await;
    let d = connect(&sim, "plc", json!({"timeout": 1000})).await;
    sim.set_faults(
        "plc",
        Faults {
            latency_ms: 150,
            ..Faults::default()
        },
    );
    let reg = address(
        json!({"register": "HoldingRegister", "offset": 1}),
        Some(PropertyType::Int),
    );
    let t0 = Instant::now();
    d.read(&reg).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(150));
}

/// The SDK's driver contract (mapper_sdk::testing::check_driver): hostile
/// configuration is a Config error and never a panic, one result per address,
/// a read dropped half-way leaves the link usable, writes and disconnect finish.
#[tokio::test]
async fn the_modbus_driver_keeps_the_driver_contract() {
    use mapper_sdk::testing::{Conformance, check_driver};
    let sim = sim_with_map().await;
    let port = sim.tcp_addr("plc").unwrap().port();
    let broken = check_driver(
        std::sync::Arc::new(mapper_modbus::ModbusDriver::default()),
        Conformance {
            config: json!({"ip": "127.0.0.1", "port": port, "slaveID": 1, "timeout": 300}),
            readable: vec![
                (
                    json!({"register": "HoldingRegister", "offset": 0, "limit": 1}),
                    Some(PropertyType::Int),
                ),
                (
                    json!({"register": "CoilRegister", "offset": 0, "limit": 1}),
                    Some(PropertyType::Boolean),
                ),
            ],
            writable: Some((
                json!({"register": "HoldingRegister", "offset": 50, "limit": 1}),
                Some(PropertyType::Int),
                Value::Int(7),
            )),
        },
    )
    .await;
    assert!(broken.is_empty(), "{broken:#?}");
}
