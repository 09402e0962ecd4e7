//! A simulated device computed inside the sandbox: no I/O capability, only
//! the host's monotonic clock. The example of a pure-compute plugin.
//!
//! Protocol configData (besides the host's `plugin` key): `name` (text the
//! `name` pattern reads back, default `sim`), `failConnect` (`true`: connect
//! fails with a transport error, for tests of the retry path).
//!
//! Visitor configData:
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `pattern` | `constant`, `counter`, `sine`, `setpoint`, `follow` or `name` | `constant` |
//! | `value` | constant value; counter and set-point start; sine centre | `0` |
//! | `step` | counter increment per read | `1` |
//! | `amplitude`, `periodMs` | sine amplitude and period (ms) | `1`, `60000` |
//! | `key` | the set-point a `follow` property approaches; shared by `setpoint`s with the same key | `default` |
//!
//! `setpoint` is writable (numbers and booleans); `follow` moves a tenth of
//! the way towards its set-point on every read, like a room warming up.

use std::collections::BTreeMap;

use mapper_wasm_guest::{Driver, DriverError, DriverResult, Value, export_driver, host};
use serde::Deserialize;

/// Protocol configData.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SimConfig {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    fail_connect: bool,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "camelCase")]
enum Pattern {
    Constant,
    Counter,
    Sine,
    Setpoint,
    Follow,
    Name,
}

/// Visitor configData.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SimAddress {
    #[serde(default = "constant")]
    pattern: Pattern,
    #[serde(default)]
    value: f64,
    #[serde(default = "one")]
    step: f64,
    #[serde(default = "one")]
    amplitude: f64,
    #[serde(default = "minute")]
    period_ms: f64,
    #[serde(default = "default_key")]
    key: String,
}

fn constant() -> Pattern {
    Pattern::Constant
}
fn one() -> f64 {
    1.0
}
fn minute() -> f64 {
    60_000.0
}
fn default_key() -> String {
    "default".into()
}

struct Sim {
    name: String,
    /// Counter values and set-points by key (counters by `counter:<key>`).
    state: BTreeMap<String, f64>,
    /// The value each `follow` property has reached, by key.
    followed: BTreeMap<String, f64>,
}

fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::Int(x as i64)
    } else {
        Value::Float((x * 1000.0).round() / 1000.0)
    }
}

impl Driver for Sim {
    type Config = SimConfig;
    type Address = SimAddress;

    fn connect(config: SimConfig) -> DriverResult<Self> {
        if config.fail_connect {
            return Err(DriverError::transport("simulated connection failure"));
        }
        mapper_wasm_guest::debug!("simulated device connected");
        Ok(Sim {
            name: config.name.unwrap_or_else(|| "sim".into()),
            state: BTreeMap::new(),
            followed: BTreeMap::new(),
        })
    }

    fn read(&mut self, at: &SimAddress) -> DriverResult<Value> {
        Ok(match at.pattern {
            Pattern::Constant => number(at.value),
            Pattern::Counter => {
                let v = self
                    .state
                    .entry(format!("counter:{}", at.key))
                    .or_insert(at.value - at.step);
                *v += at.step;
                number(*v)
            }
            Pattern::Sine => {
                let t = host::now().as_secs_f64() * 1000.0;
                let phase = 2.0 * std::f64::consts::PI * t / at.period_ms.max(1.0);
                number(at.value + at.amplitude * phase.sin())
            }
            Pattern::Setpoint => number(*self.state.entry(at.key.clone()).or_insert(at.value)),
            Pattern::Follow => {
                let target = self.state.get(&at.key).copied().unwrap_or(at.value);
                let v = self.followed.entry(at.key.clone()).or_insert(at.value);
                *v += (target - *v) / 10.0;
                number(*v)
            }
            Pattern::Name => Value::Text(self.name.clone()),
        })
    }

    fn write(&mut self, at: &SimAddress, value: Value) -> DriverResult<()> {
        if at.pattern != Pattern::Setpoint {
            return Err(DriverError::value(
                "only `setpoint` properties are writable",
            ));
        }
        let v = value
            .as_f64()
            .ok_or_else(|| DriverError::value("a set-point is a number or a boolean"))?;
        self.state.insert(at.key.clone(), v);
        Ok(())
    }
}

export_driver!(Sim);
