//! `DeviceMapperService`: EdgeCore tells the mapper about devices and models.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_mapper_service_server::DeviceMapperService;
use prost::Message;
use tonic::{Request, Response, Status};

use super::convert::{device_from_proto, device_with_twins, model_from_proto};
use crate::error::SpecError;
use crate::runtime::Supervisor;
use crate::spec::ObjectId;

/// The supervisor seen from DMI: converts messages on the way in and keeps
/// each device as EdgeCore sent it, for `GetDevice`.
///
/// The kept copies are protobuf-encoded: `GetDevice` is rare, and a decoded
/// `Device` (a `String` per name and a map of `Any`s per visitor) takes
/// several times the memory of its encoding (benches/README.md, OPC-UA
/// memory).
pub(crate) struct Devices {
    supervisor: Arc<Supervisor>,
    sent: Mutex<HashMap<ObjectId, Bytes>>,
}

impl Devices {
    pub(crate) fn new(supervisor: Arc<Supervisor>) -> Self {
        Self {
            supervisor,
            sent: Mutex::new(HashMap::new()),
        }
    }

    fn sent(&self) -> MutexGuard<'_, HashMap<ObjectId, Bytes>> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn upsert_device(&self, d: &pb::Device) -> Result<ObjectId, SpecError> {
        let spec = device_from_proto(d)?;
        let id = self.supervisor.upsert_device(spec);
        self.sent().insert(id.clone(), d.encode_to_vec().into());
        Ok(id)
    }

    pub(crate) fn remove_device(&self, id: &ObjectId) -> bool {
        self.sent().remove(id);
        self.supervisor.remove_device(id)
    }

    pub(crate) fn upsert_model(&self, m: &pb::DeviceModel) -> Result<(), SpecError> {
        self.supervisor.upsert_model(model_from_proto(m)?);
        Ok(())
    }

    pub(crate) fn remove_model(&self, id: &ObjectId) {
        self.supervisor.remove_model(id);
    }

    /// Holds exactly these models and devices (MapperRegister data); returns
    /// the ones that could not be used, with the reason.
    pub(crate) fn sync(
        &self,
        models: &[pb::DeviceModel],
        devices: &[pb::Device],
    ) -> Vec<SpecError> {
        let mut errors = Vec::new();
        let models = models
            .iter()
            .filter_map(|m| model_from_proto(m).map_err(|e| errors.push(e)).ok())
            .collect();
        let mut specs = Vec::with_capacity(devices.len());
        let mut sent = HashMap::with_capacity(devices.len());
        for d in devices {
            match device_from_proto(d) {
                Ok(s) => {
                    sent.insert(s.id.clone(), d.encode_to_vec().into());
                    specs.push(s);
                }
                Err(e) => errors.push(e),
            }
        }
        *self.sent() = sent;
        self.supervisor.sync(models, specs);
        errors
    }

    pub(crate) fn get_device(&self, id: &ObjectId) -> Option<pb::Device> {
        let encoded = self.sent().get(id).cloned()?;
        // It was encoded from a decoded message, so it decodes.
        let sent = pb::Device::decode(encoded)
            .map_err(|e| tracing::error!(device = %id, error = %e, "kept copy of the device does not decode"))
            .ok()?;
        let snap = self.supervisor.snapshot(id)?;
        Some(device_with_twins(&sent, &snap))
    }
}

pub(crate) struct MapperService {
    pub(crate) devices: Arc<Devices>,
}

fn invalid(e: SpecError) -> Status {
    tracing::warn!(error = %e, "rejected request from EdgeCore");
    Status::invalid_argument(e.to_string())
}

fn need<T>(v: Option<T>, what: &str) -> Result<T, Status> {
    v.ok_or_else(|| Status::invalid_argument(format!("request has no {what}")))
}

#[tonic::async_trait]
impl DeviceMapperService for MapperService {
    async fn register_device(
        &self,
        req: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::RegisterDeviceResponse>, Status> {
        let device = need(req.into_inner().device, "device")?;
        let id = self.devices.upsert_device(&device).map_err(invalid)?;
        Ok(Response::new(pb::RegisterDeviceResponse {
            device_name: id.name,
            device_namespace: id.namespace,
        }))
    }

    async fn remove_device(
        &self,
        req: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceResponse>, Status> {
        let r = req.into_inner();
        let id = ObjectId::new(&r.device_namespace, &r.device_name);
        if !self.devices.remove_device(&id) {
            tracing::info!(device = %id, "RemoveDevice for an unknown device");
        }
        Ok(Response::new(pb::RemoveDeviceResponse {}))
    }

    async fn update_device(
        &self,
        req: Request<pb::UpdateDeviceRequest>,
    ) -> Result<Response<pb::UpdateDeviceResponse>, Status> {
        let device = need(req.into_inner().device, "device")?;
        self.devices.upsert_device(&device).map_err(invalid)?;
        Ok(Response::new(pb::UpdateDeviceResponse {}))
    }

    async fn create_device_model(
        &self,
        req: Request<pb::CreateDeviceModelRequest>,
    ) -> Result<Response<pb::CreateDeviceModelResponse>, Status> {
        let model = need(req.into_inner().model, "model")?;
        self.devices.upsert_model(&model).map_err(invalid)?;
        let id = ObjectId::new(&model.namespace, &model.name);
        Ok(Response::new(pb::CreateDeviceModelResponse {
            device_model_name: id.name,
            device_model_namespace: id.namespace,
        }))
    }

    async fn remove_device_model(
        &self,
        req: Request<pb::RemoveDeviceModelRequest>,
    ) -> Result<Response<pb::RemoveDeviceModelResponse>, Status> {
        let r = req.into_inner();
        self.devices
            .remove_model(&ObjectId::new(&r.model_namespace, &r.model_name));
        Ok(Response::new(pb::RemoveDeviceModelResponse {}))
    }

    async fn update_device_model(
        &self,
        req: Request<pb::UpdateDeviceModelRequest>,
    ) -> Result<Response<pb::UpdateDeviceModelResponse>, Status> {
        let model = need(req.into_inner().model, "model")?;
        self.devices.upsert_model(&model).map_err(invalid)?;
        Ok(Response::new(pb::UpdateDeviceModelResponse {}))
    }

    async fn get_device(
        &self,
        req: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::GetDeviceResponse>, Status> {
        let r = req.into_inner();
        let id = ObjectId::new(&r.device_namespace, &r.device_name);
        let device = self
            .devices
            .get_device(&id)
            .ok_or_else(|| Status::not_found(format!("device {id} is not known to this mapper")))?;
        Ok(Response::new(pb::GetDeviceResponse {
            device: Some(device),
        }))
    }
}
