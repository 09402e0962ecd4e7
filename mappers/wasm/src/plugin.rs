//! The engine, the linker, and compiled plugins: one compile per plugin
//! file (keyed by its canonical path, modification time, size and inode,
//! with the SHA-256 of its bytes deciding whether a changed file is new
//! code), shared by every device that names it, and reloaded when the file
//! is replaced.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use mapper_sdk::{DriverError, DriverResult};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::bindings::{Plugin, PluginPre};
use crate::host::HostState;

/// How often the engine's epoch advances: the granularity of call deadlines
/// and of the yields that let a busy plugin share its thread.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// What identifies one version of a plugin file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

impl FileKey {
    fn of(path: &Path) -> std::io::Result<Self> {
        let m = std::fs::metadata(path)?;
        Ok(Self {
            modified: m.modified().ok(),
            len: m.len(),
            ino: m.ino(),
        })
    }
}

/// A compiled plugin, ready to instantiate.
pub(crate) struct Loaded {
    key: FileKey,
    /// SHA-256 of the file, lower-case hex.
    pub(crate) sha256: String,
    pub(crate) pre: PluginPre<HostState>,
    /// Generation of the file this was compiled from.
    pub(crate) generation: u64,
}

/// One plugin file and what was compiled from it.
pub(crate) struct Slot {
    path: PathBuf,
    /// File name, for log lines and errors.
    pub(crate) name: Arc<str>,
    /// Bumped whenever new code replaces the running code: devices compare
    /// it with the generation they were connected with.
    pub(crate) generation: AtomicU64,
    state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    loaded: Option<Arc<Loaded>>,
    /// The last version that failed to load, and why (not retried until the
    /// file changes again).
    failed: Option<(FileKey, String)>,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    linker: Linker<HostState>,
    slots: Mutex<HashMap<PathBuf, Arc<Slot>>>,
    /// Compiles so far (for tests and metrics).
    compiles: AtomicU64,
    stop: AtomicBool,
}

/// The engine and the plugin cache; cheap to clone.
#[derive(Clone)]
pub(crate) struct Plugins(pub(crate) Arc<Inner>);

fn load_error(name: &str, why: impl std::fmt::Display) -> DriverError {
    // Retried with backoff: a plugin file that is missing or broken now may
    // be fixed by the next deployment step; a configuration error would stop
    // the device for good.
    DriverError::transport(format!("plugin {name} cannot be loaded: {why}"))
}

impl Plugins {
    /// An engine with epoch interruption, its linker (WASI with nothing
    /// granted + the host interfaces), the epoch ticker and, when
    /// `reload_every` is set, the watcher of plugin files.
    pub(crate) fn new(reload_every: Option<Duration>) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Plugins are small; a deep recursion traps instead of growing the
        // host stack.
        config.max_wasm_stack(512 << 10);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Plugin::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
        let inner = Arc::new(Inner {
            engine,
            linker,
            slots: Mutex::new(HashMap::new()),
            compiles: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        spawn_ticker(Arc::downgrade(&inner))?;
        if let Some(every) = reload_every {
            spawn_watcher(Arc::downgrade(&inner), every)?;
        }
        Ok(Self(inner))
    }

    /// Plugin files compiled so far.
    pub(crate) fn compiles(&self) -> u64 {
        self.0.compiles.load(Ordering::Relaxed)
    }

    /// The compiled plugin at `path`, compiling it if this version of the
    /// file has not been compiled. A file that changed and no longer loads
    /// keeps the previous version (the error is logged).
    pub(crate) async fn load(&self, path: &Path) -> DriverResult<(Arc<Slot>, Arc<Loaded>)> {
        let shown = path.display().to_string();
        let canonical = tokio::fs::canonicalize(path)
            .await
            .map_err(|e| load_error(&shown, e))?;
        let slot = {
            let mut slots = self.0.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .entry(canonical.clone())
                .or_insert_with(|| {
                    Arc::new(Slot {
                        name: canonical.display().to_string().into(),
                        path: canonical.clone(),
                        generation: AtomicU64::new(0),
                        state: tokio::sync::Mutex::new(SlotState::default()),
                    })
                })
                .clone()
        };
        // Compiling may take longer than the caller waits (the SDK's connect
        // deadline): it runs in a task of its own, so its result is kept for
        // the next connect instead of being thrown away and redone.
        let this = self.clone();
        let job = slot.clone();
        tokio::spawn(async move { this.load_slot(job).await })
            .await
            .map_err(|e| load_error(&slot.name, e))?
    }

    async fn load_slot(&self, slot: Arc<Slot>) -> DriverResult<(Arc<Slot>, Arc<Loaded>)> {
        let mut state = slot.state.lock().await;
        let key = FileKey::of(&slot.path).map_err(|e| load_error(&slot.name, e))?;
        if let Some(l) = &state.loaded
            && l.key == key
        {
            return Ok((slot.clone(), l.clone()));
        }
        if let Some((k, why)) = &state.failed
            && *k == key
        {
            return match &state.loaded {
                Some(l) => Ok((slot.clone(), l.clone())),
                None => Err(load_error(&slot.name, why)),
            };
        }
        let inner = self.0.clone();
        let path = slot.path.clone();
        let previous = state.loaded.as_ref().map(|l| l.sha256.clone());
        let compiled = tokio::task::spawn_blocking(move || inner.compile(&path, previous))
            .await
            .map_err(|e| load_error(&slot.name, e))?;
        apply(&slot, &mut state, key, compiled);
        match &state.loaded {
            Some(l) => Ok((slot.clone(), l.clone())),
            None => Err(load_error(
                &slot.name,
                state.failed.as_ref().map_or("unknown", |f| f.1.as_str()),
            )),
        }
    }
}

/// The outcome of compiling one version of a file.
enum Compiled {
    /// New code.
    New(PluginPre<HostState>, String),
    /// The same bytes as the running version (the file was touched or
    /// copied over with itself).
    Same,
    /// It does not load.
    Failed(String),
}

impl Inner {
    fn compile(&self, path: &Path, previous: Option<String>) -> Compiled {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return Compiled::Failed(format!("reading it: {e}")),
        };
        let sha256 = hex(&Sha256::digest(&bytes));
        if previous.as_deref() == Some(sha256.as_str()) {
            return Compiled::Same;
        }
        let started = Instant::now();
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let component = match Component::new(&self.engine, &bytes) {
            Ok(c) => c,
            Err(e) => return Compiled::Failed(format!("not a valid component: {e:#}")),
        };
        // Linking checks every import against what the host provides: a
        // plugin that imports anything else fails here, naming the import.
        let pre = match self
            .linker
            .instantiate_pre(&component)
            .and_then(PluginPre::new)
        {
            Ok(p) => p,
            Err(e) => return Compiled::Failed(format!("{e:#}")),
        };
        tracing::info!(
            plugin = %path.display(),
            sha256 = %sha256,
            bytes = bytes.len(),
            compile_ms = started.elapsed().as_millis() as u64,
            "plugin compiled"
        );
        Compiled::New(pre, sha256)
    }
}

/// Records a compile's outcome in the slot; new code bumps the generation.
fn apply(slot: &Slot, state: &mut SlotState, key: FileKey, compiled: Compiled) {
    match compiled {
        Compiled::New(pre, sha256) => {
            let replaced = state.loaded.is_some();
            let generation = if replaced {
                slot.generation.fetch_add(1, Ordering::SeqCst) + 1
            } else {
                slot.generation.load(Ordering::SeqCst)
            };
            if replaced {
                tracing::info!(plugin = &*slot.name, %sha256, generation,
                    "plugin file replaced: restarting the devices that use it with the new code");
            }
            state.loaded = Some(Arc::new(Loaded {
                key,
                sha256,
                pre,
                generation,
            }));
            state.failed = None;
        }
        Compiled::Same => {
            if let Some(l) = &state.loaded {
                state.loaded = Some(Arc::new(Loaded {
                    key,
                    sha256: l.sha256.clone(),
                    pre: l.pre.clone(),
                    generation: l.generation,
                }));
            }
        }
        Compiled::Failed(why) => {
            if state.loaded.is_some() {
                tracing::error!(plugin = &*slot.name, error = %why,
                    "plugin file changed but does not load; the devices keep running the previous version");
            } else {
                tracing::error!(plugin = &*slot.name, error = %why, "plugin does not load");
            }
            state.failed = Some((key, why));
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the plugins are
/// dropped.
fn spawn_ticker(inner: Weak<Inner>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match inner.upgrade() {
                    Some(i) if !i.stop.load(Ordering::Relaxed) => i.engine.increment_epoch(),
                    _ => return,
                }
            }
        })
        .map(|_| ())
}

/// Looks at every loaded plugin file every `every`; a file whose contents
/// changed is compiled, and on success its devices restart with the new code.
fn spawn_watcher(inner: Weak<Inner>, every: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("wasm-reload".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(i) = inner.upgrade() else { return };
                if i.stop.load(Ordering::Relaxed) {
                    return;
                }
                let slots: Vec<Arc<Slot>> = i
                    .slots
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .cloned()
                    .collect();
                for slot in slots {
                    check(&i, &slot);
                }
            }
        })
        .map(|_| ())
}

/// One look at one plugin file (the watcher's step).
fn check(inner: &Inner, slot: &Slot) {
    let Ok(key) = FileKey::of(&slot.path) else {
        // Missing for a moment (being replaced) or gone: the running code
        // stays; the next look sees the new file.
        return;
    };
    let mut state = slot.state.blocking_lock();
    let Some(loaded) = state.loaded.clone() else {
        return;
    };
    if loaded.key == key || state.failed.as_ref().is_some_and(|f| f.0 == key) {
        return;
    }
    let compiled = inner.compile(&slot.path, Some(loaded.sha256.clone()));
    apply(slot, &mut state, key, compiled);
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
