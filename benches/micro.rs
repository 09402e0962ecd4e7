//! Criterion micro-benchmarks: register decoding for every data type, configData
//! Any ⇄ JSON, and the read planner on 10 000 properties.

#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use dmi_proto::config_data::{NumberEncoding, from_any_map, to_any_map};
use mapper_modbus::codec::decode_registers;
use mapper_modbus::config::{PlanLimits, Table};
use mapper_modbus::{ModbusAddress, ModbusDriver};
use mapper_sdk::{Driver, PropertyType};
use serde_json::json;

fn decoding(c: &mut Criterion) {
    let words = [
        0x4093u16, 0x4A45, 0x6D5C, 0xFAAD, 0x5255, 0x5354, 0x0000, 0x0000,
    ];
    for dt in [
        "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool",
        "bit", "string",
    ] {
        let mut a: ModbusAddress = serde_json::from_value(json!({
            "register": "HoldingRegister", "offset": 0, "dataType": dt, "limit": if dt == "string" { 3 } else { 0 },
            "isRegisterSwap": true, "scale": 1
        }))
        .unwrap();
        if dt != "string" {
            a.limit = None;
        }
        ModbusDriver::default()
            .prepare_address(&mut a, Some(PropertyType::Int))
            .unwrap();
        let n = usize::from(a.register_count());
        c.bench_function(&format!("decode {dt}"), |b| {
            b.iter(|| decode_registers(black_box(&a), black_box(&words[..n])))
        });
    }
}

fn config_data(c: &mut Criterion) {
    let obj = json!({"ip": "192.168.1.20", "port": 502, "slaveID": 1, "timeout": 500, "tls": false, "scale": 0.1,
                     "register": "HoldingRegister", "offset": 40001, "isSwap": true, "name": "boiler-1"});
    let obj = obj.as_object().unwrap().clone();
    let any = to_any_map(&obj, NumberEncoding::Stock).unwrap();
    c.bench_function("configData JSON → Any (10 keys)", |b| {
        b.iter(|| to_any_map(black_box(&obj), NumberEncoding::Stock))
    });
    c.bench_function("configData Any → JSON (10 keys)", |b| {
        b.iter(|| from_any_map(black_box(&any)))
    });
}

fn planner(c: &mut Criterion) {
    let limits = PlanLimits {
        max_gap: 16,
        max_registers: 125,
        max_bits: 2000,
        enabled: true,
    };
    let contiguous: Vec<(Table, u16, u16)> =
        (0..10_000u16).map(|i| (Table::Holding, i, 1)).collect();
    let scattered: Vec<(Table, u16, u16)> = (0..10_000u32)
        .map(|i| {
            (
                if i % 2 == 0 {
                    Table::Holding
                } else {
                    Table::Input
                },
                ((i * 7919) % 60_000) as u16,
                2,
            )
        })
        .collect();
    c.bench_function("plan 10k contiguous properties", |b| {
        b.iter(|| mapper_modbus::plan::plan(black_box(&contiguous), limits))
    });
    c.bench_function("plan 10k scattered properties", |b| {
        b.iter(|| mapper_modbus::plan::plan(black_box(&scattered), limits))
    });
}

criterion_group!(benches, decoding, config_data, planner);
criterion_main!(benches);
