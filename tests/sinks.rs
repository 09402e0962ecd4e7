//! The data plane end to end: a YAML device with a `pushMethod`/`dbMethod`,
//! edgecore-dmi, the real `mapper-virtual` binary, and the real target
//! servers (mosquitto, redis-server, MariaDB, VictoriaMetrics as the InfluxDB
//! v2 line-protocol endpoint). An HTTP receiver in this process stands in for
//! the HTTP push, OTLP/HTTP and TDengine REST targets (no OpenTelemetry
//! collector or TDengine server runs here; it checks the requests' form).
//!
//! The outage tests take the target down for `SINK_OUTAGE_SECS` (default 60)
//! while the device produces 10 samples/s (a counter, so the values are their
//! own sequence numbers), bring it back, and check that every value arrived
//! exactly once and in order; the `_kill` variants also kill -9 the mapper in
//! the middle of the outage and start it again on the same spool.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_tests::peers::{HttpReceiver, Peer, installed, run};
use e2e_tests::{Node, http_get, prop, wait_for};

const DEVICE: &str = "sink-dev";

fn outage_secs() -> u64 {
    std::env::var("SINK_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

/// A model and device: property `n`, a counter read every 100 ms (reported
/// as it is read), pushed with `push` (YAML under `pushMethod:`, indented by
/// 8 spaces).
fn device_yaml(push: &str) -> String {
    format!(
        r#"apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: sink-model
  namespace: default
spec:
  protocol: virtual
  properties:
    - name: n
      type: INT
      accessMode: ReadOnly
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: {DEVICE}
  namespace: default
spec:
  deviceModelRef:
    name: sink-model
  protocol:
    protocolName: virtual
  properties:
    - name: n
      collectCycle: 100
      reportCycle: 100
      reportToCloud: true
      visitors:
        protocolName: virtual
        configData:
          pattern: counter
          value: 0
          max: 1000000000
      pushMethod:
{push}
"#
    )
}

/// A node running edgecore-dmi with the device and a virtual mapper with its
/// spool in the node's directory.
fn node_with(push: &str) -> Node {
    node_with_env(push, &[])
}

/// As [`node_with`], with environment variables for the mapper.
fn node_with_env(push: &str, env: &[(&str, &str)]) -> Node {
    let mut node = Node::new(&[]);
    std::fs::write(node.path("devices/sink.yaml"), device_yaml(push)).unwrap();
    node.start_edgecore();
    let spool = node.path("mapper-state");
    node.start_mapper_env("virtual", &["--state-dir", spool.to_str().unwrap()], env);
    node
}

fn start_mapper(node: &mut Node) {
    let spool = node.path("mapper-state");
    node.start_mapper_with("virtual", &["--state-dir", spool.to_str().unwrap()]);
}

/// The counter's latest twin value in edgecore-dmi.
fn twin(node: &Node) -> Option<i64> {
    let d = node.device(&format!("default/{DEVICE}"))?;
    prop(&d, "n").reported.as_ref()?.parse().ok()
}

/// Checks that `got` is `runs` runs of consecutive values each starting at 0
/// (a restarted mapper's counter starts again at 0): nothing lost, nothing
/// twice, in order. The one exception is the delivery in flight when the
/// target went down (values up to `boundary`): its acknowledgement may have
/// been lost with the connection, and at-least-once delivery (MQTT QoS 1, a
/// SQL commit whose answer never came) sends it again. Returns the runs' last
/// values.
fn check_sequence(what: &str, got: &[i64], runs: usize, boundary: i64) -> Vec<i64> {
    assert!(!got.is_empty(), "{what}: nothing arrived");
    let mut lasts = Vec::new();
    let mut expect = 0;
    let mut repeated = Vec::new();
    for (i, v) in got.iter().enumerate() {
        if *v == 0 && i > 0 && lasts.is_empty() && expect > boundary {
            lasts.push(got[i - 1]);
            expect = 0;
        }
        if lasts.is_empty() && *v < expect && *v <= boundary {
            repeated.push(*v);
            continue;
        }
        assert_eq!(
            *v,
            expect,
            "{what}: value #{i} is {v}, expected {expect} (lost, repeated or out of order); around it: {:?}",
            &got[i.saturating_sub(5)..(i + 5).min(got.len())]
        );
        expect += 1;
    }
    lasts.push(*got.last().unwrap());
    assert_eq!(lasts.len(), runs, "{what}: runs ending at {lasts:?}");
    if !repeated.is_empty() {
        eprintln!("{what}: sent again after the outage began (in flight): {repeated:?}");
    }
    lasts
}

/// Runs the outage scenario against `peer`, reading what arrived with `read`.
fn outage(peer: &mut Peer, push: &str, kill_mapper: bool, read: &dyn Fn(&Peer) -> Vec<i64>) {
    let what = format!("{} (kill -9: {kill_mapper})", peer.dir.display());
    let mut node = node_with(push);
    wait_for("samples at the target", 60, || {
        (read(peer).len() >= 20).then_some(())
    });
    // What has arrived, and what arrives while the target shuts down (at
    // 10/s, about a second's worth), may arrive twice; nothing after.
    let boundary = read(peer).last().copied().unwrap_or(0) + 10;
    peer.down();
    let secs = outage_secs();
    let mut before_kill = None;
    if kill_mapper {
        std::thread::sleep(Duration::from_secs(secs / 2));
        before_kill = twin(&node);
        node.kill_mappers();
        start_mapper(&mut node);
        std::thread::sleep(Duration::from_secs(secs - secs / 2));
    } else {
        std::thread::sleep(Duration::from_secs(secs));
    }
    let during = twin(&node).unwrap();
    peer.up();
    // Caught up: the target has everything up to a value read after the
    // outage ended.
    std::thread::sleep(Duration::from_secs(1));
    let after = twin(&node).unwrap();
    let got = wait_for("the queued samples to arrive", 120, || {
        let got = read(peer);
        let runs = got.windows(2).filter(|w| w[1] < w[0] && w[1] == 0).count() + 1;
        let expected_runs = if kill_mapper { 2 } else { 1 };
        (runs == expected_runs && got.last().is_some_and(|l| *l >= after)).then_some(got)
    });
    if std::env::var_os("SINK_DEBUG").is_some() {
        eprintln!(
            "{}",
            std::fs::read_to_string(peer.dir.join("server.log")).unwrap_or_default()
        );
    }
    let lasts = check_sequence(&what, &got, if kill_mapper { 2 } else { 1 }, boundary);
    if let Some(b) = before_kill {
        // Everything the killed mapper had read (and reported) was spooled.
        assert!(
            lasts[0] >= b,
            "{what}: the killed mapper reported {b} but only up to {} arrived",
            lasts[0]
        );
    }
    assert!(
        got.len() as u64 >= secs * 5,
        "{what}: {} values for a {secs} s outage at 10/s (twin during the outage: {during})",
        got.len()
    );
}

fn need(programs: &[&str]) -> bool {
    let missing: Vec<_> = programs.iter().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{missing:?} not installed; hack/setup-test-env.sh installs them"
    );
    eprintln!("SKIP: {missing:?} not installed (hack/setup-test-env.sh installs them)");
    false
}

// --- MQTT ---------------------------------------------------------------

/// A `mosquitto_sub` with a persistent QoS 1 session, so what the broker
/// accepts while it is briefly away is kept for it.
struct Subscriber {
    child: Child,
    out: std::path::PathBuf,
}

impl Subscriber {
    fn start(peer: &Peer, topic: &str) -> Self {
        let out = peer.dir.join("received.txt");
        let child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-q",
                "1",
                "-c",
                "-i",
                "e2e-sub",
                "-F",
                "%p",
                "-t",
                topic,
                "-p",
            ])
            .arg(peer.port.to_string())
            .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, out }
    }

    fn values(&self) -> Vec<i64> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|j| j["value"].as_i64())
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mqtt_outage(kill: bool) {
    if !need(&["mosquitto", "mosquitto_sub"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Peer::mosquitto(dir.path());
    let sub = Subscriber::start(&broker, "edge/sink");
    std::thread::sleep(Duration::from_millis(300));
    let push = format!(
        "        mqtt:\n          address: tcp://127.0.0.1:{}\n          topic: edge/sink\n          qos: 1\n          retained: false",
        broker.port
    );
    let sub = Arc::new(Mutex::new(sub));
    let s = sub.clone();
    outage(&mut broker, &push, kill, &move |_| {
        s.lock().unwrap().values()
    });
}

#[test]
fn mqtt_outage_loses_nothing() {
    mqtt_outage(false);
}

#[test]
fn mqtt_outage_with_mapper_kill_loses_nothing() {
    mqtt_outage(true);
}

#[test]
fn mqtt_json_document_and_one_connection() {
    if !need(&["mosquitto", "mosquitto_sub"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Peer::mosquitto(dir.path());
    let sub = Subscriber::start(&broker, "edge/doc");
    std::thread::sleep(Duration::from_millis(300));
    let push = format!(
        "        mqtt:\n          address: tcp://127.0.0.1:{}\n          topic: edge/doc\n          qos: 0\n          retained: true",
        broker.port
    );
    let _node = node_with(&push);
    let line = wait_for("a document", 30, || {
        std::fs::read_to_string(&sub.out)
            .ok()?
            .lines()
            .nth(3)
            .map(str::to_owned)
    });
    let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(doc["device"], DEVICE);
    assert_eq!(doc["namespace"], "default");
    assert_eq!(doc["property"], "n");
    assert_eq!(doc["type"], "int");
    assert!(doc["value"].is_i64(), "{doc}");
    assert!(
        doc["timestamp"].as_u64().unwrap() > 1_600_000_000_000,
        "{doc}"
    );
    // Retained: a late subscriber gets the last value at once.
    let late = run(Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-t",
            "edge/doc",
            "-C",
            "1",
            "-W",
            "5",
            "-p",
        ])
        .arg(broker.port.to_string()));
    assert!(late.contains("\"property\":\"n\""), "{late}");
    // One connection for all publishes: the broker log shows one client
    // connect from the mapper however many samples went out.
    let log = std::fs::read_to_string(broker.dir.join("server.log")).unwrap_or_default();
    let connects = log
        .lines()
        .filter(|l| l.contains("New client connected") && l.contains("virtual-mapper"))
        .count();
    assert_eq!(connects, 1, "{log}");
}

/// Subscribes with `mosquitto_sub` and returns the first `n` payloads.
fn receive(args: &[&str], n: usize) -> String {
    run(Command::new("mosquitto_sub")
        .args(args)
        .args(["-C", &n.to_string(), "-W", "20"]))
}

#[test]
fn mqtt5_with_credentials_from_the_environment() {
    if !need(&["mosquitto", "mosquitto_sub", "mosquitto_passwd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Peer::mosquitto_secured(dir.path(), false);
    let port = broker.port.to_string();
    let push = format!(
        "        mqtt:\n          address: tcp://127.0.0.1:{port}?version=5\n          topic: edge/v5\n          qos: 1\n          retained: false"
    );
    let _node = node_with_env(
        &push,
        &[("MQTT_USERNAME", "user"), ("MQTT_PASSWORD", "password")],
    );
    let got = receive(
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-u",
            "user",
            "-P",
            "password",
            "-t",
            "edge/v5",
        ],
        3,
    );
    assert_eq!(got.lines().count(), 3, "{got}");
    let log = std::fs::read_to_string(broker.dir.join("server.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("virtual-mapper") && l.contains("p5") && l.contains("u'user'")),
        "the mapper did not connect with MQTT 5 as `user`: {log}"
    );
}

#[test]
fn mqtt_bad_credentials_are_logged_as_a_refusal() {
    if !need(&["mosquitto", "mosquitto_sub", "mosquitto_passwd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Peer::mosquitto_secured(dir.path(), false);
    let push = format!(
        "        mqtt:\n          address: tcp://user:wrong@127.0.0.1:{}\n          topic: edge/auth\n          qos: 1\n          retained: false",
        broker.port
    );
    let node = node_with(&push);
    wait_for("the refusal in the log", 30, || {
        node.logs()
            .lines()
            .find(|l| l.contains("delivery failed") && l.contains("refused:"))
            .map(str::to_owned)
    });
}

#[test]
fn mqtt_over_tls_with_a_private_ca() {
    if !need(&["mosquitto", "mosquitto_sub", "mosquitto_passwd", "openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Peer::mosquitto_secured(dir.path(), true);
    let port = broker.port.to_string();
    let ca = broker.dir.join("ca.pem");
    let push = format!(
        "        mqtt:\n          address: ssl://user:password@127.0.0.1:{port}\n          topic: edge/tls\n          qos: 1\n          retained: false"
    );
    let _node = node_with_env(&push, &[("MQTT_CA_FILE", ca.to_str().unwrap())]);
    let got = receive(
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "--cafile",
            ca.to_str().unwrap(),
            "-u",
            "user",
            "-P",
            "password",
            "-t",
            "edge/tls",
        ],
        3,
    );
    let values: Vec<i64> = got
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["value"].as_i64())
        .collect();
    assert_eq!(values.len(), 3, "{got}");
}

// --- Redis --------------------------------------------------------------

fn redis_values(peer: &Peer) -> Vec<i64> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "--raw", "-p"])
        .arg(peer.port.to_string())
        .args(["ZRANGE", DEVICE, "0", "-1"])
        .output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|j| j["Value"].as_str()?.parse().ok())
        .collect()
}

fn redis_outage(kill: bool) {
    if !need(&["redis-server", "redis-cli"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Peer::redis(dir.path());
    let push = format!(
        "        dbMethod:\n          redis:\n            redisClientConfig:\n              addr: 127.0.0.1:{}\n              db: 0\n              poolsize: 4\n              minIdleConns: 1",
        redis.port
    );
    outage(&mut redis, &push, kill, &redis_values);
}

#[test]
fn redis_outage_loses_nothing() {
    redis_outage(false);
}

#[test]
fn redis_outage_with_mapper_kill_loses_nothing() {
    redis_outage(true);
}

// --- MySQL (MariaDB) ----------------------------------------------------

fn mysql_values(peer: &Peer) -> Vec<i64> {
    let out = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-u", "root", "-N", "-D", "edge", "-P"])
        .arg(peer.port.to_string())
        .args([
            "-e",
            &format!("SELECT field FROM `default/{DEVICE}/n` ORDER BY id"),
        ])
        .output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn mysql_push(port: u16) -> String {
    format!(
        "        dbMethod:\n          mysql:\n            mysqlClientConfig:\n              addr: 127.0.0.1:{port}\n              database: edge\n              userName: root"
    )
}

fn mysql_outage(kill: bool) {
    if !need(&["mariadbd", "mariadb-install-db", "mariadb"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut db = Peer::mariadb(dir.path());
    let push = mysql_push(db.port);
    outage(&mut db, &push, kill, &mysql_values);
}

#[test]
fn mysql_outage_loses_nothing() {
    mysql_outage(false);
}

#[test]
fn mysql_outage_with_mapper_kill_loses_nothing() {
    mysql_outage(true);
}

#[test]
fn mysql_table_has_mapper_frameworks_layout() {
    if !need(&["mariadbd", "mariadb-install-db", "mariadb"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Peer::mariadb(dir.path());
    let _node = node_with(&mysql_push(db.port));
    wait_for("rows", 30, || (mysql_values(&db).len() >= 3).then_some(()));
    let cols = db.sql(&format!(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema='edge' AND table_name='default/{DEVICE}/n' ORDER BY ordinal_position"
    ));
    let cols: Vec<_> = cols
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(cols, ["id int", "ts datetime", "field text"]);
    let ts = db.sql(&format!(
        "SELECT ts FROM `default/{DEVICE}/n` ORDER BY id LIMIT 1"
    ));
    assert!(ts.trim().starts_with("20"), "{ts}");
}

// --- InfluxDB v2 line protocol (VictoriaMetrics) ------------------------

fn vm_values(peer: &Peer) -> Vec<i64> {
    let _ = http_get(peer.port, "/internal/force_flush");
    let Some(body) = http_get(
        peer.port,
        "/api/v1/export?match%5B%5D=%7B__name__%3D%22sinkm_n%22%7D",
    ) else {
        return Vec::new();
    };
    let mut points: Vec<(i64, i64)> = Vec::new();
    for line in body.lines() {
        let Ok(j) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(vs), Some(ts)) = (j["values"].as_array(), j["timestamps"].as_array()) else {
            continue;
        };
        for (v, t) in vs.iter().zip(ts) {
            points.push((t.as_i64().unwrap_or(0), v.as_f64().unwrap_or(-1.0) as i64));
        }
    }
    points.sort();
    points.into_iter().map(|(_, v)| v).collect()
}

fn influx_push(port: u16) -> String {
    format!(
        "        dbMethod:\n          influxdb2:\n            influxdb2ClientConfig:\n              url: http://127.0.0.1:{port}\n              org: edge\n              bucket: plant\n            influxdb2DataConfig:\n              measurement: sinkm\n              tag:\n                line: a\n              fieldKey: n"
    )
}

#[test]
fn influxdb2_outage_loses_nothing() {
    if !need(&["victoria-metrics"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut vm = Peer::victoria_metrics(dir.path());
    let push = influx_push(vm.port);
    outage(&mut vm, &push, false, &vm_values);
}

#[test]
fn influxdb2_outage_with_mapper_kill_loses_nothing() {
    if !need(&["victoria-metrics"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut vm = Peer::victoria_metrics(dir.path());
    let push = influx_push(vm.port);
    outage(&mut vm, &push, true, &vm_values);
}

// --- HTTP push, OTLP/HTTP and TDengine REST (local receiver) ---------------

#[test]
fn http_push_posts_documents_and_retries_refusals() {
    let rx = HttpReceiver::start("ok");
    let push = format!(
        "        http:\n          hostName: http://127.0.0.1\n          port: {}\n          requestPath: /readings\n          timeout: 2000",
        rx.port
    );
    let _node = node_with(&push);
    wait_for("posts", 30, || (rx.taken().len() >= 5).then_some(()));
    // The endpoint refuses for a while (503): nothing is lost, order is kept.
    rx.answer(503);
    std::thread::sleep(Duration::from_secs(3));
    rx.answer(200);
    let values = wait_for("posts after the refusals", 60, || {
        let v: Vec<i64> = rx
            .taken()
            .iter()
            .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
            .filter_map(|j| j["value"].as_i64())
            .collect();
        (v.len() >= 60).then_some(v)
    });
    check_sequence("http push", &values, 1, 0);
    let r = &rx.taken()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/readings"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (doc["device"].as_str(), doc["property"].as_str()),
        (Some(DEVICE), Some("n"))
    );
}

#[test]
fn otel_push_exports_gauges() {
    let rx = HttpReceiver::start("{}");
    let push = format!(
        "        otel:\n          endpointURL: http://127.0.0.1:{}/v1/metrics",
        rx.port
    );
    let _node = node_with(&push);
    let r = wait_for("an export", 30, || rx.taken().into_iter().next());
    assert_eq!(r.path, "/v1/metrics");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let rm = &j["resourceMetrics"][0];
    assert_eq!(
        rm["resource"]["attributes"][0]["value"]["stringValue"],
        format!("default/{DEVICE}")
    );
    let metric = &rm["scopeMetrics"][0]["metrics"][0];
    assert_eq!(metric["name"], "n");
    assert!(
        metric["gauge"]["dataPoints"][0]["asDouble"].is_number(),
        "{metric}"
    );
}

#[test]
fn tdengine_rows_go_through_the_rest_api() {
    let rx = HttpReceiver::start(r#"{"code":0,"column_meta":[],"data":[],"rows":0}"#);
    let push = format!(
        "        dbMethod:\n          TDEngine:\n            TDEngineClientConfig:\n              addr: 127.0.0.1:{}\n              dbName: plant",
        rx.port
    );
    let _node = node_with(&push);
    wait_for("an insert", 30, || (rx.taken().len() >= 2).then_some(()));
    let taken = rx.taken();
    assert!(taken.iter().all(|r| r.path == "/rest/sql"));
    // Default credentials root:taosdata, as mapper-framework's DSN.
    assert_eq!(
        taken[0].header("authorization"),
        Some("Basic cm9vdDp0YW9zZGF0YQ==")
    );
    assert!(
        taken[0]
            .body
            .starts_with("CREATE STABLE IF NOT EXISTS plant.default_sink_dev "),
        "{}",
        taken[0].body
    );
    assert!(
        taken[1].body.starts_with(
            "INSERT INTO plant.default_sink_dev_n USING plant.default_sink_dev TAGS ('n') VALUES ("
        ),
        "{}",
        taken[1].body
    );
}

#[test]
fn a_sink_that_cannot_work_is_named_and_the_twin_keeps_reporting() {
    let closed = e2e_tests::free_port();
    let push = format!(
        "        mqtt:\n          address: http://127.0.0.1:1883\n          topic: a/b\n          qos: 1\n          retained: false\n        dbMethod:\n          redis:\n            redisClientConfig:\n              addr: 127.0.0.1:notaport\n              db: 0\n          mysql:\n            mysqlClientConfig:\n              addr: 127.0.0.1:{closed}\n              database: edge\n              userName: root"
    );
    let node = node_with(&push);
    wait_for("twins", 30, || twin(&node).filter(|n| *n >= 5));
    let logs = node.logs();
    for want in ["unknown scheme `http`", "bad port `notaport`"] {
        let line = logs
            .lines()
            .find(|l| l.contains(want))
            .unwrap_or_else(|| panic!("no log line with {want}:\n{logs}"));
        assert!(
            line.contains("device=default/sink-dev") && line.contains("property=n"),
            "{line}"
        );
    }
    // edgecore-dmi shows the same under the property (the mapper reports it
    // in the twin's metadata), with the unreachable database too.
    let shown = wait_for("the sink problems in edgecore-dmi", 30, || {
        let d = node.device(&format!("default/{DEVICE}"))?;
        let e = prop(&d, "n").sink_error.clone()?;
        e.contains(&format!("mysql root@127.0.0.1:{closed}/edge"))
            .then_some(e)
    });
    for want in [
        "unknown scheme `http`",
        "bad port `notaport`",
        "failing since",
        "records waiting",
    ] {
        assert!(shown.contains(want), "{want} not in {shown}");
    }
    let table = node.cli(&["devices"]);
    assert!(table.contains("n: sink: "), "{table}");
}
