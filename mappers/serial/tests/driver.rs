//! The driver against in-process fake devices: over `tokio::io::duplex` (the
//! driver's [`Opener`] is swapped for one handing out pipe ends), over a real
//! PTY pair opened by path with tokio-serial, and the whole mapper against the
//! SDK's fake EdgeCore. Plus the SDK's driver conformance check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use mapper_sdk::testing::{Conformance, FakeEdgeCore, TestDevice, check_driver};
use mapper_sdk::{DeviceClient, Driver, DriverError, PropertyType, Value};
use mapper_serial::checksum::crc16_modbus;
use mapper_serial::{LineSettings, Opener, SerialAddress, SerialConfig, SerialDriver, SerialIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, WriteHalf};

/// Hands out the mapper's end of a pipe per path, once per `plug`.
#[derive(Default)]
struct Pipes {
    ends: Mutex<HashMap<String, DuplexStream>>,
}

impl Opener for Pipes {
    fn open(&self, path: &str, _: &LineSettings) -> io::Result<Box<dyn SerialIo>> {
        self.ends
            .lock()
            .unwrap()
            .remove(path)
            .map(|s| Box::new(s) as Box<dyn SerialIo>)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))
    }
}

impl Pipes {
    /// Plugs a device in at `path`: the next open gets the other end.
    fn plug(&self, path: &str) -> DuplexStream {
        let (mapper, device) = tokio::io::duplex(64 * 1024);
        self.ends.lock().unwrap().insert(path.to_owned(), mapper);
        device
    }
}

fn split_lines(chunk: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..chunk.len() {
        if chunk[i - 1] == b'\r' && chunk[i] == b'\n' {
            out.push(chunk[start..=i].to_vec());
            start = i + 1;
        }
    }
    if start < chunk.len() {
        out.push(chunk[start..].to_vec());
    }
    out
}

type Answer = Box<dyn FnMut(&[u8]) -> Vec<u8> + Send>;

/// A scripted device: each chunk it receives (one request) is recorded and
/// answered with what `answer` returns; `send` pushes unsolicited bytes.
struct FakeDevice {
    writer: Arc<tokio::sync::Mutex<WriteHalf<DuplexStream>>>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeDevice {
    fn start(stream: DuplexStream, mut answer: Answer) -> Self {
        let (mut rd, wr) = tokio::io::split(stream);
        let writer = Arc::new(tokio::sync::Mutex::new(wr));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (w, r) = (writer.clone(), received.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                // Requests written back to back arrive in one chunk: one
                // request per `\r\n`-terminated line (binary ones whole).
                for req in split_lines(&buf[..n]) {
                    r.lock().unwrap().push(req.clone());
                    let out = answer(&req);
                    if !out.is_empty() && w.lock().await.write_all(&out).await.is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            writer,
            received,
            task,
        }
    }

    async fn send(&self, bytes: &[u8]) {
        self.writer.lock().await.write_all(bytes).await.unwrap();
    }

    fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }

    /// Unplugs the device: the mapper's reads fail.
    fn unplug(self) {
        self.task.abort();
    }
}

fn config(v: serde_json::Value) -> SerialConfig {
    serde_json::from_value(v).unwrap()
}

fn address(v: serde_json::Value, ty: Option<PropertyType>) -> SerialAddress {
    let mut a: SerialAddress = serde_json::from_value(v).unwrap();
    a.set_model_type(ty);
    a
}

/// A scale (`W` → weight line), a set-point (`T?` → `T=<n>`, `T<n>` → `OK`),
/// and a Modbus-RTU-like binary register read.
fn scale_answers() -> Answer {
    let mut setpoint = 5i64;
    Box::new(move |req: &[u8]| match req {
        b"W\r\n" => b"ST,GS,+0012.34kg\r\n".to_vec(),
        b"T?\r\n" => format!("T={setpoint}\r\n").into_bytes(),
        [b'T', rest @ ..] if rest.ends_with(b"\r\n") => {
            match std::str::from_utf8(&rest[..rest.len() - 2])
                .ok()
                .and_then(|t| t.parse().ok())
            {
                Some(v) if v <= 100 => {
                    setpoint = v;
                    b"OK\r\n".to_vec()
                }
                _ => b"ERR\r\n".to_vec(),
            }
        }
        [0x01, 0x03, 0x00, 0x00, 0x00, 0x01, _, _] => {
            let mut f = vec![0x01, 0x03, 0x02, 0xFF, 0x38];
            f.extend_from_slice(&crc16_modbus(&f).to_le_bytes());
            f
        }
        _ => Vec::new(),
    })
}

fn weight() -> SerialAddress {
    address(
        json!({"request": "W\\r\\n", "regex": "^ST,GS,([+-]?[0-9.]+)kg$"}),
        Some(PropertyType::Float),
    )
}

fn register() -> SerialAddress {
    let req = [0x01u8, 0x03, 0x00, 0x00, 0x00, 0x01];
    let crc = crc16_modbus(&req).to_le_bytes();
    let hex: Vec<String> = req.iter().chain(&crc).map(|b| format!("{b:02X}")).collect();
    address(
        json!({
            "request": format!("hex:{}", hex.join(" ")),
            "lengthByte": 2, "lengthAdjust": 2, "checksum": "crc16-modbus",
            "start": 3, "dataType": "int16", "scale": 0.1
        }),
        Some(PropertyType::Float),
    )
}

fn setpoint() -> SerialAddress {
    address(
        json!({"request": "T?\\r\\n", "regex": "^T=(-?\\d+)$", "write": "T{value}\\r\\n", "ack": "^OK$"}),
        Some(PropertyType::Int),
    )
}

async fn scale_device(
    timeout_ms: u64,
) -> (
    SerialDriver,
    mapper_serial::SerialDevice,
    FakeDevice,
    Arc<Pipes>,
) {
    let pipes = Arc::new(Pipes::default());
    let dev = FakeDevice::start(pipes.plug("/dev/ttyFAKE0"), scale_answers());
    let driver = SerialDriver::with_opener(pipes.clone());
    let client = driver
        .connect(&config(
            json!({"serialPort": "/dev/ttyFAKE0", "timeoutMs": timeout_ms}),
        ))
        .await
        .unwrap();
    (driver, client, dev, pipes)
}

#[tokio::test]
async fn polled_values_text_and_binary() {
    let (_driver, d, dev, _pipes) = scale_device(500).await;
    assert_eq!(d.read(&weight()).await.unwrap(), Value::Float(12.34));
    // 0xFF38 = -200 × 0.1, the answer's CRC checked.
    assert_eq!(d.read(&register()).await.unwrap(), Value::Float(-20.0));
    assert_eq!(d.read(&setpoint()).await.unwrap(), Value::Int(5));
    assert_eq!(d.requests(), 3);
    assert_eq!(dev.received()[0], b"W\r\n");
    assert_eq!(d.discards(), Default::default());
}

#[tokio::test]
async fn writes_are_acknowledged_or_refused() {
    let (_driver, d, dev, _pipes) = scale_device(300).await;
    d.write(&setpoint(), &Value::Int(42)).await.unwrap();
    assert_eq!(dev.received().last().unwrap(), b"T42\r\n");
    assert_eq!(d.read(&setpoint()).await.unwrap(), Value::Int(42));
    // The device answers ERR: not the ack, so the device refused.
    let e = d.write(&setpoint(), &Value::Int(500)).await.unwrap_err();
    assert!(
        matches!(&e, DriverError::Device(f) if f.message.contains("`ERR`, which does not match ack `^OK$`")),
        "{e}"
    );
    // No write template: a value error, nothing sent.
    let before = dev.received().len();
    let e = d.write(&weight(), &Value::Float(1.0)).await.unwrap_err();
    assert!(matches!(e, DriverError::Value(_)), "{e}");
    assert_eq!(dev.received().len(), before);
    // Without `ack` nothing is awaited.
    let fire = address(
        json!({"write": "Z{value}\\r\\n"}),
        Some(PropertyType::Boolean),
    );
    d.write(&fire, &Value::Bool(true)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(dev.received().last().unwrap(), b"Z1\r\n");
}

#[tokio::test]
async fn garbage_partial_frames_and_bad_checksums_are_discarded() {
    let pipes = Arc::new(Pipes::default());
    let dev = FakeDevice::start(
        pipes.plug("/dev/ttyFAKE1"),
        Box::new(move |req: &[u8]| {
            match req {
                // Garbage line, an unfinished frame glued to junk, then the answer.
                b"W\r\n" => {
                    b"\x00\xff#!noise\r\nST,GS,+00\x07junk\r\nST,GS,+0001.50kg\r\n".to_vec()
                }
                // A frame with a wrong CRC right before the good one: the reader
                // realigns byte by byte.
                [0x01, 0x03, ..] => {
                    let mut good = vec![0x01, 0x03, 0x02, 0x00, 0x2A];
                    good.extend_from_slice(&crc16_modbus(&good).to_le_bytes());
                    let mut out = vec![0x01, 0x03, 0x02, 0x00, 0x2B, 0x00, 0x00];
                    out.extend_from_slice(&good);
                    out
                }
                _ => Vec::new(),
            }
        }),
    );
    let driver = SerialDriver::with_opener(pipes.clone());
    let d = driver
        .connect(&config(
            json!({"serialPort": "/dev/ttyFAKE1", "timeoutMs": 500}),
        ))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(d.read(&weight()).await.unwrap(), Value::Float(1.5));
    }
    let c = d.discards();
    assert_eq!(c.unmatched, 6, "{c:?}");
    assert_eq!(d.read(&register()).await.unwrap(), Value::Float(4.2));
    let c = d.discards();
    assert_eq!(c.bad_checksum, 1, "{c:?}");
    assert_eq!(c.skipped_bytes, 7, "{c:?}");
    // Unsolicited bytes while nothing listens are dropped; the next read is fine.
    dev.send(b"late\r\nanswer\r\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(d.read(&weight()).await.unwrap(), Value::Float(1.5));
    assert!(d.discards().skipped_bytes > 7);
}

#[tokio::test]
async fn silence_times_out_and_wrong_answers_are_named() {
    let pipes = Arc::new(Pipes::default());
    let _dev = FakeDevice::start(
        pipes.plug("/dev/ttyFAKE2"),
        Box::new(|req: &[u8]| match req {
            b"W\r\n" => b"US,GS,+0001.50lb\r\n".to_vec(),
            b"N\r\n" => b"ST,GS,abc\r\n".to_vec(),
            _ => Vec::new(),
        }),
    );
    let driver = SerialDriver::with_opener(pipes.clone());
    let d = driver
        .connect(&config(
            json!({"serialPort": "/dev/ttyFAKE2", "timeoutMs": 200}),
        ))
        .await
        .unwrap();
    let e = d.read(&weight()).await.unwrap_err();
    assert!(
        matches!(&e, DriverError::Value(m) if m.contains("`US,GS,+0001.50lb`, which does not match regex")),
        "{e}"
    );
    let silent = address(json!({"request": "Q\\r\\n"}), Some(PropertyType::Float));
    let e = d.read(&silent).await.unwrap_err();
    assert!(matches!(e, DriverError::Timeout(_)), "{e}");
    assert!(e.is_link_failure());
    // Matched, but not a number: the device answered, the value is bad.
    let n = address(
        json!({"request": "N\\r\\n", "regex": "^ST,GS,(.*)$"}),
        Some(PropertyType::Float),
    );
    let e = d.read(&n).await.unwrap_err();
    assert!(
        matches!(&e, DriverError::Value(m) if m.contains("`abc` is not a number")),
        "{e}"
    );
}

#[tokio::test]
async fn streamed_values_are_pushed_latest_first_and_bad_lines_dropped() {
    let pipes = Arc::new(Pipes::default());
    let dev = FakeDevice::start(pipes.plug("/dev/ttyGPS"), scale_answers());
    let driver = SerialDriver::with_opener(pipes.clone());
    let d = driver
        .connect(&config(json!({"serialPort": "/dev/ttyGPS"})))
        .await
        .unwrap();
    let nmea = |re: &str| {
        address(
            json!({"regex": re, "checksum": "xor", "checksumEncoding": "hex",
                   "checksumStart": 1, "checksumEnd": -3}),
            Some(PropertyType::Float),
        )
    };
    let altitude = nmea("^\\$GPGGA,(?:[^,]*,){8}([0-9.]+),M");
    let sats = nmea("^\\$GPGGA,(?:[^,]*,){6}([0-9]+),");
    let w = weight();
    let sub = d.subscribe(&[&w, &altitude, &sats]).await.unwrap().unwrap();
    assert_eq!(sub.covered, vec![false, true, true]);
    let mut stream = sub.stream;
    let line = |alt: &str, good: bool| {
        let body = format!("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,{alt},M,46.9,M,,");
        let sum = body.bytes().fold(0u8, |a, b| a ^ b) ^ u8::from(!good);
        format!("${body}*{sum:02X}\r\n").into_bytes()
    };
    dev.send(&line("545.4", true)).await;
    let mut got = HashMap::new();
    while got.len() < 2 {
        let p = tokio::time::timeout(Duration::from_secs(2), stream.next())
            .await
            .unwrap()
            .unwrap();
        got.insert(p.index, p.value.unwrap());
    }
    assert_eq!(got[&1], Value::Float(545.4));
    assert_eq!(got[&2], Value::Int(8));
    // Bad checksum and garbage never reach the twin; later lines do.
    dev.send(&line("999.9", false)).await;
    dev.send(b"\x00\x01garbage\r\n$GPGSV,partial").await;
    dev.send(b"\r\n").await;
    dev.send(&line("546.0", true)).await;
    loop {
        let p = tokio::time::timeout(Duration::from_secs(2), stream.next())
            .await
            .unwrap()
            .unwrap();
        let v = p.value.unwrap();
        assert_ne!(v, Value::Float(999.9));
        if p.index == 1 && v == Value::Float(546.0) {
            break;
        }
    }
    let c = d.discards();
    assert_eq!(c.bad_checksum, 1, "{c:?}");
    assert!(c.unmatched >= 2, "{c:?}");
    // Requests still work on a streaming port, between lines.
    dev.send(&line("547.0", true)).await;
    assert_eq!(d.read(&w).await.unwrap(), Value::Float(12.34));
    // A read of a streamed value waits for the next line.
    let (v, _) = tokio::join!(d.read(&altitude), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        dev.send(&line("548.5", true)).await;
    });
    assert_eq!(v.unwrap(), Value::Float(548.5));

    // Unplugged: the stream reports the link failure and ends.
    dev.unplug();
    let mut last = None;
    while let Some(p) = tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .unwrap()
    {
        last = Some(p);
    }
    let e = last.unwrap().value.unwrap_err();
    assert!(e.is_link_failure(), "{e}");
}

#[tokio::test]
async fn a_port_that_goes_away_fails_and_is_reopened_when_it_returns() {
    let (driver, d, dev, pipes) = scale_device(300).await;
    assert_eq!(d.read(&weight()).await.unwrap(), Value::Float(12.34));
    dev.unplug();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = d.read(&weight()).await.unwrap_err();
    assert!(matches!(e, DriverError::Transport(_)), "{e}");
    assert!(e.to_string().contains("/dev/ttyFAKE0"), "{e}");
    // Still gone at connect: a link error naming the port, not a panic.
    let e = driver
        .connect(&config(json!({"serialPort": "/dev/ttyFAKE0"})))
        .await
        .unwrap_err();
    assert!(matches!(e, DriverError::Transport(_)), "{e}");
    // Back: the next request reopens it.
    let _dev = FakeDevice::start(pipes.plug("/dev/ttyFAKE0"), scale_answers());
    assert_eq!(d.read(&weight()).await.unwrap(), Value::Float(12.34));
    assert_eq!(d.port().opens(), 2);
}

#[tokio::test]
async fn one_owner_per_port_and_conflicting_line_settings() {
    let pipes = Arc::new(Pipes::default());
    let _dev = FakeDevice::start(pipes.plug("/dev/ttyRS485"), scale_answers());
    let driver = SerialDriver::with_opener(pipes.clone());
    let a = driver
        .connect(&config(
            json!({"serialPort": "/dev/ttyRS485", "baudRate": 19200}),
        ))
        .await
        .unwrap();
    let b = driver
        .connect(&config(
            json!({"serialPort": "/dev/ttyRS485", "baudRate": 19200, "timeoutMs": 800}),
        ))
        .await
        .unwrap();
    assert!(Arc::ptr_eq(a.port(), b.port()));
    assert_eq!(driver.open_ports(), 1);
    // Both devices at once: requests take turns, every answer goes to its asker.
    let (wa, wb) = (weight(), setpoint());
    let reads = futures::future::join_all((0..20).map(|i| {
        let (c, at) = if i % 2 == 0 { (&a, &wa) } else { (&b, &wb) };
        c.read(at)
    }))
    .await;
    for (i, r) in reads.into_iter().enumerate() {
        let want = if i % 2 == 0 {
            Value::Float(12.34)
        } else {
            Value::Int(5)
        };
        assert_eq!(r.unwrap(), want);
    }
    let e = driver
        .connect(&config(
            json!({"serialPort": "/dev/ttyRS485", "baudRate": 9600, "parity": "even"}),
        ))
        .await
        .unwrap_err();
    let DriverError::Config(m) = e else {
        panic!("{e}")
    };
    assert!(m.contains("19200 8N1"), "{m}");
    assert!(m.contains("9600 8E1"), "{m}");
}

#[tokio::test]
async fn a_missing_tty_is_a_link_error_naming_it() {
    let driver = SerialDriver::default();
    let e = driver
        .connect(&config(json!({"serialPort": "/nonexistent/ttyUSB9"})))
        .await
        .unwrap_err();
    assert!(matches!(e, DriverError::Transport(_)), "{e}");
    assert!(e.to_string().contains("/nonexistent/ttyUSB9"), "{e}");
}

#[tokio::test]
async fn a_real_pty_opened_by_path() {
    use tokio_serial::SerialPort;
    let (mut master, slave) = tokio_serial::SerialStream::pair().unwrap();
    let path = slave.name().unwrap();
    drop(slave);
    let driver = SerialDriver::default();
    let d = driver
        .connect(&config(json!({"serialPort": path, "baudRate": 115200})))
        .await
        .unwrap();
    let device = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n") {
            let n = master.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        master.write_all(b"ST,GS,+0003.75kg\r\n").await.unwrap();
        (got, master)
    });
    assert_eq!(d.read(&weight()).await.unwrap(), Value::Float(3.75));
    let (got, _master) = device.await.unwrap();
    assert_eq!(got, b"W\r\n");
}

#[tokio::test]
async fn the_serial_driver_keeps_the_driver_contract() {
    let pipes = Arc::new(Pipes::default());
    let _dev = FakeDevice::start(pipes.plug("/dev/ttyFAKE3"), scale_answers());
    let broken = check_driver(
        Arc::new(SerialDriver::with_opener(pipes.clone())),
        Conformance {
            config: json!({"serialPort": "/dev/ttyFAKE3", "timeoutMs": 500}),
            readable: vec![
                (
                    json!({"request": "W\\r\\n", "regex": "^ST,GS,([+-]?[0-9.]+)kg$"}),
                    Some(PropertyType::Float),
                ),
                (
                    json!({"request": "T?\\r\\n", "regex": "^T=(-?\\d+)$"}),
                    Some(PropertyType::Int),
                ),
            ],
            writable: Some((
                json!({"request": "T?\\r\\n", "regex": "^T=(-?\\d+)$", "write": "T{value}\\r\\n", "ack": "^OK$"}),
                Some(PropertyType::Int),
                Value::Int(7),
            )),
        },
    )
    .await;
    assert!(broken.is_empty(), "{broken:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_mapper_against_the_fake_edgecore() {
    let pipes = Arc::new(Pipes::default());
    let dev = FakeDevice::start(pipes.plug("/dev/ttySCALE"), scale_answers());
    let edge = FakeEdgeCore::start().await.unwrap();
    edge.add_device(
        TestDevice::new("scale", "serial", json!({"serialPort": "/dev/ttySCALE", "timeoutMs": 500}))
            .read_only(
                "weight",
                "FLOAT",
                json!({"request": "W\\r\\n", "regex": "^ST,GS,([+-]?[0-9.]+)kg$"}),
                200,
            )
            .read_only("temperature", "FLOAT", json!({"regex": "^TMP=([0-9.]+)$"}), 200)
            .read_write(
                "setpoint",
                "INT",
                json!({"request": "T?\\r\\n", "regex": "^T=(-?\\d+)$", "write": "T{value}\\r\\n", "ack": "^OK$"}),
                200,
                Some("33"),
            ),
    )
    .await
    .unwrap();
    let _mapper = edge.spawn_mapper("serial", Arc::new(SerialDriver::with_opener(pipes.clone())));
    let wait = Duration::from_secs(10);
    edge.wait_for("weight twin", wait, |e| {
        (e.twin("scale", "weight")?.value == "12.34").then_some(())
    })
    .await
    .unwrap();
    edge.wait_for("set-point applied", wait, |e| {
        let t = e.twin("scale", "setpoint")?;
        (t.value == "33" && t.desired_status.as_deref() == Some("applied")).then_some(())
    })
    .await
    .unwrap();
    assert!(dev.received().iter().any(|r| r == b"T33\r\n"));
    // Streamed: no request asks for it, the twin follows the lines.
    for t in ["21.5", "22.25"] {
        dev.send(format!("TMP={t}\r\n").as_bytes()).await;
        edge.wait_for("temperature twin", wait, |e| {
            (e.twin("scale", "temperature")?.value == t).then_some(())
        })
        .await
        .unwrap();
    }
    assert!(!dev.received().iter().any(|r| r.starts_with(b"TMP")));
    edge.wait_for("online", wait, |e| {
        (e.state("scale")? == "online").then_some(())
    })
    .await
    .unwrap();
}
