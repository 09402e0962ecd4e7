//! `mapper-wasm`: the WebAssembly plugin host mapper binary (protocol `wasm`
//! unless `common.protocol` or `--protocol` names another).

use mapper_wasm::{WasmDriver, WasmOptions};

fn main() -> std::process::ExitCode {
    mapper_sdk::main_with("wasm", |cfg| {
        WasmDriver::new(WasmOptions::new(cfg.runtime.io_timeout))
    })
}
