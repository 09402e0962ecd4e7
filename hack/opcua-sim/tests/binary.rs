//! The `opcua-sim` binary: the READY line, the stdin commands and their
//! answers, and a clean exit on SIGTERM while stdin stays open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ready_line_commands_and_sigterm() {
    let dir = tempfile::TempDir::new().unwrap();
    let pki = dir.path().join("pki");
    let mut child = Kill(
        Command::new(env!("CARGO_BIN_EXE_opcua-sim"))
            .args([
                "--nodes",
                "20",
                "--period-ms",
                "100",
                "--max-nodes-per-read",
                "10",
            ])
            .arg("--pki-dir")
            .arg(&pki)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut stdin = child.0.stdin.take().unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.len(), 3, "{line}");
    assert_eq!(words[0], "READY");
    let url = words[1];
    assert!(
        url.starts_with("opc.tcp://127.0.0.1:") && url.ends_with('/'),
        "{url}"
    );
    let port: u16 = url["opc.tcp://127.0.0.1:".len()..url.len() - 1]
        .parse()
        .unwrap();
    assert_ne!(port, 0);
    assert_eq!(words[2], pki.join("own/cert.der").to_str().unwrap());
    assert!(pki.join("own/cert.der").is_file());
    assert!(pki.join("private/private.pem").is_file());

    let mut ask = |cmd: &str| {
        writeln!(stdin, "{cmd}").unwrap();
        let mut answer = String::new();
        out.read_line(&mut answer).unwrap();
        answer.trim_end().to_owned()
    };
    let first = ask("get ns=2;i=1019");
    assert!(first.starts_with("OK Good "), "{first}");
    std::thread::sleep(Duration::from_millis(350));
    let later = ask("get i=1019");
    let n = |s: &str| s["OK Good ".len()..].parse::<f64>().unwrap();
    assert!(n(&later) >= n(&first) + 2.0, "{first} then {later}");
    assert_eq!(ask("set i=1000 -7.5"), "OK");
    assert_eq!(ask("get i=1000"), "OK Good -7.5");
    assert_eq!(ask("bad i=1001 BadCommunicationError"), "OK");
    assert_eq!(ask("get i=1001"), "OK BadCommunicationError null");
    assert_eq!(ask("good i=1001"), "OK");
    assert!(ask("get i=1001").starts_with("OK Good "));
    assert_eq!(ask("latency 250"), "OK");
    assert_eq!(ask("latency 0"), "OK");
    assert!(ask("help").starts_with("OK get <node>"));
    assert!(ask("get i=99999").starts_with("ERR unknown node"));
    assert!(ask("bad i=1000").starts_with("ERR `bad` needs a status code name"));
    assert!(ask("jump").starts_with("ERR unknown command `jump`"));
    assert_eq!(ask("drop"), "OK");
    TcpStream::connect(("127.0.0.1", port)).expect("listening again after drop");
    assert_eq!(ask("get i=1000"), "OK Good -7.5", "values survive drop");

    // SIGTERM ends it even though stdin is still open.
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
}
