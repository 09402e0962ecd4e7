//! The latest known state of a device, shared between its task and readers
//! (GetDevice, tests, the data panel).

use std::time::SystemTime;

use crate::driver::DeviceState;
use crate::value::Value;

/// What happened to a property's desired value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredOutcome {
    /// Waiting to be written (device not connected yet, or a link failure to retry).
    Pending,
    /// Written to the device.
    Applied,
    /// Refused: by validation against the model or by the device. Not retried
    /// until the desired value changes.
    Rejected(String),
}

impl DesiredOutcome {
    /// Short status word for twin metadata (`pending`, `applied`, `rejected`).
    pub fn status(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Applied => "applied",
            Self::Rejected(_) => "rejected",
        }
    }
}

/// One property's latest state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PropertySnapshot {
    /// Property name.
    pub name: String,
    /// Last value read (typed as the model says).
    pub reported: Option<Value>,
    /// When it was read.
    pub reported_at: Option<SystemTime>,
    /// Desired value text and what happened to it.
    pub desired: Option<(String, DesiredOutcome)>,
    /// Last read or configuration error, cleared by the next good read.
    pub error: Option<String>,
}

/// A device's latest state.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSnapshot {
    /// Connectivity.
    pub state: DeviceState,
    /// Device-level error (bad protocol config, last connect failure).
    pub error: Option<String>,
    /// Properties, in the device's order.
    pub properties: Vec<PropertySnapshot>,
}

impl DeviceSnapshot {
    /// A property by name.
    pub fn property(&self, name: &str) -> Option<&PropertySnapshot> {
        self.properties.iter().find(|p| p.name == name)
    }
}

impl Default for DeviceSnapshot {
    fn default() -> Self {
        Self {
            state: DeviceState::Unknown,
            error: None,
            properties: Vec::new(),
        }
    }
}
