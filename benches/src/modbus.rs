//! Modbus benchmarks: collection throughput through the real mapper-modbus
//! runtime against modbus-sim (separate processes), the same with planning off,
//! a bare tokio-modbus client issuing the same merged requests, write latency
//! under load, and mapper memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use dmi_proto::config_data::{NumberEncoding, to_any_map};
use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_mapper_service_client::DeviceMapperServiceClient;
use mapper_modbus::config::{PlanLimits, Table};
use serde_json::json;
use tokio_modbus::client::Reader;

use crate::fake_edgecore;
use crate::procs::{
    Proc, bin_dir, cpu_seconds, free_port, http_get, metric_sum, rss_mib, start_mapper, wait_until,
};

/// Register layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Map {
    /// Properties at consecutive registers.
    Contiguous,
    /// Properties at every third register (gaps of two, merged by the planner).
    Sparse,
}

impl Map {
    fn stride(self) -> u16 {
        match self {
            Map::Contiguous => 1,
            Map::Sparse => 3,
        }
    }
}

/// One collection scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scenario {
    /// Simulated devices (one TCP endpoint each).
    pub(crate) devices: usize,
    /// Properties (registers) per device.
    pub(crate) points: u16,
    /// Layout.
    pub(crate) map: Map,
    /// Read merging on.
    pub(crate) planning: bool,
    /// Collect cycle, ms (1: as fast as the device answers).
    pub(crate) cycle_ms: i64,
    /// Measuring window.
    pub(crate) duration: Duration,
}

/// What a collection run measured.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Collected {
    /// Property values read per second.
    pub(crate) points_per_s: f64,
    /// Mapper CPU seconds per million points.
    pub(crate) cpu_per_mpoints: f64,
    /// Modbus requests per device tick.
    pub(crate) requests_per_tick: f64,
    /// Mapper RSS at the end, MiB.
    pub(crate) rss_mib: f64,
    /// Mapper CPU share of one core during the window.
    pub(crate) cpu_cores: f64,
}

pub(crate) fn cv(v: serde_json::Value) -> Option<pb::CustomizedValue> {
    let map = v.as_object().cloned().unwrap_or_default();
    to_any_map(&map, NumberEncoding::Stock)
        .ok()
        .map(|data| pb::CustomizedValue { data })
}

/// The model of the benchmark devices: `points` INT properties and a set-point.
fn model(points: u16) -> pb::DeviceModel {
    let mut properties: Vec<pb::ModelProperty> = (0..points)
        .map(|j| pb::ModelProperty {
            name: format!("r{j}"),
            r#type: "INT".into(),
            access_mode: "ReadOnly".into(),
            ..Default::default()
        })
        .collect();
    properties.push(pb::ModelProperty {
        name: "sp".into(),
        r#type: "INT".into(),
        access_mode: "ReadWrite".into(),
        minimum: "0".into(),
        maximum: "65535".into(),
        ..Default::default()
    });
    pb::DeviceModel {
        name: "bench-model".into(),
        namespace: "default".into(),
        spec: Some(pb::DeviceModelSpec {
            properties,
            commands: vec![],
        }),
    }
}

/// A benchmark device on `port`; `setpoint` adds the writable property.
pub(crate) fn device(
    i: usize,
    port: u16,
    s: &Scenario,
    setpoint: Option<(u16, u32)>,
) -> pb::Device {
    let mut properties: Vec<pb::DeviceProperty> = (0..s.points)
        .map(|j| pb::DeviceProperty {
            name: format!("r{j}"),
            visitors: Some(pb::VisitorConfig {
                protocol_name: "modbus".into(),
                config_data: cv(json!({"register": "HoldingRegister", "offset": j * s.map.stride(), "limit": 1})),
            }),
            collect_cycle: s.cycle_ms,
            report_to_cloud: false,
            ..Default::default()
        })
        .collect();
    if let Some((offset, value)) = setpoint {
        properties.push(pb::DeviceProperty {
            name: "sp".into(),
            desired: Some(pb::TwinProperty {
                value: value.to_string(),
                metadata: BTreeMap::new(),
            }),
            visitors: Some(pb::VisitorConfig {
                protocol_name: "modbus".into(),
                config_data: cv(
                    json!({"register": "HoldingRegister", "offset": offset, "limit": 1}),
                ),
            }),
            collect_cycle: 1000,
            report_to_cloud: false,
            ..Default::default()
        });
    }
    pb::Device {
        name: format!("bench-{i}"),
        namespace: "default".into(),
        spec: Some(pb::DeviceSpec {
            device_model_reference: "bench-model".into(),
            protocol: Some(pb::ProtocolConfig {
                protocol_name: "modbus".into(),
                config_data: cv(
                    json!({"ip": "127.0.0.1", "port": port, "slaveID": 1, "timeout": 2000, "planning": s.planning}),
                ),
            }),
            properties,
            methods: vec![],
        }),
        status: Some(pb::DeviceStatus::default()),
    }
}

/// A running simulator with its device ports.
pub(crate) struct Sim {
    /// Kept to stop the simulator when dropped.
    _proc: Proc,
    /// One port per device.
    pub(crate) ports: Vec<u16>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("ports", &self.ports).finish()
    }
}

impl Sim {
    /// Starts `modbus-sim --devices N --registers R`.
    pub(crate) fn start(dir: &Path, devices: usize, registers: u16) -> anyhow::Result<Sim> {
        use std::io::BufRead;
        let args = vec![
            "--devices".to_owned(),
            devices.to_string(),
            "--registers".to_owned(),
            registers.to_string(),
        ];
        let mut proc = Proc::start(
            &bin_dir().join("modbus-sim"),
            &args,
            &dir.join("sim.log"),
            &[],
        )?;
        let out = proc
            .child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no simulator stdout"))?;
        let mut lines = std::io::BufReader::new(out).lines();
        let mut ports = Vec::new();
        for _ in 0..devices {
            let line = lines
                .next()
                .ok_or_else(|| anyhow::anyhow!("simulator ended early"))??;
            let port = line
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("bad line {line}"))?;
            ports.push(port);
        }
        Ok(Sim { _proc: proc, ports })
    }
}

/// A mapper-modbus process with its fake EdgeCore.
pub(crate) struct Mapper {
    proc: Proc,
    /// Metrics port.
    pub(crate) metrics: u16,
    /// The mapper's DMI socket.
    pub(crate) socket: std::path::PathBuf,
    _edge: fake_edgecore::Running,
}

impl std::fmt::Debug for Mapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapper")
            .field("metrics", &self.metrics)
            .finish()
    }
}

impl Mapper {
    /// Starts mapper-modbus registered with a fake EdgeCore serving `devices`.
    pub(crate) async fn start(
        dir: &Path,
        devices: Vec<pb::Device>,
        points: u16,
    ) -> anyhow::Result<Mapper> {
        Self::start_with(dir, devices, points, &[]).await
    }

    /// As [`Mapper::start`], with `extra` command-line arguments (a config
    /// file, a state directory).
    pub(crate) async fn start_with(
        dir: &Path,
        devices: Vec<pb::Device>,
        points: u16,
        extra: &[String],
    ) -> anyhow::Result<Mapper> {
        let edge =
            fake_edgecore::serve(&dir.join("dmi.sock"), devices, vec![model(points)]).await?;
        let metrics = free_port();
        let socket = dir.join("mapper-modbus.sock");
        let proc = start_mapper("mapper-modbus", dir, &dir.join("dmi.sock"), metrics, extra)?;
        wait_until("mapper metrics", 20, || http_get(metrics, "/metrics")).await?;
        let registered = edge.state.clone();
        wait_until("mapper registration", 20, || {
            (registered
                .registrations
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0)
            .then_some(())
        })
        .await?;
        Ok(Mapper {
            proc,
            metrics,
            socket,
            _edge: edge,
        })
    }

    /// Process id.
    pub(crate) fn pid(&self) -> u32 {
        self.proc.pid()
    }

    fn sample(&self) -> (Instant, f64, f64, f64, f64) {
        let text = http_get(self.metrics, "/metrics").unwrap_or_default();
        (
            Instant::now(),
            metric_sum(&text, "mapper_reads_total"),
            metric_sum(&text, "mapper_driver_requests_total"),
            metric_sum(&text, "mapper_ticks_total"),
            cpu_seconds(self.pid()),
        )
    }
}

/// Runs one collection scenario.
pub(crate) async fn collect(s: Scenario) -> anyhow::Result<Collected> {
    let dir = tempfile::tempdir()?;
    let registers = s.points * s.map.stride() + 8;
    let sim = Sim::start(dir.path(), s.devices, registers)?;
    let devices = sim
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| device(i, *p, &s, None))
        .collect();
    let mapper = Mapper::start(dir.path(), devices, s.points).await?;
    // Warm up: every device connected and reading.
    let expected = s.devices as f64 * f64::from(s.points);
    wait_until("all devices reading", 30, || {
        (mapper.sample().1 >= expected).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = mapper.sample();
    tokio::time::sleep(s.duration).await;
    let b = mapper.sample();
    let secs = b.0.duration_since(a.0).as_secs_f64();
    let points = b.1 - a.1;
    let cpu = b.4 - a.4;
    drop(sim);
    Ok(Collected {
        points_per_s: points / secs,
        cpu_per_mpoints: if points > 0.0 {
            cpu / (points / 1e6)
        } else {
            f64::NAN
        },
        requests_per_tick: if b.3 > a.3 {
            (b.2 - a.2) / (b.3 - a.3)
        } else {
            f64::NAN
        },
        rss_mib: rss_mib(mapper.pid()),
        cpu_cores: cpu / secs,
    })
}

/// The bare-client baseline: one tokio-modbus connection per device issuing the
/// planner's requests back to back, in a separate process (its CPU alone).
pub(crate) async fn bare(s: Scenario) -> anyhow::Result<Collected> {
    let dir = tempfile::tempdir()?;
    let registers = s.points * s.map.stride() + 8;
    let sim = Sim::start(dir.path(), s.devices, registers)?;
    let ports: Vec<String> = sim.ports.iter().map(u16::to_string).collect();
    let args = vec![
        "bare-client".to_owned(),
        "--ports".to_owned(),
        ports.join(","),
        "--points".to_owned(),
        s.points.to_string(),
        "--stride".to_owned(),
        s.map.stride().to_string(),
        "--millis".to_owned(),
        s.duration.as_millis().to_string(),
    ];
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .args(&args)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| anyhow::anyhow!("bare client said {text:?}: {e}"))?;
    drop(sim);
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok(Collected {
        points_per_s: f("points_per_s"),
        cpu_per_mpoints: f("cpu_per_mpoints"),
        requests_per_tick: f("requests_per_tick"),
        rss_mib: f("rss_mib"),
        cpu_cores: f("cpu_cores"),
    })
}

/// The body of `bench-suite bare-client`: prints one JSON line.
pub(crate) async fn bare_client_main(
    ports: Vec<u16>,
    points: u16,
    stride: u16,
    duration: Duration,
) -> anyhow::Result<()> {
    let items: Vec<(Table, u16, u16)> = (0..points)
        .map(|j| (Table::Holding, j * stride, 1))
        .collect();
    let limits = PlanLimits {
        max_gap: 16,
        max_registers: 125,
        max_bits: 2000,
        enabled: true,
    };
    let spans = mapper_modbus::plan::plan(&items, limits).spans;
    let me = std::process::id();
    let cpu0 = cpu_seconds(me);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for port in ports {
        let spans = spans.clone();
        tasks.push(tokio::spawn(async move {
            let mut ctx = tokio_modbus::client::tcp::connect_slave(
                ([127, 0, 0, 1], port).into(),
                tokio_modbus::Slave(1),
            )
            .await?;
            let mut ticks = 0u64;
            let mut requests = 0u64;
            while t0.elapsed() < duration {
                for s in &spans {
                    let r = ctx.read_holding_registers(s.start, s.count).await?;
                    requests += 1;
                    if r.is_err() {
                        anyhow::bail!("exception {r:?}");
                    }
                }
                ticks += 1;
            }
            Ok::<_, anyhow::Error>((ticks, requests))
        }));
    }
    let (mut ticks, mut requests) = (0u64, 0u64);
    for t in tasks {
        let (a, b) = t.await??;
        ticks += a;
        requests += b;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(me) - cpu0;
    let points = ticks as f64 * f64::from(points);
    let out = json!({
        "points_per_s": points / secs,
        "cpu_per_mpoints": cpu / (points / 1e6),
        "requests_per_tick": requests as f64 / ticks.max(1) as f64,
        "rss_mib": rss_mib(me),
        "cpu_cores": cpu / secs,
    });
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, format!("{out}\n").as_bytes())?;
    Ok(())
}

/// Write latency under full collection load: p50, p99, max in ms.
pub(crate) async fn write_latency(
    s: Scenario,
    writes: usize,
) -> anyhow::Result<(f64, f64, f64, Collected)> {
    let dir = tempfile::tempdir()?;
    let registers = s.points * s.map.stride() + 8;
    let sp_offset = registers - 1;
    let sim = Sim::start(dir.path(), s.devices, registers)?;
    let mut devices: Vec<pb::Device> = sim
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| device(i, *p, &s, None))
        .collect();
    devices[0] = device(0, sim.ports[0], &s, Some((sp_offset, 1)));
    let mapper = Mapper::start(dir.path(), devices, s.points).await?;
    let expected = s.devices as f64 * f64::from(s.points);
    wait_until("all devices reading", 30, || {
        (mapper.sample().1 >= expected).then_some(())
    })
    .await?;
    let a = mapper.sample();
    let mut client = DeviceMapperServiceClient::new(dmi_proto::transport::channel(
        &mapper.socket,
        Default::default(),
    ));
    let mut probe = tokio_modbus::client::tcp::connect_slave(
        ([127, 0, 0, 1], sim.ports[0]).into(),
        tokio_modbus::Slave(1),
    )
    .await?;
    let mut lat = Vec::with_capacity(writes);
    for k in 0..writes {
        let v = 1000 + k as u32;
        let dev = device(0, sim.ports[0], &s, Some((sp_offset, v)));
        let t0 = Instant::now();
        client
            .update_device(pb::UpdateDeviceRequest { device: Some(dev) })
            .await?;
        loop {
            let r = probe.read_holding_registers(sp_offset, 1).await?;
            if r.is_ok_and(|w| u32::from(w[0]) == v) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("write {v} never reached the register");
            }
        }
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = mapper.sample();
    let secs = b.0.duration_since(a.0).as_secs_f64();
    let load = Collected {
        points_per_s: (b.1 - a.1) / secs,
        rss_mib: rss_mib(mapper.pid()),
        cpu_cores: (b.4 - a.4) / secs,
        ..Collected::default()
    };
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    Ok((pct(0.5), pct(0.99), lat[lat.len() - 1], load))
}

/// Idle mapper RSS (registered, no devices), MiB.
pub(crate) async fn idle_mapper_rss() -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let mapper = Mapper::start(dir.path(), Vec::new(), 1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(rss_mib(mapper.pid()))
}
