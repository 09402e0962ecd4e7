//! The MQTT device-topic bridge (`--mqtt-broker`) against a real broker
//! (mosquitto, started here on a free port), with the real edgecore-dmi and
//! virtual mapper: twin documents and states out, desired values in (applied
//! by the mapper, refused when out of range, kept across a restart, replaced
//! by a later YAML edit), and a broker that is down at start.
//!
//! Skipped (printing `SKIP`) only when the `mosquitto` binary is absent;
//! `hack/setup-test-env.sh` installs it with mosquitto-clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e_tests::{Node, free_port, prop, wait_for};
use serde_json::Value;

/// The mosquitto broker binary, if installed.
fn mosquitto() -> Option<PathBuf> {
    let candidates = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"];
    candidates
        .iter()
        .map(PathBuf::from)
        .chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|d| d.join("mosquitto")),
        )
        .find(|p| p.is_file())
}

/// The mosquitto binary, or `None` after printing `SKIP`.
fn mosquitto_or_skip() -> Option<PathBuf> {
    let bin = mosquitto();
    if bin.is_none() {
        eprintln!("SKIP: mosquitto is not installed (hack/setup-test-env.sh installs it)");
    }
    bin
}

/// A mosquitto process on `127.0.0.1:port`.
struct Broker {
    child: Child,
}

impl Broker {
    fn start(bin: &Path, dir: &Path, port: u16) -> Self {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join(format!("mosquitto-{port}.log"))).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for("mosquitto to listen", 10, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Self { child }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosquitto_sub` on every device topic; messages as (topic, JSON).
struct Sub {
    child: Child,
    rx: mpsc::Receiver<(String, Value)>,
}

impl Sub {
    fn start(port: u16) -> Self {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-v"])
            .args(["-t", "$hw/events/device/#"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (apt install mosquitto-clients)");
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { return };
                let Some((topic, payload)) = line.split_once(' ') else {
                    continue;
                };
                let json = serde_json::from_str(payload).unwrap_or(Value::Null);
                if tx.send((topic.to_owned(), json)).is_err() {
                    return;
                }
            }
        });
        Self { child, rx }
    }

    /// The first message on `topic` for which `ok` holds, within `secs`.
    fn wait(&self, what: &str, secs: u64, topic: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((t, v)) if t == topic && ok(&v) => return v,
                Ok(m) => {
                    if seen.len() < 20 {
                        seen.push(m);
                    }
                }
                Err(_) => panic!(
                    "timed out after {secs}s waiting for {what} on {topic}; some other messages: {seen:#?}"
                ),
            }
        }
    }
}

impl Sub {
    /// Forgets the messages received so far.
    fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn publish(port: u16, topic: &str, payload: &str) {
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", payload])
        .status()
        .expect("mosquitto_pub (apt install mosquitto-clients)");
    assert!(st.success(), "mosquitto_pub failed");
}

const DOC: &str = "$hw/events/device/default/thermostat-1/twin/update/document";
const UPDATE: &str = "$hw/events/device/default/thermostat-1/twin/update";
const RESULT: &str = "$hw/events/device/default/thermostat-1/twin/update/result";
const STATE: &str = "$hw/events/device/default/thermostat-1/state/update/result";

/// The document's current reported value of `property`, if it lists it.
fn actual<'a>(doc: &'a Value, property: &str) -> Option<&'a str> {
    doc["twin"][property]["current"]["actual"]["value"].as_str()
}

/// The desired value edgecore-dmi holds for the thermostat's set-point.
fn desired(node: &Node) -> Option<String> {
    prop(&node.device("default/thermostat-1")?, "setpoint")
        .desired
        .clone()
}

#[test]
fn twins_out_desired_values_in() {
    let Some(bin) = mosquitto_or_skip() else {
        return;
    };
    let mut node = Node::new(&["examples/devices/thermostat.yaml"]);
    let port = free_port();
    let _broker = Broker::start(&bin, node.dir.path(), port);
    let sub = Sub::start(port);
    let url = format!("tcp://127.0.0.1:{port}");
    node.start_edgecore_with(&["--mqtt-broker", &url], &[]);
    node.start_virtual_mapper();

    // A mapper's twin report arrives as the stock twin document.
    let doc = sub.wait("the set-point at 22", 30, DOC, |d| {
        actual(d, "setpoint") == Some("22")
    });
    assert_eq!(doc["event_id"], "", "{doc}");
    assert!(
        doc["timestamp"].as_i64().unwrap() > 1_600_000_000_000,
        "{doc}"
    );
    let setpoint = &doc["twin"]["setpoint"];
    assert!(setpoint.get("last").is_some(), "{doc}");
    assert_eq!(setpoint["current"]["expected"]["value"], "22", "{doc}");
    assert!(setpoint["current"]["actual"]["metadata"]["timestamp"].is_i64());
    // And a state report as the stock state result.
    let state = sub.wait("online", 30, STATE, |s| s["device"]["state"] == "online");
    assert_eq!(state["device"]["name"], "thermostat-1");
    assert!(state["device"]["last_online"].is_string(), "{state}");

    // A desired value over MQTT reaches the mapper and comes back reported.
    publish(
        port,
        UPDATE,
        r#"{"event_id":"e-25","timestamp":0,"twin":{"setpoint":{"expected":{"value":"25"}}}}"#,
    );
    let ok = sub.wait("the answer to e-25", 15, RESULT, |r| {
        r["event_id"] == "e-25"
    });
    assert_eq!(ok["twin"]["setpoint"]["expected"]["value"], "25", "{ok}");
    assert!(ok.get("code").is_none(), "{ok}");
    sub.wait("the set-point at 25", 30, DOC, |d| {
        actual(d, "setpoint") == Some("25")
            && d["twin"]["setpoint"]["current"]["expected"]["value"] == "25"
    });
    wait_for("set-point 25 desired and reported", 30, || {
        let d = node.device("default/thermostat-1")?;
        let p = prop(&d, "setpoint");
        (p.desired.as_deref() == Some("25")
            && p.reported.as_deref() == Some("25")
            && p.desired_status.as_deref() == Some("applied"))
        .then_some(())
    });

    // Out of range (the model's maximum is 30): refused, answered, nothing changes.
    publish(
        port,
        UPDATE,
        r#"{"event_id":"e-31","twin":{"setpoint":{"expected":{"value":"31"}}}}"#,
    );
    let refused = sub.wait("the answer to e-31", 15, RESULT, |r| {
        r["event_id"] == "e-31"
    });
    assert_eq!(refused["code"], 400, "{refused}");
    let reason = refused["reason"].as_str().unwrap();
    assert!(
        reason.contains("default/thermostat-1")
            && reason.contains("setpoint")
            && reason.contains("31 is above the maximum 30"),
        "{reason}"
    );
    // Malformed JSON and an unknown device are refused too.
    publish(port, UPDATE, "{not json");
    let bad = sub.wait("the answer to bad JSON", 15, RESULT, |r| {
        r["code"] == 400 && r["event_id"] == ""
    });
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("not a twin update"),
        "{bad}"
    );
    publish(
        port,
        "$hw/events/device/default/ghost/twin/update",
        r#"{"event_id":"e-ghost","twin":{"setpoint":{"expected":{"value":"20"}}}}"#,
    );
    let ghost = sub.wait(
        "the answer about a ghost",
        15,
        "$hw/events/device/default/ghost/twin/update/result",
        |r| r["event_id"] == "e-ghost",
    );
    assert_eq!(ghost["code"], 404, "{ghost}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(desired(&node).as_deref(), Some("25"));
    sub.wait("the set-point still at 25", 10, DOC, |d| {
        actual(d, "setpoint") == Some("25")
    });
    let log = std::fs::read_to_string(node.path("edgecore.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("refused a desired value over MQTT")
                && l.contains("thermostat-1")
                && l.contains("setpoint")),
        "{log}"
    );

    // The value set over MQTT survives a restart (kill -9) of edgecore-dmi.
    node.kill_edgecore();
    std::thread::sleep(Duration::from_millis(300));
    sub.drain();
    node.start_edgecore_with(&["--mqtt-broker", &url], &[]);
    assert_eq!(desired(&node).as_deref(), Some("25"), "after a restart");
    // The new process connects, the mapper registers again, reports flow.
    sub.wait("the set-point at 25 after the restart", 30, DOC, |d| {
        actual(d, "setpoint") == Some("25")
    });
    assert_eq!(desired(&node).as_deref(), Some("25"));

    // A later edit of the YAML's desired value is newer: it wins.
    let file = node.path("devices/thermostat.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("value: \"22\"", "value: \"18\"")).unwrap();
    sub.wait("the set-point at 18", 30, DOC, |d| {
        actual(d, "setpoint") == Some("18")
    });
    wait_for("set-point 18 desired and reported", 30, || {
        let d = node.device("default/thermostat-1")?;
        let p = prop(&d, "setpoint");
        (p.desired.as_deref() == Some("18") && p.reported.as_deref() == Some("18")).then_some(())
    });
}

#[test]
fn a_broker_down_at_start_is_connected_when_it_comes_up() {
    let Some(bin) = mosquitto_or_skip() else {
        return;
    };
    let mut node = Node::new(&["examples/devices/line-counter.yaml"]);
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    node.start_edgecore_with(&["--mqtt-broker", &url], &[]);
    node.start_virtual_mapper();
    // DMI works without the broker.
    wait_for("reports without a broker", 30, || {
        let d = node.device("default/line-1")?;
        let n: i64 = prop(&d, "parts").reported.as_ref()?.parse().ok()?;
        (n >= 2).then_some(())
    });
    // The broker comes up: the bridge connects and publishes.
    let _broker = Broker::start(&bin, node.dir.path(), port);
    let sub = Sub::start(port);
    let doc = sub.wait(
        "a twin document",
        45,
        "$hw/events/device/default/line-1/twin/update/document",
        |d| d["twin"]["parts"]["current"]["actual"]["value"].is_string(),
    );
    assert_eq!(doc["event_id"], "", "{doc}");
    let log = std::fs::read_to_string(node.path("edgecore.log")).unwrap();
    assert!(log.contains("MQTT bridge cannot reach the broker"), "{log}");
    assert!(log.contains("MQTT bridge connected"), "{log}");
}

#[test]
fn a_device_name_mqtt_cannot_carry_stops_nothing() {
    let Some(bin) = mosquitto_or_skip() else {
        return;
    };
    let mut node = Node::new(&["examples/devices/line-counter.yaml"]);
    // A legal Kubernetes-style name in YAML, but `#` is a wildcard in MQTT.
    let odd = std::fs::read_to_string(node.path("devices/line-counter.yaml"))
        .unwrap()
        .replace("name: line-1", "name: \"line#2\"");
    std::fs::write(node.path("devices/odd.yaml"), odd).unwrap();
    let port = free_port();
    let _broker = Broker::start(&bin, node.dir.path(), port);
    let sub = Sub::start(port);
    node.start_edgecore_with(&["--mqtt-broker", &format!("tcp://127.0.0.1:{port}")], &[]);
    node.start_virtual_mapper();
    // Both devices report; the other device's documents keep flowing.
    wait_for("reports of the odd device", 30, || {
        let d = node.device("default/line#2")?;
        let n: i64 = prop(&d, "parts").reported.as_ref()?.parse().ok()?;
        (n >= 3).then_some(())
    });
    sub.drain();
    sub.wait(
        "a fresh twin document of the other device",
        30,
        "$hw/events/device/default/line-1/twin/update/document",
        |d| d["twin"]["parts"]["current"]["actual"]["value"].is_string(),
    );
    assert!(node.status().is_some(), "edgecore-dmi stopped");
    let log = std::fs::read_to_string(node.path("edgecore.log")).unwrap();
    assert!(log.contains("MQTT wildcard"), "{log}");
    assert!(!log.contains("critical task failed"), "{log}");
}
