//! The driver against the fake device of `tests/common`: typed reads, writes,
//! refusals that keep the connection, link failures the SDK reconnects from{% if push %},
//! pushed values{% endif %}.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::FakeDevice;
use mapper_sdk::{DeviceClient, Driver, DriverError, PropertyType, Value};
use serde_json::json;
use {{crate_name}}::{ {{type_prefix}}Address, {{type_prefix}}Config, {{type_prefix}}Device, {{driver_type}} };

async fn connect(device: &FakeDevice) -> {{type_prefix}}Device {
    {{driver_type}}::default()
        .connect(&{{type_prefix}}Config {
            host: "127.0.0.1".into(),
            port: device.port(),
        })
        .await
        .unwrap()
}

/// A visitor's configData as the SDK would decode and prepare it.
fn address(visitor: serde_json::Value, model_type: PropertyType) -> {{type_prefix}}Address {
    let mut a: {{type_prefix}}Address = serde_json::from_value(visitor).unwrap();
    {{driver_type}}::default()
        .prepare_address(&mut a, Some(model_type))
        .unwrap();
    a
}

#[tokio::test]
async fn reads_values_of_the_model_type_and_writes_them() {
    let device = FakeDevice::start(&[("temperature", "21.5"), ("setpoint", "20"), ("pump", "on")])
        .await
        .unwrap();
    let client = connect(&device).await;
    let temperature = address(json!({"register": "temperature"}), PropertyType::Float);
    let setpoint = address(json!({"register": "setpoint"}), PropertyType::Int);
    let pump = address(json!({"register": "pump"}), PropertyType::Boolean);
    assert_eq!(client.read(&temperature).await.unwrap(), Value::Float(21.5));
    assert_eq!(client.read(&setpoint).await.unwrap(), Value::Int(20));
    assert_eq!(client.read(&pump).await.unwrap(), Value::Bool(true));

    client.write(&setpoint, &Value::Int(25)).await.unwrap();
    assert_eq!(device.get("setpoint").as_deref(), Some("25"));
    assert_eq!(client.read(&setpoint).await.unwrap(), Value::Int(25));
    assert_eq!(device.accepted(), 1, "one connection for every request");
    assert_eq!(client.io_requests(), Some(5));
}

#[tokio::test]
async fn refusals_are_the_propertys_errors_and_keep_the_connection() {
    let device = FakeDevice::start(&[("serial", "X-1"), ("mode", "auto")])
        .await
        .unwrap();
    device.set_read_only("serial");
    let client = connect(&device).await;
    let missing = address(json!({"register": "missing"}), PropertyType::Float);
    let e = client.read(&missing).await.unwrap_err();
    assert!(matches!(e, DriverError::Device(_)), "{e}");
    assert!(!e.is_link_failure());
    let serial = address(json!({"register": "serial"}), PropertyType::String);
    let e = client
        .write(&serial, &Value::String("X-2".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, DriverError::Device(_)), "{e}");
    // An answer that is not a value of the model's type.
    let mode = address(json!({"register": "mode"}), PropertyType::Int);
    let e = client.read(&mode).await.unwrap_err();
    assert!(matches!(e, DriverError::Value(_)), "{e}");
    assert_eq!(client.read(&serial).await.unwrap(), Value::String("X-1".into()));
    assert_eq!(device.accepted(), 1);
}

#[tokio::test]
async fn bad_visitors_and_configs_are_config_errors() {
    let driver = {{driver_type}}::default();
    for visitor in [json!({"register": "two words"}), json!({"register": ""})] {
        let mut a: {{type_prefix}}Address = serde_json::from_value(visitor).unwrap();
        let e = driver.prepare_address(&mut a, None).unwrap_err();
        assert!(matches!(e, DriverError::Config(_)), "{e}");
    }
    // A misspelt key is refused by serde (the SDK turns it into a Config error).
    assert!(serde_json::from_value::<{{type_prefix}}Address>(json!({"registr": "t"})).is_err());
    let e = driver
        .connect(&{{type_prefix}}Config {
            host: " ".into(),
            port: 1,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, DriverError::Config(_)), "{e}");
}

#[tokio::test]
async fn a_lost_connection_is_a_link_failure_and_the_next_request_reconnects() {
    let device = FakeDevice::start(&[("temperature", "21.5")]).await.unwrap();
    let client = connect(&device).await;
    let temperature = address(json!({"register": "temperature"}), PropertyType::Float);
    client.read(&temperature).await.unwrap();
    device.drop_connections();
    let e = client.read(&temperature).await.unwrap_err();
    assert!(e.is_link_failure(), "{e}");
    assert_eq!(client.read(&temperature).await.unwrap(), Value::Float(21.5));
    assert_eq!(device.accepted(), 2);
}

#[tokio::test]
async fn an_unreachable_device_is_a_link_failure() {
    // A port nothing listens on: bound, then closed at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = {{driver_type}}::default()
        .connect(&{{type_prefix}}Config {
            host: "127.0.0.1".into(),
            port,
        })
        .await
        .unwrap_err();
    assert!(e.is_link_failure(), "{e}");
}
{%- if push %}

#[tokio::test]
async fn subscribed_registers_are_pushed_and_the_others_polled() {
    use futures::StreamExt;

    let device = FakeDevice::start(&[("pressure", "1.8"), ("setpoint", "20")])
        .await
        .unwrap();
    let client = connect(&device).await;
    let pressure = address(
        json!({"register": "pressure", "subscribe": true}),
        PropertyType::Float,
    );
    let setpoint = address(json!({"register": "setpoint"}), PropertyType::Int);
    let mut sub = client
        .subscribe(&[&setpoint, &pressure])
        .await
        .unwrap()
        .expect("a subscription");
    assert_eq!(sub.covered, vec![false, true]);
    // The current value at once, then every change.
    let first = sub.stream.next().await.unwrap();
    assert_eq!((first.index, first.value.unwrap()), (1, Value::Float(1.8)));
    device.set("pressure", "1.9");
    let next = sub.stream.next().await.unwrap();
    assert_eq!((next.index, next.value.unwrap()), (1, Value::Float(1.9)));
    // The polled property still answers, on the other connection.
    assert_eq!(client.read(&setpoint).await.unwrap(), Value::Int(20));
    // The device goes away: the stream ends (the SDK then reconnects).
    device.drop_connections();
    assert!(sub.stream.next().await.is_none());
    // Nothing to subscribe to: polling only.
    assert!(client.subscribe(&[&setpoint]).await.unwrap().is_none());
}

#[tokio::test]
async fn a_refused_subscription_is_a_device_error() {
    let device = FakeDevice::start(&[]).await.unwrap();
    let client = connect(&device).await;
    let missing = address(
        json!({"register": "missing", "subscribe": true}),
        PropertyType::Float,
    );
    let e = client.subscribe(&[&missing]).await.unwrap_err();
    assert!(matches!(e, DriverError::Device(_)), "{e}");
}
{%- endif %}
