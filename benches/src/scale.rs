//! Scale curves: how edgecore-dmi's memory and CPU grow with the devices on
//! the node and the mappers serving them, and how one mapper's CPU per point
//! and memory grow with its devices. Printed as tables and drawn into one SVG
//! (plotters) with four panels.
//!
//! edgecore-dmi: `devices` devices of five properties in YAML, spread over
//! `mappers` protocols, each served by an in-process mapper that accepts every
//! dispatch; measured are the CPU-seconds from start until every device is
//! dispatched, RSS once dispatched, then the cores used while every device
//! reports its five twins once every 10 s (2 s in quick runs), each mapper on
//! its own connection. The plot's axes are both logarithmic, so linear growth
//! is a straight line of slope 1 (on top of a fixed part).
//!
//! Mapper: mapper-virtual with `devices` devices of five counters collected
//! and reported every second (a minimal in-process EdgeCore hands them out
//! and counts reports): CPU-seconds per million points and RSS.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use serde_json::json;

use crate::dmi::{devices_yaml, edgecore_args, register_mappers, status_request};
use crate::modbus::cv;
use crate::procs::{
    Proc, bin_dir, cpu_seconds, free_port, mapper_reads, rss_mib, start_mapper, wait_until,
};
use crate::startup::{admin_get, counting_mappers, until_count};

/// One point of the edgecore-dmi curve.
#[derive(Debug, Clone, Copy)]
struct NodePoint {
    devices: usize,
    mappers: usize,
    /// Start → every device dispatched, ms.
    load_ms: f64,
    /// CPU-seconds used until then.
    load_cpu_s: f64,
    /// RSS once dispatched, MiB.
    rss_mib: f64,
    /// RSS at the end of the report window, MiB.
    rss_reporting_mib: f64,
    /// Cores used while every device reports once per period.
    report_cores: f64,
    /// Reports per second achieved meanwhile.
    reports_per_s: f64,
}

/// One point of the mapper curve.
#[derive(Debug, Clone, Copy)]
struct MapperPoint {
    devices: usize,
    points_per_s: f64,
    cpu_per_mpoints: f64,
    rss_mib: f64,
}

async fn node_point(
    devices: usize,
    mappers: usize,
    period: Duration,
    window: Duration,
) -> anyhow::Result<NodePoint> {
    let dir = tempfile::tempdir()?;
    devices_yaml(&dir.path().join("devices"), devices, mappers)?;
    let (count, _guard) = counting_mappers(dir.path(), mappers)?;
    let t0 = Instant::now();
    let mut args = edgecore_args(dir.path());
    args.extend(["--max-mappers".to_owned(), (mappers + 16).to_string()]);
    let ec = Proc::start(
        &bin_dir().join("edgecore-dmi"),
        &args,
        &dir.path().join("edgecore.log"),
        &[],
    )?;
    let admin = dir.path().join("edgecore-dmi.admin.sock");
    let socket = dir.path().join("dmi.sock");
    loop {
        if admin_get(&admin, "/v1/status").await.is_some() {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(300),
            "edgecore-dmi did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client =
        DeviceManagerServiceClient::new(dmi_proto::transport::channel(&socket, Default::default()));
    register_mappers(&mut client, dir.path(), mappers, false).await?;
    let load_ms = until_count(&count, devices, t0, Duration::from_secs(600)).await?;
    let load_cpu_s = cpu_seconds(ec.pid());
    // The persister writes once a second; let it settle before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_mib(ec.pid());

    // Steady reports: mapper m owns the devices i ≡ m (mod mappers), and
    // every 100 ms sends its share so each device reports once per period
    // (a fractional budget carried from tick to tick).
    let stop = tokio_util::sync::CancellationToken::new();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticks_per_period = (period.as_millis() / 100).max(1) as f64;
    let mut tasks = Vec::new();
    for m in 0..mappers {
        let owned: Vec<usize> = (m..devices).step_by(mappers).collect();
        if owned.is_empty() {
            continue;
        }
        let mut c = DeviceManagerServiceClient::new(dmi_proto::transport::channel(
            &socket,
            Default::default(),
        ));
        let (stop, sent) = (stop.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let per_tick = owned.len() as f64 / ticks_per_period;
            let (mut budget, mut next) = (0.0f64, 0usize);
            while !stop.is_cancelled() {
                tick.tick().await;
                budget += per_tick;
                while budget >= 1.0 {
                    budget -= 1.0;
                    let i = owned[next % owned.len()];
                    next += 1;
                    if c.report_device_status(status_request(&format!("dev-{i}")))
                        .await
                        .is_ok()
                    {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // One period to reach the steady state, then the window.
    tokio::time::sleep(period).await;
    let (c0, n0, w0) = (
        cpu_seconds(ec.pid()),
        sent.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let secs = w0.elapsed().as_secs_f64();
    let (c1, n1) = (cpu_seconds(ec.pid()), sent.load(Ordering::Relaxed));
    let rss_reporting = rss_mib(ec.pid());
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    Ok(NodePoint {
        devices,
        mappers,
        load_ms,
        load_cpu_s,
        rss_mib: rss,
        rss_reporting_mib: rss_reporting,
        report_cores: (c1 - c0) / secs,
        reports_per_s: (n1 - n0) as f64 / secs,
    })
}

/// Five counters per device, collected and reported every second.
fn virtual_device(i: usize) -> pb::Device {
    pb::Device {
        name: format!("v-{i}"),
        namespace: "default".into(),
        spec: Some(pb::DeviceSpec {
            device_model_reference: "scale-model".into(),
            protocol: Some(pb::ProtocolConfig {
                protocol_name: "virtual".into(),
                config_data: None,
            }),
            properties: (0..5)
                .map(|j| pb::DeviceProperty {
                    name: format!("p{j}"),
                    visitors: Some(pb::VisitorConfig {
                        protocol_name: "virtual".into(),
                        config_data: cv(json!({"pattern": "counter", "max": 1_000_000_000})),
                    }),
                    collect_cycle: 1000,
                    report_cycle: 1000,
                    report_to_cloud: true,
                    ..Default::default()
                })
                .collect(),
            methods: vec![],
        }),
        status: Some(pb::DeviceStatus::default()),
    }
}

fn virtual_model() -> pb::DeviceModel {
    pb::DeviceModel {
        name: "scale-model".into(),
        namespace: "default".into(),
        spec: Some(pb::DeviceModelSpec {
            properties: (0..5)
                .map(|j| pb::ModelProperty {
                    name: format!("p{j}"),
                    r#type: "INT".into(),
                    access_mode: "ReadOnly".into(),
                    ..Default::default()
                })
                .collect(),
            commands: vec![],
        }),
    }
}

async fn mapper_point(devices: usize, window: Duration) -> anyhow::Result<MapperPoint> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("dmi.sock");
    let _edge = crate::fake_edgecore::serve(
        &socket,
        (0..devices).map(virtual_device).collect(),
        vec![virtual_model()],
    )
    .await?;
    let metrics = free_port();
    let mapper = start_mapper("mapper-virtual", dir.path(), &socket, metrics, &[])?;
    let reads = || mapper_reads(metrics);
    // Every device read at least twice: all connected and collecting.
    wait_until("every device collecting", 120, || {
        (reads() >= (devices * 10) as f64).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (r0, c0, t0) = (reads(), cpu_seconds(mapper.pid()), Instant::now());
    tokio::time::sleep(window).await;
    // CPU first: the scrape itself costs the mapper CPU.
    let c1 = cpu_seconds(mapper.pid());
    let secs = t0.elapsed().as_secs_f64();
    let r1 = reads();
    let points = r1 - r0;
    Ok(MapperPoint {
        devices,
        points_per_s: points / secs,
        cpu_per_mpoints: if points > 0.0 {
            (c1 - c0) / (points / 1e6)
        } else {
            f64::NAN
        },
        rss_mib: rss_mib(mapper.pid()),
    })
}

/// Says how `ys` grows with `xs` (both ascending): the marginal cost per unit
/// between consecutive points, and whether they agree within 35 % (linear)
/// or fall (sub-linear) or rise (super-linear).
fn growth(xs: &[f64], ys: &[f64], unit: &str) -> String {
    let slopes: Vec<f64> = xs
        .windows(2)
        .zip(ys.windows(2))
        .map(|(x, y)| (y[1] - y[0]) / (x[1] - x[0]))
        .collect();
    let shape = match (slopes.first(), slopes.last()) {
        (Some(_), Some(_)) if slopes.len() == 1 => "one step",
        (Some(a), Some(_)) if *a <= 0.0 => "flat or falling",
        (Some(a), Some(b)) => {
            let r = b / a;
            if (0.65..=1.35).contains(&r) {
                "linear"
            } else if r < 0.65 {
                "sub-linear"
            } else {
                "super-linear"
            }
        }
        _ => "no data",
    };
    let text: Vec<String> = slopes.iter().map(|s| format!("{s:.3}")).collect();
    format!("{shape} (marginal {} {unit})", text.join(", "))
}

fn draw(path: &Path, node: &[NodePoint], mappers: &[MapperPoint]) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1100, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let panels = root.split_evenly((2, 2));
    let colors = [RED, BLUE, GREEN, MAGENTA];
    let mut mapper_counts: Vec<usize> = node.iter().map(|p| p.mappers).collect();
    mapper_counts.sort_unstable();
    mapper_counts.dedup();
    type Series = Vec<(String, Vec<(f64, f64)>)>;
    let node_series = |f: fn(&NodePoint) -> f64| -> Series {
        mapper_counts
            .iter()
            .map(|m| {
                (
                    format!("{m} mappers"),
                    node.iter()
                        .filter(|p| p.mappers == *m)
                        .map(|p| (p.devices as f64, f(p)))
                        .collect(),
                )
            })
            .collect()
    };
    let mapper_series = |f: fn(&MapperPoint) -> f64| -> Series {
        vec![(
            "mapper-virtual".to_owned(),
            mappers.iter().map(|p| (p.devices as f64, f(p))).collect(),
        )]
    };
    let charts: [(&str, &str, Series); 4] = [
        (
            "edgecore-dmi RSS once dispatched",
            "MiB",
            node_series(|p| p.rss_mib),
        ),
        (
            "edgecore-dmi CPU, each device reporting once per period",
            "cores",
            node_series(|p| p.report_cores),
        ),
        (
            "one mapper: RSS, 5 counters per device at 1 s",
            "MiB",
            mapper_series(|p| p.rss_mib),
        ),
        (
            "one mapper: CPU per million points",
            "CPU-s",
            mapper_series(|p| p.cpu_per_mpoints),
        ),
    ];
    for (area, (title, unit, series)) in panels.iter().zip(charts) {
        let pts = series.iter().flat_map(|(_, s)| s.iter());
        let (xmin, xmax) = pts.clone().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
            (a.min(*x), b.max(*x))
        });
        let (ymin, ymax) = pts
            .filter(|(_, y)| *y > 0.0)
            .fold((f64::MAX, f64::MIN), |(a, b), (_, y)| {
                (a.min(*y), b.max(*y))
            });
        if xmin >= xmax || ymin > ymax {
            continue;
        }
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(
                (xmin * 0.8..xmax * 1.25).log_scale(),
                (ymin * 0.5..ymax * 2.0).log_scale(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("devices (log scale)")
            .y_desc(format!("{unit} (log scale)"))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (i, (label, s)) in series.into_iter().enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(s.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart
                .draw_series(s.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The rows of `--only scale`; draws the plot into `plot`.
pub(crate) async fn rows(
    q: bool,
    seconds: Option<u64>,
    plot: &Path,
    nodes: &[String],
    mapper_points: &[usize],
) -> anyhow::Result<Vec<[String; 5]>> {
    let window = Duration::from_secs(seconds.unwrap_or(if q { 2 } else { 10 }));
    // Each device reports once per period (quick runs: faster, to stay short).
    let period = Duration::from_secs(if q { 2 } else { 10 });
    let node_points: Vec<(usize, usize)> = if !nodes.is_empty() {
        nodes
            .iter()
            .map(|p| {
                let (d, m) = p.split_once('x').ok_or_else(|| {
                    anyhow::anyhow!("--scale-nodes {p}: expected DEVICESxMAPPERS")
                })?;
                Ok((d.trim().parse()?, m.trim().parse()?))
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        let (devices, mappers): (&[usize], &[usize]) = if q {
            (&[200, 1000], &[2, 10])
        } else {
            (&[1000, 10_000, 50_000], &[10, 100, 500])
        };
        mappers
            .iter()
            .flat_map(|&m| devices.iter().map(move |&d| (d, m)))
            .collect()
    };
    let mapper_devices: Vec<usize> = match mapper_points {
        [] if q => vec![20, 100],
        [] => vec![100, 1000, 5000],
        [0] => Vec::new(),
        p => p.to_vec(),
    };
    let mut out = Vec::new();
    let failed = |what: String, e: anyhow::Error| {
        eprintln!("scale: {what} failed: {e:#}");
        [
            what,
            "failed".to_owned(),
            format!("{e:#}"),
            String::new(),
            String::new(),
        ]
    };
    let mut node = Vec::new();
    for &(d, m) in &node_points {
        eprintln!("scale: edgecore-dmi, {d} devices, {m} mappers...");
        match node_point(d, m, period, window).await {
            Ok(p) => node.push(p),
            Err(e) => out.push(failed(format!("edgecore-dmi, {d} devices, {m} mappers"), e)),
        }
    }
    let mut mapper = Vec::new();
    for &d in &mapper_devices {
        eprintln!("scale: one mapper, {d} devices...");
        match mapper_point(d, window).await {
            Ok(p) => mapper.push(p),
            Err(e) => out.push(failed(format!("One mapper, {d} devices"), e)),
        }
    }
    for p in &node {
        out.push([
            format!(
                "edgecore-dmi, {} devices, {} mappers: RSS once dispatched (and while reporting); load",
                p.devices, p.mappers
            ),
            format!("{:.1} MiB ({:.1} MiB)", p.rss_mib, p.rss_reporting_mib),
            format!(
                "start → all dispatched {:.0} ms, {:.2} CPU-s",
                p.load_ms, p.load_cpu_s
            ),
            format!(
                "{:.2} KiB RSS per device (the process's fixed part included)",
                p.rss_mib * 1024.0 / p.devices as f64
            ),
            String::new(),
        ]);
        out.push([
            format!(
                "edgecore-dmi, {} devices, {} mappers: CPU with each device reporting every {} s",
                p.devices,
                p.mappers,
                period.as_secs()
            ),
            format!("{:.3} cores", p.report_cores),
            format!(
                "{} reports/s (offered {})",
                crate::fmt_n(p.reports_per_s),
                crate::fmt_n(p.devices as f64 / period.as_secs_f64())
            ),
            if p.reports_per_s > 0.0 {
                format!(
                    "{:.1} µs CPU per report",
                    p.report_cores * 1e6 / p.reports_per_s
                )
            } else {
                "n/a".to_owned()
            },
            String::new(),
        ]);
    }
    let mut node_mappers: Vec<usize> = node_points.iter().map(|&(_, m)| m).collect();
    node_mappers.sort_unstable();
    node_mappers.dedup();
    for m in node_mappers {
        let pts: Vec<&NodePoint> = node.iter().filter(|p| p.mappers == m).collect();
        let xs: Vec<f64> = pts.iter().map(|p| p.devices as f64).collect();
        out.push([
            format!("edgecore-dmi growth with devices, {m} mappers"),
            format!(
                "RSS: {}",
                growth(
                    &xs,
                    &pts.iter().map(|p| p.rss_mib * 1024.0).collect::<Vec<_>>(),
                    "KiB per device"
                )
            ),
            format!(
                "CPU: {}",
                growth(
                    &xs,
                    &pts.iter().map(|p| p.report_cores * 1e3).collect::<Vec<_>>(),
                    "millicores per device"
                )
            ),
            String::new(),
            String::new(),
        ]);
    }
    for p in &mapper {
        out.push([
            format!("One mapper, {} devices × 5 counters at 1 s", p.devices),
            format!(
                "{:.3} CPU-s per million points, {:.1} MiB",
                p.cpu_per_mpoints, p.rss_mib
            ),
            format!("{} points/s", crate::fmt_n(p.points_per_s)),
            format!(
                "{:.1} KiB per device",
                p.rss_mib * 1024.0 / p.devices as f64
            ),
            String::new(),
        ]);
    }
    let xs: Vec<f64> = mapper.iter().map(|p| p.devices as f64).collect();
    out.push([
        "One mapper, growth with devices".to_owned(),
        format!(
            "RSS: {}",
            growth(
                &xs,
                &mapper
                    .iter()
                    .map(|p| p.rss_mib * 1024.0)
                    .collect::<Vec<_>>(),
                "KiB per device"
            )
        ),
        format!(
            "CPU: {}",
            growth(
                &xs,
                &mapper
                    .iter()
                    .map(|p| p.cpu_per_mpoints * p.points_per_s / 1e3)
                    .collect::<Vec<_>>(),
                "millicores per device"
            )
        ),
        String::new(),
        String::new(),
    ]);
    if let Some(dir) = plot.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match draw(plot, &node, &mapper) {
        Ok(()) => eprintln!("scale: plot written to {}", plot.display()),
        Err(e) => out.push(failed(format!("scale plot {}", plot.display()), e)),
    }
    Ok(out)
}
