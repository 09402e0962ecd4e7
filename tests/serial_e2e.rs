//! edgecore-dmi + mapper-serial against a scripted serial device on a socat
//! PTY pair, from KubeEdge YAML: a polled scale value decoded per its visitor,
//! a streamed NMEA value updating its twin with no request, garbage and bad
//! checksums discarded (and counted in the log) without breaking later
//! readings, desired values written and acknowledged (a refused one
//! reported), and the port going away (socat stopped) → `offline` → `online`
//! again once the PTY pair is back at the same path.
//!
//! The device is a Python 3 script using only the standard library
//! (`$DMI_TEST_PYTHON` when set, else `python3`). Skipped, printing `SKIP`,
//! only when socat or Python is missing (`hack/setup-test-env.sh` installs
//! socat).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::peers::installed;
use e2e_tests::{Node, prop, wait_for};

/// The scripted device: answers `W` (weight), `T?` (set-point), `T<n>`
/// (write, acknowledged `OK` for 0..=100, else `ERR`), records every request
/// line, streams `$GPGGA` sentences every 100 ms with an altitude that
/// climbs, and now and then sends garbage, a line with a wrong checksum (the
/// altitude 999.9, which must never reach the twin) and an unfinished line.
const DEVICE_PY: &str = r#"
import argparse, os, select, sys, time, tty

ap = argparse.ArgumentParser()
ap.add_argument("--port", required=True)
ap.add_argument("--record", required=True)
ap.add_argument("--interval", type=float, default=0.1)
a = ap.parse_args()

fd = os.open(a.port, os.O_RDWR | os.O_NOCTTY)
tty.setraw(fd)
rec = open(a.record, "a", buffering=1)
rec.write("READY\n")

def send(b):
    os.write(fd, b)

def xor(text):
    cs = 0
    for c in text.encode():
        cs ^= c
    return cs

setpoint = 5
buf = b""
answers = 0
k = 0
next_line = time.monotonic()
while True:
    r, _, _ = select.select([fd], [], [], max(0.0, next_line - time.monotonic()))
    if r:
        try:
            data = os.read(fd, 1024)
        except OSError:
            sys.exit(0)
        if not data:
            sys.exit(0)
        buf += data
        while b"\r\n" in buf:
            line, buf = buf.split(b"\r\n", 1)
            rec.write("REQ " + line.decode(errors="replace") + "\n")
            answers += 1
            if answers % 3 == 0:
                send(b"\x00\xff#@!garbage\r\n")
            if line == b"W":
                send(b"ST,GS,+0012.34kg\r\n")
            elif line == b"T?":
                send(("T=%d\r\n" % setpoint).encode())
            elif line.startswith(b"T"):
                rec.write("WRITE " + line.decode(errors="replace") + "\n")
                try:
                    v = int(line[1:])
                except ValueError:
                    v = -1
                if 0 <= v <= 100:
                    setpoint = v
                    send(b"OK\r\n")
                else:
                    send(b"ERR\r\n")
    if time.monotonic() >= next_line:
        k += 1
        next_line += a.interval
        alt = 100.0 + 0.5 * (k % 1000)
        body = "GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,%.1f,M,46.9,M,," % alt
        if k % 5 == 0:
            bad = body.replace("%.1f" % alt, "999.9")
            send(("$%s*%02X\r\n" % (bad, xor(bad) ^ 0x55)).encode())
        elif k % 7 == 0:
            send(b"\x07\x08noise\xfe\r\n")
        elif k % 23 == 0:
            send(b"$GPGGA,12")
        else:
            send(("$%s*%02X\r\n" % (body, xor(body))).encode())
"#;

const BENCH_YAML: &str = r#"apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: bench-model
spec:
  protocol: serial
  properties:
    - name: weight
      type: FLOAT
      accessMode: ReadOnly
      unit: kg
    - name: altitude
      type: FLOAT
      accessMode: ReadOnly
      unit: m
    - name: setpoint
      type: INT
      accessMode: ReadWrite
      minimum: "0"
      maximum: "200"
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: bench-1
spec:
  deviceModelRef:
    name: bench-model
  protocol:
    protocolName: serial
    configData:
      serialPort: PORT
      baudRate: 115200
      timeoutMs: 700
  stateReport:
    reportToCloud: true
    reportCycle: 1000
  properties:
    - name: weight
      collectCycle: 500
      reportToCloud: true
      visitors:
        protocolName: serial
        configData:
          request: 'W\r\n'
          regex: '^ST,GS,([+-]?[0-9.]+)kg$'
    - name: altitude
      reportToCloud: true
      visitors:
        protocolName: serial
        configData:
          regex: '^\$GPGGA,(?:[^,]*,){8}([0-9.]+),M,'
          checksum: xor
          checksumEncoding: hex
          checksumStart: 1
          checksumEnd: -3
    - name: setpoint
      collectCycle: 1000
      reportToCloud: true
      desired:
        value: "42"
      visitors:
        protocolName: serial
        configData:
          request: 'T?\r\n'
          regex: '^T=(-?\d+)$'
          write: 'T{value}\r\n'
          ack: '^OK$'
"#;

/// Python 3: `$DMI_TEST_PYTHON` when it exists, else `python3` on PATH.
fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DMI_TEST_PYTHON").map(PathBuf::from)
        && p.exists()
    {
        return Some(p);
    }
    installed("python3").then(|| PathBuf::from("python3"))
}

/// The PTY pair and the device script on its far end; stoppable and
/// restartable at the same paths.
struct Line {
    dev: PathBuf,
    peer: PathBuf,
    script: PathBuf,
    record: PathBuf,
    python: PathBuf,
    log: PathBuf,
    socat: Option<Child>,
    device: Option<Child>,
}

impl Line {
    fn new(dir: &Path, python: PathBuf) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let script = dir.join("device.py");
        std::fs::write(&script, DEVICE_PY).unwrap();
        Self {
            dev: dir.join("dev"),
            peer: dir.join("peer"),
            script,
            record: dir.join("record.txt"),
            python,
            log: dir.join("line.log"),
            socat: None,
            device: None,
        }
    }

    fn log(&self) -> Stdio {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap()
            .into()
    }

    fn up(&mut self) {
        let socat = Command::new("socat")
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", self.dev.display()))
            .arg(format!("pty,raw,echo=0,link={}", self.peer.display()))
            .stdout(Stdio::null())
            .stderr(self.log())
            .spawn()
            .unwrap();
        self.socat = Some(socat);
        wait_for("socat PTY links", 10, || {
            (self.dev.exists() && self.peer.exists()).then_some(())
        });
        let ready = self.ready_count();
        let device = Command::new(&self.python)
            .arg(&self.script)
            .arg("--port")
            .arg(&self.peer)
            .arg("--record")
            .arg(&self.record)
            .stdout(self.log())
            .stderr(self.log())
            .spawn()
            .unwrap();
        self.device = Some(device);
        wait_for("the device script", 10, || {
            (self.ready_count() > ready).then_some(())
        });
    }

    /// Tears the pair down: the device script is killed, socat is stopped
    /// with SIGTERM (it removes its links).
    fn down(&mut self) {
        if let Some(mut d) = self.device.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        if let Some(mut s) = self.socat.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(s.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while s.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = s.kill();
            let _ = s.wait();
        }
        for p in [&self.dev, &self.peer] {
            let _ = std::fs::remove_file(p);
        }
    }

    fn record(&self) -> String {
        std::fs::read_to_string(&self.record).unwrap_or_default()
    }

    fn ready_count(&self) -> usize {
        self.record().lines().filter(|l| *l == "READY").count()
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        self.down();
    }
}

/// The largest `field=N` in the lines of `log` containing `what`.
fn max_field(log: &str, what: &str, field: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| {
            let at = l.find(&format!("{field}="))? + field.len() + 1;
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

fn mapper_log(node: &Node) -> String {
    std::fs::read_to_string(node.path("mapper.log")).unwrap_or_default()
}

fn state(node: &Node) -> Option<String> {
    node.device("default/bench-1")?.state
}

fn reported(node: &Node, property: &str) -> Option<(String, u64)> {
    let d = node.device("default/bench-1")?;
    let p = prop(&d, property);
    Some((p.reported.clone()?, p.age_ms?))
}

#[test]
fn a_serial_device_polled_streamed_written_and_unplugged() {
    if !installed("socat") {
        eprintln!("SKIP: socat is not installed (hack/setup-test-env.sh installs it)");
        return;
    }
    let Some(python) = python() else {
        eprintln!("SKIP: python3 is not installed");
        return;
    };
    let mut node = Node::new(&[]);
    let mut line = Line::new(&node.path("tty"), python);
    line.up();
    let yaml = BENCH_YAML.replace("PORT", line.dev.to_str().unwrap());
    let file = node.path("devices/bench.yaml");
    std::fs::write(&file, &yaml).unwrap();
    node.start_edgecore();
    node.start_mapper("serial");

    // Polled: `ST,GS,+0012.34kg` decoded by the visitor's regex; the desired
    // set-point written (`T42`) and acknowledged, then read back.
    wait_for("online with weight and set-point", 40, || {
        let d = node.device("default/bench-1")?;
        let sp = prop(&d, "setpoint");
        (d.state.as_deref() == Some("online")
            && prop(&d, "weight").reported.as_deref() == Some("12.34")
            && sp.reported.as_deref() == Some("42")
            && sp.desired_status.as_deref() == Some("applied"))
        .then_some(())
    });
    assert!(line.record().contains("WRITE T42\n"), "{}", line.record());

    // Streamed: the altitude has no request, yet its twin keeps moving (one
    // sentence per 100 ms), and the 999.9 of the bad-checksum lines never
    // shows. Meanwhile the weight stays fresh through the garbage.
    let mut seen = std::collections::BTreeSet::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        if let Some((alt, _)) = reported(&node, "altitude") {
            assert_ne!(alt, "999.9", "a line with a bad checksum reached the twin");
            seen.insert(alt);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(
        seen.len() >= 4,
        "altitude did not follow the stream: {seen:?}"
    );
    assert!(
        !line
            .record()
            .lines()
            .any(|l| l.starts_with("REQ ") && l.contains("GPGGA")),
        "the streamed value was asked for"
    );
    let (w, age) = reported(&node, "weight").unwrap();
    assert_eq!(w, "12.34");
    assert!(age < 2500, "weight stale ({age} ms) amid garbage");

    // Garbage, unfinished lines and bad checksums are counted in the log.
    wait_for("discards counted in the mapper log", 30, || {
        let log = mapper_log(&node);
        (max_field(&log, "serial input discarded", "bad_checksum") >= 1
            && max_field(&log, "serial input discarded", "unmatched") >= 1)
            .then_some(())
    });

    // A new desired value reaches the device, acknowledged.
    std::fs::write(&file, yaml.replace("value: \"42\"", "value: \"57\"")).unwrap();
    wait_for("set-point 57 written and read back", 30, || {
        let (v, _) = reported(&node, "setpoint")?;
        (v == "57" && line.record().contains("WRITE T57\n")).then_some(())
    });
    // One the device refuses (within the model, above the device's 100):
    // `ERR` is not the ack, so the write is reported rejected.
    std::fs::write(&file, yaml.replace("value: \"42\"", "value: \"150\"")).unwrap();
    let reason = wait_for("set-point 150 rejected", 30, || {
        let d = node.device("default/bench-1")?;
        let sp = prop(&d, "setpoint");
        (sp.desired_status.as_deref() == Some("rejected")).then(|| sp.desired_reason.clone())
    })
    .unwrap_or_default();
    assert!(
        reason.contains("`ERR`, which does not match ack"),
        "{reason}"
    );
    assert!(line.record().contains("WRITE T150\n"));
    assert_eq!(reported(&node, "setpoint").unwrap().0, "57");

    // The port goes away: offline. It comes back at the same path: online,
    // both values flowing again.
    line.down();
    wait_for("offline once the port is gone", 30, || {
        (state(&node)?.as_str() == "offline").then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(state(&node).as_deref(), Some("offline"));
    line.up();
    let before = reported(&node, "altitude").map(|(v, _)| v);
    wait_for("online again with fresh values", 60, || {
        let (w, w_age) = reported(&node, "weight")?;
        let (alt, alt_age) = reported(&node, "altitude")?;
        (state(&node)?.as_str() == "online"
            && w == "12.34"
            && w_age < 1500
            && alt_age < 1500
            && Some(&alt) != before.as_ref())
        .then_some(())
    });
    let log = mapper_log(&node);
    assert!(
        log.contains("serial port failed"),
        "no port failure in the log"
    );
    assert!(!log.contains("panicked"), "{log}");
}
