//! # modbus-sim
//!
//! Simulated Modbus devices over TCP and RTU, built on tokio-modbus's server: for
//! tests (in process or as a binary), the demo and benchmarks.
//!
//! * Configured from YAML ([`SimConfig`]): per unit id, coils, discrete inputs,
//!   holding and input registers with initial values and dynamic patterns
//!   (counter, ramp, sine, random walk); writable tables keep what clients write.
//! * Several units may share a TCP address (a gateway); a request for a unit id
//!   that is not there gets exception 0x0B (gateway target failed to respond).
//! * Faults on demand ([`Simulator::set_faults`], [`Simulator::drop_connections`]):
//!   added latency, a unit that stops answering, exception responses, dropped
//!   connections. Out-of-range addresses, and holes in a unit's map
//!   ([`Missing`]), get IllegalDataAddress.
//! * Scale: one task per connection, tables are plain vectors; thousands of units
//!   on consecutive ports are cheap ([`SimConfig::generated`]).

pub mod config;
mod unit;

pub use config::{
    Addresses, DeviceConfig, Faults, Missing, Pattern, Point, RtuConfig, SimConfig, SimType,
};
pub use unit::{Table, Unit};

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_modbus::{ExceptionCode, Response, SlaveRequest};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

type Shared<T> = Arc<Mutex<T>>;
/// Units that listen at one place: (device name, unit id, state).
type Group = Vec<(String, u8, Shared<Unit>)>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One listening endpoint and the units behind it.
#[derive(Clone)]
struct Service {
    units: Arc<HashMap<u8, Shared<Unit>>>,
}

impl tokio_modbus::server::Service for Service {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let Some(unit) = self.units.get(&req.slave).cloned() else {
            return Box::pin(async { Err(ExceptionCode::GatewayTargetDevice) });
        };
        Box::pin(async move {
            let faults = lock(&unit).faults.clone();
            if faults.latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
            }
            if faults.silent {
                return Ok(None);
            }
            lock(&unit).handle(req.request).map(Some)
        })
    }
}

/// A TCP stream that ends when its endpoint's connections are dropped on demand.
struct Droppable<S> {
    inner: S,
    dropped: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Droppable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.dropped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "dropped by the simulator",
            )));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Droppable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Where a device can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A serial device path.
    Rtu(String),
}

struct Device {
    unit: Shared<Unit>,
    reach: Reach,
    drop_token: Shared<CancellationToken>,
}

/// Running simulated devices. Dropping it stops them.
pub struct Simulator {
    devices: HashMap<String, Device>,
    order: Vec<String>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("devices", &self.order)
            .finish()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Records the units of one listening place and builds the service that answers
/// for them, with the token that drops their connections.
fn register(
    devices: &mut HashMap<String, Device>,
    group: &Group,
    reach: &Reach,
) -> (Service, Shared<CancellationToken>) {
    let drop_token = Arc::new(Mutex::new(CancellationToken::new()));
    for (name, _, unit) in group {
        devices.insert(
            name.clone(),
            Device {
                unit: unit.clone(),
                reach: reach.clone(),
                drop_token: drop_token.clone(),
            },
        );
    }
    let units: HashMap<u8, Shared<Unit>> =
        group.iter().map(|(_, id, u)| (*id, u.clone())).collect();
    (
        Service {
            units: Arc::new(units),
        },
        drop_token,
    )
}

impl SimConfig {
    /// `devices` units on consecutive ports from `base_port` (0: any free ports),
    /// each with `registers` holding and input registers: even addresses count
    /// up every second, odd ones follow a sine.
    pub fn generated(devices: usize, base_port: u16, registers: u16) -> Self {
        let points = |table_offset: f64| {
            (0..registers)
                .map(|a| Point {
                    address: a,
                    value: Some(serde_json::json!(table_offset + f64::from(a))),
                    values: None,
                    data_type: SimType::Uint16,
                    pattern: Some(if a % 2 == 0 {
                        Pattern::Counter
                    } else {
                        Pattern::Sine
                    }),
                    min: Some(0.0),
                    max: Some(60_000.0),
                    step: Some(1.0),
                    period_ms: Some(if a % 2 == 0 { 1000 } else { 10_000 }),
                    amplitude: Some(100.0),
                })
                .collect::<Vec<_>>()
        };
        SimConfig {
            devices: (0..devices)
                .map(|i| DeviceConfig {
                    name: format!("sim-{i}"),
                    tcp: Some(format!(
                        "127.0.0.1:{}",
                        if base_port == 0 {
                            0
                        } else {
                            base_port + i as u16
                        }
                    )),
                    rtu: None,
                    unit: 1,
                    size: registers.max(1),
                    coils: Vec::new(),
                    discrete_inputs: Vec::new(),
                    holding: points(1000.0),
                    input: points(2000.0),
                    missing: Missing::default(),
                    faults: Faults::default(),
                })
                .collect(),
        }
    }
}

impl Simulator {
    /// Builds every unit and starts listening. Errors name the device.
    pub async fn start(cfg: SimConfig) -> io::Result<Simulator> {
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut devices = HashMap::new();
        let mut order = Vec::new();
        // Group units by where they listen.
        let mut tcp_groups: Vec<(String, Group)> = Vec::new();
        let mut rtu_groups: Vec<(RtuConfig, Group)> = Vec::new();
        for d in &cfg.devices {
            let unit = Arc::new(Mutex::new(Unit::new(d).map_err(io::Error::other)?));
            if devices.contains_key(&d.name) || order.contains(&d.name) {
                return Err(io::Error::other(format!(
                    "device name {} is used twice",
                    d.name
                )));
            }
            order.push(d.name.clone());
            let entry = (d.name.clone(), d.unit, unit);
            match (&d.tcp, &d.rtu) {
                (Some(addr), None) => match tcp_groups
                    .iter_mut()
                    .find(|(a, _)| a == addr && !addr.ends_with(":0"))
                {
                    Some((_, g)) => g.push(entry),
                    None => tcp_groups.push((addr.clone(), vec![entry])),
                },
                (None, Some(rtu)) => match rtu_groups.iter_mut().find(|(r, _)| r == rtu) {
                    Some((_, g)) => g.push(entry),
                    None => rtu_groups.push((rtu.clone(), vec![entry])),
                },
                _ => {
                    return Err(io::Error::other(format!(
                        "device {}: give exactly one of tcp or rtu",
                        d.name
                    )));
                }
            }
        }
        for (addr, group) in tcp_groups {
            let listener = TcpListener::bind(&addr)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("listening on {addr}: {e}")))?;
            let local = listener.local_addr()?;
            let (service, drop_token) = register(&mut devices, &group, &Reach::Tcp(local));
            let stop = shutdown.clone();
            tasks.spawn(async move {
                let server = tokio_modbus::server::tcp::Server::new(listener);
                let on_connected = |stream: tokio::net::TcpStream, _addr: SocketAddr| {
                    let service = service.clone();
                    let token = lock(&drop_token).clone();
                    async move {
                        let _ = stream.set_nodelay(true);
                        Ok(Some((
                            service,
                            Droppable {
                                inner: stream,
                                dropped: Box::pin(token.cancelled_owned()),
                            },
                        )))
                    }
                };
                let on_error = |e: io::Error| tracing::debug!(error = %e, "connection ended");
                if let Err(e) = server
                    .serve_until(&on_connected, on_error, stop.cancelled_owned())
                    .await
                {
                    tracing::error!(%local, error = %e, "Modbus TCP server failed");
                }
            });
        }
        for (rtu, group) in rtu_groups {
            let server = tokio_modbus::server::rtu::Server::new_from_path(&rtu.path, rtu.baud)
                .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", rtu.path)))?;
            let (service, _) = register(&mut devices, &group, &Reach::Rtu(rtu.path.clone()));
            let stop = shutdown.clone();
            let path = rtu.path.clone();
            tasks.spawn(async move {
                if let Err(e) = server.serve_until(service, stop.cancelled_owned()).await {
                    tracing::error!(%path, error = %e, "Modbus RTU server failed");
                }
            });
        }
        tasks.close();
        Ok(Simulator {
            devices,
            order,
            shutdown,
            tasks,
        })
    }

    /// Device names, in configuration order.
    pub fn names(&self) -> &[String] {
        &self.order
    }

    /// Where `device` listens.
    pub fn reach(&self, device: &str) -> Option<&Reach> {
        self.devices.get(device).map(|d| &d.reach)
    }

    /// The TCP address of `device`.
    pub fn tcp_addr(&self, device: &str) -> Option<SocketAddr> {
        match self.reach(device)? {
            Reach::Tcp(a) => Some(*a),
            Reach::Rtu(_) => None,
        }
    }

    /// A device's current faults.
    pub fn faults(&self, device: &str) -> Option<Faults> {
        self.devices
            .get(device)
            .map(|d| lock(&d.unit).faults.clone())
    }

    /// Replaces a device's faults. Returns false for an unknown device.
    pub fn set_faults(&self, device: &str, faults: Faults) -> bool {
        self.devices
            .get(device)
            .map(|d| lock(&d.unit).faults = faults)
            .is_some()
    }

    /// Closes every open connection to the device's TCP endpoint (new ones are
    /// accepted). Returns false for an unknown device.
    pub fn drop_connections(&self, device: &str) -> bool {
        let Some(d) = self.devices.get(device) else {
            return false;
        };
        let mut token = lock(&d.drop_token);
        token.cancel();
        *token = CancellationToken::new();
        true
    }

    /// Current words (or bits as 0/1) of a table.
    pub fn read(&self, device: &str, table: Table, start: u16, count: u16) -> Option<Vec<u16>> {
        lock(&self.devices.get(device)?.unit).peek(table, start, count)
    }

    /// Sets a register or bit as a client write would.
    pub fn write(&self, device: &str, table: Table, addr: u16, value: u16) -> bool {
        self.devices
            .get(device)
            .is_some_and(|d| lock(&d.unit).poke(table, addr, value))
    }

    /// Stops every server and waits for them.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let tasks = self.tasks.clone();
        drop(self);
        tasks.wait().await;
    }
}
