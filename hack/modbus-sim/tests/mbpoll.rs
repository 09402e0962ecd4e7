//! The simulator checked from outside with a real Modbus client: Debian's
//! `mbpoll`, over TCP and over RTU on a socat PTY pair, plus the stdin control
//! commands of the binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const MAP: &str = "
    holding:
      - { address: 0, value: 215 }
      - { address: 1, value: -40, dataType: int16 }
      - { address: 2, value: 21.5, dataType: float32 }
    input:
      - { address: 0, values: [7, 8, 9] }
    coils:
      - { address: 3, value: true }
    discreteInputs:
      - { address: 1, value: true }
    size: 100
";

fn start_sim(dir: &Path, transport: &str) -> (Child, BufReader<ChildStdout>, ChildStdin, String) {
    let cfg = dir.join("sim.yaml");
    std::fs::write(
        &cfg,
        format!("devices:\n  - name: plc\n    {transport}\n{MAP}"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_modbus-sim"))
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let stdin = child.stdin.take().unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("READY plc"), "{line}");
    let reach = line.split_whitespace().nth(3).unwrap().to_owned();
    (child, out, stdin, reach)
}

fn mbpoll(args: &[&str]) -> (bool, String) {
    let out = Command::new("mbpoll")
        .args(args)
        .output()
        .expect("mbpoll (hack/setup-test-env.sh installs it)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn tcp_args<'a>(port: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["-m", "tcp", "-a", "1", "-1", "-p", port];
    v.extend_from_slice(extra);
    v.push("127.0.0.1");
    v
}

#[test]
fn mbpoll_reads_and_writes_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let (child, mut out, mut stdin, reach) = start_sim(dir.path(), "tcp: 127.0.0.1:0");
    let _procs = Procs(vec![child]);
    let port = reach.rsplit(':').next().unwrap().to_owned();
    let (ok, text) = mbpoll(&tcp_args(&port, &["-r", "1", "-c", "2", "-t", "4"]));
    assert!(
        ok && text.contains("[1]: \t215") && text.contains("[2]: \t65496 (-40)"),
        "{text}"
    );
    let (ok, text) = mbpoll(&tcp_args(
        &port,
        &["-r", "3", "-c", "1", "-t", "4:float", "-B"],
    ));
    assert!(ok && text.contains("[3]: \t21.5"), "{text}");
    let (ok, text) = mbpoll(&tcp_args(&port, &["-r", "1", "-c", "3", "-t", "3"]));
    assert!(
        ok && text.contains("[1]: \t7") && text.contains("[3]: \t9"),
        "{text}"
    );
    let (ok, text) = mbpoll(&tcp_args(&port, &["-r", "4", "-c", "1", "-t", "0"]));
    assert!(ok && text.contains("[4]: \t1"), "{text}");
    let (ok, text) = mbpoll(&tcp_args(&port, &["-r", "2", "-c", "1", "-t", "1"]));
    assert!(ok && text.contains("[2]: \t1"), "{text}");
    // Out of range: the proper exception.
    let (ok, text) = mbpoll(&tcp_args(&port, &["-r", "99", "-c", "5", "-t", "4"]));
    assert!(!ok && text.contains("Illegal data address"), "{text}");
    // A write sticks; the control interface sees it.
    let mut args = tcp_args(&port, &["-r", "11", "-t", "4"]);
    args.push("1234");
    let (ok, text) = mbpoll(&args);
    assert!(ok && text.contains("Written 1 references"), "{text}");
    writeln!(stdin, "get plc holding 10").unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "1234");
    // Faults on demand: an exception code for every request, then off again.
    writeln!(stdin, "exception plc 4").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ok");
    let (ok, text) = mbpoll(&tcp_args(&port, &["-r", "1", "-c", "1", "-t", "4"]));
    assert!(
        !ok && text.contains("Slave device or server failure"),
        "{text}"
    );
    writeln!(stdin, "exception plc off").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let (ok, _) = mbpoll(&tcp_args(&port, &["-r", "1", "-c", "1", "-t", "4"]));
    assert!(ok);
    writeln!(stdin, "silent nosuch on").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("error: unknown device"), "{line}");
}

#[test]
fn mbpoll_reads_over_rtu() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("ttyV0"), dir.path().join("ttyV1"));
    let socat = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stderr(Stdio::null())
        .spawn()
        .expect("socat (hack/setup-test-env.sh installs it)");
    let mut procs = Procs(vec![socat]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(a.exists() && b.exists()) {
        assert!(Instant::now() < deadline, "socat PTYs did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (child, _out, _stdin, reach) = start_sim(
        dir.path(),
        &format!("rtu: {{ path: {}, baud: 19200 }}", a.display()),
    );
    procs.0.push(child);
    assert_eq!(reach, a.display().to_string());
    let b = b.display().to_string();
    let (ok, text) = mbpoll(&[
        "-m", "rtu", "-b", "19200", "-P", "none", "-a", "1", "-r", "1", "-c", "2", "-t", "4", "-1",
        &b,
    ]);
    assert!(
        ok && text.contains("[1]: \t215") && text.contains("[2]: \t65496 (-40)"),
        "{text}"
    );
    let (ok, text) = mbpoll(&[
        "-m", "rtu", "-b", "19200", "-P", "none", "-a", "1", "-r", "1", "-c", "3", "-t", "3", "-1",
        &b,
    ]);
    assert!(ok && text.contains("[3]: \t9"), "{text}");
}
