//! The Unix-socket transport of DMI, shared by edgecore-dmi and every mapper.
//!
//! * [`bind`] claims a socket path the way a daemon should: it refuses when a live
//!   server already answers there, removes a stale socket file, creates the
//!   parent directory and sets mode 0660.
//! * [`UdsListener::incoming_with`] turns the listener into the connection stream
//!   tonic's `serve_with_incoming_shutdown` takes, within [`ServerLimits`], with
//!   every connection wrapped in [`AuthorityShim`] so stock grpc-go clients are
//!   served (see its docs). [`ServerLimits::apply`] sets the matching HTTP/2
//!   limits on the tonic server.
//! * [`channel`] opens a persistent, lazily connected tonic channel to a socket
//!   path; tonic reconnects it after failures, so callers keep one per peer.
//!
//! # Limits
//!
//! Everything a peer can hold on a served socket is bounded, by one policy
//! ([`ServerLimits`]; the defaults are given here) applied in one place:
//!
//! * **Connections**: 256 per listening socket, and at most half the process's
//!   open-file soft limit. When all are taken, the new connection is accepted
//!   and the connection idle longest (no request in flight; one that never sent
//!   a request goes first) is closed to make room; if every connection has a
//!   request in flight, the newcomer waits up to 1 s for a free slot and is then
//!   closed at once. So idle peers cannot lock real clients out, no call is cut
//!   short, a refused client learns it at once instead of hanging in the
//!   kernel's backlog, and one socket's peers can never use up the descriptors
//!   the rest of the process needs. At most one accepted connection beyond the
//!   limit exists at a time (the one waiting for a slot).
//! * **Time**: the HTTP/2 preface within 10 s of connecting; a connection with
//!   no request traffic for 5 min is closed (PING, SETTINGS and WINDOW_UPDATE
//!   frames do not count as traffic); keepalive pings every 60 s, and the
//!   connection is closed when one is not answered within 20 s.
//! * **Streams**: 100 in flight per connection
//!   (`SETTINGS_MAX_CONCURRENT_STREAMS`, and tonic's per-connection
//!   concurrency limit).
//! * **Header blocks**: 64 KiB on the wire (HEADERS + CONTINUATION, checked from
//!   the frame headers before anything is buffered) and 16 KiB decoded (h2's
//!   `max_header_list_size` semantics: name + value + 32 per field, checked
//!   while decoding); a block over either limit drops the connection (see
//!   [`AuthorityShim`]).
//! * **Accept errors** (`EMFILE`, `ENFILE`, ...): accepting pauses for 100 ms,
//!   doubling up to 1 s while the errors last, with at most one log line per
//!   10 s, instead of retrying in a busy loop.
//!
//! Connections closed for idleness end without a GOAWAY: h2 sees the end of its
//! input, as if the peer had closed. Clients with no call in flight lose
//! nothing; tonic and grpc-go channels reconnect on their next call.

mod accept;
mod authority;
mod conns;
mod frames;
mod limits;

pub use authority::AuthorityShim;
pub use limits::{
    DEFAULT_ACCEPT_BACKOFF_MAX, DEFAULT_ACCEPT_BACKOFF_MIN, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BLOCK,
    DEFAULT_MAX_HEADER_LIST_SIZE, DEFAULT_SLOT_WAIT, ServerLimits,
};

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
    /// The process's `RLIMIT_NOFILE` soft limit when bound, if known.
    open_files_soft_limit: Option<u64>,
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

    /// The connection stream for tonic with the default [`ServerLimits`]; see
    /// [`Self::incoming_with`].
    pub fn incoming(
        self,
    ) -> impl Stream<Item = io::Result<AuthorityShim<UnixStream>>> + Send + 'static {
        self.incoming_with(ServerLimits::default())
    }

    /// The connection stream for tonic, each connection wrapped in
    /// [`AuthorityShim`] and holding one of the socket's connection slots until
    /// it closes (see the module docs for the limits). Pair it with
    /// [`ServerLimits::apply`] on the server builder, with the same `limits`.
    ///
    /// The stream never yields an error and never ends: failing `accept` calls
    /// are retried after a pause and logged. The socket file is removed when the
    /// stream is dropped.
    pub fn incoming_with(
        mut self,
        limits: ServerLimits,
    ) -> impl Stream<Item = io::Result<AuthorityShim<UnixStream>>> + Send + 'static {
        let max = limits.effective_max_connections(self.open_files_soft_limit);
        if max < limits.max_connections {
            tracing::info!(
                path = %self.path.display(),
                max_connections = max,
                open_files_soft_limit = self.open_files_soft_limit,
                "connection limit lowered to half the open-file limit"
            );
        }
        let accept = self
            .listener
            .take()
            .map(|l| accept::AcceptLoop::new(l, max, &limits));
        let guard = SocketFileGuard(std::mem::take(&mut self.path));
        futures::stream::unfold((accept, guard), move |(mut accept, guard)| async move {
            let (conn, slot) = accept.as_mut()?.next().await;
            let conn = AuthorityShim::limited(conn, slot, &limits);
            Some((Ok(conn), (accept, guard)))
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
        open_files_soft_limit: limits::open_files_soft_limit().await,
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
