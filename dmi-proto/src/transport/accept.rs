//! The accept loop of a served socket: takes a slot for every new connection
//! ([`ConnRegistry`]) and pauses, rather than spins, while `accept` fails.
//!
//! A failing `accept` that is about the listener or the process (`EMFILE`,
//! `ENFILE`: out of file descriptors; `ENOBUFS`, `ENOMEM`) fails again at once
//! until something changes, so retrying immediately burns a whole core. The loop
//! pauses instead, from [`ServerLimits::accept_backoff_min`] doubling to
//! [`ServerLimits::accept_backoff_max`], back to the minimum after a success, and
//! logs at most one line per [`LOG_EVERY`]. Errors that concern one peer that gave
//! up (`ECONNABORTED`, `ECONNRESET`, `EINTR`) are retried at once.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

use super::conns::{ConnRegistry, ConnSlot};
use super::limits::{LogGate, ServerLimits};

/// At most one log line per kind of accept trouble in this period.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);

static ACCEPT_FAILED: LogGate = LogGate::new(LOG_EVERY);
static REFUSED: LogGate = LogGate::new(LOG_EVERY);

/// A source of new connections (a listener, or a fake in tests).
pub(crate) trait Acceptor: Send + 'static {
    /// One accepted connection.
    type Conn: Send + 'static;
    /// The next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl Acceptor for UnixListener {
    type Conn = UnixStream;

    async fn accept(&mut self) -> io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

/// Pauses between failing `accept` calls: `min`, doubling up to `max`.
#[derive(Debug, Clone)]
pub(crate) struct AcceptBackoff {
    min: Duration,
    max: Duration,
    next: Option<Duration>,
}

impl AcceptBackoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            next: None,
        }
    }

    /// The pause after one more failure.
    pub(crate) fn failed(&mut self) -> Duration {
        let pause = self.next.unwrap_or(self.min);
        self.next = Some(pause.saturating_mul(2).min(self.max));
        pause
    }

    /// Back to the shortest pause.
    pub(crate) fn reset(&mut self) {
        self.next = None;
    }
}

/// True for `accept` errors that concern only the peer being accepted.
fn is_peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Accepts connections within the limits; see the module docs.
#[derive(Debug)]
pub(crate) struct AcceptLoop<A> {
    acceptor: A,
    registry: Arc<ConnRegistry>,
    backoff: AcceptBackoff,
    slot_wait: Duration,
}

impl<A: Acceptor> AcceptLoop<A> {
    /// A loop over `acceptor` with `max_connections` slots (see
    /// [`ServerLimits::effective_max_connections`]).
    pub(crate) fn new(acceptor: A, max_connections: usize, limits: &ServerLimits) -> Self {
        Self {
            acceptor,
            registry: ConnRegistry::new(max_connections),
            backoff: AcceptBackoff::new(limits.accept_backoff_min, limits.accept_backoff_max),
            slot_wait: limits.slot_wait,
        }
    }

    /// The slots of this loop's socket.
    #[cfg(test)]
    pub(crate) fn registry(&self) -> &Arc<ConnRegistry> {
        &self.registry
    }

    /// The next connection and the slot it holds. Never fails: accept errors are
    /// waited out (see the module docs), connections that find no slot are
    /// closed.
    ///
    /// Cancellation safe: a cancelled call loses at most a connection it had
    /// accepted but not yet returned (closed, as a refused one).
    pub(crate) async fn next(&mut self) -> (A::Conn, ConnSlot) {
        loop {
            let conn = match self.acceptor.accept().await {
                Ok(conn) => {
                    self.backoff.reset();
                    conn
                }
                Err(e) if is_peer_error(&e) => continue,
                Err(e) => {
                    let pause = self.backoff.failed();
                    if let Some(held_back) = ACCEPT_FAILED.check() {
                        tracing::warn!(
                            error = %e,
                            pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                            connections = self.registry.len(),
                            held_back,
                            "accepting a connection failed; pausing accepts (out of file descriptors?)"
                        );
                    }
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            if let Some(slot) = self.registry.acquire(self.slot_wait).await {
                return (conn, slot);
            }
            drop(conn);
            if let Some(held_back) = REFUSED.check() {
                tracing::warn!(
                    max_connections = self.registry.max(),
                    held_back,
                    "connection limit reached and every connection has a request in flight; closed a new connection"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use tokio::time::Instant;

    #[test]
    fn backoff_doubles_to_the_maximum_and_resets() {
        let mut b = AcceptBackoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let got: Vec<u128> = (0..6).map(|_| b.failed().as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.failed(), Duration::from_millis(100));
    }

    /// Plays a script of accept results, then waits forever; records call times.
    struct Scripted {
        script: VecDeque<io::Result<u32>>,
        calls: Arc<Mutex<Vec<Instant>>>,
    }

    impl Acceptor for Scripted {
        type Conn = u32;

        async fn accept(&mut self) -> io::Result<u32> {
            self.calls.lock().unwrap().push(Instant::now());
            match self.script.pop_front() {
                Some(r) => r,
                None => std::future::pending().await,
            }
        }
    }

    fn emfile() -> io::Result<u32> {
        Err(io::Error::from_raw_os_error(24))
    }

    fn limits(min_ms: u64, max_ms: u64) -> ServerLimits {
        ServerLimits::default()
            .with_accept_backoff(Duration::from_millis(min_ms), Duration::from_millis(max_ms))
    }

    #[tokio::test]
    async fn out_of_descriptors_pauses_accepting_instead_of_spinning() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut script: VecDeque<_> = (0..6).map(|_| emfile()).collect();
        script.push_back(Ok(7));
        // A peer that gave up is retried at once and does not lengthen the pause.
        script.push_back(Err(io::ErrorKind::ConnectionAborted.into()));
        script.push_back(Ok(8));
        let acceptor = Scripted {
            script,
            calls: calls.clone(),
        };
        let mut lp = AcceptLoop::new(acceptor, 4, &limits(50, 100));
        let start = Instant::now();
        let (first, _slot1) = lp.next().await;
        let (second, _slot2) = lp.next().await;
        assert_eq!((first, second), (7, 8));
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 9, "one call per failure, no spinning");
        let gaps: Vec<u128> = calls
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        // Pauses of 50, 100, 100, 100, 100, 100 ms after the six failures.
        for (gap, want) in gaps.iter().zip([50, 100, 100, 100, 100, 100]) {
            assert!(*gap >= want, "gaps {gaps:?}");
        }
        assert!(
            gaps[6] < 40 && gaps[7] < 40,
            "no pause after success: {gaps:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn accept_errors_that_never_end_cost_a_few_calls_per_second() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let acceptor = Scripted {
            script: (0..10_000).map(|_| emfile()).collect(),
            calls: calls.clone(),
        };
        let mut lp = AcceptLoop::new(acceptor, 4, &limits(100, 1000));
        let r = tokio::time::timeout(Duration::from_millis(1600), lp.next()).await;
        assert!(r.is_err(), "nothing accepted");
        // 100 + 200 + 400 + 800 ms: five calls in 1.6 s (a spinning loop makes millions).
        let n = calls.lock().unwrap().len();
        assert!((4..=6).contains(&n), "{n} accept calls");
    }

    #[tokio::test]
    async fn with_every_slot_busy_a_newcomer_is_closed_after_the_wait() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let acceptor = Scripted {
            script: [Ok(1), Ok(2), Ok(3)].into(),
            calls: calls.clone(),
        };
        let limits = limits(10, 10).with_slot_wait(Duration::from_millis(150));
        let mut lp = AcceptLoop::new(acceptor, 1, &limits);
        let (one, busy) = lp.next().await;
        assert_eq!(one, 1);
        busy.set_in_flight(1);
        // 2 finds no slot within 150 ms and is dropped; 3 gets the slot freed then.
        let registry = lp.registry().clone();
        let freer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            drop(busy);
        });
        let start = Instant::now();
        let (three, _slot) = lp.next().await;
        assert_eq!(three, 3);
        assert!(start.elapsed() >= Duration::from_millis(240));
        assert_eq!(registry.len(), 1);
        freer.await.unwrap();
    }
}
