//! What devices share: one D-Bus connection to BlueZ (a btleplug `Manager`),
//! reopened when it is lost, and one turn per adapter for scanning and
//! connecting.
//!
//! BlueZ runs one discovery per adapter and controllers create one LE
//! connection at a time, so finding and connecting a peripheral takes a turn
//! on the adapter's [`SharedLink`]; time spent waiting for it does not count
//! against the SDK's deadline. Reads, writes and notifications of connected
//! peripherals do not take turns (each has its own GATT connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use btleplug::api::{Central, Manager as _, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Manager, Peripheral};
use mapper_sdk::link::SharedLink;
use mapper_sdk::{DriverError, DriverResult};
use tokio::time::{Instant, timeout};

use crate::config::BleConfig;
use crate::error::link_error;

/// Deadline of the D-Bus calls that check and open the connection to BlueZ.
pub const BUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the peripherals BlueZ knows are listed while scanning.
pub const SCAN_POLL: Duration = Duration::from_millis(200);

/// The shared connection to BlueZ and the adapters' turns.
#[derive(Debug, Default)]
pub struct Session {
    /// Held only while the connection is checked or opened.
    manager: tokio::sync::Mutex<Option<Manager>>,
    turns: Mutex<HashMap<String, Arc<SharedLink<()>>>>,
}

/// A found and connected peripheral.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) adapter: Adapter,
    pub(crate) peripheral: Peripheral,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Session {
    /// The adapters, through a working connection: the kept one if it still
    /// answers, else a new one (BlueZ or the system bus restarted).
    ///
    /// Cancellation safe: a dropped call leaves no connection half-open (the
    /// next call checks again).
    async fn adapters(&self) -> DriverResult<Vec<Adapter>> {
        let mut kept = self.manager.lock().await;
        if let Some(m) = kept.as_ref() {
            match timeout(BUS_TIMEOUT, m.adapters()).await {
                Ok(Ok(a)) => return Ok(a),
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "BlueZ stopped answering; reconnecting to D-Bus")
                }
                Err(_) => {
                    tracing::info!("BlueZ did not answer in {BUS_TIMEOUT:?}; reconnecting to D-Bus")
                }
            }
            *kept = None;
        }
        // Opening the connection is a blocking connect to a local socket
        // (libdbus); it returns at once whether or not the bus is there.
        let m = timeout(BUS_TIMEOUT, Manager::new())
            .await
            .map_err(|_| DriverError::Timeout(BUS_TIMEOUT))?
            .map_err(|e| {
                DriverError::transport(format!(
                    "cannot reach BlueZ on the system D-Bus (DBUS_SYSTEM_BUS_ADDRESS or /run/dbus/system_bus_socket): {e}"
                ))
            })?;
        let adapters = timeout(BUS_TIMEOUT, m.adapters())
            .await
            .map_err(|_| DriverError::Timeout(BUS_TIMEOUT))?
            .map_err(link_error)?;
        *kept = Some(m);
        Ok(adapters)
    }

    /// The adapter called `name` (`hci0`), or the first.
    async fn adapter(&self, name: Option<&str>) -> DriverResult<(String, Adapter)> {
        let mut seen = Vec::new();
        for a in self.adapters().await? {
            let info = a.adapter_info().await.map_err(link_error)?;
            // "hci0 (usb:v1D6Bp0246d0537)"
            let id = info
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            if name.is_none_or(|n| n == id) {
                return Ok((id, a));
            }
            seen.push(id);
        }
        // An adapter can come back (a USB dongle replugged): a link error.
        Err(DriverError::transport(match name {
            Some(n) => format!("no Bluetooth adapter {n} (BlueZ has: {})", seen.join(", ")),
            None => "BlueZ has no Bluetooth adapter".to_owned(),
        }))
    }

    fn turn(&self, adapter: &str) -> Arc<SharedLink<()>> {
        lock(&self.turns)
            .entry(adapter.to_owned())
            .or_insert_with(|| Arc::new(SharedLink::new(())))
            .clone()
    }

    /// Finds the peripheral `cfg` describes (scanning for up to
    /// `scanTimeoutMs` when BlueZ does not know it yet), connects it within
    /// `connectTimeoutMs` and discovers its services.
    ///
    /// Cancellation safe: a scan left running by a dropped call is stopped by
    /// the next one on the adapter; a dropped connect leaves BlueZ to finish
    /// or abandon it.
    pub(crate) async fn open(&self, cfg: &BleConfig) -> DriverResult<Opened> {
        let (id, adapter) = self.adapter(cfg.adapter.as_deref()).await?;
        let turn = self.turn(&id);
        let _turn = turn.turn().await;
        let peripheral = match find(&adapter, cfg).await? {
            Some(p) => p,
            None => scan(&adapter, cfg).await?.ok_or_else(|| {
                DriverError::transport(format!(
                    "no peripheral with {} on {id} after scanning {:?}",
                    cfg.target(),
                    cfg.scan_timeout
                ))
            })?,
        };
        let connected = peripheral.is_connected().await.map_err(link_error)?;
        if !connected {
            timeout(cfg.connect_timeout, peripheral.connect())
                .await
                .map_err(|_| DriverError::Timeout(cfg.connect_timeout))?
                .map_err(link_error)?;
        }
        timeout(cfg.connect_timeout, peripheral.discover_services())
            .await
            .map_err(|_| DriverError::Timeout(cfg.connect_timeout))?
            .map_err(link_error)?;
        tracing::debug!(adapter = %id, peripheral = %peripheral.address(), "connected");
        Ok(Opened {
            adapter,
            peripheral,
        })
    }
}

/// Whether `p` is the peripheral `cfg` describes (every given key matches).
async fn matches(p: &Peripheral, cfg: &BleConfig) -> bool {
    if cfg.mac_address.is_some_and(|m| p.address() != m) {
        return false;
    }
    if cfg.name.is_none() && cfg.service_uuid.is_none() {
        return true;
    }
    // A peripheral that vanished since the listing is simply not it.
    let Ok(Some(props)) = p.properties().await else {
        return false;
    };
    cfg.name
        .as_ref()
        .is_none_or(|n| props.local_name.as_ref() == Some(n))
        && cfg.service_uuid.is_none_or(|u| props.services.contains(&u))
}

/// The peripheral among those BlueZ knows now.
async fn find(adapter: &Adapter, cfg: &BleConfig) -> DriverResult<Option<Peripheral>> {
    for p in adapter.peripherals().await.map_err(link_error)? {
        if matches(&p, cfg).await {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Scans for up to `cfg.scan_timeout`.
async fn scan(adapter: &Adapter, cfg: &BleConfig) -> DriverResult<Option<Peripheral>> {
    // A scan a cancelled call left running; an error only means none was.
    let _ = timeout(BUS_TIMEOUT, adapter.stop_scan()).await;
    let filter = ScanFilter {
        services: cfg.service_uuid.into_iter().collect(),
    };
    timeout(BUS_TIMEOUT, adapter.start_scan(filter))
        .await
        .map_err(|_| DriverError::Timeout(BUS_TIMEOUT))?
        .map_err(link_error)?;
    tracing::debug!(target_device = %cfg.target(), "scanning");
    let deadline = Instant::now() + cfg.scan_timeout;
    let found = loop {
        match find(adapter, cfg).await {
            Ok(Some(p)) => break Ok(Some(p)),
            Err(e) => break Err(e),
            Ok(None) if Instant::now() >= deadline => break Ok(None),
            Ok(None) => tokio::time::sleep(SCAN_POLL).await,
        }
    };
    let _ = timeout(BUS_TIMEOUT, adapter.stop_scan()).await;
    found
}
