//! The local admin API, HTTP/1.1 over a Unix socket: what `edgecore-dmi devices`
//! reads from the running server.
//!
//! * `GET /v1/status`: devices (state, desired/reported per property, errors),
//!   mappers and device-source errors, as JSON ([`StatusView`]).

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::views::StatusView;

async fn status(State(hub): State<Arc<Hub>>) -> Json<StatusView> {
    Json(hub.status())
}

/// Serves the admin API on `path` until `shutdown`.
pub async fn serve(path: &Path, hub: Arc<Hub>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (listener, _guard) = dmi_proto::transport::bind(path)
        .await?
        .into_listener()
        .ok_or_else(|| anyhow::anyhow!("admin socket listener already taken"))?;
    let router = axum::Router::new()
        .route("/v1/status", get(status))
        .with_state(hub);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// Fetches `/v1/status` from a running server.
pub async fn fetch_status(admin_socket: &Path) -> anyhow::Result<StatusView> {
    let stream = tokio::net::UnixStream::connect(admin_socket).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach edgecore-dmi at {}: {e} (is it running? use --admin-socket or --dmi-socket)",
            admin_socket.display()
        )
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get("/v1/status")
        .header("host", "localhost")
        .body(http_body_util::Empty::<axum::body::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        anyhow::bail!("edgecore-dmi answered {}", resp.status());
    }
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}
