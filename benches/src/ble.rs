//! BLE benchmark: notification-to-twin latency through mapper-ble (its own
//! process) and ble-mock (`../shared/tools/ble-mock`: a private system D-Bus
//! running python-dbusmock's BlueZ template). N notifications, each with a
//! distinct value, are pushed with `ble-mock.sh notify`; the latency of one is
//! the time from starting that command to the in-process fake EdgeCore
//! receiving a `ReportDeviceStatus` whose twin holds the value. Baseline: the
//! time the notify command itself takes to return (a Python process
//! connecting to the bus and emitting `PropertiesChanged`), measured on the
//! same calls.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dmi_proto::config_data::{NumberEncoding, to_any_map};
use dmi_proto::v1beta1 as pb;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::fake_edgecore;
use crate::procs::{Proc, bin_dir};
use crate::serial::{repo, runs};
use crate::sinks::Row;

fn mock_script() -> PathBuf {
    repo().join("../shared/tools/ble-mock/ble-mock.sh")
}

/// Why the group cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !mock_script().exists() {
        return Some(format!("{} not found", mock_script().display()));
    }
    if !runs("dbus-daemon", &["--version"]) {
        return Some("dbus-daemon not installed (apt-get install dbus)".into());
    }
    if !runs("/usr/bin/python3", &["-c", "import dbusmock"]) {
        return Some("python3-dbusmock not installed (apt-get install python3-dbusmock)".into());
    }
    if !runs("busctl", &["--version"]) {
        return Some("busctl not installed (systemd)".into());
    }
    None
}

/// The mock's bus; stopped when dropped.
struct Mock(PathBuf);

impl Mock {
    fn start(dir: &Path) -> anyhow::Result<(Mock, String)> {
        let mock = Mock(dir.to_path_buf());
        let out = std::process::Command::new("bash")
            .arg(mock_script())
            .arg("start")
            .arg(dir)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "ble-mock.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bus = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("DBUS_SYSTEM_BUS_ADDRESS="))
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("ble-mock.sh start printed no bus address"))?;
        Ok((mock, bus))
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(mock_script())
            .arg("stop")
            .arg(&self.0)
            .output();
    }
}

fn cv(v: serde_json::Value) -> Option<pb::CustomizedValue> {
    let map = v.as_object().cloned().unwrap_or_default();
    to_any_map(&map, NumberEncoding::Stock)
        .ok()
        .map(|data| pb::CustomizedValue { data })
}

/// The mock's SensorTag: one INT property, the characteristic's two bytes as
/// a little-endian uint16 (the raw value, so every notified value is its own
/// twin text). Collected every 10 minutes: within the run, twins change only
/// by notification.
fn device() -> (pb::Device, pb::DeviceModel) {
    let model = pb::DeviceModel {
        name: "tag-model".into(),
        namespace: "default".into(),
        spec: Some(pb::DeviceModelSpec {
            properties: vec![pb::ModelProperty {
                name: "raw".into(),
                r#type: "INT".into(),
                access_mode: "ReadOnly".into(),
                ..Default::default()
            }],
            commands: vec![],
        }),
    };
    let device = pb::Device {
        name: "tag-1".into(),
        namespace: "default".into(),
        spec: Some(pb::DeviceSpec {
            device_model_reference: "tag-model".into(),
            protocol: Some(pb::ProtocolConfig {
                protocol_name: "ble".into(),
                config_data: cv(json!({
                    "macAddress": "11:22:33:44:55:66",
                    "adapter": "hci0",
                    "scanTimeoutMs": 3000,
                    "connectTimeoutMs": 3000,
                })),
            }),
            properties: vec![pb::DeviceProperty {
                name: "raw".into(),
                visitors: Some(pb::VisitorConfig {
                    protocol_name: "ble".into(),
                    config_data: cv(json!({
                        "characteristicUUID": "00002a6e-0000-1000-8000-00805f9b34fb",
                        "dataType": "uint16",
                        "byteOrder": "little",
                    })),
                }),
                collect_cycle: 600_000,
                report_to_cloud: true,
                ..Default::default()
            }],
            methods: vec![],
        }),
        status: Some(pb::DeviceStatus::default()),
    };
    (device, model)
}

/// The reported values of property `raw` in a report.
fn raw_values(r: &pb::ReportDeviceStatusRequest) -> impl Iterator<Item = &str> {
    r.reported_device
        .iter()
        .flat_map(|d| d.twins.iter())
        .filter(|t| t.property_name == "raw")
        .filter_map(|t| t.reported.as_ref().map(|p| p.value.as_str()))
}

/// Waits until a report carries `raw` = `want`; when it arrived.
async fn twin(
    rx: &mut UnboundedReceiver<(Instant, pb::ReportDeviceStatusRequest)>,
    want: &str,
    within: Duration,
) -> Option<Instant> {
    tokio::time::timeout(within, async {
        while let Some((t, r)) = rx.recv().await {
            if raw_values(&r).any(|v| v == want) {
                return Some(t);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

fn row(a: &str, b: String, c: String, d: String, e: &str) -> Row {
    [a.to_owned(), b, c, d, e.to_owned()]
}

fn ms(p: (f64, f64, f64)) -> String {
    format!("p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", p.0, p.1, p.2)
}

/// Runs the group and returns its rows (one explanatory row when the mock's
/// prerequisites are missing).
pub(crate) async fn rows(quick: bool) -> anyhow::Result<Vec<Row>> {
    if let Some(why) = missing() {
        eprintln!("ble: SKIPPED — {why}");
        return Ok(vec![row(
            "BLE notification → twin (ble group)",
            format!("skipped: {why}"),
            String::new(),
            String::new(),
            "",
        )]);
    }
    let n: u16 = if quick { 15 } else { 100 };
    let dir = tempfile::tempdir()?;
    let (mock, bus) = Mock::start(&dir.path().join("ble-mock"))?;
    let (dev, model) = device();
    let sock = dir.path().join("dmi.sock");
    let edge = fake_edgecore::serve(&sock, vec![dev], vec![model]).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = edge.state.status_tx.set(tx);
    let config = repo().join("examples/config/ble-mapper.yaml");
    let args: Vec<String> = [
        "--config-file",
        &config.display().to_string(),
        "--socket-path",
        &dir.path().join("ble.sock").display().to_string(),
        "--edgecore-sock",
        &sock.display().to_string(),
        "--log",
        "warn",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let log = dir.path().join("mapper.log");
    let mapper = Proc::start(
        &bin_dir().join("mapper-ble"),
        &args,
        &log,
        &[("DBUS_SYSTEM_BUS_ADDRESS", bus.as_str())],
    )?;
    eprintln!("ble: waiting for mapper-ble to connect and subscribe...");
    // The mock's initial value 0x66 0x08 = 2150: connected, read, subscribed.
    if twin(&mut rx, "2150", Duration::from_secs(40))
        .await
        .is_none()
    {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        anyhow::bail!("mapper-ble never reported the initial value; its log:\n{text}");
    }
    // Give the subscription a moment after the first read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("ble: {n} notifications...");
    let mock_dir = dir.path().join("ble-mock");
    let (mut latency, mut notify_ret, mut lost) = (Vec::new(), Vec::new(), 0u32);
    for i in 0..n {
        let v = 3000 + i;
        while rx.try_recv().is_ok() {}
        let [lo, hi] = v.to_le_bytes();
        let t0 = Instant::now();
        let cmd = tokio::process::Command::new("bash")
            .arg(mock_script())
            .arg("notify")
            .arg(&mock_dir)
            .arg(lo.to_string())
            .arg(hi.to_string())
            .output();
        let want = v.to_string();
        let (out, seen) = tokio::join!(
            async {
                let out = cmd.await;
                (out, Instant::now())
            },
            twin(&mut rx, &want, Duration::from_secs(5))
        );
        let (out, returned) = out;
        let out = out?;
        anyhow::ensure!(
            out.status.success(),
            "ble-mock.sh notify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        notify_ret.push(returned.duration_since(t0).as_secs_f64() * 1e3);
        match seen {
            Some(t) => latency.push(t.duration_since(t0).as_secs_f64() * 1e3),
            None => lost += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reports = edge
        .state
        .status_reports
        .load(std::sync::atomic::Ordering::Relaxed);
    drop(mapper);
    drop(edge);
    drop(mock);
    if lost > 0 {
        eprintln!("ble: WARNING {lost} of {n} notified values never reached a twin within 5 s");
    }
    let got = latency.len();
    let lat = percentiles(latency);
    let ret = percentiles(notify_ret);
    Ok(vec![
        row(
            &format!(
                "BLE notification → twin latency, {n} notifications (ble-mock, mapper-ble, ReportDeviceStatus at the fake EdgeCore)"
            ),
            ms(lat),
            format!("`ble-mock.sh notify` returning: {}", ms(ret)),
            format!("p50 {:.2}× the notify call", lat.0 / ret.0),
            "",
        ),
        row(
            "BLE notified values reaching a twin",
            format!("{got} of {n} ({lost} lost); {reports} status reports in all"),
            String::new(),
            String::new(),
            "all",
        ),
    ])
}
