//! Bad Modbus visitors and desired values: an unknown register type, an offset
//! out of range, a limit that does not fit the dataType, a non-numeric desired
//! value for an INT property. Each is a precise error naming the property,
//! visible through edgecore-dmi; the good property of the same device and the
//! other device keep reporting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::{ModbusSim, Node, prop, reported_on, wait_for};

const SIM: &str = "devices:
  - name: plc
    tcp: 127.0.0.1:0
    holding:
      - { address: 0, value: 42 }
      - { address: 1, value: 7 }
";

const YAML: &str = "apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: plc-model
spec:
  protocol: modbus
  properties:
    - { name: good, type: INT, accessMode: ReadOnly }
    - { name: magic, type: INT, accessMode: ReadOnly }
    - { name: far, type: INT, accessMode: ReadOnly }
    - { name: narrow, type: FLOAT, accessMode: ReadOnly }
    - { name: level, type: INT, accessMode: ReadWrite, minimum: \"0\", maximum: \"100\" }
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: plc-1
spec:
  deviceModelRef: { name: plc-model }
  protocol:
    protocolName: modbus
    configData: { ip: 127.0.0.1, port: PORT, slaveID: 1 }
  properties:
    - name: good
      collectCycle: 300
      reportToCloud: true
      visitors: { protocolName: modbus, configData: { register: HoldingRegister, offset: 0, limit: 1 } }
    - name: magic
      reportToCloud: true
      visitors: { protocolName: modbus, configData: { register: MagicRegister, offset: 0, limit: 1 } }
    - name: far
      reportToCloud: true
      visitors: { protocolName: modbus, configData: { register: HoldingRegister, offset: 65535, dataType: int32 } }
    - name: narrow
      reportToCloud: true
      visitors: { protocolName: modbus, configData: { register: HoldingRegister, offset: 0, limit: 1, dataType: float32 } }
    - name: level
      collectCycle: 300
      reportToCloud: true
      desired: { value: abc }
      visitors: { protocolName: modbus, configData: { register: HoldingRegister, offset: 1, limit: 1 } }
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: plc-2
spec:
  deviceModelRef: { name: plc-model }
  protocol:
    protocolName: modbus
    configData: { ip: 127.0.0.1, port: PORT, slaveID: 1, colour: blue }
  properties:
    - name: good
      collectCycle: 300
      reportToCloud: true
      visitors: { protocolName: modbus, configData: { register: HoldingRegister, offset: 0, limit: 1 } }
";

#[test]
fn bad_modbus_input_is_precise_and_isolated() {
    let mut node = Node::new(&[]);
    let sim = ModbusSim::start(node.dir.path(), "sim", SIM);
    std::fs::write(
        node.path("devices/plc.yaml"),
        YAML.replace("PORT", &sim.port("plc").to_string()),
    )
    .unwrap();
    node.start_edgecore();
    node.start_mapper("modbus");

    let d = wait_for("plc-1 settles", 30, || {
        let d = node.device("default/plc-1")?;
        (prop(&d, "good").reported.as_deref() == Some("42")
            && reported_on(prop(&d, "level"))
            && prop(&d, "magic").error.is_some()
            && prop(&d, "far").error.is_some()
            && prop(&d, "narrow").error.is_some())
        .then_some(d)
    });
    let err = |p: &str| prop(&d, p).error.clone().unwrap();
    assert!(
        err("magic").contains("register: unknown register type `MagicRegister`"),
        "{}",
        err("magic")
    );
    assert!(
        err("far").contains("offset 65535 + 2 register(s) is past the last address 65535"),
        "{}",
        err("far")
    );
    assert!(
        err("narrow").contains("limit 1 does not fit dataType Float32"),
        "{}",
        err("narrow")
    );
    let level = prop(&d, "level");
    assert_eq!(level.desired_status.as_deref(), Some("rejected"));
    assert_eq!(
        level.desired_reason.as_deref(),
        Some("`abc` is not an integer")
    );
    assert_eq!(
        level.reported.as_deref(),
        Some("7"),
        "the register kept its value"
    );
    assert_eq!(d.state.as_deref(), Some("online"));
    // The other device, with an unknown protocol key (warned about, not fatal), reports.
    wait_for("plc-2 reports", 30, || {
        let d = node.device("default/plc-2")?;
        (prop(&d, "good").reported.as_deref() == Some("42")).then_some(())
    });
    let log = std::fs::read_to_string(node.path("mapper.log")).unwrap();
    assert!(
        log.contains("unknown protocol configData key ignored") && log.contains("colour"),
        "{log}"
    );
}
