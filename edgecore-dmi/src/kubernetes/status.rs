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

use std::sync::Arc;
use std::time::Duration;

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
    qps: u32,
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter")
            .field("mode", &self.mode)
            .field("interval", &self.interval)
            .finish()
    }
}

/// The merge patch for one device's status.
pub fn status_patch(t: &TwinState) -> Value {
    let meta = |m: &std::collections::BTreeMap<String, String>| {
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

impl StatusWriter {
    /// A writer; `qps` caps patches per second.
    pub fn new(
        client: kube::Client,
        hub: Arc<Hub>,
        mode: StatusMode,
        interval: Duration,
        qps: u32,
    ) -> Self {
        Self {
            client,
            hub,
            mode,
            interval,
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
        loop {
            let stopping = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = tokio::time::sleep(self.interval) => false,
            };
            let keys = self.hub.take_status_dirty();
            let mut pending = keys.into_iter();
            while let Some(key) = pending.next() {
                let Some(state) = self.hub.twin_state(key.as_str()) else {
                    continue;
                };
                match self.write(&key, &status_patch(&state)).await {
                    Ok(()) => {
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

    #[test]
    fn patch_shape() {
        let mut t = TwinState {
            state: Some("online".into()),
            last_online: Some("2026-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        t.twins.insert(
            "temp".into(),
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
