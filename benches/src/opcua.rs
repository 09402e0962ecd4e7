//! OPC-UA benchmarks: mapper-opcua (its own process, registered with the
//! fake EdgeCore) against opcua-sim (its own process, generated Double
//! counters `ns=2;i=1000…`), each next to a baseline in its own process
//! (`bench-suite opcua-client`) doing the same work on the same kind of
//! server in the same run:
//!
//! * batched polling: N devices × M nodes, every device's nodes in one Read
//!   call per tick (`collectCycle` 1 ms: back to back), all devices on one
//!   shared session. Baseline: a bare Read loop per device on one
//!   async-opcua session (`Session::read` through mapper-opcua's
//!   `Conn::read_values`, the session opened as the mapper opens it), the
//!   same NodeIds and batch size, values only counted. Points per second
//!   and per core-second of the measured process, its RSS;
//! * subscriptions (`subscribe: true`): one subscription per device, one
//!   monitored item per node (sampling = publishing interval = 100 ms, queue
//!   of 1) on counters that change every 100 ms. Baseline: mapper-opcua's
//!   driver alone (the same subscriptions and notification path, without
//!   the SDK runtime), and the offered rate;
//! * mapper RSS while polling at ~100 k points/s (10 devices × 1000 nodes
//!   every 100 ms), or at the rate it reaches.
//!
//! dmi-bench does not depend on async-opcua itself (deny.toml keeps the
//! OPC-UA stack to mapper-opcua and opcua-sim), hence the baselines go
//! through mapper-opcua's public session and driver types.
//!
//! CPU time and RSS come from `/proc/<pid>` of the measured process. The
//! server's and the mapper's certificates (RSA key generation takes seconds,
//! much longer on debug builds) are made once and kept next to the binaries
//! in `opcua-bench-pki/`; security is None throughout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dmi_proto::config_data::{NumberEncoding, to_any_map};
use dmi_proto::v1beta1 as pb;
use futures::StreamExt;
use mapper_opcua::session::Conn;
use mapper_opcua::{NodeRef, OpcuaAddress, OpcuaConfig, OpcuaDriver};
use mapper_sdk::{DeviceClient, Driver, DriverError, DriverResult};
use serde_json::json;
use tokio::task::JoinSet;

use crate::fake_edgecore;
use crate::fmt_n;
use crate::procs::{
    Proc, bin_dir, cpu_seconds, free_port, http_get, metric_sum, rss_mib, start_mapper, wait_until,
};
use crate::sinks::Row;

/// Numeric id of opcua-sim's first generated node (`ns=2;i=1000`).
const FIRST_NODE: u32 = 1000;
/// opcua-sim's namespace index.
const NS: u16 = 2;
/// Less CPU time than this in a window (5 clock ticks) gives no per
/// core-second figure.
const MIN_CPU_S: f64 = 0.05;
/// How long the first session may take: on a cold certificate cache it
/// includes RSA key generation, slow on debug builds.
const FIRST_SESSION_SECS: u64 = 180;

/// One scenario.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    /// Devices, one subscription or one Read call per tick each.
    devices: usize,
    /// Nodes per device (the Read batch size; monitored items per subscription).
    nodes: u32,
    /// Polling: `collectCycle`, ms. Subscriptions: the sampling interval, the
    /// publishing interval and the counters' period.
    cycle_ms: u64,
    /// Monitored items instead of Read calls.
    subscribe: bool,
    /// Measuring window.
    duration: Duration,
}

impl Scenario {
    fn points(&self) -> f64 {
        self.devices as f64 * f64::from(self.nodes)
    }

    /// The counters' period: the cycle when subscribed (so every sample is a
    /// change), else opcua-sim's default.
    fn sim_period_ms(&self) -> u64 {
        if self.subscribe { self.cycle_ms } else { 1000 }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    /// Values read (or notified) per second.
    points_per_s: f64,
    /// CPU share of one core of the measured process.
    cpu_cores: f64,
    /// CPU seconds of the measured process during the window.
    cpu_s: f64,
    /// RSS of the measured process at the end, MiB.
    rss_mib: f64,
}

impl Measured {
    /// Points per CPU-second; not a number when the window held too few
    /// clock ticks of CPU time to divide by.
    fn per_core_s(&self) -> f64 {
        if self.cpu_s < MIN_CPU_S {
            return f64::NAN;
        }
        self.points_per_s / self.cpu_cores
    }
}

/// `a` as a percentage of `b`, or n/a.
fn pct(a: f64, b: f64, of: &str) -> String {
    let r = 100.0 * a / b;
    if r.is_finite() {
        format!("{r:.0} % of {of}")
    } else {
        "n/a".into()
    }
}

/// The NodeId of device `i`'s node `j` (devices read disjoint ranges).
fn node_id(i: usize, j: u32, nodes: u32) -> String {
    format!("ns={NS};i={}", FIRST_NODE + i as u32 * nodes + j)
}

/// Where the certificates are kept between runs.
fn pki_cache() -> PathBuf {
    bin_dir().join("opcua-bench-pki")
}

/// The mapper's state directory (its PKI is `pki/` below it; the baseline
/// client uses the same keys).
fn mapper_state_dir() -> PathBuf {
    pki_cache().join("mapper")
}

/// A running opcua-sim.
struct Sim {
    /// Kept to stop the simulator when dropped.
    _proc: Proc,
    /// `opc.tcp://127.0.0.1:PORT/`.
    url: String,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("url", &self.url).finish()
    }
}

impl Sim {
    /// Starts `opcua-sim --nodes N --period-ms P` on a free port and waits
    /// for its READY line.
    async fn start(dir: &Path, nodes: u32, period_ms: u64) -> anyhow::Result<Sim> {
        let args: Vec<String> = [
            "--nodes",
            &nodes.to_string(),
            "--period-ms",
            &period_ms.to_string(),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--pki-dir",
            &pki_cache().join("sim").display().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let log = dir.join("opcua-sim.log");
        let mut proc = Proc::start(&bin_dir().join("opcua-sim"), &args, &log, &[])?;
        let out = proc
            .child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no opcua-sim stdout"))?;
        let read = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut line = String::new();
            std::io::BufReader::new(out)
                .read_line(&mut line)
                .map(|_| line)
        });
        let line = tokio::time::timeout(Duration::from_secs(FIRST_SESSION_SECS), read)
            .await
            .map_err(|_| anyhow::anyhow!("opcua-sim did not say READY"))???;
        let url = line
            .strip_prefix("READY ")
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_owned)
            .ok_or_else(|| {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                anyhow::anyhow!("opcua-sim said {line:?}; its log: {}", text.trim())
            })?;
        Ok(Sim { _proc: proc, url })
    }
}

fn cv(v: serde_json::Value) -> Option<pb::CustomizedValue> {
    let map = v.as_object().cloned().unwrap_or_default();
    to_any_map(&map, NumberEncoding::Stock)
        .ok()
        .map(|data| pb::CustomizedValue { data })
}

/// The model: `nodes` DOUBLE properties.
fn model(nodes: u32) -> pb::DeviceModel {
    pb::DeviceModel {
        name: "opcua-bench-model".into(),
        namespace: "default".into(),
        spec: Some(pb::DeviceModelSpec {
            properties: (0..nodes)
                .map(|j| pb::ModelProperty {
                    name: format!("n{j}"),
                    r#type: "DOUBLE".into(),
                    access_mode: "ReadOnly".into(),
                    ..Default::default()
                })
                .collect(),
            commands: vec![],
        }),
    }
}

/// Device `i`: its `nodes` counters on `url`.
fn device(i: usize, url: &str, s: &Scenario) -> pb::Device {
    let properties = (0..s.nodes)
        .map(|j| pb::DeviceProperty {
            name: format!("n{j}"),
            visitors: Some(pb::VisitorConfig {
                protocol_name: "opcua".into(),
                config_data: cv(json!({"nodeID": node_id(i, j, s.nodes)})),
            }),
            collect_cycle: s.cycle_ms as i64,
            report_to_cloud: false,
            ..Default::default()
        })
        .collect();
    let mut protocol = json!({"url": url, "timeout": 5000});
    if s.subscribe {
        protocol["subscribe"] = json!(true);
        protocol["publishingInterval"] = json!(s.cycle_ms);
    }
    pb::Device {
        name: format!("opcua-bench-{i}"),
        namespace: "default".into(),
        spec: Some(pb::DeviceSpec {
            device_model_reference: "opcua-bench-model".into(),
            protocol: Some(pb::ProtocolConfig {
                protocol_name: "opcua".into(),
                config_data: cv(protocol),
            }),
            properties,
            methods: vec![],
        }),
        status: Some(pb::DeviceStatus::default()),
    }
}

/// A mapper-opcua process with its fake EdgeCore.
struct Mapper {
    proc: Proc,
    metrics: u16,
    _edge: fake_edgecore::Running,
}

impl std::fmt::Debug for Mapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapper")
            .field("pid", &self.proc.pid())
            .field("metrics", &self.metrics)
            .finish()
    }
}

impl Mapper {
    /// Starts mapper-opcua registered with a fake EdgeCore serving `devices`.
    async fn start(dir: &Path, devices: Vec<pb::Device>, nodes: u32) -> anyhow::Result<Mapper> {
        let edge = fake_edgecore::serve(&dir.join("dmi.sock"), devices, vec![model(nodes)]).await?;
        let metrics = free_port();
        let extra = [
            "--state-dir".to_owned(),
            mapper_state_dir().display().to_string(),
        ];
        let proc = start_mapper("mapper-opcua", dir, &dir.join("dmi.sock"), metrics, &extra)?;
        wait_until("mapper metrics", 20, || http_get(metrics, "/metrics")).await?;
        let registered = edge.state.clone();
        wait_until("mapper registration", 20, || {
            (registered.registrations.load(Ordering::Relaxed) > 0).then_some(())
        })
        .await?;
        Ok(Mapper {
            proc,
            metrics,
            _edge: edge,
        })
    }

    /// (time, property values read or notified, CPU seconds).
    fn sample(&self) -> (Instant, f64, f64) {
        let text = http_get(self.metrics, "/metrics").unwrap_or_default();
        (
            Instant::now(),
            metric_sum(&text, "mapper_reads_total"),
            cpu_seconds(self.proc.pid()),
        )
    }
}

/// Runs one scenario through mapper-opcua.
async fn run_mapper(s: Scenario) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let sim = Sim::start(dir.path(), s.devices as u32 * s.nodes, s.sim_period_ms()).await?;
    let devices = (0..s.devices).map(|i| device(i, &sim.url, &s)).collect();
    let mapper = Mapper::start(dir.path(), devices, s.nodes).await?;
    // Warm up: every device's session shared, every node read (or its
    // initial value notified) at least once.
    let expected = s.points();
    let warm = wait_until("every OPC-UA node read", FIRST_SESSION_SECS, || {
        (mapper.sample().1 >= expected).then_some(())
    })
    .await;
    if let Err(e) = warm {
        let log = std::fs::read_to_string(dir.path().join("mapper.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        anyhow::bail!("{e}; mapper log ends: {}", tail.join(" | "));
    }
    tokio::time::sleep(Duration::from_millis(if s.subscribe { 1000 } else { 500 })).await;
    let a = mapper.sample();
    tokio::time::sleep(s.duration).await;
    let b = mapper.sample();
    let secs = b.0.duration_since(a.0).as_secs_f64();
    let m = Measured {
        points_per_s: (b.1 - a.1) / secs,
        cpu_cores: (b.2 - a.2) / secs,
        cpu_s: b.2 - a.2,
        rss_mib: rss_mib(mapper.proc.pid()),
    };
    drop(mapper);
    drop(sim);
    Ok(m)
}

/// Runs one scenario through the baseline client (`bench-suite opcua-client`).
async fn run_baseline(s: Scenario) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let sim = Sim::start(dir.path(), s.devices as u32 * s.nodes, s.sim_period_ms()).await?;
    let mut args = vec![
        "opcua-client".to_owned(),
        "--url".to_owned(),
        sim.url.clone(),
        "--devices".to_owned(),
        s.devices.to_string(),
        "--nodes".to_owned(),
        s.nodes.to_string(),
        "--millis".to_owned(),
        s.duration.as_millis().to_string(),
        "--pki-dir".to_owned(),
        mapper_state_dir().join("pki").display().to_string(),
    ];
    if s.subscribe {
        args.push("--subscribe-ms".to_owned());
        args.push(s.cycle_ms.to_string());
    }
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .args(&args)
        .output()
        .await?;
    drop(sim);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| {
        anyhow::anyhow!(
            "the OPC-UA baseline client said {text:?} ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok(Measured {
        points_per_s: f("points_per_s"),
        cpu_cores: f("cpu_cores"),
        cpu_s: f("cpu_s"),
        rss_mib: f("rss_mib"),
    })
}

/// Arguments of `bench-suite opcua-client`, the baseline client.
#[derive(Debug, clap::Args)]
pub(crate) struct ClientArgs {
    /// Endpoint URL (security None, anonymous).
    #[arg(long)]
    url: String,
    /// Devices: one Read loop (or one subscription) each, on one session.
    #[arg(long)]
    devices: usize,
    /// Nodes per device: the Read batch (or the monitored items).
    #[arg(long)]
    nodes: u32,
    /// Measuring window, ms.
    #[arg(long)]
    millis: u64,
    /// Subscribe instead of reading: sampling and publishing interval, ms.
    #[arg(long)]
    subscribe_ms: Option<u64>,
    /// PKI directory (the client's certificate, when there is one).
    #[arg(long)]
    pki_dir: PathBuf,
}

fn driver_error(e: DriverError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Reads every device's nodes in one Read call each, one loop per device
/// on the shared session, back to back until `until`; good values read.
async fn read_loops(
    conn: &Arc<Conn>,
    devices: usize,
    nodes: u32,
    until: Option<Instant>,
) -> anyhow::Result<u64> {
    let mut tasks = Vec::with_capacity(devices);
    for i in 0..devices {
        let refs = (0..nodes)
            .map(|j| NodeRef::parse(&node_id(i, j, nodes)))
            .collect::<DriverResult<Vec<_>>>()
            .map_err(driver_error)?;
        let mut ids = Vec::with_capacity(refs.len());
        for r in &refs {
            ids.push(conn.resolve(r).map_err(driver_error)?.into());
        }
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let mut points = 0u64;
            loop {
                let values = conn
                    .read_values(ids.as_slice())
                    .await
                    .map_err(driver_error)?;
                points += values
                    .iter()
                    .filter(|v| v.status().is_good() && v.value.is_some())
                    .count() as u64;
                if until.is_none_or(|t| Instant::now() >= t) {
                    break;
                }
            }
            Ok::<_, anyhow::Error>(points)
        }));
    }
    let mut points = 0;
    for t in tasks {
        points += t.await??;
    }
    Ok(points)
}

/// One subscription per device through mapper-opcua's driver (monitored
/// items as the mapper makes them); the counter goes up per good value.
/// Returns the devices and the tasks counting their notifications, to be
/// kept while measuring (dropping the set stops the tasks).
async fn subscribe(
    driver: &OpcuaDriver,
    cfg: &OpcuaConfig,
    devices: usize,
    nodes: u32,
    ms: u64,
    count: &Arc<AtomicU64>,
) -> anyhow::Result<(Vec<mapper_opcua::OpcuaDevice>, JoinSet<()>)> {
    let mut open = Vec::with_capacity(devices);
    let mut counting = JoinSet::new();
    for i in 0..devices {
        let device = driver.connect(cfg).await.map_err(driver_error)?;
        let mut addrs = Vec::with_capacity(nodes as usize);
        for j in 0..nodes {
            let mut a = OpcuaAddress::new(&node_id(i, j, nodes)).map_err(driver_error)?;
            a.prepare(None, Some(Duration::from_millis(ms)))
                .map_err(driver_error)?;
            addrs.push(a);
        }
        let refs: Vec<&OpcuaAddress> = addrs.iter().collect();
        let Some(sub) = device.subscribe(&refs).await.map_err(driver_error)? else {
            anyhow::bail!("the driver did not subscribe");
        };
        if sub.covered.iter().any(|c| !c) {
            anyhow::bail!("the server refused some monitored items");
        }
        let (c, mut stream) = (count.clone(), sub.stream);
        counting.spawn(async move {
            while let Some(p) = stream.next().await {
                if p.value.is_ok() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        open.push(device);
    }
    Ok((open, counting))
}

/// The body of `bench-suite opcua-client`: prints one JSON line.
///
/// Polling: a Read loop per device on one async-opcua session (opened as
/// mapper-opcua opens its sessions), the same NodeIds and batch size as the
/// mapper, values only counted. Subscribed: mapper-opcua's driver alone
/// (its subscriptions and notification path, without the SDK runtime).
pub(crate) async fn client_main(a: ClientArgs) -> anyhow::Result<()> {
    let driver = OpcuaDriver::new(&a.pki_dir);
    let mut cfg = OpcuaConfig {
        url: a.url.clone(),
        timeout: Some(5000),
        ..OpcuaConfig::default()
    };
    let window = Duration::from_millis(a.millis);
    let me = std::process::id();
    let (points, secs, cpu) = match a.subscribe_ms {
        None => {
            let endpoint = cfg.endpoint().map_err(driver_error)?;
            let (_slot, conn) = driver.pool().open(&endpoint).await.map_err(driver_error)?;
            // Warm up: one Read per device.
            read_loops(&conn, a.devices, a.nodes, None).await?;
            let (t0, c0) = (Instant::now(), cpu_seconds(me));
            let points = read_loops(&conn, a.devices, a.nodes, Some(t0 + window)).await?;
            (
                points as f64,
                t0.elapsed().as_secs_f64(),
                cpu_seconds(me) - c0,
            )
        }
        Some(ms) => {
            cfg.subscribe = Some(true);
            cfg.publishing_interval = Some(ms);
            let count = Arc::new(AtomicU64::new(0));
            let _subscribed = subscribe(&driver, &cfg, a.devices, a.nodes, ms, &count).await?;
            // Warm up: every item's initial value, then a second of changes.
            let expected = a.devices as u64 * u64::from(a.nodes);
            wait_until("every initial value notified", 60, || {
                (count.load(Ordering::Relaxed) >= expected).then_some(())
            })
            .await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (t0, c0, n0) = (
                Instant::now(),
                cpu_seconds(me),
                count.load(Ordering::Relaxed),
            );
            tokio::time::sleep(window).await;
            let n = count.load(Ordering::Relaxed) - n0;
            (n as f64, t0.elapsed().as_secs_f64(), cpu_seconds(me) - c0)
        }
    };
    let out = json!({
        "points_per_s": points / secs,
        "cpu_cores": cpu / secs,
        "cpu_s": cpu,
        "rss_mib": rss_mib(me),
    });
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, format!("{out}\n").as_bytes())?;
    Ok(())
}

/// The group's rows.
pub(crate) async fn rows(quick: bool, seconds: Option<u64>) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let missing: Vec<&str> = ["mapper-opcua", "opcua-sim"]
        .into_iter()
        .filter(|b| !bin_dir().join(b).is_file())
        .collect();
    if !missing.is_empty() {
        rows.push([
            "OPC-UA".into(),
            "not run".into(),
            format!(
                "{} missing next to bench-suite: cargo build -p mapper-opcua -p opcua-sim --bins (with --release for a release bench-suite)",
                missing.join(", ")
            ),
            String::new(),
            String::new(),
        ]);
        return Ok(rows);
    }
    let duration = Duration::from_secs(seconds.unwrap_or(if quick { 2 } else { 10 }));
    let (devices, nodes) = if quick { (4, 250) } else { (8, 1000) };
    let polled = Scenario {
        devices,
        nodes,
        cycle_ms: 1,
        subscribe: false,
        duration,
    };
    let (sub_devices, sub_nodes) = if quick { (4, 250) } else { (10, 1000) };
    let subscribed = Scenario {
        devices: sub_devices,
        nodes: sub_nodes,
        cycle_ms: 100,
        subscribe: true,
        duration,
    };
    // 100 k points/s offered two ways: the Modbus memory row's shape (10
    // devices × 100 every 10 ms), and ten times the properties at a tenth
    // of the rate (10 × 1000 every 100 ms).
    let at_100k = [(100, 10), (1000, 100)].map(|(nodes, cycle_ms)| Scenario {
        devices: 10,
        nodes,
        cycle_ms,
        subscribe: false,
        duration,
    });

    // 1. Batched polling against bare Read loops.
    eprintln!("opcua polled: mapper...");
    let m = run_mapper(polled).await?;
    eprintln!("opcua polled: bare Read loops...");
    let b = run_baseline(polled).await?;
    let scale = format!("{devices} devices × {nodes} nodes, one Read of {nodes} per device tick");
    rows.push([
        format!("OPC-UA points/s, polled, {scale}"),
        fmt_n(m.points_per_s),
        format!("bare Read loops: {}", fmt_n(b.points_per_s)),
        pct(m.points_per_s, b.points_per_s, "bare"),
        String::new(),
    ]);
    rows.push([
        format!("OPC-UA points per core-second, polled, {devices} × {nodes}"),
        fmt_n(m.per_core_s()),
        format!(
            "bare Read loops: {} ({:.2} cores)",
            fmt_n(b.per_core_s()),
            b.cpu_cores
        ),
        pct(m.per_core_s(), b.per_core_s(), "bare"),
        "≥ 50 % of bare; ≥ 420 k/core-s".into(),
    ]);
    rows.push([
        format!("Mapper RSS polling at full speed, {devices} × {nodes}"),
        format!("{:.1} MiB ({:.2} cores)", m.rss_mib, m.cpu_cores),
        format!("bare Read loops: {:.1} MiB", b.rss_mib),
        String::new(),
        String::new(),
    ]);

    // 2. Subscriptions against the driver alone.
    eprintln!("opcua subscribed: mapper...");
    let m = run_mapper(subscribed).await?;
    eprintln!("opcua subscribed: driver alone...");
    let b = run_baseline(subscribed).await?;
    let offered = subscribed.points() * 1000.0 / subscribed.cycle_ms as f64;
    let scale = format!(
        "{sub_devices} subscriptions × {sub_nodes} items, sampling and publishing {} ms",
        subscribed.cycle_ms
    );
    rows.push([
        format!("OPC-UA notifications (points)/s, subscribed, {scale}"),
        fmt_n(m.points_per_s),
        format!(
            "driver alone: {}; offered: {}",
            fmt_n(b.points_per_s),
            fmt_n(offered)
        ),
        pct(m.points_per_s, b.points_per_s, "the driver alone"),
        String::new(),
    ]);
    rows.push([
        format!("OPC-UA notifications per core-second, subscribed, {sub_devices} × {sub_nodes}"),
        fmt_n(m.per_core_s()),
        format!(
            "driver alone: {} ({:.2} cores)",
            fmt_n(b.per_core_s()),
            b.cpu_cores
        ),
        pct(m.per_core_s(), b.per_core_s(), "the driver alone"),
        String::new(),
    ]);

    // 3. Memory at ~100 k points/s.
    for (k, at) in at_100k.into_iter().enumerate() {
        eprintln!(
            "opcua: mapper at ~100 k points/s, {} × {} every {} ms...",
            at.devices, at.nodes, at.cycle_ms
        );
        let r = run_mapper(at).await?;
        let mut baseline = format!(
            "measured {} points/s, {:.2} cores",
            fmt_n(r.points_per_s),
            r.cpu_cores
        );
        if k == 0 {
            baseline.push_str(&format!(
                "; subscribed above: {:.1} MiB at {} notifications/s",
                m.rss_mib,
                fmt_n(m.points_per_s)
            ));
        }
        rows.push([
            format!(
                "OPC-UA mapper RSS at ~100 k points/s ({} devices × {} nodes polled every {} ms)",
                at.devices, at.nodes, at.cycle_ms
            ),
            format!("{:.1} MiB", r.rss_mib),
            baseline,
            String::new(),
            "≤ 30 MB".into(),
        ]);
    }
    Ok(rows)
}
