//! The latest known state of a device, shared between its task and readers
//! (GetDevice, tests, the data panel).

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::driver::DeviceState;

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
    /// Last value read, as twin text.
    pub reported: Option<String>,
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
    /// Properties by name.
    pub properties: BTreeMap<String, PropertySnapshot>,
}

impl Default for DeviceSnapshot {
    fn default() -> Self {
        Self {
            state: DeviceState::Unknown,
            error: None,
            properties: BTreeMap::new(),
        }
    }
}
