//! Liveness comes from the device, not the transport (edgecore-dmi +
//! mapper-modbus + modbus-sim processes):
//!
//! * a device whose TCP stack accepts connections but never answers is never
//!   reported `online`, and its reconnects back off further each time;
//! * on a gateway where 4 of 5 unit ids are silent, the healthy unit is never
//!   reported offline and its twin age stays within its collect cycle plus one
//!   timeout plus 1 s (here 1 s + 1 s + 1 s), because units that answer go first
//!   on the shared link and a request's deadline starts when it gets the link.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use e2e_tests::{ModbusSim, Node, free_port, prop, wait_for};

const MODEL: &str = "apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: { name: unit-model }
spec:
  protocol: modbus
  properties:
    - { name: counter, type: INT, accessMode: ReadOnly }
";

fn device(name: &str, port: u16, unit: u8, timeout_ms: u32) -> String {
    format!(
        "---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{ name: {name} }}
spec:
  deviceModelRef: {{ name: unit-model }}
  protocol:
    protocolName: modbus
    configData: {{ ip: 127.0.0.1, port: {port}, slaveID: {unit}, timeout: {timeout_ms} }}
  properties:
    - name: counter
      collectCycle: 1000
      reportToCloud: true
      visitors: {{ protocolName: modbus, configData: {{ register: HoldingRegister, offset: 0, limit: 1 }} }}
"
    )
}

/// `retry_in=` delays of one device in the mapper log, in ms.
fn retry_delays(log: &str, device: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains(&format!("device={device}")))
        .filter_map(|l| {
            let v = l.split("retry_in=").nth(1)?.split_whitespace().next()?;
            if let Some(ms) = v.strip_suffix("ms") {
                ms.parse().ok()
            } else {
                v.strip_suffix('s')?.parse::<f64>().ok().map(|s| s * 1000.0)
            }
        })
        .collect()
}

#[test]
fn a_device_that_accepts_connections_but_never_answers_is_never_online() {
    let mut node = Node::new(&[]);
    let sim = ModbusSim::start(
        node.dir.path(),
        "hung",
        "devices:\n  - name: hung\n    tcp: \"127.0.0.1:0\"\n    unit: 1\n    holding: [ { address: 0, value: 7 } ]\n    faults: { silent: true }\n",
    );
    std::fs::write(
        node.path("devices/hung.yaml"),
        format!("{MODEL}{}", device("hung-1", sim.port("hung"), 1, 500)),
    )
    .unwrap();
    node.start_edgecore();
    node.start_mapper("modbus");
    let t0 = Instant::now();
    let mut offline_seen = false;
    while t0.elapsed() < Duration::from_secs(9) {
        if let Some(d) = node.device("default/hung-1") {
            assert_ne!(
                d.state.as_deref(),
                Some("online"),
                "a device that never answered was reported online"
            );
            offline_seen |= d.state.as_deref() == Some("offline");
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(offline_seen, "never reported offline");
    let log = std::fs::read_to_string(node.path("mapper.log")).unwrap();
    assert!(
        !log.contains("device=default/hung-1 state=\"online\""),
        "{log}"
    );
    // Connects succeed every time; the delay between them still grows.
    let delays = retry_delays(&log, "default/hung-1");
    assert!(delays.len() >= 3, "{delays:?}\n{log}");
    assert!(
        delays[delays.len() - 1] > 2.0 * delays[0],
        "backoff did not grow: {delays:?}"
    );
}

#[test]
fn a_healthy_unit_behind_a_gateway_with_dead_units_stays_online_and_fresh() {
    let mut node = Node::new(&[]);
    let gw = free_port();
    let mut sim_yaml = String::from("devices:\n");
    // Block style: the harness counts `- name:` lines to wait for READY.
    sim_yaml.push_str(&format!(
        "  - name: u1\n    tcp: \"127.0.0.1:{gw}\"\n    unit: 1\n    holding: [ {{ address: 0, pattern: counter, value: 0, step: 1, periodMs: 500, max: 60000 }} ]\n"
    ));
    for u in 2..=5 {
        sim_yaml.push_str(&format!(
            "  - name: u{u}\n    tcp: \"127.0.0.1:{gw}\"\n    unit: {u}\n    holding: [ {{ address: 0, value: {u} }} ]\n    faults: {{ silent: true }}\n"
        ));
    }
    let _sim = ModbusSim::start(node.dir.path(), "gateway", &sim_yaml);
    let mut yaml = MODEL.to_owned();
    for u in 1..=5u8 {
        yaml.push_str(&device(&format!("unit-{u}"), gw, u, 1000));
    }
    std::fs::write(node.path("devices/gateway.yaml"), yaml).unwrap();
    node.start_edgecore();
    node.start_mapper("modbus");
    wait_for("unit-1 online", 15, || {
        (node.device("default/unit-1")?.state.as_deref() == Some("online")).then_some(())
    });
    // Bound: collect cycle + one timeout + 1 s.
    let bound_ms = 1000 + 1000 + 1000;
    let t0 = Instant::now();
    let mut worst = 0;
    while t0.elapsed() < Duration::from_secs(12) {
        let d = node.device("default/unit-1").unwrap();
        assert_eq!(d.state.as_deref(), Some("online"), "unit-1 left online");
        let age = prop(&d, "counter").age_ms.unwrap();
        worst = worst.max(age);
        assert!(
            age <= bound_ms,
            "unit-1's twin is {age} ms old (bound {bound_ms} ms)"
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    eprintln!("unit-1 worst twin age {worst} ms");
    // The dead units are offline and backing off.
    let status = node.status().unwrap();
    for u in 2..=5 {
        let d = status
            .devices
            .iter()
            .find(|d| d.name == format!("unit-{u}"))
            .unwrap();
        assert_ne!(d.state.as_deref(), Some("online"), "unit-{u}");
    }
}
