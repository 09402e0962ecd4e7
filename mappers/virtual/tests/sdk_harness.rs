//! mapper-virtual through the SDK's test harness: the driver contract, and the
//! whole mapper in process against the fake EdgeCore (twins, desired values,
//! state).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use mapper_sdk::testing::{Conformance, FakeEdgeCore, TestDevice, check_driver};
use mapper_sdk::{PropertyType, Value};
use mapper_virtual::VirtualDriver;
use serde_json::json;

#[tokio::test]
async fn the_virtual_driver_keeps_the_driver_contract() {
    let broken = check_driver(
        Arc::new(VirtualDriver),
        Conformance {
            config: json!({}),
            readable: vec![
                (json!({"value": 7}), Some(PropertyType::Int)),
                (
                    json!({"pattern": "sine", "value": 20}),
                    Some(PropertyType::Float),
                ),
            ],
            writable: Some((
                json!({"pattern": "setpoint", "value": 1}),
                Some(PropertyType::Int),
                Value::Int(5),
            )),
        },
    )
    .await;
    assert!(broken.is_empty(), "{broken:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_mapper_against_the_fake_edgecore() {
    let edge = FakeEdgeCore::start().await.unwrap();
    edge.add_device(
        TestDevice::new("thermo", "virtual", json!({}))
            .read_only("temp", "FLOAT", json!({"value": 21.5}), 200)
            .read_write(
                "set",
                "INT",
                json!({"pattern": "setpoint", "value": 18}),
                200,
                Some("22"),
            ),
    )
    .await
    .unwrap();
    let _mapper = edge.spawn_mapper("virtual", Arc::new(VirtualDriver));
    let wait = Duration::from_secs(10);
    edge.wait_for("temperature twin", wait, |e| {
        (e.twin("thermo", "temp")?.value == "21.5").then_some(())
    })
    .await
    .unwrap();
    edge.wait_for("set-point applied", wait, |e| {
        let t = e.twin("thermo", "set")?;
        (t.value == "22" && t.desired_status.as_deref() == Some("applied")).then_some(())
    })
    .await
    .unwrap();
    edge.wait_for("online", wait, |e| {
        (e.state("thermo")? == "online").then_some(())
    })
    .await
    .unwrap();
    // A new desired value through UpdateDevice.
    edge.set_desired("thermo", "set", "25").await.unwrap();
    edge.wait_for("new set-point", wait, |e| {
        (e.twin("thermo", "set")?.value == "25").then_some(())
    })
    .await
    .unwrap();
    assert_eq!(edge.registrations(), 1);
}
