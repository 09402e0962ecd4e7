//! The sandbox: plugins that loop forever, allocate without bound, trap,
//! answer malformed data, import what the host does not provide, or try to
//! reach files, the environment and the network. Each is contained: that
//! device gets an error saying what happened, other devices keep going.
//!
//! Most plugins here are WebAssembly text (tests/common/wat.rs); the
//! `wasm_probe` plugin (built by hack/build-plugins.sh) tries the `std` calls
//! a Rust plugin would make.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::wat;
use mapper_sdk::testing::TestDevice;
use mapper_sdk::{DriverError, DriverResult, DynClient, DynDriver, Value};
use mapper_wasm::WasmDriver;
use serde_json::{Map, Value as Json, json};

fn obj(v: Json) -> Map<String, Json> {
    v.as_object().unwrap().clone()
}

/// Writes `text` (WebAssembly text or binary) as `name` in `dir`.
fn plugin_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

async fn connect(driver: &WasmDriver, cfg: Json) -> DriverResult<Box<dyn DynClient>> {
    let d: &dyn DynDriver = driver;
    let c = d.config(&obj(cfg))?;
    d.connect(&c.value).await
}

async fn read(driver: &WasmDriver, client: &dyn DynClient, visitor: Json) -> DriverResult<Value> {
    let d: &dyn DynDriver = driver;
    let a = d.address(&obj(visitor), None)?;
    client.read_batch(&[&a.value]).await.remove(0)
}

fn cfg(path: &Path) -> Json {
    json!({"plugin": path.to_str().unwrap()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_behaved_text_plugin_reads() {
    common::logs();
    let dir = tempfile::tempdir().unwrap();
    let p = plugin_file(dir.path(), "good.wat", &wat::driver(&wat::answering(42)));
    let driver = common::driver(Duration::from_secs(2));
    let c = connect(&driver, cfg(&p)).await.unwrap();
    assert_eq!(
        read(&driver, c.as_ref(), json!({"x": 1})).await.unwrap(),
        Value::Int(42)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_loops_forever_hits_the_deadline_while_another_keeps_reading() {
    common::logs();
    let dir = tempfile::tempdir().unwrap();
    let good = plugin_file(dir.path(), "good.wat", &wat::driver(&wat::answering(7)));
    let bad = plugin_file(dir.path(), "loop.wat", &wat::driver(wat::LOOP_FOREVER));
    let driver = common::driver(Duration::from_millis(300));
    let g = connect(&driver, cfg(&good)).await.unwrap();
    let b = connect(&driver, cfg(&bad)).await.unwrap();
    // The good device reads in a loop while the bad one spins.
    let driver2 = driver.clone();
    let reads = tokio::spawn(async move {
        let mut n = 0u32;
        let until = Instant::now() + Duration::from_millis(600);
        while Instant::now() < until {
            assert_eq!(
                read(&driver2, g.as_ref(), json!({})).await.unwrap(),
                Value::Int(7)
            );
            n += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        n
    });
    let t0 = Instant::now();
    let e = read(&driver, b.as_ref(), json!({})).await.unwrap_err();
    let took = t0.elapsed();
    assert!(
        matches!(e, DriverError::Timeout(d) if d == Duration::from_millis(300)),
        "{e}"
    );
    assert!(
        e.is_link_failure(),
        "the SDK must reconnect (a new instance): {e}"
    );
    assert!(took < Duration::from_millis(1500), "stopped after {took:?}");
    let n = reads.await.unwrap();
    assert!(n >= 10, "the good device read only {n} times meanwhile");
    // The instance is discarded: it is never entered again.
    let again = read(&driver, b.as_ref(), json!({})).await.unwrap_err();
    assert!(matches!(again, DriverError::Timeout(_)), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_allocates_without_bound_hits_its_memory_cap() {
    common::logs();
    let dir = tempfile::tempdir().unwrap();
    let p = plugin_file(dir.path(), "grow.wat", &wat::driver(wat::GROW_FOREVER));
    let driver = common::driver(Duration::from_secs(5));
    let c = connect(
        &driver,
        json!({"plugin": p.to_str().unwrap(), "memoryLimitMiB": 4}),
    )
    .await
    .unwrap();
    let e = read(&driver, c.as_ref(), json!({})).await.unwrap_err();
    let msg = e.to_string();
    assert!(e.is_link_failure(), "{msg}");
    assert!(
        msg.contains("grow.wat") && msg.contains("cap of 4 MiB"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_and_malformed_answers_are_that_devices_errors() {
    common::logs();
    let dir = tempfile::tempdir().unwrap();
    let driver = common::driver(Duration::from_secs(5));
    for (name, body, expect) in [
        ("trap.wat", wat::TRAP, "unreachable"),
        ("variant.wat", wat::BAD_VARIANT, "discriminant"),
        ("utf8.wat", wat::BAD_UTF8, "utf-8"),
        ("bounds.wat", wat::OUT_OF_BOUNDS, "out of bounds"),
    ] {
        let p = plugin_file(dir.path(), name, &wat::driver(body));
        let c = connect(&driver, cfg(&p)).await.unwrap();
        let e = read(&driver, c.as_ref(), json!({})).await.unwrap_err();
        let msg = e.to_string().to_lowercase();
        assert!(matches!(e, DriverError::Protocol(_)), "{name}: {msg}");
        assert!(msg.contains(name) && msg.contains(expect), "{name}: {msg}");
        assert!(msg.contains("instance discarded"), "{name}: {msg}");
    }
    // A NaN is that property's value error; the instance lives on.
    let p = plugin_file(dir.path(), "nan.wat", &wat::driver(wat::NAN));
    let c = connect(&driver, cfg(&p)).await.unwrap();
    for _ in 0..2 {
        let e = read(&driver, c.as_ref(), json!({})).await.unwrap_err();
        assert!(
            matches!(e, DriverError::Value(ref m) if m.contains("NaN")),
            "{e}"
        );
    }
    // Too few results: a protocol error for every address of the batch.
    let p = plugin_file(dir.path(), "short.wat", &wat::driver(wat::NO_RESULTS));
    let c = connect(&driver, cfg(&p)).await.unwrap();
    let d: &dyn DynDriver = &driver;
    let (a, b) = (
        d.address(&obj(json!({"a": 1})), None).unwrap().value,
        d.address(&obj(json!({"b": 2})), None).unwrap().value,
    );
    let e = c.read_batch(&[&a, &b]).await.remove(0).unwrap_err();
    assert!(
        e.to_string().contains("returned 0 results for 2 addresses"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_imports_what_the_host_lacks_fails_to_load_naming_it() {
    common::logs();
    let dir = tempfile::tempdir().unwrap();
    let p = plugin_file(dir.path(), "files.wat", wat::IMPORTS_FILES);
    let driver = common::driver(Duration::from_secs(5));
    let e = connect(&driver, cfg(&p)).await.err().unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("files.wat") && msg.contains("evil:host/files"),
        "{msg}"
    );
    // Retried (the file may be fixed), not compiled again while unchanged.
    assert!(e.is_link_failure(), "{msg}");
    assert!(connect(&driver, cfg(&p)).await.is_err());
    assert_eq!(driver.compiles(), 1);
    let missing = connect(&driver, cfg(&dir.path().join("nope.wasm")))
        .await
        .err()
        .unwrap();
    assert!(missing.to_string().contains("nope.wasm"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_environment_and_sockets_are_not_there_and_tcp_needs_a_grant() {
    common::logs();
    let probe = common::built_plugin("wasm_probe");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().to_string();
    let driver = common::driver(Duration::from_secs(5));
    let c = connect(
        &driver,
        json!({"plugin": probe.to_str().unwrap(), "grantTcp": "127.0.0.1:9"}),
    )
    .await
    .unwrap();
    for (visitor, expect) in [
        (
            json!({"probe": "file", "path": "/etc/passwd"}),
            "open /etc/passwd",
        ),
        (json!({"probe": "listDir", "path": "/"}), "list /"),
        (
            json!({"probe": "env", "name": "PATH"}),
            "(0 variables visible)",
        ),
        (
            json!({"probe": "wasiSocket", "address": open}),
            "WASI socket",
        ),
    ] {
        let e = read(&driver, c.as_ref(), visitor.clone())
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, DriverError::Config(_)), "{visitor}: {msg}");
        assert!(
            msg.contains("denied") && msg.contains(expect),
            "{visitor}: {msg}"
        );
    }
    // The host's TCP to an address that is open but not granted.
    let e = read(
        &driver,
        c.as_ref(),
        json!({"probe": "tcp", "address": open}),
    )
    .await
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DriverError::Config(_)), "{msg}");
    assert!(
        msg.contains(&open) && msg.contains("wasm_probe.wasm") && msg.contains("127.0.0.1:9"),
        "names the address, the plugin and what is granted: {msg}"
    );
    // Nothing was allowed; the instance is fine.
    assert_eq!(
        read(&driver, c.as_ref(), json!({"probe": "ok"}))
            .await
            .unwrap(),
        Value::Int(1)
    );
    // A panic traps the instance; its message is in the error.
    let e = read(&driver, c.as_ref(), json!({"probe": "panic"}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("the probe panics on purpose"), "{e}");
}

/// Through the SDK's runtime: a good device keeps reporting fresh values
/// while devices whose plugins loop, trap or exhaust memory fail and are
/// retried with backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plugins_do_not_stop_a_good_device() {
    common::logs();
    let dir = tempfile::tempdir().unwrap();
    let driver = Arc::new(common::driver(Duration::from_millis(500)));
    let ec = mapper_sdk::testing::FakeEdgeCore::start().await.unwrap();
    let good = plugin_file(dir.path(), "good.wat", &wat::driver(&wat::answering(5)));
    ec.add_device(TestDevice::new("good", "wasm", cfg(&good)).read_only(
        "v",
        "INT",
        json!({}),
        100,
    ))
    .await
    .unwrap();
    for (name, body) in [
        ("spin", wat::LOOP_FOREVER),
        ("trap", wat::TRAP),
        ("hog", wat::GROW_FOREVER),
    ] {
        let p = plugin_file(dir.path(), &format!("{name}.wat"), &wat::driver(body));
        ec.add_device(
            TestDevice::new(
                name,
                "wasm",
                json!({"plugin": p.to_str().unwrap(), "memoryLimitMiB": 8}),
            )
            .read_only("v", "INT", json!({}), 100),
        )
        .await
        .unwrap();
    }
    ec.spawn_mapper("wasm", driver.clone());
    ec.wait_for("the good device online", Duration::from_secs(20), |ec| {
        (ec.state("good").as_deref() == Some("online") && ec.twin("good", "v")?.value == "5")
            .then_some(())
    })
    .await
    .unwrap();
    // For three seconds the good device keeps reporting while the others fail.
    let reports = ec.status_reports();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ec.state("good").as_deref(), Some("online"));
    assert!(ec.status_reports() > reports, "no reports for 3 s");
    for name in ["spin", "trap", "hog"] {
        assert_ne!(ec.state(name).as_deref(), Some("online"), "{name}");
    }
    assert_eq!(driver.compiles(), 4, "one compile per plugin file");
}
