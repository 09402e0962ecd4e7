//! The local admin API, HTTP/1.1 over a Unix socket: what `edgecore-dmi devices`
//! reads from the running server.
//!
//! * `GET /v1/status`: devices (state, desired/reported per property, errors),
//!   mappers and device-source errors, as JSON ([`StatusView`]);
//! * `GET /metrics`: the node's Prometheus metrics ([`crate::metrics`]), e.g.
//!   `curl --unix-socket /etc/kubeedge/edgecore-dmi.admin.sock http://localhost/metrics`.
//!
//! Like the DMI sockets, the admin socket bounds what a peer can hold
//! ([`AdminLimits`]): at most 16 connections at once (further ones wait in
//! the kernel's backlog until one ends), a connection silent for 30 s is
//! closed, and accept errors (out of descriptors) back off from 100 ms to 1 s
//! instead of spinning.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::views::StatusView;

/// Bounds of the admin socket.
#[derive(Debug, Clone, Copy)]
pub struct AdminLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// A connection with no bytes either way for this long is closed.
    pub idle: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self {
            max_connections: 16,
            idle: Duration::from_secs(30),
        }
    }
}

/// The admin listener with its bounds (see the module docs).
struct Limited {
    inner: UnixListener,
    permits: Arc<Semaphore>,
    idle: Duration,
    backoff: Duration,
}

impl axum::serve::Listener for Limited {
    type Io = Timed;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                // The semaphore is never closed; wait rather than spin if it were.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((io, addr)) => {
                    self.backoff = Duration::from_millis(100);
                    return (Timed::new(io, permit, self.idle), addr);
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?self.backoff, "admin socket: accept failed");
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that holds one slot and ends after `idle` without traffic.
struct Timed {
    io: UnixStream,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl Timed {
    fn new(io: UnixStream, permit: OwnedSemaphorePermit, idle: Duration) -> Self {
        Self {
            io,
            _permit: permit,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn touched(&mut self) {
        let at = Instant::now() + self.idle;
        self.deadline.as_mut().reset(at);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "admin connection idle")
}

impl AsyncRead for Timed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                self.touched();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.touched();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

async fn status(State(hub): State<Arc<Hub>>) -> Json<StatusView> {
    Json(hub.status())
}

/// Serves the admin API on `path` until `shutdown`, with the default
/// [`AdminLimits`].
///
/// # Errors
/// When the socket cannot be claimed or the server fails.
pub async fn serve(path: &Path, hub: Arc<Hub>, shutdown: CancellationToken) -> anyhow::Result<()> {
    serve_with(path, hub, shutdown, AdminLimits::default()).await
}

/// [`serve`] with explicit limits.
///
/// # Errors
/// As [`serve`].
pub async fn serve_with(
    path: &Path,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
    limits: AdminLimits,
) -> anyhow::Result<()> {
    let (listener, _guard) = dmi_proto::transport::bind(path)
        .await?
        .into_listener()
        .ok_or_else(|| anyhow::anyhow!("admin socket listener already taken"))?;
    let listener = Limited {
        inner: listener,
        permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        idle: limits.idle,
        backoff: Duration::from_millis(100),
    };
    let router = axum::Router::new()
        .route("/v1/status", get(status))
        .route("/metrics", get(crate::metrics::handler))
        .with_state(hub);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// Fetches `/v1/status` from a running server.
///
/// # Errors
/// When the socket cannot be reached, the server answers with an error
/// status, or the body is not a [`StatusView`].
pub async fn fetch_status(admin_socket: &Path) -> anyhow::Result<StatusView> {
    let body = fetch(admin_socket, "/v1/status").await?;
    Ok(serde_json::from_slice(&body)?)
}

/// Fetches `path` (such as `/metrics`) from a running server's admin socket.
///
/// # Errors
/// When the socket cannot be reached or the server answers with an error
/// status.
pub async fn fetch(admin_socket: &Path, path: &str) -> anyhow::Result<axum::body::Bytes> {
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
    let req = hyper::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::<axum::body::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        anyhow::bail!("edgecore-dmi answered {}", resp.status());
    }
    Ok(resp.into_body().collect().await?.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_connections_are_bounded_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let hub = Arc::new(Hub::new(
            dmi_proto::config_data::NumberEncoding::Stock,
            dmi_proto::transport::ChannelOptions::default(),
            Box::new(|_, _| {}),
        ));
        let shutdown = CancellationToken::new();
        let limits = AdminLimits {
            max_connections: 2,
            idle: Duration::from_millis(300),
        };
        let (p, sd) = (path.clone(), shutdown.clone());
        let server = tokio::spawn(async move { serve_with(&p, hub, sd, limits).await });
        for _ in 0..50 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Peers that connect and say nothing hold every slot...
        let mut idle = Vec::new();
        for _ in 0..5 {
            idle.push(UnixStream::connect(&path).await.unwrap());
        }
        // ...until they are closed for silence; a real client then gets served.
        let started = std::time::Instant::now();
        let view = tokio::time::timeout(Duration::from_secs(5), fetch_status(&path))
            .await
            .expect("served within the idle timeout")
            .unwrap();
        assert!(view.devices.is_empty());
        assert!(started.elapsed() < Duration::from_secs(3));
        shutdown.cancel();
        let _ = server.await;
    }
}
