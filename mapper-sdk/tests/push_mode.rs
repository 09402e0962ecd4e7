//! Push-mode collection through the whole SDK (in process, against the fake
//! EdgeCore of the `testing` feature): values a device pushes become twins
//! without polling, the properties the subscription does not cover are still
//! polled, and the end of the stream is a link failure (the device reconnects
//! and subscribes again).

#![cfg(feature = "testing")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mapper_sdk::testing::{FakeEdgeCore, TestDevice};
use mapper_sdk::{
    DeviceClient, Driver, DriverResult, Mapper, ObjectId, Pushed, Sample, SampleSink, Subscription,
    Value,
};
use serde_json::json;
use tokio::sync::mpsc;

#[derive(serde::Deserialize)]
struct Cfg {}

#[derive(serde::Deserialize)]
struct Addr {
    push: bool,
}

/// Hands the test the sender of each subscription it opens.
#[derive(Clone, Default)]
struct Notifying {
    senders: Arc<Mutex<Vec<mpsc::UnboundedSender<Pushed>>>>,
    polled: Arc<AtomicUsize>,
    connects: Arc<AtomicUsize>,
}

struct NotifyingDevice(Notifying);

impl Driver for Notifying {
    type Config = Cfg;
    type Address = Addr;
    type Client = NotifyingDevice;
    async fn connect(&self, _: &Cfg) -> DriverResult<NotifyingDevice> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        Ok(NotifyingDevice(self.clone()))
    }
}

impl DeviceClient for NotifyingDevice {
    type Address = Addr;
    async fn read(&self, a: &Addr) -> DriverResult<Value> {
        assert!(!a.push, "a pushed property was polled");
        self.0.polled.fetch_add(1, Ordering::SeqCst);
        Ok(Value::Int(1))
    }
    async fn write(&self, _: &Addr, _: &Value) -> DriverResult<()> {
        Ok(())
    }
    async fn subscribe(&self, at: &[&Addr]) -> DriverResult<Option<Subscription>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.0.senders.lock().unwrap().push(tx);
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
        Ok(Some(Subscription {
            stream: Box::pin(stream),
            covered: at.iter().map(|a| a.push).collect(),
        }))
    }
}

/// Records every sample it is given.
#[derive(Default)]
struct Recording(Mutex<Vec<(String, Option<Value>)>>);

impl SampleSink for Recording {
    fn accept(&self, device: &ObjectId, property: &str, sample: &Sample) {
        self.0
            .lock()
            .unwrap()
            .push((format!("{device}/{property}"), sample.value.clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_values_become_twins_and_a_closed_stream_reconnects() {
    let edge = FakeEdgeCore::start().await.unwrap();
    edge.add_device(
        TestDevice::new("button", "notify", json!({}))
            .read_only("pressed", "INT", json!({"push": true}), 60_000)
            .read_only("battery", "INT", json!({"push": false}), 100),
    )
    .await
    .unwrap();
    let driver = Notifying::default();
    let sink = Arc::new(Recording::default());
    let _mapper = edge
        .spawn(Mapper::new(edge.mapper_config("notify"), driver.clone()).with_sink(sink.clone()));
    let wait = Duration::from_secs(10);
    let sender = edge
        .wait_for("subscription", wait, |_| {
            driver.senders.lock().unwrap().last().cloned()
        })
        .await
        .unwrap();
    sender
        .send(Pushed {
            index: 0,
            value: Ok(Value::Int(5)),
            source_time: None,
        })
        .unwrap();
    edge.wait_for("pushed twin", wait, |e| {
        (e.twin("button", "pressed")?.value == "5").then_some(())
    })
    .await
    .unwrap();
    edge.wait_for("polled twin", wait, |e| {
        (e.twin("button", "battery")?.value == "1").then_some(())
    })
    .await
    .unwrap();
    assert_eq!(edge.state("button").as_deref(), Some("online"));
    // The same samples reached the sink: pushed and polled alike.
    let seen = sink.0.lock().unwrap().clone();
    assert!(seen.contains(&("default/button/pressed".into(), Some(Value::Int(5)))));
    assert!(seen.contains(&("default/button/battery".into(), Some(Value::Int(1)))));
    // The stream ends: the device reconnects and subscribes again.
    drop(sender);
    driver.senders.lock().unwrap().clear();
    let again = edge
        .wait_for("a new subscription", wait, |_| {
            driver.senders.lock().unwrap().last().cloned()
        })
        .await
        .unwrap();
    assert!(driver.connects.load(Ordering::SeqCst) >= 2);
    again
        .send(Pushed {
            index: 0,
            value: Ok(Value::Int(6)),
            source_time: None,
        })
        .unwrap();
    edge.wait_for("second pushed twin", wait, |e| {
        (e.twin("button", "pressed")?.value == "6").then_some(())
    })
    .await
    .unwrap();
}
