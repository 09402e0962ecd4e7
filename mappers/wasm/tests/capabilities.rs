//! The UDP and serial capabilities, through the `wasm_probe` plugin (built by
//! hack/build-plugins.sh) against real peers: a tokio `UdpSocket` echo peer
//! and a socat PTY pair. A granted address or path works; anything else is a
//! `config` error naming it, and nothing reaches the peer. Also: a plugin
//! built against the contract before `udp` and `serial` existed still loads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::wat;
use mapper_sdk::{DriverError, DriverResult, DynClient, DynDriver, Value};
use mapper_wasm::WasmDriver;
use serde_json::{Map, Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

fn obj(v: Json) -> Map<String, Json> {
    v.as_object().unwrap().clone()
}

async fn connect(driver: &WasmDriver, cfg: Json) -> DriverResult<Box<dyn DynClient>> {
    let d: &dyn DynDriver = driver;
    let c = d.config(&obj(cfg))?;
    d.connect(&c.value).await
}

async fn read(driver: &WasmDriver, client: &dyn DynClient, visitor: Json) -> DriverResult<Value> {
    let d: &dyn DynDriver = driver;
    let a = d.address(&obj(visitor), None)?;
    client.read_batch(&[&a.value]).await.remove(0)
}

fn probe() -> String {
    common::built_plugin("wasm_probe")
        .to_str()
        .unwrap()
        .to_owned()
}

/// A UDP peer on 127.0.0.1 that answers every datagram with `echo:` and the
/// datagram, after a stranger (another socket) sent the same source a
/// datagram of its own first. Returns the peer's address and the datagrams
/// it received with their sources.
async fn echo_peer() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(Vec<u8>, std::net::SocketAddr)>,
) {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = peer.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = peer.recv_from(&mut buf).await.unwrap();
            let got = buf[..n].to_vec();
            let _ = tx.send((got.clone(), from));
            stranger.send_to(b"from a stranger", from).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut answer = b"echo:".to_vec();
            answer.extend_from_slice(&got);
            peer.send_to(&answer, from).await.unwrap();
        }
    });
    (address, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_to_a_granted_peer_round_trips_and_hears_only_that_peer() {
    common::logs();
    let (peer, mut received) = echo_peer().await;
    let driver = common::driver(Duration::from_secs(5));
    let c = connect(
        &driver,
        json!({"plugin": probe(), "grantUdp": format!("127.0.0.1:9, {peer}")}),
    )
    .await
    .unwrap();
    for payload in ["ping", "pong"] {
        let v = read(
            &driver,
            c.as_ref(),
            json!({"probe": "udp", "address": peer, "payload": payload}),
        )
        .await
        .unwrap();
        // The stranger's datagram arrived first but never reached the plugin.
        assert_eq!(v, Value::String(format!("echo:{payload}")));
        let (got, from) = received.try_recv().unwrap();
        assert_eq!(got, payload.as_bytes());
        assert!(from.ip().is_loopback(), "{from}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_to_an_address_not_granted_is_refused_naming_it() {
    common::logs();
    let (granted, _) = echo_peer().await;
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let other_address = other.local_addr().unwrap().to_string();
    let port = other.local_addr().unwrap().port();
    let driver = common::driver(Duration::from_secs(5));
    let c = connect(
        &driver,
        json!({"plugin": probe(), "grantUdp": granted, "grantTcp": other_address}),
    )
    .await
    .unwrap();
    // Open but not granted; a TCP grant of the same address is no UDP
    // grant, and another spelling of a granted address is another address.
    for address in [other_address.clone(), format!("localhost:{port}")] {
        let e = read(
            &driver,
            c.as_ref(),
            json!({"probe": "udp", "address": address, "payload": "x"}),
        )
        .await
        .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, DriverError::Config(_)), "{msg}");
        assert!(
            msg.contains(&format!("udp socket to {address} denied"))
                && msg.contains("this device's grantUdp")
                && msg.contains("wasm_probe.wasm")
                && msg.contains(&granted),
            "names the address, the device's grant and the plugin: {msg}"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut buf = [0u8; 16];
    assert!(
        other.try_recv_from(&mut buf).is_err(),
        "a datagram reached the address that is not granted"
    );
    // The instance lives on.
    assert_eq!(
        read(&driver, c.as_ref(), json!({"probe": "ok"}))
            .await
            .unwrap(),
        Value::Int(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_silence_is_a_timeout() {
    common::logs();
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap().to_string();
    let driver = common::driver(Duration::from_secs(5));
    let c = connect(&driver, json!({"plugin": probe(), "grantUdp": address}))
        .await
        .unwrap();
    let t0 = Instant::now();
    let e = read(
        &driver,
        c.as_ref(),
        json!({"probe": "udp", "address": address, "payload": "anyone?"}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, DriverError::Timeout(d) if d == Duration::from_millis(1000)),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let mut buf = [0u8; 16];
    let (n, _) = silent.try_recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"anyone?");
}

/// A socat PTY pair: `dev` for the plugin, `peer` for the test's device.
struct Pty {
    socat: Child,
    dev: PathBuf,
    peer: PathBuf,
}

impl Pty {
    fn start(dir: &Path) -> Pty {
        let (dev, peer) = (dir.join("ttyV0"), dir.join("ttyV1"));
        let socat = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", dev.display()))
            .arg(format!("pty,raw,echo=0,link={}", peer.display()))
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (hack/setup-test-env.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(dev.exists() && peer.exists()) {
            assert!(Instant::now() < deadline, "socat PTYs did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        Pty { socat, dev, peer }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.socat.kill();
        let _ = self.socat.wait();
    }
}

/// A device on `path` that answers everything it reads in upper case.
/// Returns what it received, as it received it.
fn upper_case_device(path: &Path) -> tokio::sync::mpsc::UnboundedReceiver<Vec<u8>> {
    use tokio_serial::SerialPortBuilderExt;
    let mut port = tokio_serial::new(path.to_str().unwrap(), 9600)
        .open_native_async()
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = [0u8; 256];
        loop {
            let Ok(n) = port.read(&mut buf).await else {
                return;
            };
            if n == 0 {
                return;
            }
            let _ = tx.send(buf[..n].to_vec());
            if port
                .write_all(&buf[..n].to_ascii_uppercase())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_serial_port_round_trips_and_others_are_refused() {
    common::logs();
    let dir = tempfile::tempdir().unwrap();
    let pty = Pty::start(dir.path());
    let mut received = upper_case_device(&pty.peer);
    let dev = pty.dev.to_str().unwrap().to_owned();
    let driver = common::driver(Duration::from_secs(5));
    let c = connect(
        &driver,
        json!({"plugin": probe(), "grantSerial": format!("/dev/ttyUSB7 {dev}")}),
    )
    .await
    .unwrap();
    let v = read(
        &driver,
        c.as_ref(),
        json!({"probe": "serial", "path": dev, "payload": "hello\n", "baudRate": 19200,
               "parity": "even", "dataBits": 7, "stopBits": 2}),
    )
    .await
    .unwrap();
    assert_eq!(v, Value::String("HELLO\n".into()));
    let mut got = Vec::new();
    while let Ok(chunk) = received.try_recv() {
        got.extend(chunk);
    }
    assert_eq!(got, b"hello\n");
    // The port is closed with the plugin's handle: it opens again.
    let v = read(
        &driver,
        c.as_ref(),
        json!({"probe": "serial", "path": dev, "payload": "again"}),
    )
    .await
    .unwrap();
    assert_eq!(v, Value::String("AGAIN".into()));
    let mut got = Vec::new();
    while let Ok(chunk) = received.try_recv() {
        got.extend(chunk);
    }
    assert_eq!(got, b"again");

    // Not granted: the other end of the pair (it exists), and another
    // spelling of the granted path (paths are matched exactly, not resolved).
    let peer = pty.peer.to_str().unwrap().to_owned();
    let dotted = format!("{}/./ttyV0", dir.path().display());
    for path in [peer, dotted] {
        let e = read(
            &driver,
            c.as_ref(),
            json!({"probe": "serial", "path": path, "payload": "x"}),
        )
        .await
        .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, DriverError::Config(_)), "{msg}");
        assert!(
            msg.contains(&format!("serial open of {path} denied"))
                && msg.contains("this device's grantSerial")
                && msg.contains("wasm_probe.wasm")
                && msg.contains(&dev),
            "names the path, the device's grant and the plugin: {msg}"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(received.try_recv().is_err(), "the refused probes wrote");

    // Settings a UART cannot do are a config error naming them.
    let e = read(
        &driver,
        c.as_ref(),
        json!({"probe": "serial", "path": dev, "payload": "x", "dataBits": 9}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, DriverError::Config(ref m) if m.contains("9 data bits") && m.contains(&dev)),
        "{e}"
    );
    // An answer shorter than expected: the read times out.
    let e = read(
        &driver,
        c.as_ref(),
        json!({"probe": "serial", "path": dev, "payload": "hi", "expect": 10}),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, DriverError::Timeout(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_serial_path_that_does_not_exist_is_a_transport_error() {
    common::logs();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ttyGONE").to_str().unwrap().to_owned();
    let driver = common::driver(Duration::from_secs(5));
    let c = connect(&driver, json!({"plugin": probe(), "grantSerial": missing}))
        .await
        .unwrap();
    let e = read(
        &driver,
        c.as_ref(),
        json!({"probe": "serial", "path": missing, "payload": "x"}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, DriverError::Transport(_)) && e.to_string().contains(&missing),
        "{e}"
    );
}

/// A component built against the contract before `udp` and `serial`
/// existed: it imports `host` and `tcp` (a resource and a function), as the
/// example plugins of that version did, and must still load and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_imports_only_the_older_interfaces_still_loads() {
    common::logs();
    let dir = tempfile::tempdir().unwrap();
    let imports = r#"(component
  (import "edge-dmi:driver/host@0.1.0" (instance
    (export "monotonic-now" (func (result u64)))))
  (import "edge-dmi:driver/tcp@0.1.0" (instance
    (export "connection" (type (sub resource)))))
"#;
    let text = wat::driver(&wat::answering(42)).replacen("(component\n", imports, 1);
    assert!(text.contains("edge-dmi:driver/tcp@0.1.0"), "{text}");
    let p = dir.path().join("old.wat");
    std::fs::write(&p, text).unwrap();
    let driver = common::driver(Duration::from_secs(5));
    let c = connect(&driver, json!({"plugin": p.to_str().unwrap()}))
        .await
        .unwrap();
    assert_eq!(
        read(&driver, c.as_ref(), json!({})).await.unwrap(),
        Value::Int(42)
    );
    // Built plugins import no more than they use: `sim` imports neither
    // `tcp` nor `udp` nor `serial`, `probe` all three; both load.
    for (name, visitor, expect) in [
        (
            "wasm_sim",
            json!({"pattern": "constant", "value": 3}),
            Value::Int(3),
        ),
        ("wasm_probe", json!({"probe": "ok"}), Value::Int(1)),
    ] {
        let plugin = common::built_plugin(name);
        let c = connect(&driver, json!({"plugin": plugin.to_str().unwrap()}))
            .await
            .unwrap();
        assert_eq!(
            read(&driver, c.as_ref(), visitor).await.unwrap(),
            expect,
            "{name}"
        );
    }
}
