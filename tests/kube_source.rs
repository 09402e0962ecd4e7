//! edgecore-dmi with its Kubernetes source, against `kube-fake` (an in-process
//! fake API server: no real one can run on these machines) with the device
//! controller running in process and the real edgecore-dmi and virtual mapper
//! binaries: devices created, updated and deleted, a model missing then
//! created, nodeName moved away and back, watches dropped and resumed, and the
//! API server down while reports arrive (kept working, restarted, then flushed,
//! coalesced).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use device_controller::controller::{Context, StatusMode, run};
use e2e_tests::{Node, prop};
use kube_fake::FakeApi;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const DEVICES: &str = "devices.kubeedge.io/v1beta1/devices";
const MODELS: &str = "devices.kubeedge.io/v1beta1/devicemodels";
const STATUSES: &str = "devices.kubeedge.io/v1beta1/devicestatuses";

fn model(name: &str) -> Value {
    json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"protocol": "virtual", "properties": [
            {"name": "parts", "type": "INT", "accessMode": "ReadOnly"},
            {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite", "minimum": "0", "maximum": "100"}]}})
}

fn device(name: &str, model: &str, node: &str, setpoint: &str) -> Value {
    json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"deviceModelRef": {"name": model}, "nodeName": node,
            "protocol": {"protocolName": "virtual"},
            "stateReport": {"reportToCloud": true, "reportCycle": 1000},
            "properties": [
                {"name": "parts", "collectCycle": 250, "reportToCloud": true,
                 "visitors": {"protocolName": "virtual", "configData": {"pattern": "counter", "max": 1000000}}},
                {"name": "setpoint", "collectCycle": 250, "reportToCloud": true, "desired": {"value": setpoint},
                 "visitors": {"protocolName": "virtual", "configData": {"pattern": "setpoint", "value": 0}}}]}})
}

/// Polls `f` (which may block) until it returns `Some`.
async fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = tokio::task::block_in_place(&mut f) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn twin(api: &FakeApi, name: &str, property: &str) -> Option<String> {
    let ds = api.get(STATUSES, "default", name)?;
    ds["status"]["twins"]
        .as_array()?
        .iter()
        .find(|t| t["propertyName"] == property)?["reported"]["value"]
        .as_str()
        .map(str::to_owned)
}

fn status_patches(api: &FakeApi, name: &str) -> usize {
    let path = format!("/devicestatuses/{name}/status");
    api.requests()
        .iter()
        .filter(|(m, p)| m == "PATCH" && p.contains(&path))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_source_end_to_end() {
    let api = FakeApi::start().await.unwrap();
    let client =
        kube::Client::try_from(kube::Config::new(api.url().parse::<http::Uri>().unwrap())).unwrap();
    let shutdown = CancellationToken::new();
    let _controller = tokio::spawn(run(
        Context::new(client, Default::default(), StatusMode::DeviceStatus, "test"),
        None,
        shutdown.clone(),
    ));
    api.put(MODELS, model("counter-model"));
    api.put(DEVICES, device("line-1", "counter-model", "edge-1", "10"));
    api.put(
        DEVICES,
        device("elsewhere-1", "counter-model", "edge-2", "10"),
    );

    let mut node = Node::new(&[]);
    let kubeconfig = node.path("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let kc = kubeconfig.to_str().unwrap().to_owned();
    let start_edgecore = |node: &mut Node| {
        tokio::task::block_in_place(|| {
            node.start_edgecore_with(
                &["--source", "kubernetes", "--node-name", "edge-1"],
                &[("KUBECONFIG", &kc)],
            )
        })
    };
    start_edgecore(&mut node);
    tokio::task::block_in_place(|| node.start_virtual_mapper());

    // Created: only this node's device is served; its twins reach DeviceStatus.
    wait("line-1 reporting", 30, || {
        let d = node.device("default/line-1")?;
        (prop(&d, "setpoint").reported.as_deref() == Some("10")).then_some(())
    })
    .await;
    assert!(
        node.device("default/elsewhere-1").is_none(),
        "a device of another node was served"
    );
    wait("twins in DeviceStatus", 30, || {
        twin(&api, "line-1", "parts").filter(|v| v.parse::<i64>().unwrap_or(0) > 0)
    })
    .await;
    let ds = api.get(STATUSES, "default", "line-1").unwrap();
    assert_eq!(ds["status"]["state"], "online");
    assert!(
        ds["status"]["lastOnlineTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    // Updated: a new desired value travels to the mapper and back.
    let mut d = api.get(DEVICES, "default", "line-1").unwrap();
    d["spec"]["properties"][1]["desired"]["value"] = json!("42");
    api.put(DEVICES, d);
    wait("setpoint 42 in DeviceStatus", 30, || {
        (twin(&api, "line-1", "setpoint").as_deref() == Some("42")).then_some(())
    })
    .await;

    // A model missing, then created.
    api.put(DEVICES, device("late-1", "late-model", "edge-1", "5"));
    let late = wait("late-1 known", 30, || node.device("default/late-1")).await;
    assert_eq!(
        late.errors,
        vec!["model default/late-model not found".to_owned()]
    );
    api.put(MODELS, model("late-model"));
    wait("late-1 reporting", 30, || {
        let d = node.device("default/late-1")?;
        (prop(&d, "setpoint").reported.as_deref() == Some("5")).then_some(())
    })
    .await;

    // nodeName moved away: the controller relabels it and this node lets go; and back.
    let mut d = api.get(DEVICES, "default", "late-1").unwrap();
    d["spec"]["nodeName"] = json!("edge-2");
    api.put(DEVICES, d);
    wait("late-1 gone from this node", 30, || {
        node.device("default/late-1").is_none().then_some(())
    })
    .await;
    let mut d = api.get(DEVICES, "default", "late-1").unwrap();
    d["spec"]["nodeName"] = json!("edge-1");
    api.put(DEVICES, d);
    wait("late-1 back", 30, || node.device("default/late-1")).await;

    // Watches dropped: they resume and later changes still arrive.
    api.drop_watches();
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.put(
        DEVICES,
        device("after-drop", "counter-model", "edge-1", "7"),
    );
    wait("device created after the watch dropped", 30, || {
        let d = node.device("default/after-drop")?;
        (prop(&d, "setpoint").reported.as_deref() == Some("7")).then_some(())
    })
    .await;

    // API server down while reports arrive: edge keeps working, even across a
    // restart of edgecore-dmi; then the latest values are flushed, coalesced.
    api.set_down(true);
    let parts = |node: &Node| {
        node.device("default/line-1")
            .and_then(|d| prop(&d, "parts").reported.clone()?.parse::<i64>().ok())
    };
    let before = wait("local value", 10, || parts(&node)).await;
    wait(
        "local values keep moving while the API server is down",
        30,
        || parts(&node).filter(|p| *p > before + 4),
    )
    .await;
    tokio::task::block_in_place(|| node.kill_edgecore());
    start_edgecore(&mut node);
    assert!(
        tokio::task::block_in_place(|| node.device("default/line-1")).is_some(),
        "served from the store while offline"
    );
    let during = wait("reports resume after the restart, offline", 30, || {
        parts(&node).filter(|p| *p > before + 8)
    })
    .await;
    let patches_before = status_patches(&api, "line-1");
    api.set_down(false);
    wait(
        "DeviceStatus catches up with what was reported offline",
        30,
        || {
            twin(&api, "line-1", "parts")
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|v| *v >= during)
        },
    )
    .await;
    // Coalesced: parts changes 4 times a second, yet at most about one patch per
    // second goes out for the device (interval 1 s).
    let t0 = Instant::now();
    let p0 = status_patches(&api, "line-1");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = status_patches(&api, "line-1") - p0;
    assert!(
        (1..=4).contains(&n),
        "{n} status patches in {:?}",
        t0.elapsed()
    );
    assert!(patches_before > 0);

    // Deleted: gone from the node.
    api.delete(DEVICES, "default", "after-drop");
    wait("after-drop removed", 30, || {
        node.device("default/after-drop").is_none().then_some(())
    })
    .await;
    shutdown.cancel();
}

/// Reports that change only timestamps (a constant value reported every
/// second) are written back once per `--status-refresh`, not once per
/// report; a changed value still goes out within the status interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unchanged_values_are_patched_once_per_refresh() {
    let api = FakeApi::start().await.unwrap();
    api.put(
        MODELS,
        json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "steady-model", "namespace": "default"},
            "spec": {"protocol": "virtual", "properties": [
                {"name": "level", "type": "INT", "accessMode": "ReadOnly"},
                {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite"}]}}),
    );
    let steady = |setpoint: &str| {
        json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": "tank-1", "namespace": "default",
                "labels": {"devices.kubeedge.io/node-name": "edge-1"}},
            "spec": {"deviceModelRef": {"name": "steady-model"}, "nodeName": "edge-1",
                "protocol": {"protocolName": "virtual"},
                "stateReport": {"reportToCloud": true, "reportCycle": 250},
                "properties": [
                    {"name": "level", "collectCycle": 100, "reportCycle": 250, "reportToCloud": true,
                     "visitors": {"protocolName": "virtual", "configData": {"pattern": "constant", "value": 7}}},
                    {"name": "setpoint", "collectCycle": 100, "reportCycle": 250, "reportToCloud": true,
                     "desired": {"value": setpoint},
                     "visitors": {"protocolName": "virtual", "configData": {"pattern": "setpoint", "value": 0}}}]}})
    };
    api.put(DEVICES, steady("3"));
    // The node label and the DeviceStatus are what the device controller
    // would add; it does not run here.
    api.put(
        STATUSES,
        json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceStatus",
            "metadata": {"name": "tank-1", "namespace": "default"}, "spec": {}, "status": {}}),
    );

    let mut node = Node::new(&[]);
    let kubeconfig = node.path("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let kc = kubeconfig.to_str().unwrap().to_owned();
    tokio::task::block_in_place(|| {
        node.start_edgecore_with(
            &[
                "--source",
                "kubernetes",
                "--node-name",
                "edge-1",
                "--status-refresh",
                "10s",
            ],
            &[("KUBECONFIG", &kc)],
        );
        node.start_virtual_mapper();
    });
    wait("the desired set-point written back", 30, || {
        twin(&api, "tank-1", "setpoint").filter(|v| v == "3")
    })
    .await;
    wait("level written back", 30, || {
        twin(&api, "tank-1", "level").filter(|v| v == "7")
    })
    .await;
    // Let the first writes settle, then count over 15 s of reports every
    // 250 ms (60 reports): one refresh (10 s) or two, never one per report.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p0 = status_patches(&api, "tank-1");
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let n = status_patches(&api, "tank-1") - p0;
    assert!(
        (1..=2).contains(&n),
        "{n} status patches in {:?} with unchanged values and a 10 s refresh",
        t0.elapsed()
    );
    // Right after a refresh went out, a new desired value changes the
    // set-point: it must be written within the interval, long before the
    // next refresh (about 10 s away).
    let before = status_patches(&api, "tank-1");
    wait("a refresh", 15, || {
        (status_patches(&api, "tank-1") > before).then_some(())
    })
    .await;
    api.put(DEVICES, steady("9"));
    let t1 = Instant::now();
    wait("the new set-point written back", 30, || {
        twin(&api, "tank-1", "setpoint").filter(|v| v == "9")
    })
    .await;
    assert!(
        t1.elapsed() < Duration::from_secs(7),
        "a changed value waited for the refresh: {:?}",
        t1.elapsed()
    );
}
