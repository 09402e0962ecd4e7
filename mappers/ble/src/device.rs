//! One connected peripheral: batched reads, writes, notifications.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use btleplug::api::{
    Central as _, CentralEvent, CharPropFlags, Characteristic, Peripheral as _, WriteType,
};
use btleplug::platform::{Adapter, Peripheral, PeripheralId};
use futures::stream::{self, BoxStream, StreamExt};
use mapper_sdk::{
    DeviceClient, DeviceFault, DriverError, DriverResult, Pushed, Subscription, Value,
};
use tokio::sync::mpsc;
use tokio::time::timeout;
use uuid::Uuid;

use crate::codec::Conversion;
use crate::error::link_error;
use crate::session::Opened;
use crate::visitor::BleAddress;

/// Bound of the queue of characteristics to read again after a write
/// (subscribed characteristics only; see [`BleDevice::write`]).
pub(crate) const ECHO_QUEUE: usize = 16;
/// Deadline of the clean-up calls in [`DeviceClient::disconnect`].
pub(crate) const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One connected peripheral (see the crate docs).
///
/// A value lives from one [`mapper_sdk::Driver::connect`] to the next; the
/// SDK drops it and connects again after a link failure, which also
/// subscribes again.
#[derive(Debug)]
pub struct BleDevice {
    adapter: Adapter,
    peripheral: Peripheral,
    chars: HashMap<Uuid, Characteristic>,
    link_check: Option<Duration>,
    requests: AtomicU64,
    subscribed: Mutex<Subscribed>,
}

/// What the current subscription covers.
#[derive(Debug, Default)]
struct Subscribed {
    chars: Vec<Characteristic>,
    /// Characteristics to read again and push (after writes).
    echo: Option<mpsc::Sender<Uuid>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A covered property: its index in `subscribe`'s addresses, characteristic and conversion.
type Target = (usize, Uuid, Conversion);

fn decode_all(targets: &[Target], uuid: Uuid, value: &DriverResult<Vec<u8>>) -> Vec<Pushed> {
    targets
        .iter()
        .filter(|(_, u, _)| *u == uuid)
        .map(|(index, _, conv)| Pushed {
            index: *index,
            value: value.clone().and_then(|b| conv.decode(&b)),
            source_time: None,
        })
        .collect()
}

impl BleDevice {
    pub(crate) fn new(opened: Opened, link_check: Option<Duration>) -> Self {
        let chars = opened
            .peripheral
            .characteristics()
            .into_iter()
            .map(|c| (c.uuid, c))
            .collect();
        Self {
            adapter: opened.adapter,
            peripheral: opened.peripheral,
            chars,
            link_check,
            requests: AtomicU64::new(0),
            subscribed: Mutex::new(Subscribed::default()),
        }
    }

    /// GATT requests sent so far (reads, writes, subscriptions).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The characteristics the peripheral offers.
    pub fn characteristics(&self) -> impl Iterator<Item = &Characteristic> {
        self.chars.values()
    }

    fn characteristic(&self, uuid: Uuid) -> DriverResult<&Characteristic> {
        self.chars.get(&uuid).ok_or_else(|| {
            DriverError::Device(DeviceFault::new(format!(
                "the peripheral has no characteristic {uuid}"
            )))
        })
    }

    async fn read_char(&self, c: &Characteristic) -> DriverResult<Vec<u8>> {
        if !c.properties.contains(CharPropFlags::READ) {
            return Err(DriverError::Value(format!(
                "characteristic {} is not readable (flags {:?}); it can only be notified",
                c.uuid, c.properties
            )));
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.peripheral.read(c).await.map_err(link_error)
    }

    async fn read_uuid(&self, uuid: Uuid) -> DriverResult<Vec<u8>> {
        let c = self.characteristic(uuid)?;
        self.read_char(c).await
    }
}

impl DeviceClient for BleDevice {
    type Address = BleAddress;

    fn io_requests(&self) -> Option<u64> {
        Some(self.requests())
    }

    async fn read(&self, at: &BleAddress) -> DriverResult<Value> {
        self.read_uuid(at.characteristic)
            .await
            .and_then(|b| at.conversion.decode(&b))
    }

    /// Reads each characteristic once per tick, however many properties it
    /// holds (BlueZ has no multi-characteristic read); after a link failure
    /// the remaining properties get the same error without further requests.
    async fn read_batch(&self, at: &[&BleAddress]) -> Vec<DriverResult<Value>> {
        let mut raw: HashMap<Uuid, DriverResult<Vec<u8>>> = HashMap::new();
        let mut broken: Option<DriverError> = None;
        let mut out = Vec::with_capacity(at.len());
        for a in at {
            let bytes = match (raw.get(&a.characteristic), &broken) {
                (Some(r), _) => r.clone(),
                (None, Some(e)) => Err(e.clone()),
                (None, None) => {
                    let r = self.read_uuid(a.characteristic).await;
                    if let Err(e) = &r
                        && e.is_link_failure()
                    {
                        broken = Some(e.clone());
                    }
                    raw.insert(a.characteristic, r.clone());
                    r
                }
            };
            out.push(bytes.and_then(|b| a.conversion.decode(&b)));
        }
        out
    }

    /// Writes with response when the characteristic offers it, else without
    /// (`writeWithResponse` overrides). A property that is part of a larger
    /// value reads the value first and replaces its bytes. A subscribed
    /// characteristic is read again after the write and the value pushed, so
    /// the twin follows even when the peripheral does not notify its own
    /// writes.
    async fn write(&self, at: &BleAddress, value: &Value) -> DriverResult<()> {
        let c = self.characteristic(at.characteristic)?;
        let write_type = match at.write_with_response {
            Some(true) => WriteType::WithResponse,
            Some(false) => WriteType::WithoutResponse,
            None if c.properties.contains(CharPropFlags::WRITE) => WriteType::WithResponse,
            None if c.properties.contains(CharPropFlags::WRITE_WITHOUT_RESPONSE) => {
                WriteType::WithoutResponse
            }
            None => {
                return Err(DriverError::Value(format!(
                    "characteristic {} is not writable (flags {:?})",
                    c.uuid, c.properties
                )));
            }
        };
        let current = if at.wants_current() && c.properties.contains(CharPropFlags::READ) {
            Some(self.read_char(c).await?)
        } else {
            None
        };
        let bytes = at.encode(value, current.as_deref())?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.peripheral
            .write(c, &bytes, write_type)
            .await
            .map_err(link_error)?;
        let s = lock(&self.subscribed);
        if let Some(echo) = &s.echo
            && s.chars.iter().any(|sc| sc.uuid == c.uuid)
            && c.properties.contains(CharPropFlags::READ)
        {
            // Full queue: reads are already pending; one more adds nothing.
            let _ = echo.try_send(c.uuid);
        }
        Ok(())
    }

    /// Subscribes every notifying (or indicating) characteristic of `at`
    /// whose visitor does not say `notify: false`; those properties are then
    /// pushed, not polled. Readable ones are read once at once, so their
    /// twins have a value before the first notification. The stream also
    /// reports a link failure when BlueZ says the peripheral disconnected or,
    /// every `linkCheckMs`, does not say it is connected.
    async fn subscribe(&self, at: &[&BleAddress]) -> DriverResult<Option<Subscription>> {
        let mut covered = vec![false; at.len()];
        let mut targets: Vec<Target> = Vec::new();
        let mut chars: Vec<Characteristic> = Vec::new();
        for (i, a) in at.iter().enumerate() {
            let Some(c) = self.chars.get(&a.characteristic) else {
                continue; // polled, which reports the missing characteristic
            };
            if !a.notify
                || !c
                    .properties
                    .intersects(CharPropFlags::NOTIFY | CharPropFlags::INDICATE)
            {
                continue;
            }
            covered[i] = true;
            targets.push((i, c.uuid, a.conversion.clone()));
            if !chars.iter().any(|k| k.uuid == c.uuid) {
                chars.push(c.clone());
            }
        }
        let Some(first) = targets.first().map(|t| t.0) else {
            return Ok(None);
        };
        // The stream first, so that nothing sent right after StartNotify is missed.
        let notes = self.peripheral.notifications().await.map_err(link_error)?;
        let events = self.adapter.events().await.map_err(link_error)?;
        for c in &chars {
            self.requests.fetch_add(1, Ordering::Relaxed);
            self.peripheral.subscribe(c).await.map_err(link_error)?;
        }
        let mut initial = Vec::new();
        for c in chars
            .iter()
            .filter(|c| c.properties.contains(CharPropFlags::READ))
        {
            let r = self.read_char(c).await;
            if let Err(e) = &r
                && e.is_link_failure()
            {
                return Err(e.clone());
            }
            initial.extend(decode_all(&targets, c.uuid, &r));
        }
        let (echo_tx, echo_rx) = mpsc::channel(ECHO_QUEUE);
        {
            let mut s = lock(&self.subscribed);
            s.chars = chars.clone();
            s.echo = Some(echo_tx);
        }
        let targets = Arc::new(targets);
        // A link failure ends the connection, whichever property carries it.
        let lost = move |why: String| Pushed {
            index: first,
            value: Err(DriverError::transport(why)),
            source_time: None,
        };

        let t = targets.clone();
        let notified = notes.flat_map(move |n| stream::iter(decode_all(&t, n.uuid, &Ok(n.value))));

        let me: PeripheralId = self.peripheral.id();
        let disconnected = events.filter_map(move |e| {
            let item = match e {
                CentralEvent::DeviceDisconnected(id) if id == me => {
                    Some(lost("the peripheral disconnected".into()))
                }
                _ => None,
            };
            futures::future::ready(item)
        });

        let peripheral = self.peripheral.clone();
        let echo_chars = chars;
        let t = targets;
        let echoed = stream::unfold(
            echo_rx,
            |mut rx| async move { rx.recv().await.map(|u| (u, rx)) },
        )
        .then(move |uuid| {
            let (p, t) = (peripheral.clone(), t.clone());
            let c = echo_chars.iter().find(|c| c.uuid == uuid).cloned();
            async move {
                let r = match c {
                    Some(c) => p.read(&c).await.map_err(link_error),
                    None => return Vec::new(),
                };
                decode_all(&t, uuid, &r)
            }
        })
        .flat_map(stream::iter);

        let mut parts: Vec<BoxStream<'static, Pushed>> = vec![
            stream::iter(initial).boxed(),
            notified.boxed(),
            disconnected.boxed(),
            echoed.boxed(),
        ];
        if let Some(every) = self.link_check {
            let peripheral = self.peripheral.clone();
            parts.push(
                stream::unfold(peripheral, move |p| async move {
                    loop {
                        tokio::time::sleep(every).await;
                        let why = match timeout(every.max(Duration::from_secs(1)), p.is_connected())
                            .await
                        {
                            Ok(Ok(true)) => continue,
                            Ok(Ok(false)) => "BlueZ reports the peripheral disconnected".to_owned(),
                            Ok(Err(e)) => format!("link check: {}", link_error(e)),
                            Err(_) => "link check: BlueZ did not answer".to_owned(),
                        };
                        return Some((lost(why), p));
                    }
                })
                .boxed(),
            );
        }
        Ok(Some(Subscription {
            stream: stream::select_all(parts).boxed(),
            covered,
        }))
    }

    async fn disconnect(self) {
        let chars = std::mem::take(&mut lock(&self.subscribed).chars);
        for c in &chars {
            let _ = timeout(DISCONNECT_TIMEOUT, self.peripheral.unsubscribe(c)).await;
        }
        let _ = timeout(DISCONNECT_TIMEOUT, self.peripheral.disconnect()).await;
    }
}
