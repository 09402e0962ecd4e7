//! Replacing a plugin file while devices run: they restart on the new code;
//! a replacement that does not load leaves them on the old one; one compile
//! per file however many devices use it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::wat;
use mapper_sdk::testing::{FakeEdgeCore, TestDevice};
use serde_json::json;

/// Replaces `path` the way deployments do: write a new file, rename it over.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_plugin_restarts_its_devices_on_the_new_code() {
    common::logs();
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared.wasm");
    let other = dir.path().join("other.wasm");
    std::fs::write(&shared, wat::driver(&wat::answering(1))).unwrap();
    std::fs::write(&other, wat::driver(&wat::answering(100))).unwrap();
    let driver = Arc::new(common::driver(Duration::from_secs(2)));
    let ec = FakeEdgeCore::start().await.unwrap();
    for (name, path) in [("a", &shared), ("b", &shared), ("c", &other)] {
        ec.add_device(
            TestDevice::new(name, "wasm", json!({"plugin": path.to_str().unwrap()})).read_only(
                "v",
                "INT",
                json!({}),
                100,
            ),
        )
        .await
        .unwrap();
    }
    ec.spawn_mapper("wasm", driver.clone());
    let values = |ec: &FakeEdgeCore| -> Option<(String, String, String)> {
        Some((
            ec.twin("a", "v")?.value,
            ec.twin("b", "v")?.value,
            ec.twin("c", "v")?.value,
        ))
    };
    ec.wait_for("first values", Duration::from_secs(20), |ec| {
        (values(ec)? == ("1".into(), "1".into(), "100".into())).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(driver.compiles(), 2, "one compile per file, not per device");

    // New code: both devices of that file switch; the other device is untouched.
    replace(&shared, &wat::driver(&wat::answering(2)));
    ec.wait_for("the new code's values", Duration::from_secs(20), |ec| {
        (values(ec)? == ("2".into(), "2".into(), "100".into())).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(driver.compiles(), 3);

    // A replacement that does not load: logged, the devices keep the old code.
    replace(&shared, "(component (this is not wasm))");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reports = ec.status_reports();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ec.status_reports() > reports);
    assert_eq!(values(&ec).unwrap(), ("2".into(), "2".into(), "100".into()));
    assert_eq!(ec.state("a").as_deref(), Some("online"));
    assert_eq!(
        driver.compiles(),
        4,
        "the broken file is compiled once, not per look"
    );

    // Fixed again: the devices move on to it.
    replace(&shared, &wat::driver(&wat::answering(3)));
    ec.wait_for("the fixed code's values", Duration::from_secs(20), |ec| {
        (values(ec)?.0 == "3" && values(ec)?.1 == "3").then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_device_runs_only_the_pinned_code() {
    use sha2_free::sha256_hex;
    common::logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wasm");
    let v1 = wat::driver(&wat::answering(1));
    std::fs::write(&path, &v1).unwrap();
    let driver = Arc::new(common::driver(Duration::from_secs(2)));
    let ec = FakeEdgeCore::start().await.unwrap();
    ec.add_device(
        TestDevice::new(
            "pinned",
            "wasm",
            json!({"plugin": path.to_str().unwrap(), "sha256": sha256_hex(v1.as_bytes())}),
        )
        .read_only("v", "INT", json!({}), 100),
    )
    .await
    .unwrap();
    ec.spawn_mapper("wasm", driver.clone());
    ec.wait_for("pinned value", Duration::from_secs(20), |ec| {
        (ec.twin("pinned", "v")?.value == "1").then_some(())
    })
    .await
    .unwrap();
    replace(&path, &wat::driver(&wat::answering(2)));
    ec.wait_for("the pinned device offline", Duration::from_secs(20), |ec| {
        (ec.state("pinned").as_deref() == Some("offline")).then_some(())
    })
    .await
    .unwrap();
    replace(&path, &v1);
    ec.wait_for(
        "back online on the pinned code",
        Duration::from_secs(30),
        |ec| {
            (ec.state("pinned").as_deref() == Some("online")
                && ec.twin("pinned", "v")?.value == "1")
                .then_some(())
        },
    )
    .await
    .unwrap();
}

/// SHA-256 for the test's pin, by the `sha256sum` the test machine has.
mod sha2_free {
    pub(super) fn sha256_hex(bytes: &[u8]) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_owned()
    }
}
