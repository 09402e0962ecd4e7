//! Stopping cleanly: the signal, and the wait for tasks to finish.

use std::time::Duration;

use tokio_util::task::TaskTracker;

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C.
pub async fn terminate_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Closes `tracker` and waits up to `grace` for its tasks; logs when they do
/// not all finish in time. Returns whether they did.
pub async fn drain(tracker: &TaskTracker, grace: Duration) -> bool {
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("forced exit after {grace:?} grace period");
        return false;
    }
    true
}
