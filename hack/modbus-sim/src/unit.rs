//! One simulated unit: four tables, dynamic points, faults.

use std::time::Instant;

use rand::RngExt;
use tokio_modbus::{ExceptionCode, Request, Response};

use crate::config::{DeviceConfig, Faults, Pattern, Point, SimType};

/// A table of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Coils.
    Coils,
    /// Discrete inputs.
    DiscreteInputs,
    /// Holding registers.
    Holding,
    /// Input registers.
    Input,
}

#[derive(Debug, Clone)]
struct Dynamic {
    table: Table,
    address: u16,
    ty: SimType,
    pattern: Pattern,
    base: f64,
    min: f64,
    max: f64,
    step: f64,
    period_s: f64,
    amplitude: f64,
}

/// A unit's state.
#[derive(Debug)]
pub struct Unit {
    /// Device name.
    pub name: String,
    coils: Vec<bool>,
    discrete: Vec<bool>,
    holding: Vec<u16>,
    input: Vec<u16>,
    dynamics: Vec<Dynamic>,
    /// Holes in the map: (table, first, last), both included.
    missing: Vec<(Table, u16, u16)>,
    /// Current faults.
    pub faults: Faults,
    started: Instant,
}

fn number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
        serde_json::Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

impl Unit {
    /// Builds a unit from its configuration; errors name the point.
    pub fn new(cfg: &DeviceConfig) -> Result<Self, String> {
        let size = usize::from(cfg.size);
        let mut u = Unit {
            name: cfg.name.clone(),
            coils: vec![false; size],
            discrete: vec![false; size],
            holding: vec![0; size],
            input: vec![0; size],
            dynamics: Vec::new(),
            missing: Vec::new(),
            faults: cfg.faults.clone(),
            started: Instant::now(),
        };
        for (table, list) in [
            (Table::Coils, &cfg.missing.coils),
            (Table::DiscreteInputs, &cfg.missing.discrete_inputs),
            (Table::Holding, &cfg.missing.holding),
            (Table::Input, &cfg.missing.input),
        ] {
            for a in list {
                let (first, last) = a.bounds();
                if first > last {
                    return Err(format!(
                        "device {} missing {table:?} [{first}, {last}]: first is above last",
                        cfg.name
                    ));
                }
                u.missing.push((table, first, last));
            }
        }
        for (table, points) in [
            (Table::Coils, &cfg.coils),
            (Table::DiscreteInputs, &cfg.discrete_inputs),
            (Table::Holding, &cfg.holding),
            (Table::Input, &cfg.input),
        ] {
            for p in points {
                u.init_point(table, p).map_err(|e| {
                    format!("device {} {table:?} address {}: {e}", cfg.name, p.address)
                })?;
            }
        }
        Ok(u)
    }

    fn init_point(&mut self, table: Table, p: &Point) -> Result<(), String> {
        let bits = matches!(table, Table::Coils | Table::DiscreteInputs);
        let len = if bits {
            self.coils.len()
        } else {
            self.holding.len()
        };
        let value = p
            .value
            .as_ref()
            .map(|v| number(v).ok_or_else(|| format!("value {v} is not a number or boolean")))
            .transpose()?;
        if let Some(raw) = &p.values {
            if usize::from(p.address) + raw.len() > len {
                return Err("values run past the table size".into());
            }
            for (i, v) in raw.iter().enumerate() {
                self.set_raw(table, p.address + i as u16, *v as u16);
            }
        }
        let ty = if bits { SimType::Uint16 } else { p.data_type };
        if usize::from(p.address) + usize::from(ty.registers()) > len {
            return Err("address past the table size".into());
        }
        if let Some(x) = value {
            self.store(table, p.address, ty, x);
        }
        if let Some(pattern) = p.pattern {
            let min = p.min.unwrap_or(0.0);
            let max = p.max.unwrap_or(if bits { 1.0 } else { 65535.0 });
            if min > max {
                return Err(format!("min {min} is above max {max}"));
            }
            self.dynamics.push(Dynamic {
                table,
                address: p.address,
                ty,
                pattern,
                base: value.unwrap_or(min),
                min,
                max,
                step: p.step.unwrap_or(1.0),
                period_s: p.period_ms.unwrap_or(1000).max(1) as f64 / 1000.0,
                amplitude: p.amplitude.unwrap_or(1.0),
            });
        }
        Ok(())
    }

    fn set_raw(&mut self, table: Table, addr: u16, v: u16) {
        let a = usize::from(addr);
        match table {
            Table::Coils => self.coils[a] = v != 0,
            Table::DiscreteInputs => self.discrete[a] = v != 0,
            Table::Holding => self.holding[a] = v,
            Table::Input => self.input[a] = v,
        }
    }

    fn store(&mut self, table: Table, addr: u16, ty: SimType, x: f64) {
        if matches!(table, Table::Coils | Table::DiscreteInputs) {
            self.set_raw(table, addr, u16::from(x != 0.0));
            return;
        }
        for (i, w) in ty.encode(x).into_iter().enumerate() {
            self.set_raw(table, addr + i as u16, w);
        }
    }

    fn current(&self, table: Table, addr: u16, ty: SimType) -> f64 {
        let a = usize::from(addr);
        match table {
            Table::Coils => f64::from(u8::from(self.coils[a])),
            Table::DiscreteInputs => f64::from(u8::from(self.discrete[a])),
            Table::Holding => ty.decode(&self.holding[a..]),
            Table::Input => ty.decode(&self.input[a..]),
        }
    }

    /// Brings the dynamic points in `[start, start+count)` of `table` up to date.
    fn refresh(&mut self, table: Table, start: u16, count: u16) {
        let t = self.started.elapsed().as_secs_f64();
        let end = u32::from(start) + u32::from(count);
        for i in 0..self.dynamics.len() {
            let d = self.dynamics[i].clone();
            if d.table != table
                || u32::from(d.address) + u32::from(d.ty.registers()) <= u32::from(start)
                || u32::from(d.address) >= end
            {
                continue;
            }
            let x = match d.pattern {
                Pattern::Counter => {
                    let span = d.max - d.min + d.step;
                    let raw = d.base - d.min + d.step * (t / d.period_s).floor();
                    d.min
                        + if span > 0.0 {
                            raw.rem_euclid(span)
                        } else {
                            0.0
                        }
                }
                Pattern::Ramp => d.min + (d.max - d.min) * ((t % d.period_s) / d.period_s),
                Pattern::Sine => {
                    d.base + d.amplitude * (std::f64::consts::TAU * t / d.period_s).sin()
                }
                Pattern::RandomWalk => {
                    let cur = self.current(table, d.address, d.ty);
                    let delta = rand::rng().random_range(-1.0..=1.0) * d.step;
                    (cur + delta).clamp(d.min, d.max)
                }
            };
            self.store(table, d.address, d.ty, x);
        }
    }

    /// Reads words or bits for tests and tools.
    pub fn peek(&mut self, table: Table, start: u16, count: u16) -> Option<Vec<u16>> {
        let (s, e) = (usize::from(start), usize::from(start) + usize::from(count));
        self.refresh(table, start, count);
        Some(match table {
            Table::Coils => self
                .coils
                .get(s..e)?
                .iter()
                .map(|b| u16::from(*b))
                .collect(),
            Table::DiscreteInputs => self
                .discrete
                .get(s..e)?
                .iter()
                .map(|b| u16::from(*b))
                .collect(),
            Table::Holding => self.holding.get(s..e)?.to_vec(),
            Table::Input => self.input.get(s..e)?.to_vec(),
        })
    }

    /// Sets a register or bit, as a client write would.
    pub fn poke(&mut self, table: Table, addr: u16, v: u16) -> bool {
        if usize::from(addr) >= self.holding.len() {
            return false;
        }
        self.dynamics.retain(|d| {
            !(d.table == table && d.address <= addr && addr < d.address + d.ty.registers())
        });
        self.set_raw(table, addr, v);
        true
    }

    fn range(
        &self,
        table: Table,
        start: u16,
        count: u16,
        len: usize,
        max: u16,
    ) -> Result<std::ops::Range<usize>, ExceptionCode> {
        if count == 0 || count > max {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let (s, e) = (usize::from(start), usize::from(start) + usize::from(count));
        let hole = self.missing.iter().any(|&(t, first, last)| {
            t == table && usize::from(first) < e && s <= usize::from(last)
        });
        if e > len || hole {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        Ok(s..e)
    }

    /// Answers one request.
    pub fn handle(&mut self, req: Request<'_>) -> Result<Response, ExceptionCode> {
        if let Some(code) = self.faults.exception {
            return Err(ExceptionCode::new(code));
        }
        match req {
            Request::ReadCoils(a, n) => {
                let r = self.range(Table::Coils, a, n, self.coils.len(), 2000)?;
                self.refresh(Table::Coils, a, n);
                Ok(Response::ReadCoils(self.coils[r].to_vec()))
            }
            Request::ReadDiscreteInputs(a, n) => {
                let r = self.range(Table::DiscreteInputs, a, n, self.discrete.len(), 2000)?;
                self.refresh(Table::DiscreteInputs, a, n);
                Ok(Response::ReadDiscreteInputs(self.discrete[r].to_vec()))
            }
            Request::ReadHoldingRegisters(a, n) => {
                let r = self.range(Table::Holding, a, n, self.holding.len(), 125)?;
                self.refresh(Table::Holding, a, n);
                Ok(Response::ReadHoldingRegisters(self.holding[r].to_vec()))
            }
            Request::ReadInputRegisters(a, n) => {
                let r = self.range(Table::Input, a, n, self.input.len(), 125)?;
                self.refresh(Table::Input, a, n);
                Ok(Response::ReadInputRegisters(self.input[r].to_vec()))
            }
            Request::WriteSingleCoil(a, v) => {
                self.range(Table::Coils, a, 1, self.coils.len(), 1)?;
                self.poke(Table::Coils, a, u16::from(v));
                Ok(Response::WriteSingleCoil(a, v))
            }
            Request::WriteMultipleCoils(a, vs) => {
                self.range(Table::Coils, a, vs.len() as u16, self.coils.len(), 1968)?;
                for (i, v) in vs.iter().enumerate() {
                    self.poke(Table::Coils, a + i as u16, u16::from(*v));
                }
                Ok(Response::WriteMultipleCoils(a, vs.len() as u16))
            }
            Request::WriteSingleRegister(a, v) => {
                self.range(Table::Holding, a, 1, self.holding.len(), 1)?;
                self.poke(Table::Holding, a, v);
                Ok(Response::WriteSingleRegister(a, v))
            }
            Request::WriteMultipleRegisters(a, vs) => {
                self.range(Table::Holding, a, vs.len() as u16, self.holding.len(), 123)?;
                for (i, v) in vs.iter().enumerate() {
                    self.poke(Table::Holding, a + i as u16, *v);
                }
                Ok(Response::WriteMultipleRegisters(a, vs.len() as u16))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(yaml: &str) -> Unit {
        let cfg: DeviceConfig = yaml_serde::from_str(yaml).unwrap();
        Unit::new(&cfg).unwrap()
    }

    #[test]
    fn values_types_and_out_of_range() {
        let mut u = unit(
            "name: u\nsize: 100\nholding:\n  - {address: 0, value: -2, dataType: int16}\n  - {address: 1, value: 1.5, dataType: float32}\n  - {address: 5, values: [7, 8]}\ncoils:\n  - {address: 3, value: true}\n",
        );
        assert_eq!(
            u.handle(Request::ReadHoldingRegisters(0, 3)),
            Ok(Response::ReadHoldingRegisters(vec![0xFFFE, 0x3FC0, 0]))
        );
        assert_eq!(
            u.handle(Request::ReadHoldingRegisters(5, 2)),
            Ok(Response::ReadHoldingRegisters(vec![7, 8]))
        );
        assert_eq!(
            u.handle(Request::ReadCoils(2, 2)),
            Ok(Response::ReadCoils(vec![false, true]))
        );
        assert_eq!(
            u.handle(Request::ReadHoldingRegisters(99, 2)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            u.handle(Request::ReadHoldingRegisters(0, 126)),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            u.handle(Request::WriteSingleRegister(100, 1)),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }

    #[test]
    fn writes_stick_and_stop_patterns() {
        let mut u =
            unit("name: u\nholding:\n  - {address: 0, pattern: sine, value: 100, amplitude: 50}\n");
        u.handle(Request::WriteSingleRegister(0, 7)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            u.handle(Request::ReadHoldingRegisters(0, 1)),
            Ok(Response::ReadHoldingRegisters(vec![7]))
        );
    }

    #[test]
    fn patterns_stay_in_bounds() {
        let mut u = unit(
            "name: u\ninput:\n  - {address: 0, pattern: randomWalk, value: 50, min: 40, max: 60, step: 5}\n  - {address: 1, pattern: counter, value: 3, min: 0, max: 10, periodMs: 1}\n",
        );
        for _ in 0..200 {
            let Ok(Response::ReadInputRegisters(w)) = u.handle(Request::ReadInputRegisters(0, 2))
            else {
                panic!()
            };
            assert!((40..=60).contains(&w[0]), "{w:?}");
            assert!(w[1] <= 10, "{w:?}");
        }
    }

    #[test]
    fn exception_fault() {
        let mut u = unit("name: u\nfaults: {exception: 4}\n");
        assert_eq!(
            u.handle(Request::ReadHoldingRegisters(0, 1)),
            Err(ExceptionCode::ServerDeviceFailure)
        );
    }

    #[test]
    fn missing_addresses_are_holes() {
        let mut u = unit(
            "name: u\nsize: 12000\nholding:\n  - {address: 11174, values: [230, 0, 50, 7]}\nmissing:\n  holding: [11175, [11180, 11189]]\n  coils: [3]\n  discreteInputs: [[5, 6]]\n",
        );
        let hr = |u: &mut Unit, a, n| u.handle(Request::ReadHoldingRegisters(a, n));
        assert_eq!(
            hr(&mut u, 11174, 1),
            Ok(Response::ReadHoldingRegisters(vec![230]))
        );
        assert_eq!(
            hr(&mut u, 11176, 2),
            Ok(Response::ReadHoldingRegisters(vec![50, 7]))
        );
        for (a, n) in [(11174, 4), (11175, 1), (11179, 2), (11189, 1), (11170, 30)] {
            assert_eq!(
                hr(&mut u, a, n),
                Err(ExceptionCode::IllegalDataAddress),
                "{a}+{n}"
            );
        }
        assert!(hr(&mut u, 11190, 5).is_ok());
        assert_eq!(
            u.handle(Request::WriteSingleRegister(11175, 1)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            u.handle(Request::ReadCoils(2, 2)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert!(u.handle(Request::ReadCoils(4, 2)).is_ok());
        assert_eq!(
            u.handle(Request::ReadDiscreteInputs(4, 4)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert!(u.handle(Request::ReadDiscreteInputs(7, 1)).is_ok());
        // Other tables are whole.
        assert!(u.handle(Request::ReadInputRegisters(11175, 1)).is_ok());
        let bad: DeviceConfig =
            yaml_serde::from_str("name: u\nmissing: {holding: [[9, 3]]}\n").unwrap();
        assert!(Unit::new(&bad).unwrap_err().contains("first is above last"));
    }
}
