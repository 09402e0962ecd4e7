//! Cloud traffic: what edgecore-dmi sends to the API server per device-hour
//! (status patches and their bytes) with the Kubernetes source, against
//! `kube-fake` (no real API server runs here), for 1 s collect and report
//! cycles on unchanged, slowly and fast changing values, next to what stock
//! EdgeCore sends: one upstream message per report. Its devicetwin sends every
//! accepted twin report to the cloud as `device/<ns>/<name>/twin/edge_updated`
//! without comparing values, and every state report as `.../state/update`,
//! each then one merge patch by the cloud's devicecontroller
//! (spec/dmi-v1beta1.md §2.4, §2.5, §4.4).
//!
//! The stock count is the reports edgecore-dmi accepted in the same window
//! (its `reports_total`), so both sides see the same mapper traffic. That is
//! a lower bound for a stock node: mapper-virtual sends one report per device
//! per report cycle, a stock Go mapper one per property (§4.4). Stock
//! bytes are estimated: each twin report at our mean patch body of the run
//! (the same twins), each state report at a state-only patch body, no message
//! envelope (stock adds one to each).

use std::path::Path;
use std::time::{Duration, Instant};

use kube_fake::FakeApi;
use serde_json::{Value, json};

use crate::procs::{Proc, bin_dir, start_mapper, wait_until};
use crate::startup::admin_get;

const DEVICES: &str = "devices.kubeedge.io/v1beta1/devices";
const MODELS: &str = "devices.kubeedge.io/v1beta1/devicemodels";
const STATUSES: &str = "devices.kubeedge.io/v1beta1/devicestatuses";
const NODE: &str = "bench-node";

/// How the simulated values move.
#[derive(Debug, Clone, Copy)]
enum Values {
    /// Nothing changes: only timestamps move (the refresh alone).
    Unchanged,
    /// Two integer ramps that step about once a minute and once every two
    /// minutes (periods spread per device, so devices change at different
    /// times), a constant text and a set-point: a tank level or a room
    /// temperature.
    Slow,
    /// Four counters that change on every read.
    Fast,
}

fn visitors(v: Values, device: usize) -> [(&'static str, &'static str, Value); 4] {
    // 10 steps over 10–15 min, 5 steps over 10–15 min.
    let period = 600_000 + (device as u64 * 7_919) % 300_000;
    // A constant text and a set-point, in both the unchanged and the slow mix.
    let mode = || {
        (
            "mode",
            "STRING",
            json!({"pattern": "constant", "value": "auto"}),
        )
    };
    let setpoint = || {
        (
            "setpoint",
            "INT",
            json!({"pattern": "setpoint", "value": 20}),
        )
    };
    match v {
        Values::Unchanged => [
            ("temp", "INT", json!({"pattern": "constant", "value": 21})),
            ("level", "INT", json!({"pattern": "constant", "value": 42})),
            mode(),
            setpoint(),
        ],
        Values::Slow => [
            (
                "temp",
                "INT",
                json!({"pattern": "ramp", "min": 0, "max": 10, "periodMs": period}),
            ),
            (
                "level",
                "INT",
                json!({"pattern": "ramp", "min": 40, "max": 45, "periodMs": period}),
            ),
            mode(),
            setpoint(),
        ],
        Values::Fast => ["a", "b", "c", "d"].map(|n| {
            (
                n,
                "INT",
                json!({"pattern": "counter", "max": 1_000_000_000}),
            )
        }),
    }
}

fn put_devices(api: &FakeApi, count: usize, v: Values) {
    let props = visitors(v, 0);
    api.put(
        MODELS,
        json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "cloud-model", "namespace": "default"},
            "spec": {"protocol": "virtual", "properties": props.iter().map(|(n, t, _)| json!({
                "name": n, "type": t, "accessMode": if *n == "setpoint" { "ReadWrite" } else { "ReadOnly" }}))
                .collect::<Vec<_>>()}}),
    );
    for i in 0..count {
        let props = visitors(v, i);
        let name = format!("dev-{i}");
        api.put(
            DEVICES,
            json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
                "metadata": {"name": name, "namespace": "default",
                    "labels": {"devices.kubeedge.io/node-name": NODE}},
                "spec": {"deviceModelRef": {"name": "cloud-model"}, "nodeName": NODE,
                    "protocol": {"protocolName": "virtual"},
                    "stateReport": {"reportToCloud": true, "reportCycle": 1000},
                    "properties": props.iter().map(|(n, _, c)| json!({
                        "name": n, "collectCycle": 1000, "reportCycle": 1000, "reportToCloud": true,
                        "visitors": {"protocolName": "virtual", "configData": c}}))
                        .collect::<Vec<_>>()}}),
        );
        api.put(
            STATUSES,
            json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceStatus",
                "metadata": {"name": name, "namespace": "default"}, "spec": {}, "status": {}}),
        );
    }
}

/// Status patches so far: (count, body bytes).
fn patches(api: &FakeApi) -> (f64, f64) {
    api.requests_with_sizes()
        .iter()
        .filter(|(m, p, _)| m == "PATCH" && p.contains("/status"))
        .fold((0.0, 0.0), |(n, b), (_, _, s)| (n + 1.0, b + *s as f64))
}

/// Accepted reports of `kind` (`twins`, `state`) in edgecore-dmi's metrics.
fn accepted(text: &str, kind: &str) -> f64 {
    let series = format!("edgecore_dmi_reports_total{{kind=\"{kind}\",result=\"accepted\"");
    text.lines()
        .filter(|l| l.starts_with(&series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Per device-hour over one window.
#[derive(Debug, Clone, Copy)]
struct Traffic {
    patches: f64,
    bytes: f64,
    /// Twin reports edgecore-dmi accepted: what stock EdgeCore forwards one by one.
    twin_reports: f64,
    /// State reports, likewise.
    state_reports: f64,
    /// Mean status patch body over the whole run, bytes.
    mean_patch: f64,
}

async fn scenario(
    dir: &Path,
    count: usize,
    v: Values,
    window: Duration,
    refresh: Duration,
) -> anyhow::Result<Traffic> {
    let api = FakeApi::start().await?;
    put_devices(&api, count, v);
    std::fs::create_dir_all(dir.join("devices"))?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig())?;
    let mut args = crate::dmi::edgecore_args(dir);
    args.extend(
        [
            "--source",
            "kubernetes",
            "--node-name",
            NODE,
            "--status-refresh",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    args.push(format!("{}s", refresh.as_secs()));
    let kc = kubeconfig.display().to_string();
    let _ec = Proc::start(
        &bin_dir().join("edgecore-dmi"),
        &args,
        &dir.join("edgecore.log"),
        &[("KUBECONFIG", &kc)],
    )?;
    let _mapper = start_mapper(
        "mapper-virtual",
        dir,
        &dir.join("dmi.sock"),
        crate::procs::free_port(),
        &[],
    )?;
    wait_until("every device's twins in its DeviceStatus", 60, || {
        (0..count)
            .all(|i| {
                api.get(STATUSES, "default", &format!("dev-{i}"))
                    .and_then(|ds| ds["status"]["twins"].as_array().map(Vec::len))
                    == Some(4)
            })
            .then_some(())
    })
    .await?;
    // The first patch of every device is out; measure the steady state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let admin = dir.join("edgecore-dmi.admin.sock");
    let scrape = async || -> anyhow::Result<(f64, f64)> {
        let text = admin_get(&admin, "/metrics")
            .await
            .ok_or_else(|| anyhow::anyhow!("edgecore-dmi's /metrics did not answer"))?;
        Ok((accepted(&text, "twins"), accepted(&text, "state")))
    };
    let (p0, b0) = patches(&api);
    let (tw0, st0) = scrape().await?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let (p1, b1) = patches(&api);
    let (tw1, st1) = scrape().await?;
    let hours = t0.elapsed().as_secs_f64() / 3600.0;
    let per = |x: f64| x / count as f64 / hours;
    Ok(Traffic {
        patches: per(p1 - p0),
        bytes: per(b1 - b0),
        twin_reports: per(tw1 - tw0),
        state_reports: per(st1 - st0),
        mean_patch: if p1 > 0.0 { b1 / p1 } else { f64::NAN },
    })
}

fn kib(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", bytes / 1024.0 / 1024.0)
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}

/// The body of a state-only patch, bytes: what a stock state message is
/// priced at.
fn state_patch_bytes() -> f64 {
    json!({"status": {"state": "online", "lastOnlineTime": "2026-01-01T00:00:00Z"}})
        .to_string()
        .len() as f64
}

/// The rows of `--only cloud`.
pub(crate) async fn rows(q: bool, seconds: Option<u64>) -> anyhow::Result<Vec<[String; 5]>> {
    let count = if q { 10 } else { 40 };
    // The refresh is scaled down in quick runs so that a short window still
    // sees it; the full run uses the default (60 s) over three refreshes.
    let refresh = Duration::from_secs(if q { 4 } else { 60 });
    let slow_window = Duration::from_secs(
        seconds.map_or(if q { 12 } else { 180 }, |s| s.max(2 * refresh.as_secs())),
    );
    let fast_window = Duration::from_secs(seconds.map_or(if q { 6 } else { 60 }, |s| s.max(5)));
    let mut out = Vec::new();
    for (label, v, window, target) in [
        ("unchanged values", Values::Unchanged, slow_window, ""),
        (
            "slowly changing values",
            Values::Slow,
            slow_window,
            "≤ 1/20 of stock",
        ),
        ("fast changing values", Values::Fast, fast_window, ""),
    ] {
        eprintln!("cloud traffic, {label}: {count} devices for {window:?}...");
        let dir = tempfile::tempdir()?;
        let t = match scenario(dir.path(), count, v, window, refresh).await {
            Ok(t) => t,
            Err(e) => {
                out.push([
                    format!("Cloud traffic, {label}"),
                    "failed".to_owned(),
                    format!("{e:#}"),
                    String::new(),
                    target.to_owned(),
                ]);
                continue;
            }
        };
        let stock = t.twin_reports + t.state_reports;
        let stock_bytes = t.twin_reports * t.mean_patch + t.state_reports * state_patch_bytes();
        let ratio = |ours: f64, stock: f64| {
            if ours > 0.0 {
                format!("1/{:.0} of stock", stock / ours)
            } else {
                "n/a: none in the window".to_owned()
            }
        };
        let scale = format!(
            "{label}, {count} devices × 4 properties, 1 s collect and report cycles, statusInterval 1 s, statusRefresh {} s, {} s window",
            refresh.as_secs(),
            window.as_secs()
        );
        out.push([
            format!("Status patches to the API server per device-hour, {scale}"),
            if t.patches > 0.0 {
                format!("{:.0}", t.patches)
            } else {
                "n/a".to_owned()
            },
            format!(
                "stock EdgeCore, one message per report: {:.0} ({:.0} twin + {:.0} state reports)",
                stock, t.twin_reports, t.state_reports
            ),
            ratio(t.patches, stock),
            target.to_owned(),
        ]);
        out.push([
            format!("Bytes to the API server per device-hour, {scale}"),
            kib(t.bytes),
            format!(
                "stock, estimated (twin reports × our mean patch body, state reports × a state-only patch body, no envelope): {}",
                kib(stock_bytes)
            ),
            ratio(t.bytes, stock_bytes),
            String::new(),
        ]);
    }
    Ok(out)
}
