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

    /// mosquitto that requires a user name and password (`user`/`password`)
    /// and, with `tls`, serves MQTT over TLS with a certificate for 127.0.0.1
    /// signed by `ca.pem` in its directory (made here with openssl).
    pub fn mosquitto_secured(dir: &Path, tls: bool) -> Self {
        let d = dir.join("mosquitto");
        std::fs::create_dir_all(&d).unwrap();
        run(Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(d.join("passwd"))
            .args(["user", "password"]));
        if tls {
            let sh = format!(
                "set -e; cd {}; \
                 openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem 2>/dev/null; \
                 openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null; \
                 printf 'subjectAltName=IP:127.0.0.1' > san.ext; \
                 openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.pem 2>/dev/null; \
                 chmod 644 server.key",
                d.display()
            );
            run(Command::new("sh").arg("-c").arg(sh));
        }
        let start: fn(&Peer) -> Child = if tls {
            |p| {
                Self::start_mosquitto(
                    p,
                    "allow_anonymous false\npassword_file PASSWD\ncafile CA\ncertfile CERT\nkeyfile KEY\n",
                )
            }
        } else {
            |p| Self::start_mosquitto(p, "allow_anonymous false\npassword_file PASSWD\n")
        };
        Self::new(dir, "mosquitto", start)
    }

    fn start_mosquitto(p: &Peer, extra: &str) -> Child {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let extra = extra
            .replace("PASSWD", &p.dir.join("passwd").display().to_string())
            .replace("CA", &p.dir.join("ca.pem").display().to_string())
            .replace("CERT", &p.dir.join("server.pem").display().to_string())
            .replace("KEY", &p.dir.join("server.key").display().to_string());
        let conf = p.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {} 127.0.0.1\npersistence false\n{extra}", p.port),
        )
        .unwrap();
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(p.log())
            .stderr(p.log())
            .spawn()
            .unwrap()
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

/// One request an [`HttpReceiver`] took.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 server (keep-alive, `Content-Length` bodies) that
/// records every request and answers with a configurable status and body:
/// the stand-in for targets that cannot run here (an OpenTelemetry collector,
/// TDengine's REST API) and for an HTTP push endpoint.
#[derive(Debug, Clone)]
pub struct HttpReceiver {
    pub port: u16,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    answer: std::sync::Arc<std::sync::Mutex<(u16, String)>>,
}

impl HttpReceiver {
    /// Starts on a free loopback port, answering `200` with `body`.
    pub fn start(body: &str) -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let r = Self {
            port: listener.local_addr().unwrap().port(),
            requests: Default::default(),
            answer: std::sync::Arc::new(std::sync::Mutex::new((200, body.to_owned()))),
        };
        let me = r.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let me = me.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut conn = conn;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut parts = line.split_whitespace();
                        let method = parts.next().unwrap_or_default().to_owned();
                        let path = parts.next().unwrap_or_default().to_owned();
                        let mut headers = Vec::new();
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                headers.push((k.trim().to_owned(), v.trim().to_owned()));
                            }
                        }
                        let len: usize = headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.parse().ok())
                            .unwrap_or(0);
                        let mut body = vec![0; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let (status, answer) = me.answer.lock().unwrap().clone();
                        if status < 300 {
                            me.requests.lock().unwrap().push(Received {
                                method,
                                path,
                                headers,
                                body: String::from_utf8_lossy(&body).into_owned(),
                            });
                        }
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        if conn.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        r
    }

    /// Answers `status` from now on (requests answered with 300 or more are
    /// not recorded: the sender must send them again).
    pub fn answer(&self, status: u16) {
        self.answer.lock().unwrap().0 = status;
    }

    /// The requests taken so far.
    pub fn taken(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}
