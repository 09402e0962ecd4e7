//! `DeviceMapperService`: EdgeCore tells the mapper about devices and models.

use std::sync::Arc;

use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_mapper_service_server::DeviceMapperService;
use tonic::{Request, Response, Status};

use crate::device::ObjectId;
use crate::driver::Driver;
use crate::error::SpecError;
use crate::runtime::Panel;

pub(crate) struct MapperService<D: Driver> {
    pub(crate) panel: Arc<Panel<D>>,
}

fn invalid(e: SpecError) -> Status {
    tracing::warn!(error = %e, "rejected request from EdgeCore");
    Status::invalid_argument(e.to_string())
}

fn need<T>(v: Option<T>, what: &str) -> Result<T, Status> {
    v.ok_or_else(|| Status::invalid_argument(format!("request has no {what}")))
}

#[tonic::async_trait]
impl<D: Driver> DeviceMapperService for MapperService<D> {
    async fn register_device(
        &self,
        req: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::RegisterDeviceResponse>, Status> {
        let device = need(req.into_inner().device, "device")?;
        let id = self.panel.upsert_device(&device).map_err(invalid)?;
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
        if !self.panel.remove_device(&id) {
            tracing::info!(device = %id, "RemoveDevice for an unknown device");
        }
        Ok(Response::new(pb::RemoveDeviceResponse {}))
    }

    async fn update_device(
        &self,
        req: Request<pb::UpdateDeviceRequest>,
    ) -> Result<Response<pb::UpdateDeviceResponse>, Status> {
        let device = need(req.into_inner().device, "device")?;
        self.panel.upsert_device(&device).map_err(invalid)?;
        Ok(Response::new(pb::UpdateDeviceResponse {}))
    }

    async fn create_device_model(
        &self,
        req: Request<pb::CreateDeviceModelRequest>,
    ) -> Result<Response<pb::CreateDeviceModelResponse>, Status> {
        let model = need(req.into_inner().model, "model")?;
        self.panel.upsert_model(&model).map_err(invalid)?;
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
        self.panel
            .remove_model(&ObjectId::new(&r.model_namespace, &r.model_name));
        Ok(Response::new(pb::RemoveDeviceModelResponse {}))
    }

    async fn update_device_model(
        &self,
        req: Request<pb::UpdateDeviceModelRequest>,
    ) -> Result<Response<pb::UpdateDeviceModelResponse>, Status> {
        let model = need(req.into_inner().model, "model")?;
        self.panel.upsert_model(&model).map_err(invalid)?;
        Ok(Response::new(pb::UpdateDeviceModelResponse {}))
    }

    async fn get_device(
        &self,
        req: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::GetDeviceResponse>, Status> {
        let r = req.into_inner();
        let id = ObjectId::new(&r.device_namespace, &r.device_name);
        let device = self
            .panel
            .device(&id)
            .ok_or_else(|| Status::not_found(format!("device {id} is not known to this mapper")))?;
        Ok(Response::new(pb::GetDeviceResponse {
            device: Some(device),
        }))
    }
}
