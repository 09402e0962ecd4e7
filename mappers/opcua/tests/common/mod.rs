//! Test peers: the Python asyncua server (`python/asyncua_server.py`) and
//! opcua-sim, and a PKI directory per test with the mapper's keys made once
//! per test process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mapper_opcua::{OpcuaAddress, OpcuaConfig, OpcuaDevice, OpcuaDriver};
use mapper_sdk::{Driver, PropertyInfo, PropertyType};
use serde_json::Value as Json;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn python() -> PathBuf {
    let p = std::env::var_os("DMI_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/test-env/venv/bin/python"));
    assert!(
        p.exists(),
        "{} missing: run hack/setup-test-env.sh (it creates the venv with asyncua)",
        p.display()
    );
    p
}

/// A free TCP port on loopback (bound and released; the peer binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process, killed when dropped.
pub struct Peer {
    pub child: Child,
    pub port: u16,
    /// asyncua: the test namespace's index.
    pub ns: u16,
    pub dir: PathBuf,
}

impl Peer {
    pub fn url(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}/test", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the asyncua server on `port` with `args` (see the script) and
/// waits for its READY line.
pub fn start_asyncua_on(dir: &Path, port: u16, args: &[&str]) -> Peer {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/asyncua_server.py");
    let mut child = Command::new(python())
        .arg(script)
        .arg("--port")
        .arg(port.to_string())
        .arg("--certs")
        .arg(dir.join("server-certs"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ns = line
        .trim()
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("asyncua did not start: {line:?}"))
        .parse()
        .unwrap();
    Peer {
        child,
        port,
        ns,
        dir: dir.to_owned(),
    }
}

pub fn start_asyncua(dir: &Path, args: &[&str]) -> Peer {
    start_asyncua_on(dir, free_port(), args)
}

/// The mapper's keys, made once per test process (an RSA key takes seconds
/// in a debug build) and copied into each test's PKI directory.
fn keys() -> &'static Path {
    static KEYS: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        // Its own thread: the callers are inside a runtime already.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let pki = mapper_opcua::pki::Pki::new(path);
            rt.block_on(pki.ensure_own_keys()).unwrap();
        })
        .join()
        .unwrap();
        dir
    })
    .path()
}

/// A PKI directory for one test, holding the mapper's keys.
pub fn pki(dir: &Path) -> PathBuf {
    let pki = dir.join("pki");
    for f in ["own/cert.der", "private/private.pem"] {
        std::fs::create_dir_all(pki.join(f).parent().unwrap()).unwrap();
        std::fs::copy(keys().join(f), pki.join(f)).unwrap();
    }
    pki
}

pub fn driver(dir: &Path) -> OpcuaDriver {
    OpcuaDriver::new(pki(dir))
}

pub fn config(v: Json) -> OpcuaConfig {
    serde_json::from_value(v).unwrap()
}

pub fn address(node: &str) -> OpcuaAddress {
    address_with(
        serde_json::json!({ "nodeID": node }),
        None,
        Duration::from_secs(1),
    )
}

pub fn address_with(v: Json, ty: Option<PropertyType>, cycle: Duration) -> OpcuaAddress {
    let mut a: OpcuaAddress = serde_json::from_value(v).unwrap();
    OpcuaDriver::new("/nonexistent")
        .prepare_property(&mut a, &PropertyInfo::new("p", ty, cycle))
        .unwrap();
    a
}

/// Connects, retrying while the server comes up.
pub async fn connect(driver: &OpcuaDriver, cfg: Json) -> OpcuaDevice {
    let cfg = config(cfg);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match driver.connect(&cfg).await {
            Ok(d) => return d,
            Err(e) if Instant::now() < deadline && e.is_link_failure() => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot connect: {e}"),
        }
    }
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
