//! edgecore-dmi + mapper-opcua + opcua-sim, driven by KubeEdge YAML: values
//! reach the twins, a desired value edited in the YAML reaches the node and
//! comes back as reported, killing the server takes the device offline and a
//! server restarted on the same port brings it back with its subscriptions,
//! and a bad NodeId is that property's error while the others keep reporting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use e2e_tests::{Node, bin, prop, repo, wait_for};

/// An `opcua-sim` process driven through its stdin commands.
struct OpcuaSim {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl OpcuaSim {
    /// Starts the simulator with `yaml` (written into `dir`) on `port` (0: a
    /// free one), its PKI in `dir/sim-pki` (kept across restarts, so the
    /// server certificate stays), and waits for its READY line.
    fn start(dir: &Path, name: &str, yaml: &str, port: u16) -> Self {
        let cfg = dir.join(format!("{name}.yaml"));
        std::fs::write(&cfg, yaml).unwrap();
        let mut child = Command::new(bin("opcua-sim"))
            .arg("--config")
            .arg(&cfg)
            .arg("--port")
            .arg(port.to_string())
            .arg("--pki-dir")
            .arg(dir.join("sim-pki"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("opcua-sim.log"))
                    .unwrap(),
            ))
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // READY opc.tcp://127.0.0.1:PORT/ /path/to/cert.der
        let url = line
            .strip_prefix("READY ")
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("opcua-sim did not start: {line:?}"));
        let port = url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        Self {
            child,
            stdin,
            stdout,
            port,
        }
    }

    /// Sends a command; returns the answer line.
    fn command(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    /// SIGKILL: the server vanishes without closing anything politely.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OpcuaSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts mapper-opcua with its state (PKI) directory inside the node's dir.
fn start_mapper(node: &mut Node) {
    let state = node.path("opcua-state");
    node.start_mapper_with("opcua", &["--state-dir", state.to_str().unwrap()]);
}

fn reported(node: &Node, device: &str, property: &str) -> Option<String> {
    prop(&node.device(device)?, property).reported.clone()
}

/// A reported value no older than `max_age_ms`.
fn fresh(node: &Node, device: &str, property: &str, max_age_ms: u64) -> Option<String> {
    let d = node.device(device)?;
    let p = prop(&d, property);
    (p.age_ms? <= max_age_ms).then(|| p.reported.clone())?
}

fn sim_value(sim: &mut OpcuaSim, node: &str) -> String {
    sim.command(&format!("get {node}"))
}

fn write_device(node: &Node, name: &str, yaml: &str) -> PathBuf {
    let path = node.path(&format!("devices/{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn the_example_press_reports_and_a_desired_value_edited_in_the_yaml_reaches_the_node() {
    let mut node = Node::new(&[]);
    let sim_yaml = std::fs::read_to_string(repo().join("examples/opcua/plant-sim.yaml")).unwrap();
    let mut sim = OpcuaSim::start(node.dir.path(), "plant-sim", &sim_yaml, 0);
    let plant = std::fs::read_to_string(repo().join("examples/opcua/plant.yaml")).unwrap();
    assert!(plant.contains("opc.tcp://127.0.0.1:14840/"));
    let file = write_device(
        &node,
        "plant",
        &plant.replace(
            "opc.tcp://127.0.0.1:14840/",
            &format!("opc.tcp://127.0.0.1:{}/", sim.port),
        ),
    );
    node.start_edgecore();
    start_mapper(&mut node);

    // Every property of the polled press reaches its twin; the desired
    // set-point and run state were written.
    let d = wait_for("press-1 twins", 90, || {
        let d = node.device("default/press-1")?;
        (d.state.as_deref() == Some("online")
            && d.properties.iter().all(|p| p.reported.is_some())
            && prop(&d, "setpoint").reported.as_deref() == Some("62.5")
            && prop(&d, "running").reported.as_deref() == Some("true"))
        .then_some(d)
    });
    assert_eq!(prop(&d, "serial").reported.as_deref(), Some("PL-0042"));
    assert_eq!(prop(&d, "zones").reported.as_deref(), Some("61.5,62,63.25"));
    let t: f64 = prop(&d, "temperature")
        .reported
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    assert!((61.9..=68.1).contains(&t), "65 ± 3 °C, got {t}");
    let p: f64 = prop(&d, "pressure")
        .reported
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1.5..=2.1).contains(&p), "pressure {p}");
    assert_eq!(sim_value(&mut sim, "s=Press.Setpoint"), "OK Good 62.5");
    // The counter moves from twin to twin.
    let first: u64 = reported(&node, "default/press-1", "strokes")
        .unwrap()
        .parse()
        .unwrap();
    wait_for("strokes counting", 30, || {
        let now: u64 = reported(&node, "default/press-1", "strokes")?
            .parse()
            .ok()?;
        (now > first).then_some(())
    });
    // The monitored twin of the same press reports too (one shared session).
    wait_for("press-1-live twins", 30, || {
        let d = node.device("default/press-1-live")?;
        (d.state.as_deref() == Some("online") && d.properties.iter().all(|p| p.reported.is_some()))
            .then_some(())
    });

    // A desired value edited in the YAML reaches the node, then the twin.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("value: \"62.5\""));
    std::fs::write(&file, text.replace("value: \"62.5\"", "value: \"71.25\"")).unwrap();
    wait_for("Press.Setpoint = 71.25 on the server", 30, || {
        (sim_value(&mut sim, "s=Press.Setpoint") == "OK Good 71.25").then_some(())
    });
    wait_for("set-point twin 71.25, applied", 30, || {
        let d = node.device("default/press-1")?;
        let p = prop(&d, "setpoint");
        (p.reported.as_deref() == Some("71.25") && p.desired_status.as_deref() == Some("applied"))
            .then_some(())
    });
    // A value changed on the server (not by the mapper) is reported as well.
    let answer = sim.command("set s=Press.Running false");
    assert!(answer.starts_with("OK"), "{answer}");
    wait_for("running twin follows the server", 30, || {
        (reported(&node, "default/press-1", "running").as_deref() == Some("false")).then_some(())
    });
}

const LINE_SIM: &str = "host: 127.0.0.1
tickMs: 50
nodes:
  - { nodeId: s=Line.Strokes, folder: Line, dataType: UInt32, value: START, pattern: counter, periodMs: 200 }
  - { nodeId: s=Line.Speed, folder: Line, dataType: Double, value: 1.5 }
";

const LINE_YAML: &str = "apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: line-model
spec:
  protocol: opcua
  properties:
    - { name: strokes, type: INT, accessMode: ReadOnly }
    - { name: speed, type: DOUBLE, accessMode: ReadOnly }
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: line-1
spec:
  deviceModelRef:
    name: line-model
  protocol:
    protocolName: opcua
    configData:
      url: URL
      securityPolicy: None
      securityMode: None
      timeout: 2000
      subscribe: true
      publishingInterval: 100
  properties:
    - name: strokes
      collectCycle: 100
      reportToCloud: true
      visitors: { protocolName: opcua, configData: { nodeID: \"ns=2;s=Line.Strokes\" } }
    - name: speed
      collectCycle: 100
      reportToCloud: true
      visitors: { protocolName: opcua, configData: { nodeID: \"nsu=urn:edge-dmi:opcua-sim;s=Line.Speed\" } }
";

/// How often the mapper put line-1's two properties in push mode (one
/// subscription, both monitored items accepted).
fn push_mode_started(node: &Node) -> usize {
    std::fs::read_to_string(node.path("mapper.log"))
        .unwrap()
        .lines()
        .filter(|l| {
            l.contains("push-mode collection")
                && l.contains("device=default/line-1")
                && l.contains("properties=2")
        })
        .count()
}

/// Waits until the device is online and `strokes` has taken `n` different
/// values, each at least `min`; returns the last one.
fn strokes_moving(node: &Node, what: &str, min: u64, n: usize) -> u64 {
    let mut seen: Vec<u64> = Vec::new();
    wait_for(what, 90, || {
        let d = node.device("default/line-1")?;
        if d.state.as_deref() != Some("online") {
            return None;
        }
        let p = prop(&d, "strokes");
        let v: u64 = p.reported.as_deref()?.parse().ok()?;
        if p.age_ms? <= 2000 && v >= min && seen.last() != Some(&v) {
            seen.push(v);
        }
        (seen.len() >= n).then(|| *seen.last().unwrap())
    })
}

#[test]
fn a_killed_server_takes_the_device_offline_and_a_restarted_one_brings_its_subscriptions_back() {
    let mut node = Node::new(&[]);
    let sim = OpcuaSim::start(
        node.dir.path(),
        "line-sim",
        &LINE_SIM.replace("START", "0"),
        0,
    );
    let port = sim.port;
    write_device(
        &node,
        "line",
        &LINE_YAML.replace("URL", &format!("opc.tcp://127.0.0.1:{port}/")),
    );
    node.start_edgecore();
    start_mapper(&mut node);

    // Values arrive through the subscription.
    strokes_moving(&node, "strokes pushed and changing", 0, 3);
    let subscribed = push_mode_started(&node);
    assert!(subscribed >= 1, "push mode:\n{}", node.logs());
    assert_eq!(
        reported(&node, "default/line-1", "speed").as_deref(),
        Some("1.5")
    );

    // The server dies: the device goes offline.
    sim.kill();
    wait_for("line-1 offline", 60, || {
        (node.device("default/line-1")?.state.as_deref() == Some("offline")).then_some(())
    });

    // Back on the same port (same certificate), counting from a million: the
    // session and the subscription are made again and values flow.
    let mut sim = OpcuaSim::start(
        node.dir.path(),
        "line-sim-2",
        &LINE_SIM.replace("START", "1000000"),
        port,
    );
    assert_eq!(sim.port, port);
    strokes_moving(
        &node,
        "strokes pushed again after the restart",
        1_000_000,
        3,
    );
    assert!(
        push_mode_started(&node) > subscribed,
        "the subscription was made again:\n{}",
        node.logs()
    );
    // A change made on the server is notified, too.
    let answer = sim.command("set s=Line.Speed 2.75");
    assert!(answer.starts_with("OK"), "{answer}");
    wait_for("speed notified", 30, || {
        (fresh(&node, "default/line-1", "speed", 5000).as_deref() == Some("2.75")).then_some(())
    });
}

const BAD_NODE_YAML: &str = "apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: cell-model
spec:
  protocol: opcua
  properties:
    - { name: strokes, type: INT, accessMode: ReadOnly }
    - { name: speed, type: DOUBLE, accessMode: ReadOnly }
    - { name: garbled, type: INT, accessMode: ReadOnly }
    - { name: ghost, type: INT, accessMode: ReadOnly }
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: cell-1
spec:
  deviceModelRef:
    name: cell-model
  protocol:
    protocolName: opcua
    configData: { url: URL, timeout: 2000 }
  properties:
    - name: strokes
      collectCycle: 200
      reportToCloud: true
      visitors: { protocolName: opcua, configData: { nodeID: \"ns=2;s=Line.Strokes\" } }
    - name: speed
      collectCycle: 200
      reportToCloud: true
      visitors: { protocolName: opcua, configData: { nodeID: \"ns=2;s=Line.Speed\" } }
    - name: garbled
      collectCycle: 200
      reportToCloud: true
      visitors: { protocolName: opcua, configData: { nodeID: \"ns=2;x=7\" } }
    - name: ghost
      collectCycle: 200
      reportToCloud: true
      visitors: { protocolName: opcua, configData: { nodeID: \"ns=2;s=No.Such.Node\" } }
";

#[test]
fn a_bad_node_id_is_that_propertys_error_and_the_others_keep_reporting() {
    let mut node = Node::new(&[]);
    let sim = OpcuaSim::start(
        node.dir.path(),
        "cell-sim",
        &LINE_SIM.replace("START", "0"),
        0,
    );
    write_device(
        &node,
        "cell",
        &BAD_NODE_YAML.replace("URL", &format!("opc.tcp://127.0.0.1:{}/", sim.port)),
    );
    node.start_edgecore();
    start_mapper(&mut node);

    // The NodeId that does not parse: its error in the twin.
    let d = wait_for("garbled nodeID reported as an error", 90, || {
        let d = node.device("default/cell-1")?;
        (prop(&d, "garbled").error.is_some()
            && prop(&d, "strokes").reported.is_some()
            && prop(&d, "speed").reported.is_some())
        .then_some(d)
    });
    let err = prop(&d, "garbled").error.clone().unwrap();
    assert!(err.contains("`nodeID` `ns=2;x=7` does not parse"), "{err}");
    assert!(prop(&d, "garbled").reported.is_none());
    assert_eq!(prop(&d, "speed").reported.as_deref(), Some("1.5"));
    // The unknown node: its status logged with device and property, no value.
    wait_for("BadNodeIdUnknown logged for ghost", 30, || {
        let log = std::fs::read_to_string(node.path("mapper.log")).ok()?;
        log.lines()
            .any(|l| {
                l.contains("BadNodeIdUnknown")
                    && l.contains("default/cell-1")
                    && l.contains("property=ghost")
                    && l.contains("ns=2;s=No.Such.Node")
            })
            .then_some(())
    });
    assert!(
        reported(&node, "default/cell-1", "ghost").is_none(),
        "no value for the unknown node"
    );
    // The good properties keep reporting: the counter keeps moving, fresh.
    let mut seen = std::collections::BTreeSet::new();
    wait_for("strokes keep moving", 30, || {
        let v = fresh(&node, "default/cell-1", "strokes", 2000)?;
        seen.insert(v);
        (seen.len() >= 4).then_some(())
    });
    assert_eq!(
        node.device("default/cell-1").unwrap().state.as_deref(),
        Some("online")
    );
}
