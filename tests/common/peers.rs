//! Real servers the data-plane tests deliver to, each on its own loopback
//! port and in its own directory, stoppable and restartable with its data
//! kept (for outage tests): mosquitto, redis-server, MariaDB and
//! VictoriaMetrics (as the InfluxDB v2 line-protocol endpoint). The test
//! set-up (`hack/setup-test-env.sh`) installs them from Debian's packages.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{free_port, wait_for};

/// Whether the program `name` is on PATH (or at an absolute path).
pub fn installed(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a TCP connection to `127.0.0.1:port` succeeds.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Runs `cmd` and returns its stdout (panics with stderr on failure).
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A server process that can be stopped and started again with its data.
#[derive(Debug)]
pub struct Peer {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    start: fn(&Peer) -> Child,
}

impl Peer {
    fn new(dir: &Path, name: &str, start: fn(&Peer) -> Child) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = Self {
            port: free_port(),
            dir,
            child: None,
            start,
        };
        p.up();
        p
    }

    fn log(&self) -> Stdio {
        Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("server.log"))
                .unwrap(),
        )
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.child = Some((self.start)(self));
        let port = self.port;
        wait_for("the server to listen", 30, || listening(port).then_some(()));
    }

    /// Stops the server with SIGTERM (it saves its data) and waits until the
    /// port is closed.
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
        let port = self.port;
        wait_for("the server to stop", 30, || {
            (!listening(port)).then_some(())
        });
    }

    /// mosquitto with persistence (sessions and queued QoS 1 messages survive
    /// a restart).
    pub fn mosquitto(dir: &Path) -> Self {
        Self::new(dir, "mosquitto", |p| {
            let conf = p.dir.join("mosquitto.conf");
            // Started as root, mosquitto drops to its own user, which must be
            // able to write its persistence file here.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            std::fs::write(
                &conf,
                format!(
                    "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 100000\n",
                    p.port,
                    p.dir.display()
                ),
            )
            .unwrap();
            Command::new("mosquitto")
                .arg("-c")
                .arg(&conf)
                .stdout(p.log())
                .stderr(p.log())
                .spawn()
                .unwrap()
        })
    }

    /// redis-server with an append-only file, so its data survives a restart.
    pub fn redis(dir: &Path) -> Self {
        Self::new(dir, "redis", |p| {
            Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port"])
                .arg(p.port.to_string())
                .args(["--save", "", "--appendonly", "yes", "--dir"])
                .arg(&p.dir)
                .stdout(p.log())
                .stderr(p.log())
                .spawn()
                .unwrap()
        })
    }

    /// MariaDB with a fresh data directory (root without password on
    /// 127.0.0.1) and a database `edge`.
    pub fn mariadb(dir: &Path) -> Self {
        let data = dir.join("mariadb").join("data");
        std::fs::create_dir_all(dir.join("mariadb")).unwrap();
        run(Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db"));
        let p = Self::new(dir, "mariadb", |p| {
            Command::new("mariadbd")
                .arg("--no-defaults")
                .arg("--user=root")
                .arg(format!("--datadir={}", p.dir.join("data").display()))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--port={}", p.port))
                .arg(format!("--socket={}", p.dir.join("s.sock").display()))
                .arg("--skip-log-bin")
                .stdout(p.log())
                .stderr(p.log())
                .spawn()
                .unwrap()
        });
        let port = p.port;
        wait_for("MariaDB to take queries", 30, || {
            Command::new("mariadb")
                .args(["-h", "127.0.0.1", "-u", "root", "-P"])
                .arg(port.to_string())
                .args(["-e", "CREATE DATABASE IF NOT EXISTS edge"])
                .status()
                .ok()?
                .success()
                .then_some(())
        });
        p
    }

    /// `mariadb -N -e <sql>` against database `edge`; stdout.
    pub fn sql(&self, sql: &str) -> String {
        run(Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-u", "root", "-N", "-D", "edge", "-P"])
            .arg(self.port.to_string())
            .args(["-e", sql]))
    }

    /// VictoriaMetrics, which takes InfluxDB line protocol at `/api/v2/write`.
    pub fn victoria_metrics(dir: &Path) -> Self {
        Self::new(dir, "victoria-metrics", |p| {
            Command::new("victoria-metrics")
                .arg(format!("-storageDataPath={}", p.dir.join("data").display()))
                .arg(format!("-httpListenAddr=127.0.0.1:{}", p.port))
                .stdout(p.log())
                .stderr(p.log())
                .spawn()
                .unwrap()
        })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
