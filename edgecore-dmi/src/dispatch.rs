//! One dispatcher task per mapper: applies [`Hub::plan`] with the mapper's
//! persistent channel, backing off while the mapper is unreachable.

use std::sync::Arc;
use std::time::Duration;

use dmi_proto::v1beta1 as pb;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::hub::{Action, Hub};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

fn split(k: &str) -> (String, String) {
    let (ns, name) = k.split_once('/').unwrap_or(("default", k));
    (ns.to_owned(), name.to_owned())
}

/// Runs until `shutdown`.
pub(crate) async fn run(
    hub: Arc<Hub>,
    name: String,
    kick: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = kick.notified() => {}
        }
        loop {
            let actions = hub.plan(&name);
            if actions.is_empty() {
                backoff = BACKOFF_MIN;
                break;
            }
            let Some(mut client) = hub.client(&name) else {
                return;
            };
            let mut unreachable = None;
            for action in actions {
                let res = match &action {
                    Action::CreateModel(_, m) => client
                        .create_device_model(pb::CreateDeviceModelRequest {
                            model: Some(m.clone()),
                        })
                        .await
                        .map(|_| ()),
                    Action::UpdateModel(_, m) => client
                        .update_device_model(pb::UpdateDeviceModelRequest {
                            model: Some(m.clone()),
                        })
                        .await
                        .map(|_| ()),
                    Action::RemoveModel(k) => {
                        let (model_namespace, model_name) = split(k);
                        client
                            .remove_device_model(pb::RemoveDeviceModelRequest {
                                model_name,
                                model_namespace,
                            })
                            .await
                            .map(|_| ())
                    }
                    Action::Register(_, d) => client
                        .register_device(pb::RegisterDeviceRequest {
                            device: Some(d.clone()),
                        })
                        .await
                        .map(|_| ()),
                    Action::Update(_, d) => client
                        .update_device(pb::UpdateDeviceRequest {
                            device: Some(d.clone()),
                        })
                        .await
                        .map(|_| ()),
                    Action::Remove(k) => {
                        let (device_namespace, device_name) = split(k);
                        client
                            .remove_device(pb::RemoveDeviceRequest {
                                device_name,
                                device_namespace,
                            })
                            .await
                            .map(|_| ())
                    }
                };
                match res {
                    Ok(()) => {
                        tracing::info!(mapper = %name, action = %describe(&action), "delivered");
                        hub.action_done(&name, &action, None);
                    }
                    Err(s)
                        if matches!(
                            s.code(),
                            Code::Unavailable
                                | Code::DeadlineExceeded
                                | Code::Cancelled
                                | Code::Unknown
                        ) =>
                    {
                        unreachable = Some(format!("{}: {}", describe(&action), s.message()));
                        break;
                    }
                    Err(s) => {
                        tracing::error!(mapper = %name, action = %describe(&action), code = ?s.code(), error = %s.message(), "mapper refused");
                        hub.action_done(&name, &action, Some(s.message().to_owned()));
                    }
                }
            }
            if let Some(e) = unreachable {
                tracing::warn!(mapper = %name, retry_in = ?backoff, "mapper unreachable: {e}");
                hub.mapper_unreachable(&name, e);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn describe(a: &Action) -> String {
    match a {
        Action::CreateModel(k, _) => format!("CreateDeviceModel {k}"),
        Action::UpdateModel(k, _) => format!("UpdateDeviceModel {k}"),
        Action::RemoveModel(k) => format!("RemoveDeviceModel {k}"),
        Action::Register(k, _) => format!("RegisterDevice {k}"),
        Action::Update(k, _) => format!("UpdateDevice {k}"),
        Action::Remove(k) => format!("RemoveDevice {k}"),
    }
}
