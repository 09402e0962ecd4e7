//! The resource policy of every socket this project serves: one [`ServerLimits`]
//! value configures the connection wrapper ([`super::AuthorityShim`]), the accept
//! loop ([`super::UdsListener::incoming_with`]) and the HTTP/2 settings of the
//! tonic server ([`ServerLimits::apply`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default for [`ServerLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default for [`ServerLimits::max_concurrent_streams`].
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Default for [`ServerLimits::max_header_list_size`]: 16 KiB, hyper's (and so
/// tonic's) own server default.
pub const DEFAULT_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Default for [`ServerLimits::max_header_block`]: 64 KiB.
pub const DEFAULT_MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Default for [`ServerLimits::handshake_timeout`]: 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`ServerLimits::idle_timeout`]: 5 min.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default for [`ServerLimits::keepalive_interval`]: 60 s.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// Default for [`ServerLimits::keepalive_timeout`]: 20 s.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default for [`ServerLimits::slot_wait`]: 1 s.
pub const DEFAULT_SLOT_WAIT: Duration = Duration::from_secs(1);
/// Default for [`ServerLimits::accept_backoff_min`]: 100 ms.
pub const DEFAULT_ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Default for [`ServerLimits::accept_backoff_max`]: 1 s.
pub const DEFAULT_ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What a peer may hold on one served socket. Every field has a default (the
/// `DEFAULT_*` constants of this module); change them with the `with_*` methods.
///
/// Enforced by the accept loop and the per-connection wrapper:
///
/// * at most [`max_connections`](Self::max_connections) connections at once per
///   listening socket (further capped at half the process's open-file soft
///   limit, see [`effective_max_connections`](Self::effective_max_connections));
/// * a connection must send the HTTP/2 preface within
///   [`handshake_timeout`](Self::handshake_timeout) and is closed after
///   [`idle_timeout`](Self::idle_timeout) without request traffic;
/// * a header block may take at most [`max_header_block`](Self::max_header_block)
///   bytes on the wire and [`max_header_list_size`](Self::max_header_list_size)
///   bytes decoded, or the connection is closed before it is buffered or decoded
///   any further;
/// * accept errors (out of file descriptors) pause accepting, from
///   [`accept_backoff_min`](Self::accept_backoff_min) doubling to
///   [`accept_backoff_max`](Self::accept_backoff_max).
///
/// Enforced by h2 once [`apply`](Self::apply)ed to the tonic server:
/// [`max_concurrent_streams`](Self::max_concurrent_streams) per connection,
/// the same header-list limit, and keepalive pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerLimits {
    /// Connections served at once on one listening socket (count, at least 1).
    /// When all are taken, a new connection is accepted and the connection that
    /// has gone longest without a request in flight (one that never sent a
    /// request first) is closed to make room; when every connection has a
    /// request in flight, the new one waits up to [`slot_wait`](Self::slot_wait)
    /// and is then closed at once.
    pub max_connections: usize,
    /// HTTP/2 streams (calls) in flight per connection (count): advertised as
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`, and the server runs at most this many
    /// handlers per connection.
    pub max_concurrent_streams: u32,
    /// Decoded size of one header list in bytes, counted as h2 does: name length
    /// plus value length plus 32 per field.
    pub max_header_list_size: u32,
    /// Encoded size of one header block in bytes: the payloads of its HEADERS
    /// frame and all its CONTINUATION frames together.
    pub max_header_block: usize,
    /// Time from accepting a connection until its 24-byte HTTP/2 preface must
    /// have arrived.
    pub handshake_timeout: Duration,
    /// A connection on which no request or response frame (HEADERS,
    /// CONTINUATION, DATA, RST_STREAM) has moved in either direction for this
    /// long is closed. Every DMI call is unary and answered within seconds, so
    /// this also ends a call that has stalled that long.
    pub idle_timeout: Duration,
    /// Interval of the server's HTTP/2 keepalive pings.
    pub keepalive_interval: Duration,
    /// A connection whose peer does not acknowledge a keepalive ping within this
    /// time is closed.
    pub keepalive_timeout: Duration,
    /// How long a new connection waits for a slot when every connection has a
    /// request in flight, before it is closed.
    pub slot_wait: Duration,
    /// First pause after a failed `accept` (e.g. `EMFILE`, out of file
    /// descriptors).
    pub accept_backoff_min: Duration,
    /// Longest pause between `accept` attempts while they keep failing.
    pub accept_backoff_max: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_header_list_size: DEFAULT_MAX_HEADER_LIST_SIZE,
            max_header_block: DEFAULT_MAX_HEADER_BLOCK,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            slot_wait: DEFAULT_SLOT_WAIT,
            accept_backoff_min: DEFAULT_ACCEPT_BACKOFF_MIN,
            accept_backoff_max: DEFAULT_ACCEPT_BACKOFF_MAX,
        }
    }
}

impl ServerLimits {
    /// Sets [`max_connections`](Self::max_connections); 0 is taken as 1.
    #[must_use]
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets [`max_concurrent_streams`](Self::max_concurrent_streams); 0 is taken as 1.
    #[must_use]
    pub fn with_max_concurrent_streams(mut self, n: u32) -> Self {
        self.max_concurrent_streams = n.max(1);
        self
    }

    /// Sets [`max_header_list_size`](Self::max_header_list_size) (decoded bytes).
    #[must_use]
    pub fn with_max_header_list_size(mut self, bytes: u32) -> Self {
        self.max_header_list_size = bytes;
        self
    }

    /// Sets [`max_header_block`](Self::max_header_block) (encoded bytes).
    #[must_use]
    pub fn with_max_header_block(mut self, bytes: usize) -> Self {
        self.max_header_block = bytes;
        self
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    #[must_use]
    pub fn with_handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    #[must_use]
    pub fn with_idle_timeout(mut self, t: Duration) -> Self {
        self.idle_timeout = t;
        self
    }

    /// Sets [`keepalive_interval`](Self::keepalive_interval) and
    /// [`keepalive_timeout`](Self::keepalive_timeout).
    #[must_use]
    pub fn with_keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    /// Sets [`slot_wait`](Self::slot_wait).
    #[must_use]
    pub fn with_slot_wait(mut self, t: Duration) -> Self {
        self.slot_wait = t;
        self
    }

    /// Sets [`accept_backoff_min`](Self::accept_backoff_min) and
    /// [`accept_backoff_max`](Self::accept_backoff_max) (a maximum below the
    /// minimum is raised to it).
    #[must_use]
    pub fn with_accept_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.accept_backoff_min = min;
        self.accept_backoff_max = max.max(min);
        self
    }

    /// Applies the HTTP/2 part of the limits to a tonic server builder:
    /// `max_concurrent_streams` and `concurrency_limit_per_connection` (both
    /// [`max_concurrent_streams`](Self::max_concurrent_streams)),
    /// `http2_max_header_list_size`, and the keepalive interval and timeout.
    /// Use it on every server that is fed by [`super::UdsListener::incoming_with`]
    /// with the same limits.
    pub fn apply<L>(&self, server: tonic::transport::Server<L>) -> tonic::transport::Server<L> {
        server
            .max_concurrent_streams(self.max_concurrent_streams)
            .concurrency_limit_per_connection(self.max_concurrent_streams as usize)
            .http2_max_header_list_size(self.max_header_list_size)
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
    }

    /// The connection limit actually used: [`max_connections`](Self::max_connections),
    /// but at most half of `open_files_soft_limit` (the process's `RLIMIT_NOFILE`
    /// soft limit, when known), so that peers of one socket can never use up the
    /// descriptors the rest of the process needs. Always at least 1.
    pub fn effective_max_connections(&self, open_files_soft_limit: Option<u64>) -> usize {
        let cap = open_files_soft_limit
            .map(|n| usize::try_from(n / 2).unwrap_or(usize::MAX))
            .unwrap_or(usize::MAX);
        self.max_connections.min(cap).max(1)
    }
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits` (Linux);
/// `None` when unlimited or unknown.
pub(crate) async fn open_files_soft_limit() -> Option<u64> {
    let text = tokio::fs::read_to_string("/proc/self/limits").await.ok()?;
    parse_open_files_soft_limit(&text)
}

fn parse_open_files_soft_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Lets one log line through per `every`, counting what it held back, so that a
/// peer cannot flood the log by repeating what gets logged.
#[derive(Debug)]
pub(crate) struct LogGate {
    every: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogGate {
    pub(crate) const fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were held
    /// back since the last one; `None` when this one is to be held back.
    pub(crate) fn check(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let l = ServerLimits::default();
        assert_eq!(l.max_connections, 256);
        assert_eq!(l.max_concurrent_streams, 100);
        assert_eq!(l.max_header_list_size, 16_384);
        assert_eq!(l.max_header_block, 65_536);
        assert_eq!(l.idle_timeout, Duration::from_secs(300));
        assert_eq!(l.accept_backoff_min, Duration::from_millis(100));
        assert_eq!(l.accept_backoff_max, Duration::from_secs(1));
    }

    #[test]
    fn connection_limit_leaves_half_the_descriptors_to_the_process() {
        let l = ServerLimits::default();
        assert_eq!(l.effective_max_connections(None), 256);
        assert_eq!(l.effective_max_connections(Some(1024)), 256);
        assert_eq!(l.effective_max_connections(Some(128)), 64);
        assert_eq!(l.effective_max_connections(Some(1)), 1);
        assert_eq!(l.with_max_connections(0).effective_max_connections(None), 1);
    }

    #[test]
    fn parses_proc_self_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_soft_limit(text), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_soft_limit(unlimited), None);
        assert_eq!(parse_open_files_soft_limit(""), None);
    }

    #[test]
    fn log_gate_lets_one_line_through_per_period_and_counts_the_rest() {
        let gate = LogGate::new(Duration::from_millis(200));
        assert_eq!(gate.check(), Some(0));
        assert_eq!(gate.check(), None);
        assert_eq!(gate.check(), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(gate.check(), Some(2));
    }

    #[test]
    fn builders_clamp_nonsense() {
        let l = ServerLimits::default()
            .with_max_concurrent_streams(0)
            .with_accept_backoff(Duration::from_millis(50), Duration::from_millis(10));
        assert_eq!(l.max_concurrent_streams, 1);
        assert_eq!(l.accept_backoff_max, Duration::from_millis(50));
    }
}
