//! Errors of drivers and of the SDK.

use std::sync::Arc;
use std::time::Duration;

/// What a device answered when it refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFault {
    /// Protocol-specific code (a Modbus exception code, an OPC UA status code), if any.
    pub code: Option<u32>,
    /// Human-readable reason.
    pub message: String,
}

impl DeviceFault {
    /// A fault with a message and no code.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            code: None,
            message: message.into(),
        }
    }

    /// A fault with a protocol code.
    pub fn with_code(code: u32, message: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for DeviceFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(c) => write!(f, "{} (code {c})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a driver call failed. The SDK's retry logic depends on the variant:
/// [`Device`](Self::Device), [`Config`](Self::Config) and [`Value`](Self::Value)
/// are that property's (or device's) error and are not cured by reconnecting;
/// [`Transport`](Self::Transport), [`Timeout`](Self::Timeout) and
/// [`Protocol`](Self::Protocol) are link failures: the SDK reconnects with
/// backoff ([`DriverError::is_link_failure`]).
///
/// Cheap to clone (an I/O error is shared), so one failed request can be every
/// property's error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    /// The device answered but refused (Modbus exception, OPC UA Bad* status).
    /// Retrying will not help.
    #[error("device refused: {0}")]
    Device(DeviceFault),
    /// The link failed (socket, serial port, radio). Retried after backoff.
    #[error("link failed: {0}")]
    Transport(#[source] Arc<std::io::Error>),
    /// No answer in time. Retried after backoff.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The answer broke the protocol (bad framing, a response to another
    /// request): the link cannot be trusted and is reopened.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The protocol or visitor configuration is invalid for this driver.
    #[error("bad config: {0}")]
    Config(String),
    /// The value cannot be written to or read from this address (wrong type,
    /// out of range, read-only table).
    #[error("bad value: {0}")]
    Value(String),
}

impl DriverError {
    /// True for errors that a reconnect may cure.
    pub fn is_link_failure(&self) -> bool {
        matches!(
            self,
            Self::Transport(_) | Self::Timeout(_) | Self::Protocol(_)
        )
    }

    /// A transport error from any message.
    pub fn transport(msg: impl Into<String>) -> Self {
        Self::Transport(Arc::new(std::io::Error::other(msg.into())))
    }

    /// A transport error from an I/O error.
    pub fn io(e: std::io::Error) -> Self {
        Self::Transport(Arc::new(e))
    }
}

impl From<std::io::Error> for DriverError {
    fn from(e: std::io::Error) -> Self {
        Self::io(e)
    }
}

/// Result of driver calls.
pub type DriverResult<T> = Result<T, DriverError>;

/// A device or model from EdgeCore that the SDK cannot use.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A configData entry does not decode (nested value, unknown type).
    #[error("device {device}{}: {source}", property.as_deref().map(|p| format!(" property {p}")).unwrap_or_default())]
    ConfigData {
        /// `namespace/name` of the device.
        device: String,
        /// The property whose visitor failed, if not the protocol config.
        property: Option<String>,
        /// The decoding failure.
        #[source]
        source: dmi_proto::config_data::ConfigDataError,
    },
    /// A required part of the message is absent.
    #[error("{what} is missing {field}")]
    Missing {
        /// Which object.
        what: String,
        /// Which field.
        field: &'static str,
    },
    /// A model property has a bound that is not a number.
    #[error("model {model} property {property}: {field} `{value}` is not a number")]
    BadBound {
        /// `namespace/name` of the model.
        model: String,
        /// Property name.
        property: String,
        /// `minimum` or `maximum`.
        field: &'static str,
        /// The text given.
        value: String,
    },
}

/// Errors of [`crate::Mapper`] set-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The mapper configuration is invalid.
    #[error("invalid mapper config: {0}")]
    Config(String),
    /// The mapper's own socket could not be claimed.
    #[error(transparent)]
    Bind(#[from] dmi_proto::transport::BindError),
    /// The gRPC server failed.
    #[error("DMI server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Result of SDK calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;
