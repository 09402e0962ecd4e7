//! Upstream messages from device tasks to EdgeCore, through a bounded queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dmi_proto::v1beta1 as pb;
use tokio::sync::mpsc;

/// Capacity of the queue between device tasks and the reporter.
pub const REPORT_QUEUE: usize = 4096;

/// A report on its way to EdgeCore.
#[derive(Debug)]
pub(crate) enum Upstream {
    /// `ReportDeviceStatus`.
    Status(pb::ReportDeviceStatusRequest),
    /// `ReportDeviceStates`.
    State(pb::ReportDeviceStatesRequest),
}

/// Cheap handle device tasks use to queue reports. Never blocks: when the queue
/// is full (EdgeCore unreachable or slow) the report is dropped and counted, so a
/// slow EdgeCore can never stall device I/O.
#[derive(Debug, Clone)]
pub(crate) struct Reporter {
    tx: mpsc::Sender<Upstream>,
    dropped: Arc<AtomicU64>,
}

impl Reporter {
    pub(crate) fn new() -> (Self, mpsc::Receiver<Upstream>) {
        let (tx, rx) = mpsc::channel(REPORT_QUEUE);
        (
            Self {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    pub(crate) fn send(&self, msg: Upstream) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(msg) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped_total = n,
                    "report queue full; dropping reports until EdgeCore catches up"
                );
            }
        }
    }
}
