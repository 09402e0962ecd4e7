//! Typed configuration: what the Device YAML says about a device
//! (`spec.protocol.configData`, [`{{type_prefix}}Config`]) and about each of
//! its properties (`spec.properties[].visitors.configData`,
//! [`{{type_prefix}}Address`]).
//!
//! The SDK deserializes both from configData, a JSON object of scalars.
//! Numbers sent by a stock Go EdgeCore arrive as float32; whole ones reach
//! serde as integers, so `u16` and friends work. A key that does not decode
//! becomes a [`mapper_sdk::DriverError::Config`] naming it (the device or the
//! property is then refused, with that reason, and nothing else is affected);
//! `deny_unknown_fields` makes a misspelt key such an error too.
//!
//! Replace the fields with what your protocol needs and document each one:
//! these structs are the user-facing schema of your mapper.

use mapper_sdk::PropertyType;
use serde::Deserialize;

/// `protocol.configData` of a `{{protocol}}` device: where it listens.
///
/// ```yaml
/// protocol:
///   protocolName: {{protocol}}
///   configData:
///     host: 127.0.0.1
///     port: 5020
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct {{type_prefix}}Config {
    /// Host name or IP address of the device.
    pub host: String,
    /// TCP port of the device.
    pub port: u16,
}

/// `visitors.configData` of one property: which register of the device it is.
///
/// ```yaml
/// visitors:
///   protocolName: {{protocol}}
///   configData:
///     register: temperature
{%- if push %}
///     subscribe: true
{%- endif %}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct {{type_prefix}}Address {
    /// The register's name on the device: ASCII letters, digits, `_`, `-` and
    /// `.`, at most [`MAX_REGISTER_LEN`](crate::protocol::MAX_REGISTER_LEN) bytes.
    pub register: String,
{%- if push %}
    /// `true`: the device pushes this register's value (`SUBSCRIBE`) and the
    /// SDK does not poll it; `false` (the default): read on `collectCycle`.
    #[serde(default)]
    pub subscribe: bool,
{%- endif %}
    /// The model's type of the property, filled in by
    /// [`Driver::prepare_address`](mapper_sdk::Driver::prepare_address);
    /// answers are decoded as this type.
    #[serde(skip)]
    pub model_type: Option<PropertyType>,
}
