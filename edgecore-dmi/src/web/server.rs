//! The dashboard's TCP listener: bounded connections, a deadline for request
//! headers, back-off on accept errors, and a graceful close at shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::HttpLimits;

/// Open connections get this long to finish after shutdown starts.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Bytes of a request head buffered at most (hyper's minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Serves `router` on `listener` with `limits` until `shutdown`.
///
/// At most [`HttpLimits::max_connections`] connections are served at once;
/// further ones wait in the kernel's backlog. A connection that has not sent
/// a complete request head within [`HttpLimits::header_timeout`] (the first
/// one, or the next one on a kept-alive connection) is closed. Accept errors
/// (out of descriptors) back off from 100 ms to 1 s.
///
/// Cancellation safe: dropping the future drops the listener and stops
/// accepting; connections already open end with their tasks.
///
/// # Errors
/// None so far; the `Result` is for the task that runs it.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                // Never closed; stop rather than spin if it were.
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => {
                backoff = Duration::from_millis(100);
                stream
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "dashboard: accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        let header_timeout = limits.header_timeout;
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEAD_BYTES);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await {
                        Ok(r) => r,
                        Err(_) => Ok(()),
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "dashboard: connection ended");
            }
        });
    }
    connections.close();
    if tokio::time::timeout(CLOSE_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::debug!("dashboard: connections still open at exit");
    }
    Ok(())
}
