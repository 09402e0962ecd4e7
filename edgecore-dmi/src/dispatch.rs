//! One dispatcher task per mapper: applies [`Hub::plan`] with the mapper's
//! persistent channel, backing off while the mapper is unreachable. A refusal
//! (the mapper answered with an error) is recorded on that device or model and
//! never holds up the others.

use std::sync::Arc;
use std::time::Duration;

use dmi_proto::status::{ErrorClass, classify};
use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_mapper_service_client::DeviceMapperServiceClient;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::hub::{Action, Hub};
use crate::metrics::ActionResult;

/// First delay after a mapper could not be reached.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest delay between attempts to reach a mapper.
const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// Runs until `shutdown`.
///
/// Each round applies [`Hub::plan`]. An answered error is a refusal of that one
/// action ([`Hub::action_refused`]): the round goes on with the next action and
/// the refused one is offered again on its own schedule. Only a transport failure
/// (see [`dmi_proto::status::classify`]) stops the round and backs off the whole
/// mapper. Throttling by the mapper is treated like a transport failure: back off.
pub(crate) async fn run(
    hub: Arc<Hub>,
    name: String,
    kick: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = edge_rt::Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut next_retry: Option<Instant> = None;
    loop {
        let retry = async {
            match next_retry {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = kick.notified() => {}
            _ = retry => {}
        }
        loop {
            let plan = hub.plan(&name);
            next_retry = plan.next_retry.map(Instant::from_std);
            if plan.actions.is_empty() {
                backoff.reset();
                break;
            }
            let Some(mut client) = hub.client(&name) else {
                return;
            };
            let mut unreachable = None;
            let mut timeouts = 0;
            for action in plan.actions {
                let res = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = call(&mut client, &action) => r,
                };
                match res {
                    Ok(()) => {
                        timeouts = 0;
                        tracing::info!(mapper = %name, action = %describe(&action), "delivered");
                        hub.metrics().action(action_name(&action), ActionResult::Ok);
                        hub.action_done(&name, &action);
                    }
                    Err(s) if is_timeout(&s) && timeouts == 0 => {
                        // One call without an answer: that device's problem
                        // (a mapper stuck on it), held back like a refusal,
                        // unless the next call times out too.
                        timeouts += 1;
                        hub.metrics()
                            .action(action_name(&action), ActionResult::Timeout);
                        tracing::warn!(
                            mapper = %name, action = %describe(&action), error = %s.message(),
                            "no answer in time; other devices go on, this one is offered again later"
                        );
                        hub.action_refused(
                            &name,
                            &action,
                            format!("no answer in time ({})", s.message()),
                        );
                    }
                    Err(s) => match classify(&s) {
                        ErrorClass::Transport | ErrorClass::Throttled => {
                            hub.metrics().action(
                                action_name(&action),
                                if is_timeout(&s) {
                                    ActionResult::Timeout
                                } else {
                                    ActionResult::Transport
                                },
                            );
                            unreachable = Some(format!("{}: {}", describe(&action), s.message()));
                            break;
                        }
                        ErrorClass::Refused => {
                            timeouts = 0;
                            hub.metrics()
                                .action(action_name(&action), ActionResult::Refused);
                            tracing::warn!(
                                mapper = %name, action = %describe(&action), code = ?s.code(),
                                error = %s.message(), "mapper refused; other devices go on, this one is offered again later"
                            );
                            hub.action_refused(&name, &action, s.message().to_owned());
                        }
                    },
                }
            }
            if let Some(e) = unreachable {
                let delay = backoff.next_delay();
                tracing::warn!(mapper = %name, retry_in = ?delay, "mapper unreachable: {e}");
                if hub.mapper_unreachable(&name, e) {
                    return;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// A call that reached the mapper but got no answer in time (tonic's own
/// request timeout reports `Cancelled` "Timeout expired"; a server deadline is
/// `DeadlineExceeded`).
fn is_timeout(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::DeadlineExceeded
        || (s.code() == tonic::Code::Cancelled
            && s.message().to_ascii_lowercase().contains("timeout"))
}

/// Makes the call for one action.
async fn call(
    client: &mut DeviceMapperServiceClient<Channel>,
    action: &Action,
) -> Result<(), tonic::Status> {
    match action {
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
        Action::RemoveModel(k) => client
            .remove_device_model(pb::RemoveDeviceModelRequest {
                model_name: k.name().to_owned(),
                model_namespace: k.namespace().to_owned(),
            })
            .await
            .map(|_| ()),
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
        Action::Remove(k) => client
            .remove_device(pb::RemoveDeviceRequest {
                device_name: k.name().to_owned(),
                device_namespace: k.namespace().to_owned(),
            })
            .await
            .map(|_| ()),
    }
}

/// The `action` label of `dispatch_actions_total` ([`crate::metrics`]).
fn action_name(a: &Action) -> &'static str {
    match a {
        Action::CreateModel(..) => "create_model",
        Action::UpdateModel(..) => "update_model",
        Action::RemoveModel(_) => "remove_model",
        Action::Register(..) => "register_device",
        Action::Update(..) => "update_device",
        Action::Remove(_) => "remove_device",
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
