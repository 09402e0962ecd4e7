//! Registration with EdgeCore and the report sender.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

use crate::driver::Driver;
use crate::report::Upstream;
use crate::runtime::Panel;

/// How often the EdgeCore socket file is checked for a restart.
const SOCKET_POLL: Duration = Duration::from_secs(1);

type Client = DeviceManagerServiceClient<Channel>;

fn is_connection_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

/// Sends queued reports until shutdown, each lane in order, lanes concurrently.
/// A connection failure asks the registration loop to register again (EdgeCore
/// may have restarted).
pub(crate) async fn report_loop(
    client: Client,
    lanes: Vec<mpsc::Receiver<Upstream>>,
    reregister: Arc<Notify>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) {
    let all = futures::future::join_all(lanes.into_iter().map(|mut rx| {
        let mut client = client.clone();
        let reregister = reregister.clone();
        let metrics = metrics.clone();
        async move {
            while let Some(msg) = rx.recv().await {
                if !send_one(&mut client, msg, &reregister).await {
                    metrics.reports_failed.inc();
                }
            }
        }
    }));
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = all => {}
    }
}

/// Sends one report; false when it did not arrive.
async fn send_one(client: &mut Client, msg: Upstream, reregister: &Notify) -> bool {
    let (what, res) = match msg {
        Upstream::Status(r) => {
            let what = format!("twins of {}/{}", r.device_namespace, r.device_name);
            (what, client.report_device_status(r).await.map(|_| ()))
        }
        Upstream::State(r) => {
            let what = format!("state of {}/{}", r.device_namespace, r.device_name);
            (what, client.report_device_states(r).await.map(|_| ()))
        }
    };
    let Err(status) = res else { return true };
    if is_connection_error(status.code()) {
        tracing::debug!(%what, error = %status.message(), "report failed; EdgeCore unreachable");
        reregister.notify_one();
    } else {
        tracing::warn!(%what, code = ?status.code(), error = %status.message(), "EdgeCore refused report");
    }
    false
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
pub(crate) async fn register_loop<D: Driver>(
    mut client: Client,
    info: pb::MapperInfo,
    edgecore_sock: PathBuf,
    panel: Arc<Panel<D>>,
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
                let resp = resp.into_inner();
                tracing::info!(
                    edgecore = %edgecore_sock.display(),
                    devices = resp.device_list.len(),
                    models = resp.model_list.len(),
                    "registered with EdgeCore"
                );
                for e in panel.sync(&resp.model_list, &resp.device_list) {
                    tracing::error!(error = %e, "device or model from EdgeCore not usable");
                }
            }
            Err(status) => {
                tracing::warn!(
                    edgecore = %edgecore_sock.display(), code = ?status.code(), error = %status.message(),
                    retry_in = ?delay, "registration failed"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(backoff.1);
                continue;
            }
        }
        // Registered: wait for a reason to register again.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = reregister.notified() => {
                    tracing::info!("reports failing; registering again once EdgeCore answers");
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
