//! Upstream messages from device tasks to EdgeCore, through bounded queues.
//!
//! Reports travel in [`REPORT_LANES`] lanes, each sent in order: a device always
//! uses the same lane, so its reports (an `offline` followed by an `online`, an
//! old value followed by a new one) arrive in the order they were made, while
//! different devices' reports go out concurrently on the shared channel.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use dmi_proto::v1beta1 as pb;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Total capacity of the queues between device tasks and EdgeCore.
pub const REPORT_QUEUE: usize = 4096;
/// Number of ordered lanes reports are spread over.
pub const REPORT_LANES: usize = 8;

/// A report on its way to EdgeCore.
#[derive(Debug)]
pub(crate) enum Upstream {
    /// `ReportDeviceStatus`.
    Status(pb::ReportDeviceStatusRequest),
    /// `ReportDeviceStates`.
    State(pb::ReportDeviceStatesRequest),
}

impl Upstream {
    fn device(&self) -> (&str, &str) {
        match self {
            Upstream::Status(r) => (&r.device_namespace, &r.device_name),
            Upstream::State(r) => (&r.device_namespace, &r.device_name),
        }
    }
}

/// Cheap handle device tasks use to queue reports. Never blocks: when a queue is
/// full (EdgeCore unreachable or slow) the report is dropped and counted, so a
/// slow EdgeCore can never stall device I/O.
#[derive(Debug, Clone)]
pub(crate) struct Reporter {
    lanes: Arc<[mpsc::Sender<Upstream>]>,
    metrics: Arc<Metrics>,
}

impl Reporter {
    pub(crate) fn new(metrics: Arc<Metrics>) -> (Self, Vec<mpsc::Receiver<Upstream>>) {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..REPORT_LANES)
            .map(|_| mpsc::channel(REPORT_QUEUE / REPORT_LANES))
            .unzip();
        (
            Self {
                lanes: txs.into(),
                metrics,
            },
            rxs,
        )
    }

    pub(crate) fn send(&self, msg: Upstream) {
        let mut h = DefaultHasher::new();
        msg.device().hash(&mut h);
        let lane = (h.finish() % self.lanes.len() as u64) as usize;
        if let Err(mpsc::error::TrySendError::Full(_)) = self.lanes[lane].try_send(msg) {
            let n = self.metrics.reports_dropped.inc() + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped_total = n,
                    "report queue full; dropping reports until EdgeCore catches up"
                );
            }
        }
        // A closed queue means the mapper is shutting down; nothing to report to.
    }
}
