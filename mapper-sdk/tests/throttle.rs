//! A mapper against an EdgeCore that throttles as stock EdgeCore does.
//!
//! Stock EdgeCore's DMI server puts every call of the node through one
//! `golang.org/x/time/rate` bucket (`rate.Every(1s)`, burst 100) and answers the
//! excess with a plain Go error, which grpc-go sends as `Unknown` "... too many
//! request ...". The in-test server below does exactly that (no Go EdgeCore can
//! run here). 20 devices × 5 properties on 1 s collect cycles and 1 s state
//! cycles want about 40 calls/s; the server grants 1.
//!
//! Bound checked: after the values stop changing, the latest value of every
//! property lands within `devices ÷ accepted rate + 2 collect cycles + 8 s`
//! (30 s here; one `ReportDeviceStatus` per device is the least it can take,
//! the 8 s cover the pace's search around the bucket's rate), and the mapper
//! registers exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dmi_proto::config_data::{NumberEncoding, to_any_map};
use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_manager_service_server::{
    DeviceManagerService, DeviceManagerServiceServer,
};
use mapper_sdk::{DeviceClient, Driver, DriverResult, Mapper, MapperConfig, Value};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

const DEVICES: usize = 20;
const PROPERTIES: i64 = 5;

/// What every property reads: `PHASE * 10 + index`.
static PHASE: AtomicI64 = AtomicI64::new(0);

#[derive(Clone, serde::Deserialize)]
struct Cfg {}

#[derive(serde::Deserialize)]
struct Addr {
    index: i64,
}

struct Counting;
struct CountingDevice;

impl Driver for Counting {
    type Config = Cfg;
    type Address = Addr;
    type Client = CountingDevice;
    async fn connect(&self, _: &Cfg) -> DriverResult<CountingDevice> {
        Ok(CountingDevice)
    }
}

impl DeviceClient for CountingDevice {
    type Address = Addr;
    async fn read(&self, a: &Addr) -> DriverResult<Value> {
        Ok(Value::Int(PHASE.load(Ordering::SeqCst) * 10 + a.index))
    }
    async fn write(&self, _: &Addr, _: &Value) -> DriverResult<()> {
        Ok(())
    }
}

/// `rate.NewLimiter(rate.Every(time.Second), 100)` with `Allow()`.
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64()).min(100.0);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Default)]
struct Seen {
    registrations: usize,
    accepted: usize,
    throttled: usize,
    /// Latest reported value per (device, property).
    values: HashMap<(String, String), String>,
}

#[derive(Clone)]
struct ThrottlingEdgeCore {
    bucket: Arc<Mutex<Bucket>>,
    seen: Arc<Mutex<Seen>>,
}

impl ThrottlingEdgeCore {
    fn admit(&self, what: &str) -> Result<(), Status> {
        let ok = self.bucket.lock().unwrap().allow();
        let mut seen = self.seen.lock().unwrap();
        if ok {
            seen.accepted += 1;
            Ok(())
        } else {
            seen.throttled += 1;
            // What grpc-go sends for stock EdgeCore's plain error.
            Err(Status::unknown(format!(
                "fail to {what} because of too many request: rate limit"
            )))
        }
    }
}

fn device(i: usize) -> pb::Device {
    let visitor = |index: i64| {
        let cfg = serde_json::json!({ "index": index });
        pb::VisitorConfig {
            protocol_name: "counting".into(),
            config_data: Some(pb::CustomizedValue {
                data: to_any_map(cfg.as_object().unwrap(), NumberEncoding::Stock).unwrap(),
            }),
        }
    };
    pb::Device {
        name: format!("d{i:02}"),
        namespace: "default".into(),
        spec: Some(pb::DeviceSpec {
            device_model_reference: "m".into(),
            protocol: Some(pb::ProtocolConfig {
                protocol_name: "counting".into(),
                config_data: Some(pb::CustomizedValue::default()),
            }),
            properties: (0..PROPERTIES)
                .map(|p| pb::DeviceProperty {
                    name: format!("p{p}"),
                    desired: Some(pb::TwinProperty::default()),
                    visitors: Some(visitor(p)),
                    collect_cycle: 1000,
                    report_to_cloud: true,
                    ..Default::default()
                })
                .collect(),
            methods: Vec::new(),
        }),
        status: Some(pb::DeviceStatus {
            twins: Vec::new(),
            report_to_cloud: true,
            report_cycle: 1000,
        }),
    }
}

fn model() -> pb::DeviceModel {
    pb::DeviceModel {
        name: "m".into(),
        namespace: "default".into(),
        spec: Some(pb::DeviceModelSpec {
            properties: (0..PROPERTIES)
                .map(|p| pb::ModelProperty {
                    name: format!("p{p}"),
                    r#type: "INT".into(),
                    access_mode: "ReadOnly".into(),
                    ..Default::default()
                })
                .collect(),
            commands: Vec::new(),
        }),
    }
}

#[tonic::async_trait]
impl DeviceManagerService for ThrottlingEdgeCore {
    async fn mapper_register(
        &self,
        _: Request<pb::MapperRegisterRequest>,
    ) -> Result<Response<pb::MapperRegisterResponse>, Status> {
        self.admit("register mapper")?;
        self.seen.lock().unwrap().registrations += 1;
        Ok(Response::new(pb::MapperRegisterResponse {
            model_list: vec![model()],
            device_list: (0..DEVICES).map(device).collect(),
        }))
    }

    async fn report_device_status(
        &self,
        req: Request<pb::ReportDeviceStatusRequest>,
    ) -> Result<Response<pb::ReportDeviceStatusResponse>, Status> {
        self.admit("report device status")?;
        let r = req.into_inner();
        let mut seen = self.seen.lock().unwrap();
        for t in r.reported_device.unwrap_or_default().twins {
            seen.values.insert(
                (r.device_name.clone(), t.property_name),
                t.reported.unwrap_or_default().value,
            );
        }
        Ok(Response::new(pb::ReportDeviceStatusResponse {}))
    }

    async fn report_device_states(
        &self,
        _: Request<pb::ReportDeviceStatesRequest>,
    ) -> Result<Response<pb::ReportDeviceStatesResponse>, Status> {
        self.admit("report device states")?;
        Ok(Response::new(pb::ReportDeviceStatesResponse {}))
    }
}

fn stale(seen: &Seen, phase: i64) -> usize {
    (0..DEVICES)
        .flat_map(|d| (0..PROPERTIES).map(move |p| (d, p)))
        .filter(|(d, p)| {
            seen.values.get(&(format!("d{d:02}"), format!("p{p}")))
                != Some(&(phase * 10 + p).to_string())
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_stock_throttling_the_latest_values_converge_without_reregistering() {
    let dir = tempfile::tempdir().unwrap();
    let edgecore_sock = dir.path().join("dmi.sock");
    let server = ThrottlingEdgeCore {
        bucket: Arc::new(Mutex::new(Bucket {
            tokens: 100.0,
            last: Instant::now(),
        })),
        seen: Arc::new(Mutex::new(Seen::default())),
    };
    let shutdown = CancellationToken::new();
    let listener = dmi_proto::transport::bind(&edgecore_sock).await.unwrap();
    let sd = shutdown.clone();
    let svc = DeviceManagerServiceServer::new(server.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(listener.incoming(), sd.cancelled_owned())
            .await
    });
    let mut cfg = MapperConfig::for_protocol("counting");
    cfg.socket_path = dir.path().join("counting.sock");
    cfg.edgecore_sock = edgecore_sock;
    let mapper = tokio::spawn(Mapper::new(cfg, Counting).run(shutdown.clone()));

    // Values change every second for 8 s, then stay.
    for phase in 1..=8 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        PHASE.store(phase, Ordering::SeqCst);
    }
    let frozen = Instant::now();
    let bound = Duration::from_secs(DEVICES as u64 + 2 + 8);
    let mut left = usize::MAX;
    while frozen.elapsed() < bound {
        left = stale(&server.seen.lock().unwrap(), 8);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = frozen.elapsed();
    let (accepted, throttled, registrations) = {
        let seen = server.seen.lock().unwrap();
        (seen.accepted, seen.throttled, seen.registrations)
    };
    eprintln!(
        "converged in {took:?}: accepted {accepted} calls, throttled {throttled}, registrations {registrations}"
    );
    assert!(throttled > 0, "the limiter was never hit");
    assert_eq!(
        left, 0,
        "{left} of 100 properties not at their latest value {bound:?} after the values stopped"
    );
    assert_eq!(registrations, 1, "the mapper registered again");
    shutdown.cancel();
    let _ = mapper.await;
}
