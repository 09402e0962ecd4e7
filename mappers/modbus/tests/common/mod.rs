//! One register map and what each visitor must read from it, shared by the tests
//! against our simulator and against pymodbus, so both servers are held to the
//! same expectations.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::path::PathBuf;

use mapper_modbus::{ModbusAddress, ModbusConfig, ModbusDevice, ModbusDriver};
use mapper_sdk::{DeviceClient, Driver, PropertyType, Value};
use serde_json::{Value as Json, json};

/// The driver the tests open devices with (one pool, as in a mapper process).
pub fn driver() -> &'static ModbusDriver {
    static DRIVER: std::sync::LazyLock<ModbusDriver> =
        std::sync::LazyLock::new(ModbusDriver::default);
    &DRIVER
}

/// (address, words) of the holding table.
pub fn holding() -> Vec<(u16, Vec<u16>)> {
    vec![
        (0, vec![(-1234i16) as u16]),               // int16
        (1, vec![54321]),                           // uint16
        (2, vec![0xF8A4, 0x32EB]),                  // int32 -123456789
        (4, vec![0xB2D0, 0x5E00]),                  // uint32 3000000000
        (6, vec![0xC148, 0x0000]),                  // float32 -12.5
        (8, vec![0x4093, 0x4A45, 0x6D5C, 0xFAAD]),  // float64 1234.5678
        (12, vec![0xFFE0, 0x068C, 0x3505, 0x8000]), // int64 -9000000000000000
        (16, vec![0x0DE0, 0xB6B3, 0xA764, 0x0000]), // uint64 1000000000000000000
        (20, vec![0x5678, 0x1234]),                 // int32 0x12345678, word swapped
        (22, vec![0x3412, 0x7856]),                 // byte swapped
        (24, vec![0x7856, 0x3412]),                 // both
        (26, vec![625]),                            // ×0.1 −40 = 22.5
        (27, vec![217]),                            // ×0.1 = 21.7 (not 21.700000000000003)
        (28, vec![3]),                              // ×0.1 = 0.3
        (29, vec![(-25i16) as u16]),                // int16 ×0.01 = -0.25
        (30, vec![0x5255, 0x5354, 0x0000]),         // "RUST"
        (33, vec![0x414C, 0x4400, 0x0B2A]),         // "ALD", NUL, then bytes that are not text
        (40, vec![0b1010]),                         // bits 1 and 3
        (50, vec![0]),                              // write target
        (51, vec![0, 0]),                           // write target, float32
        (60, vec![0, 0, 0, 0]),                     // write target, int64 both swapped
        (64, vec![0]),                              // write target, scaled set-point
    ]
}

pub fn input() -> Vec<(u16, Vec<u16>)> {
    vec![(0, vec![777]), (1, vec![0x4050, 0x0000])] // 777, float32 3.25
}

pub fn coils() -> Vec<(u16, Vec<u16>)> {
    vec![(5, vec![1]), (6, vec![0])]
}

pub fn discrete() -> Vec<(u16, Vec<u16>)> {
    vec![(7, vec![1])]
}

/// The map as JSON for the Python server.
pub fn map_json() -> Json {
    let t = |v: Vec<(u16, Vec<u16>)>| {
        v.into_iter()
            .map(|(a, w)| json!([a, w]))
            .collect::<Vec<_>>()
    };
    json!({"holding": t(holding()), "input": t(input()), "coils": t(coils()), "discrete": t(discrete())})
}

pub fn address(v: Json, ty: Option<PropertyType>) -> ModbusAddress {
    let mut a: ModbusAddress = serde_json::from_value(v).unwrap();
    driver().prepare_address(&mut a, ty).unwrap();
    a
}

/// Visitor, model type, expected value.
pub fn reads() -> Vec<(Json, Option<PropertyType>, Value)> {
    use PropertyType::*;
    vec![
        (
            json!({"register": "HoldingRegister", "offset": 0, "limit": 1, "dataType": "int16"}),
            Some(Int),
            Value::Int(-1234),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 1, "limit": 1}),
            Some(Int),
            Value::Int(54321),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 2, "limit": 2, "dataType": "int32"}),
            Some(Int),
            Value::Int(-123_456_789),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 4, "limit": 2}),
            Some(Int),
            Value::Int(3_000_000_000),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 6, "limit": 2}),
            Some(Float),
            Value::Float(-12.5),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 8, "limit": 4}),
            Some(Double),
            Value::Float(1234.5678),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 12, "dataType": "int64"}),
            Some(Int),
            Value::Int(-9_000_000_000_000_000),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 16, "dataType": "uint64"}),
            Some(Int),
            Value::Int(1_000_000_000_000_000_000),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 20, "dataType": "int32", "isRegisterSwap": true}),
            Some(Int),
            Value::Int(0x1234_5678),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 22, "dataType": "int32", "isSwap": true}),
            Some(Int),
            Value::Int(0x1234_5678),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 24, "dataType": "int32", "isSwap": true, "isRegisterSwap": true}),
            Some(Int),
            Value::Int(0x1234_5678),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 26, "dataType": "int16", "scale": 0.1, "valueOffset": -40}),
            Some(Float),
            Value::Float(22.5),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 27, "limit": 1, "scale": 0.1}),
            Some(Float),
            Value::Float(21.7),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 28, "limit": 1, "scale": 0.1}),
            Some(Float),
            Value::Float(0.3),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 29, "dataType": "int16", "scale": 0.01}),
            Some(Float),
            Value::Float(-0.25),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 30, "limit": 3}),
            Some(String),
            Value::String("RUST".into()),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 33, "limit": 3}),
            Some(String),
            Value::String("ALD".into()),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 33, "limit": 3, "stringEncoding": "utf8"}),
            Some(String),
            Value::String("ALD".into()),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 40, "dataType": "bit", "bit": 3}),
            Some(Boolean),
            Value::Bool(true),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 40, "dataType": "bit", "bit": 2}),
            Some(Boolean),
            Value::Bool(false),
        ),
        (
            json!({"register": "InputRegister", "offset": 0, "limit": 1}),
            Some(Int),
            Value::Int(777),
        ),
        (
            json!({"register": "InputRegister", "offset": 1, "limit": 2}),
            Some(Float),
            Value::Float(3.25),
        ),
        (
            json!({"register": "CoilRegister", "offset": 5, "limit": 1}),
            Some(Boolean),
            Value::Bool(true),
        ),
        (
            json!({"register": "CoilRegister", "offset": 6}),
            Some(Boolean),
            Value::Bool(false),
        ),
        (
            json!({"register": "DiscreteInputRegister", "offset": 7, "limit": 1}),
            Some(Boolean),
            Value::Bool(true),
        ),
    ]
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => (x - y).abs() < 1e-6 * y.abs().max(1.0),
        _ => a == b,
    }
}

/// Reads every visitor one by one and as one batch; both must match, and every
/// value must print (as the twin shows it) exactly as the expected one does:
/// no binary noise from scaling, no bytes after a string's NUL.
pub async fn check_reads(d: &ModbusDevice) {
    let cases = reads();
    let addrs: Vec<ModbusAddress> = cases
        .iter()
        .map(|(v, t, _)| address(v.clone(), *t))
        .collect();
    for (a, (v, _, want)) in addrs.iter().zip(&cases) {
        let got = d.read(a).await.unwrap_or_else(|e| panic!("{v}: {e}"));
        assert!(close(&got, want), "{v}: got {got:?}, want {want:?}");
        assert_eq!(got.to_string(), want.to_string(), "{v}: twin text");
    }
    let refs: Vec<&ModbusAddress> = addrs.iter().collect();
    let before = d.requests();
    let batch = d.read_batch(&refs).await;
    // 4 tables; holding 0..41 fits one request with the default gap, input one, coils one, discrete one.
    assert_eq!(d.requests() - before, 4, "planned requests for one tick");
    for (got, (v, _, want)) in batch.into_iter().zip(&cases) {
        let got = got.unwrap_or_else(|e| panic!("{v}: {e}"));
        assert!(close(&got, want), "batch {v}: got {got:?}, want {want:?}");
        assert_eq!(got.to_string(), want.to_string(), "batch {v}: twin text");
    }
}

/// Writes and reads back every writable kind.
pub async fn check_writes(d: &ModbusDevice) {
    use PropertyType::*;
    let cases = vec![
        (
            json!({"register": "HoldingRegister", "offset": 50, "dataType": "int16"}),
            Some(Int),
            Value::Int(-321),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 50, "limit": 1}),
            Some(Int),
            Value::Int(65000),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 51, "limit": 2}),
            Some(Float),
            Value::Float(-0.75),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 60, "dataType": "int64", "isSwap": true, "isRegisterSwap": true}),
            Some(Int),
            Value::Int(-77_000_000_000),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 50, "dataType": "int16", "scale": 0.5}),
            Some(Float),
            Value::Float(-10.5),
        ),
        (
            json!({"register": "HoldingRegister", "offset": 40, "dataType": "bit", "bit": 0}),
            Some(Boolean),
            Value::Bool(true),
        ),
        (
            json!({"register": "CoilRegister", "offset": 6}),
            Some(Boolean),
            Value::Bool(true),
        ),
    ];
    for (v, t, val) in cases {
        let a = address(v.clone(), t);
        d.write(&a, &val)
            .await
            .unwrap_or_else(|e| panic!("write {v}: {e}"));
        let got = d.read(&a).await.unwrap();
        assert!(close(&got, &val), "{v}: read back {got:?}, wrote {val:?}");
    }
    // The bit write kept the other bits.
    let b3 = address(
        json!({"register": "HoldingRegister", "offset": 40, "dataType": "bit", "bit": 3}),
        Some(Boolean),
    );
    assert_eq!(d.read(&b3).await.unwrap(), Value::Bool(true));
    // A scaled set-point: the desired text 21.7 at scale 0.1 writes register 217
    // exactly and reads back as the same text.
    let setpoint = address(
        json!({"register": "HoldingRegister", "offset": 64, "limit": 1, "scale": 0.1}),
        Some(Float),
    );
    for text in ["21.7", "0.3", "6553.5"] {
        let desired = mapper_sdk::parse_value(Float, text).unwrap();
        d.write(&setpoint, &desired)
            .await
            .unwrap_or_else(|e| panic!("write {text}: {e}"));
        assert_eq!(d.read(&setpoint).await.unwrap().to_string(), text);
    }
    let raw = address(
        json!({"register": "HoldingRegister", "offset": 64, "limit": 1}),
        Some(Int),
    );
    assert_eq!(d.read(&raw).await.unwrap(), Value::Int(65535));
    d.write(&setpoint, &mapper_sdk::parse_value(Float, "21.7").unwrap())
        .await
        .unwrap();
    assert_eq!(d.read(&raw).await.unwrap(), Value::Int(217));
    // Read-only tables and values that do not fit are refused before any I/O.
    let ro = address(json!({"register": "InputRegister", "offset": 0}), Some(Int));
    let e = d.write(&ro, &Value::Int(1)).await.unwrap_err();
    assert!(e.to_string().contains("InputRegister is read-only"), "{e}");
    let small = address(
        json!({"register": "HoldingRegister", "offset": 50, "limit": 1}),
        Some(Int),
    );
    let e = d.write(&small, &Value::Int(70_000)).await.unwrap_err();
    assert!(e.to_string().contains("does not fit uint16"), "{e}");
}

pub fn config(v: Json) -> ModbusConfig {
    serde_json::from_value(v).unwrap()
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn python() -> PathBuf {
    let p = std::env::var_os("DMI_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/test-env/venv/bin/python"));
    assert!(
        p.exists(),
        "{} missing: run hack/test.sh (it creates the venv with pymodbus)",
        p.display()
    );
    p
}

/// A free TCP port on loopback (bound and released; the peer binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
