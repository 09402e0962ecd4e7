//! The whole mapper in this process against the SDK's fake EdgeCore and the
//! fake device: it registers, a device added afterwards is reported (twins,
//! state `online`), desired values reach the device{% if push %}, pushed values
//! become twins without polling{% endif %}.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::FakeDevice;
use mapper_sdk::testing::{FakeEdgeCore, TestDevice};
use serde_json::json;
use {{crate_name}}::{PROTOCOL, {{driver_type}} };

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mapper_reports_twins_and_writes_desired_values() {
    let device = FakeDevice::start(&[
        ("temperature", "21.5"),
        ("setpoint", "20"),
{%- if push %}
        ("pressure", "1.8"),
{%- endif %}
    ])
    .await
    .unwrap();
    let edge = FakeEdgeCore::start().await.unwrap();
    let _mapper = edge.spawn_mapper(PROTOCOL, Arc::new({{driver_type}}::default()));
    edge.wait_for("the mapper to register", WAIT, |e| {
        (e.registrations() > 0).then_some(())
    })
    .await
    .unwrap();

    // A device added while the mapper runs (RegisterDevice).
    edge.add_device(
        TestDevice::new(
            "boiler-1",
            PROTOCOL,
            json!({"host": "127.0.0.1", "port": device.port()}),
        )
        .read_only("temperature", "FLOAT", json!({"register": "temperature"}), 200)
        .read_write(
            "setpoint",
            "INT",
            json!({"register": "setpoint"}),
            200,
            Some("22"),
        ){% if push %}
        // Pushed by the device: a collect cycle this long would never poll it in time.
        .read_only(
            "pressure",
            "FLOAT",
            json!({"register": "pressure", "subscribe": true}),
            600_000,
        ){% endif %},
    )
    .await
    .unwrap();

    edge.wait_for("the temperature twin", WAIT, |e| {
        (e.twin("boiler-1", "temperature")?.value == "21.5").then_some(())
    })
    .await
    .unwrap();
    // The desired value in the Device is written to the device and confirmed.
    edge.wait_for("the desired set-point applied", WAIT, |e| {
        let t = e.twin("boiler-1", "setpoint")?;
        (t.value == "22" && t.desired_status.as_deref() == Some("applied")).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(device.get("setpoint").as_deref(), Some("22"));
    edge.wait_for("online", WAIT, |e| {
        (e.state("boiler-1")? == "online").then_some(())
    })
    .await
    .unwrap();

    // A new desired value (UpdateDevice) reaches the device.
    edge.set_desired("boiler-1", "setpoint", "25").await.unwrap();
    edge.wait_for("the new set-point", WAIT, |e| {
        (e.twin("boiler-1", "setpoint")?.value == "25").then_some(())
    })
    .await
    .unwrap();
    assert_eq!(device.get("setpoint").as_deref(), Some("25"));

    // The device's own changes show in the twin.
    device.set("temperature", "22.5");
    edge.wait_for("the new temperature", WAIT, |e| {
        (e.twin("boiler-1", "temperature")?.value == "22.5").then_some(())
    })
    .await
    .unwrap();
{%- if push %}

    // Pushed values become twins without polling.
    edge.wait_for("the pushed pressure", WAIT, |e| {
        (e.twin("boiler-1", "pressure")?.value == "1.8").then_some(())
    })
    .await
    .unwrap();
    device.set("pressure", "2.1");
    edge.wait_for("a pushed change", WAIT, |e| {
        (e.twin("boiler-1", "pressure")?.value == "2.1").then_some(())
    })
    .await
    .unwrap();
{%- endif %}
    assert_eq!(edge.registrations(), 1);
}
