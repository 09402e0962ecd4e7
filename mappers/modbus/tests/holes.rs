//! Devices with holes in their map, against our simulator (in process): a
//! merged read that touches an address the device lacks is split, every
//! property the device serves gets its value, the error goes only to the
//! properties refused on their own, and the next ticks plan around the hole
//! until the driver reconnects. Link failures and exceptions about the device's
//! state do not split.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ops::Range;

use common::*;
use mapper_modbus::{ModbusAddress, ModbusDevice, Table};
use mapper_sdk::{DeviceClient, Driver, DriverError, DriverResult, PropertyType, Value};
use modbus_sim::{DeviceConfig, Faults, SimConfig, Simulator};
use serde_json::json;

/// A simulator unit from YAML-shaped JSON (`tcp` and `name` added).
async fn sim(unit: serde_json::Value) -> Simulator {
    let mut unit = unit;
    unit["name"] = json!("dev");
    unit["tcp"] = json!("127.0.0.1:0");
    let d: DeviceConfig = serde_json::from_value(unit).unwrap();
    Simulator::start(SimConfig { devices: vec![d] })
        .await
        .unwrap()
}

async fn connect(sim: &Simulator) -> ModbusDevice {
    let port = sim.tcp_addr("dev").unwrap().port();
    common::driver()
        .connect(&config(
            json!({"ip": "127.0.0.1", "port": port, "slaveID": 1, "timeout": 300}),
        ))
        .await
        .unwrap()
}

fn reg(table: &str, offset: u16, extra: serde_json::Value) -> ModbusAddress {
    let mut v = json!({"register": table, "offset": offset});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let ty = if table.starts_with("Coil") || table.starts_with("Discrete") {
        PropertyType::Boolean
    } else {
        PropertyType::Int
    };
    address(v, Some(ty))
}

fn holding(offset: u16) -> ModbusAddress {
    reg("HoldingRegister", offset, json!({"limit": 1}))
}

/// Reads one tick; returns the results and the requests it cost.
async fn tick(d: &ModbusDevice, props: &[ModbusAddress]) -> (Vec<DriverResult<Value>>, u64) {
    let before = d.requests();
    let refs: Vec<&ModbusAddress> = props.iter().collect();
    let r = d.read_batch(&refs).await;
    (r, d.requests() - before)
}

fn values(r: &[DriverResult<Value>]) -> Vec<Option<Value>> {
    r.iter().map(|x| x.as_ref().ok().cloned()).collect()
}

fn code(r: &DriverResult<Value>) -> Option<u32> {
    match r {
        Err(DriverError::Device(f)) => f.code,
        other => panic!("expected a device fault, got {other:?}"),
    }
}

fn ints(v: &[i64]) -> Vec<Option<Value>> {
    v.iter().map(|i| Some(Value::Int(*i))).collect()
}

#[tokio::test]
async fn a_hole_between_properties_is_split_out_and_remembered() {
    // The field case: 11174, 11176, 11177 exist, 11175 does not.
    let s = sim(json!({
        "size": 12000,
        "holding": [{"address": 11174, "values": [230, 0, 50, 7]}],
        "missing": {"holding": [11175]},
    }))
    .await;
    let props = [holding(11174), holding(11176), holding(11177)];
    let d = connect(&s).await;
    assert!(d.holes().is_empty(), "a fresh driver knows nothing");
    // Tick 1: the merged read 11174..11177 is refused, then its halves
    // (11174; 11176..11177) are read: 3 requests, all three values.
    let (r, n) = tick(&d, &props).await;
    assert_eq!(values(&r), ints(&[230, 50, 7]));
    assert_eq!(n, 3);
    assert_eq!(d.holes().ranges(Table::Holding), vec![11175..11176]);
    // Tick 2 plans around the hole: 2 requests, no refusal.
    let (r, n) = tick(&d, &props).await;
    assert_eq!(values(&r), ints(&[230, 50, 7]));
    assert_eq!(n, 2);
    // A reconnect (a new driver value) starts from nothing again.
    let again = connect(&s).await;
    assert!(again.holes().is_empty());
    let (r, n) = tick(&again, &props).await;
    assert_eq!(values(&r), ints(&[230, 50, 7]));
    assert_eq!(n, 3);
}

#[tokio::test]
async fn only_the_property_in_the_hole_fails() {
    let s = sim(json!({
        "size": 12000,
        "holding": [{"address": 11174, "values": [230, 0, 50, 7]}],
        "missing": {"holding": [11175]},
    }))
    .await;
    // 11175 is asked for too, and an int32 at 11174 reaches into the hole.
    let props = [
        holding(11174),
        holding(11175),
        holding(11176),
        holding(11177),
        reg("HoldingRegister", 11174, json!({"dataType": "int32"})),
    ];
    let d = connect(&s).await;
    for round in 0..3 {
        let (r, n) = tick(&d, &props).await;
        assert_eq!(
            values(&r),
            vec![
                Some(Value::Int(230)),
                None,
                Some(Value::Int(50)),
                Some(Value::Int(7)),
                None
            ],
            "round {round}"
        );
        assert_eq!(code(&r[1]), Some(2), "IllegalDataAddress, its own");
        assert_eq!(code(&r[4]), Some(2));
        if round > 0 {
            // 11174 | 11174..11176 | 11175 | 11176..11178: each refused
            // property alone, the others merged where no hole lies.
            assert_eq!(n, 4, "round {round}");
        }
    }
    assert_eq!(d.holes().ranges(Table::Holding), vec![11175..11176]);
}

#[tokio::test]
async fn table_edges_and_gaps_past_the_end_of_a_block() {
    // 100 registers (0..99) with 50..59 missing: two blocks.
    let s = sim(json!({
        "size": 100,
        "holding": [
            {"address": 48, "values": [48, 49]},
            {"address": 60, "values": [60, 61, 62]},
            {"address": 98, "values": [98, 99]},
        ],
        "coils": [{"address": 97, "values": [1, 0, 1]}],
        "missing": {"holding": [[50, 59]]},
    }))
    .await;
    let props = [
        holding(48),
        holding(62), // the gap filler 49..61 runs past the end of the first block
        holding(98),
        holding(99),
        reg("HoldingRegister", 99, json!({"dataType": "int32"})), // runs past the table's end
        reg("CoilRegister", 97, json!({})),
        reg("CoilRegister", 99, json!({})),
        reg("CoilRegister", 100, json!({})), // past the end of the coils
    ];
    let d = connect(&s).await;
    let want = vec![
        Some(Value::Int(48)),
        Some(Value::Int(62)),
        Some(Value::Int(98)),
        Some(Value::Int(99)),
        None,
        Some(Value::Bool(true)),
        Some(Value::Bool(true)),
        None,
    ];
    let (r, first) = tick(&d, &props).await;
    assert_eq!(values(&r), want);
    assert_eq!((code(&r[4]), code(&r[7])), (Some(2), Some(2)));
    let holes = d.holes();
    assert_eq!(
        holes.ranges(Table::Holding),
        vec![49..62, 100..101],
        "the gap between the blocks and the register past the end"
    );
    assert_eq!(holes.ranges(Table::Coil), vec![100..101]);
    let (r, second) = tick(&d, &props).await;
    assert_eq!(values(&r), want);
    // 48 | 62 | 98..100 | 99..101 | coils 97..100 | coil 100
    assert_eq!(second, 6);
    assert!(second < first, "{second} < {first}");
}

#[tokio::test]
async fn holes_in_every_table() {
    let s = sim(json!({
        "size": 100,
        "coils": [{"address": 2, "values": [1, 0, 1]}],
        "discreteInputs": [{"address": 4, "values": [1, 0, 0, 1]}],
        "input": [{"address": 10, "values": [10, 11, 12]}],
        "missing": {"coils": [3], "discreteInputs": [[5, 6]], "input": [11]},
    }))
    .await;
    let props = [
        reg("CoilRegister", 2, json!({})),
        reg("CoilRegister", 4, json!({})),
        reg("DiscreteInputRegister", 4, json!({})),
        reg("DiscreteInputRegister", 7, json!({})),
        reg("InputRegister", 10, json!({"limit": 1})),
        reg("InputRegister", 12, json!({"limit": 1})),
    ];
    let d = connect(&s).await;
    let want = vec![
        Some(Value::Bool(true)),
        Some(Value::Bool(true)),
        Some(Value::Bool(true)),
        Some(Value::Bool(true)),
        Some(Value::Int(10)),
        Some(Value::Int(12)),
    ];
    let (r, n) = tick(&d, &props).await;
    assert_eq!(values(&r), want);
    assert_eq!(n, 9, "3 refused merged reads, each split in two");
    let holes = d.holes();
    let ranges: Vec<Vec<Range<u32>>> = [Table::Coil, Table::DiscreteInput, Table::Input]
        .into_iter()
        .map(|t| holes.ranges(t))
        .collect();
    assert_eq!(ranges, vec![vec![3..4], vec![5..7], vec![11..12]]);
    let (r, n) = tick(&d, &props).await;
    assert_eq!(values(&r), want);
    assert_eq!(n, 6);
}

#[tokio::test]
async fn healthy_devices_cost_what_they_did() {
    let s = sim(json!({"size": 200})).await;
    let d = connect(&s).await;
    // 4 properties: holding 0..4 merged, a coil, an input register.
    let props = [
        holding(0),
        holding(3),
        reg("CoilRegister", 1, json!({})),
        reg("InputRegister", 5, json!({"limit": 1})),
    ];
    for _ in 0..3 {
        let (r, n) = tick(&d, &props).await;
        assert!(r.iter().all(Result::is_ok));
        assert_eq!(n, 3);
    }
    assert!(d.holes().is_empty());
}

#[tokio::test]
async fn link_failures_do_not_split() {
    let s = sim(json!({"size": 200})).await;
    let d = connect(&s).await;
    let props = [
        holding(0),
        holding(2),
        holding(4),
        reg("CoilRegister", 1, json!({})),
    ];
    s.set_faults(
        "dev",
        Faults {
            silent: true,
            ..Faults::default()
        },
    );
    // One request times out; the rest of the tick fails at once, unsplit.
    let (r, n) = tick(&d, &props).await;
    assert_eq!(n, 1);
    assert!(
        r.iter().all(|x| matches!(x, Err(DriverError::Timeout(_)))),
        "{r:?}"
    );
    assert!(d.holes().is_empty());
    s.set_faults("dev", Faults::default());
    let (r, n) = tick(&d, &props).await;
    assert!(r.iter().all(Result::is_ok));
    assert_eq!(n, 2);
}

#[tokio::test]
async fn state_exceptions_do_not_split_and_refusing_everything_teaches_nothing() {
    let s = sim(json!({"size": 200})).await;
    let d = connect(&s).await;
    let props = [holding(0), holding(2), holding(4), holding(6)];
    // Busy (06) and gateway target (0B) are about the device, not the addresses.
    for c in [6u8, 0x0B, 1] {
        s.set_faults(
            "dev",
            Faults {
                exception: Some(c),
                ..Faults::default()
            },
        );
        let (r, n) = tick(&d, &props).await;
        assert_eq!(n, 1, "exception {c}: no split");
        assert!(r.iter().all(|x| code(x) == Some(u32::from(c))));
    }
    // 04 may depend on the addresses, so it splits; but a device refusing every
    // request says nothing about its map: nothing is learned.
    s.set_faults(
        "dev",
        Faults {
            exception: Some(4),
            ..Faults::default()
        },
    );
    let (r, n) = tick(&d, &props).await;
    assert!(r.iter().all(|x| code(x) == Some(4)));
    assert_eq!(n, 7, "2m - 1 requests at most");
    assert!(d.holes().is_empty());
    s.set_faults("dev", Faults::default());
    let (r, n) = tick(&d, &props).await;
    assert!(r.iter().all(Result::is_ok));
    assert_eq!(n, 1, "back to one merged read");
}
