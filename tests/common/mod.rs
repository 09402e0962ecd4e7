//! Helpers for the whole-system tests: start the real binaries in a temp dir,
//! read state through the real CLI, poll with deadlines.
//!
//! The binaries come from the same target directory as the test executable;
//! `hack/test.sh` builds them first (`cargo build --workspace --bins`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use edgecore_dmi::views::{DeviceView, PropertyView, StatusView};

pub mod peers;

/// Path of a workspace binary next to the running test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found; build the binaries first: cargo build --workspace --bins (hack/test.sh does)",
        p.display()
    );
    p
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Polls `f` every 100 ms until it returns `Some` or `secs` pass.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One edge node in a temp dir: edgecore-dmi and mappers as child processes.
#[derive(Debug)]
pub struct Node {
    pub dir: tempfile::TempDir,
    pub edgecore: Option<Child>,
    pub mappers: Vec<Child>,
}

impl Node {
    /// A node whose devices directory holds copies of `files` (repo-relative).
    pub fn new(files: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("devices")).unwrap();
        for f in files {
            let src = repo().join(f);
            std::fs::copy(
                &src,
                dir.path().join("devices").join(src.file_name().unwrap()),
            )
            .unwrap();
        }
        Self {
            dir,
            edgecore: None,
            mappers: Vec::new(),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn dmi_sock(&self) -> PathBuf {
        self.path("dmi.sock")
    }

    fn log(&self, name: &str) -> Stdio {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(name))
            .unwrap();
        Stdio::from(f)
    }

    pub fn start_edgecore(&mut self) {
        self.start_edgecore_with(&[], &[]);
    }

    /// As [`Self::start_edgecore`], with extra `serve` flags and environment.
    pub fn start_edgecore_with(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        let child = Command::new(bin("edgecore-dmi"))
            .envs(env.iter().copied())
            .arg("--dmi-socket")
            .arg(self.dmi_sock())
            .arg("serve")
            .args(extra)
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--devices-dir")
            .arg(self.path("devices"))
            .env("RUST_LOG", "info")
            .stdout(self.log("edgecore.log"))
            .stderr(self.log("edgecore.log"))
            .spawn()
            .unwrap();
        self.edgecore = Some(child);
        // Stale socket files of a killed instance may still exist: wait until the
        // new instance answers.
        wait_for("edgecore-dmi to answer", 20, || self.status());
    }

    pub fn start_virtual_mapper(&mut self) {
        self.start_mapper("virtual");
    }

    /// Starts `mapper-<protocol>` with `examples/config/<protocol>-mapper.yaml`.
    pub fn start_mapper(&mut self, protocol: &str) {
        self.start_mapper_with(protocol, &[]);
    }

    /// As [`Self::start_mapper`], with extra flags.
    pub fn start_mapper_with(&mut self, protocol: &str, extra: &[&str]) {
        self.start_mapper_env(protocol, extra, &[]);
    }

    /// As [`Self::start_mapper_with`], with extra environment variables.
    pub fn start_mapper_env(&mut self, protocol: &str, extra: &[&str], env: &[(&str, &str)]) {
        let child = Command::new(bin(&format!("mapper-{protocol}")))
            .envs(env.iter().copied())
            .args(extra)
            .arg("--config-file")
            .arg(repo().join(format!("examples/config/{protocol}-mapper.yaml")))
            .arg("--socket-path")
            .arg(self.path(&format!("{protocol}.sock")))
            .arg("--edgecore-sock")
            .arg(self.dmi_sock())
            .env("RUST_LOG", "info")
            .stdout(self.log("mapper.log"))
            .stderr(self.log("mapper.log"))
            .spawn()
            .unwrap();
        self.mappers.push(child);
    }

    /// SIGKILL, no cleanup: the hardest way to lose a process.
    pub fn kill_edgecore(&mut self) {
        if let Some(mut c) = self.edgecore.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn kill_mappers(&mut self) {
        for mut c in self.mappers.drain(..) {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// State through the real CLI (`edgecore-dmi devices -o json`).
    pub fn status(&self) -> Option<StatusView> {
        let out = Command::new(bin("edgecore-dmi"))
            .arg("--dmi-socket")
            .arg(self.dmi_sock())
            .args(["devices", "-o", "json"])
            .output()
            .unwrap();
        if !out.status.success() {
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("CLI JSON"))
    }

    /// Output of `edgecore-dmi --dmi-socket SOCK <args>` (stdout; panics on failure).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(bin("edgecore-dmi"))
            .arg("--dmi-socket")
            .arg(self.dmi_sock())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "edgecore-dmi {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn device(&self, id: &str) -> Option<DeviceView> {
        self.status()?
            .devices
            .into_iter()
            .find(|d| format!("{}/{}", d.namespace, d.name) == id)
    }

    /// The dashboard's address, from edgecore-dmi's `http listening on ADDR`
    /// log line (started with `--http-addr`; the last such line, after a
    /// restart). Waits up to 20 s for it.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        wait_for("edgecore-dmi's `http listening on` line", 20, || {
            let log = std::fs::read_to_string(self.path("edgecore.log")).ok()?;
            let line = log
                .lines()
                .rev()
                .find(|l| l.contains("http listening on "))?;
            let rest = line.split("http listening on ").nth(1)?;
            rest.split(|c: char| c.is_whitespace() || c == '"')
                .next()?
                .parse()
                .ok()
        })
    }

    pub fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.path(n)).unwrap_or_default();
        format!(
            "--- edgecore.log\n{}\n--- mapper.log\n{}",
            read("edgecore.log"),
            read("mapper.log")
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for c in self.edgecore.iter_mut().chain(self.mappers.iter_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `modbus-sim` process driven through its stdin commands.
#[derive(Debug)]
pub struct ModbusSim {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    /// `READY` lines: device name → `host:port` (or serial path).
    pub reach: std::collections::HashMap<String, String>,
}

impl ModbusSim {
    /// Starts the simulator with `yaml` (written next to `dir`).
    pub fn start(dir: &Path, name: &str, yaml: &str) -> Self {
        use std::io::BufRead;
        let cfg = dir.join(format!("{name}.yaml"));
        std::fs::write(&cfg, yaml).unwrap();
        let mut child = Command::new(bin("modbus-sim"))
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let devices = yaml.matches("- name:").count();
        let mut reach = std::collections::HashMap::new();
        for _ in 0..devices {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let w: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(w.first(), Some(&"READY"), "modbus-sim: {line}");
            reach.insert(w[1].to_owned(), w[3].to_owned());
        }
        Self {
            child,
            stdin,
            stdout,
            reach,
        }
    }

    /// The TCP port of `device`.
    pub fn port(&self, device: &str) -> u16 {
        self.reach[device]
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Sends a control command; returns the answer line.
    pub fn command(&mut self, cmd: &str) -> String {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    /// Kills the process (SIGKILL): the devices vanish from the network.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ModbusSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback (bound and released; the peer binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from `127.0.0.1:port` over plain HTTP/1.0; the body.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_owned()))
}

/// Status, headers (lower-case names) and body of an HTTP answer.
pub type HttpAnswer = (u16, Vec<(String, String)>, String);

/// An HTTP/1.0 request to `127.0.0.1:port`: the status, the response headers
/// (lower-case names) and the body; `None` when nothing answered.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<HttpAnswer> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some((status, headers, body.to_owned()))
}

/// The value of one Prometheus sample line starting with `series`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

pub fn prop<'a>(d: &'a DeviceView, name: &str) -> &'a PropertyView {
    d.properties.iter().find(|p| p.name == name).unwrap()
}

/// Whether the mapper has reported on the property's desired value
/// (`applied`, `rejected` or `pending`), not merely that it is waiting.
pub fn reported_on(p: &PropertyView) -> bool {
    matches!(
        p.desired_status.as_deref(),
        Some("applied" | "rejected" | "pending" | "received")
    )
}
