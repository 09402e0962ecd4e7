//! Registration with EdgeCore and the report sender.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dmi_proto::status::{ErrorClass, classify};
use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::convert::{state_request, status_request};
use super::server::Devices;
use crate::twin::{Delivery, Pacer, Reporter};

/// Retry delay of a registration EdgeCore answered with throttling.
const THROTTLED_REGISTER_RETRY: Duration = Duration::from_millis(1500);

/// How often the EdgeCore socket file is checked for a restart.
const SOCKET_POLL: Duration = Duration::from_secs(1);

type Client = DeviceManagerServiceClient<Channel>;

/// Senders working at once while EdgeCore does not throttle.
pub(crate) const REPORT_SENDERS: usize = 8;
/// First pause of a sender after a transport failure; doubles up to [`TRANSPORT_PAUSE_MAX`].
const TRANSPORT_PAUSE_MIN: Duration = Duration::from_millis(200);
const TRANSPORT_PAUSE_MAX: Duration = Duration::from_secs(5);

/// Sends coalesced reports until shutdown with [`REPORT_SENDERS`] senders, each
/// taking one device at a time (see [`crate::report`]), paced by `pacer` once
/// EdgeCore throttles.
///
/// Failed calls are classified ([`dmi_proto::status::classify`]): a transport
/// failure keeps the data, pauses that sender and asks the registration loop to
/// register again (EdgeCore may have restarted); throttling keeps the data and
/// the registration and slows the pace; a refusal drops that report.
pub(crate) async fn report_loop(
    client: Client,
    reporter: Reporter,
    pacer: Arc<Pacer>,
    reregister: Arc<Notify>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) {
    let all = futures::future::join_all((0..REPORT_SENDERS).map(|_| {
        let mut client = client.clone();
        let (reporter, pacer, reregister, metrics) = (
            reporter.clone(),
            pacer.clone(),
            reregister.clone(),
            metrics.clone(),
        );
        async move {
            let mut pause = TRANSPORT_PAUSE_MIN;
            loop {
                let batch = reporter.next(pacer.is_pacing()).await;
                let mut transport = false;
                let status = match status_request(&batch) {
                    Some(r) => {
                        let what = format!("twins of {}", batch.id);
                        pacer.acquire().await;
                        let res = client.report_device_status(r).await.map(|_| ());
                        deliver(&what, res, &pacer, &metrics, &mut transport)
                    }
                    None => Delivery::None,
                };
                let state = match state_request(&batch) {
                    Some(r) if !transport => {
                        let what = format!("state of {}", batch.id);
                        pacer.acquire().await;
                        let res = client.report_device_states(r).await.map(|_| ());
                        deliver(&what, res, &pacer, &metrics, &mut transport)
                    }
                    Some(_) => Delivery::Retry,
                    None => Delivery::None,
                };
                reporter.finish(batch, status, state);
                if transport {
                    reregister.notify_one();
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(TRANSPORT_PAUSE_MAX);
                } else {
                    pause = TRANSPORT_PAUSE_MIN;
                }
            }
        }
    }));
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = all => {}
    }
}

/// Classifies one report call's result; sets `transport` on a transport failure.
fn deliver(
    what: &str,
    res: Result<(), tonic::Status>,
    pacer: &Pacer,
    metrics: &crate::metrics::Metrics,
    transport: &mut bool,
) -> Delivery {
    let Err(status) = res else {
        pacer.accepted();
        return Delivery::Delivered;
    };
    metrics.reports_failed.inc();
    match classify(&status) {
        ErrorClass::Transport => {
            tracing::debug!(%what, error = %status.message(), "report failed; EdgeCore unreachable");
            *transport = true;
            Delivery::Retry
        }
        ErrorClass::Throttled => {
            metrics.reports_throttled.inc();
            tracing::debug!(%what, error = %status.message(), "report throttled by EdgeCore");
            pacer.throttled();
            Delivery::Retry
        }
        ErrorClass::Refused => {
            tracing::warn!(%what, code = ?status.code(), error = %status.message(), "EdgeCore refused report");
            Delivery::Refused
        }
    }
}

/// Identity of the socket file, to notice an EdgeCore restart (a new socket).
async fn socket_identity(path: &PathBuf) -> Option<(u64, u64)> {
    tokio::fs::metadata(path)
        .await
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Registers with EdgeCore (with backoff until it answers), applies the devices
/// and models it returns, then waits for a reason to register again: the
/// EdgeCore socket was replaced, or reports started failing.
pub(crate) async fn register_loop(
    mut client: Client,
    info: pb::MapperInfo,
    edgecore_sock: PathBuf,
    devices: Arc<Devices>,
    reregister: Arc<Notify>,
    backoff: (Duration, Duration),
    shutdown: CancellationToken,
) {
    let mut delay = backoff.0;
    loop {
        let ident = socket_identity(&edgecore_sock).await;
        let req = pb::MapperRegisterRequest {
            with_data: true,
            mapper: Some(info.clone()),
        };
        let res = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = client.mapper_register(req) => r,
        };
        match res {
            Ok(resp) => {
                delay = backoff.0;
                // Report failures from before this registration asked for it
                // already; a stale request would register twice.
                let _ = futures::FutureExt::now_or_never(reregister.notified());
                let resp = resp.into_inner();
                tracing::info!(
                    edgecore = %edgecore_sock.display(),
                    devices = resp.device_list.len(),
                    models = resp.model_list.len(),
                    "registered with EdgeCore"
                );
                for e in devices.sync(&resp.model_list, &resp.device_list) {
                    tracing::error!(error = %e, "device or model from EdgeCore not usable");
                }
            }
            Err(status) => {
                // Throttling says EdgeCore is there: ask again as soon as its
                // bucket has a token (stock: one per second), not after a long backoff.
                let wait = if classify(&status) == ErrorClass::Throttled {
                    THROTTLED_REGISTER_RETRY
                } else {
                    delay
                };
                tracing::warn!(
                    edgecore = %edgecore_sock.display(), code = ?status.code(), error = %status.message(),
                    retry_in = ?wait, "registration failed"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                if wait == delay {
                    delay = (delay * 2).min(backoff.1);
                }
                continue;
            }
        }
        // Registered: wait for a reason to register again.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = reregister.notified() => {
                    tracing::info!("EdgeCore unreachable; registering again once it answers");
                    // Let the connection settle before the first attempt.
                    tokio::time::sleep(backoff.0).await;
                    break;
                }
                _ = tokio::time::sleep(SOCKET_POLL) => {
                    let now = socket_identity(&edgecore_sock).await;
                    if now.is_some() && now != ident {
                        tracing::info!(edgecore = %edgecore_sock.display(), "EdgeCore socket replaced; registering again");
                        break;
                    }
                }
            }
        }
    }
}
