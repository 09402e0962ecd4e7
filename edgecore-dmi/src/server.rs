//! `DeviceManagerService`: mappers register and report here. Reports are
//! validated as stock EdgeCore validates them, and refused with
//! `InvalidArgument` and a message instead of being dropped or crashing.

use std::sync::Arc;
use std::time::SystemTime;

use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_manager_service_server::DeviceManagerService;
use tonic::{Request, Response, Status};

use crate::hub::{Hub, ReportError};
use crate::key::ObjectKey;
use crate::metrics::ReportKind;
use crate::records::MapperRecord;

pub use dmi_proto::rules::ALLOWED_STATES;
use dmi_proto::rules::{TWIN_NAME_MAX, TWIN_VALUE_MAX, is_valid_twin_name, is_valid_twin_value};

/// Why a reported twin is refused (stock EdgeCore's devicetwin rules, spec §2.4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwinError {
    /// The property name is empty, too long or outside the charset.
    #[error("twin property name `{0}` must be 1-{TWIN_NAME_MAX} characters of [a-zA-Z0-9-_.,:/@#]")]
    BadName(String),
    /// `reported` is absent (stock EdgeCore would dereference nil).
    #[error("twin {0} has no reported value")]
    NoReported(String),
    /// `observedDesired` is absent (stock EdgeCore would dereference nil).
    #[error("twin {0} has no observedDesired")]
    NoObservedDesired(String),
    /// A value is too long or outside the charset.
    #[error(
        "twin {property} {half} value `{value}` must be at most {TWIN_VALUE_MAX} characters of [a-zA-Z0-9-_.,:/@#] (no spaces, quotes or braces)"
    )]
    BadValue {
        /// Property name.
        property: String,
        /// `reported` or `observedDesired`.
        half: &'static str,
        /// The value sent.
        value: String,
    },
}

/// Checks one twin as stock EdgeCore does.
///
/// # Errors
/// [`TwinError`] naming the property and what is wrong.
pub fn validate_twin(t: &pb::Twin) -> Result<(), TwinError> {
    let name = &t.property_name;
    if !is_valid_twin_name(name) {
        return Err(TwinError::BadName(name.clone()));
    }
    let reported = t
        .reported
        .as_ref()
        .ok_or_else(|| TwinError::NoReported(name.clone()))?;
    let desired = t
        .observed_desired
        .as_ref()
        .ok_or_else(|| TwinError::NoObservedDesired(name.clone()))?;
    for (half, v) in [
        ("reported", &reported.value),
        ("observedDesired", &desired.value),
    ] {
        if !is_valid_twin_value(v) {
            return Err(TwinError::BadValue {
                property: name.clone(),
                half,
                value: v.clone(),
            });
        }
    }
    Ok(())
}

/// Longest mapper name, protocol, version or state text, bytes (a Kubernetes
/// name is at most 253).
pub const MAX_MAPPER_FIELD: usize = 253;
/// Longest mapper socket path, bytes: what a Unix socket address can hold
/// (`sun_path` is 108 bytes with its terminating NUL); a longer one could not
/// be dialled.
pub const MAX_SOCKET_PATH: usize = 107;

/// The server.
#[derive(Debug, Clone)]
pub struct ManagerService {
    pub(crate) hub: Arc<Hub>,
}

fn report_status(e: ReportError) -> Status {
    match e {
        ReportError::UnknownDevice(_) => Status::not_found(e.to_string()),
        _ => {
            tracing::warn!("refused report: {e}");
            Status::invalid_argument(e.to_string())
        }
    }
}

/// The `reason` label of a rejected report ([`crate::metrics`]).
fn rejection(e: &ReportError) -> &'static str {
    match e {
        ReportError::UnknownDevice(_) => "unknown_device",
        ReportError::UndeclaredProperties { .. } => "undeclared_property",
        ReportError::Metadata { .. } => "metadata",
    }
}

/// grpc-go's default receive limit (`MaxCallRecvMsgSize`, 4 MiB), what a
/// stock Go mapper can decode of a `MapperRegisterResponse`.
const STOCK_MAX_RECV: usize = 4 * 1024 * 1024;

/// What mappers of this project decode from their EdgeCore
/// (`mapper_sdk`'s registration limit, 64 MiB).
const SDK_MAX_RECV: usize = 64 * 1024 * 1024;

impl ManagerService {
    /// `MapperRegister`: checks the mapper's record, admits it, and answers
    /// with its devices and models when it asks for them.
    fn register(
        &self,
        req: pb::MapperRegisterRequest,
    ) -> Result<Response<pb::MapperRegisterResponse>, Status> {
        let m = req
            .mapper
            .ok_or_else(|| Status::invalid_argument("MapperRegister without mapper info"))?;
        // Bounded before anything is logged, kept or stored.
        for (field, len, max) in [
            ("name", m.name.len(), MAX_MAPPER_FIELD),
            ("protocol", m.protocol.len(), MAX_MAPPER_FIELD),
            ("version", m.version.len(), MAX_MAPPER_FIELD),
            ("api_version", m.api_version.len(), MAX_MAPPER_FIELD),
            ("state", m.state.len(), MAX_MAPPER_FIELD),
            ("address", m.address.len(), MAX_SOCKET_PATH),
        ] {
            if len > max {
                return Err(Status::invalid_argument(format!(
                    "mapper {field} is {len} bytes; at most {max}"
                )));
            }
        }
        if m.protocol.trim().is_empty() {
            return Err(Status::invalid_argument(format!(
                "mapper `{}` has an empty protocol",
                m.name
            )));
        }
        if m.name.trim().is_empty() {
            return Err(Status::invalid_argument("mapper name is empty"));
        }
        let address = String::from_utf8(m.address).map_err(|_| {
            Status::invalid_argument(format!("mapper `{}` address is not a UTF-8 path", m.name))
        })?;
        if address.is_empty() {
            return Err(Status::invalid_argument(format!(
                "mapper `{}` sent no address; EdgeCore could not reach it",
                m.name
            )));
        }
        let record = MapperRecord {
            name: m.name,
            version: m.version,
            api_version: m.api_version,
            protocol: m.protocol,
            address,
            state: m.state,
            registered_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        self.hub
            .admit_mapper(&record.name)
            .map_err(Status::resource_exhausted)?;
        tracing::info!(mapper = %record.name, protocol = %record.protocol, address = %record.address, with_data = req.with_data, "mapper registered");
        let name = record.name.clone();
        let (model_list, device_list) = self.hub.register_mapper(record, req.with_data);
        let res = pb::MapperRegisterResponse {
            model_list,
            device_list,
        };
        let bytes = prost::Message::encoded_len(&res);
        if bytes > SDK_MAX_RECV {
            tracing::error!(
                mapper = %name, bytes, devices = res.device_list.len(),
                "the registration answer is larger than 64 MiB: no mapper can read it. Split the devices over more mappers or protocols"
            );
        } else if bytes > STOCK_MAX_RECV {
            tracing::warn!(
                mapper = %name, bytes, devices = res.device_list.len(),
                "the registration answer is larger than 4 MiB: a stock Go mapper (grpc-go's default receive limit) cannot read it and exits; mappers of this project read up to 64 MiB. Split the devices over more mappers or protocols"
            );
        }
        Ok(Response::new(res))
    }
}

#[tonic::async_trait]
impl DeviceManagerService for ManagerService {
    async fn mapper_register(
        &self,
        req: Request<pb::MapperRegisterRequest>,
    ) -> Result<Response<pb::MapperRegisterResponse>, Status> {
        let res = self.register(req.into_inner());
        self.hub.metrics().registration(res.is_ok());
        res
    }

    async fn report_device_status(
        &self,
        req: Request<pb::ReportDeviceStatusRequest>,
    ) -> Result<Response<pb::ReportDeviceStatusResponse>, Status> {
        let r = req.into_inner();
        if r.device_name.is_empty() {
            return Err(Status::invalid_argument(
                "ReportDeviceStatus without deviceName",
            ));
        }
        let k = ObjectKey::new(&r.device_namespace, &r.device_name);
        let twins = r.reported_device.map(|d| d.twins).unwrap_or_default();
        if twins.is_empty() {
            return Err(Status::invalid_argument(format!(
                "ReportDeviceStatus for {k} has no twins"
            )));
        }
        for t in &twins {
            validate_twin(t).map_err(|e| {
                tracing::warn!(device = %k, "refused report: {e}");
                self.hub
                    .metrics()
                    .report(ReportKind::Twins, Some("invalid"));
                Status::invalid_argument(format!("device {k}: {e}"))
            })?;
        }
        let res = self.hub.report_twins(k, twins);
        self.hub
            .metrics()
            .report(ReportKind::Twins, res.as_ref().err().map(rejection));
        res.map_err(report_status)?;
        Ok(Response::new(pb::ReportDeviceStatusResponse {}))
    }

    async fn report_device_states(
        &self,
        req: Request<pb::ReportDeviceStatesRequest>,
    ) -> Result<Response<pb::ReportDeviceStatesResponse>, Status> {
        let r = req.into_inner();
        if r.device_name.is_empty() {
            return Err(Status::invalid_argument(
                "ReportDeviceStates without deviceName",
            ));
        }
        let k = ObjectKey::new(&r.device_namespace, &r.device_name);
        let state = r.state.to_ascii_lowercase();
        if !ALLOWED_STATES.contains(&state.as_str()) {
            tracing::warn!(device = %k, state = %r.state, "refused state report");
            self.hub
                .metrics()
                .report(ReportKind::State, Some("invalid"));
            return Err(Status::invalid_argument(format!(
                "device {k}: state `{}` is not one of {}",
                r.state,
                ALLOWED_STATES.join(", ")
            )));
        }
        let res = self.hub.report_state(k, state);
        self.hub
            .metrics()
            .report(ReportKind::State, res.as_ref().err().map(rejection));
        res.map_err(report_status)?;
        Ok(Response::new(pb::ReportDeviceStatesResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twin(name: &str, reported: Option<&str>, desired: Option<&str>) -> pb::Twin {
        let tp = |v: &str| pb::TwinProperty {
            value: v.into(),
            metadata: Default::default(),
        };
        pb::Twin {
            property_name: name.into(),
            reported: reported.map(tp),
            observed_desired: desired.map(tp),
        }
    }

    #[test]
    fn twin_validation_matches_stock_rules() {
        assert!(validate_twin(&twin("temp", Some("21.5"), Some(""))).is_ok());
        assert_eq!(
            validate_twin(&twin("temp", None, Some("")))
                .unwrap_err()
                .to_string(),
            "twin temp has no reported value"
        );
        assert_eq!(
            validate_twin(&twin("temp", Some("1"), None))
                .unwrap_err()
                .to_string(),
            "twin temp has no observedDesired"
        );
        assert!(
            validate_twin(&twin("temp", Some("a b"), Some("")))
                .unwrap_err()
                .to_string()
                .contains("reported value `a b`")
        );
        assert!(validate_twin(&twin("temp", Some("{}"), Some(""))).is_err());
        assert!(validate_twin(&twin("", Some("1"), Some(""))).is_err());
        assert!(validate_twin(&twin("temp", Some(&"9".repeat(513)), Some(""))).is_err());
    }
}
