//! Wire format checked from outside Rust: a Python grpcio peer (stubs generated
//! from our api.proto at test time, `:authority` set to the percent-encoded
//! socket path as grpc-go sends it) plays a Go mapper against edgecore-dmi and
//! EdgeCore against a Rust mapper. See tests/python/interop.py.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use e2e_tests::{Node, bin, prop, repo, wait_for};

fn python() -> PathBuf {
    let p = std::env::var_os("DMI_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/test-env/venv/bin/python"));
    assert!(
        p.exists(),
        "{} missing: run hack/test.sh (it creates the venv with grpcio)",
        p.display()
    );
    p
}

fn run_py(node: &Node, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(repo().join("tests/python/interop.py"))
        .arg("--proto")
        .arg(repo().join("dmi-proto/proto/api.proto"))
        .arg("--workdir")
        .arg(node.path("py"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python peer failed:\n{text}");
    text
}

#[test]
fn python_plays_a_go_mapper_against_edgecore_dmi() {
    let mut node = Node::new(&["examples/devices/thermostat.yaml"]);
    // The model says protocol virtual; the Python mapper registers for it.
    node.start_edgecore();
    let sock = node.dmi_sock();
    let out = run_py(
        &node,
        &[
            "go-mapper",
            "--edgecore",
            sock.to_str().unwrap(),
            "--socket",
            node.path("py.sock").to_str().unwrap(),
        ],
    );
    assert!(out.contains("OK go-mapper"), "{out}");
    // What the Python mapper reported is visible through the CLI.
    let d = wait_for("python report visible", 10, || {
        node.device("default/thermostat-1")
    });
    assert_eq!(prop(&d, "temperature").reported.as_deref(), Some("23.5"));
    assert_eq!(d.state.as_deref(), Some("online"));
    // A Go mapper sends no status metadata: reported equal to desired is applied.
    assert_eq!(
        prop(&d, "setpoint").desired_status.as_deref(),
        Some("applied")
    );
    let table = node.cli(&["devices"]);
    assert!(table.contains("22 (applied)"), "{table}");
}

#[test]
fn python_plays_edgecore_against_a_rust_mapper() {
    let node = Node::new(&[]);
    let edgecore = node.path("fake-edgecore.sock");
    let mapper_sock = node.path("virtual.sock");
    let mut mapper = Command::new(bin("mapper-virtual"))
        .arg("--socket-path")
        .arg(&mapper_sock)
        .arg("--edgecore-sock")
        .arg(&edgecore)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(node.path("mapper.log")).unwrap())
        .spawn()
        .unwrap();
    let out = run_py(
        &node,
        &[
            "edgecore",
            "--listen",
            edgecore.to_str().unwrap(),
            "--mapper",
            mapper_sock.to_str().unwrap(),
        ],
    );
    let _ = mapper.kill();
    let _ = mapper.wait();
    assert!(
        out.contains("OK edgecore"),
        "{out}\n{}",
        std::fs::read_to_string(node.path("mapper.log")).unwrap_or_default()
    );
}

/// A stock Go mapper answers a device it cannot take with a plain Go error
/// (gRPC `Unknown`). That refusal stays with that device: the mapper is not
/// taken for unreachable, and a device added later is dispatched at once.
#[test]
fn a_go_mappers_refusal_of_one_device_does_not_hold_up_the_others() {
    let mut node = Node::new(&["examples/devices/thermostat.yaml"]);
    let refused = std::fs::read_to_string(repo().join("examples/devices/thermostat.yaml"))
        .unwrap()
        .split("---")
        .find(|d| d.contains("kind: Device\n"))
        .unwrap()
        .replace("name: thermostat-1", "name: refuse-1");
    std::fs::write(node.path("devices/refuse.yaml"), &refused).unwrap();
    node.start_edgecore();
    let log = node.path("py-refusing.log");
    let mut py = Command::new(python())
        .arg(repo().join("tests/python/interop.py"))
        .arg("--proto")
        .arg(repo().join("dmi-proto/proto/api.proto"))
        .arg("--workdir")
        .arg(node.path("py"))
        .args(["refusing-mapper", "--edgecore"])
        .arg(node.dmi_sock())
        .arg("--socket")
        .arg(node.path("py.sock"))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(node.path("py-refusing.err")).unwrap())
        .spawn()
        .unwrap();
    let calls = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("refusal and first device", 15, || {
        let c = calls();
        (c.contains("REFUSED RegisterDevice default/refuse-1")
            && c.contains("CALL RegisterDevice default/thermostat-1"))
        .then_some(())
    });
    // A device added after the refusal goes out at once.
    std::fs::write(
        node.path("devices/late.yaml"),
        refused.replace("name: refuse-1", "name: z-late-1"),
    )
    .unwrap();
    wait_for("late device dispatched", 5, || {
        calls()
            .contains("CALL RegisterDevice default/z-late-1")
            .then_some(())
    });
    let status = node.status().unwrap();
    let d = status
        .devices
        .iter()
        .find(|d| d.name == "refuse-1")
        .unwrap();
    assert!(
        d.errors
            .iter()
            .any(|e| e.contains("refused the device") && e.contains("unsupported visitor")),
        "{:?}",
        d.errors
    );
    let m = status
        .mappers
        .iter()
        .find(|m| m.record.name == "py-mapper")
        .unwrap();
    assert_eq!(m.last_error, None, "a refusal is not unreachability");
    assert!(node.cli(&["devices"]).contains("refused the device"));
    let _ = py.kill();
    let _ = py.wait();
}
