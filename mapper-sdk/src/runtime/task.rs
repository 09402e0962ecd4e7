//! The task that runs one device: connect with backoff, collect on each
//! property's cycle, report twins and state, apply desired values.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::snapshot::{DesiredOutcome, DeviceSnapshot, PropertySnapshot};
use crate::config::RuntimeConfig;
use crate::driver::{DeviceState, DynClient, DynDriver, ErasedAddress, PushStream, Pushed};
use crate::error::DriverError;
use crate::link::{Standing, with_deadline};
use crate::metrics::{DeviceLabel, Metrics, OutcomeLabel};
use crate::sample::{Quality, Sample, SampleSink};
use crate::spec::{DeviceModel, DeviceSpec, ModelProperty};
use crate::twin::{Reporter, TwinUpdate};
use crate::value::{AccessMode, PropertyType, Value, sanitize_twin_value};
use edge_rt::Backoff;

/// Everything a device task needs.
pub(crate) struct DeviceCtx {
    pub(crate) driver: Arc<dyn DynDriver>,
    /// Consumers of every sample besides the twin engine and the snapshot.
    pub(crate) sinks: Arc<[Arc<dyn SampleSink>]>,
    pub(crate) spec: Arc<DeviceSpec>,
    pub(crate) model: Arc<DeviceModel>,
    pub(crate) runtime: RuntimeConfig,
    pub(crate) reporter: Reporter,
    pub(crate) snapshot: Arc<Mutex<DeviceSnapshot>>,
    pub(crate) metrics: Arc<Metrics>,
    /// This device's metric label, built once.
    pub(crate) label: DeviceLabel,
    /// Start order in this mapper: devices are started in the order EdgeCore
    /// lists them ([`crate::link`] uses it to order devices nothing is known of).
    pub(crate) seq: u64,
}

struct Prop {
    name: String,
    /// Index of this property in the snapshot.
    slot: usize,
    model: Option<ModelProperty>,
    addr: ErasedAddress,
    cycle: Duration,
    report: bool,
    /// Has push/db methods (the sinks may report a problem with them).
    push: bool,
    next_due: Instant,
    /// Delivered by the driver's subscription on this connection (not polled).
    pushed: bool,
    desired: Option<String>,
    outcome: DesiredOutcome,
}

impl Prop {
    fn ty(&self) -> Option<PropertyType> {
        self.model.as_ref().and_then(|m| m.ty)
    }
}

enum Exit {
    Shutdown,
    LinkFailed(String),
}

/// Why a write through [`crate::Supervisor::write_property`] did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// No such device in this mapper.
    #[error("device {0} is not known to this mapper")]
    UnknownDevice(String),
    /// The device has no such property.
    #[error("device {device} has no property {property}")]
    UnknownProperty {
        /// `namespace/name`.
        device: String,
        /// Property name.
        property: String,
    },
    /// The value does not fit the model (type, minimum/maximum, ReadOnly).
    #[error("{property}: {reason}")]
    Invalid {
        /// Property name.
        property: String,
        /// What the model rules say (`edge_rt::desired`).
        reason: String,
    },
    /// The device is not connected, or the link failed during the write.
    #[error("device {device} is not reachable: {reason}")]
    Unreachable {
        /// `namespace/name`.
        device: String,
        /// Last connect or link error.
        reason: String,
    },
    /// Too many writes are waiting for this device already; try again later.
    #[error("device {0}: too many writes waiting; try again later")]
    Busy(String),
    /// The device answered the write with a fault.
    #[error("{property}: the device refused the write: {reason}")]
    Refused {
        /// Property name.
        property: String,
        /// The driver's error.
        reason: String,
    },
}

/// A write requested outside the desired-value path (the REST data panel).
#[derive(Debug)]
pub(crate) struct WriteCommand {
    pub(crate) property: String,
    pub(crate) value: String,
    pub(crate) reply: tokio::sync::oneshot::Sender<Result<(), WriteError>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn lock(s: &Mutex<DeviceSnapshot>) -> std::sync::MutexGuard<'_, DeviceSnapshot> {
    // A poisoned snapshot only means a reader panicked; the data is still usable.
    s.lock().unwrap_or_else(|p| p.into_inner())
}

struct DeviceTask {
    ctx: DeviceCtx,
    props: Vec<Prop>,
    state: DeviceState,
    state_next: Option<Instant>,
    /// The device answered a read or write since the connection was opened.
    /// Only then is it `online`, does its backoff reset, and do its requests
    /// go before those of devices that have not answered on a shared link
    /// ([`crate::link`]).
    responsive: bool,
    /// It answered since the last time the backoff looked.
    answered: bool,
    /// Connections that failed since it last answered.
    misses: u32,
    /// Start order in this mapper.
    seq: u64,
}

/// Runs one device until `shutdown`. Never returns an error: every failure is
/// logged, visible in the snapshot and retried where retrying can help.
pub(crate) async fn run_device(
    ctx: DeviceCtx,
    mut desired_rx: watch::Receiver<Arc<DeviceSpec>>,
    mut commands: tokio::sync::mpsc::Receiver<WriteCommand>,
    shutdown: CancellationToken,
) {
    let id = ctx.spec.id.clone();
    let cfg = match ctx.driver.config(&ctx.spec.protocol_config) {
        Ok(c) => {
            for key in &c.ignored {
                tracing::warn!(device = %id, key = %key, "unknown protocol configData key ignored");
            }
            c.value
        }
        Err(e) => {
            let msg = format!("bad protocol configData: {e}");
            tracing::error!(device = %id, "{msg}");
            let mut task = DeviceTask {
                props: Vec::new(),
                state: DeviceState::Unknown,
                state_next: None,
                responsive: false,
                answered: false,
                misses: 0,
                seq: ctx.seq,
                ctx,
            };
            task.set_error(Some(msg.clone()));
            task.set_state(DeviceState::Unhealthy);
            refuse_until(&mut commands, &shutdown, &id, &msg).await;
            return;
        }
    };
    let mut task = DeviceTask::new(ctx);
    let mut backoff = Backoff::new(task.ctx.runtime.backoff_min, task.ctx.runtime.backoff_max);
    loop {
        let io_timeout = task.ctx.runtime.io_timeout;
        let driver = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = with_deadline(task.standing(), io_timeout, task.ctx.driver.connect(&cfg)) => r,
        };
        let err = match driver {
            Some(Ok(driver)) => {
                // Connected is not online: a socket that opens says nothing about
                // the device behind it. The first answered read or write decides.
                tracing::info!(device = %id, "connected; waiting for the device to answer");
                task.responsive = false;
                // A device that was away may have lost its settings: apply the
                // desired values again on every (re)connect.
                task.reapply_desired();
                let exit = task
                    .run_connected(driver.as_ref(), &mut desired_rx, &mut commands, &shutdown)
                    .await;
                task.responsive = false;
                for p in &mut task.props {
                    p.pushed = false;
                }
                driver.disconnect().await;
                match exit {
                    Exit::Shutdown => return,
                    Exit::LinkFailed(e) => e,
                }
            }
            Some(Err(DriverError::Config(e))) => {
                let msg = format!("bad protocol configData: {e}");
                tracing::error!(device = %id, "{msg}");
                task.set_error(Some(msg.clone()));
                task.set_state(DeviceState::Unhealthy);
                refuse_until(&mut commands, &shutdown, &id, &msg).await;
                return;
            }
            Some(Err(e)) => format!("connect failed: {e}"),
            None => format!("connect timed out after {io_timeout:?}"),
        };
        // Only a device that answered on this connection starts again from the
        // shortest delay; one that accepts connections but never answers backs
        // off further each time.
        if std::mem::take(&mut task.answered) {
            backoff.reset();
            task.misses = 0;
        }
        task.misses = task.misses.saturating_add(1);
        let delay = backoff.next_delay();
        tracing::warn!(device = %id, retry_in = ?delay, "{err}");
        task.set_error(Some(err.clone()));
        task.set_state(DeviceState::Offline);
        // Keep taking desired values while offline; they are written after reconnect.
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sleep_until(until) => break,
                changed = desired_rx.changed() => {
                    if changed.is_err() { return; }
                    let spec = desired_rx.borrow_and_update().clone();
                    task.take_desired(&spec);
                }
                Some(cmd) = commands.recv() => {
                    let _ = cmd.reply.send(Err(WriteError::Unreachable {
                        device: id.to_string(),
                        reason: err.clone(),
                    }));
                }
            }
        }
    }
}

/// Answers every write with "unreachable: `reason`" until shutdown (a device
/// that cannot run).
async fn refuse_until(
    commands: &mut tokio::sync::mpsc::Receiver<WriteCommand>,
    shutdown: &CancellationToken,
    id: &crate::spec::ObjectId,
    reason: &str,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            cmd = commands.recv() => match cmd {
                Some(cmd) => {
                    let _ = cmd.reply.send(Err(WriteError::Unreachable {
                        device: id.to_string(),
                        reason: reason.to_owned(),
                    }));
                }
                None => {
                    shutdown.cancelled().await;
                    return;
                }
            },
        }
    }
}

impl DeviceTask {
    fn new(ctx: DeviceCtx) -> Self {
        let now = Instant::now();
        let mut props = Vec::new();
        let mut config_errors = Vec::new();
        lock(&ctx.snapshot).properties = ctx
            .spec
            .properties
            .iter()
            .map(|p| PropertySnapshot {
                name: p.name.clone(),
                ..PropertySnapshot::default()
            })
            .collect();
        for (slot, p) in ctx.spec.properties.iter().enumerate() {
            let model = ctx.model.properties.get(&p.name).cloned();
            if model.is_none() {
                tracing::warn!(device = %ctx.spec.id, property = %p.name, model = %ctx.model.id,
                    "property is not in the model; it is read and reported as text, desired values are rejected");
            }
            if model.as_ref().and_then(|m| m.ty) == Some(PropertyType::Stream) {
                tracing::info!(device = %ctx.spec.id, property = %p.name, "STREAM property is not collected as a twin");
                continue;
            }
            let ty = model.as_ref().and_then(|m| m.ty);
            let info = crate::driver::PropertyInfo::new(&p.name, ty, p.collect_cycle);
            let parsed = ctx
                .driver
                .property_address(&p.visitor.to_map(), &info)
                .map(|t| {
                    for key in &t.ignored {
                        tracing::warn!(device = %ctx.spec.id, property = %p.name, key = %key,
                        "unknown visitor configData key ignored");
                    }
                    t.value
                });
            match parsed {
                Ok(addr) => props.push(Prop {
                    name: p.name.clone(),
                    slot,
                    model,
                    addr,
                    cycle: p.collect_cycle,
                    report: p.report_to_cloud,
                    push: p.push_method.as_ref().is_some_and(|m| !m.is_empty()),
                    next_due: now,
                    pushed: false,
                    desired: p.desired.clone(),
                    outcome: DesiredOutcome::Pending,
                }),
                Err(e) => {
                    let msg = match e {
                        DriverError::Config(e) => format!("bad visitor configData: {e}"),
                        e => format!("bad visitor configData: {e}"),
                    };
                    tracing::error!(device = %ctx.spec.id, property = %p.name, "{msg}; property skipped");
                    lock(&ctx.snapshot).properties[slot].error = Some(msg.clone());
                    config_errors.push((p.name.clone(), msg));
                }
            }
        }
        report_config_errors(&ctx, config_errors);
        let state_next = ctx.spec.state_report.map(|c| now + c);
        {
            let mut snap = lock(&ctx.snapshot);
            for p in &props {
                snap.properties[p.slot].desired =
                    p.desired.clone().map(|d| (d, DesiredOutcome::Pending));
            }
        }
        Self {
            seq: ctx.seq,
            ctx,
            props,
            state: DeviceState::Unknown,
            state_next,
            responsive: false,
            answered: false,
            misses: 0,
        }
    }

    /// Where this device's requests stand on a shared link.
    fn standing(&self) -> Standing {
        Standing {
            responsive: self.responsive,
            misses: self.misses,
            seq: self.seq,
        }
    }

    /// Records that the device answered (a value, or a fault of its own).
    fn mark_answered(&mut self) {
        if !self.responsive {
            self.set_error(None);
        }
        self.responsive = true;
        self.answered = true;
    }

    fn set_error(&mut self, e: Option<String>) {
        lock(&self.ctx.snapshot).error = e;
    }

    /// Records a state; a change is reported at once, the rest on the state cycle.
    fn set_state(&mut self, s: DeviceState) {
        let changed = s != self.state;
        self.state = s;
        lock(&self.ctx.snapshot).state = s;
        self.ctx
            .metrics
            .online
            .get_or_create(&self.ctx.label)
            .set(i64::from(s == DeviceState::Online));
        if changed {
            tracing::info!(device = %self.ctx.spec.id, state = s.as_str(), "device state");
            self.send_state();
        }
    }

    fn send_state(&self) {
        self.ctx
            .reporter
            .state(&self.ctx.spec.id, self.state.as_str());
    }

    /// Marks applied desired values for writing again (after a reconnect).
    fn reapply_desired(&mut self) {
        for p in &mut self.props {
            if p.outcome == DesiredOutcome::Applied {
                p.outcome = DesiredOutcome::Pending;
            }
        }
    }

    /// Takes the desired values of an updated spec (only desired values changed).
    fn take_desired(&mut self, spec: &DeviceSpec) {
        let by_name: HashMap<&str, &Option<String>> = spec
            .properties
            .iter()
            .map(|p| (p.name.as_str(), &p.desired))
            .collect();
        let mut snap = lock(&self.ctx.snapshot);
        for p in &mut self.props {
            let new = by_name
                .get(p.name.as_str())
                .map(|d| (*d).clone())
                .unwrap_or_default();
            if new != p.desired {
                tracing::info!(device = %self.ctx.spec.id, property = %p.name, desired = ?new, "desired value changed");
                p.desired = new;
                p.outcome = DesiredOutcome::Pending;
                snap.properties[p.slot].desired =
                    p.desired.clone().map(|d| (d, DesiredOutcome::Pending));
            }
        }
    }

    async fn run_connected(
        &mut self,
        client: &dyn DynClient,
        desired_rx: &mut watch::Receiver<Arc<DeviceSpec>>,
        commands: &mut tokio::sync::mpsc::Receiver<WriteCommand>,
        shutdown: &CancellationToken,
    ) -> Exit {
        let applied = tokio::select! {
            _ = shutdown.cancelled() => return Exit::Shutdown,
            r = self.apply_desired(client) => r,
        };
        if let Err(e) = applied {
            return Exit::LinkFailed(e);
        }
        let subscribed = tokio::select! {
            _ = shutdown.cancelled() => return Exit::Shutdown,
            r = self.subscribe(client) => r,
        };
        let mut push = match subscribed {
            Ok(p) => p,
            Err(e) => return Exit::LinkFailed(e),
        };
        loop {
            let next_collect = self
                .props
                .iter()
                .filter(|p| !p.pushed)
                .map(|p| p.next_due)
                .min();
            let far = Instant::now() + Duration::from_secs(3600);
            let pushed = async {
                match push.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Exit::Shutdown,
                item = pushed => {
                    if let Err(e) = self.pushed(item) {
                        return Exit::LinkFailed(e);
                    }
                }
                changed = desired_rx.changed() => {
                    if changed.is_err() { return Exit::Shutdown; }
                    let spec = desired_rx.borrow_and_update().clone();
                    self.take_desired(&spec);
                    let applied = tokio::select! {
                        _ = shutdown.cancelled() => return Exit::Shutdown,
                        r = self.apply_desired(client) => r,
                    };
                    if let Err(e) = applied {
                        return Exit::LinkFailed(e);
                    }
                }
                Some(cmd) = commands.recv() => {
                    let done = tokio::select! {
                        _ = shutdown.cancelled() => return Exit::Shutdown,
                        r = self.write_command(client, &cmd.property, &cmd.value) => r,
                    };
                    let link = match &done {
                        Err(WriteError::Unreachable { reason, .. }) => Some(reason.clone()),
                        _ => None,
                    };
                    let _ = cmd.reply.send(done);
                    if let Some(e) = link {
                        return Exit::LinkFailed(e);
                    }
                }
                _ = sleep_until(next_collect.unwrap_or(far)), if next_collect.is_some() => {
                    let collected = tokio::select! {
                        _ = shutdown.cancelled() => return Exit::Shutdown,
                        r = self.collect(client) => r,
                    };
                    if let Err(e) = collected {
                        return Exit::LinkFailed(e);
                    }
                }
                _ = sleep_until(self.state_next.unwrap_or(far)), if self.state_next.is_some() => {
                    let io_timeout = self.ctx.runtime.io_timeout;
                    let s = tokio::select! {
                        _ = shutdown.cancelled() => return Exit::Shutdown,
                        s = with_deadline(self.standing(), io_timeout, client.state()) => s,
                    };
                    // Until the device answers, its state is what the reads said.
                    if let Some(s) = s.filter(|s| *s != DeviceState::Online && self.responsive) {
                        self.set_state(s);
                    }
                    self.send_state();
                    if let (Some(next), Some(c)) = (self.state_next.as_mut(), self.ctx.spec.state_report) {
                        *next += c;
                        if *next < Instant::now() { *next = Instant::now() + c; }
                    }
                }
            }
        }
    }

    /// Validates `value` against the model and writes it to `property` (the
    /// REST data panel's device-method write; spec §4.6). The property is read
    /// back on the next tick.
    async fn write_command(
        &mut self,
        client: &dyn DynClient,
        property: &str,
        value: &str,
    ) -> Result<(), WriteError> {
        let device = self.ctx.spec.id.to_string();
        let Some(i) = self.props.iter().position(|p| p.name == property) else {
            return Err(WriteError::UnknownProperty {
                device,
                property: property.to_owned(),
            });
        };
        let p = &self.props[i];
        let v =
            validate_desired(p.model.as_ref(), value).map_err(|reason| WriteError::Invalid {
                property: property.to_owned(),
                reason,
            })?;
        let io_timeout = self.ctx.runtime.io_timeout;
        let res = with_deadline(self.standing(), io_timeout, client.write(&p.addr, &v)).await;
        match res {
            Some(Ok(())) => {
                self.mark_answered();
                tracing::info!(device = %device, property, value, "written through the data panel");
                self.props[i].next_due = Instant::now();
                Ok(())
            }
            Some(Err(e)) if e.is_link_failure() => Err(WriteError::Unreachable {
                device,
                reason: format!("writing {property}: {e}"),
            }),
            Some(Err(e)) => {
                if matches!(e, DriverError::Device(_)) {
                    self.mark_answered();
                }
                Err(WriteError::Refused {
                    property: property.to_owned(),
                    reason: e.to_string(),
                })
            }
            None => Err(WriteError::Unreachable {
                device,
                reason: format!("writing {property} timed out after {io_timeout:?}"),
            }),
        }
    }

    /// Validates and writes every pending desired value. Returns a link failure.
    async fn apply_desired(&mut self, client: &dyn DynClient) -> Result<(), String> {
        let io_timeout = self.ctx.runtime.io_timeout;
        for i in 0..self.props.len() {
            let p = &self.props[i];
            let (Some(desired), DesiredOutcome::Pending) = (p.desired.clone(), &p.outcome) else {
                continue;
            };
            let outcome = match validate_desired(p.model.as_ref(), &desired) {
                Err(reason) => DesiredOutcome::Rejected(reason),
                Ok(value) => {
                    match with_deadline(self.standing(), io_timeout, client.write(&p.addr, &value))
                        .await
                    {
                        Some(Ok(())) => {
                            self.mark_answered();
                            DesiredOutcome::Applied
                        }
                        Some(Err(e)) if e.is_link_failure() => {
                            return Err(format!("writing {}: {e}", p.name));
                        }
                        Some(Err(e)) => {
                            // The device answered (a fault), or the value could not
                            // be encoded: either way the device is not unreachable.
                            if matches!(e, DriverError::Device(_)) {
                                self.mark_answered();
                            }
                            DesiredOutcome::Rejected(e.to_string())
                        }
                        None => {
                            return Err(format!(
                                "writing {} timed out after {io_timeout:?}",
                                p.name
                            ));
                        }
                    }
                }
            };
            let p = &mut self.props[i];
            match &outcome {
                DesiredOutcome::Rejected(reason) => tracing::warn!(
                    device = %self.ctx.spec.id, property = %p.name, desired = %desired, %reason, "desired value rejected"
                ),
                _ => {
                    tracing::info!(device = %self.ctx.spec.id, property = %p.name, desired = %desired, "desired value written")
                }
            }
            let label = OutcomeLabel {
                device: self.ctx.label.device.clone(),
                outcome: outcome.status().to_owned(),
            };
            self.ctx.metrics.desired_writes.get_or_create(&label).inc();
            p.outcome = outcome.clone();
            // Read it back on the next tick so reported converges quickly.
            p.next_due = Instant::now();
            lock(&self.ctx.snapshot).properties[p.slot].desired = Some((desired, outcome));
        }
        Ok(())
    }

    /// Reads every due polled property in one batch and hands the samples to
    /// the consumers. Returns a link failure.
    async fn collect(&mut self, client: &dyn DynClient) -> Result<(), String> {
        let now = Instant::now();
        let due: Vec<usize> = (0..self.props.len())
            .filter(|&i| !self.props[i].pushed && self.props[i].next_due <= now)
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let addrs: Vec<&ErasedAddress> = due.iter().map(|&i| &self.props[i].addr).collect();
        let deadline = self
            .ctx
            .runtime
            .io_timeout
            .saturating_mul(due.len().min(8) as u32);
        let requests_before = client.io_requests();
        let results = match with_deadline(self.standing(), deadline, client.read_batch(&addrs))
            .await
        {
            Some(r) if r.len() == due.len() => r,
            Some(r) => {
                tracing::error!(device = %self.ctx.spec.id, expected = due.len(), got = r.len(), "driver returned the wrong number of results");
                return Err("driver returned the wrong number of results".into());
            }
            None => return Err(format!("reads timed out after {deadline:?}")),
        };
        let m = &self.ctx.metrics;
        m.ticks.get_or_create(&self.ctx.label).inc();
        m.last_tick_properties
            .get_or_create(&self.ctx.label)
            .set(due.len() as i64);
        if let (Some(before), Some(after)) = (requests_before, client.io_requests()) {
            let n = after.saturating_sub(before);
            m.driver_requests.get_or_create(&self.ctx.label).inc_by(n);
            m.last_tick_requests
                .get_or_create(&self.ctx.label)
                .set(n as i64);
        }
        let mut tick = Tick::new();
        for &i in &due {
            let p = &mut self.props[i];
            p.next_due = advance(p.next_due, p.cycle, now);
        }
        {
            // One lock of the snapshot per tick, not per value.
            let snapshot = self.ctx.snapshot.clone();
            let mut snap = lock(&snapshot);
            for (&i, result) in due.iter().zip(results) {
                self.take_result(i, result, None, &mut snap, &mut tick);
            }
        }
        self.finish_tick(tick)
    }

    /// One property's read result → a sample → the consumers.
    fn take_result(
        &self,
        i: usize,
        result: Result<Value, DriverError>,
        source_time: Option<SystemTime>,
        snap: &mut DeviceSnapshot,
        tick: &mut Tick,
    ) {
        let p = &self.props[i];
        let sample = match result {
            Ok(v) => match p.ty() {
                Some(ty) => {
                    let shown =
                        matches!(v, Value::Bytes(_) | Value::String(_)).then(|| format!("{v:?}"));
                    match crate::value::coerce(ty, v) {
                        Some(v) => Sample::good_at(v, source_time, tick.received),
                        None => {
                            tick.faults += 1;
                            Sample::bad_at(
                                format!(
                                    "read {}, which is not a valid {}",
                                    shown.unwrap_or_else(|| "a value".into()),
                                    ty.as_str()
                                ),
                                tick.received,
                            )
                        }
                    }
                }
                None => Sample::good_at(v, source_time, tick.received),
            },
            Err(e) => {
                if e.is_link_failure() {
                    if tick.link_error.is_none() {
                        tick.link_error = Some(format!("reading {}: {e}", p.name));
                    }
                } else {
                    // A fault the device reported is an answer too.
                    tick.faults += 1;
                }
                Sample::bad_at(e.to_string(), tick.received)
            }
        };
        if sample.quality == Quality::Good {
            tick.ok += 1;
        }
        tick.read += 1;
        self.consume(i, sample, snap, tick);
    }

    /// Feeds one sample to the consumers: the snapshot and, for properties
    /// reported to the cloud, the twin engine.
    fn consume(&self, i: usize, sample: Sample, snap: &mut DeviceSnapshot, tick: &mut Tick) {
        let p = &self.props[i];
        for sink in self.ctx.sinks.iter() {
            sink.accept(&self.ctx.spec.id, &p.name, &sample);
        }
        if let (Quality::Good, Some(v)) = (&sample.quality, &sample.value)
            && p.report
        {
            let (text, changed) = sanitize_twin_value(&v.to_string());
            if changed {
                tracing::debug!(device = %self.ctx.spec.id, property = %p.name, "value changed to fit the twin charset");
            }
            let sink_error = if p.push {
                self.ctx
                    .sinks
                    .iter()
                    .find_map(|s| s.problem(&self.ctx.spec.id, &p.name))
            } else {
                None
            };
            tick.twins
                .push(twin(p, text, sample.timestamp_ms(), sink_error));
        }
        let entry = &mut snap.properties[p.slot];
        match (sample.quality, sample.value) {
            (Quality::Good, Some(v)) => {
                entry.reported = Some(v);
                entry.reported_at = Some(sample.received_time);
                entry.error = None;
            }
            (Quality::Bad(e), _) => {
                tracing::warn!(device = %self.ctx.spec.id, property = %p.name, error = %e, "read failed");
                entry.error = Some(e);
            }
            (Quality::Good, None) => {}
        }
    }

    /// Hands a tick's twins to the twin engine, counts, and sets the state.
    fn finish_tick(&mut self, tick: Tick) -> Result<(), String> {
        let m = &self.ctx.metrics;
        m.reads
            .get_or_create(&self.ctx.label)
            .inc_by(tick.ok as u64);
        m.read_errors
            .get_or_create(&self.ctx.label)
            .inc_by((tick.read - tick.ok) as u64);
        self.ctx
            .reporter
            .twins(&self.ctx.spec.id, self.status_fields(), tick.twins);
        if tick.ok + tick.faults > 0 {
            self.mark_answered();
        }
        if let Some(e) = tick.link_error {
            return Err(e);
        }
        self.set_state(if tick.ok == 0 {
            DeviceState::Unhealthy
        } else {
            DeviceState::Online
        });
        Ok(())
    }

    /// `(reportToCloud, reportCycle ms)` of this device's status reports.
    fn status_fields(&self) -> (bool, i64) {
        (
            self.ctx.spec.state_report.is_some(),
            self.ctx
                .spec
                .state_report
                .map(|c| c.as_millis() as i64)
                .unwrap_or_default(),
        )
    }

    /// Asks the driver for push-mode collection; properties it covers are no
    /// longer polled on this connection.
    async fn subscribe(&mut self, client: &dyn DynClient) -> Result<Option<PushStream>, String> {
        if self.props.is_empty() {
            return Ok(None);
        }
        let io_timeout = self.ctx.runtime.io_timeout;
        let addrs: Vec<&ErasedAddress> = self.props.iter().map(|p| &p.addr).collect();
        let sub = match with_deadline(self.standing(), io_timeout, client.subscribe(&addrs)).await {
            None => return Err(format!("subscribing timed out after {io_timeout:?}")),
            Some(Err(e)) if e.is_link_failure() => return Err(format!("subscribing: {e}")),
            Some(Err(e)) => {
                tracing::warn!(device = %self.ctx.spec.id, error = %e, "subscription refused; polling every property");
                return Ok(None);
            }
            Some(Ok(None)) => return Ok(None),
            Some(Ok(Some(sub))) => sub,
        };
        let mut n = 0;
        for (p, covered) in self.props.iter_mut().zip(&sub.covered) {
            p.pushed = *covered;
            n += usize::from(*covered);
        }
        tracing::info!(device = %self.ctx.spec.id, properties = n, "push-mode collection");
        Ok(Some(sub.stream))
    }

    /// One value the device pushed. Returns a link failure.
    fn pushed(&mut self, item: Option<Pushed>) -> Result<(), String> {
        let Some(item) = item else {
            return Err("the device's subscription ended".into());
        };
        if item.index >= self.props.len() {
            tracing::error!(device = %self.ctx.spec.id, index = item.index, "driver pushed a value for an unknown property");
            return Ok(());
        }
        let mut tick = Tick::new();
        {
            let snapshot = self.ctx.snapshot.clone();
            let mut snap = lock(&snapshot);
            self.take_result(
                item.index,
                item.value,
                item.source_time,
                &mut snap,
                &mut tick,
            );
        }
        self.finish_tick(tick)
    }
}

/// What one collect tick (or one pushed value) produced.
struct Tick {
    /// When the tick's results arrived (one clock read per tick, not per value).
    received: SystemTime,
    read: usize,
    ok: usize,
    /// Answers that carried a fault of the device.
    faults: usize,
    link_error: Option<String>,
    twins: Vec<TwinUpdate>,
}

impl Tick {
    fn new() -> Self {
        Self {
            received: SystemTime::now(),
            read: 0,
            ok: 0,
            faults: 0,
            link_error: None,
            twins: Vec::new(),
        }
    }
}

/// Makes configuration errors visible upstream: a twin per broken property with
/// an empty reported value (which stock EdgeCore accepts) and the reason in
/// `reported.metadata.error`.
fn report_config_errors(ctx: &DeviceCtx, errors: Vec<(String, String)>) {
    if errors.is_empty() {
        return;
    }
    let ts = now_ms();
    let twins = errors
        .into_iter()
        .map(|(name, msg)| TwinUpdate {
            property: name,
            reported: String::new(),
            type_text: "string",
            timestamp_ms: ts,
            desired: None,
            error: Some(msg),
            sink_error: None,
        })
        .collect();
    ctx.reporter.twins(&ctx.spec.id, (false, 0), twins);
}

/// Next due time on a fixed grid; ticks missed while busy are skipped, not bunched.
fn advance(due: Instant, cycle: Duration, now: Instant) -> Instant {
    let next = due + cycle;
    if next > now { next } else { now + cycle }
}

/// The twin of a property with a fresh reported value.
fn twin(p: &Prop, reported: String, timestamp_ms: u64, sink_error: Option<String>) -> TwinUpdate {
    TwinUpdate {
        property: p.name.clone(),
        reported,
        type_text: p.ty().map(|t| t.as_str()).unwrap_or("string"),
        timestamp_ms,
        desired: p
            .desired
            .as_ref()
            .map(|d| (sanitize_twin_value(d).0, p.outcome.clone())),
        error: None,
        sink_error,
    }
}

/// Checks a desired value against the model: known property, ReadWrite, parses as
/// the type, within minimum/maximum.
pub(crate) fn validate_desired(model: Option<&ModelProperty>, text: &str) -> Result<Value, String> {
    let m = model.ok_or("property is not in the device model")?;
    let ty = match m.ty {
        Some(ty) => ty,
        None if m.access_mode != AccessMode::ReadWrite => return Err("property is ReadOnly".into()),
        None => return Err(format!("model type `{}` is unknown", m.type_text)),
    };
    edge_rt::desired::check(ty, m.access_mode, m.minimum, m.maximum, text)
        .map(Value::from)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(ty: &str, access: AccessMode, min: Option<f64>, max: Option<f64>) -> ModelProperty {
        ModelProperty {
            name: "p".into(),
            ty: PropertyType::parse(ty),
            type_text: ty.into(),
            access_mode: access,
            minimum: min,
            maximum: max,
            unit: String::new(),
        }
    }

    #[test]
    fn desired_validation() {
        let rw = prop("INT", AccessMode::ReadWrite, Some(0.0), Some(100.0));
        assert_eq!(validate_desired(Some(&rw), "42"), Ok(Value::Int(42)));
        assert_eq!(
            validate_desired(Some(&rw), "150").unwrap_err(),
            "150 is above the maximum 100"
        );
        assert_eq!(
            validate_desired(Some(&rw), "-1").unwrap_err(),
            "-1 is below the minimum 0"
        );
        assert_eq!(
            validate_desired(Some(&rw), "abc").unwrap_err(),
            "`abc` is not an integer"
        );
        let ro = prop("INT", AccessMode::ReadOnly, None, None);
        assert_eq!(
            validate_desired(Some(&ro), "1").unwrap_err(),
            "property is ReadOnly"
        );
        assert_eq!(
            validate_desired(None, "1").unwrap_err(),
            "property is not in the device model"
        );
        let b = prop("BOOLEAN", AccessMode::ReadWrite, None, None);
        assert_eq!(validate_desired(Some(&b), "on"), Ok(Value::Bool(true)));
    }

    #[test]
    fn advance_skips_missed_ticks() {
        let t0 = Instant::now();
        let c = Duration::from_millis(100);
        assert_eq!(advance(t0, c, t0), t0 + c);
        let late = t0 + Duration::from_millis(350);
        assert_eq!(advance(t0, c, late), late + c);
    }
}
