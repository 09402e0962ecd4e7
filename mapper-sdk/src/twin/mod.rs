//! The twin engine: reports from device tasks to EdgeCore, coalesced per
//! device. It deals in [`TwinUpdate`]s; [`crate::dmi`] turns them into DMI
//! messages when they are sent.
//!
//! Device tasks never wait for EdgeCore: they hand their twins and state to the
//! [`Reporter`], which keeps, per device, only the **latest** twin of each
//! property and the latest state not yet delivered. Senders take one device at a
//! time, round robin, and send everything it has in **one** `ReportDeviceStatus`
//! (all its changed twins) plus one `ReportDeviceStates` when its state is new.
//!
//! * Memory is bounded by devices × properties whatever EdgeCore does: a slow,
//!   absent or throttling EdgeCore makes reports coarser, never a longer queue,
//!   and the newest value is never the one dropped.
//! * A device is in at most one sender at a time, so its reports arrive in the
//!   order they were made (an `offline` is never overtaken by an older `online`).
//! * A report that did not arrive (transport failure, throttling) goes back
//!   under whatever newer data came in meanwhile. A report EdgeCore refused
//!   (invalid, unknown device) is dropped and counted: sending it again cannot
//!   succeed.
//! * While EdgeCore throttles (see [`Pacer`]), unchanged values and unchanged
//!   states are not re-sent as heartbeats: the budget goes to changes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::runtime::DesiredOutcome;
use crate::spec::ObjectId;

/// One property's twin as the mapper reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TwinUpdate {
    /// Property name.
    pub(crate) property: String,
    /// Reported value, already inside EdgeCore's twin charset (empty when the
    /// property has an error instead).
    pub(crate) reported: String,
    /// Model type text for `metadata.type` (`int`, `float`, `string`, ...).
    pub(crate) type_text: &'static str,
    /// When the value was read, ms since the epoch.
    pub(crate) timestamp_ms: u64,
    /// The desired value the mapper holds (charset-safe) and what became of it.
    pub(crate) desired: Option<(String, DesiredOutcome)>,
    /// Why the property has no value (bad visitor configuration).
    pub(crate) error: Option<String>,
    /// What is wrong with the property's push/db targets, if anything
    /// (`reported.metadata.sinkError`).
    pub(crate) sink_error: Option<String>,
}

/// What was last delivered for one property: (reported value, observed desired
/// value, observed desired status, sink problem).
type Delivered = (String, String, Option<&'static str>, Option<String>);

fn delivered_form(t: &TwinUpdate) -> Delivered {
    (
        t.reported.clone(),
        t.desired.as_ref().map(|d| d.0.clone()).unwrap_or_default(),
        t.desired.as_ref().map(|d| d.1.status()),
        t.sink_error.clone(),
    )
}

#[derive(Debug, Default)]
struct Slot {
    /// Latest undelivered twin per property.
    twins: BTreeMap<String, TwinUpdate>,
    /// `reportedDevice.reportToCloud` / `reportCycle` (ms) of the latest twins.
    status: (bool, i64),
    /// Latest undelivered state.
    state: Option<String>,
    delivered_twins: HashMap<String, Delivered>,
    delivered_state: Option<String>,
    queued: bool,
    in_flight: bool,
}

impl Slot {
    fn has_pending(&self) -> bool {
        !self.twins.is_empty() || self.state.is_some()
    }
}

#[derive(Debug, Default)]
struct Inner {
    devices: HashMap<ObjectId, Slot>,
    /// Devices with something to send and no sender on them, oldest first.
    queue: VecDeque<ObjectId>,
}

impl Inner {
    fn enqueue(&mut self, id: &ObjectId) -> bool {
        let Some(slot) = self.devices.get_mut(id) else {
            return false;
        };
        if slot.queued || slot.in_flight || !slot.has_pending() {
            return false;
        }
        slot.queued = true;
        self.queue.push_back(id.clone());
        true
    }
}

/// One device's reports, taken by a sender.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The device.
    pub(crate) id: ObjectId,
    /// All its pending twins (sent in one request), possibly none.
    pub(crate) twins: Vec<TwinUpdate>,
    /// `reportToCloud` / `reportCycle` (ms) for the request.
    pub(crate) status: (bool, i64),
    /// Its new state, if any.
    pub(crate) state: Option<String>,
}

/// What became of one part of a [`Batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// EdgeCore accepted it.
    Delivered,
    /// It did not arrive (transport, throttling): keep it for the next round.
    Retry,
    /// EdgeCore refused it: drop it.
    Refused,
    /// Nothing was sent.
    None,
}

/// Cheap handle device tasks use to hand over reports; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Reporter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    ready: Notify,
    metrics: Arc<Metrics>,
}

impl Reporter {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner::default()),
                ready: Notify::new(),
                metrics,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn kick(&self, woke: bool) {
        if woke {
            self.shared.ready.notify_one();
        }
    }

    /// Hands over twins of device `id`; each replaces the undelivered twin of its
    /// property. `status` is `(reportToCloud, reportCycle ms)` for the request.
    pub(crate) fn twins(&self, id: &ObjectId, status: (bool, i64), twins: Vec<TwinUpdate>) {
        if twins.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let slot = inner.devices.entry(id.clone()).or_default();
        let mut replaced = 0u64;
        for t in twins {
            if slot.twins.insert(t.property.clone(), t).is_some() {
                replaced += 1;
            }
        }
        slot.status = status;
        let woke = inner.enqueue(id);
        drop(inner);
        if replaced > 0 {
            self.shared.metrics.reports_coalesced.inc_by(replaced);
        }
        self.kick(woke);
    }

    /// Hands over the state of device `id` (one of the five accepted strings).
    pub(crate) fn state(&self, id: &ObjectId, state: &str) {
        let mut inner = self.lock();
        let slot = inner.devices.entry(id.clone()).or_default();
        slot.state = Some(state.to_owned());
        let woke = inner.enqueue(id);
        drop(inner);
        self.kick(woke);
    }

    /// Forgets device `id` (removed from the mapper): nothing more is sent for it.
    pub(crate) fn forget(&self, id: &ObjectId) {
        let mut inner = self.lock();
        inner.devices.remove(id);
        inner.queue.retain(|q| q != id);
    }

    /// Takes the next device's reports, waiting until one has something to send.
    /// With `skip_heartbeats`, twins and states equal to what was last delivered
    /// are dropped instead of sent (EdgeCore is throttling).
    pub(crate) async fn next(&self, skip_heartbeats: bool) -> Batch {
        loop {
            let notified = self.shared.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(b) = self.try_take(skip_heartbeats) {
                // Others may be waiting for the rest of the queue.
                if !self.lock().queue.is_empty() {
                    self.shared.ready.notify_one();
                }
                return b;
            }
            notified.await;
        }
    }

    fn try_take(&self, skip_heartbeats: bool) -> Option<Batch> {
        let mut inner = self.lock();
        while let Some(id) = inner.queue.pop_front() {
            let Some(slot) = inner.devices.get_mut(&id) else {
                continue;
            };
            slot.queued = false;
            let mut twins: Vec<TwinUpdate> =
                std::mem::take(&mut slot.twins).into_values().collect();
            let mut state = slot.state.take();
            if skip_heartbeats {
                let before = twins.len();
                twins.retain(|t| slot.delivered_twins.get(&t.property) != Some(&delivered_form(t)));
                let skipped = (before - twins.len()) as u64;
                if state.is_some() && state == slot.delivered_state {
                    state = None;
                }
                self.shared.metrics.reports_coalesced.inc_by(skipped);
            }
            if twins.is_empty() && state.is_none() {
                continue;
            }
            slot.in_flight = true;
            return Some(Batch {
                id,
                twins,
                status: slot.status,
                state,
            });
        }
        None
    }

    /// Records what became of a batch taken with [`Reporter::next`]; what did
    /// not arrive goes back under newer data, and the device is queued again if
    /// it has anything left to send.
    pub(crate) fn finish(&self, batch: Batch, status: Delivery, state: Delivery) {
        let mut inner = self.lock();
        let Some(slot) = inner.devices.get_mut(&batch.id) else {
            return;
        };
        slot.in_flight = false;
        let mut dropped = 0u64;
        if !batch.twins.is_empty() {
            let twins = batch.twins;
            match status {
                Delivery::Delivered => {
                    for t in &twins {
                        slot.delivered_twins
                            .insert(t.property.clone(), delivered_form(t));
                    }
                }
                Delivery::Retry => {
                    for t in twins {
                        slot.twins.entry(t.property.clone()).or_insert(t);
                    }
                }
                Delivery::Refused | Delivery::None => dropped += 1,
            }
        }
        if let Some(st) = batch.state {
            match state {
                Delivery::Delivered => slot.delivered_state = Some(st),
                Delivery::Retry => {
                    if slot.state.is_none() {
                        slot.state = Some(st);
                    }
                }
                Delivery::Refused | Delivery::None => dropped += 1,
            }
        }
        let woke = inner.enqueue(&batch.id);
        drop(inner);
        if dropped > 0 {
            self.shared.metrics.reports_dropped.inc_by(dropped);
        }
        self.kick(woke);
    }
}

/// Window over which the accepted call rate is measured (for the warning).
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Pace when throttling starts: stock EdgeCore's budget (1 call/s per node).
const FIRST_RATE: f64 = 1.0;
/// Slowest pace while throttled, calls per second.
const MIN_RATE: f64 = 0.2;
/// Pace above which pacing stops (EdgeCore stopped throttling).
const UNPACED_RATE: f64 = 200.0;
/// Pace added per accepted call, calls per second: 10 % growth per second of
/// accepted calls at any pace.
const RATE_STEP: f64 = 0.1;
/// Pace kept after a throttled call.
const RATE_BACKOFF: f64 = 0.7;
/// Throttles closer together than this count once (calls already in flight).
const BACKOFF_SPACING: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct PacerState {
    /// Calls per second allowed; `None` = no pacing.
    rate: Option<f64>,
    next_slot: Option<Instant>,
    last_backoff: Option<Instant>,
    /// When accepted calls happened, over the last [`RATE_WINDOW`].
    accepted: VecDeque<Instant>,
    /// Start of the current throttling episode.
    throttled_since: Option<Instant>,
    warned: bool,
}

impl PacerState {
    fn measured(&mut self, now: Instant) -> f64 {
        while self
            .accepted
            .front()
            .is_some_and(|t| now.duration_since(*t) > RATE_WINDOW)
        {
            self.accepted.pop_front();
        }
        self.accepted.len() as f64 / RATE_WINDOW.as_secs_f64()
    }
}

/// Paces calls to what EdgeCore accepts (additive increase, multiplicative
/// decrease).
///
/// Unpaced until EdgeCore answers a call with throttling ("too many request",
/// see [`dmi_proto::status`]). Then calls are spaced evenly, starting at stock
/// EdgeCore's budget of 1 call/s; each accepted call adds 0.1 call/s (10 %
/// growth per second at any pace), each throttled call cuts the pace to 70 %
/// (once per second at most, as calls already in flight come back throttled
/// together), never below 0.2 call/s; above 200 calls/s pacing stops. EdgeCore's
/// token bucket keeps the tokens a slower pace leaves unused, so the average
/// accepted rate stays at the bucket's rate. One warning per throttling episode
/// states the accepted rate, 10 s into it.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    state: Mutex<PacerState>,
}

impl Pacer {
    fn lock(&self) -> MutexGuard<'_, PacerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether calls are being paced (EdgeCore throttles).
    pub(crate) fn is_pacing(&self) -> bool {
        self.lock().rate.is_some()
    }

    /// The current pace in calls per second, if paced.
    #[cfg(test)]
    pub(crate) fn rate(&self) -> Option<f64> {
        self.lock().rate
    }

    /// Waits for this call's turn.
    pub(crate) async fn acquire(&self) {
        let slot = {
            let mut st = self.lock();
            let Some(rate) = st.rate else { return };
            let now = Instant::now();
            let slot = st.next_slot.map_or(now, |s| s.max(now));
            st.next_slot = Some(slot + Duration::from_secs_f64(1.0 / rate));
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// A call was accepted.
    pub(crate) fn accepted(&self) {
        let mut st = self.lock();
        let now = Instant::now();
        st.accepted.push_back(now);
        st.measured(now);
        let Some(rate) = st.rate else { return };
        let grown = rate + RATE_STEP;
        if grown > UNPACED_RATE {
            tracing::info!("EdgeCore stopped throttling; reports are no longer paced");
            *st = PacerState {
                accepted: std::mem::take(&mut st.accepted),
                ..PacerState::default()
            };
        } else {
            st.rate = Some(grown);
            self.maybe_warn(&mut st, now);
        }
    }

    /// A call was answered with throttling.
    pub(crate) fn throttled(&self) {
        let mut st = self.lock();
        let now = Instant::now();
        let spaced = st
            .last_backoff
            .is_none_or(|t| now.duration_since(t) >= BACKOFF_SPACING);
        let rate = match st.rate {
            None => FIRST_RATE,
            Some(r) if spaced => (r * RATE_BACKOFF).max(MIN_RATE),
            Some(r) => r,
        };
        if spaced || st.rate.is_none() {
            st.last_backoff = Some(now);
        }
        st.rate = Some(rate);
        // The bucket is empty: give it one interval before the next call.
        st.next_slot = Some(now + Duration::from_secs_f64(1.0 / rate));
        if st.throttled_since.is_none() {
            st.throttled_since = Some(now);
            st.warned = false;
            tracing::info!(
                "EdgeCore is throttling DMI calls; reports are now paced and carry the latest value of each property"
            );
        }
        self.maybe_warn(&mut st, now);
    }

    fn maybe_warn(&self, st: &mut PacerState, now: Instant) {
        let Some(since) = st.throttled_since else {
            return;
        };
        if st.warned || now.duration_since(since) < RATE_WINDOW {
            return;
        }
        st.warned = true;
        let accepted = st.measured(now);
        tracing::warn!(
            accepted_per_s = format!("{accepted:.2}"),
            "EdgeCore accepts about {accepted:.2} DMI calls/s from this node (stock EdgeCore: 1/s, burst 100, shared by all mappers); \
             reports are coalesced to the latest value per property, one ReportDeviceStatus per device, \
             unchanged values and states are not repeated"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twin(p: &str, v: &str) -> TwinUpdate {
        TwinUpdate {
            property: p.into(),
            reported: v.into(),
            type_text: "int",
            timestamp_ms: 1,
            desired: None,
            error: None,
            sink_error: None,
        }
    }

    fn values(b: &Batch) -> Vec<(String, String)> {
        b.twins
            .iter()
            .map(|t| (t.property.clone(), t.reported.clone()))
            .collect()
    }

    fn id(n: &str) -> ObjectId {
        ObjectId::new("default", n)
    }

    #[tokio::test]
    async fn latest_value_per_property_in_one_request_per_device() {
        let r = Reporter::new(Arc::new(Metrics::new()));
        r.twins(&id("a"), (false, 0), vec![twin("t", "1"), twin("p", "1")]);
        r.twins(&id("b"), (false, 0), vec![twin("t", "9")]);
        r.twins(&id("a"), (false, 0), vec![twin("t", "2")]);
        r.state(&id("a"), "online");
        let a = r.next(false).await;
        assert_eq!(a.id, id("a"));
        assert_eq!(
            values(&a),
            [("p".into(), "1".into()), ("t".into(), "2".into())]
        );
        assert_eq!(a.state.as_deref(), Some("online"));
        // While a's batch is out, a new value waits; b is next (round robin).
        r.twins(&id("a"), (false, 0), vec![twin("t", "3")]);
        let b = r.next(false).await;
        assert_eq!(b.id, id("b"));
        // a's batch did not arrive: it goes back under the newer value.
        r.finish(a, Delivery::Retry, Delivery::Retry);
        r.finish(b, Delivery::Delivered, Delivery::None);
        let a = r.next(false).await;
        assert_eq!(
            values(&a),
            [("p".into(), "1".into()), ("t".into(), "3".into())]
        );
        assert!(a.state.is_some());
        r.finish(a, Delivery::Delivered, Delivery::Delivered);
        // Throttled: values and states equal to what was delivered are not repeated.
        r.twins(&id("a"), (false, 0), vec![twin("t", "3"), twin("p", "5")]);
        r.state(&id("a"), "online");
        let a = r.next(true).await;
        assert_eq!(values(&a), [("p".into(), "5".into())]);
        assert!(a.state.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_settles_near_what_is_accepted() {
        // A stock-EdgeCore bucket: 1 token/s, burst 100.
        let pacer = Pacer::default();
        let mut tokens = 100.0f64;
        let mut last = Instant::now();
        let start = last;
        let mut accepted_after_warmup = 0;
        while Instant::now().duration_since(start) < Duration::from_secs(120) {
            pacer.acquire().await;
            let now = Instant::now();
            tokens = (tokens + now.duration_since(last).as_secs_f64()).min(100.0);
            last = now;
            if tokens >= 1.0 {
                tokens -= 1.0;
                pacer.accepted();
                if now.duration_since(start) > Duration::from_secs(60) {
                    accepted_after_warmup += 1;
                }
            } else {
                pacer.throttled();
            }
            if !pacer.is_pacing() {
                // Unpaced callers go as fast as they can; model 1000 calls/s.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Over the last 60 s, close to the bucket's 60 tokens.
        eprintln!("accepted {accepted_after_warmup} in the last 60 s");
        assert!(
            (54..=61).contains(&accepted_after_warmup),
            "accepted {accepted_after_warmup} in 60 s"
        );
        assert!(pacer.rate().is_some_and(|r| r < 2.0));
    }
}
