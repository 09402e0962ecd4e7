//! # mapper-opcua
//!
//! A [`mapper_sdk::Driver`] for OPC-UA servers on `async-opcua` (client
//! only, pure-Rust crypto: no OpenSSL). No tonic, DMI or Kubernetes types.
//!
//! * Device configData as KubeEdge's OPC-UA mapper reads it ([`OpcuaConfig`]:
//!   `url`, `securityPolicy`, `securityMode`, `userName`, `password` (a
//!   file), `certificate`, `privateKey`, `remoteCertificate`) plus optional
//!   extensions (`userCertificate`/`userPrivateKey`, `timeout`,
//!   `sessionTimeout`, `maxNodesPerRead`, `subscribe`, `publishingInterval`).
//!   Visitor configData: `nodeID` in OPC-UA's string form, including
//!   `nsu=<uri>;...`, and an optional `dataType` ([`OpcuaAddress`]).
//! * **Batched reads:** the properties due in a tick are read with one Read
//!   call (split by `MaxNodesPerRead`: the server's operation limit when it
//!   gives one, else `maxNodesPerRead`, default 1000). A Bad status is that
//!   property's [`mapper_sdk::DriverError::Device`] fault, named
//!   (`BadNodeIdUnknown`), never another property's.
//! * **Push mode** (`subscribe: true`): the properties become monitored
//!   items of one subscription per device, sampled at their collect cycle,
//!   and notifications go through the SDK's push path
//!   ([`mapper_sdk::DeviceClient::subscribe`]); a node the server refuses
//!   to monitor is polled instead. After a reconnect the session, the
//!   subscription and the monitored items are created anew.
//! * **Writes** are encoded as the node's DataType (read once per session),
//!   Bad statuses are reported against the property, and the value is read
//!   back to confirm ([`convert`] describes the types and the text form of
//!   arrays).
//! * **Sessions** are shared per endpoint ([`session`]): devices with the
//!   same URL, security and identity use one session, kept alive by the
//!   library's keep-alive reads; a lost session is a link error for every
//!   device on it and the SDK reconnects them with its backoff. `online`
//!   comes only with an answered request.
//! * **Security:** None, Sign and SignAndEncrypt with every policy
//!   async-opcua implements; anonymous, user name and password, or X.509
//!   user identity; a PKI directory under the mapper's state directory
//!   holding the mapper's certificate and the trusted and rejected server
//!   certificates.
//! * **Discovery:** [`browse`] walks the address space (the `mapper-opcua
//!   browse` command) and writes a ready-to-apply DeviceModel and Device.
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     mapper_sdk::main_with("opcua", |cfg| {
//!         mapper_opcua::OpcuaDriver::new(cfg.state_dir().join("pki"))
//!     })
//! }
//! ```
//!
//! ## Feature flags
//! None.

#![warn(missing_docs)]

pub mod browse;
pub mod config;
pub mod convert;
mod device;
pub mod error;
pub mod node;
pub mod pki;
pub mod session;

pub use config::{Endpoint, Identity, OpcuaConfig};
pub use convert::{Builtin, NodeType};
pub use device::OpcuaDevice;
pub use node::{NodeRef, OpcuaAddress};

use std::path::PathBuf;

use mapper_sdk::{Driver, DriverResult, PropertyInfo, PropertyType};

use crate::device::Settings;
use crate::session::Pool;

/// The OPC-UA protocol: opens [`OpcuaDevice`]s and owns the sessions they
/// share ([`session::Pool`]) and the PKI directory. One value per mapper.
#[derive(Debug)]
pub struct OpcuaDriver {
    pool: Pool,
}

impl OpcuaDriver {
    /// A driver keeping its certificates in `pki_dir` (the mapper uses
    /// `<state dir>/pki`; created when first needed).
    pub fn new(pki_dir: impl Into<PathBuf>) -> Self {
        Self {
            pool: Pool::new(pki_dir),
        }
    }

    /// The session pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl Driver for OpcuaDriver {
    type Config = OpcuaConfig;
    type Address = OpcuaAddress;
    type Client = OpcuaDevice;

    fn prepare_address(
        &self,
        addr: &mut OpcuaAddress,
        model_type: Option<PropertyType>,
    ) -> DriverResult<()> {
        addr.prepare(model_type, None)
    }

    fn prepare_property(
        &self,
        addr: &mut OpcuaAddress,
        property: &PropertyInfo<'_>,
    ) -> DriverResult<()> {
        addr.prepare(property.model_type, Some(property.collect_cycle))
    }

    async fn connect(&self, cfg: &OpcuaConfig) -> DriverResult<OpcuaDevice> {
        let endpoint = cfg.endpoint()?;
        let (slot, conn) = self.pool.open(&endpoint).await?;
        Ok(OpcuaDevice::new(
            conn,
            slot,
            Settings {
                max_nodes_per_read: cfg.max_nodes_per_read,
                subscribe: cfg.subscribe(),
                publishing_interval: cfg.publishing_interval(),
            },
        ))
    }
}
