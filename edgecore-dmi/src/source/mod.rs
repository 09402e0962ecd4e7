//! Device sources: where Device/DeviceModel definitions come from. The YAML
//! directory ([`DirectorySource`]) is the default; a Kubernetes watcher is the
//! other implementation of [`DeviceSource`]. Everything after the source (store,
//! dispatch to mappers) is the same code.
//!
//! Files are untrusted input: [`parse_file`] refuses text over
//! [`MAX_FILE_BYTES`], documents nested deeper than [`MAX_DEPTH`] and alias
//! expansion beyond [`MIN_NODE_BUDGET`] nodes (or the document's size), and
//! [`DirectorySource`] reads only regular files, without blocking, and never
//! takes a failure to read for a deletion.

mod dir;
mod limits;
pub(crate) mod parse;
mod read;

pub use dir::DirectorySource;
pub use limits::{MAX_DEPTH, MAX_FILE_BYTES, MIN_NODE_BUDGET};
pub use parse::{ParsedFile, parse_file};

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::records::{StoredDevice, StoredModel};

/// What a source reports.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// The complete current set of devices and models; replaces the previous one.
    /// `errors` are problems found on the way (with file and line), shown to users.
    Snapshot {
        /// Every device (shared with the source's own view, not copied).
        devices: Vec<Arc<StoredDevice>>,
        /// Every model.
        models: Vec<Arc<StoredModel>>,
        /// Problems found.
        errors: Vec<String>,
    },
}

/// A producer of device definitions.
pub trait DeviceSource: Send + 'static {
    /// Sends events until `shutdown`. Errors are fatal for the source only.
    fn run(
        self,
        tx: mpsc::Sender<SourceEvent>,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}
