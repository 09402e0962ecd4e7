//! # mapper-modbus
//!
//! A [`mapper_sdk::Driver`] for Modbus TCP and RTU over `tokio-modbus` (and
//! `tokio-serial` for RTU): no hand-written Modbus framing.
//!
//! * Protocol and visitor configData exactly as KubeEdge's v1beta1 Modbus
//!   examples write them ([`ModbusConfig`], [`ModbusAddress`]), plus additive
//!   extensions (`dataType`, `bit`, `valueOffset`, `stringEncoding`, planning
//!   limits). Unknown keys are warned about; wrong types are errors naming the
//!   device and key.
//! * Read planning ([`plan`]): per tick the due properties of a device become as
//!   few requests as the protocol allows (≤ 125 registers / ≤ 2000 bits each, a
//!   configurable gap allowance and request size). Each tick's request count is
//!   logged at debug level and counted ([`ModbusDevice::requests`]).
//! * Holes in a device's map: a merged request refused with exception 02, 03 or
//!   04 is split in two, recursively, down to single properties, so every
//!   property the device serves gets its value and the exception is charged
//!   only to the properties refused on their own (at most `2m − 1` requests
//!   for `m` properties). What the split shows (the refused ranges, the unasked
//!   addresses between parts that read fine) is remembered per driver value
//!   ([`ModbusDevice::holes`], [`Holes`]) and later plans avoid it; a reconnect
//!   or a config change (a new value from [`Driver::connect`]) starts from
//!   nothing. Other exceptions, timeouts and transport errors never split.
//!   Details in the `batch` module's source docs and the README.
//! * Scaled values are `raw × scale + valueOffset` rounded to the decimals the
//!   inputs imply ([`mapper_sdk::scale_linear`]): raw 217 at scale 0.1 reports
//!   `21.7`. Text ends at its first NUL byte ([`codec`]).
//! * Writes encode per data type, byte/word order and scale, use function code
//!   5/6 for one coil/register and 16 for several, and read the value back to
//!   confirm. Input registers and discrete inputs refuse writes.
//! * Connections are shared per endpoint ([`link`]): one TCP connection for all
//!   unit ids behind a gateway, one owner per serial port. Exceptions are device
//!   faults carrying the exception code; timeouts and transport errors drop the
//!   connection and the SDK reconnects with backoff.
//!
//! ```no_run
//! fn main() -> std::process::ExitCode { mapper_sdk::main("modbus", mapper_modbus::ModbusDriver::default()) }
//! ```
//!
//! ## Feature flags
//! None: TCP and RTU are both built (tokio-serial needs no system libraries).

mod batch;
pub mod codec;
pub mod config;
pub mod link;
pub mod plan;

pub use config::{
    DataType, Endpoint, ModbusAddress, ModbusConfig, PlanLimits, StringEncoding, Table,
};
pub use plan::Holes;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mapper_sdk::{
    DeviceClient, DeviceFault, Driver, DriverError, DriverResult, PropertyType, Value,
};
use tokio_modbus::{Request, Response};

use crate::link::{Link, Pool};

/// The Modbus protocol: opens [`ModbusDevice`]s and owns the connections they
/// share (one per TCP endpoint or serial port, see [`link`]). One value per
/// mapper; devices opened through different values share nothing.
#[derive(Debug, Default)]
pub struct ModbusDriver {
    pool: Pool,
}

impl ModbusDriver {
    /// The links open now, one per endpoint in use.
    pub fn open_links(&self) -> usize {
        self.pool.len()
    }
}

/// One Modbus device (a unit id on an endpoint).
///
/// A value lives from one [`Driver::connect`] to the next: what it learned about
/// the device (its [`Holes`]) goes with it, so a reconnect, or a config change
/// (which restarts the device), starts from nothing.
#[derive(Debug)]
pub struct ModbusDevice {
    link: Arc<Link>,
    unit: u8,
    timeout: Duration,
    limits: PlanLimits,
    requests: AtomicU64,
    /// Addresses merged reads must avoid; never locked across an `.await`.
    holes: Mutex<Holes>,
}

/// A poisoned lock only means a reader panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

enum Words {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
}

fn unexpected(resp: &Response) -> DriverError {
    DriverError::Protocol(format!("unexpected Modbus response {resp:?}"))
}

impl ModbusDevice {
    /// Requests this device has sent (reads, including those of split merged
    /// reads, writes and read-backs), since [`Driver::connect`].
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A copy of what this device was seen to refuse: address ranges (and cut
    /// points) that merged reads avoid, learned when a merged read was refused
    /// and split. Empty after [`Driver::connect`].
    pub fn holes(&self) -> Holes {
        lock(&self.holes).clone()
    }

    /// The shared link.
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    async fn call(&self, req: Request<'_>) -> DriverResult<Response> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.link.call(self.unit, req, self.timeout).await
    }

    async fn read_span(&self, table: Table, start: u16, count: u16) -> DriverResult<Words> {
        let resp = match table {
            Table::Coil => self.call(Request::ReadCoils(start, count)).await?,
            Table::DiscreteInput => self.call(Request::ReadDiscreteInputs(start, count)).await?,
            Table::Holding => {
                self.call(Request::ReadHoldingRegisters(start, count))
                    .await?
            }
            Table::Input => self.call(Request::ReadInputRegisters(start, count)).await?,
        };
        let short = |got: usize| {
            DriverError::Protocol(format!("asked for {count} values at {start}, got {got}"))
        };
        match resp {
            Response::ReadCoils(mut b) | Response::ReadDiscreteInputs(mut b) if table.is_bits() => {
                if b.len() < usize::from(count) {
                    return Err(short(b.len()));
                }
                b.truncate(usize::from(count));
                Ok(Words::Bits(b))
            }
            Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w)
                if !table.is_bits() =>
            {
                if w.len() < usize::from(count) {
                    return Err(short(w.len()));
                }
                Ok(Words::Registers(w))
            }
            other => Err(unexpected(&other)),
        }
    }

    fn decode(a: &ModbusAddress, words: &Words, pos: u16) -> DriverResult<Value> {
        let pos = usize::from(pos);
        match words {
            Words::Bits(b) => Ok(Value::Bool(b[pos])),
            Words::Registers(w) => {
                codec::decode_registers(a, &w[pos..pos + usize::from(a.register_count())])
            }
        }
    }
}

impl Driver for ModbusDriver {
    type Config = ModbusConfig;
    type Address = ModbusAddress;
    type Client = ModbusDevice;

    fn prepare_address(
        &self,
        addr: &mut ModbusAddress,
        model_type: Option<PropertyType>,
    ) -> DriverResult<()> {
        addr.prepare(model_type)
    }

    async fn connect(&self, cfg: &ModbusConfig) -> DriverResult<ModbusDevice> {
        let endpoint = cfg.endpoint()?;
        let link = self.pool.get(&endpoint);
        link.ensure_open(cfg.timeout()).await?;
        Ok(ModbusDevice {
            link,
            unit: cfg.unit(),
            timeout: cfg.timeout(),
            limits: cfg.limits(),
            requests: AtomicU64::new(0),
            holes: Mutex::new(Holes::new()),
        })
    }
}

impl DeviceClient for ModbusDevice {
    type Address = ModbusAddress;

    fn io_requests(&self) -> Option<u64> {
        Some(self.requests())
    }

    async fn read(&self, at: &ModbusAddress) -> DriverResult<Value> {
        self.read_batch(&[at])
            .await
            .pop()
            .unwrap_or_else(|| Err(DriverError::transport("no result")))
    }

    async fn read_batch(&self, at: &[&ModbusAddress]) -> Vec<DriverResult<Value>> {
        let items: Vec<(Table, u16, u16)> = at
            .iter()
            .map(|a| (a.register, a.offset, a.register_count()))
            .collect();
        let plan = plan::plan_around(&items, self.limits, &lock(&self.holes));
        let before = self.requests();
        let results = self.read_planned(at, &plan).await;
        tracing::debug!(
            properties = at.len(),
            planned = plan.spans.len(),
            requests = self.requests() - before,
            unit = self.unit,
            "modbus read tick"
        );
        results
    }

    async fn write(&self, at: &ModbusAddress, value: &Value) -> DriverResult<()> {
        if !at.register.writable() {
            return Err(DriverError::Value(format!(
                "{} is read-only",
                at.register.name()
            )));
        }
        let expected: Words = match at.register {
            Table::Coil => {
                let on = match value {
                    Value::Bool(b) => *b,
                    other => {
                        other.as_f64().ok_or_else(|| {
                            DriverError::Value(format!("{other:?} is not a boolean"))
                        })? != 0.0
                    }
                };
                self.call(Request::WriteSingleCoil(at.offset, on)).await?;
                Words::Bits(vec![on])
            }
            _ if at.data_type() == DataType::Bit => {
                let on = value
                    .as_f64()
                    .ok_or_else(|| DriverError::Value(format!("{value:?} is not a boolean")))?
                    != 0.0;
                let Words::Registers(cur) = self.read_span(Table::Holding, at.offset, 1).await?
                else {
                    return Err(DriverError::Protocol("expected registers".into()));
                };
                let mask = 1u16 << at.bit.unwrap_or(0);
                let word = if on { cur[0] | mask } else { cur[0] & !mask };
                self.call(Request::WriteSingleRegister(at.offset, word))
                    .await?;
                Words::Registers(vec![word])
            }
            _ => {
                let words = codec::encode_registers(at, value)?;
                if words.len() == 1 {
                    self.call(Request::WriteSingleRegister(at.offset, words[0]))
                        .await?;
                } else {
                    self.call(Request::WriteMultipleRegisters(
                        at.offset,
                        words.clone().into(),
                    ))
                    .await?;
                }
                Words::Registers(words)
            }
        };
        // Read back to confirm the device took the value.
        let got = self
            .read_span(at.register, at.offset, at.register_count())
            .await?;
        let same = match (&expected, &got) {
            (Words::Bits(a), Words::Bits(b)) => a[..] == b[..1],
            (Words::Registers(a), Words::Registers(b)) => a[..] == b[..a.len()],
            _ => false,
        };
        if !same {
            let shown = |w: &Words| match w {
                Words::Bits(b) => format!("{b:?}"),
                Words::Registers(r) => format!("{r:?}"),
            };
            return Err(DriverError::Device(DeviceFault::new(format!(
                "read back {} after writing {}",
                shown(&got),
                shown(&expected)
            ))));
        }
        Ok(())
    }
}
