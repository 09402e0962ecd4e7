//! edgecore-dmi + mapper-modbus + the Modbus simulator, driven by KubeEdge-style
//! YAML: a desired value reaches the holding register; unplugging one simulator
//! takes its device offline and back online after a restart, while a device on
//! another endpoint keeps reporting throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use e2e_tests::{ModbusSim, Node, free_port, http_get, metric, prop, repo, wait_for};

const PUMP_SIM: &str = "devices:
  - name: pump
    tcp: 127.0.0.1:0
    input:
      - { address: 5, pattern: counter, value: 100, step: 1, periodMs: 200, max: 60000 }
";

const PUMP_YAML: &str = "apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: pump-model
spec:
  protocol: modbus
  properties:
    - name: strokes
      type: INT
      accessMode: ReadOnly
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: pump-1
spec:
  deviceModelRef:
    name: pump-model
  protocol:
    protocolName: modbus
    configData:
      ip: 127.0.0.1
      port: PORT
      slaveID: 1
  properties:
    - name: strokes
      collectCycle: 200
      reportToCloud: true
      visitors:
        protocolName: modbus
        configData:
          register: InputRegister
          offset: 5
          limit: 1
";

fn fresh(node: &Node, device: &str, property: &str, max_age_ms: u64) -> bool {
    node.device(device)
        .and_then(|d| prop(&d, property).age_ms)
        .is_some_and(|age| age <= max_age_ms)
}

#[test]
fn modbus_devices_desired_values_and_unplugging() {
    let mut node = Node::new(&[]);
    let plant = std::fs::read_to_string(repo().join("examples/modbus/plant-sim.yaml")).unwrap();
    let mut boiler_sim = ModbusSim::start(
        node.dir.path(),
        "plant",
        &plant.replace("127.0.0.1:15020", "127.0.0.1:0"),
    );
    let boiler_port = boiler_sim.port("boiler");
    let mut pump_sim = ModbusSim::start(node.dir.path(), "pump", PUMP_SIM);
    let boiler_yaml = std::fs::read_to_string(repo().join("examples/devices/boiler.yaml")).unwrap();
    std::fs::write(
        node.path("devices/boiler.yaml"),
        boiler_yaml.replace("port: 15020", &format!("port: {boiler_port}")),
    )
    .unwrap();
    std::fs::write(
        node.path("devices/pump.yaml"),
        PUMP_YAML.replace("PORT", &pump_sim.port("pump").to_string()),
    )
    .unwrap();
    node.start_edgecore();
    let metrics_port = free_port();
    node.start_mapper_with(
        "modbus",
        &[
            "--http-port",
            &metrics_port.to_string(),
            "--http-bind",
            "127.0.0.1",
        ],
    );

    // Both devices report; the desired set-point and pump state were written.
    let d = wait_for("boiler twins", 30, || {
        let d = node.device("default/boiler-1")?;
        (d.state.as_deref() == Some("online")
            && prop(&d, "setpoint").reported.as_deref() == Some("60")
            && prop(&d, "pump").reported.as_deref() == Some("true")
            && prop(&d, "pressure").reported.is_some())
        .then_some(d)
    });
    let t: f64 = prop(&d, "temperature")
        .reported
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (61.9..=68.1).contains(&t),
        "65.0 ± 3.0 °C from int16 × 0.1, got {t}"
    );
    let p: f64 = prop(&d, "pressure")
        .reported
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1.5..=2.1).contains(&p), "pressure {p}");
    assert_eq!(boiler_sim.command("get boiler holding 10"), "60");
    // Read planning through the real runtime: 4 properties in 3 requests per tick
    // (holding 0 and 10 merged, input 0-1, coil 0), visible in the metrics.
    let text = wait_for("metrics", 10, || http_get(metrics_port, "/metrics"));
    let boiler = |series: &str| metric(&text, &format!("{series}{{device=\"default/boiler-1\"}}"));
    assert_eq!(boiler("mapper_last_tick_properties"), Some(4.0), "{text}");
    assert_eq!(boiler("mapper_last_tick_requests"), Some(3.0), "{text}");
    assert!(boiler("mapper_reads_total").unwrap_or(0.0) >= 4.0, "{text}");
    assert_eq!(boiler("mapper_device_online"), Some(1.0), "{text}");
    assert_eq!(boiler_sim.command("get boiler coil 0"), "1");
    wait_for("pump twins", 30, || {
        fresh(&node, "default/pump-1", "strokes", 1000).then_some(())
    });

    // Modbus exceptions are device faults: the pump turns unhealthy, then recovers.
    assert_eq!(pump_sim.command("exception pump 4"), "ok");
    wait_for("pump unhealthy", 30, || {
        (node.device("default/pump-1")?.state.as_deref() == Some("unhealthy")).then_some(())
    });
    assert_eq!(pump_sim.command("exception pump off"), "ok");
    wait_for("pump online again", 30, || {
        (node.device("default/pump-1")?.state.as_deref() == Some("online")).then_some(())
    });

    // A desired value edited in the YAML reaches the holding register.
    let file = node.path("devices/boiler.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("value: \"60\"", "value: \"75\"")).unwrap();
    wait_for("holding register 10 = 75", 30, || {
        (boiler_sim.command("get boiler holding 10") == "75").then_some(())
    });
    wait_for("set-point twin 75", 30, || {
        let d = node.device("default/boiler-1")?;
        (prop(&d, "setpoint").reported.as_deref() == Some("75")).then_some(())
    });

    // Unplug the boiler's simulator: the boiler goes offline, the pump keeps going.
    boiler_sim.kill();
    let t0 = Instant::now();
    wait_for("boiler offline", 30, || {
        assert!(
            fresh(&node, "default/pump-1", "strokes", 1500),
            "pump stalled while the boiler is offline"
        );
        (node.device("default/boiler-1")?.state.as_deref() == Some("offline")).then_some(())
    });
    // Stay unplugged a while: the pump must keep reporting all along.
    while t0.elapsed() < Duration::from_secs(3) {
        assert!(
            fresh(&node, "default/pump-1", "strokes", 1500),
            "pump stalled while the boiler is offline"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Plug it back in on the same port: online again, values flow.
    let _boiler_sim = ModbusSim::start(
        node.dir.path(),
        "plant2",
        &plant.replace("127.0.0.1:15020", &format!("127.0.0.1:{boiler_port}")),
    );
    wait_for("boiler online again", 60, || {
        let d = node.device("default/boiler-1")?;
        (d.state.as_deref() == Some("online") && prop(&d, "temperature").age_ms? < 1500)
            .then_some(())
    });
    // The new simulator started at 55; the mapper writes the desired 75 again after reconnecting.
    wait_for("set-point restored on the new simulator", 30, || {
        let d = node.device("default/boiler-1")?;
        (prop(&d, "setpoint").reported.as_deref() == Some("75")).then_some(())
    });
}
