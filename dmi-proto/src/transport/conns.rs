//! The connection limit of one listening socket: a fixed number of slots, each
//! held by one connection wrapper for its whole life, and the choice of which
//! connection makes room when a new one arrives and every slot is taken.
//!
//! Why make room rather than refuse: the peers that fill a socket up are idle
//! ones (a client that connects and sends nothing, or one that sent a request
//! long ago and keeps the connection); refusing newcomers would let them lock
//! every real client out until the idle timeout. A connection is only closed
//! to make room when it has no request in flight, so no call is cut short; the
//! client simply reconnects on its next call (tonic and grpc-go channels do).
//! When every connection is busy, the newcomer waits a moment for one to end and
//! is then closed at once, a refusal the client sees immediately instead of a
//! `connect` stuck in the kernel's backlog.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Context;
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::limits::LogGate;

/// How often a newcomer waiting for a slot looks for a connection to close.
const EVICT_POLL: Duration = Duration::from_millis(50);

static EVICTING: LogGate = LogGate::new(Duration::from_secs(10));

/// The slots of one listening socket.
#[derive(Debug)]
pub(crate) struct ConnRegistry {
    permits: Arc<Semaphore>,
    max: usize,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    epoch: Instant,
}

/// What the registry knows of one connection, written by its wrapper.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// Streams the wrapper counts as open.
    in_flight: AtomicUsize,
    /// Whether the connection ever opened a stream.
    used: AtomicBool,
    /// Milliseconds since the registry's epoch of the last request traffic.
    last_activity_ms: AtomicU64,
    /// Set by the registry: close when no stream is open.
    evict: AtomicBool,
    waker: AtomicWaker,
}

/// One taken slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct ConnSlot {
    registry: Arc<ConnRegistry>,
    id: u64,
    state: Arc<ConnState>,
    _permit: OwnedSemaphorePermit,
}

impl ConnRegistry {
    /// A registry of `max` slots (at least 1).
    pub(crate) fn new(max: usize) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// The number of slots.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Connections holding a slot now.
    pub(crate) fn len(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A free slot, if there is one.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<ConnSlot> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(self.register(permit))
    }

    fn register(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> ConnSlot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            in_flight: AtomicUsize::new(0),
            used: AtomicBool::new(false),
            last_activity_ms: AtomicU64::new(self.now_ms()),
            evict: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        self.conns().insert(id, state.clone());
        ConnSlot {
            registry: self.clone(),
            id,
            state,
            _permit: permit,
        }
    }

    /// A slot for a new connection: a free one, or one made free by closing the
    /// connection that has gone longest without a request in flight. `None` when
    /// none became free within `wait` (every connection kept a request in flight).
    ///
    /// Cancellation safe: a cancelled call holds no slot (a connection it asked
    /// to close still closes).
    pub(crate) async fn acquire(self: &Arc<Self>, wait: Duration) -> Option<ConnSlot> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(slot) = self.try_acquire() {
                return Some(slot);
            }
            self.evict_one();
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let step = (deadline - now).min(EVICT_POLL);
            match tokio::time::timeout(step, self.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => return Some(self.register(permit)),
                Ok(Err(_closed)) => return None,
                Err(_elapsed) => {}
            }
        }
    }

    /// Asks one idle connection to close, unless one is already closing. Among
    /// the connections with no stream open, those that never opened one go first,
    /// then the one whose last request traffic is oldest.
    fn evict_one(&self) {
        let conns = self.conns();
        if conns.values().any(|c| c.evict.load(Ordering::Acquire)) {
            return;
        }
        let victim = conns
            .values()
            .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|c| {
                (
                    c.used.load(Ordering::Relaxed),
                    c.last_activity_ms.load(Ordering::Relaxed),
                )
            });
        if let Some(c) = victim {
            if let Some(held_back) = EVICTING.check() {
                tracing::warn!(
                    max_connections = self.max,
                    never_used = !c.used.load(Ordering::Relaxed),
                    held_back,
                    "connection limit reached; closing the connection idle longest to make room"
                );
            }
            c.evict.store(true, Ordering::Release);
            c.waker.wake();
        }
    }
}

impl ConnSlot {
    /// Records the streams now open (and that traffic happened).
    pub(crate) fn set_in_flight(&self, open: usize) {
        if open > 0 {
            self.state.used.store(true, Ordering::Relaxed);
        }
        self.state.in_flight.store(open, Ordering::Release);
    }

    /// Records request traffic now.
    pub(crate) fn touch(&self) {
        self.state
            .last_activity_ms
            .store(self.registry.now_ms(), Ordering::Relaxed);
    }

    /// Whether the registry asked this connection to close. Registers `cx` to be
    /// woken when it does. A request that came in meanwhile (`open > 0`) wins:
    /// the request is declined and the registry picks another connection.
    pub(crate) fn poll_evicted(&self, cx: &Context<'_>, open: usize) -> bool {
        self.state.waker.register(cx.waker());
        if !self.state.evict.load(Ordering::Acquire) {
            return false;
        }
        if open > 0 {
            self.state.evict.store(false, Ordering::Release);
            return false;
        }
        true
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.registry.conns().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;

    fn evicted(slot: &ConnSlot) -> bool {
        slot.poll_evicted(&Context::from_waker(noop_waker_ref()), 0)
    }

    #[tokio::test]
    async fn slots_are_limited_and_freed_on_drop() {
        let reg = ConnRegistry::new(2);
        let a = reg.try_acquire().unwrap();
        let _b = reg.try_acquire().unwrap();
        assert!(reg.try_acquire().is_none());
        assert_eq!(reg.len(), 2);
        drop(a);
        assert_eq!(reg.len(), 1);
        assert!(reg.try_acquire().is_some());
    }

    fn wait_for_slot(reg: &Arc<ConnRegistry>) -> tokio::task::JoinHandle<Option<ConnSlot>> {
        let reg = reg.clone();
        tokio::spawn(async move { reg.acquire(Duration::from_secs(5)).await })
    }

    #[tokio::test]
    async fn a_full_registry_closes_a_never_used_connection_first() {
        let reg = ConnRegistry::new(3);
        let used = reg.try_acquire().unwrap();
        used.set_in_flight(1);
        used.set_in_flight(0);
        let busy = reg.try_acquire().unwrap();
        busy.set_in_flight(2);
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Newest, but it never sent a request: it goes first.
        let never_used = reg.try_acquire().unwrap();
        let waiting = wait_for_slot(&reg);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(evicted(&never_used));
        assert!(!evicted(&used));
        assert!(!evicted(&busy));
        drop(never_used);
        assert!(waiting.await.unwrap().is_some(), "slot freed by eviction");
    }

    #[tokio::test]
    async fn among_used_connections_the_one_idle_longest_goes() {
        let reg = ConnRegistry::new(2);
        let old = reg.try_acquire().unwrap();
        old.set_in_flight(1);
        old.set_in_flight(0);
        old.touch();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let recent = reg.try_acquire().unwrap();
        recent.set_in_flight(1);
        recent.set_in_flight(0);
        recent.touch();
        let waiting = wait_for_slot(&reg);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(evicted(&old));
        assert!(!evicted(&recent));
        // Only one connection is asked to close per newcomer.
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(!evicted(&recent));
        drop(old);
        let new = waiting.await.unwrap();
        assert!(new.is_some());
        assert_eq!(reg.len(), 2);
    }

    #[tokio::test]
    async fn a_request_that_arrives_first_declines_the_eviction() {
        let reg = ConnRegistry::new(1);
        let only = reg.try_acquire().unwrap();
        let waiting = {
            let reg = reg.clone();
            tokio::spawn(async move { reg.acquire(Duration::from_millis(300)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The wrapper sees the eviction request with a stream open: declined.
        assert!(!only.poll_evicted(&Context::from_waker(noop_waker_ref()), 1));
        only.set_in_flight(1);
        assert!(
            waiting.await.unwrap().is_none(),
            "a busy connection is never closed to make room"
        );
        assert_eq!(reg.len(), 1);
    }
}
