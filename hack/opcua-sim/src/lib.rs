//! # opcua-sim
//!
//! A simulated OPC-UA server built on async-opcua's server, for tests (in
//! process or as a binary), the demo and benchmarks; the counterpart of
//! `modbus-sim` for `mapper-opcua`.
//!
//! * Configured from YAML ([`SimConfig`]): variables in namespace 2 with
//!   numeric or string node ids, browse names and folders under Objects, the
//!   built-in types Boolean, SByte…UInt64, Float, Double, String, DateTime,
//!   ByteString, LocalizedText and Guid, one-dimensional arrays of the
//!   numeric types, writable or read-only nodes, and dynamic values
//!   (constant, counter, ramp, sine, random walk) evaluated every `tickMs`.
//! * Thousands of nodes for benchmarks: [`SimConfig::with_generated`].
//! * Security: endpoints None and Basic256Sha256 (Sign, SignAndEncrypt),
//!   anonymous and user name/password identities; the server creates its
//!   certificate in the PKI directory and can trust every client certificate.
//! * Faults on demand: Bad status codes per node ([`Simulator::bad`]),
//!   latency on Read and Write ([`Simulator::set_latency`]), all connections
//!   and sessions closed ([`Simulator::drop_connections`]); also as text
//!   commands ([`Simulator::command`]), which the binary reads on stdin.
//! * Operation limits (MaxNodesPerRead, MaxNodesPerWrite) are configurable.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let cfg = opcua_sim::SimConfig {
//!     pki_dir: std::env::temp_dir().join("opcua-sim-pki"),
//!     ..opcua_sim::SimConfig::default()
//! }
//! .with_generated(5000, 1000);
//! let sim = opcua_sim::Simulator::start(cfg).await?;
//! assert_eq!(sim.command("get ns=2;i=1000").await, "OK Good 0");
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Feature flags: none.

mod command;
pub mod config;
mod model;
mod nodes;
mod sim;
mod value;

pub use config::{
    EndpointKind, GENERATED_FIRST_ID, LimitsConfig, NodeConfig, Pattern, SecurityConfig, SimConfig,
    SimType, UserConfig,
};
pub use model::SIM_NAMESPACE;
pub use sim::Simulator;

use std::path::PathBuf;

/// What can go wrong starting or driving the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; the message names the node or setting.
    #[error("invalid configuration: {0}")]
    ConfigInvalid(String),
    /// The PKI directory, or the server certificate in it, could not be made.
    #[error("PKI directory {path}: {reason}")]
    PkiFailed {
        /// The PKI directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    ListenFailed {
        /// `host:port`.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// async-opcua refused the server configuration.
    #[error("building the OPC-UA server: {0}")]
    ServerBuildFailed(String),
    /// No simulated variable has this node id.
    #[error("unknown node {0}")]
    UnknownNode(String),
    /// A node id, value or status code name that does not parse or fit.
    #[error("{0}")]
    InvalidArgument(String),
}
