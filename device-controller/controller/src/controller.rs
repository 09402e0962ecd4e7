//! The two controllers (kube-rs runtime): Devices and DeviceModels.
//!
//! * Device: checks it against its model ([`crate::reconcile::check_device`]),
//!   keeps the node label in sync with `spec.nodeName`, writes the `Ready`
//!   condition to `status.conditions` (status subresource, merge patch) and an
//!   event when it changes, and in [`StatusMode::DeviceStatus`] makes sure the
//!   Device's DeviceStatus object exists, owner-referenced to it. Model changes
//!   requeue the devices that reference the model.
//! * DeviceModel: keeps a finalizer on it while devices reference it, so it
//!   cannot be deleted from under them; a blocked deletion is explained in its
//!   `InUse` condition and a Warning event. Device changes requeue their model.

use std::sync::Arc;
use std::time::Duration;

use device_crds::{
    Condition, Device, DeviceModel, DeviceModelStatus, DeviceStatus, DeviceStatusSpec,
    MODEL_FINALIZER, MetaExt,
};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::reconcile::{self, ModelAction};

/// Where twins live in this cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusMode {
    /// KubeEdge v1.23+: a DeviceStatus object per Device (managed here).
    DeviceStatus,
    /// Before v1.23: twins in the Device's own status; no DeviceStatus objects.
    Legacy,
}

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// The object has no namespace.
    #[error("object {0} has no namespace")]
    NoNamespace(String),
}

/// Shared state of the reconcilers.
#[derive(Clone)]
pub struct Context {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    mode: StatusMode,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("mode", &self.mode).finish()
    }
}

impl Context {
    /// A context; `identity` names this replica in events.
    pub fn new(client: Client, metrics: Arc<Metrics>, mode: StatusMode, identity: &str) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "device-controller".into(),
                instance: Some(identity.to_owned()),
            },
        );
        Self {
            client,
            recorder,
            metrics,
            mode,
        }
    }
}

async fn event<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

async fn reconcile_device(dev: Arc<Device>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = dev
        .namespace()
        .ok_or_else(|| Error::NoNamespace(dev.name_any()))?;
    let name = dev.name_any();
    let devices: Api<Device> = Api::namespaced(ctx.client.clone(), &ns);
    let model = match dev.spec.model_name() {
        Some(m) => {
            Api::<DeviceModel>::namespaced(ctx.client.clone(), &ns)
                .get_opt(m)
                .await?
        }
        None => None,
    };
    let check = reconcile::check_device(&dev, model.as_ref());

    if let Some(patch) = reconcile::node_label_patch(&dev) {
        devices
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(device = %format!("{ns}/{name}"), node = ?dev.spec.node_name, "node label updated");
    }

    let previous: Vec<Condition> = dev
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let cond =
        reconcile::ready_condition(&check, dev.metadata.generation, &previous, Timestamp::now());
    if !reconcile::same_conditions(&previous, std::slice::from_ref(&cond)) {
        let patch = json!({"status": {"conditions": [cond]}});
        devices
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let (kind, reason) = if check.ready {
            (EventType::Normal, "Ready")
        } else {
            (EventType::Warning, check.reason)
        };
        event(&ctx, dev.as_ref(), kind, reason, check.message.clone()).await;
        tracing::info!(device = %format!("{ns}/{name}"), ready = check.ready, reason = check.reason, message = %check.message, "device checked");
    }

    if ctx.mode == StatusMode::DeviceStatus {
        let statuses: Api<DeviceStatus> = Api::namespaced(ctx.client.clone(), &ns);
        if statuses.get_opt(&name).await?.is_none() {
            let mut ds = DeviceStatus::new(&name, DeviceStatusSpec {});
            ds.metadata = ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                owner_references: Some(vec![OwnerReference {
                    api_version: device_crds::API_VERSION.into(),
                    kind: "Device".into(),
                    name: name.clone(),
                    uid: dev.uid().unwrap_or_default(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..ObjectMeta::default()
            };
            match statuses.create(&PostParams::default(), &ds).await {
                Ok(_) => tracing::info!(device = %format!("{ns}/{name}"), "DeviceStatus created"),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Action::requeue(Duration::from_secs(600)))
}

async fn reconcile_model(model: Arc<DeviceModel>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = model
        .namespace()
        .ok_or_else(|| Error::NoNamespace(model.name_any()))?;
    let name = model.name_any();
    let models: Api<DeviceModel> = Api::namespaced(ctx.client.clone(), &ns);
    let devices = Api::<Device>::namespaced(ctx.client.clone(), &ns)
        .list(&Default::default())
        .await?;
    let refs = reconcile::model_references(&model, &devices.items);
    let finalizers = model.finalizers().to_vec();
    let has = finalizers.iter().any(|f| f == MODEL_FINALIZER);
    let rv = model.resource_version();
    match reconcile::model_action(&model, &refs) {
        ModelAction::KeepFinalizer if !has => {
            let mut f = finalizers;
            f.push(MODEL_FINALIZER.to_owned());
            let patch = json!({"metadata": {"finalizers": f, "resourceVersion": rv}});
            models
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        ModelAction::Release if has => {
            let f: Vec<String> = finalizers
                .into_iter()
                .filter(|f| f != MODEL_FINALIZER)
                .collect();
            let patch = json!({"metadata": {"finalizers": f, "resourceVersion": rv}});
            models
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            tracing::info!(model = %format!("{ns}/{name}"), "no device references the model; deletion released");
            return Ok(Action::await_change());
        }
        ModelAction::Block(why) => {
            tracing::warn!(model = %format!("{ns}/{name}"), "{why}");
            event(
                &ctx,
                model.as_ref(),
                EventType::Warning,
                "DeletionBlocked",
                why.clone(),
            )
            .await;
            write_model_status(&models, &model, &refs, Some(why)).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        _ => {}
    }
    write_model_status(&models, &model, &refs, None).await?;
    Ok(Action::requeue(Duration::from_secs(600)))
}

async fn write_model_status(
    models: &Api<DeviceModel>,
    model: &DeviceModel,
    refs: &[String],
    blocked: Option<String>,
) -> Result<(), Error> {
    let previous: Vec<Condition> = model
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let message = blocked.clone().unwrap_or_else(|| {
        if refs.is_empty() {
            "no device references this model".to_owned()
        } else {
            format!("referenced by {}", refs.join(", "))
        }
    });
    let reason = if blocked.is_some() {
        "DeletionBlocked"
    } else if refs.is_empty() {
        "Unused"
    } else {
        "Referenced"
    };
    let cond = reconcile::condition(
        reconcile::IN_USE,
        !refs.is_empty(),
        reason,
        &message,
        model.metadata.generation,
        &previous,
        Timestamp::now(),
    );
    let status = DeviceModelStatus {
        referenced_by: refs.to_vec(),
        conditions: vec![cond],
    };
    let same = model.status.as_ref().is_some_and(|s| {
        s.referenced_by == status.referenced_by
            && reconcile::same_conditions(&s.conditions, &status.conditions)
    });
    if !same {
        let patch = json!({"status": status});
        models
            .patch_status(
                model.metadata.name_str(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(())
}

fn error_policy<K>(_obj: Arc<K>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Runs both controllers until `shutdown`. Namespaced to `namespace` when given.
pub async fn run(ctx: Context, namespace: Option<String>, shutdown: CancellationToken) {
    let ctx = Arc::new(ctx);
    let (devices, models): (Api<Device>, Api<DeviceModel>) = match &namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    let device_ctl = Controller::new(devices.clone(), watcher::Config::default());
    let device_store = device_ctl.store();
    let device_ctl = device_ctl
        .watches(
            models.clone(),
            watcher::Config::default(),
            move |m: DeviceModel| {
                let ns = m.metadata.namespace_or_default().to_owned();
                let name = m.metadata.name_str().to_owned();
                device_store
                    .state()
                    .into_iter()
                    .filter(|d| {
                        d.metadata.namespace_or_default() == ns
                            && d.spec.model_name() == Some(name.as_str())
                    })
                    .map(|d| ObjectRef::from_obj(d.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile_device, error_policy, ctx.clone())
        .for_each(|res| {
            let m = ctx.metrics.clone();
            async move { m.reconciled("Device", res.is_ok()) }
        });
    let model_ctl = Controller::new(models, watcher::Config::default())
        .watches(devices, watcher::Config::default(), |d: Device| {
            d.spec
                .model_name()
                .map(|m| ObjectRef::<DeviceModel>::new(m).within(d.metadata.namespace_or_default()))
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile_model, error_policy, ctx.clone())
        .for_each(|res| {
            let m = ctx.metrics.clone();
            async move { m.reconciled("DeviceModel", res.is_ok()) }
        });
    tokio::join!(device_ctl, model_ctl);
}
