//! Test support for mapper crates (feature `testing`): an in-process fake
//! EdgeCore and a driver conformance check.
//!
//! * [`FakeEdgeCore`] serves EdgeCore's `DeviceManagerService` on a Unix
//!   socket in a temporary directory, hands out the [`TestDevice`]s you give it
//!   (in `MapperRegister`, or with `RegisterDevice` to a mapper already
//!   registered), sends desired values with `UpdateDevice`, and records every
//!   twin and state the mapper reports. [`FakeEdgeCore::spawn_mapper`] runs a
//!   whole mapper of your driver in the same process against it.
//! * [`check_driver`] runs the contract every driver must keep (configuration
//!   errors are `Config` errors, never panics; one result per address; writes,
//!   state and disconnect complete; a read dropped half-way leaves the client
//!   usable) and returns what failed.
//!
//! Devices are described with plain Rust values ([`TestDevice`]); no DMI or
//! protobuf types appear in this API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dmi_proto::config_data::{NumberEncoding, to_any_map};
use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_manager_service_server::{
    DeviceManagerService, DeviceManagerServiceServer,
};
use dmi_proto::v1beta1::device_mapper_service_client::DeviceMapperServiceClient;
use serde_json::{Map, Value as Json};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::config::MapperConfig;
use crate::driver::{DynDriver, ErasedAddress};
use crate::error::DriverError;
use crate::mapper::Mapper;
use crate::value::{PropertyType, Value};

/// One property of a [`TestDevice`].
#[derive(Debug, Clone)]
pub struct TestProperty {
    /// Property name.
    pub name: String,
    /// Model type (`INT`, `FLOAT`, `DOUBLE`, `STRING`, `BOOLEAN`, `BYTES`).
    pub type_: String,
    /// `ReadOnly` or `ReadWrite`.
    pub access_mode: String,
    /// The property's `visitors.configData`.
    pub visitor: Map<String, Json>,
    /// Collect cycle, ms.
    pub collect_cycle_ms: i64,
    /// Desired value, if any.
    pub desired: Option<String>,
    /// Model minimum and maximum, if any.
    pub bounds: (Option<f64>, Option<f64>),
}

/// A device (and its one-device model) as the fake EdgeCore sends it.
#[derive(Debug, Clone)]
pub struct TestDevice {
    /// Name (namespace `default`).
    pub name: String,
    /// `protocol.protocolName`.
    pub protocol: String,
    /// `protocol.configData`.
    pub config: Map<String, Json>,
    /// Properties.
    pub properties: Vec<TestProperty>,
    /// State report cycle, ms (`status.reportToCloud` when set).
    pub state_report_ms: Option<i64>,
}

fn object(v: Json) -> Map<String, Json> {
    match v {
        Json::Object(m) => m,
        _ => Map::new(),
    }
}

impl TestDevice {
    /// A device with protocol `protocol` and `config` (a JSON object).
    pub fn new(name: &str, protocol: &str, config: Json) -> Self {
        Self {
            name: name.to_owned(),
            protocol: protocol.to_owned(),
            config: object(config),
            properties: Vec::new(),
            state_report_ms: Some(1000),
        }
    }

    /// Adds a ReadOnly property of `type_` read with `visitor` every `cycle_ms`.
    pub fn read_only(mut self, name: &str, type_: &str, visitor: Json, cycle_ms: i64) -> Self {
        self.properties.push(TestProperty {
            name: name.to_owned(),
            type_: type_.to_owned(),
            access_mode: "ReadOnly".into(),
            visitor: object(visitor),
            collect_cycle_ms: cycle_ms,
            desired: None,
            bounds: (None, None),
        });
        self
    }

    /// Adds a ReadWrite property with a desired value.
    pub fn read_write(
        mut self,
        name: &str,
        type_: &str,
        visitor: Json,
        cycle_ms: i64,
        desired: Option<&str>,
    ) -> Self {
        self.properties.push(TestProperty {
            name: name.to_owned(),
            type_: type_.to_owned(),
            access_mode: "ReadWrite".into(),
            visitor: object(visitor),
            collect_cycle_ms: cycle_ms,
            desired: desired.map(str::to_owned),
            bounds: (None, None),
        });
        self
    }

    fn model_name(&self) -> String {
        format!("{}-model", self.name)
    }

    fn model(&self) -> pb::DeviceModel {
        let bound = |b: Option<f64>| b.map(|x| x.to_string()).unwrap_or_default();
        pb::DeviceModel {
            name: self.model_name(),
            namespace: "default".into(),
            spec: Some(pb::DeviceModelSpec {
                properties: self
                    .properties
                    .iter()
                    .map(|p| pb::ModelProperty {
                        name: p.name.clone(),
                        r#type: p.type_.clone(),
                        access_mode: p.access_mode.clone(),
                        minimum: bound(p.bounds.0),
                        maximum: bound(p.bounds.1),
                        ..Default::default()
                    })
                    .collect(),
                commands: Vec::new(),
            }),
        }
    }

    fn device(&self) -> Result<pb::Device, String> {
        let cv = |m: &Map<String, Json>| -> Result<pb::CustomizedValue, String> {
            Ok(pb::CustomizedValue {
                data: to_any_map(m, NumberEncoding::Lossless).map_err(|e| e.to_string())?,
            })
        };
        let mut properties = Vec::new();
        for p in &self.properties {
            properties.push(pb::DeviceProperty {
                name: p.name.clone(),
                desired: Some(pb::TwinProperty {
                    value: p.desired.clone().unwrap_or_default(),
                    metadata: Default::default(),
                }),
                visitors: Some(pb::VisitorConfig {
                    protocol_name: self.protocol.clone(),
                    config_data: Some(cv(&p.visitor)?),
                }),
                collect_cycle: p.collect_cycle_ms,
                report_to_cloud: true,
                ..Default::default()
            });
        }
        Ok(pb::Device {
            name: self.name.clone(),
            namespace: "default".into(),
            spec: Some(pb::DeviceSpec {
                device_model_reference: self.model_name(),
                protocol: Some(pb::ProtocolConfig {
                    protocol_name: self.protocol.clone(),
                    config_data: Some(cv(&self.config)?),
                }),
                properties,
                methods: Vec::new(),
            }),
            status: Some(pb::DeviceStatus {
                twins: Vec::new(),
                report_to_cloud: self.state_report_ms.is_some(),
                report_cycle: self.state_report_ms.unwrap_or_default(),
            }),
        })
    }
}

/// The latest twin of one property as the mapper reported it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportedTwin {
    /// `reported.value`.
    pub value: String,
    /// `reported.metadata` (`timestamp`, `type`, `error`).
    pub metadata: HashMap<String, String>,
    /// `observedDesired.value`.
    pub desired: String,
    /// `observedDesired.metadata.status` (`applied`, `rejected`, `pending`).
    pub desired_status: Option<String>,
}

#[derive(Debug, Default)]
struct Recorded {
    registrations: usize,
    mapper_socket: Option<PathBuf>,
    devices: Vec<TestDevice>,
    twins: HashMap<(String, String), ReportedTwin>,
    states: HashMap<String, String>,
    reports: usize,
}

#[derive(Clone)]
struct Service(Arc<Mutex<Recorded>>);

fn lock(r: &Mutex<Recorded>) -> MutexGuard<'_, Recorded> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

#[tonic::async_trait]
impl DeviceManagerService for Service {
    async fn mapper_register(
        &self,
        req: Request<pb::MapperRegisterRequest>,
    ) -> Result<Response<pb::MapperRegisterResponse>, Status> {
        let req = req.into_inner();
        let mut r = lock(&self.0);
        r.registrations += 1;
        r.mapper_socket = req
            .mapper
            .map(|m| PathBuf::from(String::from_utf8_lossy(&m.address).into_owned()));
        let mut devices = Vec::new();
        for d in &r.devices {
            devices.push(d.device().map_err(Status::invalid_argument)?);
        }
        Ok(Response::new(pb::MapperRegisterResponse {
            model_list: r.devices.iter().map(TestDevice::model).collect(),
            device_list: devices,
        }))
    }

    async fn report_device_status(
        &self,
        req: Request<pb::ReportDeviceStatusRequest>,
    ) -> Result<Response<pb::ReportDeviceStatusResponse>, Status> {
        let req = req.into_inner();
        let mut r = lock(&self.0);
        r.reports += 1;
        for t in req.reported_device.unwrap_or_default().twins {
            let (Some(rep), Some(des)) = (t.reported, t.observed_desired) else {
                return Err(Status::invalid_argument("a twin half is missing"));
            };
            r.twins.insert(
                (req.device_name.clone(), t.property_name),
                ReportedTwin {
                    value: rep.value,
                    metadata: rep.metadata.into_iter().collect(),
                    desired_status: des.metadata.get("status").cloned(),
                    desired: des.value,
                },
            );
        }
        Ok(Response::new(pb::ReportDeviceStatusResponse {}))
    }

    async fn report_device_states(
        &self,
        req: Request<pb::ReportDeviceStatesRequest>,
    ) -> Result<Response<pb::ReportDeviceStatesResponse>, Status> {
        let req = req.into_inner();
        lock(&self.0).states.insert(req.device_name, req.state);
        Ok(Response::new(pb::ReportDeviceStatesResponse {}))
    }
}

/// An in-process EdgeCore for tests; see the module docs. Stops when dropped.
pub struct FakeEdgeCore {
    dir: tempfile::TempDir,
    recorded: Arc<Mutex<Recorded>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for FakeEdgeCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeEdgeCore")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl FakeEdgeCore {
    /// Starts serving on `dmi.sock` in a new temporary directory.
    ///
    /// # Errors
    /// When the directory or the socket cannot be created.
    pub async fn start() -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let listener = dmi_proto::transport::bind(&dir.path().join("dmi.sock"))
            .await
            .map_err(std::io::Error::other)?;
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let shutdown = CancellationToken::new();
        let svc = DeviceManagerServiceServer::new(Service(recorded.clone()));
        let sd = shutdown.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(listener.incoming(), sd.cancelled_owned())
                .await;
        });
        Ok(Self {
            dir,
            recorded,
            shutdown,
        })
    }

    /// EdgeCore's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("dmi.sock")
    }

    /// The temporary directory (sockets live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A mapper configuration for `protocol` pointing at this EdgeCore, with
    /// the mapper's own socket in the same directory and short backoffs.
    pub fn mapper_config(&self, protocol: &str) -> MapperConfig {
        let mut cfg = MapperConfig::for_protocol(protocol);
        cfg.socket_path = self.dir.path().join(format!("{protocol}.sock"));
        cfg.edgecore_sock = self.socket();
        cfg.runtime.backoff_min = Duration::from_millis(100);
        cfg.runtime.backoff_max = Duration::from_secs(2);
        cfg
    }

    /// Runs a mapper of `driver` in this process against this EdgeCore until
    /// the returned token is cancelled (or this EdgeCore is dropped).
    pub fn spawn_mapper(&self, protocol: &str, driver: Arc<dyn DynDriver>) -> CancellationToken {
        self.spawn(Mapper::with_dyn(self.mapper_config(protocol), driver))
    }

    /// Runs `mapper` (built with [`FakeEdgeCore::mapper_config`], with sinks
    /// or other settings of your choice) until the returned token is cancelled.
    pub fn spawn(&self, mapper: Mapper) -> CancellationToken {
        let token = self.shutdown.child_token();
        let t = token.clone();
        tokio::spawn(async move {
            if let Err(e) = mapper.run(t).await {
                tracing::error!(error = %e, "test mapper failed");
            }
        });
        token
    }

    async fn mapper(&self) -> Result<DeviceMapperServiceClient<tonic::transport::Channel>, String> {
        let sock = lock(&self.recorded)
            .mapper_socket
            .clone()
            .ok_or("no mapper registered")?;
        Ok(DeviceMapperServiceClient::new(
            dmi_proto::transport::channel(sock, dmi_proto::transport::ChannelOptions::default()),
        ))
    }

    /// Adds a device: returned by the next `MapperRegister`, and sent at once
    /// (`CreateDeviceModel` + `RegisterDevice`) to a mapper already registered.
    ///
    /// # Errors
    /// The mapper's refusal or the transport error, as text.
    pub async fn add_device(&self, d: TestDevice) -> Result<(), String> {
        let registered = {
            let mut r = lock(&self.recorded);
            r.devices.retain(|x| x.name != d.name);
            r.devices.push(d.clone());
            r.mapper_socket.is_some()
        };
        if !registered {
            return Ok(());
        }
        let mut m = self.mapper().await?;
        m.create_device_model(pb::CreateDeviceModelRequest {
            model: Some(d.model()),
        })
        .await
        .map_err(|s| s.message().to_owned())?;
        m.register_device(pb::RegisterDeviceRequest {
            device: Some(d.device()?),
        })
        .await
        .map_err(|s| s.message().to_owned())?;
        Ok(())
    }

    /// Sets a property's desired value and sends `UpdateDevice`.
    ///
    /// # Errors
    /// Unknown device or property, or the mapper's refusal, as text.
    pub async fn set_desired(
        &self,
        device: &str,
        property: &str,
        value: &str,
    ) -> Result<(), String> {
        let d = {
            let mut r = lock(&self.recorded);
            let d = r
                .devices
                .iter_mut()
                .find(|d| d.name == device)
                .ok_or_else(|| format!("no device {device}"))?;
            let p = d
                .properties
                .iter_mut()
                .find(|p| p.name == property)
                .ok_or_else(|| format!("no property {property}"))?;
            p.desired = Some(value.to_owned());
            d.clone()
        };
        self.mapper()
            .await?
            .update_device(pb::UpdateDeviceRequest {
                device: Some(d.device()?),
            })
            .await
            .map_err(|s| s.message().to_owned())?;
        Ok(())
    }

    /// The latest twin of `device`/`property`.
    pub fn twin(&self, device: &str, property: &str) -> Option<ReportedTwin> {
        lock(&self.recorded)
            .twins
            .get(&(device.to_owned(), property.to_owned()))
            .cloned()
    }

    /// The latest state of `device`.
    pub fn state(&self, device: &str) -> Option<String> {
        lock(&self.recorded).states.get(device).cloned()
    }

    /// `MapperRegister` calls so far.
    pub fn registrations(&self) -> usize {
        lock(&self.recorded).registrations
    }

    /// `ReportDeviceStatus` calls so far.
    pub fn status_reports(&self) -> usize {
        lock(&self.recorded).reports
    }

    /// Polls `check` every 50 ms until it returns `Some`, for at most `timeout`.
    ///
    /// # Errors
    /// `what` and the time waited, when it never did.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> Result<T, String> {
        let start = tokio::time::Instant::now();
        loop {
            if let Some(t) = check(self) {
                return Ok(t);
            }
            if start.elapsed() > timeout {
                return Err(format!("timed out after {timeout:?} waiting for {what}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for FakeEdgeCore {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What [`check_driver`] needs to exercise a driver.
#[derive(Debug, Clone)]
pub struct Conformance {
    /// A `protocol.configData` that connects.
    pub config: Json,
    /// Visitors of readable properties, with their model type.
    pub readable: Vec<(Json, Option<PropertyType>)>,
    /// A visitor and value that can be written, if the driver writes.
    pub writable: Option<(Json, Option<PropertyType>, Value)>,
}

/// Runs the driver contract (module docs) and returns the broken rules, empty
/// when the driver keeps them all.
pub async fn check_driver(driver: Arc<dyn DynDriver>, case: Conformance) -> Vec<String> {
    let mut broken = Vec::new();
    // Hostile configuration: wrong types everywhere, never a panic.
    let hostile: Vec<Json> = vec![
        serde_json::json!({}),
        serde_json::json!({"port": "not a number", "timeout": -1, "ip": 7}),
        serde_json::json!({"\u{0}": true, "x".repeat(300): 1e300}),
    ];
    for h in &hostile {
        let (d, m) = (driver.clone(), object(h.clone()));
        match tokio::spawn(async move { d.config(&m).map(|_| ()) }).await {
            Err(e) if e.is_panic() => broken.push(format!("config({h}) panicked")),
            Ok(Err(e)) if !matches!(e, DriverError::Config(_)) => {
                broken.push(format!("config({h}) failed with {e}, not a Config error"))
            }
            _ => {}
        }
        let (d, m) = (driver.clone(), object(h.clone()));
        match tokio::spawn(async move { d.address(&m, Some(PropertyType::Int)).map(|_| ()) }).await
        {
            Err(e) if e.is_panic() => broken.push(format!("address({h}) panicked")),
            Ok(Err(e)) if !matches!(e, DriverError::Config(_)) => {
                broken.push(format!("address({h}) failed with {e}, not a Config error"))
            }
            _ => {}
        }
    }
    let cfg = match driver.config(&object(case.config.clone())) {
        Ok(c) => c.value,
        Err(e) => {
            broken.push(format!("the good config does not decode: {e}"));
            return broken;
        }
    };
    let client = match tokio::time::timeout(Duration::from_secs(10), driver.connect(&cfg)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            broken.push(format!("connect failed: {e}"));
            return broken;
        }
        Err(_) => {
            broken.push("connect took more than 10 s".into());
            return broken;
        }
    };
    let mut addrs: Vec<ErasedAddress> = Vec::new();
    for (v, ty) in &case.readable {
        match driver.address(&object(v.clone()), *ty) {
            Ok(a) => addrs.push(a.value),
            Err(e) => broken.push(format!("visitor {v} does not prepare: {e}")),
        }
    }
    let refs: Vec<&ErasedAddress> = addrs.iter().collect();
    let results = client.read_batch(&refs).await;
    if results.len() != refs.len() {
        broken.push(format!(
            "read_batch of {} addresses returned {} results",
            refs.len(),
            results.len()
        ));
    }
    for (r, (v, _)) in results.iter().zip(&case.readable) {
        if let Err(e) = r {
            broken.push(format!("reading {v} failed: {e}"));
        }
    }
    // A read dropped after its first poll must leave the client usable.
    if !refs.is_empty() {
        {
            let fut = client.read_batch(&refs);
            tokio::pin!(fut);
            let _ = futures::FutureExt::now_or_never(fut.as_mut());
        }
        let again = client.read_batch(&refs).await;
        if again.iter().any(Result::is_err) {
            broken.push("a read after a dropped read failed".into());
        }
    }
    if let Some((v, ty, value)) = &case.writable {
        match driver.address(&object(v.clone()), *ty) {
            Ok(a) => {
                if let Err(e) = client.write(&a.value, value).await {
                    broken.push(format!("writing {value:?} to {v} failed: {e}"));
                }
            }
            Err(e) => broken.push(format!("writable visitor {v} does not prepare: {e}")),
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), client.state()).await;
    if tokio::time::timeout(Duration::from_secs(5), client.disconnect())
        .await
        .is_err()
    {
        broken.push("disconnect took more than 5 s".into());
    }
    broken
}
