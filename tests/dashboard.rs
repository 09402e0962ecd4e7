//! The dashboard in a real browser. edgecore-dmi runs with `--http-addr
//! 127.0.0.1:0` next to mapper-virtual; Debian's Chromium, driven by
//! playwright-core (`tests/browser/dashboard.mjs`), loads the page. What it
//! shows (devices, states, desired and reported values, ages, problems)
//! matches `edgecore-dmi devices -o json`, a value changes on screen without
//! a reload, a chart has points, and with the event stream blocked the page
//! falls back to polling and still moves. The JSON API is checked against the
//! CLI too.
//!
//! Needs `/usr/bin/chromium` (or `$CHROMIUM`), node and playwright-core in
//! `target/test-env/node`: `hack/setup-test-env.sh` installs them, and the
//! test fails, saying so, when they are missing. The screenshot goes to
//! `target/test-env/dashboard.png`; with `UPDATE_SCREENSHOT=1` also to
//! `docs/dashboard.png`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use e2e_tests::peers::installed;
use e2e_tests::{DeviceView, Node, StatusView, http_get, http_request, prop, repo, wait_for};
use serde_json::Value;

/// Devices with problems: no mapper for the protocol, a missing model, a
/// desired value out of range (rejected by the mapper) and a push target
/// that cannot work (a sink error).
const PROBLEMS: &str = r#"apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: zig-model
  namespace: default
spec:
  protocol: zigbee
  properties:
    - name: on
      type: BOOLEAN
      accessMode: ReadWrite
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: zig-1
  namespace: default
spec:
  deviceModelRef:
    name: zig-model
  protocol:
    protocolName: zigbee
  properties:
    - name: on
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: lost-1
  namespace: default
spec:
  deviceModelRef:
    name: nope-model
  protocol:
    protocolName: virtual
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: thermostat-2
  namespace: default
spec:
  deviceModelRef:
    name: thermostat-model
  protocol:
    protocolName: virtual
  properties:
    - name: temperature
      collectCycle: 1000
      reportToCloud: true
      visitors:
        protocolName: virtual
        configData:
          pattern: randomWalk
          value: 19
          min: 17
          max: 21
          step: 0.2
      pushMethod:
        mqtt:
          address: http://127.0.0.1:1883
          topic: plant/thermostat-2
          qos: 0
          retained: false
    - name: setpoint
      collectCycle: 1000
      reportToCloud: true
      desired:
        value: "99"
      visitors:
        protocolName: virtual
        configData:
          pattern: setpoint
          value: 20
"#;

/// The devices on the node, in the order the views list them.
const DEVICES: [&str; 5] = [
    "default/line-1",
    "default/lost-1",
    "default/thermostat-1",
    "default/thermostat-2",
    "default/zig-1",
];

/// What the browser test needs, or a failure that says how to get it.
fn browser_env() -> (PathBuf, PathBuf) {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let node_dir = repo().join("target/test-env/node");
    let mut missing = Vec::new();
    if !chromium.exists() {
        missing.push(format!("{} (Debian package chromium)", chromium.display()));
    }
    if !installed("node") {
        missing.push("node (Node.js 20 or later)".to_owned());
    }
    if !node_dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push(format!(
            "playwright-core in {}",
            node_dir.join("node_modules").display()
        ));
    }
    assert!(
        missing.is_empty(),
        "the dashboard browser test needs {}: run `bash hack/setup-test-env.sh` (it installs them)",
        missing.join(", ")
    );
    (chromium, node_dir)
}

/// Problems of a device as the page and `edgecore-dmi devices` list them.
fn problems(d: &DeviceView) -> Vec<String> {
    let mut out = Vec::new();
    for p in &d.properties {
        if let Some(e) = &p.error {
            out.push(format!("{}: {e}", p.name));
        }
        if let Some(e) = &p.sink_error {
            out.push(format!("{}: sink: {e}", p.name));
        }
        if let Some(r) = &p.desired_reason {
            out.push(format!("{}: desired value rejected: {r}", p.name));
        }
    }
    out.extend(d.errors.iter().cloned());
    out
}

/// What does not move between two looks: devices, states, desired values and
/// what became of them, problems, and the properties with their values when
/// they are set-points.
fn stable(s: &StatusView) -> Value {
    Value::Array(
        s.devices
            .iter()
            .map(|d| {
                serde_json::json!({
                    "device": format!("{}/{}", d.namespace, d.name),
                    "state": d.state,
                    "problems": problems(d),
                    "properties": d.properties.iter().map(|p| serde_json::json!({
                        "name": p.name,
                        "desired": p.desired,
                        "desired_status": p.desired_status,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

fn find<'a>(s: &'a StatusView, id: &str) -> &'a DeviceView {
    s.devices
        .iter()
        .find(|d| format!("{}/{}", d.namespace, d.name) == id)
        .unwrap_or_else(|| panic!("no {id} in {s:?}"))
}

/// The values `/api/v1/history` holds for a property.
fn history(port: u16, device: &str, property: &str) -> Vec<f64> {
    let body = http_get(
        port,
        &format!("/api/v1/history?device={device}&property={property}"),
    )
    .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    v["series"][0]["points"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p[1].as_f64()).collect())
        .unwrap_or_default()
}

#[test]
fn the_page_shows_what_the_cli_shows_and_follows_changes() {
    let (chromium, node_dir) = browser_env();
    let mut node = Node::new(&[
        "examples/devices/thermostat.yaml",
        "examples/devices/line-counter.yaml",
    ]);
    std::fs::write(node.path("devices/problems.yaml"), PROBLEMS).unwrap();
    node.start_edgecore_with(&["--http-addr", "127.0.0.1:0"], &[]);
    node.start_virtual_mapper();
    let addr = node.http_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    let port = addr.port();

    // Settled: reporting devices online with values, the rejected desired
    // value and the sink error reported.
    wait_for("the devices to settle", 60, || {
        let s = node.status()?;
        let ids: Vec<String> = s
            .devices
            .iter()
            .map(|d| format!("{}/{}", d.namespace, d.name))
            .collect();
        let t2 = find(&s, "default/thermostat-2");
        let ok = ids == DEVICES
            && [
                "default/line-1",
                "default/thermostat-1",
                "default/thermostat-2",
            ]
            .iter()
            .all(|id| {
                let d = find(&s, id);
                d.state.as_deref() == Some("online")
                    && d.properties.iter().all(|p| p.reported.is_some())
            })
            && prop(t2, "setpoint").desired_status.as_deref() == Some("rejected")
            && prop(t2, "temperature").sink_error.is_some()
            && prop(find(&s, "default/thermostat-1"), "setpoint")
                .desired_status
                .as_deref()
                == Some("applied");
        ok.then_some(())
    });

    // The JSON API serves the CLI's view.
    let cli = node.status().unwrap();
    let api: StatusView = serde_json::from_str(&http_get(port, "/api/v1/status").unwrap()).unwrap();
    assert_eq!(stable(&api), stable(&cli));
    assert_eq!(api.mappers, cli.mappers);
    let (code, _, _) = http_request(port, "POST", "/api/v1/status", &[]).unwrap();
    assert_eq!(code, 405, "the API is read-only");
    wait_for("the counter's history", 20, || {
        (history(port, "default/line-1", "parts").len() >= 2).then_some(())
    });

    // The page, in Chromium. For the picture in the docs, a minute of
    // values first, so the charts have something to show.
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
    let shot = repo().join("target/test-env/dashboard.png");
    let before = node.status().unwrap();
    let out = Command::new("node")
        .arg(repo().join("tests/browser/dashboard.mjs"))
        .args(["--url", &format!("http://{addr}/")])
        .args(["--watch", "default/line-1/parts"])
        .args(["--devices", &DEVICES.len().to_string()])
        .arg("--screenshot")
        .arg(&shot)
        .env("DASHBOARD_NODE_DIR", &node_dir)
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let after = node.status().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser script failed:\n{stderr}");
    let page: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    eprintln!("screenshot: {}", shot.display());

    // Nothing went wrong in the page.
    assert_eq!(page["consoleErrors"], serde_json::json!([]), "{page}");

    // The page lists what the CLI lists, as the CLI's looks before and after
    // the browser's did.
    let shown = page["after"].as_array().unwrap();
    let ids: Vec<&str> = shown
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(ids, DEVICES);
    let expected = stable(&after);
    assert_eq!(stable(&before), expected, "the node moved during the test");
    for (d, want) in shown.iter().zip(expected.as_array().unwrap()) {
        let id = d["device"].as_str().unwrap();
        assert_eq!(d["state"], want["state"].as_str().unwrap_or(""), "{id}");
        let state_text = want["state"].as_str().unwrap_or("no state");
        assert_eq!(d["stateText"], state_text, "{id}");
        assert_eq!(d["problems"], want["problems"], "{id}");
        assert_eq!(d["problemTexts"], want["problems"], "{id}");
        let props = d["properties"].as_array().unwrap();
        let want_props = want["properties"].as_array().unwrap();
        assert_eq!(props.len(), want_props.len(), "{id}");
        let (b, a) = (find(&before, id), find(&after, id));
        for (p, w) in props.iter().zip(want_props) {
            let name = w["name"].as_str().unwrap();
            assert_eq!(p["name"], name, "{id}");
            assert_eq!(
                p["desired"],
                w["desired"].as_str().unwrap_or(""),
                "{id} {name}"
            );
            let status = w["desired_status"].as_str().unwrap_or("");
            assert_eq!(p["desiredStatus"], status, "{id} {name}");
            if let Some(desired) = w["desired"].as_str() {
                // Shown as the CLI shows it: "22 (applied)", "(sent)" while
                // the mapper has not said.
                let shown_status = if status.is_empty() { "sent" } else { status };
                assert_eq!(
                    p["desiredText"],
                    format!("{desired}({shown_status})"),
                    "{id} {name}"
                );
            }
            // The value shown is the CLI's, or, for a value that moves, one
            // the node reported (its history holds every numeric one).
            let shown_value = p["reported"].as_str().unwrap();
            let text = p["reportedText"].as_str().unwrap();
            assert_eq!(
                text,
                if shown_value.is_empty() {
                    "-"
                } else {
                    shown_value
                },
                "{id} {name}"
            );
            let (rb, ra) = (&prop(b, name).reported, &prop(a, name).reported);
            let as_cli = |r: &Option<String>| r.as_deref().unwrap_or("") == shown_value;
            if !as_cli(rb) && !as_cli(ra) {
                let v: f64 = shown_value.parse().unwrap_or_else(|_| {
                    panic!("{id} {name}: {shown_value:?}, the CLI says {rb:?} then {ra:?}")
                });
                assert!(
                    history(port, id, name).contains(&v),
                    "{id} {name}: {v} was never reported (the CLI says {rb:?} then {ra:?})"
                );
            }
            // Ages are fresh for properties that report every second or two.
            if ra.is_some() {
                let age = p["ageMs"].as_f64().unwrap_or(f64::MAX);
                assert!(age < 10_000.0, "{id} {name}: age {age} ms");
            } else {
                assert!(p["ageMs"].is_null(), "{id} {name}");
            }
        }
    }
    // A device that reports was seen recently; one that cannot was never.
    let card = |id: &str| shown.iter().find(|d| d["device"] == id).unwrap();
    assert!(card("default/line-1")["lastSeenMs"].as_f64().unwrap() < 5_000.0);
    assert!(card("default/zig-1")["lastSeenMs"].is_null());

    // Charts: the counter's has points.
    let parts = card("default/line-1")["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "parts")
        .unwrap();
    assert!(parts["points"].as_u64().unwrap() >= 2, "{parts}");

    // Live: the counter moved on screen, without a reload, through the
    // event stream.
    assert_eq!(page["mode"], "live", "{page}");
    assert_eq!(page["notReloaded"], true);
    assert_eq!(page["navigations"], 1);
    let (from, to) = (&page["change"]["from"], &page["change"]["to"]);
    let n = |v: &Value| v.as_str().unwrap().parse::<i64>().unwrap();
    assert!(n(to) > n(from), "{page}");
    assert!(page["change"]["ms"].as_u64().unwrap() < 5_000, "{page}");

    // Without the event stream the page polls and still moves.
    let fb = &page["fallback"];
    assert_eq!(fb["mode"], "polling", "{page}");
    assert!(n(&fb["to"]) > n(&fb["from"]), "{page}");
    assert_eq!(fb["devices"], DEVICES.len());

    assert!(shot.exists());
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        std::fs::create_dir_all(repo().join("docs")).unwrap();
        std::fs::copy(&shot, repo().join("docs/dashboard.png")).unwrap();
    }
}
