//! Devices from the YAML directory reach the virtual mapper over DMI and come
//! back as twins; editing a desired value converges; deleting the file removes
//! the device.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::{Node, prop, wait_for};

#[test]
fn yaml_to_twins_desired_edit_and_delete() {
    let mut node = Node::new(&[
        "examples/devices/thermostat.yaml",
        "examples/devices/line-counter.yaml",
    ]);
    node.start_edgecore();
    node.start_virtual_mapper();

    // Registered, dispatched, reporting.
    let d = wait_for("thermostat twins", 30, || {
        let d = node.device("default/thermostat-1")?;
        let ok = d.state.as_deref() == Some("online")
            && d.mappers == vec!["virtual-mapper".to_owned()]
            && prop(&d, "temperature").reported.is_some()
            && prop(&d, "setpoint").reported.as_deref() == Some("22");
        ok.then_some(d)
    });
    let t: f64 = prop(&d, "temperature")
        .reported
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    assert!((19.0..=23.0).contains(&t), "sine around 21 ± 1.5, got {t}");
    assert_eq!(
        prop(&d, "setpoint").desired_status.as_deref(),
        Some("applied")
    );
    assert!(d.last_online.is_some());
    let line = wait_for("line-1 counter", 30, || {
        let d = node.device("default/line-1")?;
        prop(&d, "parts")
            .reported
            .as_ref()?
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 2)
            .map(|_| d)
    });
    assert!(line.errors.is_empty(), "{:?}", line.errors);

    // Edit the desired set-point in the YAML file: it reaches the device and the
    // reported value converges.
    let file = node.path("devices/thermostat.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("value: \"22\"", "value: \"27\"")).unwrap();
    wait_for("set-point 27 reported", 30, || {
        let d = node.device("default/thermostat-1")?;
        let p = prop(&d, "setpoint");
        (p.desired.as_deref() == Some("27")
            && p.reported.as_deref() == Some("27")
            && p.observed_desired.as_deref() == Some("27")
            && p.desired_status.as_deref() == Some("applied"))
        .then_some(())
    });
    // One edit, one UpdateDevice: what the mapper has is compared by a stable
    // fingerprint, so nothing is re-sent in a loop.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let edge_log = std::fs::read_to_string(node.path("edgecore.log")).unwrap();
    let updates = edge_log
        .lines()
        .filter(|l| l.contains("delivered") && l.contains("UpdateDevice default/thermostat-1"))
        .count();
    assert_eq!(updates, 1, "{edge_log}");
    // Only the desired value changed: the mapper updated it without reconnecting.
    let mapper_log = std::fs::read_to_string(node.path("mapper.log")).unwrap();
    assert!(
        mapper_log.contains("desired values updated"),
        "{mapper_log}"
    );
    let connects = mapper_log
        .lines()
        .filter(|l| l.contains("thermostat-1") && l.contains(" connected"))
        .count();
    assert_eq!(connects, 1, "{mapper_log}");

    // Delete the file: the device disappears from edgecore-dmi and the mapper.
    std::fs::remove_file(&file).unwrap();
    wait_for("thermostat removed", 30, || {
        let s = node.status()?;
        (!s.devices.iter().any(|d| d.name == "thermostat-1")
            && s.devices.iter().any(|d| d.name == "line-1"))
        .then_some(())
    });
    wait_for("mapper removed the device", 30, || {
        std::fs::read_to_string(node.path("mapper.log"))
            .ok()?
            .contains("device removed")
            .then_some(())
    });
}
