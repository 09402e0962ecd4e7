//! # edge-rt
//!
//! What every binary and library of this project needs and should do one way:
//!
//! * [`shutdown`]: SIGTERM / Ctrl-C as a future, and the shutdown tail (wait for
//!   tracked tasks up to a grace period);
//! * [`logging`]: `tracing` set-up (filter from a flag, `RUST_LOG` overrides,
//!   text or JSON lines, colours only on a terminal);
//! * [`cli`]: shell completions for every binary;
//! * [`Backoff`]: exponential backoff with jitter;
//! * [`ObjectId`]: the `namespace/name` of a device or model, with KubeEdge's
//!   rule that an empty namespace is `default`;
//! * [`desired`]: the one definition of a valid desired value for a model
//!   property (type, access mode, minimum/maximum), used by the mappers before
//!   they write and by the cloud controller before a device reaches them.
//!
//! No DMI, Kubernetes or protocol types: every crate of the workspace can
//! depend on it.
//!
//! ## Feature flags
//! None.

mod backoff;
pub mod cli;
pub mod desired;
pub mod logging;
mod object_id;
pub mod shutdown;

pub use backoff::Backoff;
pub use object_id::ObjectId;
