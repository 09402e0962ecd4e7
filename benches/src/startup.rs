//! Start-up latencies of the real binaries:
//!
//! * mapper start → first twin in edgecore-dmi: edgecore-dmi runs with one
//!   virtual device (`examples/devices/thermostat.yaml`); the clock starts
//!   when `mapper-virtual` is spawned and stops when edgecore-dmi's admin API
//!   shows a reported value for the device (polled every millisecond);
//! * edgecore-dmi restart with N devices in its store and M mappers
//!   registered → serving (the admin API answers) and every device
//!   re-dispatched (each mapper, a plain tonic `DeviceMapperService` in this
//!   process, has received a RegisterDevice for each of its devices again).
//!
//! Each is run several times; the median and the range are reported.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use dmi_proto::v1beta1::device_mapper_service_server::{
    DeviceMapperService, DeviceMapperServiceServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Request, Response, Status};

use crate::dmi::{devices_yaml, edgecore_args, register_mappers};
use crate::procs::{Proc, bin_dir};

/// `GET path` on edgecore-dmi's admin socket; the body when it answers 200.
pub(crate) async fn admin_get(socket: &Path, path: &str) -> Option<String> {
    let mut s = tokio::net::UnixStream::connect(socket).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// Median and range of `xs` (ms), as text.
pub(crate) fn summary(mut xs: Vec<f64>) -> (f64, String) {
    xs.sort_by(f64::total_cmp);
    let median = xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN);
    let spread = format!(
        "median of {} runs; range {:.0}–{:.0} ms",
        xs.len(),
        xs.first().copied().unwrap_or(f64::NAN),
        xs.last().copied().unwrap_or(f64::NAN)
    );
    (median, spread)
}

/// One run of mapper start → first twin, ms.
async fn first_twin_once(repo: &Path) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("devices"))?;
    std::fs::copy(
        repo.join("examples/devices/thermostat.yaml"),
        dir.path().join("devices/thermostat.yaml"),
    )?;
    let _ec = Proc::start(
        &bin_dir().join("edgecore-dmi"),
        &edgecore_args(dir.path()),
        &dir.path().join("edgecore.log"),
        &[],
    )?;
    let admin = dir.path().join("edgecore-dmi.admin.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(body) = admin_get(&admin, "/v1/status").await
            && body.contains("thermostat-1")
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "edgecore-dmi did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let args: Vec<String> = [
        "--config-file",
        &repo
            .join("examples/config/virtual-mapper.yaml")
            .display()
            .to_string(),
        "--socket-path",
        &dir.path().join("virtual.sock").display().to_string(),
        "--edgecore-sock",
        &dir.path().join("dmi.sock").display().to_string(),
        "--log",
        "warn",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let t0 = Instant::now();
    let _mapper = Proc::start(
        &bin_dir().join("mapper-virtual"),
        &args,
        &dir.path().join("mapper.log"),
        &[],
    )?;
    loop {
        if let Some(body) = admin_get(&admin, "/v1/status").await {
            let v: serde_json::Value = serde_json::from_str(&body)?;
            let reported = v["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|d| d["properties"].as_array().into_iter().flatten())
                .any(|p| p["reported"].is_string());
            if reported {
                return Ok(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(20),
            "no twin within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Mapper start → first twin in edgecore-dmi: (median ms, spread text).
pub(crate) async fn first_twin(runs: usize) -> anyhow::Result<(f64, String)> {
    let repo = bin_dir()
        .ancestors()
        .find(|p| p.join("examples/devices/thermostat.yaml").exists())
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("examples/ not found above {}", bin_dir().display()))?;
    let mut xs = Vec::new();
    for _ in 0..runs {
        xs.push(first_twin_once(&repo).await?);
    }
    Ok(summary(xs))
}

/// A mapper that accepts everything and counts RegisterDevice calls.
#[derive(Debug, Clone)]
struct CountingMapper(Arc<AtomicUsize>);

#[tonic::async_trait]
impl DeviceMapperService for CountingMapper {
    async fn register_device(
        &self,
        _r: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::RegisterDeviceResponse>, Status> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(pb::RegisterDeviceResponse::default()))
    }
    async fn remove_device(
        &self,
        _r: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceResponse>, Status> {
        Ok(Response::new(pb::RemoveDeviceResponse::default()))
    }
    async fn update_device(
        &self,
        _r: Request<pb::UpdateDeviceRequest>,
    ) -> Result<Response<pb::UpdateDeviceResponse>, Status> {
        Ok(Response::new(pb::UpdateDeviceResponse::default()))
    }
    async fn create_device_model(
        &self,
        _r: Request<pb::CreateDeviceModelRequest>,
    ) -> Result<Response<pb::CreateDeviceModelResponse>, Status> {
        Ok(Response::new(pb::CreateDeviceModelResponse::default()))
    }
    async fn remove_device_model(
        &self,
        _r: Request<pb::RemoveDeviceModelRequest>,
    ) -> Result<Response<pb::RemoveDeviceModelResponse>, Status> {
        Ok(Response::new(pb::RemoveDeviceModelResponse::default()))
    }
    async fn update_device_model(
        &self,
        _r: Request<pb::UpdateDeviceModelRequest>,
    ) -> Result<Response<pb::UpdateDeviceModelResponse>, Status> {
        Ok(Response::new(pb::UpdateDeviceModelResponse::default()))
    }
    async fn get_device(
        &self,
        _r: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::GetDeviceResponse>, Status> {
        Ok(Response::new(pb::GetDeviceResponse::default()))
    }
}

/// Serves `mappers` counting mappers at `dir/mM.sock` (the addresses
/// [`register_mappers`] registers); the shared RegisterDevice count and a
/// guard that stops them when dropped.
pub(crate) fn counting_mappers(
    dir: &Path,
    mappers: usize,
) -> anyhow::Result<(Arc<AtomicUsize>, tokio_util::sync::DropGuard)> {
    let count = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    for m in 0..mappers {
        let listener = tokio::net::UnixListener::bind(dir.join(format!("m{m}.sock")))?;
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let svc = DeviceMapperServiceServer::new(CountingMapper(count.clone()));
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await;
        });
    }
    Ok((count, stop.drop_guard()))
}

/// Waits until `count` reaches `n`; the time it took, ms, or an error after
/// `limit`.
pub(crate) async fn until_count(
    count: &AtomicUsize,
    n: usize,
    t0: Instant,
    limit: Duration,
) -> anyhow::Result<f64> {
    loop {
        if count.load(Ordering::Relaxed) >= n {
            return Ok(t0.elapsed().as_secs_f64() * 1000.0);
        }
        anyhow::ensure!(
            t0.elapsed() < limit,
            "{} of {n} devices dispatched after {limit:?}",
            count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// edgecore-dmi restart with `devices` devices and `mappers` mappers:
/// (median ms to serving, its spread, median ms to all re-dispatched, its
/// spread).
pub(crate) async fn restart(
    devices: usize,
    mappers: usize,
    runs: usize,
) -> anyhow::Result<(f64, String, f64, String)> {
    let dir = tempfile::tempdir()?;
    devices_yaml(&dir.path().join("devices"), devices, mappers)?;
    let (count, _guard) = counting_mappers(dir.path(), mappers)?;
    let bin = bin_dir().join("edgecore-dmi");
    let log = dir.path().join("edgecore.log");
    let admin = dir.path().join("edgecore-dmi.admin.sock");
    // First start: load the YAML, register the mappers, dispatch everything.
    {
        let _ec = Proc::start(&bin, &edgecore_args(dir.path()), &log, &[])?;
        let socket = dir.path().join("dmi.sock");
        let t0 = Instant::now();
        let mut client = loop {
            if admin_get(&admin, "/v1/status").await.is_some() {
                break DeviceManagerServiceClient::new(dmi_proto::transport::channel(
                    &socket,
                    Default::default(),
                ));
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "edgecore-dmi did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        register_mappers(&mut client, dir.path(), mappers, false).await?;
        until_count(&count, devices, t0, Duration::from_secs(300)).await?;
        // Let the store catch up (the persister writes every second).
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (mut serving, mut dispatched) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        count.store(0, Ordering::Relaxed);
        let t0 = Instant::now();
        let _ec = Proc::start(&bin, &edgecore_args(dir.path()), &log, &[])?;
        loop {
            if admin_get(&admin, "/v1/status").await.is_some() {
                serving.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(60),
                "no answer after a restart"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        dispatched.push(until_count(&count, devices, t0, Duration::from_secs(120)).await?);
    }
    let (s, s_spread) = summary(serving);
    let (d, d_spread) = summary(dispatched);
    Ok((s, s_spread, d, d_spread))
}
