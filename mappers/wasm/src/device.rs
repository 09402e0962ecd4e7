//! One device: a plugin instance in its own store, its calls under a
//! deadline, and what a trap, a missed deadline or the memory cap turn into.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mapper_sdk::{DeviceClient, DeviceFault, DeviceState, DriverError, DriverResult, Value};
use tokio::sync::OwnedMutexGuard;
use wasmtime::{Store, UpdateDeadline};

use crate::bindings::Plugin;
use crate::bindings::edge_dmi::driver::types as wit;
use crate::config::{AddressParts, Grants, WasmAddress};
use crate::host::{HostState, Stop};
use crate::plugin::{Loaded, Slot};

/// A live instance.
struct Instance {
    store: Store<HostState>,
    plugin: Plugin,
    /// Unique per instance (never 0): addresses remember which instance
    /// their handle belongs to.
    serial: u32,
    /// Set once a call trapped, ran out of time or hit the memory cap: the
    /// instance is never entered again.
    dead: Option<DriverError>,
}

/// What a call asks of the plugin.
enum Op {
    ReadBatch(Vec<AddressParts>),
    Write(AddressParts, wit::Value),
    State,
    Disconnect,
}

/// What it answered.
enum Reply {
    Values(Vec<DriverResult<Value>>),
    Unit(DriverResult<()>),
    State(wit::DeviceState),
}

/// Serials of instances (see [`Instance::serial`]).
static NEXT_SERIAL: AtomicU32 = AtomicU32::new(1);

/// A connected device: one plugin instance.
pub struct WasmDevice {
    instance: Arc<tokio::sync::Mutex<Instance>>,
    slot: Arc<Slot>,
    generation: u64,
    timeout: Duration,
}

impl std::fmt::Debug for WasmDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmDevice")
            .field("plugin", &&*self.slot.name)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Turns what came back from a call into a driver error, and says whether the
/// instance must be discarded.
fn failure(state: &mut HostState, e: wasmtime::Error) -> DriverError {
    let plugin = state.plugin.clone();
    let stop = state
        .stopped
        .take()
        .or_else(|| e.downcast_ref::<Stop>().cloned());
    let stderr = state
        .stderr_tail()
        .map(|t| format!("; its stderr ends: {}", t.replace('\n', " | ")))
        .unwrap_or_default();
    let err = match stop {
        Some(Stop::Deadline(d)) => {
            tracing::warn!(plugin = &*plugin, deadline = ?d, "plugin ran past its deadline; instance discarded");
            DriverError::Timeout(d)
        }
        Some(stop @ Stop::MemoryCap { .. }) => DriverError::Protocol(format!(
            "plugin {plugin} {stop}; instance discarded{stderr}"
        )),
        None => {
            let what = match e.downcast_ref::<wasmtime::Trap>() {
                Some(t) => format!("trapped: {t}"),
                None => format!("failed: {}", root_cause(&e)),
            };
            DriverError::Protocol(format!(
                "plugin {plugin} {what}; instance discarded{stderr}"
            ))
        }
    };
    if !matches!(err, DriverError::Timeout(_)) {
        tracing::debug!(error = %err, "plugin instance discarded");
    }
    err
}

fn root_cause(e: &wasmtime::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

/// Converts the plugin's error into the SDK's.
pub(crate) fn from_wit(e: wit::DriverError) -> DriverError {
    match e {
        wit::DriverError::Device(f) => DriverError::Device(DeviceFault {
            code: f.code,
            message: f.message,
        }),
        wit::DriverError::Transport(m) => DriverError::transport(m),
        wit::DriverError::Timeout(ms) => DriverError::Timeout(Duration::from_millis(ms)),
        wit::DriverError::Protocol(m) => DriverError::Protocol(m),
        wit::DriverError::Config(m) => DriverError::Config(m),
        wit::DriverError::Value(m) => DriverError::Value(m),
    }
}

/// Converts the plugin's value into the SDK's; a non-finite float is that
/// property's error.
pub(crate) fn value_from_wit(v: wit::Value) -> DriverResult<Value> {
    Ok(match v {
        wit::Value::Boolean(b) => Value::Bool(b),
        wit::Value::Int(i) => Value::Int(i),
        wit::Value::Float(f) if f.is_finite() => Value::Float(f),
        wit::Value::Float(f) => {
            return Err(DriverError::Value(format!(
                "the plugin returned {f}, not a finite number"
            )));
        }
        wit::Value::Text(s) => Value::String(s),
        wit::Value::Bytes(b) => Value::Bytes(b),
    })
}

fn value_to_wit(v: &Value) -> wit::Value {
    match v {
        Value::Bool(b) => wit::Value::Boolean(*b),
        Value::Int(i) => wit::Value::Int(*i),
        Value::Float(f) => wit::Value::Float(*f),
        Value::String(s) => wit::Value::Text(s.clone()),
        Value::Bytes(b) => wit::Value::Bytes(b.clone()),
    }
}

/// Sets the store up for one call of at most `budget`.
fn arm(store: &mut Store<HostState>, budget: Duration) {
    let data = store.data_mut();
    data.budget = budget;
    data.deadline = Instant::now() + budget;
    data.stopped = None;
    store.set_epoch_deadline(1);
}

/// Creates an instance of `loaded` and connects it with `config` (JSON).
pub(crate) async fn connect(
    slot: Arc<Slot>,
    loaded: Arc<Loaded>,
    config_json: String,
    grants: Arc<Grants>,
    memory_limit: usize,
    timeout: Duration,
) -> DriverResult<WasmDevice> {
    let state = HostState::new(slot.name.clone(), grants, memory_limit);
    let mut store = Store::new(loaded.pre.engine(), state);
    store.limiter(|s| s);
    store.epoch_deadline_callback(|mut ctx| {
        let data = ctx.data_mut();
        if Instant::now() >= data.deadline {
            let stop = Stop::Deadline(data.budget);
            data.stopped = Some(stop.clone());
            return Err(stop.into());
        }
        // Let other tasks run, then look again at the next tick.
        Ok(UpdateDeadline::Yield(1))
    });
    arm(&mut store, timeout);
    let plugin = match loaded.pre.instantiate_async(&mut store).await {
        Ok(p) => p,
        Err(e) => return Err(failure(store.data_mut(), e)),
    };
    let answer = plugin
        .edge_dmi_driver_driver()
        .call_connect(&mut store, &config_json)
        .await;
    match answer {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(from_wit(e)),
        Err(e) => return Err(failure(store.data_mut(), e)),
    }
    Ok(WasmDevice {
        instance: Arc::new(tokio::sync::Mutex::new(Instance {
            store,
            plugin,
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed).max(1),
            dead: None,
        })),
        slot,
        generation: loaded.generation,
        timeout,
    })
}

/// The plugin's handle of `at` in this instance, preparing it on first use.
async fn handle(inst: &mut Instance, at: &AddressParts) -> wasmtime::Result<DriverResult<u32>> {
    let packed = at.handle.load(Ordering::Relaxed);
    if packed != 0 && packed >> 32 == u64::from(inst.serial) {
        return Ok(Ok(packed as u32));
    }
    let d = inst.plugin.edge_dmi_driver_driver();
    Ok(match d.call_prepare(&mut inst.store, &at.json).await? {
        Ok(id) => {
            let packed = (u64::from(inst.serial) << 32) | u64::from(id);
            at.handle.store(packed, Ordering::Relaxed);
            Ok(id)
        }
        Err(e) => Err(from_wit(e)),
    })
}

async fn read_batch(inst: &mut Instance, at: &[AddressParts]) -> wasmtime::Result<Reply> {
    let mut out: Vec<Option<DriverResult<Value>>> = Vec::with_capacity(at.len());
    let mut ids = Vec::with_capacity(at.len());
    for a in at {
        match handle(inst, a).await? {
            Ok(id) => {
                ids.push(id);
                out.push(None);
            }
            Err(e) => out.push(Some(Err(e))),
        }
    }
    let d = inst.plugin.edge_dmi_driver_driver();
    let read: Vec<Result<wit::Value, wit::DriverError>> = match ids.as_slice() {
        [] => Vec::new(),
        [one] => vec![d.call_read(&mut inst.store, *one).await?],
        many => d.call_read_batch(&mut inst.store, many).await?,
    };
    if read.len() != ids.len() {
        let e = DriverError::Protocol(format!(
            "plugin {} returned {} results for {} addresses",
            inst.store.data().plugin,
            read.len(),
            ids.len()
        ));
        return Ok(Reply::Values(at.iter().map(|_| Err(e.clone())).collect()));
    }
    let mut read = read.into_iter();
    Ok(Reply::Values(
        out.into_iter()
            .map(|r| match r {
                Some(r) => r,
                None => read.next().map_or_else(
                    || Err(DriverError::Protocol("lost a result".into())),
                    |r| r.map_err(from_wit).and_then(value_from_wit),
                ),
            })
            .collect(),
    ))
}

/// Runs `op` on the instance held by `guard` (the future owns everything, so
/// it can finish on its own when the caller stops waiting).
async fn run(
    mut guard: OwnedMutexGuard<Instance>,
    op: Op,
    budget: Duration,
) -> DriverResult<Reply> {
    let inst = &mut *guard;
    if let Some(e) = &inst.dead {
        return Err(e.clone());
    }
    arm(&mut inst.store, budget);
    let result = match op {
        Op::ReadBatch(at) => read_batch(inst, &at).await,
        Op::Write(at, v) => match handle(inst, &at).await {
            Ok(Ok(id)) => {
                let d = inst.plugin.edge_dmi_driver_driver();
                d.call_write(&mut inst.store, id, &v)
                    .await
                    .map(|r| Reply::Unit(r.map_err(from_wit)))
            }
            Ok(Err(e)) => Ok(Reply::Unit(Err(e))),
            Err(e) => Err(e),
        },
        Op::State => {
            let d = inst.plugin.edge_dmi_driver_driver();
            d.call_state(&mut inst.store).await.map(Reply::State)
        }
        Op::Disconnect => {
            let d = inst.plugin.edge_dmi_driver_driver();
            d.call_disconnect(&mut inst.store)
                .await
                .map(|()| Reply::Unit(Ok(())))
        }
    };
    result.map_err(|e| {
        let err = failure(inst.store.data_mut(), e);
        inst.dead = Some(err.clone());
        err
    })
}

/// A call the caller may stop waiting for: the rest then runs on its own on
/// the runtime (bounded by the call's deadline), so the instance is never
/// left half-way through a call and the next call finds it consistent.
struct Detached<F: Future + Send + 'static> {
    fut: Option<Pin<Box<F>>>,
}

impl<F: Future + Send + 'static> Future for Detached<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Pending;
        };
        let out = fut.as_mut().poll(cx);
        if out.is_ready() {
            self.fut = None;
        }
        out
    }
}

impl<F: Future + Send + 'static> Drop for Detached<F> {
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = fut.await;
            });
        }
    }
}

impl WasmDevice {
    /// Whether the plugin file was replaced since this device connected.
    fn replaced(&self) -> Option<DriverError> {
        (self.slot.generation.load(Ordering::Relaxed) != self.generation).then(|| {
            DriverError::transport(format!(
                "plugin {} was replaced; restarting the device with the new code",
                self.slot.name
            ))
        })
    }

    async fn call(&self, op: Op, budget: Duration) -> DriverResult<Reply> {
        if let Some(e) = self.replaced() {
            return Err(e);
        }
        let guard = self.instance.clone().lock_owned().await;
        Detached {
            fut: Some(Box::pin(run(guard, op, budget))),
        }
        .await
    }

    fn mismatch(&self) -> DriverError {
        DriverError::Protocol(format!(
            "plugin {} answered with the wrong kind of result",
            self.slot.name
        ))
    }
}

impl DeviceClient for WasmDevice {
    type Address = WasmAddress;

    async fn read(&self, at: &WasmAddress) -> DriverResult<Value> {
        self.read_batch(&[at]).await.remove(0)
    }

    async fn read_batch(&self, at: &[&WasmAddress]) -> Vec<DriverResult<Value>> {
        let budget = self.timeout.saturating_mul(at.len().clamp(1, 8) as u32);
        let op = Op::ReadBatch(at.iter().map(|a| a.parts()).collect());
        match self.call(op, budget).await {
            Ok(Reply::Values(v)) => v,
            Ok(_) => at.iter().map(|_| Err(self.mismatch())).collect(),
            Err(e) => at.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    async fn write(&self, at: &WasmAddress, value: &Value) -> DriverResult<()> {
        match self
            .call(Op::Write(at.parts(), value_to_wit(value)), self.timeout)
            .await?
        {
            Reply::Unit(r) => r,
            _ => Err(self.mismatch()),
        }
    }

    async fn state(&self) -> DeviceState {
        if self.replaced().is_some() {
            return DeviceState::Online;
        }
        match self.call(Op::State, self.timeout).await {
            Ok(Reply::State(s)) => match s {
                wit::DeviceState::Online => DeviceState::Online,
                wit::DeviceState::Offline => DeviceState::Offline,
                wit::DeviceState::Unhealthy => DeviceState::Unhealthy,
                wit::DeviceState::Unknown => DeviceState::Unknown,
            },
            _ => DeviceState::Unhealthy,
        }
    }

    async fn disconnect(self) {
        let dead = self.instance.lock().await.dead.is_some();
        if !dead && self.replaced().is_none() {
            let _ = self.call(Op::Disconnect, self.timeout).await;
        }
    }
}
