//! The driver against an independent server: pymodbus over TCP, and pymodbus RTU
//! over a socat PTY pair. Same map and expectations as against our simulator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mapper_modbus::ModbusDriver;
use mapper_sdk::Driver;
use serde_json::json;

struct Peer(Vec<Child>);

impl Drop for Peer {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_pymodbus(dir: &std::path::Path, args: &[&str]) -> Child {
    let map = dir.join("map.json");
    std::fs::write(&map, map_json().to_string()).unwrap();
    let mut child = Command::new(python())
        .arg(repo().join("tests/python/pymodbus_server.py"))
        .arg("--map")
        .arg(&map)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let exited = child.try_wait().unwrap();
    assert!(
        line.trim() == "READY" && exited.is_none(),
        "pymodbus did not start (exit status {exited:?})"
    );
    child
}

async fn connect_retrying(cfg: serde_json::Value) -> ModbusDriver {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ModbusDriver::connect(&config(cfg.clone())).await {
            Ok(d) => return d,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot connect to pymodbus: {e}"),
        }
    }
}

#[tokio::test]
async fn pymodbus_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _peer = Peer(vec![start_pymodbus(
        dir.path(),
        &["--tcp", &port.to_string()],
    )]);
    let d =
        connect_retrying(json!({"ip": "127.0.0.1", "port": port, "slaveID": 1, "timeout": 2000}))
            .await;
    check_reads(&d).await;
    check_writes(&d).await;
}

#[tokio::test]
async fn pymodbus_rtu_over_a_pty_pair() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("ttyV0"), dir.path().join("ttyV1"));
    let mut peer = Peer(Vec::new());
    let socat = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stderr(Stdio::null())
        .spawn()
        .expect("socat (hack/setup-test-env.sh installs it)");
    peer.0.push(socat);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(a.exists() && b.exists()) {
        assert!(Instant::now() < deadline, "socat PTYs did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
    peer.0.push(start_pymodbus(
        dir.path(),
        &["--rtu", a.to_str().unwrap(), "--baud", "38400"],
    ));
    let d = connect_retrying(json!({
        "serialPort": b.to_str().unwrap(), "baudRate": 38400, "dataBits": 8, "parity": "none", "stopBits": 1,
        "slaveID": 1, "timeout": 2000
    }))
    .await;
    check_reads(&d).await;
    check_writes(&d).await;
}
