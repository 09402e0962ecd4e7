//! The driver against `ble-mock` (../shared/tools/ble-mock): a private system
//! D-Bus running python-dbusmock's BlueZ template with one peripheral
//! 11:22:33:44:55:66 "SensorTag" and one read/write/notify characteristic
//! 2a6e holding `0x66 0x08`. This exercises the BlueZ/D-Bus path btleplug
//! takes (find, connect, GATT read/write, notifications, a lost bus), not
//! radio behaviour.
//!
//! libdbus reads `DBUS_SYSTEM_BUS_ADDRESS` from the environment, which a
//! test cannot set in its own process (`set_var` is unsafe, and unsafe code
//! is forbidden here), so each test starts the mock and runs an ignored
//! inner test in a child process of this binary with the mock's address.
//! Without `dbus-daemon`, python3-dbusmock or the mock script the tests print
//! `SKIP` and pass.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mapper_ble::{BleAddress, BleConfig, BleDriver, config::config_from_json};
use mapper_sdk::testing::{Conformance, check_driver};
use mapper_sdk::{DeviceClient, Driver, DriverError, PropertyType, Value};
use serde_json::json;

const CHAR: &str = "00002a6e-0000-1000-8000-00805f9b34fb";
const CHAR_PATH: &str = "/org/bluez/hci0/dev_11_22_33_44_55_66/service0010/char0011";

fn mock_script() -> PathBuf {
    // mappers/ble → repo root → ../shared/tools/ble-mock
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools/ble-mock/ble-mock.sh")
}

/// Why the mock cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    if !mock_script().exists() {
        return Some(format!("{} not found", mock_script().display()));
    }
    let ok = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok("dbus-daemon", &["--version"]) {
        return Some("dbus-daemon not installed (apt: dbus)".into());
    }
    if !ok("/usr/bin/python3", &["-c", "import dbusmock"]) {
        return Some("python3-dbusmock not installed".into());
    }
    if !ok("busctl", &["--version"]) {
        return Some("busctl not installed".into());
    }
    None
}

/// A running ble-mock in a temporary directory; stopped on drop.
struct Mock {
    dir: tempfile::TempDir,
    address: String,
}

impl Mock {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let address = mock(dir.path().to_str().unwrap(), "start", &[]);
        let address = address
            .lines()
            .find_map(|l| l.strip_prefix("DBUS_SYSTEM_BUS_ADDRESS="))
            .expect("ble-mock.sh prints DBUS_SYSTEM_BUS_ADDRESS")
            .to_owned();
        Self { dir, address }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        mock(self.dir.path().to_str().unwrap(), "stop", &[]);
    }
}

/// Runs `ble-mock.sh CMD DIR ARGS`; its stdout.
fn mock(dir: &str, cmd: &str, args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(mock_script())
        .args([cmd, dir])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ble-mock.sh {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the ignored test `name` of this binary in a child process with `env`.
fn run_inner(name: &str, env: &[(&str, &str)]) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "{name} failed:\n{text}");
    assert!(text.contains("1 passed"), "{name} did not run:\n{text}");
}

/// With the mock: everything in `inner_against_mock`.
#[test]
fn driver_against_ble_mock() {
    if let Some(why) = missing_tools() {
        println!("SKIP: {why}");
        return;
    }
    let m = Mock::start();
    run_inner(
        "inner_against_mock",
        &[
            ("DBUS_SYSTEM_BUS_ADDRESS", m.address.as_str()),
            ("BLE_MOCK_DIR", m.dir.path().to_str().unwrap()),
            ("BLE_MOCK_SCRIPT", mock_script().to_str().unwrap()),
        ],
    );
}

/// With no bus at all: configuration errors and the conformance rules that
/// need no peripheral.
#[test]
fn driver_without_a_bus() {
    run_inner(
        "inner_without_bus",
        &[(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/ble-mapper-test/bus",
        )],
    );
}

fn cfg(v: serde_json::Value) -> BleConfig {
    config_from_json(v).unwrap()
}

fn addr(v: serde_json::Value, ty: PropertyType) -> BleAddress {
    BleAddress::from_json(v, Some(ty)).unwrap()
}

fn temperature() -> BleAddress {
    addr(
        json!({"characteristicUUID": CHAR, "dataType": "uint16", "scale": 0.01}),
        PropertyType::Float,
    )
}

fn raw_nested() -> BleAddress {
    addr(
        json!({"characteristicUUID": "2a6e",
               "dataConverter": "{\"startIndex\": 1, \"endIndex\": 0}"}),
        PropertyType::Int,
    )
}

fn busctl_value(bus: &str) -> String {
    let out = Command::new("busctl")
        .arg(format!("--address={bus}"))
        .args([
            "get-property",
            "org.bluez",
            CHAR_PATH,
            "org.bluez.GattCharacteristic1",
            "Value",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
#[ignore = "run by driver_without_a_bus in a child process"]
async fn inner_without_bus() {
    let driver = BleDriver::default();
    let e = driver
        .connect(&cfg(json!({"macAddress": "11:22:33:44:55:66"})))
        .await
        .unwrap_err();
    assert!(e.is_link_failure(), "no bus is a link failure: {e:?}");
    assert!(e.to_string().contains("cannot reach BlueZ"), "{e}");
    // The SDK contract: hostile configuration gives Config errors, never a
    // panic. The rest needs a peripheral, so connecting is all that fails.
    let broken = check_driver(
        Arc::new(BleDriver::default()),
        Conformance {
            config: json!({"macAddress": "11:22:33:44:55:66"}),
            readable: vec![],
            writable: None,
        },
    )
    .await;
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(broken[0].starts_with("connect failed"), "{broken:?}");
}

#[tokio::test]
#[ignore = "run by driver_against_ble_mock in a child process"]
async fn inner_against_mock() {
    let (Ok(dir), Ok(script), Ok(bus)) = (
        std::env::var("BLE_MOCK_DIR"),
        std::env::var("BLE_MOCK_SCRIPT"),
        std::env::var("DBUS_SYSTEM_BUS_ADDRESS"),
    ) else {
        panic!("run through driver_against_ble_mock");
    };
    let driver = BleDriver::default();

    // Found by address, by advertised name, by advertised service.
    for c in [
        json!({"macAddress": "11:22:33:44:55:66"}),
        json!({"name": "SensorTag", "adapter": "hci0"}),
        json!({"serviceUuid": "181a"}),
    ] {
        let dev = driver.connect(&cfg(c.clone())).await.unwrap();
        assert_eq!(
            dev.read(&temperature()).await.unwrap(),
            Value::Float(21.5),
            "{c}"
        );
        dev.disconnect().await;
    }
    // Not there: a link error after the scan (retried by the SDK), naming it.
    let e = driver
        .connect(&cfg(json!({"name": "Nobody", "scanTimeoutMs": 300})))
        .await
        .unwrap_err();
    assert!(e.is_link_failure(), "{e:?}");
    assert!(
        e.to_string().contains("no peripheral with name `Nobody`"),
        "{e}"
    );
    let e = driver
        .connect(&cfg(
            json!({"macAddress": "11:22:33:44:55:66", "adapter": "hci7"}),
        ))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("no Bluetooth adapter hci7 (BlueZ has: hci0)"),
        "{e}"
    );

    let dev = driver
        .connect(&cfg(
            json!({"macAddress": "11:22:33:44:55:66", "linkCheckMs": 500}),
        ))
        .await
        .unwrap();
    // Two properties on one characteristic: one GATT read per tick.
    let (t, raw) = (temperature(), raw_nested());
    let before = dev.requests();
    let got = dev.read_batch(&[&t, &raw]).await;
    assert_eq!(got[0].as_ref().unwrap(), &Value::Float(21.5));
    assert_eq!(got[1].as_ref().unwrap(), &Value::Int(2150));
    assert_eq!(dev.requests() - before, 1);
    // A characteristic the peripheral lacks is that property's fault.
    let missing = addr(json!({"characteristicUUID": "2a19"}), PropertyType::Int);
    assert!(matches!(
        dev.read(&missing).await.unwrap_err(),
        DriverError::Device(_)
    ));

    // Push mode: subscribed, a first value at once, then notifications.
    let sub = dev.subscribe(&[&t, &missing, &raw]).await.unwrap().unwrap();
    assert_eq!(sub.covered, [true, false, true]);
    let mut stream = sub.stream;
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a pushed value within 5 s")
            .expect("the stream goes on")
    };
    let first = [next().await, next().await];
    assert!(
        first
            .iter()
            .any(|p| p.index == 0 && p.value.as_ref().ok() == Some(&Value::Float(21.5))),
        "{first:?}"
    );
    mock(&dir, "notify", &["42", "9"]);
    let pushed = [next().await, next().await];
    assert!(
        pushed
            .iter()
            .any(|p| p.index == 0 && p.value.as_ref().ok() == Some(&Value::Float(23.46))),
        "{pushed:?}"
    );
    assert!(
        pushed
            .iter()
            .any(|p| p.index == 2 && p.value.as_ref().ok() == Some(&Value::Int(2346))),
        "{pushed:?}"
    );

    // A write reaches the characteristic (read back over D-Bus, outside btleplug).
    dev.write(&t, &Value::Float(22.5)).await.unwrap();
    assert_eq!(busctl_value(&bus), "ay 2 202 8");
    // ... and comes back through the subscription.
    let mut saw = false;
    for _ in 0..4 {
        let p = next().await;
        if p.index == 0 && p.value.as_ref().ok() == Some(&Value::Float(22.5)) {
            saw = true;
            break;
        }
    }
    assert!(saw, "the written value was pushed");
    // A value that does not fit is refused before anything is sent.
    assert!(matches!(
        dev.write(&t, &Value::Float(-1.0)).await.unwrap_err(),
        DriverError::Value(_)
    ));

    // The bus goes away: the stream reports a link failure.
    mock(&dir, "stop", &[]);
    let lost = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(p) if p.value.as_ref().is_err_and(DriverError::is_link_failure) => break p,
                Some(_) => continue,
                None => panic!("stream ended without a link error"),
            }
        }
    })
    .await
    .expect("a link failure within 10 s of the bus going away");
    println!("link lost: {:?}", lost.value);
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), dev.disconnect())
        .await
        .expect("disconnect returns with the bus gone");
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        driver.connect(&cfg(json!({"macAddress": "11:22:33:44:55:66"}))),
    )
    .await
    .expect("connect returns")
    .unwrap_err();
    assert!(e.is_link_failure(), "{e:?}");

    // Back: the driver opens a new D-Bus connection and finds it again.
    let out = Command::new("bash")
        .arg(&script)
        .args(["start", &dir])
        .output()
        .unwrap();
    assert!(out.status.success());
    // No periodic link check on this connection: the disconnect below must be
    // seen through BlueZ's event.
    let dev = driver
        .connect(&cfg(
            json!({"macAddress": "11:22:33:44:55:66", "linkCheckMs": 0}),
        ))
        .await
        .unwrap();
    assert_eq!(dev.read(&t).await.unwrap(), Value::Float(21.5));
    // The peripheral drops the connection (BlueZ's Connected turns false):
    // the subscription reports a link failure at once, not at the next check.
    let mut stream = dev.subscribe(&[&t]).await.unwrap().unwrap().stream;
    let first = stream.next().await.unwrap();
    assert_eq!(first.value.unwrap(), Value::Float(21.5));
    let out = Command::new("busctl")
        .arg(format!("--address={bus}"))
        .args([
            "call",
            "org.bluez",
            "/org/bluez/hci0/dev_11_22_33_44_55_66",
            "org.bluez.Device1",
            "Disconnect",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let p = tokio::time::timeout(Duration::from_secs(3), stream.next())
        .await
        .expect("a link failure within 3 s")
        .unwrap();
    let e = p.value.unwrap_err();
    assert!(e.is_link_failure(), "{e:?}");
    assert!(e.to_string().contains("the peripheral disconnected"), "{e}");
    drop(stream);
    dev.disconnect().await;

    // The SDK's driver contract, in full.
    let broken = check_driver(
        Arc::new(BleDriver::default()),
        Conformance {
            config: json!({"macAddress": "11:22:33:44:55:66"}),
            readable: vec![
                (
                    json!({"characteristicUUID": CHAR, "dataType": "uint16", "scale": 0.01}),
                    Some(PropertyType::Float),
                ),
                (
                    json!({"characteristicUUID": "2a6e"}),
                    Some(PropertyType::Int),
                ),
            ],
            writable: Some((
                json!({"characteristicUUID": CHAR, "dataType": "uint16", "scale": 0.01}),
                Some(PropertyType::Float),
                Value::Float(21.5),
            )),
        },
    )
    .await;
    assert!(broken.is_empty(), "{broken:?}");
}
