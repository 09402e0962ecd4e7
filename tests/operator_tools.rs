//! The operator tools of edgecore-dmi, through the real binaries: `validate`
//! (file:line:col and exit codes), `devices` filters, `mappers`, `/metrics`
//! on the admin socket, `--log-format json` and shell completions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::process::Command;

use e2e_tests::{Node, bin, metric, repo, wait_for};

fn edgecore(args: &[&str]) -> std::process::Output {
    Command::new(bin("edgecore-dmi"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn validate_reports_file_line_column_and_exits_for_ci() {
    // The shipped examples are valid.
    let examples = repo().join("examples");
    let out = edgecore(&["validate", examples.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 error(s)"));

    // A device whose register offset is out of range and whose desired value
    // is above the model's maximum, next to its model.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "\
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: meter
spec:
  protocol: modbus
  properties:
    - name: level
      type: INT
      accessMode: ReadWrite
      maximum: \"10\"
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: meter-1
spec:
  deviceModelRef:
    name: meter
  protocol:
    protocolName: modbus
    configData:
      ip: 127.0.0.1
  properties:
    - name: level
      desired:
        value: \"11\"
      visitors:
        protocolName: modbus
        configData:
          register: HoldingRegister
          offset: 65536
",
    )
    .unwrap();
    let out = edgecore(&["validate", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let f = file.display();
    assert!(
        stdout.contains(&format!(
            "{f}:27:16: error: Device default/meter-1: desired 11 of `level` is above the maximum 10"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{f}:32:19: error: Device default/meter-1: property level: offset: 65536 is outside 0..=65535"
        )),
        "{stdout}"
    );

    // A path that cannot be read: exit 2.
    let out = edgecore(&[
        "validate",
        dir.path().join("missing.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// GET `path` on the admin socket (HTTP/1.1 over a Unix socket).
fn admin_get(node: &Node, path: &str) -> String {
    let sock = node.path("edgecore-dmi.admin.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

#[test]
fn filters_mappers_metrics_and_json_logs_on_a_running_node() {
    let mut node = Node::new(&[
        "examples/devices/thermostat.yaml",
        "examples/devices/line-counter.yaml",
    ]);
    node.start_edgecore_with(&["--log-format", "json"], &[]);
    node.start_virtual_mapper();
    wait_for("both devices online", 30, || {
        let s = node.status()?;
        (s.devices.len() == 2
            && s.devices
                .iter()
                .all(|d| d.state.as_deref() == Some("online")))
        .then_some(())
    });

    // devices filters.
    let only = node.cli(&["devices", "-o", "json", "--device", "thermostat-1"]);
    let v: serde_json::Value = serde_json::from_str(&only).unwrap();
    let names: Vec<&str> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["thermostat-1"]);
    let online = node.cli(&["devices", "--protocol", "virtual", "--state", "online"]);
    assert!(
        online.contains("thermostat-1") && online.contains("line-1"),
        "{online}"
    );
    let none = node.cli(&["devices", "--state", "offline"]);
    assert!(none.contains("(no devices)"), "{none}");

    // mappers.
    let m: serde_json::Value = serde_json::from_str(&node.cli(&["mappers", "-o", "json"])).unwrap();
    let m = &m.as_array().unwrap()[0];
    assert_eq!(m["name"], "virtual-mapper");
    assert_eq!(m["protocol"], "virtual");
    assert_eq!(m["devices"], 2);
    assert!(m["last_contact"].is_string(), "{m}");
    let table = node.cli(&["mappers"]);
    assert!(table.starts_with("MAPPER"), "{table}");
    assert!(table.contains("virtual-mapper  virtual   2"), "{table}");

    // /metrics on the admin socket.
    let text = wait_for("twin reports counted", 20, || {
        let t = admin_get(&node, "/metrics");
        metric(
            &t,
            "edgecore_dmi_reports_total{kind=\"twins\",result=\"accepted\",reason=\"\"}",
        )
        .filter(|n| *n > 0.0)
        .map(|_| t)
    });
    assert_eq!(metric(&text, "edgecore_dmi_devices"), Some(2.0), "{text}");
    assert_eq!(metric(&text, "edgecore_dmi_mappers"), Some(1.0), "{text}");
    assert_eq!(
        metric(&text, "edgecore_dmi_devices_by_state{state=\"online\"}"),
        Some(2.0),
        "{text}"
    );
    assert!(
        metric(&text, "edgecore_dmi_store_bytes").unwrap_or(0.0) > 0.0,
        "{text}"
    );

    // --log-format json: every line edgecore-dmi wrote is a JSON object.
    let log = std::fs::read_to_string(node.path("edgecore.log")).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with('{') || l.contains("mapper registered"))
        .collect();
    assert!(!lines.is_empty(), "{log}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    assert!(
        lines.iter().any(|l| l.contains("mapper registered")),
        "{log}"
    );
}

#[test]
fn completions_cover_every_subcommand_and_the_mapper_flags() {
    let out = edgecore(&["completions", "bash"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "edgecore-dmi",
        "serve",
        "devices",
        "mappers",
        "validate",
        "--log-format",
    ] {
        assert!(text.contains(word), "{word} missing");
    }
    let out = Command::new(bin("mapper-virtual"))
        .args(["--completions", "zsh"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--config-file") && text.contains("--log-format"),
        "{text}"
    );
}
