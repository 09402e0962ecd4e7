//! Against a real cluster: runs only with `KUBECONFIG` set and `--ignored`
//! (`KUBECONFIG=~/.kube/config cargo test -p e2e-tests --test cluster -- --ignored`).
//! Installs the CRDs, runs the controller in process, and checks a Device gets
//! its node label, Ready condition and DeviceStatus. No cluster can run on the
//! project's CI machines, so CI skips it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use device_controller::controller::{Context, StatusMode, run};
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::test]
#[ignore = "needs cluster"]
async fn controller_on_a_real_cluster() {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "set KUBECONFIG to the cluster to test against"
    );
    let client = kube::Client::try_default().await.unwrap();
    let pp = PatchParams::apply("edge-dmi-test").force();
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
        )),
    );
    for (_, yaml) in device_crds::crd_files() {
        let v: serde_json::Value = yaml_serde::from_str(&yaml).unwrap();
        let name = v["metadata"]["name"].as_str().unwrap().to_owned();
        crds.patch(&name, &pp, &Patch::Apply(&v)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ns = "default";
    let gvk = |k: &str| {
        ApiResource::from_gvk(&GroupVersionKind::gvk("devices.kubeedge.io", "v1beta1", k))
    };
    let models: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &gvk("DeviceModel"));
    let devices: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &gvk("Device"));
    models
        .patch("edge-dmi-test-model", &pp, &Patch::Apply(json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "edge-dmi-test-model"}, "spec": {"protocol": "virtual",
            "properties": [{"name": "p", "type": "INT", "accessMode": "ReadWrite", "maximum": "10"}]}})))
        .await
        .unwrap();
    devices
        .patch("edge-dmi-test", &pp, &Patch::Apply(json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": "edge-dmi-test"}, "spec": {"deviceModelRef": {"name": "edge-dmi-test-model"},
            "nodeName": "edge-dmi-test-node", "protocol": {"protocolName": "virtual"},
            "properties": [{"name": "p", "desired": {"value": "5"}}]}})))
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let ctl = tokio::spawn(run(
        Context::new(
            client.clone(),
            Default::default(),
            StatusMode::DeviceStatus,
            "cluster-test",
        ),
        Some(ns.into()),
        shutdown.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = devices.get("edge-dmi-test").await.unwrap();
        let labelled = d
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(device_crds::NODE_LABEL))
            .map(String::as_str)
            == Some("edge-dmi-test-node");
        let ready = d.data["status"]["conditions"][0]["status"] == "True";
        if labelled && ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "device not reconciled: {:?}",
            d.data["status"]
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let statuses: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &gvk("DeviceStatus"));
    assert!(statuses.get_opt("edge-dmi-test").await.unwrap().is_some());
    shutdown.cancel();
    let _ = ctl.await;
    devices
        .delete("edge-dmi-test", &Default::default())
        .await
        .unwrap();
}
