//! The whole mapper against asyncua: the driver contract (`check_driver`),
//! the mapper in process against the SDK's fake EdgeCore (twins, a bad node,
//! desired values, push mode), and the real binary fed bad input, each
//! refused with a precise error naming the device and the property while
//! the rest keeps running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mapper_sdk::testing::{Conformance, FakeEdgeCore, TestDevice, check_driver};
use mapper_sdk::{PropertyType, Value};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opcua_driver_keeps_the_driver_contract() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_asyncua(dir.path(), &[]);
    let ns = server.ns;
    let broken = check_driver(
        Arc::new(driver(dir.path())),
        Conformance {
            config: json!({"url": server.url()}),
            readable: vec![
                (
                    json!({"nodeID": format!("ns={ns};s=Int16")}),
                    Some(PropertyType::Int),
                ),
                (
                    json!({"nodeID": format!("ns={ns};s=Double")}),
                    Some(PropertyType::Double),
                ),
                (
                    json!({"nodeID": format!("ns={ns};s=String")}),
                    Some(PropertyType::String),
                ),
            ],
            writable: Some((
                json!({"nodeID": format!("ns={ns};s=SetInt16")}),
                Some(PropertyType::Int),
                Value::Int(9),
            )),
        },
    )
    .await;
    assert!(broken.is_empty(), "{broken:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opcua_mapper_against_the_fake_edgecore() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_asyncua(dir.path(), &[]);
    let ns = server.ns;
    let n = |s: &str| json!({ "nodeID": format!("ns={ns};s={s}") });
    let edge = FakeEdgeCore::start().await.unwrap();
    edge.add_device(
        TestDevice::new("press", "opcua", json!({"url": server.url()}))
            .read_only("temp", "DOUBLE", n("Double"), 200)
            .read_only("count", "INT", n("UInt32"), 200)
            .read_only("curve", "STRING", n("Int32Array"), 200)
            .read_only("ghost", "INT", n("Ghost"), 200)
            .read_write("set", "INT", n("SetInt16"), 200, Some("21")),
    )
    .await
    .unwrap();
    edge.add_device(
        TestDevice::new(
            "pushed",
            "opcua",
            json!({"url": server.url(), "subscribe": true, "publishingInterval": 100}),
        )
        // A 10-minute collect cycle, which is also the sampling interval:
        // asyncua notifies every change of a value it is written anyway, so
        // only notifications can move this twin.
        .read_only("counter", "INT", n("Counter"), 600_000),
    )
    .await
    .unwrap();
    let _mapper = edge.spawn_mapper("opcua", Arc::new(driver(dir.path())));
    edge.wait_for("temperature", WAIT, |e| {
        (e.twin("press", "temp")?.value == "2.5").then_some(())
    })
    .await
    .unwrap();
    assert_eq!(edge.twin("press", "count").unwrap().value, "4000000000");
    assert_eq!(edge.twin("press", "curve").unwrap().value, "1,-2,3");
    // A read error is logged and kept in the snapshot, never a twin value;
    // the other properties report (the binary's log is checked below).
    assert!(edge.twin("press", "ghost").is_none());
    edge.wait_for("set-point applied", WAIT, |e| {
        let t = e.twin("press", "set")?;
        (t.value == "21" && t.desired_status.as_deref() == Some("applied")).then_some(())
    })
    .await
    .unwrap();
    edge.wait_for("online", WAIT, |e| {
        (e.state("press")? == "online").then_some(())
    })
    .await
    .unwrap();
    edge.set_desired("press", "set", "-7").await.unwrap();
    edge.wait_for("new set-point", WAIT, |e| {
        (e.twin("press", "set")?.value == "-7").then_some(())
    })
    .await
    .unwrap();
    // Push mode: the counter moves although it is polled every 10 minutes.
    let first: i64 = edge
        .wait_for("pushed counter", WAIT, |e| {
            e.twin("pushed", "counter")?.value.parse().ok()
        })
        .await
        .unwrap();
    edge.wait_for("the counter moves", WAIT, |e| {
        let now: i64 = e.twin("pushed", "counter")?.value.parse().ok()?;
        (now > first + 3).then_some(())
    })
    .await
    .unwrap();
    edge.wait_for("pushed online", WAIT, |e| {
        (e.state("pushed")? == "online").then_some(())
    })
    .await
    .unwrap();
}

/// The real binary against the fake EdgeCore, logs captured.
struct Mapper {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Mapper {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mapper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_binary(edge: &FakeEdgeCore, dir: &std::path::Path) -> Mapper {
    let log = dir.join("mapper.log");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    // The PKI directory with keys made already (see common::pki).
    let _ = pki(&state);
    let child = Command::new(env!("CARGO_BIN_EXE_mapper-opcua"))
        .arg("--edgecore-sock")
        .arg(edge.socket())
        .arg("--socket-path")
        .arg(dir.join("opcua.sock"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--log")
        .arg("info")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Mapper { child, log }
}

/// The first log line that names `device` (and `property`, if given) and
/// contains `text`.
fn logged(m: &Mapper, device: &str, property: Option<&str>, text: &str) -> Option<String> {
    m.log()
        .lines()
        .find(|l| {
            l.contains(&format!("default/{device}"))
                && property.is_none_or(|p| l.contains(&format!("property={p}")))
                && l.contains(text)
        })
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_precisely_and_the_rest_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_asyncua(dir.path(), &[]);
    let ns = server.ns;
    let n = |s: &str| json!({ "nodeID": format!("ns={ns};s={s}") });
    let edge = FakeEdgeCore::start().await.unwrap();
    edge.add_device(
        TestDevice::new("line", "opcua", json!({"url": server.url()}))
            .read_only("ok", "INT", n("Int16"), 300)
            .read_only("garbled", "INT", json!({"nodeID": "ns=2;x=7"}), 300)
            .read_only("unknown", "INT", n("NoSuchNode"), 300)
            .read_write("tiny", "INT", n("SetByte"), 300, Some("300")),
    )
    .await
    .unwrap();
    let bad_devices = [
        (
            "policy",
            json!({"url": server.url(), "securityPolicy": "Basic512"}),
            "`securityPolicy` `Basic512` is not one of None, Basic128Rsa15, Basic256, Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss",
        ),
        (
            "mode",
            json!({"url": server.url(), "securityPolicy": "Basic256Sha256", "securityMode": "Encrypt"}),
            "`securityMode` `Encrypt` is not one of None, Sign, SignAndEncrypt",
        ),
        (
            "cert",
            json!({"url": server.url(), "securityPolicy": "Basic256Sha256", "certificate": "/nonexistent/client.der", "privateKey": "/nonexistent/client.pem"}),
            "`certificate` /nonexistent/client.der: No such file or directory",
        ),
        (
            "key",
            json!({"url": server.url(), "securityPolicy": "Basic256Sha256", "certificate": dir.path().join("pw").to_str().unwrap(), "privateKey": "/etc/shadow-nonexistent"}),
            "`privateKey` /etc/shadow-nonexistent: No such file or directory",
        ),
    ];
    std::fs::write(dir.path().join("pw"), "x").unwrap();
    for (name, cfg, _) in &bad_devices {
        edge.add_device(TestDevice::new(name, "opcua", cfg.clone()).read_only(
            "v",
            "INT",
            n("Int16"),
            300,
        ))
        .await
        .unwrap();
    }
    let mapper = spawn_binary(&edge, dir.path());

    edge.wait_for("the good property", WAIT, |e| {
        (e.twin("line", "ok")?.value == "-300").then_some(())
    })
    .await
    .unwrap();
    let garbled = edge
        .wait_for("garbled nodeID", WAIT, |e| {
            e.twin("line", "garbled")?.metadata.get("error").cloned()
        })
        .await
        .unwrap();
    assert!(
        garbled.contains("`nodeID` `ns=2;x=7` does not parse"),
        "{garbled}"
    );
    edge.wait_for("rejected write", WAIT, |e| {
        (e.twin("line", "tiny")?.desired_status.as_deref() == Some("rejected")).then_some(())
    })
    .await
    .unwrap();
    edge.wait_for("line online", WAIT, |e| {
        (e.state("line")? == "online").then_some(())
    })
    .await
    .unwrap();
    // The log names device and property with the reason.
    let wait_log = |device: &'static str, property: Option<&'static str>, text: String| {
        let m = &mapper;
        async move {
            let start = std::time::Instant::now();
            loop {
                if let Some(l) = logged(m, device, property, &text) {
                    return l;
                }
                assert!(
                    start.elapsed() < WAIT,
                    "no log line for {device} {property:?} with {text}:\n{}",
                    m.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_log(
        "line",
        Some("garbled"),
        "`nodeID` `ns=2;x=7` does not parse".into(),
    )
    .await;
    wait_log(
        "line",
        Some("tiny"),
        "`300` does not fit Byte: outside 0..=255".into(),
    )
    .await;
    let l = wait_log("line", Some("unknown"), "BadNodeIdUnknown".into()).await;
    assert!(
        l.contains("read failed") && l.contains(&format!("ns={ns};s=NoSuchNode")),
        "{l}"
    );
    assert!(edge.twin("line", "unknown").is_none());
    for (name, _, text) in &bad_devices {
        wait_log(name, None, text.to_string()).await;
        edge.wait_for("unhealthy", WAIT, |e| {
            (e.state(name)? == "unhealthy").then_some(())
        })
        .await
        .unwrap();
    }
    // Everything else kept running.
    let before: i64 = edge.status_reports() as i64;
    edge.wait_for("reports go on", WAIT, |e| {
        ((e.status_reports() as i64) > before + 2).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(edge.twin("line", "ok").unwrap().value, "-300");
}
