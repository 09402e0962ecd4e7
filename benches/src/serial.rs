//! Serial benchmark: request/response frames per second through the real
//! mapper-serial (its own process, registered with the in-process fake
//! EdgeCore) against a scripted scale (`hack/serial-sim/scale.py`, Python)
//! on a socat PTY pair, next to a bare tokio-serial loop issuing the same
//! `W\r\n` → `ST,GS,+0012.34kg\r\n` exchange as fast as it can over a fresh
//! PTY pair and a fresh script in the same run.
//!
//! The mapper's figure is `mapper_reads_total` from its `/metrics` (one read
//! is one request answered and decoded); CPU comes from `/proc/<pid>` of the
//! mapper, of the script and (bare loop) of this process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dmi_proto::config_data::{NumberEncoding, to_any_map};
use dmi_proto::v1beta1 as pb;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fake_edgecore;
use crate::fmt_n;
use crate::procs::{Proc, cpu_seconds, free_port, mapper_reads, start_mapper, wait_until};
use crate::sinks::Row;

/// The workspace root (the scripts live in it).
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `cmd` runs with `args` and succeeds.
pub(crate) fn runs(cmd: &str, args: &[&str]) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

fn script() -> PathBuf {
    repo().join("hack/serial-sim/scale.py")
}

/// Why the group cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !runs("socat", &["-V"]) {
        return Some("socat is not installed (apt-get install socat)".into());
    }
    if !runs("python3", &["--version"]) {
        return Some("python3 is not installed".into());
    }
    if !script().is_file() {
        return Some(format!("{} not found", script().display()));
    }
    None
}

/// A socat PTY pair and the scripted scale on its far end; both stopped
/// when dropped (the script first).
struct Line {
    script: Proc,
    socat: Proc,
    /// The end the client (mapper or bare loop) opens.
    dev: PathBuf,
}

impl Line {
    async fn start(dir: &Path) -> anyhow::Result<Line> {
        use std::io::BufRead;
        let (dev, peer) = (dir.join("dev"), dir.join("scale"));
        let socat = Proc::start(
            Path::new("socat"),
            &[
                format!("pty,raw,echo=0,link={}", dev.display()),
                format!("pty,raw,echo=0,link={}", peer.display()),
            ],
            &dir.join("socat.log"),
            &[],
        )?;
        wait_until("socat PTY links", 10, || {
            (dev.exists() && peer.exists()).then_some(())
        })
        .await?;
        // No drift: every answer is the same 18-byte line, as in the bare loop.
        let mut script = Proc::start(
            Path::new("python3"),
            &[
                script().display().to_string(),
                "--port".to_owned(),
                peer.display().to_string(),
                "--drift".to_owned(),
                "0".to_owned(),
            ],
            &dir.join("scale.log"),
            &[],
        )?;
        let out = script
            .child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no script stdout"))?;
        let mut first = String::new();
        std::io::BufReader::new(out).read_line(&mut first)?;
        anyhow::ensure!(first.starts_with("READY"), "scale.py said {first:?}");
        Ok(Line { script, socat, dev })
    }

    /// CPU seconds of the device side: the script and socat relaying.
    fn cpu(&self) -> f64 {
        cpu_seconds(self.script.pid()) + cpu_seconds(self.socat.pid())
    }
}

fn cv(v: serde_json::Value) -> Option<pb::CustomizedValue> {
    let map = v.as_object().cloned().unwrap_or_default();
    to_any_map(&map, NumberEncoding::Stock)
        .ok()
        .map(|data| pb::CustomizedValue { data })
}

/// `props` FLOAT properties `w0..`, each polling `W\r\n` every `cycle_ms`.
fn device(dev: &Path, props: usize, cycle_ms: i64) -> (pb::Device, pb::DeviceModel) {
    let model = pb::DeviceModel {
        name: "scale-model".into(),
        namespace: "default".into(),
        spec: Some(pb::DeviceModelSpec {
            properties: (0..props)
                .map(|i| pb::ModelProperty {
                    name: format!("w{i}"),
                    r#type: "FLOAT".into(),
                    access_mode: "ReadOnly".into(),
                    ..Default::default()
                })
                .collect(),
            commands: vec![],
        }),
    };
    let properties = (0..props)
        .map(|i| pb::DeviceProperty {
            name: format!("w{i}"),
            visitors: Some(pb::VisitorConfig {
                protocol_name: "serial".into(),
                config_data: cv(json!({
                    "request": r"W\r\n",
                    "regex": r"^ST,GS,([+-]?[0-9.]+)kg$",
                })),
            }),
            collect_cycle: cycle_ms,
            report_to_cloud: false,
            ..Default::default()
        })
        .collect();
    let device = pb::Device {
        name: "scale-0".into(),
        namespace: "default".into(),
        spec: Some(pb::DeviceSpec {
            device_model_reference: "scale-model".into(),
            protocol: Some(pb::ProtocolConfig {
                protocol_name: "serial".into(),
                config_data: cv(json!({
                    "serialPort": dev.display().to_string(),
                    "baudRate": 115200,
                    "timeoutMs": 1000,
                })),
            }),
            properties,
            methods: vec![],
        }),
        status: Some(pb::DeviceStatus::default()),
    };
    (device, model)
}

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    frames_per_s: f64,
    /// CPU share of one core of the client (mapper or bare loop).
    client_cores: f64,
    /// CPU share of one core of the device side (Python script + socat).
    device_cores: f64,
    /// Mapper RSS, MiB (bare loop: 0).
    rss_mib: f64,
}

/// mapper-serial polling `props` properties every `cycle_ms` over `window`.
async fn through_mapper(
    props: usize,
    cycle_ms: i64,
    window: Duration,
    warmup: Duration,
) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let line = Line::start(dir.path()).await?;
    let (dev, model) = device(&line.dev, props, cycle_ms);
    let sock = dir.path().join("dmi.sock");
    let edge = fake_edgecore::serve(&sock, vec![dev], vec![model]).await?;
    let metrics = free_port();
    let mapper = start_mapper("mapper-serial", dir.path(), &sock, metrics, &[])?;
    let reads = || mapper_reads(metrics);
    wait_until("mapper-serial reading", 30, || {
        (reads() >= props as f64).then_some(())
    })
    .await
    .map_err(|e| {
        let log = std::fs::read_to_string(dir.path().join("mapper.log")).unwrap_or_default();
        anyhow::anyhow!("{e}; mapper log:\n{log}")
    })?;
    tokio::time::sleep(warmup).await;
    let mp = mapper.pid();
    let (t0, r0, m0, s0) = (Instant::now(), reads(), cpu_seconds(mp), line.cpu());
    tokio::time::sleep(window).await;
    let (t1, r1, m1, s1) = (Instant::now(), reads(), cpu_seconds(mp), line.cpu());
    let secs = t1.duration_since(t0).as_secs_f64();
    let out = Run {
        frames_per_s: (r1 - r0) / secs,
        client_cores: (m1 - m0) / secs,
        device_cores: (s1 - s0) / secs,
        rss_mib: crate::procs::rss_mib(mp),
    };
    drop(mapper);
    drop(edge);
    drop(line);
    Ok(out)
}

/// The bare loop: tokio-serial on the same kind of PTY pair and script, one
/// `W\r\n` at a time, waiting for the whole answer line and parsing its
/// number, for `window` (after `warmup`). `flush`: flush the port after each
/// request (tokio-serial's flush is `tcdrain`), as mapper-serial does.
async fn bare(window: Duration, warmup: Duration, flush: bool) -> anyhow::Result<Run> {
    use tokio_serial::SerialPortBuilderExt;
    let dir = tempfile::tempdir()?;
    let line = Line::start(dir.path()).await?;
    let mut port = tokio_serial::new(line.dev.display().to_string(), 115_200)
        .timeout(Duration::from_secs(1))
        .open_native_async()?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    let me = std::process::id();
    let start = Instant::now();
    let mut measuring: Option<(Instant, u64, f64, f64)> = None;
    let mut n = 0u64;
    let mut sum = 0.0f64;
    loop {
        let now = Instant::now();
        match measuring {
            None if now.duration_since(start) >= warmup => {
                measuring = Some((now, n, cpu_seconds(me), line.cpu()));
            }
            Some((t0, ..)) if now.duration_since(t0) >= window => break,
            _ => {}
        }
        port.write_all(b"W\r\n").await?;
        if flush {
            port.flush().await?;
        }
        loop {
            if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
                let frame = std::str::from_utf8(&buf[..end]).unwrap_or("");
                let v = frame
                    .strip_prefix("ST,GS,")
                    .and_then(|f| f.strip_suffix("kg"))
                    .and_then(|f| f.parse::<f64>().ok());
                let Some(v) = v else {
                    anyhow::bail!("bare loop: unexpected answer {frame:?}");
                };
                sum += v;
                buf.drain(..end + 2);
                break;
            }
            let got = tokio::time::timeout(Duration::from_secs(2), port.read(&mut chunk))
                .await
                .map_err(|_| anyhow::anyhow!("bare loop: no answer within 2 s"))??;
            anyhow::ensure!(got > 0, "bare loop: port closed");
            buf.extend_from_slice(&chunk[..got]);
        }
        n += 1;
    }
    let (t0, n0, c0, s0) = measuring.ok_or_else(|| anyhow::anyhow!("no window"))?;
    let secs = t0.elapsed().as_secs_f64();
    anyhow::ensure!(sum > 0.0, "bare loop read no weight");
    let out = Run {
        frames_per_s: (n - n0) as f64 / secs,
        client_cores: (cpu_seconds(me) - c0) / secs,
        device_cores: (line.cpu() - s0) / secs,
        rss_mib: 0.0,
    };
    drop(port);
    drop(line);
    Ok(out)
}

fn row(a: &str, b: String, c: String, d: String, e: &str) -> Row {
    [a.to_owned(), b, c, d, e.to_owned()]
}

/// Runs the group and returns its rows (one explanatory row when socat or
/// python3 is missing).
pub(crate) async fn rows(quick: bool, secs: Option<u64>) -> anyhow::Result<Vec<Row>> {
    if let Some(why) = missing() {
        eprintln!("serial: SKIPPED — {why}");
        return Ok(vec![row(
            "Serial frames/s (serial group)",
            format!("skipped: {why}"),
            String::new(),
            String::new(),
            "",
        )]);
    }
    let window = Duration::from_secs(secs.unwrap_or(if quick { 1 } else { 10 }));
    let warmup = Duration::from_millis(if quick { 300 } else { 1000 });
    // One property is paced by its 1 ms collectCycle (the SDK's timer); 16
    // properties due together are read back to back in one batch, so the
    // mapper goes as fast as the line answers. Full mode adds 4.
    let variants: &[usize] = if quick { &[1, 16] } else { &[1, 4, 16] };
    let cycle_ms = 1;
    // The bare loop runs before and after the mapper runs: on a busy machine
    // the two show how much the conditions moved meanwhile; ratios are to
    // their mean.
    eprintln!("serial: bare tokio-serial loop (before)...");
    let b0 = bare(window, warmup, false).await?;
    let mut runs = Vec::new();
    for &props in variants {
        eprintln!("serial: mapper-serial, {props} properties every {cycle_ms} ms...");
        runs.push((
            props,
            through_mapper(props, cycle_ms, window, warmup).await?,
        ));
    }
    eprintln!("serial: bare tokio-serial loop (after)...");
    let b1 = bare(window, warmup, false).await?;
    // Full mode: the bare loop again, flushing after every request.
    let bf = if quick {
        None
    } else {
        eprintln!("serial: bare tokio-serial loop, flush after each request...");
        Some(bare(window, warmup, true).await?)
    };
    let bare_mean = (b0.frames_per_s + b1.frames_per_s) / 2.0;
    let baseline = format!(
        "bare tokio-serial loop, one request in flight: {} before, {} after (loop {:.2}/{:.2} cores; device side {:.2}/{:.2} cores)",
        fmt_n(b0.frames_per_s),
        fmt_n(b1.frames_per_s),
        b0.client_cores,
        b1.client_cores,
        b0.device_cores,
        b1.device_cores
    );
    let mut out = Vec::new();
    for (props, m) in runs {
        out.push(row(
            &format!(
                "Serial frames/s through mapper-serial, PTY + Python scale, {props} polled propert{} (collectCycle {cycle_ms} ms)",
                if props == 1 { "y" } else { "ies" }
            ),
            format!(
                "{} (mapper {:.2} cores, {:.1} MiB; device side (script + socat) {:.2} cores)",
                fmt_n(m.frames_per_s),
                m.client_cores,
                m.rss_mib,
                m.device_cores
            ),
            baseline.clone(),
            format!(
                "{:.0} % of bare (mean of the two)",
                100.0 * m.frames_per_s / bare_mean
            ),
            "",
        ));
    }
    if let Some(f) = bf {
        out.push(row(
            "Serial frames/s, bare tokio-serial loop flushing (tcdrain) after each request",
            format!(
                "{} (loop {:.2} cores; device side {:.2} cores)",
                fmt_n(f.frames_per_s),
                f.client_cores,
                f.device_cores
            ),
            format!("without the flush: {}", fmt_n(bare_mean)),
            format!("{:.0} % of no flush", 100.0 * f.frames_per_s / bare_mean),
            "",
        ));
    }
    Ok(out)
}
