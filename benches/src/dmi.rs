//! DMI benchmarks: ReportDeviceStatus/ReportDeviceStates throughput and latency
//! into edgecore-dmi over a Unix socket, against a do-nothing tonic server on a
//! Unix socket (the transport limit); edgecore-dmi memory with many devices and
//! mappers.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use dmi_proto::v1beta1::device_manager_service_server::{
    DeviceManagerService, DeviceManagerServiceServer,
};
use tonic::{Request, Response, Status};

use crate::procs::{Proc, bin_dir, cpu_seconds, rss_mib, wait_until};

/// What a report run measured.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reports {
    /// Calls per second.
    pub(crate) per_s: f64,
    /// Latency percentiles, ms.
    pub p50: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Worst, ms.
    pub(crate) max: f64,
    /// Server CPU, cores.
    pub(crate) cpu_cores: f64,
    /// Server RSS at the end, MiB.
    pub(crate) rss_mib: f64,
    /// Calls that failed.
    pub(crate) errors: u64,
}

const TWINS: [(&str, &str); 5] = [
    ("temperature", "21.5"),
    ("pressure", "1.013"),
    ("setpoint", "22"),
    ("running", "true"),
    ("mode", "auto"),
];

pub(crate) fn status_request(device: &str) -> pb::ReportDeviceStatusRequest {
    let meta: BTreeMap<String, String> = [
        ("timestamp".to_owned(), "1763700000000".to_owned()),
        ("type".to_owned(), "float".to_owned()),
    ]
    .into();
    pb::ReportDeviceStatusRequest {
        device_name: device.to_owned(),
        device_namespace: "default".to_owned(),
        reported_device: Some(pb::DeviceStatus {
            twins: TWINS
                .iter()
                .map(|(n, v)| pb::Twin {
                    property_name: (*n).to_owned(),
                    reported: Some(pb::TwinProperty {
                        value: (*v).to_owned(),
                        metadata: meta.clone(),
                    }),
                    observed_desired: Some(pb::TwinProperty {
                        value: String::new(),
                        metadata: meta.clone(),
                    }),
                })
                .collect(),
            report_to_cloud: true,
            report_cycle: 1000,
        }),
    }
}

/// The devices file for `count` devices of protocol `bench-{i % protocols}`.
pub(crate) fn devices_yaml(dir: &Path, count: usize, protocols: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let props: String = TWINS
        .iter()
        .map(|(n, _)| format!("    - name: {n}\n      type: STRING\n      accessMode: ReadOnly\n"))
        .collect();
    let mut files: Vec<String> = (0..protocols.max(1))
        .map(|p| {
            format!(
                "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata:\n  name: bench-model-{p}\nspec:\n  protocol: bench-{p}\n  properties:\n{props}"
            )
        })
        .collect();
    for i in 0..count {
        let p = i % protocols.max(1);
        let dprops: String = TWINS
            .iter()
            .map(|(n, _)| format!("    - name: {n}\n      reportToCloud: true\n"))
            .collect();
        files[p].push_str(&format!(
            "---\napiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata:\n  name: dev-{i}\nspec:\n  deviceModelRef:\n    name: bench-model-{p}\n  protocol:\n    protocolName: bench-{p}\n    configData:\n      ip: 10.0.0.1\n  properties:\n{dprops}"
        ));
    }
    for (p, text) in files.into_iter().enumerate() {
        std::fs::write(dir.join(format!("devices-{p}.yaml")), text)?;
    }
    Ok(())
}

/// edgecore-dmi's arguments for a node in `dir`: `dir/dmi.sock`,
/// `dir/state`, `dir/devices`, warnings only.
pub(crate) fn edgecore_args(dir: &Path) -> Vec<String> {
    [
        "--dmi-socket",
        &dir.join("dmi.sock").display().to_string(),
        "--log",
        "warn",
        "serve",
        "--state-dir",
        &dir.join("state").display().to_string(),
        "--devices-dir",
        &dir.join("devices").display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// edgecore-dmi as a child process.
pub(crate) struct EdgeCore {
    proc: Proc,
    /// Its DMI socket.
    pub(crate) socket: std::path::PathBuf,
}

impl std::fmt::Debug for EdgeCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeCore")
            .field("socket", &self.socket)
            .finish()
    }
}

impl EdgeCore {
    /// Starts edgecore-dmi over `dir/devices` and waits until it has `devices`.
    pub(crate) async fn start(dir: &Path, devices: usize) -> anyhow::Result<EdgeCore> {
        let socket = dir.join("dmi.sock");
        let proc = Proc::start(
            &bin_dir().join("edgecore-dmi"),
            &edgecore_args(dir),
            &dir.join("edgecore.log"),
            &[],
        )?;
        let me = EdgeCore { proc, socket };
        // Ready when the last device is accepted.
        let last = format!("dev-{}", devices.saturating_sub(1));
        let channel = dmi_proto::transport::channel(&me.socket, Default::default());
        let mut c = DeviceManagerServiceClient::new(channel);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if c.report_device_states(pb::ReportDeviceStatesRequest {
                device_name: last.clone(),
                device_namespace: "default".into(),
                state: "online".into(),
            })
            .await
            .is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("edgecore-dmi did not load {devices} devices");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(me)
    }

    /// Process id.
    pub(crate) fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// `clients` concurrent clients, each on its own connection, for `duration`:
/// nine status reports to one state report.
pub(crate) async fn load(
    socket: &Path,
    clients: usize,
    devices: usize,
    duration: Duration,
    server_pid: u32,
) -> anyhow::Result<Reports> {
    let cpu0 = cpu_seconds(server_pid);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = DeviceManagerServiceClient::new(dmi_proto::transport::channel(
            socket,
            Default::default(),
        ));
        let req = status_request(&format!("dev-{}", c % devices.max(1)));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            while t0.elapsed() < duration {
                let t = Instant::now();
                let ok = if n % 10 == 9 {
                    let r = pb::ReportDeviceStatesRequest {
                        device_name: req.device_name.clone(),
                        device_namespace: "default".into(),
                        state: "online".into(),
                    };
                    client.report_device_states(r).await.is_ok()
                } else {
                    client.report_device_status(req.clone()).await.is_ok()
                };
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                errors += u64::from(!ok);
                n += 1;
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server_pid) - cpu0;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len().max(1) as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(Reports {
        per_s: lat.len() as f64 / secs,
        p50: pct(0.5),
        p99: pct(0.99),
        max: lat.last().copied().unwrap_or(f64::NAN),
        cpu_cores: cpu / secs,
        rss_mib: rss_mib(server_pid),
        errors,
    })
}

/// edgecore-dmi under report load.
pub(crate) async fn edgecore_reports(
    clients: usize,
    devices: usize,
    duration: Duration,
) -> anyhow::Result<Reports> {
    let dir = tempfile::tempdir()?;
    devices_yaml(&dir.path().join("devices"), devices, 1)?;
    let ec = EdgeCore::start(dir.path(), devices).await?;
    load(&ec.socket, clients, devices, duration, ec.pid()).await
}

/// The baseline: a do-nothing tonic server on a Unix socket, in its own process.
pub(crate) async fn null_server_reports(
    clients: usize,
    devices: usize,
    duration: Duration,
) -> anyhow::Result<Reports> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("null.sock");
    let args = vec![
        "null-server".to_owned(),
        "--socket".to_owned(),
        socket.display().to_string(),
    ];
    let proc = Proc::start(
        &std::env::current_exe()?,
        &args,
        &dir.path().join("null.log"),
        &[],
    )?;
    wait_until("null server socket", 20, || socket.exists().then_some(())).await?;
    load(&socket, clients, devices, duration, proc.pid()).await
}

#[derive(Debug, Clone, Copy)]
struct Null;

#[tonic::async_trait]
impl DeviceManagerService for Null {
    async fn mapper_register(
        &self,
        _r: Request<pb::MapperRegisterRequest>,
    ) -> Result<Response<pb::MapperRegisterResponse>, Status> {
        Ok(Response::new(pb::MapperRegisterResponse::default()))
    }
    async fn report_device_status(
        &self,
        _r: Request<pb::ReportDeviceStatusRequest>,
    ) -> Result<Response<pb::ReportDeviceStatusResponse>, Status> {
        Ok(Response::new(pb::ReportDeviceStatusResponse {}))
    }
    async fn report_device_states(
        &self,
        _r: Request<pb::ReportDeviceStatesRequest>,
    ) -> Result<Response<pb::ReportDeviceStatesResponse>, Status> {
        Ok(Response::new(pb::ReportDeviceStatesResponse {}))
    }
}

/// The body of `bench-suite null-server`: plain tonic on a plain Unix listener.
pub(crate) async fn null_server_main(socket: &Path) -> anyhow::Result<()> {
    let listener = tokio::net::UnixListener::bind(socket)?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(DeviceManagerServiceServer::new(Null))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// Registers `mappers` mappers `bench-mapper-M` for protocols `bench-M`, at
/// sockets `dir/mM.sock`, through `client`.
pub(crate) async fn register_mappers(
    client: &mut DeviceManagerServiceClient<tonic::transport::Channel>,
    dir: &Path,
    mappers: usize,
    with_data: bool,
) -> anyhow::Result<()> {
    for m in 0..mappers {
        let info = pb::MapperInfo {
            name: format!("bench-mapper-{m}"),
            version: "v1".into(),
            api_version: "v1beta1".into(),
            protocol: format!("bench-{m}"),
            address: dir
                .join(format!("m{m}.sock"))
                .display()
                .to_string()
                .into_bytes(),
            state: "ok".into(),
        };
        client
            .mapper_register(pb::MapperRegisterRequest {
                with_data,
                mapper: Some(info),
            })
            .await?;
    }
    Ok(())
}

/// edgecore-dmi RSS with `devices` devices stored and `mappers` mappers registered.
pub(crate) async fn edgecore_memory(devices: usize, mappers: usize) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    devices_yaml(&dir.path().join("devices"), devices, mappers)?;
    let ec = EdgeCore::start(dir.path(), devices).await?;
    let before = rss_mib(ec.pid());
    let mut client = DeviceManagerServiceClient::new(dmi_proto::transport::channel(
        &ec.socket,
        Default::default(),
    ));
    register_mappers(&mut client, dir.path(), mappers, true).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok((before, rss_mib(ec.pid())))
}
