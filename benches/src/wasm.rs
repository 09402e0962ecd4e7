//! WebAssembly driver plugins (mapper-wasm), each next to a native driver in
//! the same run, in this process (both drivers are called through the SDK's
//! `DynDriver`/`DynClient`, as the runtime calls them):
//!
//! * per-call cost of a trivial read: the `wasm_sim` plugin's `constant`
//!   property against a native driver returning a constant; the difference
//!   is the host's overhead per call (target ≤ 2 µs);
//! * instantiation: time to create and connect one instance of `wasm_sim`
//!   (compiled once beforehand), and resident memory per live instance;
//! * the `wasm_modbus` plugin against mapper-modbus on the same contiguous
//!   map of a modbus-sim device (its own process): points per second and per
//!   core-second of this process (aim: ≥ 50 % of native).
//!
//! The plugins come from target/plugins (`hack/build-plugins.sh`; build
//! them with `PROFILE=release` for figures worth quoting). Without them the
//! group reports why it did not run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mapper_sdk::{DeviceClient, Driver, DriverResult, DynClient, DynDriver, ErasedAddress, Value};
use mapper_wasm::{WasmDriver, WasmOptions};
use serde_json::{Map, Value as Json, json};

use crate::fmt_n;
use crate::procs::{bin_dir, cpu_seconds, rss_mib};
use crate::sinks::Row;

/// A native driver whose every read is a constant: the baseline of a call.
struct Constant;
struct ConstantDevice;

impl Driver for Constant {
    type Config = Json;
    type Address = Json;
    type Client = ConstantDevice;
    async fn connect(&self, _: &Json) -> DriverResult<ConstantDevice> {
        Ok(ConstantDevice)
    }
}

impl DeviceClient for ConstantDevice {
    type Address = Json;
    async fn read(&self, _: &Json) -> DriverResult<Value> {
        Ok(Value::Int(21))
    }
    async fn write(&self, _: &Json, _: &Value) -> DriverResult<()> {
        Ok(())
    }
}

fn obj(v: Json) -> Map<String, Json> {
    match v {
        Json::Object(m) => m,
        _ => Map::new(),
    }
}

/// target/plugins next to the binaries.
fn plugin(name: &str) -> Option<PathBuf> {
    let p = bin_dir()
        .parent()?
        .join("plugins")
        .join(format!("{name}.wasm"));
    p.is_file().then_some(p)
}

async fn connect(driver: &dyn DynDriver, cfg: Json) -> anyhow::Result<Box<dyn DynClient>> {
    let c = driver
        .config(&obj(cfg))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    driver
        .connect(&c.value)
        .await
        .map_err(|e| anyhow::anyhow!("connect: {e}"))
}

fn address(driver: &dyn DynDriver, v: Json) -> anyhow::Result<ErasedAddress> {
    Ok(driver
        .address(&obj(v), None)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .value)
}

/// Mean time of one single-address `read_batch`, after a warm-up.
async fn per_call(client: &dyn DynClient, at: &ErasedAddress, calls: u32) -> anyhow::Result<f64> {
    for _ in 0..calls / 10 {
        client.read_batch(&[at]).await.remove(0)?;
    }
    let t0 = Instant::now();
    for _ in 0..calls {
        client.read_batch(&[at]).await.remove(0)?;
    }
    Ok(t0.elapsed().as_secs_f64() * 1e9 / f64::from(calls))
}

/// Points read per second and per core-second of this process, reading
/// `points` contiguous holding registers in one batch, back to back.
async fn collect(
    client: &dyn DynClient,
    addrs: &[ErasedAddress],
    secs: Duration,
) -> anyhow::Result<(f64, f64)> {
    let refs: Vec<&ErasedAddress> = addrs.iter().collect();
    for r in client.read_batch(&refs).await {
        r?;
    }
    let me = std::process::id();
    let (t0, c0) = (Instant::now(), cpu_seconds(me));
    let mut points = 0u64;
    while t0.elapsed() < secs {
        for r in client.read_batch(&refs).await {
            r?;
            points += 1;
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(me) - c0).max(1e-9);
    Ok((points as f64 / wall, points as f64 / cpu))
}

/// The group's rows.
pub(crate) async fn rows(quick: bool, seconds: Option<u64>) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let (Some(sim_plugin), Some(modbus_plugin)) = (plugin("wasm_sim"), plugin("wasm_modbus"))
    else {
        rows.push([
            "WebAssembly plugins".into(),
            "not run".into(),
            "target/plugins/*.wasm missing: bash hack/build-plugins.sh".into(),
            String::new(),
            String::new(),
        ]);
        return Ok(rows);
    };
    let secs = Duration::from_secs(seconds.unwrap_or(if quick { 2 } else { 10 }));
    let wasm =
        WasmDriver::try_new(WasmOptions::new(Duration::from_secs(5)).with_reload_every(None))?;
    let wasm_dyn: &dyn DynDriver = &wasm;
    let native: Arc<dyn DynDriver> = Arc::new(Constant);

    // 1. A trivial read through the host against a native driver.
    eprintln!("wasm: per-call overhead...");
    let calls = if quick { 20_000 } else { 200_000 };
    let c = connect(wasm_dyn, json!({"plugin": sim_plugin.to_str()})).await?;
    let at = address(wasm_dyn, json!({"pattern": "constant", "value": 21}))?;
    let wasm_ns = per_call(c.as_ref(), &at, calls).await?;
    let n = connect(native.as_ref(), json!({})).await?;
    let nat = address(native.as_ref(), json!({}))?;
    let native_ns = per_call(n.as_ref(), &nat, calls).await?;
    rows.push([
        "Trivial read through the WebAssembly host (wasm_sim `constant`), per call".into(),
        format!("{:.2} µs", wasm_ns / 1e3),
        format!("native driver: {:.2} µs", native_ns / 1e3),
        format!("overhead {:.2} µs", (wasm_ns - native_ns) / 1e3),
        "overhead ≤ 2 µs".into(),
    ]);
    c.disconnect().await;

    // 2. Instantiation time and memory per instance.
    eprintln!("wasm: instances...");
    let count = if quick { 20 } else { 200 };
    let me = std::process::id();
    let before = rss_mib(me);
    let t0 = Instant::now();
    let mut live = Vec::with_capacity(count);
    for _ in 0..count {
        let c = connect(wasm_dyn, json!({"plugin": sim_plugin.to_str()})).await?;
        c.read_batch(&[&at]).await.remove(0)?;
        live.push(c);
    }
    let per_instance_ms = t0.elapsed().as_secs_f64() * 1e3 / count as f64;
    let per_instance_kib = (rss_mib(me) - before) * 1024.0 / count as f64;
    rows.push([
        "WebAssembly instance: create + connect + first read (wasm_sim, compiled once)".into(),
        format!("{per_instance_ms:.2} ms"),
        format!("{} compile(s) of the plugin file", wasm.compiles()),
        String::new(),
        String::new(),
    ]);
    rows.push([
        format!("Resident memory per live instance ({count} instances)"),
        format!("{per_instance_kib:.0} KiB"),
        format!(
            "plugin file {} KiB",
            std::fs::metadata(&sim_plugin)?.len() / 1024
        ),
        String::new(),
        "cap per instance: 64 MiB".into(),
    ]);
    for c in live {
        c.disconnect().await;
    }

    // 3. The Modbus plugin against mapper-modbus, same map.
    eprintln!("wasm: Modbus plugin vs mapper-modbus...");
    let points: u16 = if quick { 100 } else { 250 };
    let dir = tempfile::tempdir()?;
    let sim = crate::modbus::Sim::start(dir.path(), 1, points)?;
    let port = sim.ports[0];
    let visitors: Vec<Json> = (0..points)
        .map(|o| json!({"register": "HoldingRegister", "offset": o, "limit": 1}))
        .collect();
    let modbus_cfg = json!({"ip": "127.0.0.1", "port": port, "slaveID": 1, "timeout": 1000});
    let native: Arc<dyn DynDriver> = Arc::new(mapper_modbus::ModbusDriver::default());
    let n = connect(native.as_ref(), modbus_cfg.clone()).await?;
    let addrs = visitors
        .iter()
        .map(|v| address(native.as_ref(), v.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (native_ps, native_pcs) = collect(n.as_ref(), &addrs, secs).await?;
    n.disconnect().await;
    let mut cfg = modbus_cfg;
    cfg["plugin"] = json!(modbus_plugin.to_str());
    cfg["grantTcp"] = json!(format!("127.0.0.1:{port}"));
    let w = connect(wasm_dyn, cfg).await?;
    let addrs = visitors
        .iter()
        .map(|v| address(wasm_dyn, v.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (wasm_ps, wasm_pcs) = collect(w.as_ref(), &addrs, secs).await?;
    w.disconnect().await;
    rows.push([
        format!("Modbus points/s, wasm_modbus plugin, 1 device × {points} contiguous registers"),
        fmt_n(wasm_ps),
        format!("mapper-modbus driver: {}", fmt_n(native_ps)),
        format!("{:.0} % of native", 100.0 * wasm_ps / native_ps),
        String::new(),
    ]);
    rows.push([
        format!(
            "Modbus points per core-second (this process), wasm_modbus plugin, {points} registers"
        ),
        fmt_n(wasm_pcs),
        format!("mapper-modbus driver: {}", fmt_n(native_pcs)),
        format!("{:.0} % of native", 100.0 * wasm_pcs / native_pcs),
        "≥ 50 % of native".into(),
    ]);
    Ok(rows)
}
