//! Observers of accepted reports: every twin report and state report the hub
//! accepts is broadcast as a [`Change`] (the MQTT bridge publishes them as
//! KubeEdge's `$hw/events/device/...` messages).
//!
//! The broadcast is a ring of [`CHANGE_QUEUE`] changes: sending never waits,
//! and an observer that falls behind (a dead broker) loses the oldest changes
//! and is told how many (`RecvError::Lagged`). Nothing is built while nobody
//! observes.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::Hub;
use crate::key::ObjectKey;
use crate::records::TwinRecord;

/// Changes kept for an observer that has not read them yet; older ones are
/// dropped (and counted by the observer) when more arrive.
pub const CHANGE_QUEUE: usize = 1024;

/// A report the hub accepted.
#[derive(Debug, Clone)]
pub enum Change {
    /// Twins a mapper reported (`ReportDeviceStatus`).
    Twins(Arc<TwinsChange>),
    /// A state a mapper reported (`ReportDeviceStates`).
    State(Arc<StateChange>),
}

/// The twins of one accepted `ReportDeviceStatus`.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinsChange {
    /// The device.
    pub device: ObjectKey,
    /// When the report was accepted, ms since the epoch.
    pub at_ms: u64,
    /// The reported twins, in report order, each with the property's twin
    /// before this report.
    pub updated: Vec<TwinChange>,
    /// After this report, every twin of the device whose observed desired
    /// value is not empty, by property name (what KubeEdge's twin delta
    /// message lists).
    pub with_desired: Vec<(String, TwinRecord)>,
}

/// One property of a [`TwinsChange`].
#[derive(Debug, Clone, PartialEq)]
pub struct TwinChange {
    /// The property.
    pub property: String,
    /// Its twin before the report (`None`: the first report since the device
    /// arrived).
    pub last: Option<TwinRecord>,
    /// Its twin as reported.
    pub current: TwinRecord,
}

/// One accepted `ReportDeviceStates`.
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    /// The device.
    pub device: ObjectKey,
    /// The state (lowercase, one of the allowed states).
    pub state: String,
    /// The last time the device was online (RFC 3339), for `online` and `ok`.
    pub last_online: Option<String>,
    /// When the report was accepted, ms since the epoch.
    pub at_ms: u64,
}

impl Hub {
    /// A receiver of every report accepted from now on (see the module docs
    /// for what a slow receiver loses).
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Whether anyone observes changes (else none are built).
    pub(super) fn observed(&self) -> bool {
        self.changes.receiver_count() > 0
    }

    /// Broadcasts `change`; never waits.
    pub(super) fn emit(&self, change: Change) {
        // No receiver left: nobody to tell.
        let _ = self.changes.send(change);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{NODE, device, hub, snapshot};
    use super::*;
    use dmi_proto::v1beta1 as pb;
    use tokio::sync::broadcast::error::TryRecvError;

    fn twin(value: &str) -> pb::Twin {
        let tp = |v: &str| pb::TwinProperty {
            value: v.into(),
            metadata: Default::default(),
        };
        pb::Twin {
            property_name: "set".into(),
            reported: Some(tp(value)),
            observed_desired: Some(tp("7")),
        }
    }

    #[test]
    fn accepted_reports_are_broadcast_with_the_previous_twin() {
        let hub = hub();
        snapshot(&hub, &format!("{NODE}{}", device("a", "7")));
        let a = ObjectKey::new("", "a");
        // Nobody observes: nothing is built or kept.
        hub.report_twins(a.clone(), vec![twin("1")]).unwrap();
        let mut rx = hub.subscribe_changes();
        hub.report_twins(a.clone(), vec![twin("2")]).unwrap();
        hub.report_state(a.clone(), "online".into()).unwrap();
        // Refused reports are not changes.
        assert!(
            hub.report_twins(ObjectKey::new("", "ghost"), vec![twin("3")])
                .is_err()
        );
        let Ok(Change::Twins(t)) = rx.try_recv() else {
            panic!("no twin change");
        };
        assert_eq!(t.device, a);
        let [u] = t.updated.as_slice() else {
            panic!("{:?}", t.updated);
        };
        assert_eq!(u.property, "set");
        assert_eq!(u.last.as_ref().map(|l| l.reported.as_str()), Some("1"));
        assert_eq!(u.current.reported, "2");
        assert_eq!(t.with_desired.len(), 1);
        let Ok(Change::State(s)) = rx.try_recv() else {
            panic!("no state change");
        };
        assert_eq!(
            (s.state.as_str(), s.last_online.is_some()),
            ("online", true)
        );
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    }

    #[test]
    fn a_receiver_that_never_reads_never_holds_up_reports() {
        let hub = hub();
        snapshot(&hub, &format!("{NODE}{}", device("a", "7")));
        let a = ObjectKey::new("", "a");
        let mut rx = hub.subscribe_changes();
        let extra = 10;
        for i in 0..CHANGE_QUEUE + extra {
            hub.report_twins(a.clone(), vec![twin(&i.to_string())])
                .unwrap();
        }
        // The oldest were dropped and are counted; the newest are kept.
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Lagged(n)) if n == extra as u64));
        let Ok(Change::Twins(t)) = rx.try_recv() else {
            panic!("no twin change");
        };
        assert_eq!(t.updated[0].current.reported, extra.to_string());
    }
}
