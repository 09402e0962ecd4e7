//! The controller's kube-rs client paths against `kube-fake`, an in-process fake
//! API server (no Kubernetes API server can run on these machines): labels,
//! conditions, DeviceStatus objects, model finalizers, leader election.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use device_controller::controller::{Context, StatusMode, run};
use device_controller::leader::{LeaseConfig, try_acquire};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_fake::FakeApi;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const DEVICES: &str = "devices.kubeedge.io/v1beta1/devices";
const MODELS: &str = "devices.kubeedge.io/v1beta1/devicemodels";
const STATUSES: &str = "devices.kubeedge.io/v1beta1/devicestatuses";

fn client(api: &FakeApi) -> kube::Client {
    let cfg = kube::Config::new(api.url().parse::<http::Uri>().unwrap());
    kube::Client::try_from(cfg).unwrap()
}

fn model(name: &str) -> Value {
    json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
        "metadata": {"name": name, "namespace": "plant"},
        "spec": {"protocol": "modbus", "properties": [
            {"name": "temp", "type": "INT", "accessMode": "ReadWrite", "minimum": "0", "maximum": "100"}]}})
}

fn device(name: &str, model: &str, node: &str, desired: &str) -> Value {
    json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": name, "namespace": "plant"},
        "spec": {"deviceModelRef": {"name": model}, "nodeName": node,
                 "protocol": {"protocolName": "modbus", "configData": {"ip": "10.0.0.1"}},
                 "properties": [{"name": "temp", "desired": {"value": desired}}]}})
}

async fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready(api: &FakeApi, name: &str) -> Option<(String, String, String)> {
    let d = api.get(DEVICES, "plant", name)?;
    let c = d["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?
        .clone();
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["message"].as_str()?.to_owned(),
    ))
}

#[tokio::test]
async fn devices_models_labels_statuses_and_finalizers() {
    let api = FakeApi::start().await.unwrap();
    api.put(MODELS, model("m"));
    api.put(DEVICES, device("d1", "m", "edge-1", "30"));
    let shutdown = CancellationToken::new();
    let ctx = Context::new(
        client(&api),
        Default::default(),
        StatusMode::DeviceStatus,
        "test",
    );
    let ctl = tokio::spawn(run(ctx, None, shutdown.clone()));

    // Valid device: Ready, node label, DeviceStatus owned by it; the model is guarded.
    let r = wait("d1 ready", || ready(&api, "d1").filter(|r| r.0 == "True")).await;
    assert_eq!(r.1, "Valid");
    wait("node label", || {
        api.get(DEVICES, "plant", "d1")
            .filter(|d| d["metadata"]["labels"]["devices.kubeedge.io/node-name"] == "edge-1")
    })
    .await;
    let ds = wait("DeviceStatus", || api.get(STATUSES, "plant", "d1")).await;
    let uid = api.get(DEVICES, "plant", "d1").unwrap()["metadata"]["uid"].clone();
    assert_eq!(ds["metadata"]["ownerReferences"][0]["uid"], uid);
    assert_eq!(ds["metadata"]["ownerReferences"][0]["kind"], "Device");
    let m = wait("model finalizer and status", || {
        api.get(MODELS, "plant", "m").filter(|m| {
            m["metadata"]["finalizers"][0] == "devices.kubeedge.io/model-in-use"
                && m["status"]["referencedBy"] == json!(["d1"])
        })
    })
    .await;
    assert_eq!(m["status"]["conditions"][0]["type"], "InUse");

    // nodeName moves: the label follows.
    let mut moved = api.get(DEVICES, "plant", "d1").unwrap();
    moved["spec"]["nodeName"] = json!("edge-2");
    api.put(DEVICES, moved);
    wait("label moved", || {
        api.get(DEVICES, "plant", "d1")
            .filter(|d| d["metadata"]["labels"]["devices.kubeedge.io/node-name"] == "edge-2")
    })
    .await;

    // Out-of-range desired value: Invalid, with the reason, and a Warning event.
    api.put(DEVICES, device("d2", "m", "edge-1", "500"));
    let r = wait("d2 invalid", || ready(&api, "d2")).await;
    assert_eq!((r.0.as_str(), r.1.as_str()), ("False", "Invalid"));
    assert_eq!(r.2, "desired 500 of `temp` is above the maximum 100");
    wait("warning event", || {
        api.list("events.k8s.io/v1/events")
            .into_iter()
            .find(|e| e["reason"] == "Invalid" && e["type"] == "Warning")
    })
    .await;

    // A model that is missing, then created.
    api.put(DEVICES, device("d3", "later", "edge-1", "1"));
    let r = wait("d3 model missing", || ready(&api, "d3")).await;
    assert_eq!(
        (r.1.as_str(), r.2.as_str()),
        ("ModelNotFound", "DeviceModel plant/later does not exist")
    );
    api.put(MODELS, model("later"));
    wait("d3 ready once the model exists", || {
        ready(&api, "d3").filter(|r| r.0 == "True")
    })
    .await;

    // Deleting a model in use is blocked and explained; it goes once unused.
    api.delete(MODELS, "plant", "m");
    let m = wait("deletion blocked", || {
        api.get(MODELS, "plant", "m")
            .filter(|m| m["status"]["conditions"][0]["reason"] == "DeletionBlocked")
    })
    .await;
    assert!(m["metadata"]["deletionTimestamp"].is_string());
    let msg = m["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        msg,
        "DeviceModel m is still referenced by 2 device(s): d1, d2; delete or re-point them first"
    );
    wait("DeletionBlocked event", || {
        api.list("events.k8s.io/v1/events")
            .into_iter()
            .find(|e| e["reason"] == "DeletionBlocked")
    })
    .await;
    api.delete(DEVICES, "plant", "d1");
    api.delete(DEVICES, "plant", "d2");
    wait("model gone", || {
        api.get(MODELS, "plant", "m").is_none().then_some(())
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), ctl)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn leader_election_allows_one_holder() {
    let api = FakeApi::start().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client(&api), "kubeedge");
    let a = LeaseConfig {
        name: "dc".into(),
        identity: "a".into(),
        duration: Duration::from_secs(2),
        renew: Duration::from_millis(500),
    };
    let b = LeaseConfig {
        identity: "b".into(),
        ..a.clone()
    };
    assert!(try_acquire(&leases, &a).await.unwrap());
    assert!(
        !try_acquire(&leases, &b).await.unwrap(),
        "b must not take a live lease"
    );
    assert!(try_acquire(&leases, &a).await.unwrap(), "the holder renews");
    // a stops renewing: after the lease duration b takes over.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert!(try_acquire(&leases, &b).await.unwrap());
    assert!(!try_acquire(&leases, &a).await.unwrap());
    let lease = api
        .get("coordination.k8s.io/v1/leases", "kubeedge", "dc")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}
