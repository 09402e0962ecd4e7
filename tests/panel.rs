//! The mapper's REST data panel through the real `mapper-virtual` binary:
//! mapper-framework's paths (spec §4.6), JSON errors, PUT/POST writes that go
//! through the model's rules to the device, and the access rule (loopback
//! open; beyond loopback only with a bearer token).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::{Node, free_port, http_request, prop, wait_for};
use serde_json::Value;

const YAML: &str = r#"apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: panel-model
  namespace: default
spec:
  protocol: virtual
  properties:
    - name: n
      type: INT
      accessMode: ReadOnly
    - name: sp
      type: INT
      accessMode: ReadWrite
      minimum: "0"
      maximum: "100"
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: panel-dev
  namespace: default
spec:
  deviceModelRef:
    name: panel-model
  protocol:
    protocolName: virtual
  methods:
    - name: setSp
      description: set the set-point
      propertyNames: [sp]
  properties:
    - name: n
      collectCycle: 200
      reportToCloud: true
      visitors:
        protocolName: virtual
        configData:
          pattern: counter
    - name: sp
      collectCycle: 200
      reportToCloud: true
      visitors:
        protocolName: virtual
        configData:
          pattern: setpoint
          value: 5
"#;

fn node(extra: &[&str], env_token: Option<&str>) -> (Node, u16) {
    let mut node = Node::new(&[]);
    std::fs::write(node.path("devices/panel.yaml"), YAML).unwrap();
    node.start_edgecore();
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec!["--http-port", port_s.as_str()];
    args.extend_from_slice(extra);
    match env_token {
        Some(t) => node.start_mapper_env("virtual", &args, &[("MAPPER_HTTP_TOKEN", t)]),
        None => node.start_mapper_with("virtual", &args),
    }
    wait_for("the HTTP port", 30, || {
        http_request(port, "GET", "/healthz", &[]).map(|_| ())
    });
    (node, port)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn mapper_framework_routes_with_json_errors_and_proper_verbs() {
    let (node, port) = node(&[], None);
    let get = |path: &str| http_request(port, "GET", path, &[]).unwrap();

    let (s, h, b) = http_request(
        port,
        "GET",
        "/api/v1/ping",
        &[("X-Correlation-ID", "abc-1")],
    )
    .unwrap();
    assert_eq!(s, 200);
    assert!(
        h.iter()
            .any(|(k, v)| k == "x-correlation-id" && v == "abc-1"),
        "{h:?}"
    );
    let j = json(&b);
    assert_eq!(
        (j["apiVersion"].as_str(), j["statusCode"].as_u64()),
        (Some("v1"), Some(200))
    );
    assert!(j["Message"].as_str().unwrap().contains("running"));

    let j = wait_for("a reading", 30, || {
        let (s, _, b) = get("/api/v1/device/default/panel-dev/n");
        (s == 200).then(|| json(&b))
    });
    assert_eq!(j["Data"]["DeviceName"], "panel-dev");
    assert_eq!(j["Data"]["Type"], "int");
    assert!(
        j["Data"]["Value"].as_str().unwrap().parse::<i64>().is_ok(),
        "{j}"
    );

    let (s, _, b) = get("/api/v1/devicemethod/default/panel-dev");
    assert_eq!(s, 200);
    let m = &json(&b)["Data"]["Methods"][0];
    assert_eq!(m["Name"], "setSp");
    assert_eq!(m["Parameters"][0]["PropertyName"], "sp");
    assert_eq!(m["Parameters"][0]["ValueType"], "INT");
    assert_eq!(
        m["Path"],
        "/api/v1/devicemethod/default/panel-dev/setSp/{propertyName}/{data}"
    );

    // GET never writes.
    let (s, h, b) = get("/api/v1/devicemethod/default/panel-dev/setSp/sp/42");
    assert_eq!(s, 405, "{b}");
    assert!(h.iter().any(|(k, v)| k == "allow" && v.contains("PUT")));
    assert!(json(&b)["error"].as_str().unwrap().contains("PUT or POST"));
    // PUT writes through the model's rules to the device; the reading follows.
    let (s, _, b) = http_request(
        port,
        "PUT",
        "/api/v1/devicemethod/default/panel-dev/setSp/sp/42",
        &[],
    )
    .unwrap();
    assert_eq!(s, 200, "{b}");
    wait_for("the written value read back", 30, || {
        let d = node.device("default/panel-dev")?;
        (prop(&d, "sp").reported.as_deref() == Some("42")).then_some(())
    });
    let (s, _, b) = http_request(
        port,
        "POST",
        "/api/v1/devicemethod/default/panel-dev/setSp/sp/420",
        &[],
    )
    .unwrap();
    assert_eq!(s, 400, "{b}");
    assert!(json(&b)["error"].as_str().unwrap().contains("sp"), "{b}");
    let (s, _, _) = http_request(
        port,
        "PUT",
        "/api/v1/devicemethod/default/panel-dev/setSp/n/1",
        &[],
    )
    .unwrap();
    assert_eq!(s, 404);
    let (s, _, _) = http_request(
        port,
        "PUT",
        "/api/v1/devicemethod/default/panel-dev/nope/sp/1",
        &[],
    )
    .unwrap();
    assert_eq!(s, 404);
    let (s, _, b) = get("/api/v1/device/default/nobody/n");
    assert_eq!(s, 404);
    assert!(
        json(&b)["error"]
            .as_str()
            .unwrap()
            .contains("default/nobody")
    );

    let (s, _, b) = get("/api/v1/meta/model/default/panel-dev");
    assert_eq!(s, 200);
    let j = json(&b);
    assert_eq!(j["name"], "panel-model");
    let sp = j["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "sp")
        .unwrap();
    assert_eq!(
        (sp["accessMode"].as_str(), sp["maximum"].as_str()),
        (Some("ReadWrite"), Some("100"))
    );

    assert_eq!(get("/api/v1/database/default/panel-dev").0, 501);
    let (s, _, b) = get("/api/v1/openapi.json");
    assert_eq!(s, 200);
    assert!(json(&b)["paths"]["/api/v1/ping"].is_object());
}

#[test]
fn beyond_loopback_the_panel_needs_a_token() {
    // Bound to all interfaces without a token: the panel is closed, metrics open.
    let (_node, port) = node(&["--http-bind", "0.0.0.0"], None);
    assert_eq!(
        http_request(port, "GET", "/api/v1/ping", &[]).unwrap().0,
        403
    );
    assert_eq!(http_request(port, "GET", "/metrics", &[]).unwrap().0, 200);

    let (_node2, port) = node(&["--http-bind", "0.0.0.0"], Some("s3cret"));
    assert_eq!(
        http_request(port, "GET", "/api/v1/ping", &[]).unwrap().0,
        401
    );
    assert_eq!(
        http_request(
            port,
            "GET",
            "/api/v1/ping",
            &[("Authorization", "Bearer wrong")]
        )
        .unwrap()
        .0,
        401
    );
    assert_eq!(
        http_request(
            port,
            "GET",
            "/api/v1/ping",
            &[("Authorization", "Bearer s3cret")]
        )
        .unwrap()
        .0,
        200
    );
}

#[test]
fn idle_connections_cannot_hold_the_port() {
    let (_node, port) = node(&[], None);
    // More idle connections than the port serves, none sending a request.
    let idle: Vec<std::net::TcpStream> = (0..80)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(idle.len() >= 64, "{}", idle.len());
    // Within the header timeout (10 s) they are closed and the panel answers.
    let t0 = std::time::Instant::now();
    wait_for("the panel to answer again", 30, || {
        http_request(port, "GET", "/api/v1/ping", &[]).filter(|(s, _, _)| *s == 200)
    });
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t0.elapsed()
    );
    // Unknown paths get a JSON error too; a lower-case bearer scheme is fine.
    let (s, _, b) = http_request(port, "GET", "/api/v1/nope", &[]).unwrap();
    assert_eq!(s, 404);
    assert!(json(&b)["error"].as_str().unwrap().contains("/api/v1/nope"));
    drop(idle);
}

#[test]
fn panel_writes_follow_the_twin_value_rule() {
    let (_node, port) = node(&[], None);
    wait_for("the device", 30, || {
        http_request(port, "GET", "/api/v1/device/default/panel-dev/sp", &[])
            .filter(|(s, _, _)| *s == 200)
    });
    for bad in ["a%20b", "a%0Ab", &"9".repeat(600)] {
        let path = format!("/api/v1/devicemethod/default/panel-dev/setSp/sp/{bad}");
        let (s, _, b) = http_request(port, "PUT", &path, &[]).unwrap();
        assert_eq!(s, 400, "{bad}: {b}");
    }
}
