//! `bench-suite`: the load benchmarks of this workspace, each printed next to a
//! baseline measured in the same run. See benches/README.md.
//!
//! ```text
//! bench-suite [--quick]      # the whole suite, prints a Markdown table
//! bench-suite bare-client …  # internal: the bare tokio-modbus baseline
//! bench-suite null-server …  # internal: the do-nothing tonic baseline
//! bench-suite mqtt-publisher … # internal: the bare rumqttc baseline
//! bench-suite opcua-client …   # internal: the OPC-UA baselines
//! ```

#![allow(clippy::print_stdout)] // a benchmark report is its output

mod ble;
mod cloud;
mod dmi;
mod fake_edgecore;
mod modbus;
mod opcua;
mod procs;
mod scale;
mod serial;
mod sinks;
mod startup;
mod wasm;

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::modbus::{Map, Scenario};

#[derive(Debug, Parser)]
#[command(about = "Load benchmarks with same-run baselines")]
struct Args {
    /// Small scales and short windows (about a minute): checks the suite runs.
    #[arg(long)]
    quick: bool,
    /// Measuring window per scenario, seconds (default 10, quick 2).
    #[arg(long)]
    seconds: Option<u64>,
    /// Simulated Modbus devices (default 8, quick 4).
    #[arg(long)]
    devices: Option<usize>,
    /// Registers read per device, contiguous map (default 500, quick 250).
    #[arg(long)]
    points: Option<u16>,
    /// Concurrent DMI clients (default 16, quick 8).
    #[arg(long)]
    clients: Option<usize>,
    /// Run only these groups: modbus, write, dmi, memory, startup, cloud,
    /// scale, sinks, serial, ble, wasm, opcua (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where the scale group draws its curves (SVG).
    #[arg(long, default_value = "target/bench-scale.svg")]
    plot: std::path::PathBuf,
    /// The scale group's edgecore-dmi points as `DEVICESxMAPPERS`, e.g.
    /// `10000x10,10000x100` (default: 1 000 / 10 000 / 50 000 devices ×
    /// 10 / 100 / 500 mappers; quick: 200 / 1 000 × 2 / 10).
    #[arg(long, value_delimiter = ',')]
    scale_nodes: Vec<String>,
    /// The scale group's one-mapper points, devices (default 100, 1 000,
    /// 5 000; quick: 20, 100). `0` alone skips them.
    #[arg(long, value_delimiter = ',')]
    scale_mapper: Vec<usize>,
    #[command(subcommand)]
    internal: Option<Internal>,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// The bare tokio-modbus client baseline.
    BareClient {
        #[arg(long, value_delimiter = ',')]
        ports: Vec<u16>,
        #[arg(long)]
        points: u16,
        #[arg(long)]
        stride: u16,
        #[arg(long)]
        millis: u64,
    },
    /// A do-nothing DeviceManagerService on a Unix socket.
    NullServer {
        #[arg(long)]
        socket: std::path::PathBuf,
    },
    /// The bare rumqttc publisher baseline of the sinks group.
    MqttPublisher(sinks::PublisherArgs),
    /// The baselines of the opcua group: bare Read loops, the driver alone.
    OpcuaClient(opcua::ClientArgs),
}

fn fmt_n(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.2}")
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cores} cores, {cpu}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.internal {
        Some(Internal::BareClient {
            ports,
            points,
            stride,
            millis,
        }) => {
            return modbus::bare_client_main(ports, points, stride, Duration::from_millis(millis))
                .await;
        }
        Some(Internal::NullServer { socket }) => return dmi::null_server_main(&socket).await,
        Some(Internal::MqttPublisher(a)) => return sinks::publisher_main(a).await,
        Some(Internal::OpcuaClient(a)) => return opcua::client_main(a).await,
        None => {}
    }
    let q = args.quick;
    let secs = Duration::from_secs(args.seconds.unwrap_or(if q { 2 } else { 10 }));
    let devices = args.devices.unwrap_or(if q { 4 } else { 8 });
    let points = args.points.unwrap_or(if q { 250 } else { 500 });
    let clients = args.clients.unwrap_or(if q { 8 } else { 16 });
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut rows: Vec<[String; 5]> = Vec::new();
    #[allow(clippy::type_complexity)]
    let mut row = |a: &str, b: String, c: String, d: String, e: &str| {
        rows.push([a.into(), b, c, d, e.into()])
    };

    let run = |g: &str| args.only.is_empty() || args.only.iter().any(|o| o == g);

    // 1. Modbus collection.
    for (label, map, pts) in [
        ("contiguous", Map::Contiguous, points),
        ("sparse (every 3rd register)", Map::Sparse, points / 2),
    ] {
        if !run("modbus") {
            break;
        }
        let s = Scenario {
            devices,
            points: pts,
            map,
            planning: true,
            cycle_ms: 1,
            duration: secs,
        };
        eprintln!("modbus {label}: planned...");
        let planned = modbus::collect(s).await?;
        eprintln!("modbus {label}: per-property...");
        let unplanned = modbus::collect(Scenario {
            planning: false,
            ..s
        })
        .await?;
        eprintln!("modbus {label}: bare client...");
        let bare = modbus::bare(s).await?;
        let scale = format!("{devices} devices × {pts} registers, {label}");
        row(
            &format!("Modbus points/s, {scale}"),
            fmt_n(planned.points_per_s),
            format!(
                "per-property: {}; bare client: {}",
                fmt_n(unplanned.points_per_s),
                fmt_n(bare.points_per_s)
            ),
            format!(
                "{:.1}× per-property; {:.0} % of bare",
                planned.points_per_s / unplanned.points_per_s,
                100.0 * planned.points_per_s / bare.points_per_s
            ),
            "≥ 20 % of bare",
        );
        row(
            &format!("Modbus points per core-second, {scale}"),
            fmt_n(planned.points_per_s / planned.cpu_cores.max(1e-9)),
            format!(
                "bare client: {}",
                fmt_n(bare.points_per_s / bare.cpu_cores.max(1e-9))
            ),
            format!(
                "{:.0} % of bare",
                100.0 * (planned.points_per_s / planned.cpu_cores.max(1e-9))
                    / (bare.points_per_s / bare.cpu_cores.max(1e-9))
            ),
            "≥ 5 M/core-s",
        );
        row(
            &format!("Mapper CPU-s per million points, {scale}"),
            format!("{:.3}", planned.cpu_per_mpoints),
            format!(
                "per-property: {:.3}; bare client: {:.3}",
                unplanned.cpu_per_mpoints, bare.cpu_per_mpoints
            ),
            String::new(),
            "",
        );
        row(
            &format!("Modbus requests per tick, {scale}"),
            format!("{:.1}", planned.requests_per_tick),
            format!("per-property: {:.1}", unplanned.requests_per_tick),
            format!(
                "{:.0}× fewer",
                unplanned.requests_per_tick / planned.requests_per_tick
            ),
            "≥ 20× fewer",
        );
        row(
            &format!("Mapper RSS at full load, {scale}"),
            format!("{:.1} MiB", planned.rss_mib),
            format!("per-property: {:.1} MiB", unplanned.rss_mib),
            String::new(),
            "",
        );
    }

    // 3. Write latency under full load.
    if run("write") {
        eprintln!("write latency...");
        let s = Scenario {
            devices,
            points,
            map: Map::Contiguous,
            planning: true,
            cycle_ms: 1,
            duration: secs,
        };
        let (p50, p99, max, load) = modbus::write_latency(s, if q { 10 } else { 100 }).await?;
        row(
            "Write latency UpdateDevice → register, under load",
            format!("p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"),
            format!("collecting {} points/s meanwhile", fmt_n(load.points_per_s)),
            String::new(),
            "p99 ≤ 20 ms",
        );
    }

    // 2. DMI reports.
    if run("dmi") {
        eprintln!("DMI reports: edgecore-dmi...");
        let dmi_devices = if q { 20 } else { 100 };
        let ec = dmi::edgecore_reports(clients, dmi_devices, secs).await?;
        eprintln!("DMI reports: null tonic server...");
        let null = dmi::null_server_reports(clients, dmi_devices, secs).await?;
        row(
            &format!("DMI reports/s over UDS, {clients} clients"),
            fmt_n(ec.per_s),
            format!("do-nothing tonic server: {}", fmt_n(null.per_s)),
            format!(
                "{:.0} % of the transport limit",
                100.0 * ec.per_s / null.per_s
            ),
            "≥ 50 k/s",
        );
        row(
            "DMI report latency",
            format!(
                "p50 {:.3} ms, p99 {:.3} ms, max {:.1} ms",
                ec.p50, ec.p99, ec.max
            ),
            format!(
                "p50 {:.3} ms, p99 {:.3} ms, max {:.1} ms",
                null.p50, null.p99, null.max
            ),
            String::new(),
            "p99 ≤ 2 ms",
        );
        row(
            "edgecore-dmi CPU and RSS under report load",
            format!(
                "{:.2} cores, {:.1} MiB, {} errors",
                ec.cpu_cores, ec.rss_mib, ec.errors
            ),
            format!("{:.2} cores, {:.1} MiB", null.cpu_cores, null.rss_mib),
            String::new(),
            "",
        );
    }

    // 4. Memory.
    if run("memory") {
        eprintln!("memory...");
        let idle = modbus::idle_mapper_rss().await?;
        row(
            "Idle mapper RSS (registered, no devices)",
            format!("{idle:.1} MiB"),
            String::new(),
            String::new(),
            "≤ 6 MB",
        );
        let hk = Scenario {
            devices: 10,
            points: 100,
            map: Map::Contiguous,
            planning: true,
            cycle_ms: 10,
            duration: secs,
        };
        let at = modbus::collect(hk).await?;
        row(
            "Mapper RSS at ~100 k points/s (10 devices × 100 registers every 10 ms)",
            format!("{:.1} MiB", at.rss_mib),
            format!(
                "measured {} points/s, {:.2} cores",
                fmt_n(at.points_per_s),
                at.cpu_cores
            ),
            String::new(),
            "≤ 25 MB",
        );
        let (ndev, nmap) = if q { (1000, 10) } else { (10_000, 100) };
        let (loaded, with_mappers) = dmi::edgecore_memory(ndev, nmap).await?;
        row(
            &format!("edgecore-dmi RSS, {ndev} devices stored, {nmap} mappers registered"),
            format!("{with_mappers:.1} MiB"),
            format!("{loaded:.1} MiB before the mappers registered"),
            String::new(),
            "≤ 15 MB at 10 k devices",
        );
    }

    // 4b. Start-up: mapper start → first twin; edgecore-dmi restart with a full store.
    if run("startup") {
        let runs = if q { 3 } else { 7 };
        let (ms, spread) = startup::first_twin(runs).await?;
        row(
            "Mapper start → first twin in edgecore-dmi (virtual mapper, one device)",
            format!("{ms:.0} ms"),
            spread,
            String::new(),
            "≤ 100 ms",
        );
        let (ndev, nmap) = if q { (1000, 10) } else { (10_000, 100) };
        let (serving, s_spread, all, a_spread) = startup::restart(ndev, nmap, runs).await?;
        row(
            &format!("edgecore-dmi restart, {ndev} devices stored, {nmap} mappers → serving"),
            format!("{serving:.0} ms"),
            s_spread,
            String::new(),
            "",
        );
        row(
            &format!(
                "edgecore-dmi restart, {ndev} devices stored, {nmap} mappers → all re-dispatched"
            ),
            format!("{all:.0} ms"),
            a_spread,
            String::new(),
            "≤ 1 s at 10 k devices",
        );
    }

    // 4c. Cloud traffic: status patches per device-hour against one message per report.
    if run("cloud") {
        for r in cloud::rows(q, args.seconds).await? {
            let [a, b, c, d, e] = r;
            row(&a, b, c, d, &e);
        }
    }

    // 4d. Scale curves: edgecore-dmi over devices × mappers, one mapper over devices.
    if run("scale") {
        for r in scale::rows(
            q,
            args.seconds,
            &args.plot,
            &args.scale_nodes,
            &args.scale_mapper,
        )
        .await?
        {
            let [a, b, c, d, e] = r;
            row(&a, b, c, d, &e);
        }
    }

    // 5. Data plane: pushMethod.mqtt and the spool.
    if run("sinks") {
        for r in sinks::rows(q, args.seconds).await? {
            let [a, b, c, d, e] = r;
            row(&a, b, c, d, &e);
        }
    }

    // 6. Serial: frames/s through mapper-serial against a bare tokio-serial loop.
    if run("serial") {
        for r in serial::rows(q, args.seconds).await? {
            let [a, b, c, d, e] = r;
            row(&a, b, c, d, &e);
        }
    }

    // 7. BLE: notification-to-twin latency through ble-mock and mapper-ble.
    if run("ble") {
        for r in ble::rows(q).await? {
            let [a, b, c, d, e] = r;
            row(&a, b, c, d, &e);
        }
    }

    // 8. WebAssembly plugins: host overhead per call, instances, Modbus plugin vs native.
    if run("wasm") {
        for r in wasm::rows(q, args.seconds).await? {
            let [a, b, c, d, e] = r;
            row(&a, b, c, d, &e);
        }
    }

    // 9. OPC-UA: batched polling against bare Read loops, subscriptions against the driver alone.
    if run("opcua") {
        for r in opcua::rows(q, args.seconds).await? {
            let [a, b, c, d, e] = r;
            row(&a, b, c, d, &e);
        }
    }

    println!("Results of `{command}` on {}:\n", machine());
    println!("| measure | result | baseline in the same run | ratio | target |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} | {} | {} |", r[0], r[1], r[2], r[3], r[4]);
    }
    Ok(())
}
