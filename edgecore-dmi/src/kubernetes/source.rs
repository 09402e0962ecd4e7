//! The Kubernetes device source: watches the Devices labelled with this node
//! (`devices.kubeedge.io/node-name`, kept equal to `spec.nodeName` by the device
//! controller) and the DeviceModels, resumes after dropped watches and outages
//! (kube-rs watcher with backoff), and reports the node's complete set after
//! every change, exactly like the YAML directory source. While the API server is
//! unreachable nothing is reported, so edgecore-dmi keeps serving what it has.

use std::collections::BTreeMap;
use std::sync::Arc;

use device_crds::{Device, DeviceModel, NODE_LABEL};
use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::key::ObjectKey;
use crate::records::{StoredDevice, StoredModel};
use crate::source::{DeviceSource, SourceEvent};

/// Origin recorded for objects from the API server.
const ORIGIN: &str = "kubernetes";

/// See the module docs.
#[derive(Clone)]
pub struct KubeSource {
    client: kube::Client,
    node: String,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("node", &self.node)
            .finish()
    }
}

impl KubeSource {
    /// A source for the devices of `node`.
    pub fn new(client: kube::Client, node: impl Into<String>) -> Self {
        Self {
            client,
            node: node.into(),
        }
    }
}

/// Applies one watcher event to a map of shared records; returns whether the map
/// is complete.
fn apply<K: kube::Resource<DynamicType = ()> + Clone, V>(
    map: &mut BTreeMap<ObjectKey, Arc<V>>,
    init: &mut Option<BTreeMap<ObjectKey, Arc<V>>>,
    ev: watcher::Event<K>,
    wrap: impl Fn(K) -> Option<V>,
) -> bool {
    match ev {
        watcher::Event::Init => {
            *init = Some(BTreeMap::new());
            false
        }
        watcher::Event::InitApply(o) => {
            if let Some(buf) = init.as_mut() {
                let k = ObjectKey::from_meta(o.meta());
                if let Some(v) = wrap(o) {
                    buf.insert(k, Arc::new(v));
                }
            }
            false
        }
        watcher::Event::InitDone => {
            if let Some(buf) = init.take() {
                *map = buf;
            }
            true
        }
        watcher::Event::Apply(o) => {
            let k = ObjectKey::from_meta(o.meta());
            // An object that cannot be kept leaves its last good version.
            match wrap(o) {
                Some(v) => {
                    map.insert(k, Arc::new(v));
                    true
                }
                None => false,
            }
        }
        watcher::Event::Delete(o) => {
            map.remove(&ObjectKey::from_meta(o.meta()));
            true
        }
    }
}

impl DeviceSource for KubeSource {
    async fn run(
        self,
        tx: mpsc::Sender<SourceEvent>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let devices: Api<Device> = Api::all(self.client.clone());
        let models: Api<DeviceModel> = Api::all(self.client.clone());
        let selector = format!("{NODE_LABEL}={}", self.node);
        let mut dev_events = watcher(devices, watcher::Config::default().labels(&selector))
            .default_backoff()
            .boxed();
        let mut model_events = watcher(models, watcher::Config::default())
            .default_backoff()
            .boxed();
        tracing::info!(node = %self.node, selector = %selector, "watching devices bound to this node");
        let (mut dev_map, mut model_map) = (BTreeMap::new(), BTreeMap::new());
        let (mut dev_init, mut model_init) = (None, None);
        let (mut dev_ready, mut model_ready) = (false, false);
        loop {
            let changed = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                ev = dev_events.next() => match ev {
                    Some(Ok(ev)) => {
                        let done = apply(&mut dev_map, &mut dev_init, ev, |crd| {
                            StoredDevice::new(&crd, ORIGIN.into())
                                .inspect_err(|e| tracing::error!("{e}; its last good version is kept"))
                                .ok()
                        });
                        dev_ready |= done;
                        done
                    }
                    Some(Err(e)) => { tracing::warn!(error = %e, "device watch failed; retrying with backoff"); false }
                    None => return Ok(()),
                },
                ev = model_events.next() => match ev {
                    Some(Ok(ev)) => {
                        let done = apply(&mut model_map, &mut model_init, ev, |crd| Some(StoredModel { crd, origin: ORIGIN.to_owned() }));
                        model_ready |= done;
                        done
                    }
                    Some(Err(e)) => { tracing::warn!(error = %e, "model watch failed; retrying with backoff"); false }
                    None => return Ok(()),
                },
            };
            if !(changed && dev_ready && model_ready) {
                continue;
            }
            // The label is the selector; spec.nodeName is the truth.
            let mine: Vec<Arc<StoredDevice>> = dev_map
                .values()
                .filter(|d| d.node_name() == Some(self.node.as_str()))
                .cloned()
                .collect();
            let wanted: std::collections::HashSet<ObjectKey> =
                mine.iter().filter_map(|d| d.model_key().cloned()).collect();
            let models: Vec<Arc<StoredModel>> = model_map
                .iter()
                .filter(|(k, _)| wanted.contains(*k))
                .map(|(_, m)| m.clone())
                .collect();
            let event = SourceEvent::Snapshot {
                devices: mine,
                models,
                errors: Vec::new(),
            };
            if tx.send(event).await.is_err() {
                return Ok(());
            }
        }
    }
}
