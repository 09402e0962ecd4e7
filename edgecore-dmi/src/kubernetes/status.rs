//! Status write-back: the latest reported twins, observed desired values, state
//! and lastOnlineTime of each device, patched into Kubernetes through the status
//! subresource, either of the DeviceStatus object (KubeEdge v1.23+) or of the
//! Device itself (the shape before v1.23).
//!
//! Writes are coalesced: every `interval` each device whose twins changed gets
//! at most one merge patch carrying its latest values, and patches are spaced to
//! at most `qps` per second. When the API server is unreachable the devices stay
//! marked and are written once it is back, so nothing that is still the latest
//! value is lost; a restart marks every stored device again.
//!
//! A report that changes only timestamps (the same reported and observed
//! desired values, the same state: a slowly changing value reported every
//! cycle) is held back and written at most once per `refresh`
//! ([`Config::status_refresh`](crate::config::Config::status_refresh), 60 s
//! by default; `0s` holds nothing back), so `lastOnlineTime` and the twins'
//! timestamps in the cluster lag by at most `refresh` + `interval` (plus the
//! queue behind `qps`). A changed value is written within `interval`. What
//! was written is forgotten when the API server answers 404, when a device
//! leaves the node (one that comes back gets a full patch) and on restart;
//! held devices are written on shutdown.
//! Stock EdgeCore sends one upstream message per report instead; on a
//! bandwidth-limited link this is the difference between one patch per device
//! per second and one per minute (benches/README.md, "Cloud traffic").

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use device_crds::{Device, DeviceStatus};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::key::ObjectKey;
use crate::records::TwinState;

pub use crate::config::StatusTarget as StatusMode;

/// Writes statuses back. See the module docs.
pub struct StatusWriter {
    client: kube::Client,
    hub: Arc<Hub>,
    mode: StatusMode,
    interval: Duration,
    refresh: Duration,
    qps: u32,
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter")
            .field("mode", &self.mode)
            .field("interval", &self.interval)
            .field("refresh", &self.refresh)
            .finish()
    }
}

/// The merge patch for one device's status.
pub fn status_patch(t: &TwinState) -> Value {
    let meta = |m: &crate::records::Metadata| {
        let mut out = serde_json::Map::new();
        for k in ["timestamp", "type"] {
            if let Some(v) = m.get(k) {
                out.insert(k.to_owned(), json!(v));
            }
        }
        Value::Object(out)
    };
    let twins: Vec<Value> = t
        .twins
        .iter()
        .map(|(name, r)| {
            json!({
                "propertyName": name,
                "reported": {"value": r.reported, "metadata": meta(&r.reported_meta)},
                "observedDesired": {"value": r.observed_desired, "metadata": meta(&r.desired_meta)},
            })
        })
        .collect();
    let mut status = json!({"twins": twins});
    if let Some(s) = &t.state {
        status["state"] = json!(s);
        status["lastOnlineTime"] = json!(t.last_online.clone().unwrap_or_default());
    }
    json!({"status": status})
}

/// What a status patch says apart from timestamps: each twin's property,
/// reported and observed desired value, and the state. Two reports with the
/// same fingerprint differ only in when they were made.
pub fn value_fingerprint(t: &TwinState) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (name, r) in &t.twins {
        (
            name,
            &r.reported,
            &r.observed_desired,
            r.reported_meta.get("type"),
        )
            .hash(&mut h);
    }
    t.state.hash(&mut h);
    h.finish()
}

/// Which dirty devices to patch now: the ones whose values changed since
/// their last patch, and the ones held back with only timestamps changed once
/// their last patch is `refresh` old. See the module docs.
#[derive(Debug, Default)]
pub struct RefreshPolicy {
    refresh: Duration,
    /// Per device: fingerprint of the last patch written and when.
    written: HashMap<ObjectKey, (u64, Instant)>,
    /// Devices held back (only timestamps changed): when they are due.
    held: HashMap<ObjectKey, Instant>,
}

impl RefreshPolicy {
    /// A policy writing unchanged values at most once per `refresh`.
    pub fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            ..Default::default()
        }
    }

    /// Whether `key`, dirty with `fingerprint`, is patched at `now`; when not,
    /// it is held until its refresh is due ([`RefreshPolicy::due`]).
    pub fn should_write(&mut self, key: &ObjectKey, fingerprint: u64, now: Instant) -> bool {
        match self.written.get(key) {
            Some((fp, at)) if *fp == fingerprint && now.duration_since(*at) < self.refresh => {
                self.held.insert(key.clone(), *at + self.refresh);
                false
            }
            _ => true,
        }
    }

    /// Records a successful patch of `key`.
    pub fn written(&mut self, key: &ObjectKey, fingerprint: u64, now: Instant) {
        self.held.remove(key);
        self.written.insert(key.clone(), (fingerprint, now));
    }

    /// Forgets a device that left the node or whose status object is gone.
    pub fn forget(&mut self, key: &ObjectKey) {
        self.held.remove(key);
        self.written.remove(key);
    }

    /// Forgets every write (devices left the node): each device's next report
    /// is written in full. Held devices stay held until due.
    pub fn forget_all(&mut self) {
        self.written.clear();
    }

    /// Takes every held device (on shutdown: write the latest timestamps).
    pub fn take_held(&mut self) -> Vec<ObjectKey> {
        self.held.drain().map(|(k, _)| k).collect()
    }

    /// Devices held back now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Takes the held devices whose refresh is due at `now`. Writes older
    /// than the refresh are dropped too (a report after them is written
    /// anyway), which bounds what is kept to the devices written within the
    /// last refresh.
    pub fn due(&mut self, now: Instant) -> Vec<ObjectKey> {
        let refresh = self.refresh;
        self.written
            .retain(|_, (_, at)| now.duration_since(*at) < refresh);
        let due: Vec<ObjectKey> = self
            .held
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &due {
            self.held.remove(k);
            // Due means written regardless of the fingerprint.
            self.written.remove(k);
        }
        due
    }
}

impl StatusWriter {
    /// A writer: at most one patch per device per `interval`, unchanged
    /// values re-written at most once per `refresh`, at most `qps` patches per
    /// second.
    pub fn new(
        client: kube::Client,
        hub: Arc<Hub>,
        mode: StatusMode,
        interval: Duration,
        refresh: Duration,
        qps: u32,
    ) -> Self {
        Self {
            client,
            hub,
            mode,
            interval,
            refresh,
            qps: qps.max(1),
        }
    }

    async fn write(&self, key: &ObjectKey, patch: &Value) -> Result<(), kube::Error> {
        let (ns, name) = (key.namespace(), key.name());
        let pp = PatchParams::default();
        match self.mode {
            StatusMode::DeviceStatus => {
                Api::<DeviceStatus>::namespaced(self.client.clone(), ns)
                    .patch_status(name, &pp, &Patch::Merge(patch))
                    .await?;
            }
            StatusMode::Legacy => {
                Api::<Device>::namespaced(self.client.clone(), ns)
                    .patch_status(name, &pp, &Patch::Merge(patch))
                    .await?;
            }
        }
        Ok(())
    }

    /// Writes until `shutdown`, then makes one last attempt.
    pub async fn run(self, shutdown: CancellationToken) {
        let gap = Duration::from_secs(1) / self.qps;
        // Log an outage once, and its end, not every round.
        let mut failing = false;
        let mut policy = RefreshPolicy::new(self.refresh);
        let mut removals = self.hub.removals();
        loop {
            let stopping = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = tokio::time::sleep(self.interval) => false,
            };
            let now_removals = self.hub.removals();
            if now_removals != removals {
                policy.forget_all();
                removals = now_removals;
            }
            let mut keys = self.hub.take_status_dirty();
            keys.extend(policy.due(Instant::now()));
            if stopping {
                keys.extend(policy.take_held());
            }
            keys.sort();
            keys.dedup();
            let mut pending = keys.into_iter();
            while let Some(key) = pending.next() {
                let Some(state) = self.hub.twin_state(key.as_str()) else {
                    policy.forget(&key);
                    continue;
                };
                let fingerprint = value_fingerprint(&state);
                // On the way out the latest timestamps are written too.
                if !stopping && !policy.should_write(&key, fingerprint, Instant::now()) {
                    self.hub.metrics().status_held();
                    continue;
                }
                match self.write(&key, &status_patch(&state)).await {
                    Ok(()) => {
                        policy.written(&key, fingerprint, Instant::now());
                        self.hub.metrics().status_patch("ok");
                        if failing {
                            tracing::info!(
                                "status write-back works again; flushing the latest values"
                            );
                            failing = false;
                        }
                        tracing::debug!(device = %key, "status written");
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        // The DeviceStatus (or Device) is not there yet; try again later.
                        self.hub.metrics().status_patch("not_found");
                        tracing::debug!(device = %key, "status target not found yet");
                        // Whatever it held is gone: write in full once it is back.
                        policy.forget(&key);
                        self.hub.mark_status_dirty([key]);
                    }
                    Err(e) => {
                        self.hub.metrics().status_patch("failed");
                        if !failing {
                            tracing::warn!(device = %key, error = %e, "status write failed; keeping the latest values until the API server answers");
                            failing = true;
                        }
                        self.hub
                            .mark_status_dirty(std::iter::once(key).chain(pending.by_ref()));
                        break;
                    }
                }
                tokio::time::sleep(gap).await;
            }
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::TwinRecord;

    fn state(reported: &str, timestamp: &str, state: &str) -> TwinState {
        let mut t = TwinState {
            state: Some(state.into()),
            last_online: Some(format!("2026-01-01T00:00:{timestamp}Z")),
            ..Default::default()
        };
        t.twins.insert(
            "temp",
            TwinRecord {
                reported: reported.into(),
                reported_meta: [("timestamp".to_owned(), timestamp.to_owned())].into(),
                ..Default::default()
            },
        );
        t
    }

    #[test]
    fn fingerprint_ignores_timestamps_only() {
        let a = value_fingerprint(&state("21", "01", "online"));
        assert_eq!(a, value_fingerprint(&state("21", "02", "online")));
        assert_ne!(a, value_fingerprint(&state("22", "01", "online")));
        assert_ne!(a, value_fingerprint(&state("21", "01", "offline")));
        let mut desired = state("21", "01", "online");
        if let Some(t) = desired.twins.get_mut("temp") {
            t.observed_desired = "5".into();
        }
        assert_ne!(a, value_fingerprint(&desired));
    }

    #[test]
    fn unchanged_values_wait_for_the_refresh() {
        let k = ObjectKey::new("default", "a");
        let refresh = Duration::from_secs(60);
        let mut p = RefreshPolicy::new(refresh);
        let t0 = Instant::now();
        assert!(p.should_write(&k, 1, t0), "first patch goes out");
        p.written(&k, 1, t0);
        // Timestamps only: held, and not due before the refresh.
        assert!(!p.should_write(&k, 1, t0 + Duration::from_secs(1)));
        assert!(p.due(t0 + Duration::from_secs(59)).is_empty());
        // A changed value goes out at once.
        assert!(p.should_write(&k, 2, t0 + Duration::from_secs(2)));
        p.written(&k, 2, t0 + Duration::from_secs(2));
        assert!(
            p.due(t0 + Duration::from_secs(30)).is_empty(),
            "nothing held"
        );
        // Held again, then due one refresh after the last patch.
        assert!(!p.should_write(&k, 2, t0 + Duration::from_secs(3)));
        assert_eq!(
            p.due(t0 + Duration::from_secs(62)),
            std::slice::from_ref(&k)
        );
        assert!(p.due(t0 + Duration::from_secs(63)).is_empty(), "taken once");
        // A due device is written even with the same fingerprint.
        assert!(p.should_write(&k, 2, t0 + Duration::from_secs(62)));
        p.forget(&k);
        assert!(p.should_write(&k, 2, t0 + Duration::from_secs(63)));
    }

    #[test]
    fn forgetting_and_shutdown() {
        let (a, b) = (
            ObjectKey::new("default", "a"),
            ObjectKey::new("default", "b"),
        );
        let mut p = RefreshPolicy::new(Duration::from_secs(60));
        let t0 = Instant::now();
        p.written(&a, 1, t0);
        p.written(&b, 1, t0);
        assert!(!p.should_write(&a, 1, t0 + Duration::from_secs(1)));
        assert_eq!(p.held(), 1);
        // A device left the node: every next report is written in full.
        p.forget_all();
        assert!(p.should_write(&b, 1, t0 + Duration::from_secs(2)));
        // Held devices are still handed out on shutdown.
        assert_eq!(p.take_held(), std::slice::from_ref(&a));
        assert_eq!(p.held(), 0);
        // Old writes are pruned by `due`.
        p.written(&a, 1, t0);
        assert!(p.due(t0 + Duration::from_secs(61)).is_empty());
        assert!(p.should_write(&a, 1, t0 + Duration::from_secs(61)));
        assert!(p.written.is_empty());
    }

    #[test]
    fn patch_shape() {
        let mut t = TwinState {
            state: Some("online".into()),
            last_online: Some("2026-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        t.twins.insert(
            "temp",
            TwinRecord {
                reported: "21".into(),
                reported_meta: [
                    ("timestamp".to_owned(), "1".to_owned()),
                    ("type".to_owned(), "int".to_owned()),
                ]
                .into(),
                observed_desired: "22".into(),
                desired_meta: [("status".to_owned(), "applied".to_owned())].into(),
                updated_ms: 5,
            },
        );
        assert_eq!(
            status_patch(&t),
            json!({"status": {"twins": [{"propertyName": "temp",
                "reported": {"value": "21", "metadata": {"timestamp": "1", "type": "int"}},
                "observedDesired": {"value": "22", "metadata": {}}}],
                "state": "online", "lastOnlineTime": "2026-01-01T00:00:00Z"}})
        );
    }
}
