//! # mapper-virtual
//!
//! A [`mapper_sdk::Driver`] for simulated devices, so the whole stack (EdgeCore,
//! DMI, the mapper runtime, twins, desired values) runs with no hardware.
//!
//! Protocol `virtual`. Protocol configData (all optional):
//!
//! | key | meaning |
//! |---|---|
//! | `connectDelayMs` | pretend connecting takes this long (ms) |
//! | `offline` | `true`: connecting always fails, the device stays offline |
//!
//! Visitor configData, one per property (unknown keys are an error naming them):
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `pattern` | `constant`, `counter`, `ramp`, `sine`, `randomWalk` or `setpoint` | `constant` |
//! | `value` | constant value; set-point start; sine centre; walk start (number, bool or text) | `0` |
//! | `amplitude` | sine amplitude | `1` |
//! | `periodMs` | sine and ramp period, ms | `60000` |
//! | `min`, `max` | ramp range; walk and counter bounds (counter wraps to `min`) | `0`, `100` |
//! | `step` | counter increment per read; largest walk step | `1` |
//! | `key` | share a set-point/counter between properties with the same key | the visitor itself |
//!
//! `setpoint` properties are writable: a write stores the value and reads return
//! it. Writing any other pattern is refused like a read-only register.
//!
//! ```no_run
//! fn main() -> std::process::ExitCode { mapper_sdk::main("virtual", mapper_virtual::VirtualDriver) }
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mapper_sdk::{DeviceClient, DeviceFault, Driver, DriverError, DriverResult, Value};
use serde::Deserialize;

/// Protocol configData of a virtual device.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualConfig {
    /// Simulated connect time, ms.
    #[serde(default)]
    pub connect_delay_ms: u64,
    /// When true the device never connects.
    #[serde(default)]
    pub offline: bool,
}

/// How a property's value evolves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Pattern {
    /// Always `value`.
    #[default]
    Constant,
    /// `value`, then `+step` per read, wrapping from `max` to `min`.
    Counter,
    /// Linear from `min` to `max` over `periodMs`, then again.
    Ramp,
    /// `value + amplitude·sin(2π·t/periodMs)`.
    Sine,
    /// Random steps of at most `step`, kept within `min..=max`.
    RandomWalk,
    /// Holds what was last written (starts at `value`).
    Setpoint,
}

/// Visitor configData of a virtual property.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualAddress {
    /// Value pattern.
    #[serde(default)]
    pub pattern: Pattern,
    /// Start/centre/constant value.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// Sine amplitude.
    #[serde(default = "one")]
    pub amplitude: f64,
    /// Sine and ramp period, ms.
    #[serde(default = "default_period")]
    pub period_ms: u64,
    /// Lower bound.
    #[serde(default)]
    pub min: f64,
    /// Upper bound.
    #[serde(default = "hundred")]
    pub max: f64,
    /// Counter increment, largest walk step.
    #[serde(default = "one")]
    pub step: f64,
    /// State key; properties with the same key share state.
    #[serde(default)]
    pub key: Option<String>,
}

fn one() -> f64 {
    1.0
}
fn hundred() -> f64 {
    100.0
}
fn default_period() -> u64 {
    60_000
}

impl VirtualAddress {
    fn state_key(&self) -> String {
        self.key.clone().unwrap_or_else(|| format!("{self:?}"))
    }

    fn initial(&self) -> Value {
        match &self.value {
            None | Some(serde_json::Value::Null) => Value::Float(0.0),
            Some(serde_json::Value::Bool(b)) => Value::Bool(*b),
            Some(serde_json::Value::Number(n)) => n
                .as_i64()
                .map(Value::Int)
                .unwrap_or(Value::Float(n.as_f64().unwrap_or(0.0))),
            Some(serde_json::Value::String(s)) => Value::String(s.clone()),
            Some(other) => Value::String(other.to_string()),
        }
    }

    fn initial_f64(&self) -> f64 {
        self.initial().as_f64().unwrap_or(0.0)
    }
}

/// The simulated protocol: a factory of [`VirtualDevice`]s (nothing is shared
/// between devices).
#[derive(Debug, Default, Clone, Copy)]
pub struct VirtualDriver;

/// A connected simulated device.
#[derive(Debug)]
pub struct VirtualDevice {
    started: Instant,
    state: Mutex<HashMap<String, Value>>,
}

impl VirtualDevice {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Value>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sample(&self, at: &VirtualAddress) -> DriverResult<Value> {
        if at.min > at.max {
            return Err(DriverError::Config(format!(
                "min {} is above max {}",
                at.min, at.max
            )));
        }
        let period = Duration::from_millis(at.period_ms.max(1)).as_secs_f64();
        let t = self.started.elapsed().as_secs_f64();
        Ok(match at.pattern {
            Pattern::Constant => at.initial(),
            Pattern::Sine => Value::Float(
                at.initial_f64() + at.amplitude * (std::f64::consts::TAU * t / period).sin(),
            ),
            Pattern::Ramp => Value::Float(at.min + (at.max - at.min) * ((t % period) / period)),
            Pattern::Counter => {
                let mut st = self.lock();
                let entry = st
                    .entry(at.state_key())
                    .or_insert_with(|| Value::Float(at.initial_f64() - at.step));
                let mut next = entry.as_f64().unwrap_or(0.0) + at.step;
                if next > at.max {
                    next = at.min;
                }
                *entry = Value::Float(next);
                Value::Float(next)
            }
            Pattern::RandomWalk => {
                let mut st = self.lock();
                let entry = st
                    .entry(at.state_key())
                    .or_insert_with(|| Value::Float(at.initial_f64()));
                let delta = (rand::random::<f64>() * 2.0 - 1.0) * at.step;
                let next = (entry.as_f64().unwrap_or(0.0) + delta).clamp(at.min, at.max);
                *entry = Value::Float(next);
                Value::Float(next)
            }
            Pattern::Setpoint => self
                .lock()
                .entry(at.state_key())
                .or_insert_with(|| at.initial())
                .clone(),
        })
    }
}

/// Three decimals are plenty for a simulation and keep twin values readable.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Driver for VirtualDriver {
    type Config = VirtualConfig;
    type Address = VirtualAddress;
    type Client = VirtualDevice;

    async fn connect(&self, cfg: &VirtualConfig) -> DriverResult<VirtualDevice> {
        if cfg.connect_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(cfg.connect_delay_ms)).await;
        }
        if cfg.offline {
            return Err(DriverError::transport(
                "simulated device is configured offline",
            ));
        }
        Ok(VirtualDevice {
            started: Instant::now(),
            state: Mutex::new(HashMap::new()),
        })
    }
}

impl DeviceClient for VirtualDevice {
    type Address = VirtualAddress;

    async fn read(&self, at: &VirtualAddress) -> DriverResult<Value> {
        Ok(match self.sample(at)? {
            Value::Float(f) => Value::Float(round3(f)),
            v => v,
        })
    }

    async fn write(&self, at: &VirtualAddress, value: &Value) -> DriverResult<()> {
        if at.pattern != Pattern::Setpoint {
            return Err(DriverError::Device(DeviceFault::new(format!(
                "{:?} property is read-only; use pattern setpoint for writable properties",
                at.pattern
            ))));
        }
        self.lock().insert(at.state_key(), value.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(v: serde_json::Value) -> VirtualAddress {
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test]
    async fn patterns() {
        let d = VirtualDriver
            .connect(&VirtualConfig::default())
            .await
            .unwrap();
        assert_eq!(
            d.read(&addr(serde_json::json!({"value": 7})))
                .await
                .unwrap(),
            Value::Int(7)
        );
        let c = addr(serde_json::json!({"pattern": "counter", "value": 1, "max": 3}));
        let got: Vec<f64> = futures_lite(&d, &c, 4).await;
        assert_eq!(got, vec![1.0, 2.0, 3.0, 0.0]);
        let s = addr(serde_json::json!({"pattern": "sine", "value": 10, "amplitude": 2}));
        let v = d.read(&s).await.unwrap().as_f64().unwrap();
        assert!((8.0..=12.0).contains(&v));
        let w = addr(
            serde_json::json!({"pattern": "randomWalk", "value": 50, "min": 40, "max": 60, "step": 5}),
        );
        for _ in 0..100 {
            let v = d.read(&w).await.unwrap().as_f64().unwrap();
            assert!((40.0..=60.0).contains(&v));
        }
        let r = addr(serde_json::json!({"pattern": "ramp", "min": 10, "max": 20}));
        let v = d.read(&r).await.unwrap().as_f64().unwrap();
        assert!((10.0..=20.0).contains(&v));
    }

    async fn futures_lite(d: &VirtualDevice, a: &VirtualAddress, n: usize) -> Vec<f64> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(d.read(a).await.unwrap().as_f64().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn setpoint_reads_back_writes_and_others_refuse() {
        let d = VirtualDriver
            .connect(&VirtualConfig::default())
            .await
            .unwrap();
        let sp = addr(serde_json::json!({"pattern": "setpoint", "value": 20}));
        assert_eq!(d.read(&sp).await.unwrap(), Value::Int(20));
        d.write(&sp, &Value::Int(42)).await.unwrap();
        assert_eq!(d.read(&sp).await.unwrap(), Value::Int(42));
        let sine = addr(serde_json::json!({"pattern": "sine"}));
        assert!(matches!(
            d.write(&sine, &Value::Int(1)).await,
            Err(DriverError::Device(_))
        ));
    }

    #[test]
    fn unknown_visitor_key_is_an_error() {
        let e = serde_json::from_value::<VirtualAddress>(serde_json::json!({"patern": "sine"}))
            .unwrap_err();
        assert!(e.to_string().contains("patern"));
        let e = serde_json::from_value::<VirtualAddress>(serde_json::json!({"pattern": "square"}))
            .unwrap_err();
        assert!(e.to_string().contains("square"));
    }

    #[tokio::test]
    async fn offline_config_fails_connect_as_link_failure() {
        let e = VirtualDriver
            .connect(&VirtualConfig {
                offline: true,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(e.is_link_failure());
    }
}
