//! Connections, shared: one TCP connection per endpoint for every device behind
//! it (a gateway with many unit ids), one owner per serial port serializing all
//! its devices. Requests take turns on the link ([`mapper_sdk::link::SharedLink`]:
//! units that answer go before units that have not, round robin within each);
//! each request's timeout starts when it gets its turn, so a unit that does not
//! answer holds the link for at most that long, and a healthy unit waits behind
//! at most one such request however many dead units share the line. After a
//! timeout or a transport error the connection is dropped (a late answer would
//! otherwise be taken for the next request's) and reopened by the next request.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use mapper_sdk::link::SharedLink;
use mapper_sdk::{DeviceFault, DriverError, DriverResult};
use tokio::time::timeout;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};

use crate::config::{Endpoint, Parity};

/// Every open link of one [`crate::ModbusDriver`] by where it goes (host and
/// port, or serial path); entries die with their last device.
#[derive(Debug, Default)]
pub struct Pool {
    links: Mutex<HashMap<String, Weak<Link>>>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Link>>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Links in use.
    pub fn len(&self) -> usize {
        self.lock()
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// Whether no link is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shared link for `endpoint` (opened lazily by its first request).
    pub fn get(&self, endpoint: &Endpoint) -> Arc<Link> {
        let mut pool = self.lock();
        pool.retain(|_, w| w.strong_count() > 0);
        let key = pool_key(endpoint);
        if let Some(link) = pool.get(&key).and_then(Weak::upgrade) {
            if link.endpoint != *endpoint {
                tracing::warn!(
                    port = %key, using = ?link.endpoint, asked = ?endpoint,
                    "devices on one serial port disagree on line settings; the first device's settings are used"
                );
            }
            return link;
        }
        let link = Arc::new(Link {
            endpoint: endpoint.clone(),
            ctx: SharedLink::new(None),
            requests: AtomicU64::new(0),
            connects: AtomicU64::new(0),
        });
        pool.insert(key, Arc::downgrade(&link));
        link
    }
}

/// Pool key: a serial port has one owner whatever line settings devices ask for.
fn pool_key(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Tcp { host, port } => format!("tcp://{host}:{port}"),
        Endpoint::Rtu { path, .. } => format!("rtu://{path}"),
    }
}

/// A shared connection to one endpoint.
pub struct Link {
    endpoint: Endpoint,
    ctx: SharedLink<Option<Context>>,
    requests: AtomicU64,
    connects: AtomicU64,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("endpoint", &self.endpoint)
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .field("connects", &self.connects.load(Ordering::Relaxed))
            .finish()
    }
}

/// The Modbus exception as a device fault, with its code.
pub(crate) fn exception_fault(e: ExceptionCode) -> DriverError {
    DriverError::Device(DeviceFault::with_code(
        u32::from(u8::from(e)),
        format!("Modbus exception: {e}"),
    ))
}

impl Link {
    /// Requests sent on this link so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Connections opened so far.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    async fn open(&self) -> io::Result<Context> {
        self.connects.fetch_add(1, Ordering::Relaxed);
        match &self.endpoint {
            Endpoint::Tcp { host, port } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Ok(tokio_modbus::client::tcp::attach(stream))
            }
            Endpoint::Rtu {
                path,
                baud,
                data_bits,
                parity,
                stop_bits,
            } => {
                use tokio_serial::SerialPortBuilderExt;
                let port = tokio_serial::new(path, *baud)
                    .data_bits(match data_bits {
                        5 => tokio_serial::DataBits::Five,
                        6 => tokio_serial::DataBits::Six,
                        7 => tokio_serial::DataBits::Seven,
                        _ => tokio_serial::DataBits::Eight,
                    })
                    .parity(match parity {
                        Parity::None => tokio_serial::Parity::None,
                        Parity::Even => tokio_serial::Parity::Even,
                        Parity::Odd => tokio_serial::Parity::Odd,
                    })
                    .stop_bits(if *stop_bits == 2 {
                        tokio_serial::StopBits::Two
                    } else {
                        tokio_serial::StopBits::One
                    })
                    .open_native_async()
                    .map_err(io::Error::other)?;
                Ok(tokio_modbus::client::rtu::attach(port))
            }
        }
    }

    /// Opens the connection now if it is not open (to report a dead endpoint early).
    pub async fn ensure_open(&self, deadline: Duration) -> DriverResult<()> {
        let mut guard = self.ctx.turn().await;
        if guard.is_none() {
            *guard = Some(self.open_within(deadline).await?);
        }
        Ok(())
    }

    async fn open_within(&self, deadline: Duration) -> DriverResult<Context> {
        match timeout(deadline, self.open()).await {
            Ok(Ok(ctx)) => Ok(ctx),
            Ok(Err(e)) => Err(DriverError::io(io::Error::new(
                e.kind(),
                format!("{}: {e}", self.endpoint),
            ))),
            Err(_) => Err(DriverError::Timeout(deadline)),
        }
    }

    /// Sends one request to `unit` and waits at most `deadline` for the answer.
    ///
    /// Cancellation safe in the sense that a dropped call leaves the link
    /// closed, never half-used: the next request reopens it.
    pub async fn call(
        &self,
        unit: u8,
        req: Request<'_>,
        deadline: Duration,
    ) -> DriverResult<Response> {
        let mut guard = self.ctx.turn().await;
        // The context stays out of the slot until the answer is in: a cancelled or
        // failed call leaves the link closed, never with a request in flight.
        let mut ctx = match guard.take() {
            Some(ctx) => ctx,
            None => self.open_within(deadline).await?,
        };
        ctx.set_slave(Slave(unit));
        self.requests.fetch_add(1, Ordering::Relaxed);
        match timeout(deadline, ctx.call(req)).await {
            Err(_) => Err(DriverError::Timeout(deadline)),
            Ok(Err(tokio_modbus::Error::Transport(e))) => Err(DriverError::io(e)),
            Ok(Err(tokio_modbus::Error::Protocol(e))) => Err(DriverError::Protocol(e.to_string())),
            Ok(Ok(Err(exception))) => {
                *guard = Some(ctx);
                Err(exception_fault(exception))
            }
            Ok(Ok(Ok(resp))) => {
                *guard = Some(ctx);
                Ok(resp)
            }
        }
    }
}
