//! A mapper's `ReportDeviceStatus` as edgecore-dmi receives it: arbitrary bytes
//! decoded as `ReportDeviceStatusRequest` (prost), then the checks the server
//! applies before a report reaches the hub (`edgecore_dmi::server::validate_twin`
//! on every twin, the device key, and the refusal messages).
//!
//! Must never panic.

#![no_main]

use dmi_proto::v1beta1::ReportDeviceStatusRequest;
use edgecore_dmi::ObjectKey;
use edgecore_dmi::server::validate_twin;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = ReportDeviceStatusRequest::decode(data) else {
        return;
    };
    let key = ObjectKey::new(&req.device_namespace, &req.device_name);
    let twins = req.reported_device.map(|d| d.twins).unwrap_or_default();
    for t in &twins {
        if let Err(e) = validate_twin(t) {
            // The refusal text the server sends back.
            let _ = format!("device {key}: {e}");
        }
    }
});
