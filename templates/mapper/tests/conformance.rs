//! The driver contract every mapper keeps (`mapper_sdk::testing::check_driver`):
//! configuration errors are `Config` errors and never panics, one result per
//! address, writes complete, a read dropped half-way leaves the device usable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::FakeDevice;
use mapper_sdk::testing::{Conformance, check_driver};
use mapper_sdk::{PropertyType, Value};
use serde_json::json;
use {{crate_name}}::{{driver_type}};

#[tokio::test]
async fn the_driver_keeps_the_driver_contract() {
    let device = FakeDevice::start(&[("temperature", "21.5"), ("setpoint", "20")])
        .await
        .unwrap();
    let broken = check_driver(
        Arc::new({{driver_type}}::default()),
        Conformance {
            config: json!({"host": "127.0.0.1", "port": device.port()}),
            readable: vec![
                (json!({"register": "temperature"}), Some(PropertyType::Float)),
                (json!({"register": "setpoint"}), Some(PropertyType::Int)),
            ],
            writable: Some((
                json!({"register": "setpoint"}),
                Some(PropertyType::Int),
                Value::Int(7),
            )),
        },
    )
    .await;
    assert!(broken.is_empty(), "{broken:#?}");
    assert_eq!(device.get("setpoint").as_deref(), Some("7"));
}
