//! The Unix-socket transport of DMI, shared by edgecore-dmi and every mapper.
//!
//! * [`bind`] claims a socket path the way a daemon should: it refuses when a live
//!   server already answers there, removes a stale socket file, creates the
//!   parent directory and sets mode 0660.
//! * [`UdsListener::incoming`] turns the listener into the connection stream tonic's
//!   `serve_with_incoming_shutdown` takes, with every connection wrapped in
//!   [`AuthorityShim`] so stock grpc-go clients are served (see its docs).
//! * [`channel`] opens a persistent, lazily connected tonic channel to a socket
//!   path; tonic reconnects it after failures, so callers keep one per peer.

mod authority;

pub use authority::AuthorityShim;

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{Stream, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint};

/// File mode of the sockets this project creates: owner and group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// Why a socket could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another live server accepts connections on this path.
    #[error("another server is already listening on {0}; stop it or choose another socket path")]
    InUse(PathBuf),
    /// The path exists and is not a socket; it is left alone.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// Creating the parent directory, removing the stale socket, binding or setting
    /// the mode failed.
    #[error("cannot listen on {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
}

/// A bound Unix socket that removes its file when dropped.
#[derive(Debug)]
pub struct UdsListener {
    listener: Option<UnixListener>,
    path: PathBuf,
}

impl UdsListener {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The plain listener (for non-gRPC servers) and a guard that removes the
    /// socket file when dropped.
    pub fn into_listener(mut self) -> Option<(UnixListener, SocketFileGuard)> {
        let listener = self.listener.take()?;
        Some((listener, SocketFileGuard(std::mem::take(&mut self.path))))
    }

    /// The connection stream for tonic, each connection wrapped in [`AuthorityShim`].
    /// The socket file is removed when the returned stream is dropped.
    pub fn incoming(
        mut self,
    ) -> impl Stream<Item = io::Result<AuthorityShim<UnixStream>>> + Send + 'static {
        let listener = self.listener.take();
        let guard = SocketFileGuard(std::mem::take(&mut self.path));
        futures::stream::unfold((listener, guard), |(listener, guard)| async move {
            let l = listener.as_ref()?;
            let next = l.accept().await.map(|(s, _)| AuthorityShim::new(s));
            Some((next, (listener, guard)))
        })
        .boxed()
    }
}

impl Drop for UdsListener {
    fn drop(&mut self) {
        if self.listener.is_some() && !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes a socket file when dropped.
#[derive(Debug)]
pub struct SocketFileGuard(PathBuf);

impl Drop for SocketFileGuard {
    fn drop(&mut self) {
        // Shutdown path only: a single unlink, not worth a blocking-pool hop.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Claims `path` for a gRPC server. See the module docs for the rules.
///
/// Not cancellation safe in the sense that a cancelled call may leave a removed
/// stale socket behind; nothing else is changed.
pub async fn bind(path: &Path) -> Result<UdsListener, BindError> {
    let io_err = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent).await.map_err(io_err)?;
    }
    match tokio::fs::symlink_metadata(path).await {
        Ok(meta) => {
            if !meta.file_type().is_socket() {
                return Err(BindError::NotASocket(path.to_path_buf()));
            }
            let probe =
                tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await;
            if matches!(probe, Ok(Ok(_)) | Err(_)) {
                return Err(BindError::InUse(path.to_path_buf()));
            }
            tracing::info!(path = %path.display(), "removing stale socket");
            tokio::fs::remove_file(path).await.map_err(io_err)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .await
        .map_err(io_err)?;
    Ok(UdsListener {
        listener: Some(listener),
        path: path.to_path_buf(),
    })
}

/// Timeouts of a [`channel`].
#[derive(Debug, Clone, Copy)]
pub struct ChannelOptions {
    /// Deadline for establishing the socket connection.
    pub connect_timeout: Duration,
    /// Deadline for each call.
    pub request_timeout: Duration,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A persistent gRPC channel to the server at `path`. It connects on first use and
/// reconnects after failures; clone it freely (clones share the connection).
///
/// The client sends `:authority: localhost`, which every server accepts.
pub fn channel(path: impl Into<PathBuf>, opts: ChannelOptions) -> Channel {
    let path: PathBuf = path.into();
    Endpoint::from_static("http://localhost")
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.request_timeout)
        .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_refuses_live_server_and_replaces_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.sock");
        let first = bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
        match bind(&path).await {
            Err(BindError::InUse(p)) => assert_eq!(p, path),
            other => panic!("expected InUse, got {other:?}"),
        }
        // Leave a stale socket file behind: a listener dropped without cleanup.
        let std_listener =
            std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock")).unwrap();
        drop(std_listener);
        assert!(dir.path().join("stale.sock").exists());
        let again = bind(&dir.path().join("stale.sock")).await.unwrap();
        drop(again);
        assert!(
            !dir.path().join("stale.sock").exists(),
            "socket removed on drop"
        );
        drop(first);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn bind_refuses_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file.sock");
        std::fs::write(&path, b"x").unwrap();
        assert!(matches!(bind(&path).await, Err(BindError::NotASocket(_))));
        assert!(path.exists());
    }
}
