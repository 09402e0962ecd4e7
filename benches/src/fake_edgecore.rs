//! A minimal EdgeCore for the mapper benchmarks: answers MapperRegister with the
//! devices under test and counts reports, so the mapper runtime is measured
//! without edgecore-dmi in the loop.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_manager_service_server::{
    DeviceManagerService, DeviceManagerServiceServer,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// What the fake EdgeCore hands out and saw.
#[derive(Debug, Default)]
pub(crate) struct FakeEdgeCore {
    devices: std::sync::Mutex<Vec<pb::Device>>,
    models: Vec<pb::DeviceModel>,
    /// `ReportDeviceStatus` calls received.
    pub(crate) status_reports: AtomicU64,
    /// `ReportDeviceStates` calls received.
    pub(crate) state_reports: AtomicU64,
    /// `MapperRegister` calls received.
    pub(crate) registrations: AtomicU64,
    /// When set, every `ReportDeviceStatus` is sent here with the time it
    /// arrived (the BLE latency benchmark); unset, reports are only counted.
    pub(crate) status_tx:
        OnceLock<tokio::sync::mpsc::UnboundedSender<(Instant, pb::ReportDeviceStatusRequest)>>,
}

#[derive(Debug, Clone)]
struct Svc(Arc<FakeEdgeCore>);

#[tonic::async_trait]
impl DeviceManagerService for Svc {
    async fn mapper_register(
        &self,
        _req: Request<pb::MapperRegisterRequest>,
    ) -> Result<Response<pb::MapperRegisterResponse>, Status> {
        self.0.registrations.fetch_add(1, Ordering::Relaxed);
        let devices = self.0.devices.lock().map(|d| d.clone()).unwrap_or_default();
        Ok(Response::new(pb::MapperRegisterResponse {
            model_list: self.0.models.clone(),
            device_list: devices,
        }))
    }

    async fn report_device_status(
        &self,
        req: Request<pb::ReportDeviceStatusRequest>,
    ) -> Result<Response<pb::ReportDeviceStatusResponse>, Status> {
        self.0.status_reports.fetch_add(1, Ordering::Relaxed);
        if let Some(tx) = self.0.status_tx.get() {
            let _ = tx.send((Instant::now(), req.into_inner()));
        }
        Ok(Response::new(pb::ReportDeviceStatusResponse {}))
    }

    async fn report_device_states(
        &self,
        _req: Request<pb::ReportDeviceStatesRequest>,
    ) -> Result<Response<pb::ReportDeviceStatesResponse>, Status> {
        self.0.state_reports.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(pb::ReportDeviceStatesResponse {}))
    }
}

/// A running fake; stops when dropped.
#[derive(Debug)]
pub(crate) struct Running {
    /// Shared state.
    pub(crate) state: Arc<FakeEdgeCore>,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves a fake EdgeCore with `devices` and `models` at `socket`.
pub(crate) async fn serve(
    socket: &Path,
    devices: Vec<pb::Device>,
    models: Vec<pb::DeviceModel>,
) -> anyhow::Result<Running> {
    let state = Arc::new(FakeEdgeCore {
        devices: std::sync::Mutex::new(devices),
        models,
        ..FakeEdgeCore::default()
    });
    let listener = dmi_proto::transport::bind(socket).await?;
    let stop = CancellationToken::new();
    let (svc, s) = (Svc(state.clone()), stop.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(DeviceManagerServiceServer::new(svc))
            .serve_with_incoming_shutdown(listener.incoming(), s.cancelled_owned())
            .await;
    });
    Ok(Running { state, stop })
}
