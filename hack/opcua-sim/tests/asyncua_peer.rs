//! The `opcua-sim` binary serving `examples/plant.yaml`, checked from outside
//! Rust by an independent OPC-UA stack: python asyncua (in the test venv that
//! hack/setup-test-env.sh makes; `DMI_TEST_PYTHON` overrides the
//! interpreter). Browse, every type, a write and a refused write over None,
//! then Basic256Sha256 SignAndEncrypt with a user name and password.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let p = std::env::var_os("DMI_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir().join("../../target/test-env/venv/bin/python"));
    assert!(
        p.exists(),
        "{} missing: run hack/setup-test-env.sh (it creates the venv with asyncua)",
        p.display()
    );
    p
}

#[test]
fn python_asyncua_reads_writes_and_connects_securely() {
    let python = python();
    let dir = tempfile::TempDir::new().unwrap();
    let mut sim = Kill(
        Command::new(env!("CARGO_BIN_EXE_opcua-sim"))
            .arg("--config")
            .arg(crate_dir().join("examples/plant.yaml"))
            .arg("--pki-dir")
            .arg(dir.path().join("pki"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(sim.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.split_whitespace().nth(1).expect("READY <url> <cert>");
    let out = Command::new(python)
        .arg(crate_dir().join("tests/peer/asyncua_client.py"))
        .arg(url)
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: HashMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(got["namespace"], "2");
    assert_eq!(
        got["boiler"],
        "Burner,Pressure,Setpoint,Temperature,ZoneTemperatures"
    );
    let t: f64 = got["temperature"].parse().unwrap();
    assert!((62.0..=68.0).contains(&t), "{t}");
    assert_eq!(got["setpoint"], "55.5");
    assert_eq!(got["readonly"], "BadNotWritable");
    assert_eq!(got["zones"], "3");
    assert_eq!(got["serial"], "PMP-0042");
    assert_eq!(got["model"], "en/Centrifugal pump 3 kW");
    assert_eq!(got["installed"], "2024-03-01T08:00:00+00:00");
    assert_eq!(got["id"], "72962b91-fa75-4ae6-8d28-b404dc7daf63");
    assert_eq!(got["firmware"], "01020304");
    assert_eq!(got["mode"], "1");
    assert_eq!(got["secure"], "55.5", "SignAndEncrypt with operator");
}
