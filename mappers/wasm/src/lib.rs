//! # mapper-wasm
//!
//! A [`mapper_sdk::Driver`] whose protocol code is a WebAssembly component:
//! a *plugin*, loaded at run time, sandboxed by wasmtime, one instance per
//! device, with only the I/O that device's configuration grants. A new
//! protocol needs no rebuild of the mapper and no trust in native code.
//!
//! Layering: `mapper-wasm → mapper-sdk`; it is the only crate that depends
//! on wasmtime (deny.toml). Plugins implement `wit/driver.wit`
//! (`edge-dmi:driver@0.1.0`), usually with the `mapper-wasm-guest` crate.
//!
//! ```no_run
//! use mapper_wasm::{WasmDriver, WasmOptions};
//!
//! fn main() -> std::process::ExitCode {
//!     mapper_sdk::main_with("wasm", |cfg| {
//!         WasmDriver::new(WasmOptions::new(cfg.runtime.io_timeout))
//!     })
//! }
//! ```
//!
//! ## Devices
//!
//! The device's `protocol.configData` names the plugin and what it may do
//! ([`WasmConfig`]): `plugin` (path of the `.wasm` file), optional `sha256`
//! (the file's hash; another file is refused), optional `grantTcp` and
//! `grantUdp` (`host:port, ...`), optional `grantSerial` (`/dev/ttyUSB0,
//! ...`), optional `memoryLimitMiB`. Every other key reaches
//! the plugin's `connect` as a JSON object, and each property's
//! `visitors.configData` reaches the plugin's `prepare` as a JSON object, once
//! per property and instance; reads and writes name it by the handle
//! `prepare` returned.
//!
//! ## Capabilities, not ambient authority
//!
//! A plugin is linked against two things only:
//!
//! * the host interfaces of `wit/driver.wit`: `log` (through `tracing`,
//!   inside the SDK's per-device span, rate-limited: a burst of 20 lines,
//!   then 5 per second, each cut at 1 KiB), `monotonic-now`, `random-bytes`,
//!   `tcp` (`connect`/`send`/`recv`), `udp` (`open`/`send`/`recv`, a socket
//!   connected to one granted peer) and `serial` (`open`/`write`/`read`);
//! * WASI 0.2 (`wasmtime-wasi`) with **nothing granted**, because Rust's
//!   `std` on `wasm32-wasip2` imports `wasi:cli` and `wasi:io` and would not
//!   link otherwise: no preopened directories (opening a file fails), no
//!   environment variables or arguments (reading one finds nothing), no WASI
//!   sockets (TCP and UDP disabled, every address denied, no name lookup),
//!   stdin empty, stdout discarded, stderr kept (its last 2 KiB appear in
//!   the error of a trap: a panic message), a wall clock frozen at the Unix
//!   epoch. Monotonic time and randomness are the only WASI services that
//!   answer. A component that imports anything else (another WASI version's
//!   interfaces, unknown host functions) fails to load with an error naming
//!   the import.
//!
//! TCP, UDP and serial ports are host interfaces behind per-device
//! allow-lists (`grantTcp`, `grantUdp`, `grantSerial`, each matched exactly
//! as written) rather than WASI sockets with an address check (WASI 0.2 has
//! no serial ports at all), for three reasons: the check sees the
//! exact `host:port` text the device's YAML grants (WASI's check sees a
//! resolved `SocketAddr` and no host name, so `plc.local:502` could not be
//! granted); a refused connect returns a `config` error that names the
//! address, the plugin and what is granted (WASI can only say "access
//! denied"); and every wait is cut at the call's deadline (a WASI stream
//! read has no deadline of ours). The grant lists are configData texts
//! because DMI configData is a flat map of scalars. Buffers are bounded:
//! 64 KiB per receive or read, 64 KiB per datagram, 1 MiB per TCP send or
//! serial write, 16 open connections, sockets and ports per instance.
//!
//! ## Limits
//!
//! * **Deadline.** Every call (instantiation and `connect`, `read`,
//!   `read-batch`, `write`, `state`, `disconnect`) runs under the SDK's
//!   request timeout ([`WasmOptions::call_timeout`], `runtime.io_timeout`,
//!   default 5 s; `read-batch` gets it per address, up to 8 times, as the
//!   SDK does). It is enforced with epoch interruption ([`EPOCH_TICK`], every
//!   10 ms), which also makes a busy plugin yield its thread at each tick;
//!   host TCP, UDP and serial waits are cut at the deadline too. A call past its deadline
//!   traps and becomes [`mapper_sdk::DriverError::Timeout`].
//! * **Memory.** Each instance may grow its memories to
//!   [`DEFAULT_MEMORY_LIMIT_MIB`] (64 MiB) unless the device sets
//!   `memoryLimitMiB` (at most 1024); growing past it traps and becomes a
//!   `Protocol` error naming the cap. Tables are capped at 100 000 elements,
//!   the wasm stack at 512 KiB.
//! * **Containment.** A trap (a panic, an out-of-bounds access, the deadline,
//!   the memory cap) or malformed data in an answer (a bad variant, invalid
//!   UTF-8, a non-finite float, the wrong number of batch results) is that
//!   device's error only. The instance is discarded; the error is a link
//!   failure, so the SDK disconnects and reconnects with its backoff, which
//!   creates a fresh instance. Other devices, of the same plugin or others,
//!   never notice. If the SDK stops waiting for a call (its own deadline,
//!   shutdown), the call still finishes in the background, bounded by the
//!   deadline, so the next call finds the instance consistent.
//!
//! ## Compiled once, reloaded when replaced
//!
//! A plugin file is compiled once (keyed by its canonical path, modification
//! time, size and inode; its SHA-256 decides whether changed metadata means
//! new code) and every device using it instantiates the same compiled code.
//! A watcher looks at the loaded files every second
//! ([`WasmOptions::reload_every`]): when one is replaced with new code that
//! loads, the devices using it get a transport error at their next call
//! ("plugin ... was replaced"), so the SDK restarts them, on the new code.
//! A replacement that does not load is logged with the reason and the
//! devices keep the previous version. A device that pins `sha256` accepts
//! only that version: after a replacement it stays offline, saying why,
//! until the pinned file is back. A missing or broken plugin file at
//! connect time is a retried error, so fixing the file brings its devices
//! up.

mod bindings;
mod config;
mod device;
mod host;
mod plugin;

use std::sync::Arc;
use std::time::Duration;

use mapper_sdk::{Driver, DriverError, DriverResult};

pub use config::{DEFAULT_MEMORY_LIMIT_MIB, Grants, MAX_MEMORY_LIMIT_MIB, WasmAddress, WasmConfig};
pub use device::WasmDevice;
pub use plugin::EPOCH_TICK;

/// Default interval between looks at the loaded plugin files.
pub const DEFAULT_RELOAD_EVERY: Duration = Duration::from_secs(1);

/// How the host runs plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WasmOptions {
    /// Deadline of one call into a plugin: the SDK's request timeout.
    pub call_timeout: Duration,
    /// How often loaded plugin files are checked for replacement; `None`
    /// turns hot reload off (a changed file is then picked up only when a
    /// device connects).
    pub reload_every: Option<Duration>,
}

impl WasmOptions {
    /// Calls under `call_timeout`, files checked every second.
    pub fn new(call_timeout: Duration) -> Self {
        Self {
            call_timeout,
            reload_every: Some(DEFAULT_RELOAD_EVERY),
        }
    }

    /// With plugin files checked every `every` (`None`: never).
    #[must_use]
    pub fn with_reload_every(mut self, every: Option<Duration>) -> Self {
        self.reload_every = every;
        self
    }
}

/// Errors of setting the host up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The wasmtime engine or its linker could not be created.
    #[error("the WebAssembly engine could not start: {0}")]
    Engine(String),
}

/// Result of host set-up.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The plugin host as a [`Driver`]: one engine and one cache of compiled
/// plugins for all devices.
#[derive(Clone)]
pub struct WasmDriver {
    plugins: std::result::Result<plugin::Plugins, Arc<str>>,
    options: WasmOptions,
}

impl std::fmt::Debug for WasmDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmDriver")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl WasmDriver {
    /// A host with `options`. If the engine cannot start, the error is
    /// logged and every device reports it (see [`WasmDriver::try_new`]).
    pub fn new(options: WasmOptions) -> Self {
        match Self::try_new(options) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("{e}");
                Self {
                    plugins: Err(e.to_string().into()),
                    options,
                }
            }
        }
    }

    /// A host with `options`.
    ///
    /// # Errors
    /// [`Error::Engine`] when wasmtime cannot start (an unsupported CPU, no
    /// threads for the epoch ticker).
    pub fn try_new(options: WasmOptions) -> Result<Self> {
        let plugins = plugin::Plugins::new(options.reload_every)
            .map_err(|e| Error::Engine(format!("{e:#}")))?;
        Ok(Self {
            plugins: Ok(plugins),
            options,
        })
    }

    /// The options.
    pub fn options(&self) -> WasmOptions {
        self.options
    }

    /// Plugin files compiled so far (one per version of each file, however
    /// many devices use it).
    pub fn compiles(&self) -> u64 {
        self.plugins.as_ref().map_or(0, plugin::Plugins::compiles)
    }
}

impl Driver for WasmDriver {
    type Config = WasmConfig;
    type Address = WasmAddress;
    type Client = WasmDevice;

    async fn connect(&self, cfg: &WasmConfig) -> DriverResult<WasmDevice> {
        let plugins = self
            .plugins
            .as_ref()
            .map_err(|e| DriverError::Config(e.to_string()))?;
        let (slot, loaded) = plugins.load(&cfg.plugin).await?;
        if let Some(pin) = &cfg.sha256
            && *pin != loaded.sha256
        {
            return Err(DriverError::transport(format!(
                "plugin {} has sha256 {}, but the device pins {pin}",
                slot.name, loaded.sha256
            )));
        }
        device::connect(
            slot,
            loaded,
            config::plugin_json(cfg)?,
            Arc::new(cfg.grants.clone()),
            cfg.memory_limit,
            self.options.call_timeout,
        )
        .await
    }
}
