//! Bad input gets a precise error and nothing else stops: malformed YAML, an
//! unknown protocol, nested configData, out-of-range and non-numeric desired
//! values, a twin value with spaces, an invalid state string.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use e2e_tests::{Node, prop, reported_on, wait_for};
use tonic::Code;

const MALFORMED: &str = "apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: broken
spec:
  properties: [ {name: x
";

const OTHERS: &str = "apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: zig-model
spec:
  protocol: zigbee
  properties:
    - name: on
      type: BOOLEAN
      accessMode: ReadWrite
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: zig-1
spec:
  deviceModelRef:
    name: zig-model
  protocol:
    protocolName: zigbee
  properties:
    - name: on
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: nested-1
spec:
  deviceModelRef:
    name: thermostat-model
  protocol:
    protocolName: virtual
  properties:
    - name: temperature
      visitors:
        protocolName: virtual
        configData:
          conn:
            host: 10.0.0.1
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: thermostat-2
spec:
  deviceModelRef:
    name: thermostat-model
  protocol:
    protocolName: virtual
  properties:
    - name: setpoint
      reportToCloud: true
      desired:
        value: \"99\"
      visitors:
        configData:
          pattern: setpoint
          value: 20
    - name: heating
      reportToCloud: true
      desired:
        value: \"abc\"
      visitors:
        configData:
          pattern: setpoint
          value: true
";

fn twin(name: &str, value: &str) -> pb::Twin {
    let tp = |v: &str| pb::TwinProperty {
        value: v.into(),
        metadata: Default::default(),
    };
    pb::Twin {
        property_name: name.into(),
        reported: Some(tp(value)),
        observed_desired: Some(tp("")),
    }
}

#[test]
fn bad_input_is_reported_and_isolated() {
    let mut node = Node::new(&["examples/devices/thermostat.yaml"]);
    std::fs::write(node.path("devices/broken.yaml"), MALFORMED).unwrap();
    std::fs::write(node.path("devices/others.yaml"), OTHERS).unwrap();
    node.start_edgecore();
    node.start_virtual_mapper();

    let s = wait_for("devices settle", 30, || {
        let s = node.status()?;
        let t2 = s.devices.iter().find(|d| d.name == "thermostat-2")?;
        (reported_on(prop(t2, "setpoint")) && reported_on(prop(t2, "heating"))).then_some(s)
    });
    // Malformed YAML: file and line, and the rest of the directory still applied.
    assert!(
        s.source_errors
            .iter()
            .any(|e| e.contains("broken.yaml:7:1: did not find expected")),
        "{:?}",
        s.source_errors
    );
    assert!(!s.devices.iter().any(|d| d.name == "broken"));
    let dev = |n: &str| s.devices.iter().find(|d| d.name == n).unwrap();
    // Unknown protocol: named, not dispatched.
    assert_eq!(
        dev("zig-1").errors,
        vec!["no mapper registered for protocol `zigbee`".to_owned()]
    );
    assert!(dev("zig-1").mappers.is_empty());
    // Nested configData: names the property and the key.
    assert_eq!(
        dev("nested-1").errors,
        vec![
            "property temperature visitors.configData: configData key `conn` holds a nested object; DMI carries only flat key → scalar maps"
                .to_owned()
        ]
    );
    // Desired values outside the model: rejected with the reason, visible.
    let t2 = dev("thermostat-2");
    assert_eq!(
        prop(t2, "setpoint").desired_status.as_deref(),
        Some("rejected")
    );
    assert_eq!(
        prop(t2, "setpoint").desired_reason.as_deref(),
        Some("99 is above the maximum 30")
    );
    assert_eq!(
        prop(t2, "setpoint").reported.as_deref(),
        Some("20"),
        "device value untouched"
    );
    assert_eq!(
        prop(t2, "heating").desired_reason.as_deref(),
        Some("`abc` is not a boolean")
    );

    // Reports that stock EdgeCore would refuse, sent straight to the DMI socket.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = DeviceManagerServiceClient::new(dmi_proto::transport::channel(
            node.dmi_sock(),
            dmi_proto::transport::ChannelOptions::default(),
        ));
        let err = c
            .report_device_status(pb::ReportDeviceStatusRequest {
                device_name: "thermostat-1".into(),
                device_namespace: "default".into(),
                reported_device: Some(pb::DeviceStatus {
                    twins: vec![twin("temperature", "21 C")],
                    ..Default::default()
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message()
                .contains("twin temperature reported value `21 C`"),
            "{}",
            err.message()
        );
        let err = c
            .report_device_states(pb::ReportDeviceStatesRequest {
                device_name: "thermostat-1".into(),
                device_namespace: "default".into(),
                state: "sleeping".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message()
                .contains("state `sleeping` is not one of online, offline, ok, unknown, unhealthy"),
            "{}",
            err.message()
        );
        let err = c
            .report_device_status(pb::ReportDeviceStatusRequest {
                device_name: "thermostat-1".into(),
                device_namespace: "default".into(),
                reported_device: Some(pb::DeviceStatus::default()),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = c
            .report_device_states(pb::ReportDeviceStatesRequest {
                device_name: "ghost".into(),
                device_namespace: "default".into(),
                state: "online".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    });

    // Everything else keeps running: thermostat-1 reports fresh values.
    wait_for("thermostat-1 still reporting", 30, || {
        let d = node.device("default/thermostat-1")?;
        (d.errors.is_empty()
            && prop(&d, "temperature").age_ms? < 1500
            && d.state.as_deref() == Some("online"))
        .then_some(())
    });
}
