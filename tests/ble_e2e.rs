//! edgecore-dmi + mapper-ble against `ble-mock` (../shared/tools/ble-mock), with
//! the example YAML of `examples/ble/sensortag.yaml`: the value decoded per
//! conversion, a desired value written to the characteristic, a notification
//! updating the twin with no poll, and the peripheral going away (the mock's
//! bus stopped) → offline → back → online with notifications subscribed
//! again.
//!
//! ble-mock is a private system D-Bus running python-dbusmock's BlueZ
//! template: this exercises the BlueZ/D-Bus path btleplug takes, not radio
//! behaviour. Only the mapper gets the mock's `DBUS_SYSTEM_BUS_ADDRESS`.
//! Without the mock script, `dbus-daemon`, python3-dbusmock or `busctl` the
//! test prints `SKIP` and passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e_tests::{Node, prop, repo, wait_for};

const CHAR_PATH: &str = "/org/bluez/hci0/dev_11_22_33_44_55_66/service0010/char0011";
const DEVICE: &str = "default/sensortag-1";

fn mock_script() -> PathBuf {
    repo().join("../shared/tools/ble-mock/ble-mock.sh")
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

/// `ble-mock.sh CMD DIR ARGS`; its stdout.
fn mock(dir: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(mock_script())
        .arg(cmd)
        .arg(dir)
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

/// Stops the mock however the test ends.
struct MockGuard(PathBuf);

impl Drop for MockGuard {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(mock_script())
            .arg("stop")
            .arg(&self.0)
            .output();
    }
}

/// The characteristic's value as the mock holds it, read over D-Bus with
/// busctl (outside the mapper): e.g. `ay 2 202 8`.
fn characteristic_value(bus: &str) -> String {
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

fn reported(node: &Node, property: &str) -> Option<String> {
    prop(&node.device(DEVICE)?, property).reported.clone()
}

fn state(node: &Node) -> Option<String> {
    node.device(DEVICE)?.state
}

#[test]
fn ble_sensortag_conversion_writes_notifications_and_reconnect() {
    if let Some(why) = missing_tools() {
        eprintln!("SKIP: {why}");
        return;
    }
    let mut node = Node::new(&[]);
    let bus_dir = node.path("ble-mock");
    let _guard = MockGuard(bus_dir.clone());
    let printed = mock(&bus_dir, "start", &[]);
    let bus = printed
        .lines()
        .find_map(|l| l.strip_prefix("DBUS_SYSTEM_BUS_ADDRESS="))
        .expect("ble-mock.sh prints the bus address")
        .to_owned();

    // The example device, collected only every 10 minutes: any change of the
    // twins within the test comes from a notification (or the first read
    // after subscribing), not from polling.
    let example = std::fs::read_to_string(repo().join("examples/ble/sensortag.yaml")).unwrap();
    let yaml = example.replace("collectCycle: 10000", "collectCycle: 600000");
    assert_ne!(yaml, example);
    let file = node.path("devices/sensortag.yaml");
    std::fs::write(&file, &yaml).unwrap();
    node.start_edgecore();
    node.start_mapper_env("ble", &[], &[("DBUS_SYSTEM_BUS_ADDRESS", bus.as_str())]);

    // 1. Decoded per conversion: 0x66 0x08 as little-endian uint16 × 0.01, the
    //    same through KubeEdge's dataConverter, and the raw bytes.
    wait_for("sensortag online with decoded twins", 30, || {
        (state(&node).as_deref() == Some("online")
            && reported(&node, "temperature").as_deref() == Some("21.5")
            && reported(&node, "temperatureKubeedge").as_deref() == Some("21.5")
            && reported(&node, "rawBytes").as_deref() == Some("6608"))
        .then_some(())
    });
    assert_eq!(characteristic_value(&bus), "ay 2 102 8");

    // 2. A desired value reaches the characteristic: 22.5 / 0.01 = 2250 = 0x08ca.
    let with_desired = yaml.replace(
        "      # desired:\n      #   value: \"22.5\"",
        "      desired:\n        value: \"22.5\"",
    );
    assert_ne!(
        with_desired, yaml,
        "the example has the commented desired value"
    );
    std::fs::write(&file, &with_desired).unwrap();
    wait_for("characteristic written", 30, || {
        (characteristic_value(&bus) == "ay 2 202 8").then_some(())
    });
    wait_for("twin follows the write", 30, || {
        let d = node.device(DEVICE)?;
        let t = prop(&d, "temperature");
        (t.reported.as_deref() == Some("22.5") && t.desired_status.as_deref() == Some("applied"))
            .then_some(())
    });

    // 3. A notification updates the twins without a poll: 0x2a 0x09 = 2346.
    mock(&bus_dir, "notify", &["42", "9"]);
    wait_for("notified value in the twins", 10, || {
        (reported(&node, "temperature").as_deref() == Some("23.46")
            && reported(&node, "temperatureKubeedge").as_deref() == Some("23.46")
            && reported(&node, "rawBytes").as_deref() == Some("2a09"))
        .then_some(())
    });

    // 4. The peripheral disappears (BlueZ and its bus stop): offline.
    mock(&bus_dir, "stop", &[]);
    wait_for("sensortag offline", 30, || {
        (state(&node).as_deref() == Some("offline")).then_some(())
    });

    // 5. Back: online, the desired value written again (a device that was away
    //    may have lost it), and notifications subscribed again.
    mock(&bus_dir, "start", &[]);
    wait_for("sensortag online again with the desired value", 60, || {
        (state(&node).as_deref() == Some("online")
            && reported(&node, "temperature").as_deref() == Some("22.5"))
        .then_some(())
    });
    assert_eq!(characteristic_value(&bus), "ay 2 202 8");
    // 0x0e10 = 3600 → 36: only a notification on the new subscription explains it.
    mock(&bus_dir, "notify", &["16", "14"]);
    wait_for("notification after reconnecting", 10, || {
        (reported(&node, "temperature").as_deref() == Some("36")
            && reported(&node, "temperatureKubeedge").as_deref() == Some("36"))
        .then_some(())
    });
    let logs = node.logs();
    assert!(
        logs.matches("push-mode collection").count() >= 2,
        "subscribed on both connections:\n{logs}"
    );
}
