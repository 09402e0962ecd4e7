//! Shared helpers of the mapper-wasm tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

pub mod wat;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mapper_sdk::DynDriver;
use mapper_sdk::testing::FakeEdgeCore;
use mapper_wasm::{WasmDriver, WasmOptions};

/// An example plugin built by hack/build-plugins.sh (`wasm_sim`, `wasm_modbus`).
pub fn built_plugin(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/plugins")
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: build the example plugins first with `bash hack/build-plugins.sh` (hack/test.sh does)",
        p.display()
    );
    p
}

/// A host whose calls time out after `timeout`, files checked every 100 ms.
pub fn driver(timeout: Duration) -> WasmDriver {
    WasmDriver::try_new(
        WasmOptions::new(timeout).with_reload_every(Some(Duration::from_millis(100))),
    )
    .unwrap()
}

/// As [`driver`], type-erased for the SDK.
pub fn dyn_driver(timeout: Duration) -> Arc<dyn DynDriver> {
    Arc::new(driver(timeout))
}

/// A fake EdgeCore with a `wasm` mapper of `driver` running against it.
pub async fn edgecore(driver: Arc<dyn DynDriver>) -> FakeEdgeCore {
    let ec = FakeEdgeCore::start().await.unwrap();
    ec.spawn_mapper("wasm", driver);
    ec
}

/// Logs of the code under test, shown when a test fails.
pub fn logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| mapper_sdk::init_tracing("warn,mapper_wasm=info"));
}
