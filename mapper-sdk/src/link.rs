//! One transport shared by several devices, taken in fair turns.
//!
//! A Modbus TCP gateway with many unit ids, an RS-485 line, a BLE adapter: one
//! connection, many devices, one request at a time. A [`SharedLink`] hands out
//! turns on it so that:
//!
//! * **Responsive devices go first.** A device that answered since it last
//!   (re)connected is *responsive*; one that has not (just started, or probing
//!   after a failure) waits until no responsive device does. A healthy unit
//!   therefore waits behind at most the one request already on the line, however
//!   many dead units share it, and dead units never take turns from it.
//! * **Turns rotate.** Responsive devices go in arrival order; a device has one
//!   request out at a time, so they take turns round robin.
//! * **Unknown before suspect.** Among devices that have not answered, those
//!   with fewer failed connections since their last answer go first, then those
//!   started earlier (the order EdgeCore listed them in). At start, when nothing
//!   is known yet, a healthy unit waits behind one timeout per dead unit listed
//!   before it; from its first answer on, behind at most one.
//! * **Waiting is not working.** The SDK starts a device's deadline for a driver
//!   call only from when it gets its turn: time spent waiting for the link is
//!   excluded (up to [`MAX_LINK_WAIT`]), so a healthy unit's read does not time
//!   out because dead units held the line.
//!
//! Drivers use it by keeping their connection in a `SharedLink` and calling
//! [`SharedLink::turn`] for each request; the SDK tells the link, through the
//! task that runs the device, which device is asking and whether it is
//! responsive. Called outside a device task (tests, tools), a request counts
//! as responsive.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Longest total wait for turns a single driver call may have excluded from
/// its deadline; past it the call times out like any other.
pub const MAX_LINK_WAIT: Duration = Duration::from_secs(60);

/// How long a device that has not answered yet waits on a free link for
/// others to line up before the turn is given out by standing (so that at
/// start, when every device asks at once, the order is the start order rather
/// than whichever task ran first).
pub const GATHER: Duration = Duration::from_millis(20);

/// Time spent waiting for link turns during one driver call.
#[derive(Debug, Default)]
pub(crate) struct WaitClock {
    inner: Mutex<ClockInner>,
}

#[derive(Debug, Default)]
struct ClockInner {
    waited: Duration,
    waiting_since: Option<Instant>,
}

impl WaitClock {
    fn lock(&self) -> MutexGuard<'_, ClockInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&self) {
        self.lock().waiting_since = Some(Instant::now());
    }

    fn stop(&self) {
        let mut c = self.lock();
        if let Some(t) = c.waiting_since.take() {
            c.waited += t.elapsed();
        }
    }

    /// Total wait so far, including a wait in progress.
    pub(crate) fn waited(&self) -> Duration {
        let c = self.lock();
        c.waited + c.waiting_since.map_or(Duration::ZERO, |t| t.elapsed())
    }
}

/// Where a device's requests stand in line on a shared link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Standing {
    /// Answered since its connection opened.
    pub(crate) responsive: bool,
    /// Connections that failed since it last answered.
    pub(crate) misses: u32,
    /// Order in which the device was started in this mapper.
    pub(crate) seq: u64,
}

impl Standing {
    /// Sort key among waiters: lower goes first.
    fn key(self) -> (bool, u32, u64) {
        if self.responsive {
            (false, 0, 0)
        } else {
            (true, self.misses, self.seq)
        }
    }
}

/// What the device task tells the link about the caller.
#[derive(Debug, Clone)]
pub(crate) struct IoContext {
    pub(crate) standing: Standing,
    pub(crate) clock: Arc<WaitClock>,
}

tokio::task_local! {
    static IO: IoContext;
}

/// Runs `fut` (a driver call) as the device described by `ctx`.
pub(crate) async fn scoped<F: Future>(ctx: IoContext, fut: F) -> F::Output {
    IO.scope(ctx, fut).await
}

/// Runs a driver call with a deadline of `budget` counted only while it is not
/// waiting for a link turn (see the module docs); `None` when the deadline
/// passed (the call's future is dropped, which drivers must tolerate).
pub(crate) async fn with_deadline<F: Future>(
    standing: Standing,
    budget: Duration,
    fut: F,
) -> Option<F::Output> {
    let clock = Arc::new(WaitClock::default());
    let fut = scoped(
        IoContext {
            standing,
            clock: clock.clone(),
        },
        fut,
    );
    tokio::pin!(fut);
    let start = Instant::now();
    loop {
        let waited = clock.waited().min(MAX_LINK_WAIT);
        let due = start + budget + waited;
        tokio::select! {
            r = &mut fut => return Some(r),
            _ = tokio::time::sleep_until(due) => {
                let waited = clock.waited().min(MAX_LINK_WAIT);
                if Instant::now() >= start + budget + waited {
                    return None;
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Sched {
    holder: Option<u64>,
    next_ticket: u64,
    waiters: VecDeque<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    standing: Standing,
    wake: oneshot::Sender<()>,
}

impl Sched {
    /// Hands the turn to the next waiter (module docs: responsive first in
    /// arrival order, then the others by misses and start order); frees the link
    /// when nobody waits.
    fn pass(&mut self) {
        let next = self
            .waiters
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| (w.standing.key(), w.ticket))
            .map(|(i, _)| i);
        match next.and_then(|i| self.waiters.remove(i)) {
            Some(w) => {
                self.holder = Some(w.ticket);
                // A waiter that went away meanwhile passes the turn on when its
                // guard drops (see `Pending`).
                let _ = w.wake.send(());
            }
            None => self.holder = None,
        }
    }
}

/// A transport (`T`) shared by several devices; see the module docs.
#[derive(Debug)]
pub struct SharedLink<T> {
    sched: Mutex<Sched>,
    value: tokio::sync::Mutex<T>,
}

impl<T> SharedLink<T> {
    /// A link around `value` (typically `Option<Connection>`).
    pub fn new(value: T) -> Self {
        Self {
            sched: Mutex::new(Sched::default()),
            value: tokio::sync::Mutex::new(value),
        }
    }

    fn sched(&self) -> MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for this caller's turn and returns exclusive access to the
    /// transport until the [`Turn`] is dropped.
    ///
    /// Cancellation safe: dropping the future while waiting gives up the place
    /// in line; dropping it just after the turn was granted passes the turn on.
    pub async fn turn(&self) -> Turn<'_, T> {
        let ctx = IO.try_with(Clone::clone).ok();
        let standing = ctx.as_ref().map_or(
            Standing {
                responsive: true,
                ..Standing::default()
            },
            |c| c.standing,
        );
        let (ticket, wait, gather) = {
            let mut s = self.sched();
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            if s.holder.is_none() && s.waiters.is_empty() && standing.responsive {
                s.holder = Some(ticket);
                (ticket, None, false)
            } else {
                let (tx, rx) = oneshot::channel();
                s.waiters.push_back(Waiter {
                    ticket,
                    standing,
                    wake: tx,
                });
                let free = s.holder.is_none();
                if free && standing.responsive {
                    // Nobody holds the link: hand it out now (to the best waiter).
                    s.pass();
                }
                (ticket, Some(rx), free && !standing.responsive)
            }
        };
        let mut pending = Pending {
            link: self,
            ticket,
            armed: true,
        };
        if let Some(rx) = wait {
            if let Some(c) = &ctx {
                c.clock.start();
            }
            if gather {
                tokio::time::sleep(GATHER).await;
                let mut s = self.sched();
                if s.holder.is_none() {
                    s.pass();
                }
            }
            let _ = rx.await;
            if let Some(c) = &ctx {
                c.clock.stop();
            }
        }
        // Uncontended: only the holder of the turn locks it.
        let guard = self.value.lock().await;
        pending.armed = false;
        Turn { link: self, guard }
    }
}

/// A place in line; gives it up if dropped before the turn is taken.
struct Pending<'a, T> {
    link: &'a SharedLink<T>,
    ticket: u64,
    armed: bool,
}

impl<T> Drop for Pending<'_, T> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut s = self.link.sched();
        if s.holder == Some(self.ticket) {
            s.pass();
        } else {
            s.waiters.retain(|w| w.ticket != self.ticket);
            // It may have been the one gathering for a free link.
            if s.holder.is_none() {
                s.pass();
            }
        }
    }
}

/// Exclusive use of a [`SharedLink`]'s transport; the next device's turn starts
/// when it is dropped.
#[derive(Debug)]
pub struct Turn<'a, T> {
    link: &'a SharedLink<T>,
    guard: tokio::sync::MutexGuard<'a, T>,
}

impl<T> Deref for Turn<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for Turn<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for Turn<'_, T> {
    fn drop(&mut self) {
        // The next holder locks the value once this guard is dropped, right after.
        self.link.sched().pass();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(responsive: bool, misses: u32, seq: u64) -> IoContext {
        IoContext {
            standing: Standing {
                responsive,
                misses,
                seq,
            },
            clock: Arc::new(WaitClock::default()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn responsive_callers_go_before_probing_ones_and_turns_rotate() {
        let link = Arc::new(SharedLink::new(Vec::<&'static str>::new()));
        let first = link.turn().await;
        let mut tasks = Vec::new();
        for (name, responsive, misses, seq) in [
            ("dead-3", false, 2, 3),
            ("dead-2", false, 2, 2),
            ("fresh-7", false, 0, 7),
            ("unit-1", true, 0, 1),
            ("unit-9", true, 0, 9),
        ] {
            let link = link.clone();
            tasks.push(tokio::spawn(scoped(
                ctx(responsive, misses, seq),
                async move {
                    let mut t = link.turn().await;
                    t.push(name);
                    tokio::time::sleep(Duration::from_secs(3)).await;
                },
            )));
            tokio::task::yield_now().await;
        }
        drop(first);
        for t in tasks {
            t.await.unwrap_or_default();
        }
        let order = link.turn().await.clone();
        assert_eq!(order, ["unit-1", "unit-9", "fresh-7", "dead-2", "dead-3"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_gives_up_its_place() {
        let link = Arc::new(SharedLink::new(0u32));
        let held = link.turn().await;
        let l2 = link.clone();
        let waiter = tokio::spawn(async move {
            let _t = l2.turn().await;
        });
        tokio::task::yield_now().await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        // Would hang if the aborted waiter kept its place.
        let t = tokio::time::timeout(Duration::from_secs(1), link.turn()).await;
        assert!(t.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_only_time_with_the_link() {
        let link = Arc::new(SharedLink::new(()));
        let holder = {
            let link = link.clone();
            tokio::spawn(async move {
                let _t = link.turn().await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            })
        };
        tokio::task::yield_now().await;
        // Waits 10 s for the link, then needs 1 s of its 2 s budget.
        let r = with_deadline(Standing::default(), Duration::from_secs(2), async {
            let _t = link.turn().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            7
        })
        .await;
        assert_eq!(r, Some(7));
        holder.await.unwrap_or_default();
        // Work beyond the budget still times out.
        let r = with_deadline(Standing::default(), Duration::from_secs(2), async {
            let _t = link.turn().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        })
        .await;
        assert_eq!(r, None);
    }
    #[tokio::test(start_paused = true)]
    async fn at_start_devices_nothing_is_known_of_go_in_start_order() {
        let link = Arc::new(SharedLink::new(Vec::<u64>::new()));
        let mut tasks = Vec::new();
        // Started in order 1..=5, but asking in reverse order on a free link.
        for seq in (1..=5u64).rev() {
            let link = link.clone();
            tasks.push(tokio::spawn(scoped(ctx(false, 0, seq), async move {
                let mut t = link.turn().await;
                t.push(seq);
                tokio::time::sleep(Duration::from_secs(3)).await;
            })));
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap_or_default();
        }
        let order = link.turn().await.clone();
        assert_eq!(order, [1, 2, 3, 4, 5]);
    }
}
