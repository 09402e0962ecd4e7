//! The reader side of an open port: cutting frames, offering each to the
//! waiting request, the subscriptions and the reads of streamed values, and
//! counting (and logging) what nobody took. See the parent module's docs.

use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::Stream;
use mapper_sdk::{DeviceFault, DriverError, DriverResult, Pushed, Value};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::{LOG_EVERY, lock};
use crate::escape::show;
use crate::frame::{Framing, Split};
use crate::visitor::{Extracted, Visitor};

/// Bytes shown of a discarded frame in the log.
const SHOWN: usize = 80;

/// Input a port discarded since it was first opened (totals over reconnects).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscardCounts {
    /// Frames that carried a property's value (its regex or byte range
    /// matched) but whose checksum did not check or did not fit.
    pub bad_checksum: u64,
    /// Complete frames no request, subscription or read wanted (unsolicited
    /// lines, late answers, garbage ending in a terminator).
    pub unmatched: u64,
    /// Frames that matched a property but whose value could not be read.
    pub undecodable: u64,
    /// Unfinished frames cut off by an `interFrameGapMs` silence or by
    /// exceeding [`crate::frame::MAX_FRAME`] bytes.
    pub partial: u64,
    /// Bytes dropped outside frames: while nothing on the port listened, stale
    /// before a request, or skipped to realign a length-framed stream.
    pub skipped_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Discard {
    BadChecksum,
    Unmatched,
    Undecodable,
    Partial,
    /// Bytes skipped to realign a length-framed stream (logged).
    Skipped(u64),
    /// Bytes nobody listened for, or stale before a request: expected (a
    /// device streaming before the mapper subscribed), counted, not logged.
    Unheard(u64),
}

impl Discard {
    fn reason(self) -> &'static str {
        match self {
            Discard::BadChecksum => "bad checksum",
            Discard::Unmatched => "frame nobody expected",
            Discard::Undecodable => "value could not be read",
            Discard::Partial => "unfinished frame",
            Discard::Skipped(_) | Discard::Unheard(_) => "bytes outside frames",
        }
    }
}

/// Per-port counters that outlive connections, and the log limiter.
#[derive(Debug, Default)]
pub(super) struct Stats {
    inner: Mutex<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    counts: DiscardCounts,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl Stats {
    pub(super) fn counts(&self) -> DiscardCounts {
        lock(&self.inner).counts
    }

    /// Counts one discard and logs it, at most once every [`LOG_EVERY`].
    fn discard(&self, path: &str, what: Discard, sample: &[u8]) {
        let mut s = lock(&self.inner);
        let c = &mut s.counts;
        match what {
            Discard::BadChecksum => c.bad_checksum += 1,
            Discard::Unmatched => c.unmatched += 1,
            Discard::Undecodable => c.undecodable += 1,
            Discard::Partial => c.partial += 1,
            Discard::Skipped(n) => c.skipped_bytes += n,
            Discard::Unheard(n) => {
                c.skipped_bytes += n;
                return;
            }
        }
        let now = Instant::now();
        if s.last_log
            .is_some_and(|t| now.duration_since(t) < LOG_EVERY)
        {
            s.suppressed += 1;
            return;
        }
        let c = s.counts;
        tracing::warn!(
            port = %path,
            reason = what.reason(),
            last = %show(sample, SHOWN),
            bad_checksum = c.bad_checksum,
            unmatched = c.unmatched,
            undecodable = c.undecodable,
            partial = c.partial,
            skipped_bytes = c.skipped_bytes,
            not_logged = s.suppressed,
            "serial input discarded (totals since the port was first opened; one line per {}s at most)",
            LOG_EVERY.as_secs()
        );
        s.last_log = Some(now);
        s.suppressed = 0;
    }
}

/// What a waiting request expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// The value (a read).
    Value,
    /// A frame matching the visitor's `ack` (a write).
    Ack,
}

struct Pending {
    id: u64,
    visitor: Arc<Visitor>,
    expect: Expect,
    tx: Option<oneshot::Sender<DriverResult<Value>>>,
    /// The last frames it did not take (at most [`REJECTED_KEPT`]), described.
    rejected: Vec<String>,
}

struct Waiter {
    visitor: Arc<Visitor>,
    tx: oneshot::Sender<DriverResult<Value>>,
}

/// The streamed values of one device's subscription: the latest value per
/// property, waiting to be taken by the SDK.
pub(crate) struct Subscriber {
    /// `(index in the subscribed addresses, visitor)`.
    props: Vec<(usize, Arc<Visitor>)>,
    state: Mutex<SubState>,
    notify: Notify,
}

struct SubState {
    latest: Vec<Option<Value>>,
    /// Where the next take starts (round robin over properties).
    next: usize,
    closed: Option<DriverError>,
    ended: bool,
}

impl Subscriber {
    fn put(&self, slot: usize, v: Value) {
        let mut s = lock(&self.state);
        if let Some(l) = s.latest.get_mut(slot) {
            *l = Some(v);
        }
        drop(s);
        self.notify.notify_one();
    }

    pub(super) fn close(&self, e: DriverError) {
        lock(&self.state).closed = Some(e);
        self.notify.notify_one();
    }

    fn take(&self) -> Option<Option<Pushed>> {
        let mut s = lock(&self.state);
        let n = s.latest.len();
        for k in 0..n {
            let slot = (s.next + k) % n;
            if let Some(v) = s.latest[slot].take() {
                s.next = (slot + 1) % n;
                return Some(Some(Pushed {
                    index: self.props[slot].0,
                    value: Ok(v),
                    // Line protocols carry no device time stamp.
                    source_time: None,
                }));
            }
        }
        if s.ended {
            return Some(None);
        }
        if let Some(e) = s.closed.take() {
            s.ended = true;
            // The link failure ends the connection (the SDK reconnects).
            return Some(self.props.first().map(|(index, _)| Pushed {
                index: *index,
                value: Err(e),
                source_time: None,
            }));
        }
        None
    }

    async fn next(self: Arc<Self>) -> Option<(Pushed, Arc<Self>)> {
        loop {
            // `notify_one` stores a permit when nobody waits: nothing is lost
            // between the check and the wait.
            if let Some(item) = self.take() {
                return item.map(|p| (p, self));
            }
            self.notify.notified().await;
        }
    }

    /// The subscription as the SDK's push stream: the latest value of each
    /// property as it arrives (values the SDK had no time to take are
    /// replaced by newer ones), then one link error and the end when the port
    /// fails.
    pub(crate) fn into_stream(self: Arc<Self>) -> impl Stream<Item = Pushed> + Send + 'static {
        futures::stream::unfold(self, Subscriber::next)
    }
}

/// Frames a request remembers for its error when no answer comes.
const REJECTED_KEPT: usize = 3;

/// What one frame did.
#[derive(Default)]
struct Offer {
    taken: bool,
    /// A streamed property's regex or byte range matched it.
    streamed: bool,
    bad_checksum: bool,
    undecodable: bool,
}

struct Demux {
    buf: Vec<u8>,
    last_rx: Option<Instant>,
    last_tx: Option<Instant>,
    closed: Option<DriverError>,
    pending: Option<Pending>,
    next_id: u64,
    subs: Vec<Weak<Subscriber>>,
    waiters: Vec<Waiter>,
    /// Dropping single bytes to realign a length-framed stream.
    realigning: bool,
}

/// One open connection's reader state, shared by the reader task and the
/// requests.
pub(crate) struct Shared {
    path: Arc<str>,
    gap: Duration,
    stats: Arc<Stats>,
    demux: Mutex<Demux>,
}

impl Shared {
    pub(super) fn new(path: Arc<str>, gap: Duration, stats: Arc<Stats>) -> Self {
        Self {
            path,
            gap,
            stats,
            demux: Mutex::new(Demux {
                buf: Vec::new(),
                last_rx: None,
                last_tx: None,
                closed: None,
                pending: None,
                next_id: 0,
                subs: Vec::new(),
                waiters: Vec::new(),
                realigning: false,
            }),
        }
    }

    fn discard(&self, what: Discard, sample: &[u8]) {
        self.stats.discard(&self.path, what, sample);
    }

    pub(super) fn closed(&self) -> Option<DriverError> {
        lock(&self.demux).closed.clone()
    }

    /// When the line has been quiet for `gap` (now if it has).
    pub(super) fn quiet_at(&self) -> Instant {
        let d = lock(&self.demux);
        let last = d.last_rx.max(d.last_tx);
        last.map_or_else(Instant::now, |t| t + self.gap)
    }

    pub(super) fn note_tx(&self) {
        lock(&self.demux).last_tx = Some(Instant::now());
    }

    /// Installs the request about to be sent; returns its id and the receiver
    /// of its answer (none for a write without `ack`).
    pub(super) fn begin(
        &self,
        visitor: &Arc<Visitor>,
        expect: Option<Expect>,
    ) -> DriverResult<(u64, Option<oneshot::Receiver<DriverResult<Value>>>)> {
        let mut d = lock(&self.demux);
        if let Some(e) = &d.closed {
            return Err(e.clone());
        }
        d.subs.retain(|w| w.strong_count() > 0);
        d.waiters.retain(|w| !w.tx.is_closed());
        if d.subs.is_empty() && d.waiters.is_empty() && !d.buf.is_empty() {
            let stale = std::mem::take(&mut d.buf);
            self.discard(Discard::Unheard(stale.len() as u64), &stale);
            d.realigning = false;
        }
        d.next_id += 1;
        let id = d.next_id;
        let rx = expect.map(|expect| {
            let (tx, rx) = oneshot::channel();
            d.pending = Some(Pending {
                id,
                visitor: visitor.clone(),
                expect,
                tx: Some(tx),
                rejected: Vec::new(),
            });
            rx
        });
        if rx.is_none() {
            d.pending = None;
        }
        Ok((id, rx))
    }

    /// Removes request `id` if it still waits.
    pub(super) fn end(&self, id: u64) {
        let mut d = lock(&self.demux);
        if d.pending.as_ref().is_some_and(|p| p.id == id) {
            d.pending = None;
        }
    }

    /// The error of request `id` whose answer did not come in time.
    pub(super) fn timed_out(&self, id: u64, after: Duration) -> DriverError {
        let mut d = lock(&self.demux);
        let Some(p) = d.pending.take_if(|p| p.id == id) else {
            return DriverError::Timeout(after);
        };
        if p.rejected.is_empty() {
            return DriverError::Timeout(after);
        }
        let frames = p.rejected.join("; ");
        match p.expect {
            Expect::Value => DriverError::Value(format!(
                "no usable answer within {after:?}; frames received: {frames}"
            )),
            Expect::Ack => DriverError::Device(DeviceFault::new(format!(
                "the write was not acknowledged within {after:?}; frames received: {frames}"
            ))),
        }
    }

    /// Registers a read of a streamed value: the receiver gets the next value
    /// the property accepts.
    pub(super) fn wait_for(
        &self,
        visitor: &Arc<Visitor>,
    ) -> DriverResult<oneshot::Receiver<DriverResult<Value>>> {
        let mut d = lock(&self.demux);
        if let Some(e) = &d.closed {
            return Err(e.clone());
        }
        self.check_framing(&d, std::slice::from_ref(visitor))?;
        let (tx, rx) = oneshot::channel();
        d.waiters.push(Waiter {
            visitor: visitor.clone(),
            tx,
        });
        Ok(rx)
    }

    /// Registers a subscription.
    pub(super) fn subscribe(
        &self,
        props: Vec<(usize, Arc<Visitor>)>,
    ) -> DriverResult<Arc<Subscriber>> {
        let mut d = lock(&self.demux);
        if let Some(e) = &d.closed {
            return Err(e.clone());
        }
        let visitors: Vec<Arc<Visitor>> = props.iter().map(|(_, v)| v.clone()).collect();
        self.check_framing(&d, &visitors)?;
        let sub = Arc::new(Subscriber {
            state: Mutex::new(SubState {
                latest: vec![None; props.len()],
                next: 0,
                closed: None,
                ended: false,
            }),
            props,
            notify: Notify::new(),
        });
        d.subs.retain(|w| w.strong_count() > 0);
        d.subs.push(Arc::downgrade(&sub));
        Ok(sub)
    }

    /// Streamed values on one port are cut with one framing.
    fn check_framing(&self, d: &Demux, new: &[Arc<Visitor>]) -> DriverResult<()> {
        let mut want = stream_framing(d);
        for v in new {
            match &want {
                None => want = Some(v.framing.clone()),
                Some(f) if *f == v.framing => {}
                Some(f) => {
                    return Err(DriverError::Config(format!(
                        "values streamed on {} must share one framing; {f} and {} differ",
                        self.path, v.framing
                    )));
                }
            }
        }
        Ok(())
    }

    /// Bytes from the port.
    pub(super) fn feed(&self, bytes: &[u8]) {
        let now = Instant::now();
        let mut d = lock(&self.demux);
        if !self.gap.is_zero()
            && !d.buf.is_empty()
            && d.last_rx.is_some_and(|t| now.duration_since(t) >= self.gap)
        {
            let partial = std::mem::take(&mut d.buf);
            self.discard(Discard::Partial, &partial);
        }
        d.last_rx = Some(now);
        d.buf.extend_from_slice(bytes);
        self.drain(&mut d);
    }

    /// Cuts and offers every complete frame in the buffer.
    fn drain(&self, d: &mut Demux) {
        loop {
            let framing = match &d.pending {
                Some(p) => Some(p.visitor.framing.clone()),
                None => stream_framing(d),
            };
            let Some(framing) = framing else {
                // Nobody listens: nothing to cut frames for.
                if !d.buf.is_empty() {
                    let junk = std::mem::take(&mut d.buf);
                    self.discard(Discard::Unheard(junk.len() as u64), &junk);
                }
                return;
            };
            match framing.split(&d.buf) {
                Split::NeedMore if d.realigning && !framing.has_terminator() => {
                    // A misaligned count byte may promise more than will ever
                    // come: look further on for a frame that checks.
                    match self.next_good_frame(d, &framing) {
                        Some(k) => {
                            let junk: Vec<u8> = d.buf.drain(..k).collect();
                            self.discard(Discard::Skipped(k as u64), &junk);
                        }
                        None => return,
                    }
                }
                Split::NeedMore => return,
                Split::Skip(n) => {
                    let n = n.min(d.buf.len()).max(1);
                    let junk: Vec<u8> = d.buf.drain(..n).collect();
                    if framing.has_terminator() {
                        self.discard(Discard::Partial, &junk);
                    } else {
                        self.discard(Discard::Skipped(n as u64), &junk);
                    }
                }
                Split::Frame(n) => {
                    let frame: Vec<u8> = d.buf.drain(..n).collect();
                    let payload = framing.payload(&frame);
                    let offer = self.offer(d, payload);
                    if offer.taken {
                        d.realigning = false;
                        continue;
                    }
                    if offer.bad_checksum && !framing.has_terminator() {
                        // Misaligned, most likely: retry one byte further.
                        let rest = frame.get(1..).unwrap_or_default().to_vec();
                        d.buf.splice(0..0, rest);
                        if !std::mem::replace(&mut d.realigning, true) {
                            self.discard(Discard::BadChecksum, &frame);
                        }
                        self.discard(Discard::Skipped(1), &frame[..1]);
                        continue;
                    }
                    let what = if offer.undecodable {
                        Discard::Undecodable
                    } else if offer.bad_checksum {
                        Discard::BadChecksum
                    } else {
                        Discard::Unmatched
                    };
                    self.discard(what, &frame);
                }
            }
        }
    }

    /// The first offset after 0 in the buffer where a complete frame starts
    /// that some listener would take with a good checksum.
    fn next_good_frame(&self, d: &Demux, framing: &Framing) -> Option<usize> {
        let listeners: Vec<Arc<Visitor>> = d
            .pending
            .iter()
            .map(|p| p.visitor.clone())
            .chain(
                d.subs
                    .iter()
                    .filter_map(Weak::upgrade)
                    .flat_map(|s| s.props.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()),
            )
            .chain(d.waiters.iter().map(|w| w.visitor.clone()))
            .filter(|v| v.checksum.is_some())
            .collect();
        (1..d.buf.len()).find(|&k| {
            let rest = &d.buf[k..];
            let Split::Frame(n) = framing.split(rest) else {
                return false;
            };
            let payload = framing.payload(&rest[..n]);
            listeners.iter().any(|v| {
                v.verify(payload).is_ok() && !matches!(v.extract(payload), Extracted::NoMatch(_))
            })
        })
    }

    /// Offers one frame's payload to the waiting request, the subscriptions
    /// and the reads of streamed values.
    fn offer(&self, d: &mut Demux, payload: &[u8]) -> Offer {
        let mut o = Offer::default();
        // The waiting request.
        let mut answer: Option<DriverResult<Value>> = None;
        let mut rejected: Option<String> = None;
        if let Some(p) = &d.pending {
            let shown = show(payload, SHOWN);
            let sum = p.visitor.verify(payload);
            match (p.expect, sum) {
                // An acknowledgement is matched as it is; the checksum is the
                // value frames'.
                (Expect::Ack, _) if p.visitor.ack_matches(payload) => {
                    answer = Some(Ok(Value::Bool(true)));
                }
                (Expect::Ack, _) => {
                    rejected = Some(format!(
                        "`{shown}`, which does not match ack `{}`",
                        p.visitor.ack.as_ref().map_or("", |a| a.as_str())
                    ));
                }
                (Expect::Value, sum) => match (p.visitor.extract(payload), sum) {
                    (Extracted::NoMatch(reason), _) => {
                        rejected = Some(format!("`{shown}`, which {reason}"));
                    }
                    (_, Err(e)) => {
                        o.bad_checksum = true;
                        rejected = Some(format!("`{shown}` (bad checksum: {e:?})"));
                    }
                    (Extracted::Value(v), Ok(())) => answer = Some(Ok(v)),
                    (Extracted::Bad(reason), Ok(())) => {
                        answer = Some(Err(DriverError::Value(format!(
                            "answer `{shown}`: {reason}"
                        ))));
                    }
                },
            }
        }
        if let Some(a) = answer
            && let Some(mut p) = d.pending.take()
        {
            if let Some(tx) = p.tx.take() {
                let _ = tx.send(a);
            }
            o.taken = true;
        }
        // Subscriptions.
        d.subs.retain(|w| w.strong_count() > 0);
        for sub in d.subs.iter().filter_map(Weak::upgrade) {
            for (slot, (_, v)) in sub.props.iter().enumerate() {
                if let Some(val) = streamed(v, payload, &mut o) {
                    sub.put(slot, val);
                    o.taken = true;
                }
            }
        }
        // Reads of streamed values.
        let mut i = 0;
        while i < d.waiters.len() {
            if d.waiters[i].tx.is_closed() {
                d.waiters.swap_remove(i);
                continue;
            }
            match streamed(&d.waiters[i].visitor, payload, &mut o) {
                Some(v) => {
                    let w = d.waiters.swap_remove(i);
                    let _ = w.tx.send(Ok(v));
                    o.taken = true;
                }
                None => i += 1,
            }
        }
        // A frame a streamed property recognised (even with a bad checksum)
        // is not an answer gone wrong.
        if !o.taken
            && !o.streamed
            && let (Some(p), Some(r)) = (d.pending.as_mut(), rejected)
        {
            if p.rejected.len() == REJECTED_KEPT {
                p.rejected.remove(0);
            }
            p.rejected.push(r);
        }
        o
    }

    /// The port failed: fail the waiting request and the reads, end the
    /// subscriptions.
    pub(super) fn close(&self, e: io::Error) {
        tracing::warn!(port = %self.path, error = %e, "serial port failed; it is reopened by the next request or reconnect");
        self.end_all(e);
    }

    /// Fails everything waiting on this connection (once).
    pub(super) fn end_all(&self, e: io::Error) {
        let err = DriverError::io(io::Error::new(
            e.kind(),
            format!("serial port {}: {e}", self.path),
        ));
        let mut d = lock(&self.demux);
        if d.closed.is_some() {
            return;
        }
        d.closed = Some(err.clone());
        if let Some(mut p) = d.pending.take()
            && let Some(tx) = p.tx.take()
        {
            let _ = tx.send(Err(err.clone()));
        }
        for w in d.waiters.drain(..) {
            let _ = w.tx.send(Err(err.clone()));
        }
        for sub in d.subs.drain(..).filter_map(|w| w.upgrade()) {
            sub.close(err.clone());
        }
    }
}

/// The value of a streamed property in a payload, if it carries one with a
/// good checksum. A frame the property matches but whose checksum fails
/// counts as a bad checksum (one it does not match is not its business).
fn streamed(v: &Visitor, payload: &[u8], o: &mut Offer) -> Option<Value> {
    let extracted = v.extract(payload);
    o.streamed |= !matches!(extracted, Extracted::NoMatch(_));
    match (extracted, v.verify(payload)) {
        (Extracted::NoMatch(_), _) => None,
        (_, Err(_)) => {
            o.bad_checksum = true;
            None
        }
        (Extracted::Value(val), Ok(())) => Some(val),
        (Extracted::Bad(_), Ok(())) => {
            o.undecodable = true;
            None
        }
    }
}

/// The framing of the streamed values (subscriptions first, then reads).
fn stream_framing(d: &Demux) -> Option<Framing> {
    d.subs
        .iter()
        .filter_map(Weak::upgrade)
        .find_map(|s| s.props.first().map(|(_, v)| v.framing.clone()))
        .or_else(|| {
            d.waiters
                .iter()
                .find(|w| !w.tx.is_closed())
                .map(|w| w.visitor.framing.clone())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::visitor::SerialAddress;
    use futures::StreamExt;
    use mapper_sdk::PropertyType;
    use serde_json::json;

    fn visitor(v: serde_json::Value) -> Arc<Visitor> {
        let mut a: SerialAddress = serde_json::from_value(v).unwrap();
        a.set_model_type(Some(PropertyType::Float));
        a.visitor().clone()
    }

    fn shared(gap_ms: u64) -> Shared {
        Shared::new(
            Arc::from("/dev/test"),
            Duration::from_millis(gap_ms),
            Arc::default(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_silence_ends_an_unfinished_frame() {
        let s = shared(20);
        let v = visitor(json!({"regex": "^ST,GS,([+-]?[0-9.]+)kg$"}));
        let mut rx = s.wait_for(&v).unwrap();
        s.feed(b"ST,GS,+00");
        tokio::time::advance(Duration::from_millis(30)).await;
        s.feed(b"ST,GS,+0001.25kg\r\n");
        assert_eq!(rx.try_recv().unwrap().unwrap(), Value::Float(1.25));
        assert_eq!(s.stats.counts().partial, 1);
        // Bytes within the gap belong to one frame.
        let mut rx = s.wait_for(&v).unwrap();
        s.feed(b"ST,GS,+00");
        tokio::time::advance(Duration::from_millis(5)).await;
        s.feed(b"02.50kg\r\n");
        assert_eq!(rx.try_recv().unwrap().unwrap(), Value::Float(2.5));
        assert_eq!(s.stats.counts().partial, 1);
    }

    #[tokio::test]
    async fn an_endless_frame_is_dropped_and_the_next_line_read() {
        let s = shared(0);
        let v = visitor(json!({"regex": "^V=([0-9.]+)$"}));
        let mut rx = s.wait_for(&v).unwrap();
        s.feed(&vec![b'x'; crate::frame::MAX_FRAME + 100]);
        assert!(rx.try_recv().is_err());
        s.feed(b"\r\nV=7.5\r\n");
        assert_eq!(rx.try_recv().unwrap().unwrap(), Value::Float(7.5));
        let c = s.stats.counts();
        assert_eq!(c.partial, 1, "{c:?}");
        assert_eq!(c.unmatched, 1, "the overlong frame's tail: {c:?}");
    }

    #[tokio::test]
    async fn a_failed_port_ends_subscriptions_with_a_link_error() {
        let s = shared(0);
        let v = visitor(json!({"regex": "^V=([0-9.]+)$"}));
        let sub = s.subscribe(vec![(3, v)]).unwrap();
        let mut stream = Box::pin(sub.into_stream());
        s.feed(b"V=1\r\nV=2\r\n");
        // Latest value only.
        let p = stream.next().await.unwrap();
        assert_eq!((p.index, p.value.unwrap()), (3, Value::Int(2)));
        s.close(io::Error::other("unplugged"));
        let p = stream.next().await.unwrap();
        assert!(p.value.unwrap_err().is_link_failure());
        assert!(stream.next().await.is_none());
        assert!(s.begin(&visitor(json!({})), Some(Expect::Value)).is_err());
    }

    #[tokio::test]
    async fn streamed_values_on_one_port_share_a_framing() {
        let s = shared(0);
        let _sub = s
            .subscribe(vec![(0, visitor(json!({"regex": "(x)"})))])
            .unwrap();
        let Err(DriverError::Config(m)) = s.subscribe(vec![(
            0,
            visitor(json!({"regex": "(x)", "terminator": "\\n"})),
        )]) else {
            panic!("a second framing was accepted")
        };
        assert!(
            m.contains("terminator `\\r\\n` and terminator `\\n` differ"),
            "{m}"
        );
    }
}
