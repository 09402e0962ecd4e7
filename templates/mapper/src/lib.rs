//! # {{project-name}}
//!
//! A [`mapper_sdk::Driver`] for `{{protocol}}` devices. The SDK does
//! everything around the driver: registration with EdgeCore, one task per
//! device with reconnect backoff, collect cycles, twin and state reports,
//! desired values checked against the model, sinks, metrics.
//!
//! As generated, the driver speaks a small line protocol over TCP, so that it
//! works end to end and its tests pass; replace [`protocol`] and [`link`]
//! with your device's protocol (see README.md, "Implement your driver").
//!
//! | request | answer |
//! |---|---|
//! | `READ <register>\n` | `<value>\n` |
//! | `WRITE <register> <value>\n` | `OK\n` |
{%- if push %}
//! | `SUBSCRIBE <register> [<register>...]\n` | `OK\n`, then `<register> <value>\n` at once and on every change |
{%- endif %}
//! | any of these, refused | `ERR <reason>\n` |
//!
//! Protocol configData ([`{{type_prefix}}Config`]):
//!
//! | key | meaning |
//! |---|---|
//! | `host` | host name or IP address of the device |
//! | `port` | its TCP port |
//!
//! Visitor configData of each property ([`{{type_prefix}}Address`]):
//!
//! | key | meaning |
//! |---|---|
//! | `register` | the register's name on the device (ASCII letters, digits, `_`, `-`, `.`; at most 64 bytes) |
{%- if push %}
//! | `subscribe` | `true`: the device pushes the value (no polling); default `false` |
{%- endif %}
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     mapper_sdk::main("{{protocol}}", {{crate_name}}::{{driver_type}}::default())
//! }
//! ```
//!
//! ## Feature flags
//! None.

mod config;
mod driver;
pub mod link;
pub mod protocol;
{%- if push %}
mod push;
{%- endif %}

pub use config::{ {{type_prefix}}Address, {{type_prefix}}Config };
pub use driver::{ {{type_prefix}}Device, {{driver_type}} };

/// The protocol name of this mapper: `protocolName` in the Device YAML and
/// `common.protocol` in `config.yaml`.
pub const PROTOCOL: &str = "{{protocol}}";
