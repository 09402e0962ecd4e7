//! The driver and the mapper against opcua-sim (in process, on its own
//! port): reads split by the server's MaxNodesPerRead, a node made Bad on
//! demand, sessions dropped by the server, and subscriptions created anew
//! after a reconnect.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use mapper_sdk::testing::{FakeEdgeCore, TestDevice};
use mapper_sdk::{DeviceClient, DriverError, Value};
use opcua_sim::{SimConfig, Simulator};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn sim(dir: &std::path::Path, max_nodes_per_read: usize) -> Simulator {
    let mut cfg: SimConfig = yaml_serde::from_str(
        r"
tickMs: 50
nodes:
  - { nodeId: s=Line.Counter, folder: Line, dataType: Int32, pattern: counter, periodMs: 100 }
  - { nodeId: s=Line.Temperature, folder: Line, dataType: Double, value: 21.5 }
  - { nodeId: s=Line.Setpoint, folder: Line, dataType: Int16, value: 0, writable: true }
",
    )
    .unwrap();
    cfg.pki_dir = dir.join("sim-pki");
    cfg.limits.max_nodes_per_read = max_nodes_per_read;
    Simulator::start(cfg.with_generated(20, 1000))
        .await
        .unwrap()
}

/// The next Int value pushed.
async fn next_value(s: &mut mapper_sdk::PushStream) -> i64 {
    loop {
        let p = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("a notification")
            .expect("stream open");
        if let Ok(Value::Int(n)) = p.value {
            return n;
        }
    }
}

fn generated(k: u32) -> String {
    format!("ns=2;i={}", opcua_sim::GENERATED_FIRST_ID + k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_split_by_the_servers_max_nodes_per_read() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(dir.path(), 7).await;
    let driver = driver(dir.path());
    let dev = connect(&driver, json!({"url": sim.endpoint_url()})).await;
    assert_eq!(dev.conn().server_max_nodes_per_read(), Some(7));
    assert_eq!(dev.max_nodes_per_read(), 7);
    let mut addrs: Vec<_> = (0..20).map(|k| address(&generated(k))).collect();
    addrs.push(address("ns=2;s=Line.Temperature"));
    let refs: Vec<_> = addrs.iter().collect();
    let before = dev.requests();
    let got = dev.read_batch(&refs).await;
    assert_eq!(dev.requests() - before, 3, "21 nodes at 7 per Read");
    for (k, r) in got.iter().take(20).enumerate() {
        let v = r.as_ref().unwrap().as_f64().unwrap();
        assert!(v >= k as f64, "{k}: {v}");
    }
    assert_eq!(got[20].as_ref().unwrap(), &Value::Float(21.5));
    // maxNodesPerRead below the server's limit wins.
    let dev = connect(
        &driver,
        json!({"url": sim.endpoint_url(), "maxNodesPerRead": 5}),
    )
    .await;
    let before = dev.requests();
    assert!(dev.read_batch(&refs).await.iter().all(Result::is_ok));
    assert_eq!(dev.requests() - before, 5, "21 nodes at 5 per Read");
    // The same node read by several properties is read once.
    let same = address("ns=2;s=Line.Temperature");
    let before = dev.requests();
    let r = dev.read_batch(&[&same, &same, &same]).await;
    assert_eq!(dev.requests() - before, 1);
    assert!(r.iter().all(|r| r.as_ref().unwrap() == &Value::Float(21.5)));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_made_bad_is_that_propertys_error_only() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(dir.path(), 1000).await;
    let driver = driver(dir.path());
    let dev = connect(&driver, json!({"url": sim.endpoint_url()})).await;
    let t = address("ns=2;s=Line.Temperature");
    let c = address("ns=2;s=Line.Counter");
    sim.bad("s=Line.Temperature", "BadSensorFailure").unwrap();
    let r = dev.read_batch(&[&t, &c]).await;
    let e = r[0].as_ref().unwrap_err();
    // async-opcua's server (0.19) sends the status of a Value only together
    // with a value, and opcua-sim drops the value of a Bad node: the status
    // may not reach the client, which then sees a Good result without a
    // value. Either way it is this property's error and no other's.
    let text = e.to_string();
    assert!(
        (matches!(e, DriverError::Device(_))
            && text.contains("ns=2;s=Line.Temperature: BadSensorFailure"))
            || (matches!(e, DriverError::Value(_))
                && text.contains("ns=2;s=Line.Temperature: the server sent no value")),
        "{e}"
    );
    assert!(r[1].is_ok(), "{:?}", r[1]);
    sim.good("s=Line.Temperature").unwrap();
    assert_eq!(dev.read(&t).await.unwrap(), Value::Float(21.5));
    // Writes to a Bad node get its status back.
    let s = address("ns=2;s=Line.Setpoint");
    dev.write(&s, &Value::Int(5)).await.unwrap();
    assert_eq!(dev.read(&s).await.unwrap(), Value::Int(5));
    sim.bad("s=Line.Setpoint", "BadDeviceFailure").unwrap();
    let e = dev.write(&s, &Value::Int(6)).await.unwrap_err();
    assert!(matches!(e, DriverError::Device(_)), "{e}");
    assert!(e.to_string().contains("Bad"), "{e}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_sessions_are_a_link_error_and_subscriptions_come_back_after_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(dir.path(), 1000).await;
    let driver = driver(dir.path());
    let cfg = json!({"url": sim.endpoint_url(), "subscribe": true, "publishingInterval": 100});
    let counter = address_with(
        json!({"nodeID": "ns=2;s=Line.Counter"}),
        None,
        Duration::from_millis(100),
    );
    let bad = address("ns=2;s=Nope");
    let dev = connect(&driver, cfg.clone()).await;
    let sub = dev.subscribe(&[&counter, &bad]).await.unwrap().unwrap();
    // async-opcua's server accepts a monitored item of an unknown node (and
    // notifies its Bad status); asyncua refuses it (tests/asyncua.rs).
    assert!(sub.covered[0]);
    let mut stream = sub.stream;
    let a = next_value(&mut stream).await;
    let b = next_value(&mut stream).await;
    assert!(b > a, "{a} {b}");

    sim.drop_connections().await.unwrap();
    let lost = tokio::time::timeout(WAIT, async {
        loop {
            match stream.next().await {
                Some(p) if p.value.is_err() => return p.value.unwrap_err(),
                Some(_) => {}
                None => panic!("ended without an error"),
            }
        }
    })
    .await
    .expect("the dropped session is noticed");
    assert!(lost.is_link_failure(), "{lost}");
    assert!(dev.read(&counter).await.unwrap_err().is_link_failure());
    // What the SDK does: disconnect, connect again (a new session), subscribe again.
    let old = dev.conn().clone();
    assert!(old.is_lost());
    dev.disconnect().await;
    let dev = connect(&driver, cfg).await;
    assert!(!Arc::ptr_eq(&old, dev.conn()));
    let sub = dev.subscribe(&[&counter, &bad]).await.unwrap().unwrap();
    assert!(sub.covered[0]);
    let mut stream = sub.stream;
    let c = next_value(&mut stream).await;
    let d = next_value(&mut stream).await;
    assert!(d > c && c > b, "{b} {c} {d}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mapper_rides_out_dropped_sessions_in_push_and_poll_mode() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(dir.path(), 1000).await;
    let edge = FakeEdgeCore::start().await.unwrap();
    let url = sim.endpoint_url().to_owned();
    edge.add_device(
        TestDevice::new(
            "pushed",
            "opcua",
            json!({"url": url, "subscribe": true, "publishingInterval": 100}),
        )
        // The collect cycle is the monitored item's sampling interval.
        .read_only(
            "counter",
            "INT",
            json!({"nodeID": "ns=2;s=Line.Counter"}),
            200,
        ),
    )
    .await
    .unwrap();
    edge.add_device(
        TestDevice::new("polled", "opcua", json!({"url": url}))
            .read_only(
                "counter",
                "INT",
                json!({"nodeID": "ns=2;s=Line.Counter"}),
                200,
            )
            .read_write(
                "set",
                "INT",
                json!({"nodeID": "ns=2;s=Line.Setpoint"}),
                200,
                Some("12"),
            ),
    )
    .await
    .unwrap();
    let _mapper = edge.spawn_mapper("opcua", Arc::new(driver(dir.path())));
    let value =
        |e: &FakeEdgeCore, d: &str| -> Option<i64> { e.twin(d, "counter")?.value.parse().ok() };
    for d in ["pushed", "polled"] {
        edge.wait_for("online", WAIT, |e| (e.state(d)? == "online").then_some(()))
            .await
            .unwrap();
    }
    edge.wait_for("set-point", WAIT, |e| {
        (e.twin("polled", "set")?.value == "12").then_some(())
    })
    .await
    .unwrap();
    for round in 0..2 {
        let before = edge
            .wait_for("a pushed value", WAIT, |e| value(e, "pushed"))
            .await
            .unwrap();
        sim.drop_connections().await.unwrap();
        // The server forgot nothing but the sessions: the twins move again
        // once the mapper has new sessions and a new subscription.
        edge.wait_for("pushed again", WAIT, |e| {
            (value(e, "pushed")? > before + 5).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let polled = value(&edge, "polled").unwrap();
        edge.wait_for("polled again", WAIT, |e| {
            (value(e, "polled")? > polled + 5).then_some(())
        })
        .await
        .unwrap();
        for d in ["pushed", "polled"] {
            edge.wait_for("online again", WAIT, |e| {
                (e.state(d)? == "online").then_some(())
            })
            .await
            .unwrap();
        }
    }
    sim.shutdown().await;
}
