//! The driver against an independent server: pymodbus over TCP, and pymodbus RTU
//! over a socat PTY pair. Same map and expectations as against our simulator.
//! And a pymodbus device with holes in its map (`python/sparse_server.py`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mapper_modbus::ModbusDevice;
use mapper_sdk::{DeviceClient, Driver};
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
    start_script(
        dir,
        &repo().join("tests/python/pymodbus_server.py"),
        &map_json(),
        args,
    )
}

/// Runs a pymodbus server script with `--map` (written from `map`) and `args`,
/// and waits for its READY line.
fn start_script(
    dir: &std::path::Path,
    script: &std::path::Path,
    map_json: &serde_json::Value,
    args: &[&str],
) -> Child {
    let map = dir.join("map.json");
    std::fs::write(&map, map_json.to_string()).unwrap();
    let mut child = Command::new(python())
        .arg(script)
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

async fn connect_retrying(cfg: serde_json::Value) -> ModbusDevice {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match common::driver().connect(&config(cfg.clone())).await {
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

#[tokio::test]
async fn pymodbus_sparse_map_holes_are_split_out_and_remembered() {
    use mapper_modbus::{ModbusAddress, Table};
    use mapper_sdk::{DriverError, PropertyType, Value};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Holding 11174, 11176, 11177 exist, 11175 does not (the field case). The
    // coils end at 47: a read of 47..49 runs past the table's end.
    let map = json!({
        "holding": [[11174, [230]], [11176, [50, 7]]],
        "input": [[0, [1]]],
        "coils": [[32, vec![1; 16]]],
        "discrete": [[0, vec![0; 16]]],
    });
    let _peer = Peer(vec![start_script(
        dir.path(),
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/sparse_server.py"),
        &map,
        &["--tcp", &port.to_string()],
    )]);
    let d =
        connect_retrying(json!({"ip": "127.0.0.1", "port": port, "slaveID": 1, "timeout": 2000}))
            .await;
    let props: Vec<ModbusAddress> = [11174u16, 11176, 11177]
        .into_iter()
        .map(|o| {
            address(
                json!({"register": "HoldingRegister", "offset": o, "limit": 1}),
                Some(PropertyType::Int),
            )
        })
        .chain([47u16, 48].into_iter().map(|o| {
            address(
                json!({"register": "CoilRegister", "offset": o}),
                Some(PropertyType::Boolean),
            )
        }))
        .collect();
    let refs: Vec<&ModbusAddress> = props.iter().collect();
    let want = [
        Some(Value::Int(230)),
        Some(Value::Int(50)),
        Some(Value::Int(7)),
        Some(Value::Bool(true)),
        None,
    ];
    let mut costs = Vec::new();
    for _ in 0..3 {
        let before = d.requests();
        let r = d.read_batch(&refs).await;
        costs.push(d.requests() - before);
        let got: Vec<Option<Value>> = r.iter().map(|x| x.as_ref().ok().cloned()).collect();
        assert_eq!(got, want);
        match &r[4] {
            Err(DriverError::Device(f)) => assert_eq!(f.code, Some(2), "IllegalDataAddress"),
            other => panic!("coil 48: {other:?}"),
        }
    }
    // Tick 1: holding 11174..11177 refused, then 11174 and 11176..11177; coils
    // 47..48 refused, then 47 and 48 (refused on its own). Later ticks plan
    // around what was learned.
    assert_eq!(costs, vec![6, 4, 4]);
    let holes = d.holes();
    assert_eq!(holes.ranges(Table::Holding), vec![11175..11176]);
    assert_eq!(holes.ranges(Table::Coil), vec![48..49]);
    // A new connection starts from nothing.
    let fresh =
        connect_retrying(json!({"ip": "127.0.0.1", "port": port, "slaveID": 1, "timeout": 2000}))
            .await;
    assert!(fresh.holes().is_empty());
}
