//! `GetDevice` on the mapper's own socket (in process, against the fake
//! EdgeCore of the `testing` feature): the device comes back as EdgeCore
//! sent it, whether it arrived with the registration or by `RegisterDevice`
//! afterwards, with `status.twins` filled from the latest readings; an
//! unknown device is `NotFound`. A registration answer above 4 MiB is read.

#![cfg(feature = "testing")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use dmi_proto::config_data::from_any_map;
use dmi_proto::transport::{ChannelOptions, channel};
use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_mapper_service_client::DeviceMapperServiceClient;
use mapper_sdk::testing::{FakeEdgeCore, TestDevice};
use mapper_sdk::{DeviceClient, Driver, DriverResult, Mapper, Value};
use serde_json::json;

#[derive(serde::Deserialize)]
struct Cfg {}

#[derive(serde::Deserialize)]
struct Addr {
    register: u16,
}

/// Reads each address as its register number.
struct Registers;

impl Driver for Registers {
    type Config = Cfg;
    type Address = Addr;
    type Client = Registers;
    async fn connect(&self, _: &Cfg) -> DriverResult<Registers> {
        Ok(Registers)
    }
}

impl DeviceClient for Registers {
    type Address = Addr;
    async fn read(&self, a: &Addr) -> DriverResult<Value> {
        Ok(Value::Int(i64::from(a.register)))
    }
    async fn write(&self, _: &Addr, _: &Value) -> DriverResult<()> {
        Ok(())
    }
}

fn device(name: &str) -> TestDevice {
    TestDevice::new(name, "registers", json!({"unit": 3, "label": "ä ✓"}))
        .read_only("a", "INT", json!({"register": 7}), 100)
        .read_only("b", "INT", json!({"register": 9}), 100)
}

async fn get(
    c: &mut DeviceMapperServiceClient<tonic::transport::Channel>,
    name: &str,
) -> Result<pb::Device, tonic::Status> {
    c.get_device(pb::GetDeviceRequest {
        device_name: name.into(),
        device_namespace: "default".into(),
    })
    .await
    .map(|r| r.into_inner().device.expect("a device in the answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_device_returns_the_device_as_sent_with_its_twins() {
    let edge = FakeEdgeCore::start().await.unwrap();
    // One device comes with the registration, one by RegisterDevice after it.
    edge.add_device(device("early")).await.unwrap();
    let cfg = edge.mapper_config("registers");
    let sock = cfg.socket_path.clone();
    let _mapper = edge.spawn(Mapper::new(cfg, Registers));
    let wait = Duration::from_secs(10);
    edge.wait_for("early twin", wait, |e| {
        (e.twin("early", "b")?.value == "9").then_some(())
    })
    .await
    .unwrap();
    edge.add_device(device("late")).await.unwrap();
    edge.wait_for("late twin", wait, |e| {
        (e.twin("late", "a")?.value == "7").then_some(())
    })
    .await
    .unwrap();

    let mut c = DeviceMapperServiceClient::new(channel(sock, ChannelOptions::default()));
    for name in ["early", "late"] {
        let d = get(&mut c, name).await.unwrap();
        assert_eq!((d.name.as_str(), d.namespace.as_str()), (name, "default"));
        let spec = d.spec.unwrap();
        let protocol = spec.protocol.unwrap();
        assert_eq!(protocol.protocol_name, "registers");
        let config = from_any_map(&protocol.config_data.unwrap().data).unwrap();
        assert_eq!(json!(config), json!({"unit": 3, "label": "ä ✓"}), "{name}");
        let props: Vec<_> = spec.properties.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(props, ["a", "b"], "{name}");
        let visitor = spec.properties[1].visitors.clone().unwrap();
        let visitor = from_any_map(&visitor.config_data.unwrap().data).unwrap();
        assert_eq!(json!(visitor), json!({"register": 9}), "{name}");
        let twins = d.status.unwrap().twins;
        let reported: Vec<_> = twins
            .iter()
            .map(|t| {
                (
                    t.property_name.as_str(),
                    t.reported.as_ref().unwrap().value.as_str(),
                )
            })
            .collect();
        assert_eq!(reported, [("a", "7"), ("b", "9")], "{name}");
    }
    let missing = get(&mut c, "nobody").await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
}

/// A registration answer above tonic's and grpc-go's default 4 MiB receive
/// limit (here 3 000 devices of about 1.6 KiB each, about 5 MiB) is read: the
/// mapper once failed to decode it and retried registering forever, so no
/// device of a large node ever ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_answer_above_4_mib_is_read() {
    let edge = FakeEdgeCore::start().await.unwrap();
    let label = "x".repeat(1500);
    for i in 0..3000 {
        edge.add_device(
            TestDevice::new(
                &format!("big-{i}"),
                "registers",
                json!({"unit": 3, "label": label}),
            )
            .read_only("a", "INT", json!({"register": 7}), 60_000),
        )
        .await
        .unwrap();
    }
    let _mapper = edge.spawn(Mapper::new(edge.mapper_config("registers"), Registers));
    edge.wait_for("the last device's twin", Duration::from_secs(60), |e| {
        (e.twin("big-2999", "a")?.value == "7").then_some(())
    })
    .await
    .unwrap();
}
